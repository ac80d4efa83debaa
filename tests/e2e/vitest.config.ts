import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    name: 'e2e',
    include: ['src/**/*.test.ts'],
    // Guests boot under TCG; one file, run serially, so boots do not compete for the cores.
    testTimeout: 180_000,
    hookTimeout: 600_000,
    fileParallelism: false,
  },
});
