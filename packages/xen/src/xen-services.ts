import type { DeviceModel } from './xen-device-model.js';
import type { EventChannels } from './xen-event-channels.js';
import type { ForeignMemory } from './xen-foreign-memory.js';
import type { GrantTables } from './xen-grant-tables.js';
import type { XenStore } from './xenstore.js';

/**
 * The five hypervisor services a backend domain uses, from one implementation: `native`
 * (libxen on a real Xen domain) or `sim` (the in-process simulator, acting as one domain).
 */
export interface XenServices {
  readonly kind: 'native' | 'sim';
  /** The domain these services act as (0 for dom0). */
  readonly domid: number;
  readonly store: XenStore;
  readonly events: EventChannels;
  readonly grants: GrantTables;
  readonly foreignMemory: ForeignMemory;
  readonly deviceModel: DeviceModel;
  /** Closes every service handle. */
  close(): Promise<void>;
}
