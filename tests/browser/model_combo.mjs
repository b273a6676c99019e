#!/usr/bin/env node
// model_combo.mjs -- log in to a participant's editor (frontend 1.58.1 in
// headless Chromium) and read the options of one node's combo widget, as the
// participant sees them when they pick a model.
//
//   node model_combo.mjs --base URL --user U --password P --node CLASS
//        --input NAME --out DIR [--timeout-ms 90000]
//
// Adds a CLASS node to the canvas the way the node search does
// (LiteGraph.createNode + graph.add), reads the widget NAME's options, and
// writes DIR/report.json { ok, editor, options[], error } and a screenshot.
// Exit status: 0 = read, 1 = failed (reason in the report), 2 = usage/launch.

import { chromium } from 'playwright-core';
import fs from 'node:fs';
import path from 'node:path';

const opts = { timeoutMs: 90000 };
const argv = process.argv.slice(2);
for (let i = 0; i < argv.length; i++) {
  const k = argv[i].replace(/^--/, '').replace(/-([a-z])/g, (_, c) => c.toUpperCase());
  opts[k] = argv[++i];
}
for (const k of ['base', 'user', 'password', 'node', 'input', 'out']) {
  if (!opts[k]) { console.error(`model_combo: --${k} is required`); process.exit(2); }
}
fs.mkdirSync(opts.out, { recursive: true });
const report = { ok: false, editor: null, options: [], error: null };
const finish = async (code, browser) => {
  fs.writeFileSync(path.join(opts.out, 'report.json'), JSON.stringify(report, null, 2));
  if (browser) await browser.close().catch(() => {});
  process.exit(code);
};

let browser;
try {
  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
      '--disable-component-update', '--no-first-run'],
  });
} catch (e) {
  console.error(`model_combo: cannot launch Chromium: ${e.message}`);
  process.exit(2);
}
try {
  const timeout = Number(opts.timeoutMs);
  const page = await (await browser.newContext({ viewport: { width: 1280, height: 800 } })).newPage();
  await page.goto(`${opts.base}/${opts.user}/`, { waitUntil: 'domcontentloaded', timeout });
  await page.locator('#password').fill(opts.password, { timeout });
  await Promise.all([
    page.waitForURL(`${opts.base}/${opts.user}/**`, { timeout }),
    page.locator('button[type=submit]').click(),
  ]);
  await page.waitForFunction(() => {
    const c = document.querySelector('canvas#graph-canvas');
    return !!(window.app && window.app.canvas && window.app.graph && c && c.offsetWidth > 0);
  }, null, { timeout, polling: 250 });
  report.editor = page.url();
  report.options = await page.evaluate(({ node, input }) => {
    const n = window.LiteGraph.createNode(node);
    if (!n) throw new Error(`the editor does not know ${node}`);
    window.app.graph.add(n);
    window.app.canvas.setDirty(true, true);
    const w = (n.widgets || []).find((x) => x.name === input);
    if (!w) throw new Error(`${node} has no widget ${input}`);
    const values = w.options?.values;
    return typeof values === 'function' ? values() : values;
  }, { node: opts.node, input: opts.input });
  await page.screenshot({ path: path.join(opts.out, 'model-combo.png') }).catch(() => {});
  report.ok = true;
  await finish(0, browser);
} catch (e) {
  report.error = String(e?.message || e);
  await finish(1, browser);
}
