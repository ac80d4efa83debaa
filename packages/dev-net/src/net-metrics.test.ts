import { describe, expect, it } from 'vitest';
import { NetDevice } from './net-device.js';
import { flattenNetMetrics, newNetMetrics } from './net-metrics.js';
import { NetSwitch } from './net-switch.js';
import { parseMac } from './net-wire.js';
import { NetTestGuest, udpFrame } from './testing/index.js';

describe('net metrics', () => {
  it('flattens to snake_case names', () => {
    const metrics = newNetMetrics();
    metrics.txDroppedRunt = 3;
    expect(flattenNetMetrics(metrics)).toMatchObject({ net_tx_dropped_runt: 3, net_rx_frames: 0 });
  });

  it('a device reports its counters and its switch port counters, as deltas of real traffic', async () => {
    const network = new NetSwitch();
    const a = new NetDevice({ mac: parseMac('52:54:00:00:00:01')!, host: network.createPort() });
    const b = new NetDevice({ mac: parseMac('52:54:00:00:00:02')!, host: network.createPort() });
    const ga = new NetTestGuest(a);
    const gb = new NetTestGuest(b);
    gb.postReceive(4, 2048);
    const before = a.metrics();
    ga.send(
      udpFrame(
        {
          sourceMac: '52:54:00:00:00:01',
          destinationMac: '52:54:00:00:00:02',
          source: '1.1.1.1',
          destination: '1.1.1.2',
        },
        new Uint8Array(10),
      ),
    );
    ga.send(new Uint8Array(3));
    await new Promise((resolve) => setImmediate(resolve));
    const after = a.metrics();
    expect(after.net_tx_frames! - before.net_tx_frames!).toBe(1);
    expect(after.net_tx_dropped_runt! - before.net_tx_dropped_runt!).toBe(1);
    expect(after.switch_port_in_frames).toBe(1);
    expect(b.metrics().switch_port_out_frames).toBe(1);
    expect(b.metrics().net_rx_bytes).toBe(52);
  });
});
