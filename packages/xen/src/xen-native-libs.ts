// The Debian libxen libraries the native services bind with koffi, their C prototypes
// (Xen 4.17 headers; opaque handles as `void *`, mapped addresses as `uintptr_t` so they
// arrive as numbers), and a probe of what this host has. Nothing here calls into Xen.
import { existsSync, readFileSync } from 'node:fs';
import koffi from 'koffi';
import type { XenMissing, XenService } from './xen-errors.js';

export interface XenLibrarySpec {
  readonly soname: string;
  readonly package: string;
  /** Prototypes in koffi's C syntax. */
  readonly functions: readonly string[];
}

export const XEN_LIBRARIES = {
  xenstore: {
    soname: 'libxenstore.so.4',
    package: 'libxenstore4',
    functions: [
      'void *xs_open(unsigned long flags)',
      'void xs_close(void *xsh)',
      'void *xs_read(void *h, uint32_t t, const char *path, _Out_ unsigned int *len)',
      'bool xs_write(void *h, uint32_t t, const char *path, const void *data, unsigned int len)',
      'bool xs_mkdir(void *h, uint32_t t, const char *path)',
      'bool xs_rm(void *h, uint32_t t, const char *path)',
      'void *xs_directory(void *h, uint32_t t, const char *path, _Out_ unsigned int *num)',
      'bool xs_watch(void *h, const char *path, const char *token)',
      'bool xs_unwatch(void *h, const char *path, const char *token)',
      'void *xs_read_watch(void *h, _Out_ unsigned int *num)',
      'void *xs_check_watch(void *h)',
      'int xs_fileno(void *h)',
      'uint32_t xs_transaction_start(void *h)',
      'bool xs_transaction_end(void *h, uint32_t t, bool abort)',
      'void *xs_get_permissions(void *h, uint32_t t, const char *path, _Out_ unsigned int *num)',
      'bool xs_set_permissions(void *h, uint32_t t, const char *path, void *perms, unsigned int num_perms)',
      'void *xs_get_domain_path(void *h, unsigned int domid)',
      'bool xs_introduce_domain(void *h, unsigned int domid, unsigned long mfn, unsigned int eventchn)',
    ],
  },
  xenevtchn: {
    soname: 'libxenevtchn.so.1',
    package: 'libxenevtchn1',
    functions: [
      'void *xenevtchn_open(void *logger, unsigned int flags)',
      'int xenevtchn_close(void *xce)',
      'int xenevtchn_fd(void *xce)',
      'int xenevtchn_notify(void *xce, uint32_t port)',
      'int xenevtchn_bind_unbound_port(void *xce, uint32_t domid)',
      'int xenevtchn_bind_interdomain(void *xce, uint32_t domid, uint32_t remote_port)',
      'int xenevtchn_unbind(void *xce, uint32_t port)',
      'int xenevtchn_pending(void *xce)',
      'int xenevtchn_unmask(void *xce, uint32_t port)',
    ],
  },
  xengnttab: {
    soname: 'libxengnttab.so.1',
    package: 'libxengnttab1',
    functions: [
      'void *xengnttab_open(void *logger, unsigned int flags)',
      'int xengnttab_close(void *xgt)',
      'uintptr_t xengnttab_map_grant_refs(void *xgt, uint32_t count, uint32_t *domids, uint32_t *refs, int prot)',
      'uintptr_t xengnttab_map_domain_grant_refs(void *xgt, uint32_t count, uint32_t domid, uint32_t *refs, int prot)',
      'int xengnttab_unmap(void *xgt, uintptr_t start_address, uint32_t count)',
      'int xengnttab_set_max_grants(void *xgt, uint32_t nr_grants)',
      'int xengnttab_grant_copy(void *xgt, uint32_t count, void *segs)',
      'void *xengntshr_open(void *logger, unsigned int flags)',
      'int xengntshr_close(void *xgs)',
      'uintptr_t xengntshr_share_pages(void *xgs, uint32_t domid, int count, uint32_t *refs, int writable)',
      'int xengntshr_unshare(void *xgs, uintptr_t start_address, uint32_t count)',
    ],
  },
  xenforeignmemory: {
    soname: 'libxenforeignmemory.so.1',
    package: 'libxenforeignmemory1',
    functions: [
      'void *xenforeignmemory_open(void *logger, unsigned int flags)',
      'int xenforeignmemory_close(void *fmem)',
      'uintptr_t xenforeignmemory_map(void *fmem, uint32_t dom, int prot, size_t pages, const uint64_t *arr, int *err)',
      'int xenforeignmemory_unmap(void *fmem, uintptr_t addr, size_t pages)',
      'void *xenforeignmemory_map_resource(void *fmem, uint16_t domid, unsigned int type, unsigned int id, unsigned long frame, unsigned long nr_frames, uint64_t *paddr, int prot, int flags)',
      'int xenforeignmemory_unmap_resource(void *fmem, void *fres)',
    ],
  },
  xendevicemodel: {
    soname: 'libxendevicemodel.so.1',
    package: 'libxendevicemodel1',
    functions: [
      'void *xendevicemodel_open(void *logger, unsigned int flags)',
      'int xendevicemodel_close(void *dmod)',
      'int xendevicemodel_create_ioreq_server(void *dmod, uint16_t domid, int handle_bufioreq, uint16_t *id)',
      'int xendevicemodel_get_ioreq_server_info(void *dmod, uint16_t domid, uint16_t id, uint64_t *ioreq_gfn, uint64_t *bufioreq_gfn, uint32_t *bufioreq_port)',
      'int xendevicemodel_map_io_range_to_ioreq_server(void *dmod, uint16_t domid, uint16_t id, int is_mmio, uint64_t start, uint64_t end)',
      'int xendevicemodel_unmap_io_range_from_ioreq_server(void *dmod, uint16_t domid, uint16_t id, int is_mmio, uint64_t start, uint64_t end)',
      'int xendevicemodel_map_pcidev_to_ioreq_server(void *dmod, uint16_t domid, uint16_t id, uint16_t segment, uint8_t bus, uint8_t device, uint8_t function)',
      'int xendevicemodel_unmap_pcidev_from_ioreq_server(void *dmod, uint16_t domid, uint16_t id, uint16_t segment, uint8_t bus, uint8_t device, uint8_t function)',
      'int xendevicemodel_destroy_ioreq_server(void *dmod, uint16_t domid, uint16_t id)',
      'int xendevicemodel_set_ioreq_server_state(void *dmod, uint16_t domid, uint16_t id, int enabled)',
      'int xendevicemodel_set_pci_intx_level(void *dmod, uint16_t domid, uint16_t segment, uint8_t bus, uint8_t device, uint8_t intx, unsigned int level)',
      'int xendevicemodel_set_isa_irq_level(void *dmod, uint16_t domid, uint8_t irq, unsigned int level)',
      'int xendevicemodel_set_irq_level(void *dmod, uint16_t domid, unsigned int irq, unsigned int level)',
      'int xendevicemodel_inject_msi(void *dmod, uint16_t domid, uint64_t msi_addr, uint32_t msi_data)',
      'int xendevicemodel_nr_vcpus(void *dmod, uint16_t domid, _Out_ unsigned int *vcpus)',
    ],
  },
  xentoolcore: {
    soname: 'libxentoolcore.so.1',
    package: 'libxentoolcore1',
    functions: ['int xentoolcore_restrict_all(uint32_t domid)'],
  },
} as const satisfies Record<string, XenLibrarySpec>;

export type XenLibraryName = keyof typeof XEN_LIBRARIES;

/** Bound functions by name. */
export type BoundLibrary = Record<
  string,
  ((...args: unknown[]) => unknown) & { async: (...args: unknown[]) => void }
>;

const cache = new Map<XenLibraryName, BoundLibrary>();

function functionName(prototype: string): string {
  const match = /([A-Za-z_][A-Za-z0-9_]*)\s*\(/.exec(prototype);
  return match?.[1] ?? prototype;
}

/**
 * Loads a library and binds every function. Throws `XenUnavailableError`-ready facts via
 * the returned `missing` list rather than crashing when the library or a symbol is absent.
 */
export function bindXenLibrary(name: XenLibraryName): { library?: BoundLibrary; missing: XenMissing[] } {
  const cached = cache.get(name);
  if (cached) return { library: cached, missing: [] };
  const spec: XenLibrarySpec = XEN_LIBRARIES[name];
  let handle: ReturnType<typeof koffi.load>;
  try {
    handle = koffi.load(spec.soname);
  } catch {
    return { missing: [{ kind: 'library', name: spec.soname, package: spec.package }] };
  }
  const library: BoundLibrary = {};
  const missing: XenMissing[] = [];
  for (const prototype of spec.functions) {
    try {
      library[functionName(prototype)] = handle.func(prototype) as BoundLibrary[string];
    } catch {
      missing.push({
        kind: 'symbol',
        name: `${spec.soname}:${functionName(prototype)}`,
        package: spec.package,
      });
    }
  }
  if (missing.length > 0) return { missing };
  cache.set(name, library);
  return { library, missing };
}

/** The device nodes each service opens (Linux /dev/xen). */
export const XEN_DEVICES: Readonly<
  Record<Exclude<XenService, 'sim' | 'toolcore' | 'host'>, readonly string[]>
> = {
  xenstore: [],
  evtchn: ['/dev/xen/evtchn'],
  gnttab: ['/dev/xen/gntdev'],
  gntshr: ['/dev/xen/gntalloc'],
  foreignmemory: ['/dev/xen/privcmd'],
  devicemodel: ['/dev/xen/privcmd'],
};

export const XEN_SERVICE_LIBRARY: Readonly<Record<Exclude<XenService, 'sim' | 'host'>, XenLibraryName>> = {
  xenstore: 'xenstore',
  evtchn: 'xenevtchn',
  gnttab: 'xengnttab',
  gntshr: 'xengnttab',
  foreignmemory: 'xenforeignmemory',
  devicemodel: 'xendevicemodel',
  toolcore: 'xentoolcore',
};

/** Where a xenstored may be reached, in libxenstore's order. */
export function xenstoredPaths(env: NodeJS.ProcessEnv = process.env): string[] {
  if (env.XENSTORED_PATH) return [env.XENSTORED_PATH];
  const rundir = env.XENSTORED_RUNDIR ?? '/var/run/xenstored';
  return [`${rundir}/socket`, '/dev/xen/xenbus', '/proc/xen/xenbus'];
}

export interface XenHostProbe {
  /** The hypervisor this host runs under, from /sys/hypervisor/type (undefined on bare metal or in containers). */
  readonly hypervisor: string | undefined;
  /** A Xen domain: /proc/xen/capabilities or /sys/hypervisor/type says so. */
  readonly isXenDomain: boolean;
  /** dom0 (capabilities contain control_d). */
  readonly isControlDomain: boolean;
  readonly devices: readonly { readonly path: string; readonly present: boolean }[];
  readonly libraries: readonly {
    readonly name: XenLibraryName;
    readonly soname: string;
    readonly package: string;
    readonly loaded: boolean;
    readonly missing: readonly XenMissing[];
  }[];
  /** The first reachable xenstored path, if any. */
  readonly xenstored: string | undefined;
  /** Per service: whether it can be opened natively here, and what is missing. */
  readonly services: Readonly<
    Record<
      Exclude<XenService, 'sim' | 'toolcore' | 'host'>,
      { readonly available: boolean; readonly missing: readonly XenMissing[] }
    >
  >;
}

function readText(path: string): string | undefined {
  try {
    return readFileSync(path, 'utf8').trim();
  } catch {
    return undefined;
  }
}

/**
 * What this host offers for native Xen services, without calling into Xen: device nodes,
 * libraries and their symbols, a xenstored. `xvio doctor` prints it.
 */
export function probeXenHost(env: NodeJS.ProcessEnv = process.env): XenHostProbe {
  const hypervisor = readText('/sys/hypervisor/type');
  const capabilities = readText('/proc/xen/capabilities');
  const devicePaths = [
    '/dev/xen/privcmd',
    '/dev/xen/evtchn',
    '/dev/xen/gntdev',
    '/dev/xen/gntalloc',
    '/dev/xen/xenbus',
  ];
  const devices = devicePaths.map((path) => ({ path, present: existsSync(path) }));
  const libraries = (Object.keys(XEN_LIBRARIES) as XenLibraryName[]).map((name) => {
    const { library, missing } = bindXenLibrary(name);
    return {
      name,
      soname: XEN_LIBRARIES[name].soname,
      package: XEN_LIBRARIES[name].package,
      loaded: library !== undefined,
      missing,
    };
  });
  const xenstored = xenstoredPaths(env).find((path) => existsSync(path));
  const services = {} as Record<
    Exclude<XenService, 'sim' | 'toolcore' | 'host'>,
    { available: boolean; missing: XenMissing[] }
  >;
  for (const service of Object.keys(XEN_DEVICES) as (keyof typeof XEN_DEVICES)[]) {
    const missing: XenMissing[] = [];
    for (const path of XEN_DEVICES[service]) {
      if (!existsSync(path)) missing.push({ kind: 'device', name: path });
    }
    if (service === 'xenstore' && !xenstored)
      missing.push({ kind: 'device', name: xenstoredPaths(env).join(' or ') });
    const library = libraries.find((l) => l.name === XEN_SERVICE_LIBRARY[service]);
    if (library && !library.loaded) missing.push(...library.missing);
    services[service] = { available: missing.length === 0, missing };
  }
  return {
    hypervisor,
    isXenDomain: hypervisor === 'xen' || capabilities !== undefined,
    isControlDomain: capabilities?.split(',').includes('control_d') ?? false,
    devices,
    libraries,
    xenstored,
    services,
  };
}

/** One line per fact of a probe, for `xvio doctor`: `ok` or `missing`, what, and why it matters. */
export function describeXenHost(probe: XenHostProbe): string[] {
  const lines: string[] = [];
  lines.push(
    probe.isXenDomain
      ? `ok       running in a Xen domain${probe.isControlDomain ? ' (dom0)' : ''}`
      : `missing  not a Xen domain (hypervisor: ${probe.hypervisor ?? 'none'}); native services need dom0 or a driver domain, the simulator works anywhere`,
  );
  for (const device of probe.devices) {
    lines.push(`${device.present ? 'ok     ' : 'missing'}  ${device.path}`);
  }
  for (const library of probe.libraries) {
    const detail = library.loaded
      ? ''
      : `: ${library.missing.map((m) => m.name).join(', ')} (apt-get install ${library.package})`;
    lines.push(`${library.loaded ? 'ok     ' : 'missing'}  ${library.soname}${detail}`);
  }
  lines.push(
    probe.xenstored
      ? `ok       xenstored at ${probe.xenstored}`
      : 'missing  xenstored (no socket or xenbus device; set XENSTORED_PATH)',
  );
  for (const [service, status] of Object.entries(probe.services)) {
    lines.push(
      `${status.available ? 'ok     ' : 'missing'}  service ${service}${status.available ? '' : `: needs ${status.missing.map((m) => m.name).join(', ')}`}`,
    );
  }
  return lines;
}
