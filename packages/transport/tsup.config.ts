import { defineConfig } from 'tsup';

export default defineConfig({
  entry: [
    'src/index.ts',
    'src/testing/index.ts',
    'src/vhost-user/index.ts',
    'src/mmio/index.ts',
    'src/pci/index.ts',
    'src/xenbus/index.ts',
    'src/testing/drivers/index.ts',
  ],
  format: ['esm'],
  dts: true,
  clean: true,
  sourcemap: true,
  target: 'node20',
});
