import { execFileSync } from 'node:child_process';
import { buildInitramfs, fetchGuestKernel } from './src/e2e-guest.js';
import { BackendProcess, bootGuest, transferRate } from './src/e2e-qemu.js';
const kernel = fetchGuestKernel();
const initrd = buildInitramfs(kernel);
const layout = process.argv[2] ?? 'free';
const poll = process.argv[4] ?? '50';
const wrapper = layout === 'one-cpu' ? ['taskset', '-c', '1'] : undefined;
for (let r = 0; r < Number(process.argv[3] ?? 2); r++) {
  for (const dev of ['xvio', 'builtin']) {
    const sock = `/tmp/fl/x-${r}.sock`;
    let backend;
    if (dev === 'xvio') {
      backend = new BackendProcess(sock, false, ['--timing', '--poll-us', poll]);
      await backend.start();
      if (wrapper) execFileSync('taskset', ['-a', '-p', '-c', '1', String(backend.pid)], { stdio: 'ignore' });
    }
    const run = await bootGuest({ kernel: kernel.vmlinuz, initrd, args: { case: 'rng', bytes: 4194304 }, timeoutMs: 300000, ...(wrapper ? { wrapper } : {}),
      devices: dev === 'xvio' ? ['-chardev', `socket,id=vu,path=${sock}`, '-device', 'vhost-user-rng-pci,chardev=vu'] : ['-device', 'virtio-rng-pci'] });
    const res = run.results.at(-1)!;
    if (backend) { await backend.kill('SIGTERM'); console.log(backend.log.join('').split('\n').filter((l) => l.includes('vhost-user:') || l.includes('timing')).join('\n')); }
    console.log(layout, r, dev, transferRate(res).toFixed(2), res.bytes);
  }
}
