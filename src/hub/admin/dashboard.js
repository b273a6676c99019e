// The instructor's live dashboard (served at /admin/dashboard.js).
//
// Reads the admin API (/admin/api/status, queue, users, workers, samples,
// gallery) and stays live without reloads: every message of the event
// stream /admin/api/events re-fetches the lists it affects (debounced
// 150 ms), ComfyUI `progress` events move the workers' progress bars
// directly, and a slow poll (10 s) catches anything missed. Every action
// is one POST to the admin API; only cancel and clear ask first. API
// errors show in the red banner under the header.
//
// Plain modern JS, no library, no build step. All text goes in through
// textContent (workflow names are the participants' own).
'use strict';

const API = '/admin/api';
const DEBOUNCE_MS = 150;
const POLL_MS = 10000;
const MODES = { fifo: 'FIFO', round_robin: 'round robin', fair_share: 'fair share' };

const data = {
  status: null,
  queue: null, // { settings, waiting: [...], running: [...] }
  queueAt: 0, // when `queue` was fetched (waiting times count on from it)
  users: [],
  workers: [],
  pools: [],
  samples: null,
  gallery: null, // null: not offered by this hub
  galleryAbsent: false, // its route answered 404: not asked again
  progress: new Map(), // job id -> { value, max, node }
};

// ---------- small helpers ----------

const $ = (sel, root = document) => root.querySelector(sel);

/** Builds an element: h('td', {class: 'x', onclick: f, 'data-id': 1}, 'text', child). */
function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
    else if (k === 'class') el.className = v;
    else if (k === 'style' && typeof v === 'object') Object.assign(el.style, v);
    else if (v === true) el.setAttribute(k, '');
    else el.setAttribute(k, String(v));
  }
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

function clock(seconds) {
  const s = Math.max(0, Math.floor(seconds));
  const hh = Math.floor(s / 3600);
  const mm = Math.floor((s % 3600) / 60);
  const ss = String(s % 60).padStart(2, '0');
  return hh ? `${hh}:${String(mm).padStart(2, '0')}:${ss}` : `${mm}:${ss}`;
}

function duration(seconds) {
  if (!seconds) return '0 s';
  if (seconds < 10) return `${seconds.toFixed(1)} s`;
  if (seconds < 60) return `${Math.round(seconds)} s`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)} min ${String(Math.round(seconds % 60)).padStart(2, '0')} s`;
  return `${Math.floor(seconds / 3600)} h ${String(Math.floor((seconds % 3600) / 60)).padStart(2, '0')} min`;
}

function ago(ms) {
  if (!ms) return '–';
  const s = (Date.now() - ms) / 1000;
  if (s < 45) return 'now';
  if (s < 3600) return `${Math.round(s / 60)} min ago`;
  return new Date(ms).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
}

/** A short duration for an axis: 45s, 12m, 1.5h. */
function compact(seconds) {
  if (seconds < 90) return `${Math.round(seconds)}s`;
  if (seconds < 5400) return `${Math.round(seconds / 60)}m`;
  return `${(seconds / 3600).toFixed(1)}h`;
}

function gib(bytes) {
  return bytes ? `${(bytes / 2 ** 30).toFixed(1)} GiB` : '?';
}

// ---------- errors ----------

let errorTimer = null;
function showError(message) {
  $('#error-text').textContent = message;
  $('#error').hidden = false;
  clearTimeout(errorTimer);
  errorTimer = setTimeout(clearError, 12000);
}
function clearError() {
  $('#error').hidden = true;
}

// ---------- the API ----------

class ApiError extends Error {
  constructor(message, status) {
    super(message);
    this.status = status;
  }
}

async function api(path, { method = 'GET', body } = {}) {
  const init = { method, credentials: 'same-origin', headers: { accept: 'application/json' } };
  if (body !== undefined) {
    init.headers['content-type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  let r;
  try {
    r = await fetch(API + path, init);
  } catch (e) {
    throw new ApiError(`the hub does not answer (${e.message})`, 0);
  }
  if (r.status === 401) {
    location.href = '/admin/login';
    throw new ApiError('the admin session ended; log in again', 401);
  }
  const text = await r.text();
  let json = null;
  try {
    json = text ? JSON.parse(text) : null;
  } catch {
    json = null;
  }
  if (!r.ok) {
    const message = json?.error?.message || text.trim() || r.statusText || 'request failed';
    throw new ApiError(message, r.status);
  }
  return json;
}

/** One instructor action: POST, then refresh everything; errors in the banner.
 *  Answers the API's reply (truthy) or false. */
async function act(what, path, body, { confirmText, button } = {}) {
  if (confirmText && !window.confirm(confirmText)) return false;
  if (button) {
    button.disabled = true;
    button.classList.add('busy');
  }
  try {
    const reply = await api(path, { method: 'POST', body: body ?? {} });
    clearError();
    return reply || true;
  } catch (e) {
    if (e.status !== 401) showError(`${what}: ${e.message}`);
    return false;
  } finally {
    if (button && button.isConnected) {
      button.disabled = false;
      button.classList.remove('busy');
    }
    refresh('status', 'queue', 'users', 'workers');
  }
}

// ---------- loading (debounced) ----------

const loaders = {
  async status() {
    data.status = await api('/status');
    renderStatus();
  },
  async queue() {
    data.queue = await api('/queue');
    data.queueAt = Date.now();
    renderQueue();
    renderWorkers(); // running jobs' names
  },
  async users() {
    data.users = await api('/users');
    renderUsers();
    renderStatus();
  },
  async workers() {
    data.workers = await api('/workers');
    renderWorkers();
  },
  async pools() {
    data.pools = await api('/pools');
    renderPools();
  },
  async samples() {
    data.samples = await api('/samples');
    renderChart();
  },
  async gallery() {
    // Offered by the hub's gallery routes; absent (404) on hubs without.
    const r = await fetch(`${API}/gallery`, { credentials: 'same-origin', headers: { accept: 'application/json' } });
    let items = null;
    if (r.status === 404) data.galleryAbsent = true;
    if (r.ok) {
      try {
        const json = await r.json();
        items = Array.isArray(json) ? json : Array.isArray(json?.items) ? json.items : null;
      } catch {
        items = null;
      }
    }
    data.gallery = items;
    renderGallery();
  },
};
const ALL = Object.keys(loaders);

const pending = new Set();
let flushTimer = null;
let loadFailures = 0;

/** Re-fetches these lists after the debounce (all of them with no argument). */
function refresh(...kinds) {
  for (const k of kinds.length ? kinds : ALL) {
    if (k !== 'gallery' || !data.galleryAbsent) pending.add(k);
  }
  if (!flushTimer) flushTimer = setTimeout(flush, DEBOUNCE_MS);
}

async function flush() {
  flushTimer = null;
  const kinds = [...pending];
  pending.clear();
  const results = await Promise.allSettled(kinds.map((k) => loaders[k]()));
  const failed = results.map((r, i) => [kinds[i], r]).filter(([, r]) => r.status === 'rejected');
  if (failed.length) {
    loadFailures++;
    const [kind, r] = failed[0];
    if (r.reason?.status !== 401) showError(`Loading ${kind}: ${r.reason?.message ?? r.reason}`);
  } else if (loadFailures) {
    loadFailures = 0;
    clearError();
  }
  return failed.length === 0;
}

// ---------- live events ----------

let events = null;
function connect() {
  const live = $('#live');
  events = new EventSource(`${API}/events`);
  events.onopen = () => {
    live.className = 'live on';
    live.title = 'live updates: connected';
    document.body.dataset.live = '1';
    refresh(); // catch up on anything missed while away
  };
  events.onerror = () => {
    live.className = 'live off';
    live.title = 'live updates: reconnecting';
    document.body.dataset.live = '0';
    if (events.readyState === EventSource.CLOSED) {
      events = null;
      setTimeout(connect, 3000);
    }
  };
  events.onmessage = (m) => {
    let ev;
    try {
      ev = JSON.parse(m.data);
    } catch {
      return;
    }
    onEvent(ev);
  };
}

function onEvent(ev) {
  if (ev.type === 'job_event') {
    onJobEvent(ev.job, ev.event || {});
    return;
  }
  if (ev.status && ev.job) {
    if (['succeeded', 'failed', 'cancelled'].includes(ev.status)) data.progress.delete(ev.job);
    const kinds = ['status', 'queue', 'users', 'workers', 'pools'];
    if (ev.status === 'succeeded' && data.gallery) kinds.push('gallery');
    refresh(...kinds);
    return;
  }
  if (ev.settings !== undefined) {
    refresh('status', 'queue', 'users', 'workers', 'pools');
    return;
  }
  if (ev.broadcast !== undefined) {
    refresh('status');
  }
}

/** ComfyUI's own events, relayed: progress moves the bar at once. */
function onJobEvent(job, event) {
  const d = event.data || {};
  switch (event.type) {
    case 'execution_start':
      data.progress.set(job, { value: 0, max: 0, node: null });
      break;
    case 'executing':
      if (d.node === null || d.node === undefined) data.progress.delete(job);
      else data.progress.set(job, { ...(data.progress.get(job) || { value: 0, max: 0 }), node: d.node });
      break;
    case 'progress':
      data.progress.set(job, { value: Number(d.value) || 0, max: Number(d.max) || 0, node: d.node ?? null });
      break;
    default:
      return;
  }
  paintProgress(job);
}

function paintProgress(job) {
  for (const el of document.querySelectorAll('[data-progress-job]')) {
    if (el.dataset.progressJob !== job) continue;
    const p = data.progress.get(job);
    const bar = el.querySelector('.bar');
    const fill = el.querySelector('.bar > i');
    const label = el.querySelector('.pct');
    if (p && p.max > 0) {
      const pct = Math.min(100, Math.round((100 * p.value) / p.max));
      bar.classList.remove('indeterminate');
      fill.style.width = `${pct}%`;
      label.textContent = `${p.value}/${p.max} · ${pct}%`;
      el.dataset.progress = String(pct);
    } else {
      bar.classList.add('indeterminate');
      fill.style.width = '';
      label.textContent = 'working…';
      delete el.dataset.progress;
    }
  }
}

// ---------- rendering ----------

/** Replaces a container's children, keeping a focused input's value and focus. */
function replaceKeepingFocus(container, children) {
  const active = document.activeElement;
  let keep = null;
  if (active && container.contains(active) && active.dataset.key) {
    keep = { key: active.dataset.key, value: active.value, start: active.selectionStart };
  }
  container.replaceChildren(...children);
  if (keep) {
    const again = container.querySelector(`[data-key="${CSS.escape(keep.key)}"]`);
    if (again) {
      again.value = keep.value;
      again.focus();
      try {
        if (keep.start !== null) again.setSelectionRange(keep.start, keep.start);
      } catch {
        /* number inputs have no selection */
      }
    }
  }
}

function renderStatus() {
  const st = data.status;
  const sb = $('#storage-banner');
  const level = st.storage?.level;
  sb.hidden = level !== 'warn' && level !== 'refuse';
  sb.dataset.level = level || 'ok';
  if (!sb.hidden) {
    const where = (st.storage.filesystems || [])
      .map((f) => `${f.path}: ${gib(f.free_bytes)} free of ${gib(f.total_bytes)}`).join(' · ');
    sb.textContent = level === 'refuse'
      ? `Storage nearly full — new jobs are refused until space is freed (${where})`
      : `Storage is getting full (${where})`;
  }
  if (!st) return;
  const s = st.settings || {};
  const paused = s.paused_submit || s.paused_dispatch;
  const pill = $('#workshop-state');
  pill.className = `pill ${paused ? 'paused' : 'running'}`;
  pill.textContent = !paused ? '● RUNNING'
    : s.paused_submit && s.paused_dispatch ? '❚❚ PAUSED'
      : s.paused_submit ? '❚❚ SUBMIT PAUSED' : '❚❚ DISPATCH PAUSED';
  document.body.dataset.paused = paused ? '1' : '0';
  document.body.dataset.mode = s.mode || '';
  $('#mode-now').replaceChildren('mode ', h('b', {}, MODES[s.mode] || s.mode || '?'));

  $('#stat-waiting').textContent = st.waiting ?? '–';
  $('#stat-running').textContent = st.running ?? '–';
  $('#stat-done').textContent = st.succeeded ?? '–';
  const failed = $('#stat-failed');
  failed.textContent = st.failed ?? '–';
  failed.classList.toggle('nonzero', st.failed > 0);
  $('#stat-workers').textContent = st.workers ?? '–';
  const online = data.users.filter((u) => u.online).length;
  $('#stat-online').textContent = data.users.length ? `${online}/${data.users.length}` : '–';

  for (const b of document.querySelectorAll('[data-mode]')) {
    b.setAttribute('aria-pressed', String(b.dataset.mode === s.mode));
  }
  const aff = $('#affinity-toggle');
  aff.dataset.on = s.affinity ? '1' : '0';
  aff.setAttribute('aria-pressed', String(!!s.affinity));
  aff.textContent = s.affinity ? 'On' : 'Off';
  const toggle = $('#pause-toggle');
  toggle.textContent = paused ? '▶ Resume' : '❚❚ Pause';
  toggle.classList.toggle('resume', paused);
  toggle.dataset.paused = paused ? '1' : '0';
  $('#pause-detail').textContent = !paused ? 'taking and running jobs'
    : s.paused_submit && s.paused_dispatch ? 'no new jobs, none dispatched'
      : s.paused_submit ? 'no new jobs accepted' : 'no jobs sent to workers';
  const mp = $('#max-pending');
  if (document.activeElement !== mp) mp.value = s.max_pending_per_participant ?? '';
  const last = st.broadcast;
  $('#broadcast-last').textContent = last
    ? `Last broadcast ${ago(last.at_ms)}: “${last.message}”` : 'Nothing broadcast yet.';
}

function renderQueue() {
  const q = data.queue;
  if (!q) return;
  const rows = [];
  const since = (seconds) => data.queueAt - seconds * 1000;
  for (const j of q.running) {
    const started = j.started_ms || j.created_ms;
    rows.push(h('tr', { class: 'running', 'data-job-id': j.id, 'data-state': 'running' },
      h('td', { class: 'pos' }, '▶'),
      h('td', { class: 'name' }, j.participant),
      h('td', { class: 'wf', title: j.name || '' }, j.name || `job #${j.number}`),
      h('td', { 'data-since': started }, clock((Date.now() - started) / 1000)),
      h('td', { class: 'num' }, j.attempts ?? ''),
      h('td', {}, h('span', { class: 'badge run' }, j.status === 'leased' ? 'starting' : 'running'),
        j.worker ? h('span', { class: 'muted small' }, ` ${j.worker}`) : null,
        j.cancel_requested ? h('span', { class: 'badge cancelling' }, 'cancelling') : null),
      h('td', { class: 'actions' },
        h('button', {
          class: 'btn icon danger', 'data-action': 'cancel', title: 'cancel this running job',
          onclick: (e) => act('Cancel', `/jobs/${j.id}/cancel`, {}, {
            button: e.currentTarget,
            confirmText: `Cancel ${j.participant}'s running job “${j.name || `#${j.number}`}”?`,
          }),
        }, '✕')),
    ));
  }
  const n = q.waiting.length;
  q.waiting.forEach((w, i) => {
    rows.push(h('tr', { 'data-job-id': w.id, 'data-state': 'waiting', 'data-position': w.position },
      h('td', { class: 'pos' }, w.position),
      h('td', { class: 'name' }, w.participant),
      h('td', { class: 'wf', title: w.name || '' }, w.name || `job #${w.number}`),
      h('td', { 'data-since': Math.round(since(w.waiting_seconds)) }, clock(w.waiting_seconds)),
      h('td', { class: 'num' }, w.attempts),
      h('td', {}, w.priority ? h('span', { class: 'badge prio', 'data-priority': '1' }, '⚡ priority') : null),
      h('td', { class: 'actions' },
        h('button', {
          class: 'btn icon', 'data-action': 'up', title: 'move up', disabled: i === 0,
          onclick: (e) => act('Move up', `/jobs/${w.id}/move`, { direction: 'up' }, { button: e.currentTarget }),
        }, '▲'), ' ',
        h('button', {
          class: 'btn icon', 'data-action': 'down', title: 'move down', disabled: i === n - 1,
          onclick: (e) => act('Move down', `/jobs/${w.id}/move`, { direction: 'down' }, { button: e.currentTarget }),
        }, '▼'), ' ',
        h('button', {
          class: 'btn icon', 'data-action': 'prioritize', title: 'bump to the priority lane', disabled: w.priority,
          onclick: (e) => act('Priority', `/jobs/${w.id}/prioritize`, {}, { button: e.currentTarget }),
        }, '⚡'), ' ',
        h('button', {
          class: 'btn icon danger', 'data-action': 'cancel', title: 'cancel',
          onclick: (e) => act('Cancel', `/jobs/${w.id}/cancel`, {}, {
            button: e.currentTarget,
            confirmText: `Cancel ${w.participant}'s job “${w.name || `#${w.number}`}”?`,
          }),
        }, '✕')),
    ));
  });
  replaceKeepingFocus($('#queue-rows'), rows);
  $('#queue-empty').hidden = rows.length > 0;
  $('#queue-summary').textContent = `${n} waiting · ${q.running.length} running`;
}

function renderUsers() {
  const rows = data.users.map((u) => {
    const key = `mp-${u.name}`;
    const input = h('input', {
      type: 'number', min: 0, step: 1, 'data-key': key, 'aria-label': `max pending for ${u.name}`,
      placeholder: String(data.status?.settings?.max_pending_per_participant ?? ''),
      value: u.max_pending ?? '',
    });
    const setMax = (e) => {
      const v = input.value.trim();
      act('Max pending', `/users/${u.name}/max_pending`, { value: v === '' ? null : Number(v) }, { button: e.currentTarget });
    };
    input.addEventListener('keydown', (e) => {
      if (e.key === 'Enter') setMax({ currentTarget: input });
    });
    return h('tr', { 'data-participant': u.name, class: u.locked ? 'locked' : null },
      h('td', { class: 'name nowrap' },
        h('span', {
          class: `dot${u.online ? ' on' : ''}`, 'data-online': u.online ? '1' : '0',
          title: u.online ? `online: ${u.editors} editor tab(s) open` : 'offline',
        }), ' ', u.name, u.locked ? [' ', h('span', { class: 'badge lock' }, 'locked')] : null),
      h('td', { class: 'num' }, u.queued),
      h('td', { class: 'num' }, u.running),
      h('td', { class: 'num' }, u.done),
      h('td', { class: 'num' }, u.failed),
      h('td', { class: 'num' }, duration(u.gpu_seconds)),
      h('td', { class: 'nowrap', 'data-ago': u.last_activity_ms ?? '' }, ago(u.last_activity_ms)),
      h('td', { class: 'nowrap' }, input, ' ', h('button', { class: 'btn icon', 'data-action': 'max-pending', onclick: setMax, title: `set ${u.name}'s limit (empty: the global default)` }, '✓')),
      h('td', { class: 'actions' },
        u.locked
          ? h('button', { class: 'btn small', 'data-action': 'unlock', onclick: (e) => act('Unlock', `/users/${u.name}/unlock`, {}, { button: e.currentTarget }) }, 'Unlock')
          : h('button', { class: 'btn small', 'data-action': 'lock', title: 'refuse new jobs from this participant', onclick: (e) => act('Lock', `/users/${u.name}/lock`, {}, { button: e.currentTarget }) }, 'Lock'),
        ' ',
        h('button', {
          class: 'btn small danger', 'data-action': 'clear', disabled: !u.queued, title: 'cancel every waiting job of this participant',
          onclick: (e) => act('Clear queue', `/users/${u.name}/clear`, {}, {
            button: e.currentTarget, confirmText: `Cancel all ${u.queued} waiting job(s) of ${u.name}?`,
          }),
        }, 'Clear'),
        ' ',
        h('button', {
          class: 'btn small', 'data-action': 'reset', title: 'a new password and token (their open editors must log in again)',
          onclick: async () => {
            if (!window.confirm(`Give ${u.name} a new password? Their open editors must log in again.`)) return;
            try {
              const r = await api(`/users/${u.name}/reset`, { method: 'POST', body: {} });
              clearError();
              window.alert(`${u.name}'s new password: ${r.password}`);
            } catch (err) {
              if (err.status !== 401) showError(`Reset password: ${err.message}`);
            }
          },
        }, 'Reset password')),
    );
  });
  replaceKeepingFocus($('#participant-rows'), rows);
  const online = data.users.filter((u) => u.online).length;
  $('#participants-summary').textContent = `${data.users.length} · ${online} online`;
}

function renderWorkers() {
  const names = new Map((data.queue?.running || []).map((j) => [j.id, j]));
  const cards = data.workers.map((w) => {
    const used = w.vram_total && w.vram_free !== undefined && w.vram_free !== null ? w.vram_total - w.vram_free : null;
    const jobs = (w.jobs || []).map((j) => {
      const full = names.get(j.id) || j;
      return h('div', { class: 'job', 'data-progress-job': j.id },
        h('div', { class: 'what' },
          h('span', {}, h('b', {}, full.participant), ' · ', full.name || `job #${full.number}`),
          h('span', { class: 'pct muted' }, '')),
        h('div', { class: 'bar' }, h('i')));
    });
    return h('div', { class: `card ${w.state}`, 'data-worker-id': w.id, 'data-state': w.state, 'data-draining': w.draining ? '1' : '0' },
      h('header', {},
        h('span', { class: 'id' }, w.id),
        h('span', { class: `state ${w.state}` }, w.state),
        w.draining ? h('span', { class: 'badge drain' }, 'draining') : null,
        w.draining
          ? h('button', { class: 'btn small', 'data-action': 'undrain', title: 'give it jobs again', onclick: (e) => act('Undrain', `/workers/${w.id}/undrain`, {}, { button: e.currentTarget }) }, 'Undrain')
          : h('button', { class: 'btn small', 'data-action': 'drain', title: 'finish current jobs, take no new ones', onclick: (e) => act('Drain', `/workers/${w.id}/drain`, {}, { button: e.currentTarget }) }, 'Drain')),
      h('div', { class: 'meta' }, w.gpu || 'GPU unknown'),
      h('div', { class: 'meta' },
        w.vram_total ? `VRAM ${used !== null ? `${gib(used)} / ` : ''}${gib(w.vram_total)}` : 'VRAM ?',
        ' · ComfyUI ', w.comfyui_version || '?',
        w.capacity ? ` · ${w.capacity} slot${w.capacity > 1 ? 's' : ''}` : ''),
      h('div', { class: 'meta worker-activity' },
        `${w.jobs_done ?? 0} jobs done · busy ${Math.round((w.busy_ratio_10m ?? 0) * 100)}% (10 min)`),
      h('div', { class: 'meta warm-models', title: 'model files loaded on this worker, as its agent reports them (or those of the job it was just given)' },
        'warm: ', (w.warm_models || []).length ? w.warm_models.join(', ') : 'nothing yet'),
      h('div', { class: `meta warmup ${w.warmup?.state || 'none'}`, 'data-warmup': w.warmup?.state || 'none' },
        warmupText(w.warmup), ' ',
        h('button', { class: 'btn small', 'data-action': 'warmup', title: 'run the warm-up workflows on this worker again, before its next job', onclick: (e) => act('Warm-up', '/warmup', { worker: w.id }, { button: e.currentTarget }) }, 'Warm up')),
      jobs.length ? jobs : h('div', { class: 'meta' }, w.state === 'busy' ? '' : 'no job'),
    );
  });
  $('#worker-cards').replaceChildren(...cards);
  for (const w of data.workers) for (const j of w.jobs || []) paintProgress(j.id);
  $('#workers-empty').hidden = cards.length > 0;
  const busy = data.workers.filter((w) => w.state === 'busy').length;
  $('#workers-summary').textContent = `${data.workers.length} · ${busy} busy`;
}

function burstText(b) {
  if (!b || b === 'always') return 'whenever it has room';
  return `while more than ${b.replace('line_over:', '')} jobs wait`;
}

function renderPools() {
  const rows = data.pools.map((p) => {
    const btn = (label, state, title) => h('button', {
      class: 'btn small', 'data-action': state, title,
      onclick: (e) => act(`${label} ${p.name}`, `/pools/${p.name}`, { state }, { button: e.currentTarget }),
    }, label);
    const input = h('input', { class: 'burst-input', 'data-key': `burst-${p.name}`, value: p.burst, size: 12, title: 'always, or line_over:N (only while more than N jobs wait)' });
    return h('tr', { 'data-pool': p.name, 'data-state': p.state, 'data-burst': p.burst },
      h('td', {}, h('b', {}, p.name), h('div', { class: 'muted small' }, p.kind)),
      h('td', {}, h('span', { class: `state ${p.state}` }, p.state)),
      h('td', {}, burstText(p.burst), ' ', input,
        h('button', { class: 'btn small', 'data-action': 'burst', onclick: (e) => act(`Burst policy of ${p.name}`, `/pools/${p.name}`, { burst: input.value.trim() }, { button: e.currentTarget }) }, 'Set')),
      h('td', { title: (p.workers || []).map((w) => `${w.id}: ${w.state}${w.error ? ` (${w.error})` : ''}`).join('\n') },
        `${p.connected}/${(p.workers || []).length} connected · ${p.busy} busy`,
        ...(p.workers || []).filter((w) => w.error).map((w) => h('div', { class: 'muted small pool-error' }, `${w.id}: ${w.error}`)),
        // A provider's own view (RunPod: its workers idle/running/initializing, its queue).
        ...(p.workers || []).filter((w) => w.health && !w.error).map((w) => h('div', { class: `muted small pool-health${w.state === 'unhealthy' ? ' pool-error' : ''}` }, `${w.id}: ${w.health}`))),
      h('td', {}, `${(p.gpu_hours ?? 0).toFixed(2)} h · ${(p.cost ?? 0).toFixed(2)}`),
      h('td', {},
        p.state === 'enabled' ? null : btn('Enable', 'enable', 'take jobs as its burst policy says'),
        p.state === 'parked' ? null : btn('Park', 'park', 'take no new jobs; what it holds finishes'),
        p.state === 'draining' || p.state === 'drained' ? null : btn('Drain', 'drain', 'finish what it holds, then take nothing (before shutting it down)')));
  });
  replaceKeepingFocus($('#pool-rows'), rows);
  $('#pools-empty').hidden = rows.length > 0;
  const cost = data.pools.reduce((a, p) => a + (p.cost || 0), 0);
  $('#pools-summary').textContent = `${data.pools.length} · cost so far ${cost.toFixed(2)}`;
}

function warmupText(wu) {
  if (!wu) return 'warm-up: none configured or not run';
  if (wu.state === 'running') return `warm-up: ${wu.done}/${wu.total} running…`;
  const skipped = (wu.skipped || []).length ? ` (${wu.skipped.length} skipped)` : '';
  if (wu.state === 'failed') return `warm-up failed: ${(wu.errors || []).join('; ')}${skipped}`;
  return `warm-up done (${wu.total})${skipped}`;
}

async function showStorage() {
  const r = await api('/storage');
  const mb = (b) => `${((b || 0) / 2 ** 20).toFixed(1)} MB`;
  const fs = (r.storage?.filesystems || []).map((f) => `${f.path}: ${gib(f.free_bytes)} free of ${gib(f.total_bytes)}`);
  $('#storage-summary').textContent = fs.join(' · ');
  const rows = (r.participants || [])
    .slice().sort((a, b) => (b.output_bytes + b.temp_bytes) - (a.output_bytes + a.temp_bytes))
    .map((p) => h('tr', {}, h('td', {}, p.name), h('td', {}, mb(p.output_bytes)), h('td', {}, mb(p.input_bytes)), h('td', {}, mb(p.temp_bytes))));
  $('#storage-table').replaceChildren(
    h('table', { class: 'storage' },
      h('thead', {}, h('tr', {}, h('th', {}, 'participant'), h('th', {}, 'outputs'), h('th', {}, 'inputs'), h('th', {}, 'temp'))),
      h('tbody', {}, ...rows)),
    h('p', { class: 'muted small' }, 'Biggest: ', (r.biggest || []).slice(0, 5).map((f) => `${f.path} (${mb(f.bytes)})`).join(', ') || 'nothing'));
}

function renderChart() {
  const box = $('#chart');
  const samples = data.samples?.samples || [];
  const W = Math.max(200, box.clientWidth || 400);
  const H = Math.max(110, box.clientHeight || 135);
  const pad = { l: 34, r: 40, t: 8, b: 20 };
  const NS = 'http://www.w3.org/2000/svg';
  const s = (tag, attrs, text) => {
    const el = document.createElementNS(NS, tag);
    for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
    if (text !== undefined) el.textContent = text;
    return el;
  };
  const svg = s('svg', { width: W, height: H, viewBox: `0 0 ${W} ${H}`, role: 'img', 'aria-label': 'queue depth and median wait over the last hour' });
  const now = Date.now();
  const t0 = now - 3600 * 1000;
  const x = (t) => pad.l + ((t - t0) / (now - t0)) * (W - pad.l - pad.r);
  const maxDepth = Math.max(4, ...samples.map((p) => p.waiting));
  const maxWait = Math.max(60, ...samples.map((p) => p.median_wait_s));
  const yd = (v) => H - pad.b - (v / maxDepth) * (H - pad.t - pad.b);
  const yw = (v) => H - pad.b - (v / maxWait) * (H - pad.t - pad.b);
  for (const f of [0, 0.5, 1]) {
    const y = yd(maxDepth * f);
    svg.append(s('line', { class: 'gridline', x1: pad.l, x2: W - pad.r, y1: y, y2: y }));
    svg.append(s('text', { class: 'axis', x: pad.l - 6, y: y + 4, 'text-anchor': 'end' }, String(Math.round(maxDepth * f))));
    svg.append(s('text', { class: 'axis', x: W - pad.r + 6, y: y + 4 }, compact(maxWait * f)));
  }
  for (const m of [60, 45, 30, 15, 0]) {
    svg.append(s('text', { class: 'axis', x: x(now - m * 60000), y: H - 4, 'text-anchor': m === 60 ? 'start' : m === 0 ? 'end' : 'middle' },
      m ? `-${m} min` : 'now'));
  }
  const pts = samples.filter((p) => p.at_ms >= t0);
  if (pts.length) {
    const depth = pts.map((p) => `${x(p.at_ms).toFixed(1)},${yd(p.waiting).toFixed(1)}`);
    const wait = pts.map((p) => `${x(p.at_ms).toFixed(1)},${yw(p.median_wait_s).toFixed(1)}`);
    const first = x(pts[0].at_ms).toFixed(1);
    const last = x(pts[pts.length - 1].at_ms).toFixed(1);
    svg.append(s('polygon', { class: 'depth-area', points: `${first},${yd(0)} ${depth.join(' ')} ${last},${yd(0)}` }));
    svg.append(s('polyline', { class: 'depth', points: depth.join(' ') }));
    svg.append(s('polyline', { class: 'wait', points: wait.join(' ') }));
    if (pts.length === 1) {
      svg.append(s('circle', { class: 'depth', cx: first, cy: yd(pts[0].waiting), r: 3 }));
    }
    const p = pts[pts.length - 1];
    svg.append(s('text', { class: 'axis', x: pad.l + 4, y: pad.t + 10 },
      `latest: ${p.waiting} waiting, median wait ${duration(p.median_wait_s)}`));
  } else {
    svg.append(s('text', { class: 'nodata', x: W / 2, y: H / 2, 'text-anchor': 'middle' }, 'Collecting… (a sample every 15 s)'));
  }
  box.dataset.samples = String(pts.length);
  box.replaceChildren(svg);
}

function renderGallery() {
  const panel = $('#gallery-panel');
  const items = data.gallery;
  const offered = Array.isArray(items);
  panel.hidden = !offered;
  $('#nav-gallery').hidden = !offered;
  if (!offered) return;
  const newest = [...items].sort((a, b) => (b.at_ms || 0) - (a.at_ms || 0)).slice(0, 60);
  const tiles = newest.map((it) => h('figure', {
    class: 'thumb', 'data-gallery-item': it.url, tabindex: 0, title: `${it.participant}: ${it.filename}`,
    onclick: () => openOverlay(it),
    onkeydown: (e) => { if (e.key === 'Enter') openOverlay(it); },
  },
  h('img', { src: it.thumb_url || it.url, alt: `${it.participant}: ${it.filename}`, loading: 'lazy' }),
  h('figcaption', {}, it.participant, ' · ', ago(it.at_ms))));
  $('#gallery-grid').replaceChildren(...tiles);
  $('#gallery-summary').textContent = items.length ? `${items.length} image${items.length > 1 ? 's' : ''}` : 'no images yet';
}

function openOverlay(it) {
  $('#overlay-img').src = it.url;
  $('#overlay-img').alt = `${it.participant}: ${it.filename}`;
  $('#overlay-caption').textContent = `${it.participant} · ${it.filename} · ${ago(it.at_ms)}`;
  $('#overlay').hidden = false;
}

function closeOverlay() {
  $('#overlay').hidden = true;
  $('#overlay-img').removeAttribute('src');
}

/** Once a second: waiting and running times count on between fetches. */
function tick() {
  for (const el of document.querySelectorAll('[data-since]')) {
    el.textContent = clock((Date.now() - Number(el.dataset.since)) / 1000);
  }
  for (const el of document.querySelectorAll('[data-ago]')) {
    el.textContent = ago(Number(el.dataset.ago) || 0);
  }
}

// ---------- controls ----------

function wireControls() {
  for (const b of document.querySelectorAll('[data-mode]')) {
    b.addEventListener('click', () => act('Mode', '/mode', { mode: b.dataset.mode }, { button: b }));
  }
  $('#storage-load').addEventListener('click', () => showStorage().catch((e) => showError(`Disk use: ${e.message}`)));
  $('#prune-temp').addEventListener('click', async (e) => {
    if (await act('Prune', '/prune', { temp: true, older_than_s: 7200 }, { button: e.currentTarget, confirmText: 'Delete temp files and previews untouched for 2 hours? Outputs are kept.' })) {
      showStorage().catch(() => {});
    }
  });
  const aff = $('#affinity-toggle');
  aff.addEventListener('click', () => act('Model affinity', '/affinity', { on: aff.dataset.on !== '1' }, { button: aff }));
  const toggle = $('#pause-toggle');
  toggle.addEventListener('click', () => {
    const paused = toggle.dataset.paused === '1';
    act(paused ? 'Resume' : 'Pause', paused ? '/resume' : '/pause', {}, { button: toggle });
  });
  const mp = $('#max-pending');
  const setMax = () => {
    const v = mp.value.trim();
    if (v === '' || !Number.isInteger(Number(v)) || Number(v) < 0) {
      showError('Max pending: a whole number of jobs, 0 or more');
      return;
    }
    act('Max pending', '/max_pending', { value: Number(v) }, { button: $('#max-pending-set') }).then(() => mp.blur());
  };
  $('#max-pending-set').addEventListener('click', setMax);
  mp.addEventListener('keydown', (e) => { if (e.key === 'Enter') setMax(); });
  const text = $('#broadcast-text');
  const send = async () => {
    const message = text.value.trim();
    if (!message) {
      showError('Broadcast: type a message first');
      return;
    }
    if (await act('Broadcast', '/broadcast', { message }, { button: $('#broadcast-send') })) text.value = '';
  };
  $('#broadcast-send').addEventListener('click', send);
  text.addEventListener('keydown', (e) => {
    if (e.key === 'Enter' && (e.ctrlKey || e.metaKey)) send();
  });
  $('#push-send').addEventListener('click', async () => {
    const file = $('#push-file').files[0];
    if (!file) {
      showError('Send a workflow: choose a workflow file (.json, as the editor saves it) first');
      return;
    }
    let workflow;
    try {
      workflow = JSON.parse(await file.text());
    } catch {
      showError(`Send a workflow: ${file.name} is not JSON`);
      return;
    }
    const to = $('#push-to').value.split(/[\s,]+/).filter(Boolean);
    const name = file.name.replace(/\.json$/i, '');
    const r = await act('Send a workflow', '/push_workflow', { name, workflow, to: to.length ? to : null }, { button: $('#push-send') });
    if (r) {
      const n = (r.delivered || []).length;
      $('#push-last').textContent = `"${r.name ?? name}" sent to ${n} participant${n === 1 ? '' : 's'}.`;
      $('#push-file').value = '';
    }
  });
  $('#error-close').addEventListener('click', clearError);
  $('#overlay').addEventListener('click', closeOverlay);
  document.addEventListener('keydown', (e) => { if (e.key === 'Escape') closeOverlay(); });
  let resize = null;
  window.addEventListener('resize', () => {
    clearTimeout(resize);
    resize = setTimeout(renderChart, 100);
  });
}

// ---------- start ----------

async function start() {
  wireControls();
  renderChart();
  for (const k of ALL) pending.add(k);
  await flush();
  document.body.dataset.ready = '1';
  connect();
  setInterval(() => refresh(), POLL_MS);
  setInterval(tick, 1000);
}

start();
