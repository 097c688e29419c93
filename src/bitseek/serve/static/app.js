// The bitseek web page: upload a query, show the hits as thumbnails, open an item's metadata.
// Thumbnails are fetched (not <img src>) so the Bearer token, when the server needs one, goes with them.
"use strict";

const $ = (id) => document.getElementById(id);
const state = {
  token: sessionStorage.getItem("bitseek-token") || "",
  last: null,        // {kind: "upload", file} | {kind: "id", id}
  urls: [],          // blob URLs of the current result set, revoked on the next one
  selected: null,
  maxK: 1000,
};

class ApiError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

async function api(path, options = {}) {
  const headers = new Headers(options.headers || {});
  if (state.token) headers.set("Authorization", "Bearer " + state.token);
  const response = await fetch(path, { ...options, headers });
  if (response.status === 401) {
    $("auth").hidden = false;
    $("token").focus();
  }
  if (!response.ok) {
    let message = response.status + " " + response.statusText;
    try {
      const body = await response.json();
      if (body && body.detail) message = typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail);
    } catch (e) { /* not JSON */ }
    throw new ApiError(response.status, message);
  }
  return response;
}

function setStatus(text, isError = false) {
  const el = $("status");
  el.textContent = text;
  el.classList.toggle("error", isError);
}

function fmt(x, digits = 3) {
  if (x === null || x === undefined) return "";
  return Number.isInteger(x) ? String(x) : Number(x).toFixed(digits);
}

function fmtBytes(n) {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return (i ? n.toFixed(1) : String(n)) + " " + units[i];
}

function baseName(path) {
  const s = String(path || "");
  return s.split(/[\\/]/).pop() || s;
}

function fmtTime(t) {
  if (t === null || t === undefined) return "";
  const m = Math.floor(t / 60), s = t - 60 * m;
  return m + ":" + s.toFixed(1).padStart(4, "0");
}

async function loadInfo() {
  try {
    const info = await (await api("/api/info")).json();
    state.maxK = info.max_k;
    $("k").max = info.max_k;
    $("k").value = Math.min(Number($("k").value) || info.default_k, info.max_k);
    $("info").textContent = info.items + " items";
    $("auth").hidden = true;
  } catch (e) {
    $("info").textContent = e.status === 401 ? "token needed" : "unavailable";
    if (e.status !== 401) setStatus(e.message, true);
  }
}

function params() {
  const q = new URLSearchParams();
  const k = $("k").value.trim();
  if (k) q.set("k", k);
  const r = $("radius").value.trim();
  if (r) q.set("radius", r);
  return q.toString();
}

function showPreview(file) {
  const box = $("preview");
  box.replaceChildren();
  const url = URL.createObjectURL(file);
  const isVideo = file.type.startsWith("video/");
  const el = document.createElement(isVideo ? "video" : "img");
  el.src = url;
  if (isVideo) { el.muted = true; el.autoplay = true; el.loop = true; el.playsInline = true; }
  el.alt = file.name;
  el.addEventListener("error", () => el.remove());  // a format the browser cannot show may still search fine
  box.append(el);
  box.hidden = false;
}

async function searchUpload(file) {
  state.last = { kind: "upload", file };
  showPreview(file);
  const body = new FormData();
  body.append("file", file, file.name);
  await runSearch("searching with " + file.name + "…",
                  () => api("/api/search?" + params(), { method: "POST", body }));
}

async function searchId(id) {
  state.last = { kind: "id", id };
  await runSearch("searching items similar to #" + id + "…", () => api("/api/items/" + id + "/similar?" + params()));
}

async function runSearch(message, call) {
  setStatus(message);
  $("again").disabled = true;
  const t0 = performance.now();
  try {
    const data = await (await call()).json();
    const ms = Math.round(performance.now() - t0);
    await showResults(data);
    setStatus(data.count + " result" + (data.count === 1 ? "" : "s") + " in " + ms + " ms (search " +
              Math.round(data.took_ms) + " ms on the server)");
  } catch (e) {
    setStatus(e.message, true);
  } finally {
    $("again").disabled = state.last === null;
  }
}

async function thumbURL(path) {
  const blob = await (await api(path)).blob();
  const url = URL.createObjectURL(blob);
  state.urls.push(url);
  return url;
}

async function showResults(data) {
  for (const u of state.urls) URL.revokeObjectURL(u);
  state.urls = [];
  closeDetail();
  const list = $("results");
  list.replaceChildren();
  const title = $("results-title");
  title.hidden = false;
  title.textContent = data.count ? "Results" : "No results";
  const loads = [];
  data.results.forEach((hit, i) => {
    const li = document.createElement("li");
    li.className = "result";
    li.tabIndex = 0;
    li.dataset.id = hit.id;
    const box = document.createElement("div");
    box.className = "thumb-box";
    const img = document.createElement("img");
    img.className = "thumb";
    img.alt = baseName(hit.path);
    img.loading = "lazy";
    const rank = document.createElement("span");
    rank.className = "rank";
    rank.textContent = "#" + (i + 1);
    const kind = document.createElement("span");
    kind.className = "kind";
    kind.textContent = hit.kind || "";
    box.append(img, rank, kind);
    const cap = document.createElement("div");
    cap.className = "caption";
    const name = document.createElement("span");
    name.className = "name";
    name.textContent = baseName(hit.path);
    name.title = hit.path;
    const dist = document.createElement("span");
    dist.className = "dist";
    const parts = [];
    if (hit.distance !== null && hit.distance !== undefined) parts.push("distance " + fmt(hit.distance));
    if (hit.score !== null && hit.score !== undefined) parts.push("score " + fmt(hit.score));
    if (hit.time !== null && hit.time !== undefined) parts.push("at " + fmtTime(hit.time));
    dist.textContent = parts.join(" · ");
    cap.append(name, dist);
    li.append(box, cap);
    li.addEventListener("click", () => openDetail(hit.id, li));
    li.addEventListener("keydown", (ev) => { if (ev.key === "Enter" || ev.key === " ") { ev.preventDefault(); openDetail(hit.id, li); } });
    list.append(li);
    loads.push(thumbURL(hit.thumbnail).then((url) => new Promise((resolve) => {
      img.addEventListener("load", resolve, { once: true });
      img.addEventListener("error", resolve, { once: true });
      img.src = url;
    })).catch(() => { img.alt = "no thumbnail"; }));
  });
  await Promise.all(loads);
}

const META_ORDER = ["id", "kind", "path", "duration", "frame_times", "status", "content_hash"];

async function openDetail(id, card) {
  if (state.selected) state.selected.classList.remove("selected");
  state.selected = card || null;
  if (card) card.classList.add("selected");
  const panel = $("detail");
  try {
    const meta = await (await api("/api/items/" + id)).json();
    $("detail-title").textContent = baseName(meta.path) || "item " + id;
    const dl = $("detail-meta");
    dl.replaceChildren();
    const keys = [...META_ORDER.filter((k) => k in meta), ...Object.keys(meta).filter((k) => !META_ORDER.includes(k))];
    for (const key of keys) {
      if (key === "thumbnail") continue;
      let value = meta[key];
      if (key === "duration" && typeof value === "number") value = fmtTime(value) + " (" + fmt(value, 2) + " s)";
      else if (key === "added" && typeof value === "number") value = new Date(value * 1000).toLocaleString();
      else if (key === "mtime_ns" && typeof value === "number") value = new Date(value / 1e6).toLocaleString();
      else if (key === "size" && typeof value === "number") value = fmtBytes(value);
      else if (Array.isArray(value)) value = value.length > 12 ? value.slice(0, 12).map((v) => fmt(v, 2)).join(", ") + ", … (" + value.length + ")" : value.map((v) => fmt(v, 2)).join(", ");
      else if (value !== null && typeof value === "object") value = JSON.stringify(value);
      const dt = document.createElement("dt");
      dt.textContent = key.replace(/_/g, " ");
      const dd = document.createElement("dd");
      dd.textContent = value === null || value === undefined ? "—" : String(value);
      dd.dataset.key = key;
      dl.append(dt, dd);
    }
    $("detail-thumb").src = await thumbURL(meta.thumbnail);
    $("detail-thumb").alt = baseName(meta.path);
    $("detail-similar").onclick = () => searchId(id);
    panel.hidden = false;
    document.body.classList.add("detail-open");
  } catch (e) {
    setStatus(e.message, true);
  }
}

function closeDetail() {
  $("detail").hidden = true;
  document.body.classList.remove("detail-open");
  if (state.selected) state.selected.classList.remove("selected");
  state.selected = null;
}

function wire() {
  const drop = $("drop"), input = $("file");
  input.addEventListener("change", () => { if (input.files.length) searchUpload(input.files[0]); input.value = ""; });
  drop.addEventListener("keydown", (ev) => { if (ev.key === "Enter" || ev.key === " ") { ev.preventDefault(); input.click(); } });
  for (const type of ["dragenter", "dragover"]) {
    drop.addEventListener(type, (ev) => { ev.preventDefault(); drop.classList.add("over"); });
  }
  for (const type of ["dragleave", "drop"]) {
    drop.addEventListener(type, (ev) => { ev.preventDefault(); drop.classList.remove("over"); });
  }
  drop.addEventListener("drop", (ev) => {
    const files = ev.dataTransfer && ev.dataTransfer.files;
    if (files && files.length) searchUpload(files[0]);
  });
  // a file dropped outside the zone must not make the browser navigate away from the page
  window.addEventListener("dragover", (ev) => ev.preventDefault());
  window.addEventListener("drop", (ev) => ev.preventDefault());

  $("options").addEventListener("submit", (ev) => {
    ev.preventDefault();
    if (!state.last) return;
    if (state.last.kind === "upload") searchUpload(state.last.file); else searchId(state.last.id);
  });
  $("auth").addEventListener("submit", (ev) => {
    ev.preventDefault();
    state.token = $("token").value.trim();
    sessionStorage.setItem("bitseek-token", state.token);
    loadInfo();
  });
  $("detail-close").addEventListener("click", closeDetail);
  document.addEventListener("keydown", (ev) => { if (ev.key === "Escape") closeDetail(); });
  loadInfo();
}

wire();
