import { defineConfig } from 'tsup';

export default defineConfig({
  entry: ['src/index.ts', 'src/testing/index.ts'],
  format: ['esm'],
  dts: true,
  clean: true,
  sourcemap: true,
  target: 'node20',
  // The testing entry needs only the transport's mock queue: bundle it, so a user of
  // @xvio/dev-net/testing does not load the transport's vitest-based conformance suite.
  noExternal: ['@xvio/transport/testing'],
});
