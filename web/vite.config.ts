import { defineConfig } from "vitest/config";
import react from "@vitejs/plugin-react";

// `npm run dev` proxies the API of a local `tapmask dev up` (override with TAPMASK_API_URL).
const api = process.env.TAPMASK_API_URL ?? "http://127.0.0.1:8000";

export default defineConfig({
  plugins: [react()],
  base: "/",
  build: { outDir: "dist", emptyOutDir: true, sourcemap: false },
  server: { proxy: { "/api": api, "/healthz": api, "/readyz": api } },
  test: { environment: "node", include: ["src/**/*.test.ts"] },
});
