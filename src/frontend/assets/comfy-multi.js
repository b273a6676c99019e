// comfy-multi's extension for the ComfyUI editor: shows the participant who
// they are, where their jobs stand in the shared queue (position and ETA),
// and the instructor's broadcasts as toasts, opens workflows the instructor
// sends in a new tab, with links to download their
// outputs as a zip and to log out. Loaded by the app from
// /api/extensions like any ComfyUI extension; it patches none of the app's
// files. The server side is src/frontend/extension.rs.
import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";

const SEEN_KEY = "comfy-multi.seen-broadcast";
// A broadcast older than this is not shown to a page opened later.
const FRESH_MS = 30 * 60 * 1000;

function toast(detail) {
  const t = app.extensionManager?.toast;
  if (t) {
    t.add({ severity: "info", summary: "Instructor", detail, life: 20000 });
  } else {
    alert(detail);
  }
}

function showBroadcast(b) {
  if (!b || !b.id || localStorage.getItem(SEEN_KEY) === b.id) return;
  localStorage.setItem(SEEN_KEY, b.id);
  toast(b.message);
}

// A workflow the instructor sent (already saved in this participant's
// workflows folder as `file`): open it in a new tab, say so.
async function openPushed(w) {
  if (!w || !w.file) return;
  try {
    const r = await api.fetchApi(`/userdata/${encodeURIComponent(`workflows/${w.file}`)}`);
    if (!r.ok) throw new Error(`HTTP ${r.status}`);
    const graph = await r.json();
    await app.loadGraphData(graph, true, true, w.file.replace(/\.json$/, ""));
    toast(`The instructor sent you "${w.name}": it is open in a new tab and saved in your workflows as ${w.file}.`);
  } catch (e) {
    toast(`The instructor sent you "${w.name}" (saved in your workflows as ${w.file}); it could not be opened here: ${e.message}`);
  }
}

function eta(seconds) {
  if (!(seconds > 0)) return "now";
  if (seconds < 60) return `~${Math.ceil(seconds)} s`;
  return `~${Math.ceil(seconds / 60)} min`;
}

function describe(s) {
  const parts = [s.participant];
  if (s.running.length) parts.push(`${s.running.length} running`);
  if (s.waiting.length) {
    const next = s.waiting[0];
    parts.push(`${s.waiting.length} waiting · next is #${next.position + 1} in line, ${eta(next.eta_seconds)}`);
    const stranded = s.waiting.filter((w) => w.waiting_for_worker).length;
    if (stranded) parts.push(`${stranded} waiting for a GPU that has their model (not connected now)`);
  }
  if (!s.running.length && !s.waiting.length) parts.push("no jobs queued");
  if (s.paused) parts.push("queue paused by the instructor");
  return parts.join(" · ");
}

function pill() {
  let el = document.getElementById("comfy-multi-status");
  if (el) return el;
  el = document.createElement("div");
  el.id = "comfy-multi-status";
  el.setAttribute("role", "status");
  Object.assign(el.style, {
    position: "fixed", left: "12px", bottom: "12px", zIndex: 1000,
    padding: "4px 10px", borderRadius: "12px", font: "12px/1.6 Inter, Arial, sans-serif",
    background: "rgba(30,30,30,0.85)", color: "#ddd", border: "1px solid #4e4e4e",
    pointerEvents: "auto", display: "flex", gap: "10px", alignItems: "center",
  });
  const text = document.createElement("span");
  text.className = "comfy-multi-text";
  const logout = document.createElement("a");
  logout.textContent = "Log out";
  logout.href = "#";
  Object.assign(logout.style, { color: "#8ab4ff" });
  logout.onclick = async (e) => {
    e.preventDefault();
    await fetch(api.fileURL("/logout"), { method: "POST" });
    location.href = api.fileURL("/login");
  };
  const download = document.createElement("a");
  download.textContent = "Download my outputs";
  download.href = api.apiURL("/comfy-multi/outputs.zip");
  download.setAttribute("download", "");
  download.title = "All your generated images and videos as one zip file";
  Object.assign(download.style, { color: "#8ab4ff" });
  const mine = document.createElement("a");
  mine.textContent = "My outputs";
  mine.href = api.fileURL("/outputs");
  mine.target = "_blank";
  mine.title = "Everything you generated, newest first, to look at and download";
  Object.assign(mine.style, { color: "#8ab4ff" });
  el.append(text, mine, download, logout);
  document.body.append(el);
  return el;
}

let timer = null;
async function refresh() {
  clearTimeout(timer);
  let s;
  try {
    const r = await api.fetchApi("/comfy-multi/status");
    if (r.status === 401) { location.href = api.fileURL("/login"); return; }
    s = await r.json();
  } catch {
    timer = setTimeout(refresh, 10000);
    return;
  }
  pill().querySelector(".comfy-multi-text").textContent = describe(s);
  showBroadcast(s.broadcast && Date.now() - s.broadcast.at_ms < FRESH_MS ? s.broadcast : null);
  // Others' jobs move this participant's place in line: poll while waiting.
  timer = setTimeout(refresh, s.waiting.length ? 5000 : 30000);
}

// A submit that times out or loses its connection may have been queued all
// the same. Every submit carries its own prompt_id, and a retry with that id
// gets the first job back instead of a second one (the queue's enqueue
// answers the existing job), so a flaky network never doubles a job.
function uuid4() {
  const b = crypto.getRandomValues(new Uint8Array(16)); // works without https, unlike randomUUID
  b[6] = (b[6] & 0x0f) | 0x40;
  b[8] = (b[8] & 0x3f) | 0x80;
  const h = [...b].map((x) => x.toString(16).padStart(2, "0")).join("");
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

const fetchApi = api.fetchApi.bind(api);
api.fetchApi = async (route, options = {}) => {
  const post = String(options.method || "GET").toUpperCase() === "POST";
  if (route !== "/prompt" || !post || typeof options.body !== "string") return fetchApi(route, options);
  let body;
  try {
    body = JSON.parse(options.body);
  } catch {
    return fetchApi(route, options);
  }
  if (!body.prompt_id) body.prompt_id = uuid4();
  const opts = { ...options, body: JSON.stringify(body) };
  for (let attempt = 1; ; attempt++) {
    try {
      const r = await fetchApi(route, opts);
      // 502/503/504: the way to the queue broke; anything else is the answer.
      if (![502, 503, 504].includes(r.status) || attempt >= 3) return r;
    } catch (e) {
      if (attempt >= 3) throw e;
    }
    await new Promise((res) => setTimeout(res, 700 * attempt));
  }
};

app.registerExtension({
  name: "comfy-multi.workshop",
  async setup() {
    api.addEventListener("comfy_multi.broadcast", (e) => showBroadcast(e.detail));
    api.addEventListener("comfy_multi.workflow", (e) => openPushed(e.detail));
    api.addEventListener("status", () => refresh());
    await refresh();
  },
});
