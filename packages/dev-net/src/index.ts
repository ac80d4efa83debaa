export {
  type NetConfig,
  type NetConfigInput,
  type NetHostConfig,
  netConfigSchema,
  netHostConfigSchema,
  parseNetConfig,
} from './net-config.js';
export {
  createNetDevice,
  createNetHost,
  NET_DEVICE_FEATURES,
  NetDevice,
  type NetDeviceOptions,
} from './net-device.js';
export {
  ALL_OFFLOADS,
  type CopiedFrame,
  MemoryNetHost,
  type NetEndpoint,
  type NetFrame,
  type NetHost,
  type NetOffloads,
  NO_OFFLOADS,
  NullNetHost,
  type ReceiveResult,
  type SendResult,
} from './net-host.js';
export { flattenNetMetrics, type NetMetrics, newNetMetrics } from './net-metrics.js';
export * as netOffload from './net-offload.js';
export { PcapWriter, pcapGlobalHeader } from './net-pcap.js';
export { NetPort, openNetPort } from './net-port.js';
export {
  DatagramNetHost,
  type DatagramOptions,
  type SocketCounters,
  STREAM_MAX_FRAME,
  StreamNetHost,
  type StreamOptions,
} from './net-socket.js';
export {
  getNetSwitch,
  NetSwitch,
  type NetSwitchOptions,
  SwitchPort,
  type SwitchPortOptions,
} from './net-switch.js';
export { type TapCounters, TapError, TapNetHost, type TapOptions } from './net-tap.js';
export * as netWire from './net-wire.js';
