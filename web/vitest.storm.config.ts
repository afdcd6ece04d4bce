/**
 * Vitest for the reconnect storm (e2e/storm.e2e.test.ts): Node, not jsdom, against the real
 * services; one test file, so nothing runs beside it.
 */
import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    environment: 'node',
    include: ['e2e/**/*.e2e.test.ts'],
    fileParallelism: false,
  },
});
