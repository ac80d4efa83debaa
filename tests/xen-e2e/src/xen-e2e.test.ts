import { describe, expect, it } from 'vitest';
import { parseRigLog, type RigResult, runXenRig } from './xen-rig.js';

describe('parseRigLog', () => {
  it('reads markers even when the console prefixes them', () => {
    const parsed = parseRigLog(
      [
        '(d0) XVIO-DOM0-READY 31.5',
        'XVIO-PASS probe hypervisor=xen',
        '\rXVIO-FAIL grants boom',
        'XVIO-MEASURE copy-4k 12.5 us',
        'XVIO-DOM0-DONE rc=1',
      ].join('\n'),
    );
    expect(parsed.dom0ReadySeconds).toBe(31.5);
    expect(parsed.passed).toEqual([{ name: 'probe', detail: 'hypervisor=xen' }]);
    expect(parsed.failed).toEqual([{ name: 'grants', detail: 'boom' }]);
    expect(parsed.measures).toEqual([{ name: 'copy-4k', value: 12.5, unit: 'us' }]);
    expect(parsed.done).toBe(true);
  });
});

describe('xvio in dom0 of a real Xen 4.17 (QEMU TCG)', () => {
  let result: RigResult;

  it('boots Xen, runs the dom0 program to the end and powers off', async () => {
    result = await runXenRig();
    if (!result.done) throw new Error(`dom0 did not finish; console tail:\n${result.log.slice(-6000)}`);
    expect(result.failed).toEqual([]);
  });

  it('reaches real Xen through the native bindings: probe, xenstore, event channels, grant tables', () => {
    expect(result.passed.map((p) => p.name)).toEqual(
      expect.arrayContaining(['probe', 'xenstore', 'event-channels', 'grant-tables']),
    );
  });

  it('serves vhost-user XEN_MMAP grant regions in dom0, mapping each request through gntdev and leaving no mapping', () => {
    const scenario = result.passed.find((p) => p.name === 'vhost-user-xen-grant');
    if (!scenario) throw new Error(`scenario failed: ${JSON.stringify(result.failed)}`);
    expect(scenario.detail).toMatch(/no mapping left after each disconnect/);
    expect(result.measures.map((m) => m.name)).toEqual(
      expect.arrayContaining([
        'vhost-user-xen-grant-echo-64b-on-demand',
        'vhost-user-xen-grant-echo-64b-rings-in-advance',
      ]),
    );
  });

  it('serves virtio-rng to a stock Linux HVM guest as a PCI function through an ioreq server (foreign-mapped DMA)', () => {
    const scenario = result.passed.find((p) => p.name === 'hvm-pci-rng');
    if (!scenario) {
      const guest = result.log.split(/\r?\n/).filter((line) => /XVIO-(GUEST|STEP|FAIL)/.test(line));
      throw new Error(`scenario failed:\n${guest.join('\n')}`);
    }
    expect(result.log).toMatch(/XVIO-GUEST DOMU-PASS hwrng 16384 bytes/);
    expect(result.log).toMatch(/XVIO-GUEST DOMU-RNG-CURRENT virtio_rng/);
  });

  it('a guest writing garbage over the PCI BAR gets every ioreq answered (no blocked vCPU, no crash)', () => {
    const scenario = result.passed.find((p) => p.name === 'hvm-register-garbage');
    if (!scenario) throw new Error(`register garbage failed: ${JSON.stringify(result.failed)}`);
    expect(result.log).toMatch(/XVIO-GUEST DOMU-PASS register-garbage [1-9]\d* garbage writes/);
  });

  it('cleans up when a streaming HVM guest is destroyed mid-transfer: mappings released, ioreq server destroyed, xl list clean', () => {
    const scenario = result.passed.find((p) => p.name === 'hvm-pci-destroy');
    if (!scenario) {
      const lines = result.log
        .split(/\r?\n/)
        .filter((line) => /XVIO-(STEP pci-destroy|FAIL|NOTE pci-destroy|DIAG console)/.test(line));
      throw new Error(`scenario failed:\n${lines.slice(-40).join('\n')}`);
    }
    expect(scenario.detail).toMatch(/destroyed while streaming/);
  });

  it('serves virtio-net (TAP in dom0: ping, TCP both ways with matching SHA-256) and virtio-console (a named port both ways) to a stock HVM guest over PCI', () => {
    const scenario = result.passed.find((p) => p.name === 'hvm-pci-net-console');
    if (!scenario) {
      const lines = result.log
        .split(/\r?\n/)
        .filter((line) => /XVIO-(GUEST|STEP pci-functions|FAIL|NOTE pci|DIAG console)/.test(line));
      throw new Error(`scenario failed:\n${lines.slice(-40).join('\n')}`);
    }
    expect(result.log).toMatch(/XVIO-GUEST DOMU-PASS ping 5\/5 replies from dom0/);
    expect(result.log).toMatch(
      /XVIO-GUEST DOMU-PASS console-rx \/dev\/vport\d+p1 read 'xvio-token-[0-9a-f]+'/,
    );
    expect(scenario.detail).toMatch(/TCP 2097152 bytes each way with matching SHA-256/);
    const value = (name: string) => result.measures.find((m) => m.name === name)?.value ?? Number.NaN;
    expect(value('pci-net-ping-rtt')).toBeGreaterThan(0);
    expect(value('pci-net-tcp-guest-to-dom0')).toBeGreaterThan(0);
    expect(value('pci-net-tcp-dom0-to-guest')).toBeGreaterThan(0);
  });

  it('restarts a killed PCI backend under a running HVM guest: the new process adopts the ioreq server and the guest reads on without a reset', () => {
    const scenario = result.passed.find((p) => p.name === 'hvm-pci-restart');
    if (!scenario) {
      const lines = result.log
        .split(/\r?\n/)
        .filter((line) => /XVIO-(GUEST|STEP pci-functions|FAIL|NOTE pci|DIAG)/.test(line));
      throw new Error(`scenario failed:\n${lines.slice(-40).join('\n')}`);
    }
    expect(scenario.detail).toMatch(/the new process adopted ioreq server \d+/);
    expect(result.log).toMatch(/XVIO-GUEST DOMU-PASS rng-restart 24 rounds/);
    expect(result.measures.find((m) => m.name === 'pci-restart-guest-recovery')?.value).toBeGreaterThan(0);
  });

  it('connects a PVH guest frontend over XenBus (real xenstored, event channels, grants) and moves virtio-rng data', () => {
    const scenario = result.passed.find((p) => p.name === 'xenbus-pvh');
    if (!scenario) {
      const lines = result.log
        .split(/\r?\n/)
        .filter((line) => /XVIO-(GUEST|STEP|FAIL|DIAG console)/.test(line));
      throw new Error(`scenario failed:\n${lines.slice(-40).join('\n')}`);
    }
    expect(result.log).toMatch(/XVIO-GUEST DOMU-PASS xenbus-connect Connected/);
    expect(result.log).toMatch(/XVIO-GUEST DOMU-PASS xenbus-data \d+ bytes/);
    expect(result.log).toMatch(/XVIO-GUEST DOMU-PASS xenbus-close/);
  });

  it('survives a backend restart, ring garbage and a guest destroyed mid-transfer, leaving nothing behind', () => {
    const scenario = result.passed.find((p) => p.name === 'xenbus-robust');
    if (!scenario) {
      const lines = result.log
        .split(/\r?\n/)
        .filter((line) => /XVIO-(GUEST|STEP|FAIL|NOTE robust|DIAG console)/.test(line));
      throw new Error(`scenario failed:\n${lines.slice(-40).join('\n')}`);
    }
    for (const check of ['backend-restart', 'garbage-needs-reset', 'reset-recovered']) {
      expect(result.log).toContain(`XVIO-GUEST DOMU-PASS ${check}`);
    }
  });

  it('serves grant DMA from a stock HVM guest over virtio-mmio with every memory strategy; map per request never meets a deferred revocation', () => {
    const scenario = result.passed.find((p) => p.name === 'hvm-mmio-grant');
    if (!scenario) {
      const lines = result.log
        .split(/\r?\n/)
        .filter((line) => /XVIO-(GUEST|STEP mmio|FAIL|NOTE mmio|DIAG console)/.test(line));
      throw new Error(`scenario failed:\n${lines.slice(-40).join('\n')}`);
    }
    // Each round: 256 one-page requests, all 256 byte values seen, a revoked and a read-only grant refused,
    // and no revocation deferred (per-request grants are revoked right after each used element).
    for (const strategy of ['grant-map', 'grant-copy', 'persistent-pool']) {
      expect(result.log).toMatch(
        new RegExp(
          `XVIO-GUEST DOMU-PASS mmio-${strategy} 256 requests, \\d+ bytes, 256 distinct byte values.*deferred revocations 0; revoked grant refused \\(length 0\\); read-only grant refused`,
        ),
      );
    }
    expect(result.log).toMatch(/DOMU-PASS mmio-grant-map .*revocations after each completion deferred: 0/);
    expect(result.log).toContain('XVIO-GUEST DOMU-PASS mmio-revoke-while-mapped');
    expect(result.log).toMatch(
      /XVIO-NOTE mmio-grant grant-map: \d+ requests, .*max buffer mappings live at a completion 0,/,
    );
    for (const strategy of ['grant-map', 'grant-copy', 'persistent-pool']) {
      expect(result.log).toMatch(
        new RegExp(`XVIO-NOTE mmio-grant ${strategy}: .*faults \\["grant-not-permitted","read-only"\\]`),
      );
    }
    const value = (name: string) => result.measures.find((m) => m.name === name)?.value ?? Number.NaN;
    for (const strategy of ['grant-map', 'grant-copy', 'persistent-pool']) {
      expect(value(`mmio-${strategy}-request`)).toBeGreaterThan(0);
      expect(value(`mmio-${strategy}-backend-memory`)).toBeGreaterThanOrEqual(0);
    }
  });

  it('measures the ioreq round trip, rng throughput over PCI and the XenBus request round trip and throughput', () => {
    const value = (name: string) => result.measures.find((m) => m.name === name)?.value ?? Number.NaN;
    expect(value('pci-config-dword-read')).toBeGreaterThan(0);
    expect(value('pci-rng-throughput')).toBeGreaterThan(0);
    expect(value('xenbus-rng-round-trip')).toBeGreaterThan(0);
    expect(value('xenbus-rng-throughput')).toBeGreaterThan(0);
  });

  it('measures per-request grant map/unmap, grant copy and a persistent mapping on the real hypervisor', () => {
    const value = (name: string) => result.measures.find((m) => m.name === name)?.value ?? Number.NaN;
    expect(value('grant-map-unmap-4k')).toBeGreaterThan(0);
    expect(value('grant-copy-4k')).toBeGreaterThan(0);
    // A page mapped once costs a memcpy; mapping it per request costs hypercalls and TLB work.
    expect(value('persistent-memcpy-4k')).toBeLessThan(value('grant-map-unmap-4k'));
  });
});
