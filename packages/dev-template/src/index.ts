export {
  parseTemplateConfig,
  type TemplateConfig,
  type TemplateConfigInput,
  templateConfigSchema,
} from './template-config.js';
export { TemplateDevice } from './template-device.js';
export { MemoryTemplateHost, type TemplateHost } from './template-host.js';
export { TemplateMetrics } from './template-metrics.js';
export {
  CONFIG_MAX_REQUEST_SIZE,
  crc32,
  decodeResponseHeader,
  encodeResponseHeader,
  encodeTemplateConfig,
  RESPONSE_CHECKSUM,
  RESPONSE_HEADER_SIZE,
  RESPONSE_STATUS,
  TEMPLATE_CONFIG_SIZE,
  TEMPLATE_DEVICE_ID,
  TEMPLATE_QUEUE_COUNT,
  TEMPLATE_REQUEST_QUEUE,
  TEMPLATE_STATUS_HOST_ERROR,
  TEMPLATE_STATUS_NO_ROOM,
  TEMPLATE_STATUS_OK,
  TEMPLATE_STATUS_TOO_LARGE,
  type TemplateStatus,
  VIRTIO_TEMPLATE_F_CHECKSUM,
} from './template-wire.js';
