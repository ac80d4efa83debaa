import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: { include: ['src/**/*.test.ts'], testTimeout: 20 * 60_000, hookTimeout: 20 * 60_000 },
});
