// The status page in a real browser (Debian's Chromium, headless), one check per command;
// each prints one JSON line for the test that runs it.
//
//   node page.mjs axe URL...              axe-core (WCAG 2.2 A and AA rules) on each page,
//                                         in light and in dark, at 1280 and 320 px wide
//   node page.mjs keyboard URL            tabs through the page: what takes focus, in order
//   node page.mjs nojs URL                the page with JavaScript off: its text, and its
//                                         text with every <details> open
//   node page.mjs live URL POST_URL KEY BODY
//                                         opens the page, POSTs BODY (JSON) to POST_URL with
//                                         the key, and reports how long until the page shows
//                                         the update's message, and whether focus moved
//   node page.mjs screenshot URL FILE     a PNG of the whole page, 1024 px wide
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { launch, report } from "./launch.mjs";

const require = createRequire(import.meta.url);
const axeSource = readFileSync(require.resolve("axe-core/axe.min.js"), "utf8");

const [command, ...args] = process.argv.slice(2);
const browser = await launch();
try {
  if (command === "axe") {
    const results = [];
    for (const url of args) {
      for (const colorScheme of ["light", "dark"]) {
        for (const width of [1280, 320]) {
          // The page's CSP refuses inline scripts, axe's injection among them.
          const context = await browser.newContext({
            bypassCSP: true,
            colorScheme,
            reducedMotion: "reduce",
            viewport: { width, height: 900 },
          });
          const page = await context.newPage();
          const response = await page.goto(url, { waitUntil: "load" });
          await page.addScriptTag({ content: axeSource });
          const found = await page.evaluate(async () => {
            // Closed <details> hide content axe would otherwise skip: open them all.
            document.querySelectorAll("details").forEach((d) => (d.open = true));
            const outcome = await window.axe.run(document, {
              runOnly: {
                type: "tag",
                values: ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "wcag22aa"],
              },
              resultTypes: ["violations"],
            });
            return outcome.violations.map((v) => ({
              id: v.id,
              impact: v.impact,
              help: v.help,
              nodes: v.nodes.slice(0, 3).map((n) => n.html),
            }));
          });
          const overflow = await page.evaluate(
            () => document.documentElement.scrollWidth > window.innerWidth + 1,
          );
          results.push({
            url,
            colorScheme,
            width,
            status: response.status(),
            violations: found,
            overflow,
          });
          await context.close();
        }
      }
    }
    report({ pages: results });
  } else if (command === "keyboard") {
    const page = await browser.newPage();
    await page.goto(args[0], { waitUntil: "load" });
    const focused = [];
    for (let i = 0; i < 80; i++) {
      await page.keyboard.press("Tab");
      const what = await page.evaluate(() => {
        const e = document.activeElement;
        if (!e || e === document.body) return null;
        const style = window.getComputedStyle(e);
        return {
          tag: e.tagName.toLowerCase(),
          text: (e.textContent || e.getAttribute("name") || "").trim().slice(0, 60),
          outline: style.outlineStyle !== "none" && style.outlineWidth !== "0px",
        };
      });
      if (!what) break;
      focused.push(what);
    }
    report({ focused });
  } else if (command === "nojs") {
    const context = await browser.newContext({ javaScriptEnabled: false });
    const page = await context.newPage();
    const response = await page.goto(args[0], { waitUntil: "load" });
    const text = await page.evaluate(() => document.body.innerText);
    // What a reader sees once they open every <details> (which works without scripts).
    const expanded = await page.evaluate(() => {
      document.querySelectorAll("details").forEach((d) => (d.open = true));
      return document.body.innerText;
    });
    report({ status: response.status(), text, expanded });
  } else if (command === "live") {
    const [url, postUrl, key, body] = args;
    const page = await browser.newPage();
    const errors = [];
    page.on("pageerror", (e) => errors.push(String(e)));
    page.on("console", (m) => m.type() === "error" && errors.push(m.text()));
    await page.goto(url, { waitUntil: "load" });
    // The stream is open once the page's script ran; give it a moment to connect.
    await page.waitForTimeout(500);
    await page.focus("#subscribe-email").catch(() => {});
    const message = JSON.parse(body).message;
    const started = Date.now();
    const posted = await fetch(postUrl, {
      method: "POST",
      headers: { Authorization: `Bearer ${key}`, "Content-Type": "application/json" },
      body,
    });
    let shownAfterMs = null;
    try {
      await page.waitForFunction(
        (m) => document.querySelector("main").innerText.includes(m),
        message,
        { timeout: 5000, polling: 20 },
      );
      shownAfterMs = Date.now() - started;
    } catch (e) {
      shownAfterMs = null;
    }
    const after = await page.evaluate(() => ({
      live: document.getElementById("live")?.textContent || "",
      focus: document.activeElement?.id || "",
    }));
    report({ posted: posted.status, shownAfterMs, ...after, errors });
  } else if (command === "screenshot") {
    const [url, file] = args;
    const context = await browser.newContext({
      colorScheme: "light",
      viewport: { width: 1024, height: 900 },
      deviceScaleFactor: 1,
    });
    const page = await context.newPage();
    await page.goto(url, { waitUntil: "load" });
    await page.screenshot({ path: file, fullPage: true });
    report({ file });
  } else {
    throw new Error(`unknown command ${command}`);
  }
} finally {
  await browser.close();
}
