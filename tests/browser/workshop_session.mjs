#!/usr/bin/env node
// workshop_session.mjs -- one workshop session as a participant lives it, in
// the real ComfyUI editor (frontend 1.58.1) served by comfy-multi, clicking
// through the UI like a person would. Driven by tests/frontend_browser.rs.
//
//   node workshop_session.mjs --base http://HOST:PORT
//        --user-a user01 --password-a PW --user-b user02 --password-b PW
//        --workflow demo/01-solid-color-invert.json --broadcast TEXT --out DIR
//        [--timeout-ms 150000]
//
// Browser A (participant A):
//   1. opens /<a>/ -> is sent to the login page -> types the password ->
//      lands in the editor, which knows the workers' nodes;
//   2. our extension's status pill (#comfy-multi-status) names A;
//   3. opens --workflow from the Workflows sidebar (clicking the folder and
//      the file), checks every node's type is known, presses Run;
//   4. waits for the output: app.nodeOutputs gets the images and the nodes'
//      preview <img>s load from /view;
//   5. prints "waiting-for-broadcast" on stdout (the caller then broadcasts
//      --broadcast as the instructor) and waits up to 30 s for that toast;
//   6. reloads: still logged in, and the finished job is listed in the Job
//      Queue panel (with its thumbnail from /view).
// Browser B (a separate context, participant B):
//   7. logs in, sees an empty Job Queue panel and /api/jobs, and cannot open
//      A's /view URL (A's path answers 401 / the login page, B's own 404).
//
// Writes DIR/NN-step.png after every step (and on failure) and
// DIR/report.json: { ok, failed_step, error, steps: {...}, screenshots[],
// console_errors[], page_errors[], http_errors[] }. Exit 0 = every step
// passed, 1 = one failed (reason on stderr), 2 = usage / launch error.
//
// Selectors (read from the running 1.58.1 UI):
//   login page        #password, button[type=submit]     (our login.rs)
//   sidebar tab       [data-testid=workflows-tab-button]
//   workflow tree     .comfyui-workflows-browse [role=treeitem][aria-label=NAME]
//                     (folders: data-tree-node-type=folder, aria-expanded)
//   Run button        [data-testid=queue-button]
//   Job Queue panel   [data-testid=queue-overlay-toggle] opens
//                     [data-testid=queue-progress-overlay]; its jobs are
//                     [data-testid=job-assets-list] [data-job-id=PROMPT_ID]
//   toasts            [data-testid=toast-viewport] [data-testid=toast]
//   our pill          #comfy-multi-status .comfy-multi-text

import { chromium } from 'playwright-core';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const opts = {
  base: null, userA: null, passwordA: null, userB: null, passwordB: null,
  workflow: null, broadcast: null, out: null, timeoutMs: 150000,
};
const argv = process.argv.slice(2);
const flags = {
  '--base': 'base', '--user-a': 'userA', '--password-a': 'passwordA',
  '--user-b': 'userB', '--password-b': 'passwordB', '--workflow': 'workflow',
  '--broadcast': 'broadcast', '--out': 'out', '--timeout-ms': 'timeoutMs',
};
for (let i = 0; i < argv.length; i++) {
  const key = flags[argv[i]];
  if (!key || i + 1 >= argv.length) {
    console.error(`workshop_session: bad argument ${argv[i]}`);
    process.exit(2);
  }
  opts[key] = key === 'timeoutMs' ? Number(argv[++i]) : argv[++i];
}
for (const [flag, key] of Object.entries(flags)) {
  if (opts[key] === null) {
    console.error(`workshop_session: ${flag} is required`);
    process.exit(2);
  }
}
const base = opts.base.replace(/\/+$/, '');
fs.mkdirSync(opts.out, { recursive: true });
// The workflow as shipped, to check the editor opened that one.
const shipped = JSON.parse(
  fs.readFileSync(path.join(here, '..', '..', 'workflows', opts.workflow), 'utf8'),
);

const t0 = Date.now();
const ms = () => Date.now() - t0;
const deadline = t0 + opts.timeoutMs;
const left = (cap) => Math.max(1000, Math.min(cap ?? Infinity, deadline - Date.now()));
const report = {
  ok: false,
  failed_step: null,
  error: null,
  steps: {},
  screenshots: [],
  console_errors: [],
  page_errors: [],
  http_errors: [],
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
  console.error(`workshop_session: cannot launch Chromium: ${e.message}`);
  process.exit(2);
}

// A browser context (its own cookies and localStorage) per participant.
async function participant(who) {
  const context = await browser.newContext({ viewport: { width: 1440, height: 900 } });
  const page = await context.newPage();
  page.on('console', (m) => {
    if (m.type() === 'error') {
      report.console_errors.push({ t: ms(), who, text: m.text(), url: m.location()?.url });
    }
  });
  page.on('pageerror', (e) => report.page_errors.push({ t: ms(), who, message: String(e?.stack || e) }));
  page.on('response', (r) => {
    if (r.status() >= 400) {
      report.http_errors.push({ t: ms(), who, method: r.request().method(), url: r.url(), status: r.status() });
    }
  });
  return { who, context, page };
}

let shot = 0;
async function screenshot(page, name) {
  const file = path.join(opts.out, `${String(++shot).padStart(2, '0')}-${name}.png`);
  try {
    await page.screenshot({ path: file, timeout: 10000 });
    report.screenshots.push(file);
  } catch (e) {
    console.error(`workshop_session: screenshot ${name} failed: ${e.message.split('\n')[0]}`);
  }
}

let current = null; // { name, page }
async function step(name, page, fn) {
  current = { name, page };
  const started = ms();
  const result = (await fn()) ?? {};
  report.steps[name] = { ok: true, ms: ms() - started, ...result };
  await screenshot(page, name);
  console.error(`workshop_session: ${name} ok (${ms() - started} ms)`);
}

async function finish(code) {
  report.ok = code === 0;
  report.total_ms = ms();
  fs.writeFileSync(path.join(opts.out, 'report.json'), JSON.stringify(report, null, 2));
  await browser.close().catch(() => {});
  process.exit(code);
}

const booted = () => {
  const c = document.querySelector('canvas#graph-canvas');
  return !!(window.app && window.app.canvas && window.app.graph && c && c.offsetWidth > 0);
};

// Open the participant's editor: the login page first, then the editor.
async function logIn(p, user, password) {
  const url = `${base}/${user}/`;
  await p.page.goto(url, { waitUntil: 'domcontentloaded', timeout: left(30000) });
  const loginUrl = p.page.url();
  if (!loginUrl.endsWith(`/${user}/login`)) {
    throw new Error(`${url} did not lead to the login page (at ${loginUrl})`);
  }
  await p.page.locator('#password').fill(password, { timeout: left(10000) });
  await Promise.all([
    p.page.waitForURL(`${base}/${user}/**`, { timeout: left(30000) }),
    p.page.locator('button[type=submit]').click(),
  ]);
  await p.page.waitForFunction(booted, null, { timeout: left(60000), polling: 250 });
  return { login_page: loginUrl, editor: p.page.url() };
}

async function pillText(page, user) {
  const pill = page.locator('#comfy-multi-status .comfy-multi-text');
  await pill.filter({ hasText: user }).waitFor({ timeout: left(20000) });
  return (await pill.textContent()).trim();
}

// The Job Queue panel, opened if it is not already (its state is a setting).
async function openJobQueue(page) {
  const overlay = page.locator('[data-testid=queue-progress-overlay]');
  if (!(await overlay.isVisible())) {
    await page.locator('[data-testid=queue-overlay-toggle]').click({ timeout: left(10000) });
  }
  await overlay.waitFor({ timeout: left(10000) });
  return overlay;
}

const a = await participant('A');
const b = await participant('B');
try {
  // 1. Log in; the editor knows the workers' nodes.
  await step('a-logs-in', a.page, async () => {
    const r = await logIn(a, opts.userA, opts.passwordA);
    r.registered_node_types = await a.page.evaluate(
      () => Object.keys(window.LiteGraph?.registered_node_types ?? {}).length,
    );
    if (r.registered_node_types < 20) {
      throw new Error(`only ${r.registered_node_types} node types registered (no /object_info?)`);
    }
    // The startup graph is drawn (the app's default one, or the last opened).
    r.startup_graph_nodes = await a.page.evaluate(() => window.app.graph.nodes.length);
    if (!r.startup_graph_nodes) throw new Error('the editor shows no nodes');
    return r;
  });

  // 2. Our extension names the participant.
  await step('a-sees-their-name', a.page, async () => ({ pill: await pillText(a.page, opts.userA) }));

  // 3. Open the pre-loaded workflow from the Workflows sidebar, press Run.
  let promptId;
  await step('a-opens-the-workflow-and-runs-it', a.page, async () => {
    const page = a.page;
    await page.locator('[data-testid=workflows-tab-button]').click({ timeout: left(10000) });
    const tree = page.locator('.comfyui-workflows-browse');
    const parts = opts.workflow.replace(/\.json$/, '').split('/');
    const leaf = parts.pop();
    for (const folder of parts) {
      const item = tree.locator(`[role=treeitem][data-tree-node-type=folder][aria-label="${folder}"]`);
      await item.waitFor({ timeout: left(15000) });
      if ((await item.getAttribute('aria-expanded')) !== 'true') await item.click();
    }
    await tree.locator(`[role=treeitem][aria-label="${leaf}"]`).click({ timeout: left(10000) });
    const wanted = `workflows/${opts.workflow}`;
    await page.waitForFunction(
      (w) => window.app.extensionManager?.workflow?.activeWorkflow?.path === w,
      wanted, { timeout: left(15000) },
    );
    const graph = await page.evaluate(() => window.app.graph.nodes.map((n) => ({
      id: String(n.id), type: n.type, known: !!window.LiteGraph.registered_node_types[n.type],
    })));
    const missing = [...new Set(graph.filter((n) => !n.known).map((n) => n.type))];
    if (missing.length) throw new Error(`the workflow has nodes of unknown type: ${missing.join(', ')}`);
    const expected = shipped.nodes.map((n) => `${n.id}:${n.type}`).sort();
    const got = graph.map((n) => `${n.id}:${n.type}`).sort();
    if (JSON.stringify(expected) !== JSON.stringify(got)) {
      throw new Error(`the editor shows ${got.join(' ')}, not the workflow's ${expected.join(' ')}`);
    }
    // Close the sidebar so the canvas (and the outputs) are in view.
    await page.locator('[data-testid=workflows-tab-button]').click();
    const queued = page.waitForResponse(
      (r) => r.request().method() === 'POST' && new URL(r.url()).pathname === `/${opts.userA}/api/prompt`,
      { timeout: left(20000) },
    );
    await page.locator('[data-testid=queue-button]').click({ timeout: left(10000) });
    const resp = await queued;
    const body = await resp.json().catch(() => null);
    if (resp.status() !== 200 || !body?.prompt_id) {
      throw new Error(`POST /api/prompt answered ${resp.status()}: ${JSON.stringify(body)}`);
    }
    promptId = body.prompt_id;
    return { active_workflow: wanted, nodes: graph, prompt_status: resp.status(), prompt_id: promptId };
  });

  // 4. The outputs reach the image nodes, whose previews load from /view.
  let output;
  await step('a-sees-the-output-image', a.page, async () => {
    const page = a.page;
    const imageNodes = shipped.nodes
      .filter((n) => ['SaveImage', 'PreviewImage'].includes(n.type))
      .map((n) => String(n.id));
    const handle = await page.waitForFunction((ids) => {
      const outs = window.app.nodeOutputs || {};
      const shown = [];
      for (const id of ids) {
        const images = outs[id]?.images;
        const imgs = window.app.graph.getNodeById(id)?.imgs ?? [];
        if (!images?.length || !imgs.length || !imgs.every((i) => i.complete && i.naturalWidth > 0)) return null;
        shown.push({
          node: id,
          images,
          previews: imgs.map((i) => ({ src: i.src, width: i.naturalWidth, height: i.naturalHeight })),
        });
      }
      return shown;
    }, imageNodes, { timeout: left(90000), polling: 250 });
    const shown = await handle.jsonValue();
    const previews = shown.flatMap((s) => s.previews);
    if (!previews.every((i) => new URL(i.src).pathname === `/${opts.userA}/api/view`)) {
      throw new Error(`preview images not from /view: ${JSON.stringify(previews)}`);
    }
    const saved = shown.flatMap((s) => s.images).filter((i) => i.type === 'output');
    if (!saved.length) throw new Error(`no saved output among ${JSON.stringify(shown)}`);
    output = saved[0];
    return { image_nodes: shown, saved: output };
  });

  // 5. The instructor broadcasts (the caller does it on this line) -> toast.
  await step('a-sees-the-instructors-broadcast', a.page, async () => {
    console.log('waiting-for-broadcast');
    const toast = a.page
      .locator('[data-testid=toast-viewport] [data-testid=toast]')
      .filter({ hasText: opts.broadcast });
    await toast.first().waitFor({ timeout: left(30000) });
    return { toast: (await toast.first().innerText()).replace(/\s+/g, ' ').trim() };
  });

  // 6. A reload keeps the login and the finished job.
  await step('a-reloads-and-still-has-the-job', a.page, async () => {
    const page = a.page;
    await page.reload({ waitUntil: 'domcontentloaded', timeout: left(30000) });
    if (page.url().includes('/login')) throw new Error(`the reload went to the login page (${page.url()})`);
    await page.waitForFunction(booted, null, { timeout: left(60000), polling: 250 });
    const still = page.url();
    const pill = await pillText(page, opts.userA);
    await openJobQueue(page);
    const job = page.locator(`[data-testid=job-assets-list] [data-job-id="${promptId}"]`);
    await job.waitFor({ timeout: left(20000) });
    const thumb = await (await page.waitForFunction((id) => {
      const img = document.querySelector(`[data-testid=job-assets-list] [data-job-id="${id}"] img`);
      return img && img.complete && img.naturalWidth > 0 ? { src: img.src, alt: img.alt } : null;
    }, promptId, { timeout: left(20000), polling: 250 })).jsonValue();
    const api = await page.evaluate(async () => {
      const r = await window.app.api.fetchApi('/jobs?status=completed,failed,cancelled&limit=64&offset=0');
      return { status: r.status, body: await r.json() };
    });
    return {
      url: still,
      pill,
      listed_job: promptId,
      listed_text: (await job.innerText()).replace(/\s+/g, ' ').trim(),
      thumbnail: thumb,
      api_jobs: api.body.jobs?.map((j) => ({ id: j.id, status: j.status })),
    };
  });

  // 7. The other participant sees none of it.
  await step('b-sees-none-of-their-jobs', b.page, async () => {
    const page = b.page;
    const jobsLoaded = page.waitForResponse(
      (r) => r.url().includes(`/${opts.userB}/api/jobs?status=completed`),
      { timeout: left(60000) },
    );
    const r = await logIn(b, opts.userB, opts.passwordB);
    await jobsLoaded;
    r.pill = await pillText(page, opts.userB);
    const overlay = await openJobQueue(page);
    r.job_queue_text = (await overlay.innerText()).replace(/\s+/g, ' ').trim();
    r.listed_jobs = await page.locator('[data-testid=job-assets-list] [data-job-id]').count();
    r.api_jobs = await page.evaluate(async () => {
      const all = [];
      for (const s of ['in_progress,pending', 'completed,failed,cancelled']) {
        const res = await window.app.api.fetchApi(`/jobs?status=${s}&limit=200&offset=0`);
        all.push(...((await res.json()).jobs ?? []));
      }
      return all.length;
    });
    const q = new URLSearchParams({ filename: output.filename, subfolder: output.subfolder || '', type: output.type });
    r.view_of_a = await page.evaluate(async ([a, b, q]) => {
      const theirs = await fetch(`/${a}/api/view?${q}`);
      const mine = await fetch(`/${b}/api/view?${q}`);
      return { their_path: theirs.status, own_path: mine.status };
    }, [opts.userA, opts.userB, q.toString()]);
    // And opened as a page, A's image leads to A's login page.
    const viewPage = await b.context.newPage();
    const resp = await viewPage.goto(`${base}/${opts.userA}/api/view?${q}`, { timeout: left(20000) });
    r.view_of_a.opened = { status: resp?.status(), url: viewPage.url() };
    await screenshot(viewPage, 'b-opens-a-view-url');
    await viewPage.close();
    if (r.listed_jobs !== 0 || r.api_jobs !== 0) {
      throw new Error(`B sees jobs: ${r.listed_jobs} in the panel, ${r.api_jobs} from /api/jobs`);
    }
    if (r.view_of_a.their_path !== 401 || r.view_of_a.own_path !== 404) {
      throw new Error(`B could reach A's image: ${JSON.stringify(r.view_of_a)}`);
    }
    if (!r.view_of_a.opened.url.endsWith(`/${opts.userA}/login`)) {
      throw new Error(`A's /view opened in B's browser at ${r.view_of_a.opened.url}`);
    }
    return r;
  });
} catch (e) {
  report.failed_step = current?.name ?? null;
  report.error = e.message.split('\n')[0];
  console.error(`workshop_session: ${report.failed_step}: ${report.error}`);
  if (current) await screenshot(current.page, `failed-${current.name}`);
  await finish(1);
}
await finish(0);
