#!/usr/bin/env node
// admin_dashboard.mjs -- the instructor's dashboard (/admin/) as an
// instructor uses it, in headless Chromium at 1280x720, next to a
// participant's open editor. Driven by tests/admin_dashboard.rs.
//
//   node admin_dashboard.mjs --base http://HOST:PORT --admin-password PW
//        --user user01 --user-password PW --broadcast TEXT --out DIR
//        [--timeout-ms 120000]
//
// The caller plays ComfyUI and checks Redis: the script prints
// "request: <what>" on stdout and reads one JSON line ({"ok": true, …} or
// {"ok": false, "error": …}) from stdin. Requests: `enqueue PARTICIPANT
// NAME…` (-> id), `run ID` (gpu0 leases and starts it), `progress ID
// PARTICIPANT VALUE MAX`, `check-workflow FILE` (in user01's workflows), `warm FILE` (gpu0 reports FILE loaded, warm-up 1/2
// running), `check-status ID STATUS`, `check-mode MODE`,
// `check-order ID…`, `check-broadcast`, `check-locked NAME`, `check-paused`.
//
// Writes DIR/NN-step.png after every step (and on failure),
// DIR/dashboard-1280x720.png (the dashboard mid-workshop) and
// DIR/report.json: { ok, failed_step, error, steps: {...}, screenshots[],
// console_errors[], page_errors[] (the dashboard's), participant_page_errors[] }.
// Exit 0 = every step passed, 1 = one failed, 2 = usage / launch error.
//
// Selectors (dashboard.html / dashboard.js):
//   body[data-ready=1]            first load done; body[data-live=1]: event stream open
//   body[data-paused], body[data-mode]
//   #queue-rows tr[data-job-id=ID][data-state=waiting|running], buttons [data-action=up|down|prioritize|cancel]
//   #participant-rows tr[data-participant=NAME] [data-online], [data-action=lock|unlock|clear|max-pending]
//   #worker-cards [data-worker-id=ID][data-state], [data-progress-job=ID][data-progress=PCT],
//     .warm-models, .warmup[data-warmup=running|done|failed|none]
//   [data-mode=fifo|round_robin|fair_share][aria-pressed], #pause-toggle, #broadcast-text, #broadcast-send
//   #error (#error-text), #gallery-panel, #gallery-grid .thumb, #overlay
//   participant toasts: [data-testid=toast-viewport] [data-testid=toast]

import { chromium } from 'playwright-core';
import fs from 'node:fs';
import path from 'node:path';
import readline from 'node:readline';

const opts = {
  base: null, adminPassword: null, user: null, userPassword: null, broadcast: null, out: null,
  timeoutMs: 120000,
};
const flags = {
  '--base': 'base', '--admin-password': 'adminPassword', '--user': 'user',
  '--user-password': 'userPassword', '--broadcast': 'broadcast', '--out': 'out',
  '--timeout-ms': 'timeoutMs',
};
const argv = process.argv.slice(2);
for (let i = 0; i < argv.length; i++) {
  const key = flags[argv[i]];
  if (!key || i + 1 >= argv.length) {
    console.error(`admin_dashboard: bad argument ${argv[i]}`);
    process.exit(2);
  }
  opts[key] = key === 'timeoutMs' ? Number(argv[++i]) : argv[++i];
}
for (const [flag, key] of Object.entries(flags)) {
  if (opts[key] === null) {
    console.error(`admin_dashboard: ${flag} is required`);
    process.exit(2);
  }
}
const base = opts.base.replace(/\/+$/, '');
fs.mkdirSync(opts.out, { recursive: true });

const t0 = Date.now();
const ms = () => Date.now() - t0;
const deadline = t0 + opts.timeoutMs;
const left = (cap) => Math.max(1000, Math.min(cap ?? Infinity, deadline - Date.now()));
const report = {
  ok: false, failed_step: null, error: null, steps: {}, screenshots: [],
  console_errors: [], page_errors: [], participant_page_errors: [],
};

// ---- requests to the caller (stdout out, stdin back) ----
const replies = [];
let waiting = null;
readline.createInterface({ input: process.stdin }).on('line', (line) => {
  if (waiting) {
    const w = waiting;
    waiting = null;
    w(line);
  } else {
    replies.push(line);
  }
});
async function request(what) {
  console.log(`request: ${what}`);
  const line = replies.length ? replies.shift() : await new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      waiting = null;
      reject(new Error(`no answer to "${what}" within 15 s`));
    }, 15000);
    waiting = (l) => {
      clearTimeout(timer);
      resolve(l);
    };
  });
  const answer = JSON.parse(line);
  if (!answer.ok) throw new Error(`${what}: ${answer.error}`);
  return answer;
}

// ---- the browser ----
let browser;
try {
  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
      '--disable-component-update', '--no-first-run'],
  });
} catch (e) {
  console.error(`admin_dashboard: cannot launch Chromium: ${e.message}`);
  process.exit(2);
}

const admin = await browser.newContext({ viewport: { width: 1280, height: 720 } });
const page = await admin.newPage();
page.on('console', (m) => {
  if (m.type() === 'error') report.console_errors.push({ t: ms(), text: m.text(), url: m.location()?.url });
});
page.on('pageerror', (e) => report.page_errors.push({ t: ms(), message: String(e?.stack || e) }));
const participant = await browser.newContext({ viewport: { width: 1280, height: 800 } });
const editor = await participant.newPage();
editor.on('pageerror', (e) => report.participant_page_errors.push({ t: ms(), message: String(e?.stack || e) }));

let shot = 0;
async function screenshot(p, name) {
  const file = path.join(opts.out, `${String(++shot).padStart(2, '0')}-${name}.png`);
  try {
    await p.screenshot({ path: file, timeout: 10000 });
    report.screenshots.push(file);
  } catch (e) {
    console.error(`admin_dashboard: screenshot ${name} failed: ${e.message.split('\n')[0]}`);
  }
}

let current = null;
async function step(name, p, fn) {
  current = { name, page: p };
  const started = ms();
  const result = (await fn()) ?? {};
  report.steps[name] = { ok: true, took_ms: ms() - started, ...result };
  await screenshot(p, name);
  console.error(`admin_dashboard: ${name} ok (${ms() - started} ms)`);
}

async function finish(code) {
  report.ok = code === 0;
  report.total_ms = ms();
  fs.writeFileSync(path.join(opts.out, 'report.json'), JSON.stringify(report, null, 2));
  await browser.close().catch(() => {});
  process.exit(code);
}

const row = (id) => page.locator(`#queue-rows tr[data-job-id="${id}"]`);
const waitingOrder = () => page.$$eval('#queue-rows tr[data-state=waiting]', (rows) => rows.map((r) => r.dataset.jobId));
async function waitForOrder(ids) {
  await page.waitForFunction(
    (want) => JSON.stringify([...document.querySelectorAll('#queue-rows tr[data-state=waiting]')]
      .map((r) => r.dataset.jobId)) === JSON.stringify(want),
    ids, { timeout: left(5000), polling: 50 },
  );
}

try {
  // 1. The login page, then the dashboard, loaded and live.
  await step('admin-logs-in', page, async () => {
    await page.goto(`${base}/admin/`, { waitUntil: 'domcontentloaded', timeout: left(20000) });
    const loginPage = page.url();
    if (!loginPage.endsWith('/admin/login')) throw new Error(`/admin/ did not lead to the login page (at ${loginPage})`);
    await page.locator('#password').fill(opts.adminPassword);
    await Promise.all([
      page.waitForURL(`${base}/admin/`, { timeout: left(10000) }),
      page.locator('button[type=submit]').click(),
    ]);
    await page.waitForSelector('body[data-ready="1"][data-live="1"]', { timeout: left(10000) });
    // Any reload from here on would lose this marker.
    await page.evaluate(() => { window.__sameDocument = true; });
    const participants = await page.$$eval('#participant-rows tr[data-participant]', (r) => r.map((x) => x.dataset.participant));
    const galleryHidden = await page.locator('#gallery-panel').isHidden();
    const workers = await page.$$eval('#worker-cards [data-worker-id]', (c) => c.map((x) => x.dataset.workerId));
    return { login_page: loginPage, dashboard: page.url(), participants, gallery_hidden: galleryHidden, workers };
  });

  // 2. A participant opens their editor (stays open for the broadcast).
  await step('the-participant-opens-the-editor', editor, async () => {
    await editor.goto(`${base}/${opts.user}/`, { waitUntil: 'domcontentloaded', timeout: left(30000) });
    await editor.locator('#password').fill(opts.userPassword, { timeout: left(10000) });
    await Promise.all([
      editor.waitForURL(`${base}/${opts.user}/**`, { timeout: left(30000) }),
      editor.locator('button[type=submit]').click(),
    ]);
    await editor.waitForFunction(() => !!(window.app && window.app.canvas && window.app.graph),
      null, { timeout: left(60000), polling: 250 });
    await editor.locator('#comfy-multi-status .comfy-multi-text').filter({ hasText: opts.user })
      .waitFor({ timeout: left(20000) });
    return { url: editor.url() };
  });

  // 3. The mode switch (default fair share -> FIFO) reaches the queue.
  await step('the-mode-switches', page, async () => {
    await page.locator('[data-mode=fifo]').click();
    await page.waitForSelector('body[data-mode=fifo] [data-mode=fifo][aria-pressed=true]', { timeout: left(5000) });
    await request('check-mode fifo');
    return { shown: await page.evaluate(() => document.body.dataset.mode) };
  });

  // 4. A participant's new job shows in the Queue panel within 1 s.
  let first;
  await step('a-queued-job-appears-live', page, async () => {
    const asked = Date.now();
    first = (await request(`enqueue ${opts.user} Sunset study`)).id;
    await row(first).waitFor({ timeout: left(5000) });
    const took = Date.now() - asked;
    const text = (await row(first).innerText()).replace(/\s+/g, ' ').trim();
    if (!text.includes(opts.user) || !text.includes('Sunset study')) throw new Error(`the row says ${text}`);
    const reloaded = !(await page.evaluate(() => window.__sameDocument === true));
    return { ms: took, row: text, reloaded };
  });

  // 5. Cancel asks first, then the job is gone (and cancelled in Redis).
  await step('cancel-removes-the-job', page, async () => {
    let asked = null;
    page.once('dialog', (d) => {
      asked = d.message();
      d.accept();
    });
    await row(first).locator('[data-action=cancel]').click();
    await row(first).waitFor({ state: 'detached', timeout: left(5000) });
    if (!asked) throw new Error('cancel did not ask for confirmation');
    await request(`check-status ${first} cancelled`);
    return { confirm: asked };
  });

  // 6. A running job on the worker's card, its progress from job events.
  let running;
  await step('the-worker-shows-the-running-job', page, async () => {
    running = (await request(`enqueue ${opts.user} Warm-up`)).id;
    await row(running).waitFor({ timeout: left(5000) });
    await request(`run ${running}`);
    await page.waitForSelector(`#queue-rows tr[data-job-id="${running}"][data-state=running]`, { timeout: left(5000) });
    const card = page.locator('#worker-cards [data-worker-id=gpu0]');
    await page.waitForSelector(`#worker-cards [data-worker-id=gpu0][data-state=busy] [data-progress-job="${running}"]`, { timeout: left(5000) });
    await request(`progress ${running} ${opts.user} 5 10`);
    await page.waitForSelector(`[data-progress-job="${running}"][data-progress="50"]`, { timeout: left(5000) });
    const width = await page.$eval(`[data-progress-job="${running}"] .bar > i`, (i) => i.style.width);
    return {
      state: await card.getAttribute('data-state'),
      progress: await page.getAttribute(`[data-progress-job="${running}"]`, 'data-progress'),
      bar_width: width,
      card: (await card.innerText()).replace(/\s+/g, ' ').trim(),
    };
  });

  // 6b. What the worker holds loaded and how far its warm-up is.
  await step('the-worker-card-shows-its-warm-model-and-warm-up', page, async () => {
    await request('warm sd15-demo.safetensors');
    const card = page.locator('#worker-cards [data-worker-id=gpu0]');
    // Worker cards refresh with the dashboard's poll (10 s).
    await card.locator('.warmup[data-warmup=running]').waitFor({ timeout: left(15000) });
    const warm = (await card.locator('.warm-models').innerText()).trim();
    if (!warm.includes('sd15-demo.safetensors')) throw new Error(`warm models: ${warm}`);
    const warmup = (await card.locator('.warmup').innerText()).trim();
    if (!warmup.includes('1/2')) throw new Error(`warm-up: ${warmup}`);
    return { warm, warmup };
  });

  // 7. Move up and the priority lane reorder the queue.
  await step('move-and-priority-reorder-the-queue', page, async () => {
    const b = (await request('enqueue user02 Portrait')).id;
    const c = (await request('enqueue user03 Landscape')).id;
    await waitForOrder([b, c]);
    const before = await waitingOrder();
    await row(c).locator('[data-action=up]').click();
    await waitForOrder([c, b]);
    const moved = await waitingOrder();
    await row(b).locator('[data-action=prioritize]').click();
    await waitForOrder([b, c]);
    await row(b).locator('[data-priority]').waitFor({ timeout: left(5000) });
    await request(`check-order ${b} ${c}`);
    return { before, after_move_up: moved, after_priority: await waitingOrder() };
  });

  // 8. A broadcast typed here pops up in the participant's editor.
  await step('a-broadcast-reaches-the-editor', editor, async () => {
    // The editor's socket is open once the dashboard shows them online.
    await page.waitForSelector(`#participant-rows tr[data-participant="${opts.user}"] [data-online="1"]`, { timeout: left(20000) });
    await page.locator('#broadcast-text').fill(opts.broadcast);
    await page.locator('#broadcast-send').click();
    const toast = editor.locator('[data-testid=toast-viewport] [data-testid=toast]').filter({ hasText: opts.broadcast });
    await toast.first().waitFor({ timeout: left(15000) });
    await request('check-broadcast');
    await page.locator('#broadcast-last').filter({ hasText: opts.broadcast }).waitFor({ timeout: left(5000) });
    return {
      toast: (await toast.first().innerText()).replace(/\s+/g, ' ').trim(),
      box_cleared: (await page.locator('#broadcast-text').inputValue()) === '',
    };
  });

  // 8b. A workflow sent from here opens in the participant's editor, in a
  // new tab, with a toast; it is saved in their workflows.
  await step('a-workflow-sent-opens-in-the-editor', editor, async () => {
    const workflow = {
      last_node_id: 1, last_link_id: 0, links: [], groups: [], config: {}, extra: {}, version: 0.4,
      nodes: [{ id: 1, type: 'EmptyImage', title: 'Sent by the instructor', pos: [100, 100], size: [315, 130],
        flags: {}, order: 0, mode: 0, inputs: [], outputs: [{ name: 'IMAGE', type: 'IMAGE', links: null }],
        properties: {}, widgets_values: [512, 512, 1, 0] }],
    };
    await page.locator('#push-file').setInputFiles({
      name: 'Lesson 2.json', mimeType: 'application/json', buffer: Buffer.from(JSON.stringify(workflow)),
    });
    await page.locator('#push-to').fill(opts.user);
    await page.locator('#push-send').click();
    await page.locator('#push-last').filter({ hasText: 'sent to 1 participant' }).waitFor({ timeout: left(5000) });
    const toast = editor.locator('[data-testid=toast-viewport] [data-testid=toast]').filter({ hasText: 'Lesson 2' });
    await toast.first().waitFor({ timeout: left(15000) });
    await editor.waitForFunction(() => (window.app?.graph?._nodes || []).some((n) => n.title === 'Sent by the instructor'),
      null, { timeout: left(10000) });
    await request('check-workflow Lesson 2.json');
    return {
      toast: (await toast.first().innerText()).replace(/\s+/g, ' ').trim(),
      active: await editor.evaluate(() => window.app?.extensionManager?.workflow?.activeWorkflow?.path ?? null),
    };
  });

  // 8b. Pools: park a rented pool, change when it takes jobs, enable it
  // again — each shown in the panel at once and enforced by the queue.
  await step('a-pool-is-parked-and-its-burst-policy-changed', page, async () => {
    const row = '#pool-rows tr[data-pool=rented]';
    await page.locator(`${row}[data-state=enabled]`).waitFor({ timeout: left(5000) });
    await page.locator(`${row} [data-action=park]`).click();
    await page.locator(`${row}[data-state=parked]`).waitFor({ timeout: left(5000) });
    await request('check-pool rented parked always');
    await page.locator(`${row} input.burst-input`).fill('line_over:7');
    await page.locator(`${row} [data-action=burst]`).click();
    await page.locator(`${row}[data-burst="line_over:7"]`).waitFor({ timeout: left(5000) });
    await request('check-pool rented parked line_over:7');
    await page.locator(`${row} [data-action=enable]`).click();
    await page.locator(`${row}[data-state=enabled]`).waitFor({ timeout: left(5000) });
    await request('check-pool rented enabled line_over:7');
    return { shown: await page.locator(row).innerText() };
  });

  // 9. Lock a participant: one click, shown, and locked in the queue.
  await step('a-participant-is-locked', page, async () => {
    await page.locator('#participant-rows tr[data-participant=user03] [data-action=lock]').click();
    await page.locator('#participant-rows tr[data-participant=user03] [data-action=unlock]').waitFor({ timeout: left(5000) });
    await request('check-locked user03');
    return {};
  });

  // 10. An API error is shown as a message.
  await step('an-api-error-is-shown', page, async () => {
    const url = '**/admin/api/users/user02/lock';
    await page.route(url, (r) => r.fulfill({
      status: 409, contentType: 'application/json',
      body: JSON.stringify({ error: { code: 'conflict', message: 'the hub said no' } }),
    }));
    await page.locator('#participant-rows tr[data-participant=user02] [data-action=lock]').click();
    await page.locator('#error').filter({ hasText: 'the hub said no' }).waitFor({ timeout: left(5000) });
    await page.unroute(url);
    return { message: (await page.locator('#error-text').innerText()).trim() };
  });

  // 11. Pause: one click, shown in the header.
  await step('pause-shows-as-paused', page, async () => {
    await page.locator('#pause-toggle').click();
    await page.waitForSelector('body[data-paused="1"]', { timeout: left(5000) });
    await request('check-paused');
    // The chart has its first sample (taken when the hub started).
    await page.waitForSelector('#chart[data-samples]:not([data-samples="0"])', { timeout: left(12000) });
    // A successful action clears the earlier error.
    await page.locator('#error').waitFor({ state: 'hidden', timeout: left(5000) });
    return {
      pill: (await page.locator('#workshop-state').innerText()).trim(),
      button: (await page.locator('#pause-toggle').innerText()).trim(),
      chart_samples: Number(await page.getAttribute('#chart', 'data-samples')),
    };
  });
  // The dashboard mid-workshop, as the projector shows it.
  {
    const file = path.join(opts.out, 'dashboard-1280x720.png');
    await page.screenshot({ path: file, timeout: 10000 });
    report.screenshots.push(file);
    await page.screenshot({ path: path.join(opts.out, 'dashboard-full-page.png'), fullPage: true, timeout: 10000 });
  }

  // 12. Where the hub offers a gallery, its panel shows it; a click opens
  // the full image. (Answered here, as the gallery API may not be there.)
  await step('the-gallery-renders-when-offered', page, async () => {
    const png = Buffer.from('iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg==', 'base64');
    const now = Date.now();
    const items = [
      { participant: 'user01', filename: 'a.png', subfolder: '', url: '/admin/test-gallery/a.png', thumb_url: '/admin/test-gallery/a-thumb.png', at_ms: now - 60000 },
      { participant: 'user02', filename: 'b.png', subfolder: '', url: '/admin/test-gallery/b.png', at_ms: now - 5000 },
    ];
    await page.route('**/admin/api/gallery', (r) => r.fulfill({ status: 200, contentType: 'application/json', body: JSON.stringify(items) }));
    await page.route('**/admin/test-gallery/*', (r) => r.fulfill({ status: 200, contentType: 'image/png', body: png }));
    await page.reload({ waitUntil: 'domcontentloaded', timeout: left(10000) });
    await page.waitForSelector('body[data-ready="1"]', { timeout: left(10000) });
    await page.locator('#gallery-panel').waitFor({ state: 'visible', timeout: left(5000) });
    const tiles = page.locator('#gallery-grid .thumb');
    await page.waitForFunction(() => {
      const imgs = [...document.querySelectorAll('#gallery-grid .thumb img')];
      return imgs.length === 2 && imgs.every((i) => i.complete && i.naturalWidth > 0);
    }, null, { timeout: left(5000) });
    const first = await tiles.first().getAttribute('data-gallery-item');
    await tiles.first().click();
    await page.locator('#overlay').waitFor({ state: 'visible', timeout: left(5000) });
    const full = await page.$eval('#overlay-img', (i) => i.src);
    await screenshot(page, 'gallery-overlay');
    await page.keyboard.press('Escape');
    await page.locator('#overlay').waitFor({ state: 'hidden', timeout: left(5000) });
    return { tiles: await tiles.count(), newest_first: first, overlay_src: full, nav_link: await page.locator('#nav-gallery').isVisible() };
  });
} catch (e) {
  report.failed_step = current?.name ?? null;
  report.error = e.message.split('\n')[0];
  console.error(`admin_dashboard: ${report.failed_step}: ${e.message}`);
  if (current) await screenshot(current.page, `failed-${current.name}`);
  if (current?.page !== page) await screenshot(page, 'failed-dashboard');
  await finish(1);
}
await finish(0);
