export {
  type Addresses,
  arpRequestFrame,
  checksumsValid,
  type IpOptions,
  icmpEchoFrame,
  internetChecksum,
  ipv4Bytes,
  ipv6Bytes,
  type L4Options,
  parseTestFrame,
  type TcpOptions,
  tcpFrame,
  udpFrame,
} from './net-packets.js';
export { NetTestGuest, type ReceivedFrame, type TestGuestOptions } from './net-test-guest.js';
