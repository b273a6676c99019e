#!/usr/bin/env node
// run_workflow.mjs -- what a participant does: open their editor, load a
// workflow, press Queue, and see the output image appear.
//
//   node run_workflow.mjs --url URL --workflow API_JSON --out DIR [--timeout-ms 90000]
//
// Loads the API-format workflow with app.loadApiJson, queues it with
// app.queuePrompt (the Queue button's code path: POST /api/prompt from the
// page), then waits until a node shows an output image served by /view and
// that image has loaded. Writes DIR/run.png and DIR/run.json.
// Exit 0 = the image appeared, 1 = it did not (reason on stderr), 2 = usage.

import { chromium } from 'playwright-core';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

const opts = { url: null, workflow: null, out: null, timeoutMs: 90000 };
const argv = process.argv.slice(2);
for (let i = 0; i < argv.length; i++) {
  const a = argv[i];
  if (a === '--url') opts.url = argv[++i];
  else if (a === '--workflow') opts.workflow = argv[++i];
  else if (a === '--out') opts.out = argv[++i];
  else if (a === '--timeout-ms') opts.timeoutMs = Number(argv[++i]);
  else { console.error(`run_workflow: unknown argument ${a}`); process.exit(2); }
}
if (!opts.url || !opts.workflow || !opts.out) {
  console.error('usage: node run_workflow.mjs --url URL --workflow API_JSON --out DIR');
  process.exit(2);
}
fs.mkdirSync(opts.out, { recursive: true });
const workflow = JSON.parse(fs.readFileSync(opts.workflow, 'utf8'));
const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'comfy-run-profile-'));
const context = await chromium.launchPersistentContext(profile, {
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  headless: true,
  viewport: { width: 1440, height: 900 },
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
    '--disable-component-update', '--no-first-run', '--disable-quic', '--disable-sync'],
});
const page = context.pages()[0] ?? (await context.newPage());
const report = { ok: false, console_errors: [] };
page.on('console', (m) => { if (m.type() === 'error') report.console_errors.push(m.text()); });

async function finish(code, message) {
  if (message) { report.error = message; console.error(`run_workflow: ${message}`); }
  try { await page.screenshot({ path: path.join(opts.out, 'run.png') }); } catch {}
  fs.writeFileSync(path.join(opts.out, 'run.json'), JSON.stringify(report, null, 2));
  await context.close();
  fs.rmSync(profile, { recursive: true, force: true });
  process.exit(code);
}

try {
  await page.goto(opts.url, { waitUntil: 'domcontentloaded', timeout: 30000 });
  await page.waitForFunction(() => window.app && window.app.canvas && window.app.graph,
    null, { timeout: 60000 });
  // The first-run dialogs (if any) would cover the canvas.
  await page.keyboard.press('Escape');
  report.queued = await page.evaluate(async (wf) => {
    await window.app.loadApiJson(wf, 'test-workflow.json');
    await window.app.queuePrompt(0);
    return Object.keys(wf).length;
  }, workflow);
  // Wait until the output reached the node (the `executed` event) ...
  const handle = await page.waitForFunction(() => {
    const outs = window.app.nodeOutputs || {};
    for (const [node, o] of Object.entries(outs)) {
      if (o && o.images && o.images.length) return { node, images: o.images };
    }
    return null;
  }, null, { timeout: opts.timeoutMs, polling: 250 });
  report.outputs = await handle.jsonValue();
  // ... and the editor fetched and shows the image.
  const img = report.outputs.images[0];
  const loaded = await page.evaluate(async (img) => {
    const q = new URLSearchParams({ filename: img.filename, subfolder: img.subfolder || '', type: img.type });
    const el = new Image();
    el.src = window.app.api.apiURL('/view?' + q.toString());
    await el.decode();
    return { width: el.naturalWidth, height: el.naturalHeight, src: el.src };
  }, img);
  report.image = loaded;
  await page.waitForTimeout(500);
  report.ok = loaded.width > 0;
  await finish(report.ok ? 0 : 1, report.ok ? null : 'the output image did not load');
} catch (e) {
  await finish(1, e.message.split('\n')[0]);
}
