import { defineConfig } from 'vitest/config';

// Named apart from vitest.config.ts so that each package's own `vitest run` keeps working.
export default defineConfig({
  test: {
    projects: ['packages/*', 'tools', 'tests/*'],
  },
});
