import { runConformanceSuite } from '@xvio/transport/testing';
import { expect } from 'vitest';
import { createConsoleDevice } from './console-device.js';
import { MemoryConsoleHost } from './console-host.js';
import { portQueues } from './console-wire.js';

// Every virtio rule (negotiation, status machine, malformed rings, reset in flight,
// notification suppression) for split and packed rings, exercised on port 0's transmit
// queue: guest output completes with length 0 once the host has it.
runConformanceSuite({
  name: 'dev-console',
  create: () => createConsoleDevice({}, { hosts: new Map([[0, new MemoryConsoleHost()]]) }),
  exercise: {
    queue: portQueues(0).transmit,
    request: () => [{ data: new TextEncoder().encode('conformance\n') }],
    check: (used) => expect(used.length).toBe(0),
  },
});

// The same on a multiport device, on the control transmit queue: a PORT_OPEN for a port the
// driver was never told about is counted and ignored, and the buffer completes.
runConformanceSuite({
  name: 'dev-console multiport',
  create: () =>
    createConsoleDevice(
      { maxPorts: 2, ports: [{ id: 0 }, { id: 1, name: 'second' }] },
      {
        hosts: new Map([
          [0, new MemoryConsoleHost()],
          [1, new MemoryConsoleHost()],
        ]),
      },
    ),
  exercise: {
    queue: 3,
    request: () => [{ data: Uint8Array.of(1, 0, 0, 0, 6, 0, 1, 0) }],
    check: (used) => expect(used.length).toBe(0),
  },
});
