// virtio-net and virtio-console to a stock HVM guest over the PCI transport: one guest, two
// PCI functions (00:05.0 net, 00:06.0 console) served by xvio through one ioreq server, with
// guest-physical DMA reached by foreign mapping. The guest's own virtio_net binds and its
// traffic crosses a TAP in dom0 (dev-net's TAP host side): the guest pings dom0 and moves TCP
// data both ways with SHA-256 checked on both ends. The guest's virtio_console binds a named
// port: the guest writes to it and reads what dom0 sends, dom0 checks both directions.
// Everything stays inside the emulated machine (dom0 <-> domU). The same guest can also carry
// the backend-restart case (dom0-pci-restart.ts, a virtio-rng at 00:07.0 served by a separate
// backend process), so the rig boots one HVM guest for all of them.
import { execFileSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { createServer, type Server, type Socket } from 'node:net';
import { createConsoleDevice, MemoryConsoleHost } from '@xvio/dev-console';
import { NetDevice, TapNetHost } from '@xvio/dev-net';
import { createGuestMemory } from '@xvio/grant-pool';
import { PciTransport } from '@xvio/transport/pci';
import { createIoreqServer, type XenServices } from '@xvio/xen';
import {
  assert,
  diagnose,
  domainNames,
  guestLines,
  readLog,
  relayGuest,
  sleep,
  writeHvmConfig,
  xl,
} from './dom0-common.js';
import { type RestartOutcome, RngBackendProcess, restartUnderGuest } from './dom0-pci-restart.js';

/** dom0's end of the TAP and the guest's address (a private /24 that exists only in the rig). */
const DOM0_IP = '10.99.0.1';
const TCP_TO_DOM0 = 5001;
const TCP_TO_GUEST = 5002;
/** Bytes dom0 sends the guest over TCP (the guest sends the same amount back the other way). */
const TRANSFER_BYTES = 2 * 1024 * 1024;
const PORT_NAME = 'org.xvio.test';

/** A one-shot TCP server: `receive` hashes what arrives, `send` writes `payload` and ends. */
function transferServer(
  port: number,
  mode: 'receive' | 'send',
  payload: Uint8Array,
): { server: Server; done: Promise<{ bytes: number; sha256: string; seconds: number }> } {
  let resolveDone: (value: { bytes: number; sha256: string; seconds: number }) => void = () => {};
  let rejectDone: (error: Error) => void = () => {};
  const done = new Promise<{ bytes: number; sha256: string; seconds: number }>((resolve, reject) => {
    resolveDone = resolve;
    rejectDone = reject;
  });
  const server = createServer((socket: Socket) => {
    const start = performance.now();
    server.close();
    if (mode === 'receive') {
      const hash = createHash('sha256');
      let bytes = 0;
      let first = 0;
      socket.on('data', (chunk: Buffer) => {
        if (bytes === 0) first = performance.now();
        bytes += chunk.length;
        hash.update(chunk);
      });
      socket.on('end', () => {
        const seconds = (performance.now() - (first || start)) / 1000;
        socket.end();
        resolveDone({ bytes, sha256: hash.digest('hex'), seconds });
      });
    } else {
      socket.on('data', () => {});
      socket.end(payload);
      socket.on('close', () => {
        resolveDone({
          bytes: payload.length,
          sha256: createHash('sha256').update(payload).digest('hex'),
          seconds: (performance.now() - start) / 1000,
        });
      });
    }
    socket.on('error', (error) => rejectDone(error));
  });
  server.listen(port, DOM0_IP);
  return { server, done };
}

export interface PciGuestParts {
  /** virtio-net (00:05.0) and virtio-console (00:06.0), served by this process. */
  readonly netcon: boolean;
  /** virtio-rng (00:07.0) served by a separate backend process that is killed and restarted. */
  readonly restart: boolean;
}

/** What one guest run showed; each part's check asserts its own (a failed part leaves the other standing). */
export interface PciGuestOutcome {
  netcon(): Promise<string>;
  restart(): Promise<string>;
}

/**
 * Boots one stock HVM guest with the selected xvio PCI functions and runs its parts: one guest
 * for all of them keeps the rig within CI's time budget (an HVM boot under TCG costs 1-2 min).
 */
export async function runPciGuest(services: XenServices, parts: PciGuestParts): Promise<PciGuestOutcome> {
  const name = 'xvio-hvm-functions';
  const functions = [parts.netcon ? 'netcon' : '', parts.restart ? 'restart' : ''].filter(Boolean).join('+');
  const { config, serial } = writeHvmConfig(name, `xvio.mode=functions xvio.functions=${functions}`);
  const created = performance.now();
  const step = (what: string) =>
    console.log(`XVIO-STEP pci-functions ${((performance.now() - created) / 1000).toFixed(1)} s ${what}`);
  xl('create', '-p', config);
  const domid = Number(xl('domid', name).trim());
  const alive = () => domainNames().includes(name);
  const errors: string[] = [];
  const cleanup: (() => Promise<void> | void)[] = [];
  try {
    const netcon = parts.netcon ? await startNetConsole(services, domid, errors, cleanup) : undefined;
    const rng = parts.restart
      ? new RngBackendProcess(domid, '0:0:7.0', '/tmp/xvio-rng-backend.state')
      : undefined;
    if (rng) {
      cleanup.push(() => rng.stop());
      const started = await rng.start(false);
      step(`rng backend process serves 00:07.0 with ioreq server ${started.serverId}`);
    }
    xl('unpause', name);
    step(`guest ${domid} unpaused (${functions})`);
    // A part that failed for good ends the run early (the guest is destroyed); each part's
    // check then judges from what the guest printed.
    let hung = false;
    const restart = rng
      ? restartUnderGuest(rng, serial, alive, step).then(
          (outcome) => ({ outcome }),
          (error: unknown) => {
            hung = true;
            return { error };
          },
        )
      : undefined;
    const deadline = Date.now() + 600_000;
    let lastReport = Date.now();
    try {
      while (alive() && !hung) {
        if (Date.now() > deadline) {
          diagnose(serial);
          step('the guest did not finish in 600 s: destroying it');
          break;
        }
        netcon?.poll(step);
        if (Date.now() - lastReport > 20_000) {
          lastReport = Date.now();
          step(`waiting: ${netcon?.progress() ?? ''} rng served ${rng?.served ?? 0}`);
        }
        await sleep(250);
      }
    } finally {
      if (alive()) xl('destroy', name);
    }
    netcon?.poll(step);
    const lines = guestLines(readLog(serial));
    relayGuest(lines);
    const seconds = (performance.now() - created) / 1000;
    console.log(`XVIO-MEASURE pci-functions-guest-lifetime ${seconds.toFixed(1)} s`);
    const restartResult = await restart;
    return {
      netcon: async () => {
        if (!netcon) throw new Error('not run');
        return await netcon.verify(lines);
      },
      restart: async () => {
        if (!restartResult || !rng) throw new Error('not run');
        if ('error' in restartResult) {
          diagnose(serial);
          throw restartResult.error;
        }
        return verifyRestart(restartResult.outcome, rng, lines);
      },
    };
  } finally {
    // A part that failed before the guest ran (a backend that did not start) leaves it paused.
    if (alive()) xl('destroy', name);
    for (const step of cleanup.reverse()) {
      try {
        await step();
      } catch (error) {
        errors.push(String(error));
      }
    }
    if (errors.length > 0)
      console.log(`XVIO-NOTE pci-functions cleanup ${JSON.stringify(errors.slice(0, 6))}`);
  }
}

function verifyRestart(outcome: RestartOutcome, rng: RngBackendProcess, lines: string[]): string {
  const failures = lines.filter((line) => line.startsWith('DOMU-FAIL'));
  assert(failures.length === 0, `the guest reported: ${failures.join(' | ')}`);
  const pass = lines.find((line) => line.startsWith('DOMU-PASS rng-restart'));
  assert(pass, `the guest did not finish its reads: ${lines.slice(-3).join(' | ')}`);
  assert(
    lines.some((line) => line.startsWith('DOMU-RNG-CURRENT virtio_rng')),
    'the guest did not use virtio-rng',
  );
  const status = outcome.statusAfter;
  // 64: DEVICE_NEEDS_RESET, 4: DRIVER_OK. The device went on running for the same driver.
  assert((status & 64) === 0 && (status & 4) === 4, `device status after the restart ${status}`);
  assert(outcome.servedAfter > 0, 'the new backend served nothing');
  assert(
    rng.errors.length === 0 || rng.errors.every((error) => /ENOENT|ESRCH/.test(error)),
    `backend errors ${rng.errors.join(' | ')}`,
  );
  console.log(`XVIO-MEASURE pci-restart-backend-ready ${outcome.restartSeconds.toFixed(2)} s`);
  console.log(`XVIO-MEASURE pci-restart-guest-recovery ${outcome.recoverySeconds.toFixed(2)} s`);
  return `backend killed at guest round ${outcome.killedAtRound}; the new process adopted ioreq server ${outcome.adoptedServer} (${outcome.resumedIoreqs} waiting ioreqs answered on adoption), restored the function without a reset (status ${status}, ${outcome.servedAfter} bytes served by it) and the guest read on: ${pass.slice('DOMU-PASS rng-restart '.length)}; ready ${outcome.restartSeconds.toFixed(1)} s and first guest round ${outcome.recoverySeconds.toFixed(1)} s after SIGKILL (2 s of it without a backend)`;
}

interface NetConsoleRun {
  poll(step: (what: string) => void): void;
  progress(): string;
  verify(lines: string[]): Promise<string>;
}

/** Net (TAP in dom0, TCP servers) and console (a named port) as two functions of one ioreq server. */
async function startNetConsole(
  services: XenServices,
  domid: number,
  errors: string[],
  cleanup: (() => Promise<void> | void)[],
): Promise<NetConsoleRun> {
  if (!existsSync('/dev/net/tun')) execFileSync('insmod', ['/lib/modules/tun.ko']);
  const server = createIoreqServer(
    { deviceModel: services.deviceModel, foreignMemory: services.foreignMemory, events: services.events },
    { domid, onError: (error) => errors.push(`ioreq ${error.message}`) },
  );
  cleanup.push(() => server.close());
  const tap = new TapNetHost({ ifname: 'xvtap0' });
  cleanup.push(() => tap.close());
  const net = new NetDevice({
    name: 'net0',
    mac: Uint8Array.of(0x52, 0x54, 0x00, 0x58, 0x56, 0x01),
    host: tap,
  });
  const consoleHost = new MemoryConsoleHost();
  const consoleDevice = createConsoleDevice(
    { multiport: true, ports: [{ host: 'null' }, { name: PORT_NAME, host: 'memory' }] },
    { hosts: new Map([[1, consoleHost]]) },
  );
  cleanup.push(() => consoleDevice.close());
  await consoleDevice.open();
  const onError = (error: unknown) => errors.push(String(error));
  const transports = [
    new PciTransport({
      server,
      device: net,
      memory: createGuestMemory({ strategy: 'foreign', domid }, services),
      pci: { segment: 0, bus: 0, device: 5, function: 0 },
      onError,
    }),
    new PciTransport({
      server,
      device: consoleDevice,
      memory: createGuestMemory({ strategy: 'foreign', domid }, services),
      pci: { segment: 0, bus: 0, device: 6, function: 0 },
      // The second function uses INTB, as a real multi-device board would route it.
      intx: 1,
      onError,
    }),
  ];
  cleanup.push(() => {
    for (const transport of transports) transport.close();
  });
  execFileSync('ip', ['addr', 'add', `${DOM0_IP}/24`, 'dev', tap.ifname]);
  execFileSync('ip', ['link', 'set', tap.ifname, 'up']);
  const toGuestPayload = randomBytes(TRANSFER_BYTES);
  const toDom0 = transferServer(TCP_TO_DOM0, 'receive', new Uint8Array());
  const toGuest = transferServer(TCP_TO_GUEST, 'send', toGuestPayload);
  cleanup.push(() => {
    toDom0.server.close();
    toGuest.server.close();
  });
  server.enable();
  const token = `xvio-token-${randomBytes(6).toString('hex')}`;
  let consoleText = '';
  let tokenSent = false;
  return {
    poll(step) {
      consoleText += new TextDecoder().decode(consoleHost.takeOutput());
      if (!tokenSent && consoleText.includes('xvio-hello')) {
        consoleHost.input(new TextEncoder().encode(`${token}\n`));
        tokenSent = true;
        step('the guest wrote to its virtio console port; dom0 answered with a token');
      }
    },
    progress() {
      const metrics = pick(net.metrics(), ['net_tx_frames', 'net_rx_frames']);
      return `net/console ioreqs ${server.stats.answered}, net ${JSON.stringify(metrics)}, console ${consoleText.length} bytes;`;
    },
    async verify(lines) {
      console.log(
        `XVIO-NOTE pci-netcon ioreq ${JSON.stringify(server.stats)}, net ${JSON.stringify(pick(net.metrics(), ['net_tx_frames', 'net_tx_bytes', 'net_rx_frames', 'net_rx_bytes']))}`,
      );
      const guest = (tag: string) =>
        lines
          .find((line) => line.startsWith(`${tag} `))
          ?.slice(tag.length + 1)
          .trim();
      const failures = lines.filter((line) => line.startsWith('DOMU-FAIL'));
      assert(failures.length === 0, `the guest reported: ${failures.join(' | ')}`);
      assert(guest('DOMU-PASS ping'), `the guest could not ping dom0: ${lines.slice(-4).join(' | ')}`);
      const received = await withDeadline(toDom0.done, 'guest -> dom0 TCP');
      const sent = await withDeadline(toGuest.done, 'dom0 -> guest TCP');
      const guestSent = guest('DOMU-NET-TX-SHA256');
      const guestReceived = guest('DOMU-NET-RX-SHA256');
      assert(
        received.bytes === TRANSFER_BYTES && received.sha256 === guestSent,
        `guest -> dom0: ${received.bytes} bytes, sha256 ${received.sha256}, the guest sent ${guestSent}`,
      );
      assert(
        guestReceived === sent.sha256,
        `dom0 -> guest: the guest got sha256 ${guestReceived}, dom0 sent ${sent.sha256}`,
      );
      assert(
        consoleText.includes('xvio-hello'),
        `nothing from the guest on the console port: '${consoleText.slice(0, 80)}'`,
      );
      assert(
        consoleText.includes(`xvio-ack ${token}`),
        `the guest did not echo dom0's token (console text '${consoleText.slice(0, 160)}')`,
      );
      assert(guest('DOMU-PASS console-rx')?.includes(token), 'the guest did not report the token it read');
      const toDom0MBps = received.bytes / 1e6 / received.seconds;
      const toGuestMBps = sent.bytes / 1e6 / sent.seconds;
      console.log(`XVIO-MEASURE pci-net-tcp-guest-to-dom0 ${toDom0MBps.toFixed(3)} MB/s`);
      console.log(`XVIO-MEASURE pci-net-tcp-dom0-to-guest ${toGuestMBps.toFixed(3)} MB/s`);
      return `guest ${domid}: ping ${guest('DOMU-PASS ping')}; TCP ${TRANSFER_BYTES} bytes each way with matching SHA-256 (to dom0 ${toDom0MBps.toFixed(2)} MB/s, to the guest ${toGuestMBps.toFixed(2)} MB/s); console port ${PORT_NAME} both ways`;
    },
  };
}

function pick(metrics: Readonly<Record<string, number>>, names: string[]): Record<string, number> {
  return Object.fromEntries(names.map((name) => [name, metrics[name] ?? 0]));
}

function withDeadline<T>(promise: Promise<T>, what: string): Promise<T> {
  return Promise.race([
    promise,
    sleep(5_000).then(() => {
      throw new Error(`${what} did not complete`);
    }),
  ]);
}
