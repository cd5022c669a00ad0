// Headless Chromium as these checks launch it: Debian's own build (CRIER_CHROMIUM or
// /usr/bin/chromium), no sandbox (the checks run as root in CI), and none of its background
// networking (this machine's network is closed).
import { chromium } from "playwright-core";

export async function launch() {
  return chromium.launch({
    executablePath: process.env.CRIER_CHROMIUM || "/usr/bin/chromium",
    headless: true,
    args: [
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
  });
}

/// One JSON object a line on standard output: what the test reads.
export function report(what) {
  process.stdout.write(JSON.stringify(what) + "\n");
}
