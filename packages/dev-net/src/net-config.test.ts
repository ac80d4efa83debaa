import { describe, expect, it } from 'vitest';
import { parseNetConfig } from './net-config.js';
import { createNetDevice, NetDevice } from './net-device.js';
import { getNetSwitch, SwitchPort } from './net-switch.js';
import { VIRTIO_NET_F_MQ, VIRTIO_NET_F_MTU } from './net-wire.js';

describe('net config', () => {
  it('fills defaults', () => {
    const config = parseNetConfig({});
    expect(config).toMatchObject({
      name: 'net0',
      mac: '52:54:00:12:34:56',
      queuePairs: 1,
      queueSize: 256,
      linkUp: true,
      host: { type: 'null' },
    });
  });

  it('rejects bad values, naming them', () => {
    expect(() => parseNetConfig({ mac: '01:00:5e:00:00:01' })).toThrow(/unicast/);
    expect(() => parseNetConfig({ mac: 'nope' })).toThrow(/mac/);
    expect(() => parseNetConfig({ queueSize: 300 })).toThrow(/power of two/);
    expect(() => parseNetConfig({ mtu: 20 })).toThrow();
    expect(() => parseNetConfig({ host: { type: 'stream', mode: 'client' } })).toThrow(/path or port/);
    expect(() => parseNetConfig({ host: { type: 'tap', ifname: 'a-name-that-is-too-long' } })).toThrow();
    expect(() => parseNetConfig({ host: { type: 'wire' } })).toThrow();
    expect(() => parseNetConfig({ colour: 'blue' })).toThrow();
  });

  it('createNetDevice builds a device joined to a named switch, with MQ and MTU offered', async () => {
    const device = createNetDevice({
      name: 'net7',
      mac: '52:54:00:00:07:07',
      mtu: 9000,
      queuePairs: 2,
      host: { type: 'switch', switch: 'config-test', rateLimitMbps: 100 },
    });
    expect(device).toBeInstanceOf(NetDevice);
    expect(device.name).toBe('net7');
    expect(device.features & VIRTIO_NET_F_MQ).toBe(VIRTIO_NET_F_MQ);
    expect(device.features & VIRTIO_NET_F_MTU).toBe(VIRTIO_NET_F_MTU);
    expect(device.queueMaxSizes).toHaveLength(5);
    expect(device.host).toBeInstanceOf(SwitchPort);
    expect(getNetSwitch('config-test').portCount).toBe(1);
    await device.host.close();
    expect(getNetSwitch('config-test').portCount).toBe(0);
  });
});
