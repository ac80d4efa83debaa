import { defineConfig } from 'tsup';

export default defineConfig({
  // backend-main is its own file: `compose` bundles it into every composed backend.
  entry: ['src/index.ts', 'src/bin.ts', 'src/backend-main.ts'],
  format: ['esm'],
  dts: true,
  clean: true,
  sourcemap: true,
  target: 'node20',
});
