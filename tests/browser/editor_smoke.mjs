#!/usr/bin/env node
// editor_smoke.mjs -- boot the ComfyUI web editor in headless Chromium and
// report whether it came up.
//
//   node editor_smoke.mjs --url URL --out DIR [--expect-nodes] [--timeout-ms 60000]
//
// Writes DIR/editor.png (screenshot) and DIR/report.json:
//   { ok, url, final_url, booted, boot_ms, node_count, loaded_default_graph,
//     registered_node_types, nodes[], missing_node_types[],
//     error, console_errors[], page_errors[], failed_requests[],
//     http_errors[] (status >= 400), requests[] (every request in order, with
//     method/url/status/resource type), websockets[] (url + first frames) }
// Exit status: 0 = editor booted (with --expect-nodes: the graph has nodes, all
//                  of types known from /api/object_info; if the app shows an
//                  empty canvas the harness calls app.loadGraphData() first),
//              1 = it did not (message on stderr), 2 = usage / launch error.
//
// Uses playwright-core with the system Chromium (no bundled browser download):
// set CHROMIUM=/path/to/chromium to override /usr/bin/chromium.
// Run tests/browser/install.sh first.
//
// "Booted" means: the GraphView finished `app.setup()` -- `window.app` and
// `window.app.canvas` exist (set in GraphView-*.js right after setup) and the
// LiteGraph canvas `canvas#graph-canvas` (inside `#graph-canvas-container`)
// is visible. Selectors read from frontend 1.58.1's GraphView-Bt0QZMwI.js.

import { chromium } from 'playwright-core';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

function usage(msg) {
  if (msg) console.error(`editor_smoke: ${msg}`);
  console.error('usage: node editor_smoke.mjs --url URL --out DIR [--expect-nodes] [--timeout-ms N]');
  process.exit(2);
}

const opts = { url: null, out: null, expectNodes: false, timeoutMs: 60000 };
const argv = process.argv.slice(2);
for (let i = 0; i < argv.length; i++) {
  const a = argv[i];
  if (a === '--url') opts.url = argv[++i];
  else if (a === '--out') opts.out = argv[++i];
  else if (a === '--expect-nodes') opts.expectNodes = true;
  else if (a === '--timeout-ms') opts.timeoutMs = Number(argv[++i]);
  else if (a === '-h' || a === '--help') usage();
  else usage(`unknown argument ${a}`);
}
if (!opts.url || !opts.out) usage('--url and --out are required');
if (!Number.isFinite(opts.timeoutMs) || opts.timeoutMs <= 0) usage('bad --timeout-ms');

const executablePath = process.env.CHROMIUM || '/usr/bin/chromium';
if (!fs.existsSync(executablePath)) {
  console.error(`editor_smoke: Chromium not found at ${executablePath} (run tests/browser/install.sh)`);
  process.exit(2);
}
fs.mkdirSync(opts.out, { recursive: true });

const t0 = Date.now();
const ms = () => Date.now() - t0;
const report = {
  ok: false,
  url: opts.url,
  final_url: null,
  booted: false,
  boot_ms: null,
  expect_nodes: opts.expectNodes,
  node_count: null,
  loaded_default_graph: false,
  error: null,
  console_errors: [],
  console_warnings: [],
  page_errors: [],
  failed_requests: [],
  aborted_after_response: [],
  http_errors: [],
  dismissed_dialogs: 0,
  requests: [],
  websockets: [],
};

const userDataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'comfy-smoke-profile-'));
let context;
try {
  // launchPersistentContext: the only way to give Chromium our own fresh
  // --user-data-dir through playwright.
  context = await chromium.launchPersistentContext(userDataDir, {
    executablePath,
    headless: true,
    viewport: { width: 1440, height: 900 },
    args: [
      '--headless', '--no-sandbox', '--disable-gpu',
      '--disable-background-networking', '--disable-component-update',
      '--no-first-run', '--disable-quic', '--disable-sync',
    ],
  });
} catch (e) {
  console.error(`editor_smoke: failed to launch Chromium: ${e.message}`);
  fs.rmSync(userDataDir, { recursive: true, force: true });
  process.exit(2);
}

const page = context.pages()[0] ?? (await context.newPage());
const reqIndex = new Map();

page.on('console', (m) => {
  const entry = { t: ms(), type: m.type(), text: m.text(), location: m.location()?.url || undefined };
  if (m.type() === 'error') report.console_errors.push(entry);
  else if (m.type() === 'warning') report.console_warnings.push(entry);
});
page.on('pageerror', (e) => report.page_errors.push({ t: ms(), message: String(e?.stack || e) }));
page.on('request', (r) => {
  const entry = { t: ms(), method: r.method(), url: r.url(), type: r.resourceType(), status: null };
  reqIndex.set(r, entry);
  report.requests.push(entry);
});
page.on('response', (resp) => {
  const entry = reqIndex.get(resp.request());
  if (entry) entry.status = resp.status();
  if (resp.status() >= 400) {
    report.http_errors.push({ t: ms(), method: resp.request().method(), url: resp.url(), status: resp.status() });
  }
});
page.on('requestfailed', (r) => {
  const entry = reqIndex.get(r);
  if (entry) entry.failure = r.failure()?.errorText;
  // Chromium reports net::ERR_ABORTED for requests whose response arrived but
  // whose body the page never read (e.g. POST /api/settings/X -> 200 ""). Those
  // are not failures of the server; keep them apart.
  if (entry && entry.status !== null) {
    report.aborted_after_response.push({ t: ms(), method: r.method(), url: r.url(), status: entry.status, error: r.failure()?.errorText });
    return;
  }
  report.failed_requests.push({ t: ms(), method: r.method(), url: r.url(), error: r.failure()?.errorText });
});
page.on('websocket', (ws) => {
  const w = { t: ms(), url: ws.url(), frames: [], closed: false, error: null };
  report.websockets.push(w);
  const keep = (dir) => (f) => {
    if (w.frames.length < 20) w.frames.push({ t: ms(), dir, payload: String(f.payload).slice(0, 500) });
  };
  ws.on('framesent', keep('sent'));
  ws.on('framereceived', keep('recv'));
  ws.on('socketerror', (e) => { w.error = String(e); });
  ws.on('close', () => { w.closed = true; });
});

async function finish(code, msg) {
  if (msg) {
    report.error = msg;
    console.error(`editor_smoke: ${msg}`);
  }
  try { report.final_url = page.url(); } catch {}
  try {
    await page.screenshot({ path: path.join(opts.out, 'editor.png'), timeout: 15000 });
  } catch (e) {
    console.error(`editor_smoke: screenshot failed: ${e.message}`);
  }
  report.ok = code === 0;
  report.total_ms = ms();
  fs.writeFileSync(path.join(opts.out, 'report.json'), JSON.stringify(report, null, 2));
  await context.close().catch(() => {});
  fs.rmSync(userDataDir, { recursive: true, force: true });
  console.log(
    `editor_smoke: ${code === 0 ? 'OK' : 'FAIL'} booted=${report.booted} nodes=${report.node_count} ` +
    `console_errors=${report.console_errors.length} http_errors=${report.http_errors.length} ` +
    `failed_requests=${report.failed_requests.length} -> ${opts.out}`,
  );
  process.exit(code);
}

const deadline = t0 + opts.timeoutMs;
const left = () => Math.max(1000, deadline - Date.now());

try {
  const resp = await page.goto(opts.url, { waitUntil: 'domcontentloaded', timeout: left() });
  if (!resp) await finish(1, `no response for ${opts.url}`);
  if (resp.status() >= 400) await finish(1, `GET ${opts.url} -> HTTP ${resp.status()}`);
} catch (e) {
  await finish(1, `could not load ${opts.url}: ${e.message.split('\n')[0]}`);
}

try {
  await page.waitForFunction(
    () => {
      const c = document.querySelector('canvas#graph-canvas');
      return !!(window.app && window.app.canvas && window.app.graph && c && c.offsetWidth > 0 && c.offsetHeight > 0);
    },
    null,
    { timeout: left(), polling: 250 },
  );
  report.booted = true;
  report.boot_ms = ms();
} catch (e) {
  const state = await page
    .evaluate(() => ({
      hasApp: !!window.app,
      canvas: !!document.querySelector('canvas#graph-canvas'),
      splash: !!document.getElementById('splash-loader'),
      userSelect: !!document.querySelector('.user-select-view, [class*="user-select"]'),
      title: document.title,
    }))
    .catch(() => null);
  await finish(
    1,
    `ComfyUI editor did not boot within ${opts.timeoutMs} ms (no window.app / visible canvas#graph-canvas); ` +
      `page state: ${JSON.stringify(state)}; see report.json (http_errors, console_errors)`,
  );
}

const countNodes = () =>
  page.evaluate(() => {
    const g = window.app?.graph;
    return g ? (g.nodes ?? g._nodes ?? []).length : -1;
  });

// Workflow restore runs right after setup; give it a moment to populate.
let nodes = await countNodes();
const settleUntil = Math.min(deadline, Date.now() + 10000);
while (nodes <= 0 && Date.now() < settleUntil) {
  await page.waitForTimeout(250);
  nodes = await countNodes();
}
const dismissDialogs = async () => {
  // New users (setting Comfy.TutorialCompleted unset) get a blank workflow plus
  // the Templates dialog; the default graph also raises a missing-models
  // dialog. Close modal dialogs with Escape so the canvas is visible.
  for (let i = 0; i < 4; i++) {
    const open = await page.locator('.p-dialog-mask, [role="dialog"]:visible').count().catch(() => 0);
    if (!open) break;
    await page.keyboard.press('Escape');
    report.dismissed_dialogs++;
    await page.waitForTimeout(300);
  }
};
await dismissDialogs();
if (nodes <= 0 && opts.expectNodes) {
  // Empty canvas: ask the app to load its built-in default workflow.
  await page.evaluate(async () => { await window.app.loadGraphData(); }).catch((e) => {
    report.page_errors.push({ t: ms(), message: `loadGraphData(): ${e.message}` });
  });
  report.loaded_default_graph = true;
  nodes = await countNodes();
}
report.node_count = nodes;
// Nodes whose type is not in /api/object_info load as plain LGraphNode
// placeholders ("Missing Node Packs"); registered ones are ComfyNode with a
// static nodeData. has_errors is also set for nodes with missing models.
Object.assign(report, await page.evaluate(() => {
  const g = window.app?.graph;
  const list = g ? (g.nodes ?? g._nodes ?? []) : [];
  return {
    registered_node_types: Object.keys(window.LiteGraph?.registered_node_types ?? {}).length,
    nodes: list.map((n) => ({ id: n.id, type: n.type, registered: !!n.constructor?.nodeData, has_errors: !!n.has_errors })),
    missing_node_types: [...new Set(list.filter((n) => !n.constructor?.nodeData).map((n) => n.type))],
  };
}).catch(() => ({})));
// Let the canvas paint (and late requests settle) before the screenshot.
await page.waitForTimeout(1500);
await dismissDialogs();
await page.waitForTimeout(300);

if (opts.expectNodes && nodes <= 0) await finish(1, 'editor booted but the graph has no nodes');
if (opts.expectNodes && report.missing_node_types?.length) {
  await finish(1, `graph has nodes of unknown type (object_info missing/incomplete?): ${report.missing_node_types.join(', ')}`);
}
await finish(0);
