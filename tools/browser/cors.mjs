// Cross-origin use of Crier from real browser pages (tests/end_to_end/browser.rs drives it).
//
//   node cors.mjs --crier http://127.0.0.1:8080 --allowed-port 9001 --other-port 9002 \
//                 --key crier_… --service <id>
//
// Serves an empty page on two origins: http://127.0.0.1:<allowed-port>, which Crier lists in
// CRIER_CORS_ORIGINS, and http://127.0.0.1:<other-port>, which it does not. From each it
// fetches a public document and sends a preflighted keyed write; the other one (whose pages
// Crier does not list: public reads need no listing) keeps an EventSource on /v1/stream
// open, reporting every message (one JSON line each) until it reads "done" on standard
// input; then it reports the summary and exits.
import http from "node:http";
import readline from "node:readline";
import { launch, report } from "./launch.mjs";

const args = Object.fromEntries(
  process.argv.slice(2).reduce((pairs, arg, i, all) => {
    if (arg.startsWith("--")) pairs.push([arg.slice(2), all[i + 1]]);
    return pairs;
  }, []),
);

function servePage(port) {
  const server = http.createServer((_, response) => {
    response.writeHead(200, { "content-type": "text/html; charset=utf-8" });
    response.end("<!doctype html><html lang=en><title>a client app</title><p>client</p></html>");
  });
  return new Promise((resolve) => server.listen(Number(port), "127.0.0.1", () => resolve(server)));
}

// What a page of `origin` can do with Crier.
async function tryFromPage(page, crier, key, service) {
  return page.evaluate(
    async ({ crier, key, service }) => {
      const out = {};
      try {
        const summary = await fetch(`${crier}/api/v2/summary.json`);
        const body = await summary.json();
        out.public = { status: summary.status, etag: summary.headers.get("etag"), page: body.page?.name };
      } catch (e) {
        out.public = { error: String(e) };
      }
      try {
        const written = await fetch(`${crier}/v1/incidents`, {
          method: "POST",
          headers: {
            authorization: `Bearer ${key}`,
            "content-type": "application/json",
            "idempotency-key": crypto.randomUUID(),
          },
          body: JSON.stringify({
            title: "Declared from a browser",
            impact: "minor",
            message: "Checking.",
            affected_services: [{ service_id: service, status: "degraded_performance" }],
          }),
        });
        out.keyed = {
          status: written.status,
          location: written.headers.get("location"),
          etag: written.headers.get("etag"),
        };
      } catch (e) {
        out.keyed = { error: String(e) };
      }
      return out;
    },
    { crier, key, service },
  );
}

const allowed = await servePage(args["allowed-port"]);
const other = await servePage(args["other-port"]);
const browser = await launch();
try {
  const context = await browser.newContext();
  const fromOther = await context.newPage();
  fromOther.on("console", (message) => report({ console: message.text() }));
  await fromOther.exposeFunction("reportEvent", (event) => report(event));
  await fromOther.goto(`http://127.0.0.1:${args["other-port"]}/`);
  report({ origin: "other", ...(await tryFromPage(fromOther, args.crier, args.key, args.service)) });

  const page = await context.newPage();
  await page.goto(`http://127.0.0.1:${args["allowed-port"]}/`);
  report({ origin: "allowed", ...(await tryFromPage(page, args.crier, args.key, args.service)) });
  await fromOther.evaluate((crier) => {
    const source = new EventSource(`${crier}/v1/stream`);
    source.onopen = () => window.reportEvent({ stream: "open" });
    source.onerror = () =>
      window.reportEvent({ stream: "error", readyState: source.readyState });
    for (const type of ["incident.declared", "incident.updated", "service.updated"]) {
      source.addEventListener(type, (message) =>
        window.reportEvent({
          stream: "message",
          type,
          id: message.lastEventId,
          subject: JSON.parse(message.data).subject,
        }),
      );
    }
  }, args.crier);
  const input = readline.createInterface({ input: process.stdin });
  for await (const line of input) {
    if (line.trim() === "done") break;
  }
  input.close();
  report({ done: true });
} finally {
  await browser.close();
  allowed.closeAllConnections();
  other.closeAllConnections();
  allowed.close();
  other.close();
}
process.exit(0);
