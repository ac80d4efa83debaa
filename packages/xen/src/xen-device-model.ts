/**
 * The device model operations (libxendevicemodel; XEN_DMOP_* through privcmd): ioreq server
 * management and interrupt injection for HVM/PVH guests. Synchronous hypercalls. Errors are
 * `XenError`s with Xen's errno (`EINVAL`, `ENOENT` unknown server, `EPERM`, `EOPNOTSUPP`).
 */

/** A PCI function as XEN_DMOP_PCI_SBDF names it. */
export interface PciAddress {
  readonly segment: number;
  readonly bus: number;
  readonly device: number;
  readonly function: number;
}

/** Whether and how the server gets buffered (posted) writes: HVM_IOREQSRV_BUFIOREQ_*. */
export type BufferedIoreqMode = 'off' | 'legacy' | 'atomic';

/** Address space of a claimed range (XEN_DMOP_IO_RANGE_PORT / _MEMORY). PCI functions use `mapPciDevice`. */
export type IoRangeKind = 'port' | 'memory';

/** Which interrupt the device model raised, as the simulator records them. */
export type InterruptEvent =
  | {
      readonly kind: 'pci-intx';
      readonly domid: number;
      readonly pci: PciAddress;
      readonly intx: number;
      readonly level: number;
    }
  | { readonly kind: 'isa-irq'; readonly domid: number; readonly irq: number; readonly level: number }
  | { readonly kind: 'msi'; readonly domid: number; readonly address: bigint; readonly data: number }
  | { readonly kind: 'irq'; readonly domid: number; readonly irq: number; readonly level: number };

export interface DeviceModel {
  /** XEN_DMOP_create_ioreq_server; returns the server id. */
  createIoreqServer(domid: number, bufioreq: BufferedIoreqMode): number;
  /** XEN_DMOP_get_ioreq_server_info for the buffered-ioreq event channel port (undefined when buffering is off). */
  getBufioreqPort(domid: number, id: number): number | undefined;
  /** XEN_DMOP_map_io_range_to_ioreq_server: claims `[start, end]` (inclusive, as Xen takes it). */
  mapIoRange(domid: number, id: number, kind: IoRangeKind, start: bigint, end: bigint): void;
  unmapIoRange(domid: number, id: number, kind: IoRangeKind, start: bigint, end: bigint): void;
  /** XEN_DMOP_map_io_range_to_ioreq_server with XEN_DMOP_IO_RANGE_PCI: claims a PCI function's config space. */
  mapPciDevice(domid: number, id: number, pci: PciAddress): void;
  unmapPciDevice(domid: number, id: number, pci: PciAddress): void;
  /** XEN_DMOP_set_ioreq_server_state: a server gets ioreqs only while enabled. */
  setIoreqServerState(domid: number, id: number, enabled: boolean): void;
  /** XEN_DMOP_destroy_ioreq_server. */
  destroyIoreqServer(domid: number, id: number): void;
  /** XEN_DMOP_set_pci_intx_level (HVM x86): `intx` 0..3 = INTA..INTD. */
  setPciIntxLevel(domid: number, pci: PciAddress, intx: number, level: number): void;
  /** XEN_DMOP_set_isa_irq_level (HVM x86). */
  setIsaIrqLevel(domid: number, irq: number, level: number): void;
  /** XEN_DMOP_set_irq_level (Arm SPIs; `EOPNOTSUPP` on x86). */
  setIrqLevel(domid: number, irq: number, level: number): void;
  /** XEN_DMOP_inject_msi (x86 HVM and PVH): `address` is the MSI address (0xfee...). */
  injectMsi(domid: number, address: bigint, data: number): void;
  /** XEN_DMOP_nr_vcpus. */
  nrVcpus(domid: number): number;
  close(): void;
}
