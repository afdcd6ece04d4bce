import react from '@vitejs/plugin-react';
import { defineConfig } from 'vitest/config';

// In development the Vite server forwards API and WebSocket traffic to a
// locally running gateway, so the browser still sees a single origin just as
// it does when the gateway serves the built client.
const gateway = process.env.CHAT_GATEWAY_URL ?? 'http://127.0.0.1:8080';

export default defineConfig({
  plugins: [react()],
  server: {
    proxy: {
      '/api': { target: gateway, changeOrigin: true },
      '/ws': { target: gateway, ws: true, changeOrigin: true },
    },
  },
  build: {
    outDir: 'dist',
  },
  test: {
    environment: 'jsdom',
    globals: true,
    setupFiles: ['./src/test/setup.ts'],
    include: ['src/**/*.test.{ts,tsx}'],
    restoreMocks: true,
    unstubGlobals: true,
  },
});
