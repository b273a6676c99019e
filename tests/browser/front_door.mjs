#!/usr/bin/env node
// front_door.mjs -- a participant at the workshop's one address, in headless
// Chromium: types a wrong password (stays at the door, told so), then their
// name as written on the card (any case, stray spaces) and the right
// password, and lands in their own ComfyUI editor, booted. Then the join
// card's link (password in the URL fragment) in a fresh browser: a wrong
// code is refused at the login, the right one opens the editor.
//
//   node front_door.mjs --base http://HOST:PORT --name NAME --password PW
//        --workshop TITLE --out DIR [--timeout-ms 90000]
//
// Writes DIR/door.png, DIR/editor.png and DIR/report.json
// { ok, error, steps: {...}, page_errors[] }. Exit 0 = all steps passed,
// 1 = one failed, 2 = usage / launch error.
// Selectors: the door's form input#name, input#password, button[type=submit],
// .err (the refusal); the editor: window.app + visible canvas#graph-canvas.

import { chromium } from 'playwright-core';
import fs from 'node:fs';
import path from 'node:path';

const opts = { base: null, name: null, password: null, workshop: null, out: null, timeoutMs: 90000 };
const flags = { '--base': 'base', '--name': 'name', '--password': 'password', '--workshop': 'workshop', '--out': 'out', '--timeout-ms': 'timeoutMs' };
const argv = process.argv.slice(2);
for (let i = 0; i < argv.length; i++) {
  const key = flags[argv[i]];
  if (!key || i + 1 >= argv.length) {
    console.error(`front_door: bad argument ${argv[i]}`);
    process.exit(2);
  }
  opts[key] = key === 'timeoutMs' ? Number(argv[++i]) : argv[++i];
}
for (const [flag, key] of Object.entries(flags)) {
  if (opts[key] === null) {
    console.error(`front_door: ${flag} is required`);
    process.exit(2);
  }
}
fs.mkdirSync(opts.out, { recursive: true });

const report = { ok: false, error: null, steps: {}, page_errors: [] };
let browser;
try {
  browser = await chromium.launch({ executablePath: process.env.CHROMIUM || '/usr/bin/chromium', args: ['--no-sandbox'] });
} catch (e) {
  console.error(`front_door: cannot launch Chromium: ${e.message}`);
  process.exit(2);
}
const page = await (await browser.newContext({ viewport: { width: 1280, height: 800 } })).newPage();
page.on('pageerror', (e) => report.page_errors.push(String(e)));
try {
  await page.goto(`${opts.base}/`, { waitUntil: 'domcontentloaded', timeout: opts.timeoutMs });
  const text = await page.textContent('body');
  if (!text.includes(opts.workshop)) throw new Error(`the door does not name the workshop: ${text}`);
  report.steps.door = { url: page.url(), title: await page.title() };

  await page.fill('input#name', opts.name);
  await page.fill('input#password', 'not-the-password');
  await Promise.all([page.waitForLoadState('domcontentloaded'), page.click('button[type=submit]')]);
  const refusal = (await page.textContent('.err'))?.trim();
  if (refusal !== 'Wrong name or password.') throw new Error(`refusal: ${refusal}`);
  if (new URL(page.url()).pathname !== '/') throw new Error(`left the door: ${page.url()}`);
  const kept = await page.inputValue('input#name');
  report.steps.wrong_password = { refusal, name_kept: kept };
  await page.screenshot({ path: path.join(opts.out, 'door.png') });

  await page.fill('input#name', `  ${opts.name.toUpperCase()} `);
  await page.fill('input#password', opts.password);
  await page.click('button[type=submit]');
  await page.waitForURL(`${opts.base}/${opts.name}/`, { timeout: opts.timeoutMs });
  await page.waitForFunction(() => {
    const c = document.querySelector('canvas#graph-canvas');
    return !!(window.app && window.app.canvas && c && c.offsetWidth > 0);
  }, null, { timeout: opts.timeoutMs });
  report.steps.editor = { url: page.url() };
  await page.screenshot({ path: path.join(opts.out, 'editor.png') });

  // The join card's QR link: the password in the fragment logs straight
  // in, in a fresh browser; a link with another code (an old card after
  // the instructor reset the password) stays at the login, told so, and
  // the code is gone from the address bar.
  const fresh = await (await browser.newContext()).newPage();
  await fresh.goto(`${opts.base}/${opts.name}/login#code=wrong-old-code`, { waitUntil: 'domcontentloaded' });
  await fresh.waitForSelector('.err', { timeout: opts.timeoutMs });
  const oldLink = { refusal: (await fresh.textContent('.err')).trim(), url: fresh.url() };
  if (oldLink.url.includes('#')) throw new Error(`the code stayed in the address bar: ${oldLink.url}`);
  const code = encodeURIComponent(opts.password);
  await fresh.goto(`${opts.base}/${opts.name}/login#code=${code}`, { waitUntil: 'domcontentloaded' });
  await fresh.waitForURL(`${opts.base}/${opts.name}/`, { timeout: opts.timeoutMs });
  await fresh.waitForFunction(() => !!(window.app && window.app.canvas), null, { timeout: opts.timeoutMs });
  report.steps.join_link = { old_link: oldLink, url: fresh.url() };
  report.ok = true;
} catch (e) {
  report.error = String(e.message || e);
  await page.screenshot({ path: path.join(opts.out, 'failure.png') }).catch(() => {});
}
fs.writeFileSync(path.join(opts.out, 'report.json'), JSON.stringify(report, null, 2));
await browser.close();
if (!report.ok) console.error(`front_door: ${report.error}`);
process.exit(report.ok ? 0 : 1);
