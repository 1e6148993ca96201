// scalelab task console. No framework, no build step: the gateway serves
// this file as it is (gateway/console). Every piece of data comes from the
// authenticated API with the token the user logged in with; every piece of
// data is rendered with textContent, never as HTML.
"use strict";

const TOKEN_KEY = "scalelab.console.token";
const STATES = ["queued", "running", "succeeded", "failed", "dead", "cancelled"];
const FINAL = new Set(["succeeded", "failed", "dead", "cancelled"]);
const RETRYABLE = new Set(["failed", "dead", "cancelled"]);
const POLL_MS = 2000;
const PAGE = 50;

// ---- small helpers ---------------------------------------------------------

const $ = id => document.getElementById(id);

// el builds an element; children that are strings become text nodes, so
// data can never become markup.
function el(tag, props, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(props || {})) {
    if (v == null) continue;
    if (k === "class") e.className = v;
    else if (k.startsWith("data-") || k === "title" || k === "href") e.setAttribute(k, v);
    else e[k] = v;
  }
  for (const c of children) {
    if (c == null) continue;
    e.append(typeof c === "string" || typeof c === "number" ? String(c) : c);
  }
  return e;
}

function setText(id, s) { const e = $(id); if (e.textContent !== s) e.textContent = s; }

// showErr shows an error of the API, unless it only says the user logged
// out while the call was in flight.
function showErr(id, msg, err) { if (!err || err.code !== "logged_out") setText(id, msg); }

// sleep resolves after ms, or at once when signal aborts.
function sleep(ms, signal) {
  return new Promise(resolve => {
    if (signal && signal.aborted) return resolve();
    const t = setTimeout(resolve, ms);
    if (signal) signal.addEventListener("abort", () => { clearTimeout(t); resolve(); }, { once: true });
  });
}

function when(iso) {
  if (!iso) return "—";
  const d = new Date(iso);
  if (isNaN(d)) return String(iso);
  const time = d.toLocaleTimeString([], { hour12: false });
  return d.toDateString() === new Date().toDateString() ? time : d.toLocaleDateString() + " " + time;
}

function duration(secs) {
  if (secs == null || isNaN(secs)) return "—";
  if (secs < 1) return Math.round(secs * 1000) + " ms";
  if (secs < 120) return (secs < 10 ? secs.toFixed(1) : Math.round(secs)) + " s";
  if (secs < 7200) return Math.round(secs / 60) + " min";
  return Math.round(secs / 3600) + " h";
}

function pretty(v) {
  if (v == null) return "—";
  try { return JSON.stringify(v, null, 2); } catch (e) { return String(v); }
}

function stateBadge(state) { return el("span", { class: "state s-" + state }, state); }

function shortID(id) { return id.length > 14 ? id.slice(0, 12) + "…" : id; }

function taskLink(id) { return el("a", { href: "#/task/" + encodeURIComponent(id), title: id, class: "id" }, shortID(id)); }

// ---- the token and the API ----------------------------------------------------

let token = sessionStorage.getItem(TOKEN_KEY) || "";
let session = null; // AbortController of everything that runs while logged in

// APIError is an answer that was not 2xx: its status and the API's
// {"error":{"code","message"}}.
class APIError extends Error {
  constructor(status, code, message) { super(message); this.status = status; this.code = code; }
}

async function errorOf(res) {
  let body = null;
  try { body = await res.json(); } catch (e) { /* not JSON */ }
  const e = body && body.error;
  const msg = e && e.message ? e.message : res.status + " " + res.statusText;
  return new APIError(res.status, e && e.code ? e.code : "http_" + res.status, msg);
}

// refused handles a 401: the token is gone or expired, back to the login.
function refused(err) {
  logout("The API refused the token (" + err.message + "): log in again.");
}

// api calls the API with the token. An answer that arrives after a log
// out is dropped (an error), so nothing is shown without a token.
async function api(method, path, body) {
  const sess = session;
  const opts = { method, headers: { Authorization: "Bearer " + token }, cache: "no-store" };
  if (body !== undefined) { opts.headers["Content-Type"] = "application/json"; opts.body = JSON.stringify(body); }
  let res;
  try { res = await fetch(path, opts); } catch (e) { throw new APIError(0, "network", "network error: " + e.message); }
  if (session !== sess || !sess) throw new APIError(0, "logged_out", "logged out");
  if (!res.ok) {
    const err = await errorOf(res);
    if (res.status === 401) refused(err);
    throw err;
  }
  const data = res.status === 204 ? null : await res.json();
  if (session !== sess) throw new APIError(0, "logged_out", "logged out");
  return data;
}

// stream reads the server-sent events of path with fetch (EventSource
// cannot send an Authorization header) and calls onEvent({event, data, id})
// for each; onOpen once the answer's headers are in. It returns when the
// server closes the stream and throws an APIError for an answer that is
// not 200.
async function stream(path, signal, onEvent, onOpen) {
  const res = await fetch(path, {
    headers: { Authorization: "Bearer " + token, Accept: "text/event-stream" }, cache: "no-store", signal,
  });
  if (!res.ok || !res.body) {
    const err = res.ok ? new APIError(0, "stream", "no stream body") : await errorOf(res);
    if (res.status === 401) refused(err);
    throw err;
  }
  if (onOpen) onOpen();
  const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
  let buf = "", ev = { event: "", data: [], id: "" };
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buf += value;
      let nl;
      while ((nl = buf.indexOf("\n")) >= 0) {
        let line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        if (line.endsWith("\r")) line = line.slice(0, -1);
        if (line === "") { // a blank line ends an event
          if (signal.aborted) return; // the view changed: no more events for it
          if (ev.data.length) onEvent({ event: ev.event || "message", data: ev.data.join("\n"), id: ev.id });
          ev = { event: "", data: [], id: "" };
          continue;
        }
        if (line[0] === ":") continue; // a comment: ": ping"
        const c = line.indexOf(":");
        const field = c < 0 ? line : line.slice(0, c);
        let v = c < 0 ? "" : line.slice(c + 1);
        if (v[0] === " ") v = v.slice(1);
        if (field === "event") ev.event = v;
        else if (field === "data") ev.data.push(v);
        else if (field === "id") ev.id = v;
      }
    }
  } finally {
    reader.cancel().catch(() => {});
  }
}

// claims reads the token's payload, for the header only (who, scopes,
// expiry): the API decides what the token may do.
function claims(tok) {
  try {
    const p = tok.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    return JSON.parse(atob(p + "=".repeat((4 - p.length % 4) % 4)));
  } catch (e) { return null; }
}

// ---- login and logout -------------------------------------------------------

function showLogin(message) {
  $("login").hidden = false;
  $("app").hidden = true;
  for (const id of ["nav", "who", "logout", "live"]) $(id).hidden = true;
  setText("login-error", message || "");
}

function start(tok) {
  const c = claims(tok);
  if (c && c.exp && c.exp * 1000 < Date.now()) { showLogin("That token has expired."); return; }
  if (session) session.abort();
  token = tok;
  sessionStorage.setItem(TOKEN_KEY, tok);
  session = new AbortController();
  $("login").hidden = true;
  $("app").hidden = false;
  $("nav").hidden = false;
  $("logout").hidden = false;
  $("who").hidden = false;
  setText("who", c ? (c.sub || "?") + (c.scope ? " · " + c.scope : "") : "token");
  $("who").title = c && c.exp ? "expires " + new Date(c.exp * 1000).toLocaleString() : "";
  $("password").value = "";
  loadCatalog(session.signal);
  queuesLoop(session.signal);
  route();
}

// logout forgets the token and everything shown with it.
function logout(message) {
  token = "";
  sessionStorage.removeItem(TOKEN_KEY);
  if (session) session.abort();
  session = null;
  if (view) view.abort();
  view = null;
  for (const id of ["queue-rows", "task-rows", "totals", "dlq-rows", "t-fields", "t-timeline", "t-errors"]) $(id).replaceChildren();
  for (const id of ["t-payload", "t-result", "t-id", "t-state", "t-progress", "task-msg", "task-error", "list-error",
    "dlq-msg", "dlq-error", "dlq-count", "queues-error", "queues-note", "page-info", "who"]) setText(id, "");
  $("t-bar").style.width = "0";
  $("t-live").hidden = true;
  for (const k of ["id", "state", "generation"]) delete $("task-view").dataset[k];
  list.rows = [];
  list.cursors = [""];
  list.next = "";
  cur = null;
  showLogin(message);
}

$("login-form").addEventListener("submit", async e => {
  e.preventDefault();
  setText("login-error", "");
  $("login-btn").disabled = true;
  try {
    const res = await fetch("/auth/token", {
      method: "POST", headers: { "Content-Type": "application/json" }, cache: "no-store",
      body: JSON.stringify({ username: $("username").value, password: $("password").value }),
    });
    if (!res.ok) throw await errorOf(res);
    const body = await res.json();
    if (!body.token) throw new Error("the answer has no token");
    start(body.token);
  } catch (err) {
    $("password").value = "";
    setText("login-error", "Login failed: " + err.message);
  } finally {
    $("login-btn").disabled = false;
  }
});

$("token-form").addEventListener("submit", e => {
  e.preventDefault();
  const tok = $("token-input").value.trim().replace(/^Bearer\s+/i, "");
  $("token-input").value = "";
  if (!tok) { setText("login-error", "Paste a token first."); return; }
  start(tok);
});

$("logout").addEventListener("click", () => logout("Logged out."));

// ---- navigation -------------------------------------------------------------

let view = null; // AbortController of the view shown: leaving it stops its streams and polls

function route() {
  if (!token) { showLogin(); return; }
  if (view) view.abort();
  view = new AbortController();
  $("live").hidden = true;
  const h = location.hash;
  const m = h.match(/^#\/task\/(.+)$/);
  $("list-view").hidden = !!m || h === "#/dlq";
  $("task-view").hidden = !m;
  $("dlq-view").hidden = h !== "#/dlq";
  $("nav-tasks").classList.toggle("active", !m && h !== "#/dlq");
  $("nav-dlq").classList.toggle("active", h === "#/dlq");
  if (!m) refreshCatalog();
  if (m) showTask(decodeURIComponent(m[1]), view.signal);
  else if (h === "#/dlq") dlqLoop(view.signal);
  else listLoop(view.signal);
}
window.addEventListener("hashchange", route);

function setLive(id, state, text) {
  const e = $(id);
  e.hidden = false;
  e.className = "pill " + state;
  e.textContent = text;
}

// ---- task types and queues for the filters ----------------------------------

// loadCatalog fills the filters now and every 30 s: new types register
// while the console is open (route() also asks again on each view).
async function loadCatalog(signal) {
  while (!signal.aborted) {
    await refreshCatalog();
    await sleep(30000, signal);
  }
}

async function refreshCatalog() {
  try {
    const d = await api("GET", "/task-types");
    fillSelect($("f-type"), (d.task_types || []).map(t => t.name));
    fillSelect($("dlq-type"), (d.task_types || []).map(t => t.name));
    fillSelect($("f-queue"), (d.queues || []).map(q => q.name));
  } catch (e) { /* the filters keep what they had; the list shows the API's errors */ }
}

function fillSelect(sel, names) {
  const keep = sel.value;
  const opts = [el("option", { value: "" }, "any")];
  for (const n of names) opts.push(el("option", { value: n }, n));
  if (keep && !names.includes(keep)) opts.push(el("option", { value: keep }, keep));
  sel.replaceChildren(...opts);
  sel.value = keep;
}

// ---- queues -----------------------------------------------------------------

async function queuesLoop(signal) {
  const prev = new Map(); // queue name -> {t, done}: the last sample, for the rate
  while (!signal.aborted) {
    try {
      const d = await api("GET", "/queues");
      renderQueues(d.queues || [], prev);
      setText("queues-note", "");
      setText("queues-error", "");
      $("queues").dataset.available = "true";
      $("queue-table").hidden = false;
    } catch (e) {
      if (signal.aborted) return;
      if (e.status === 404) {
        $("queue-rows").replaceChildren();
        $("queues").dataset.available = "false";
        $("queue-table").hidden = true;
        setText("queues-note", "This gateway does not serve GET /queues: no queue figures.");
      } else {
        showErr("queues-error", "Queues: " + e.message, e);
      }
    }
    await sleep(POLL_MS, signal);
  }
}

function renderQueues(queues, prev) {
  const now = performance.now();
  const rows = queues.map(q => {
    const t = q.totals || {};
    const done = (t.succeeded || 0) + (t.failed || 0);
    const p = prev.get(q.name);
    const rate = p && now > p.t ? Math.max(0, (done - p.done) * 1000 / (now - p.t)) : null;
    prev.set(q.name, { t: now, done });
    const btn = el("button", { type: "button", class: "small" }, q.paused ? "Resume" : "Pause");
    btn.addEventListener("click", () => pauseQueue(q.name, !q.paused, btn));
    return el("tr", { "data-queue": q.name, "data-paused": String(!!q.paused) },
      el("td", {}, q.name),
      el("td", { class: "num" }, String(q.depth ?? "—")),
      el("td", { class: "num" }, String(q.in_flight ?? "—")),
      el("td", { class: "num" }, q.oldest_age_seconds ? duration(q.oldest_age_seconds) : "—"),
      el("td", { class: "num" }, String(q.workers ?? "—")),
      el("td", { class: "num" }, String(q.dead ?? t.dead ?? 0)),
      el("td", { class: "num" }, rate == null ? "—" : rate.toFixed(rate < 10 ? 1 : 0)),
      el("td", {}, el("span", { class: q.paused ? "state s-paused" : "state s-active" }, q.paused ? "paused" : "active")),
      el("td", {}, btn));
  });
  $("queue-rows").replaceChildren(...rows);
}

async function pauseQueue(name, pause, btn) {
  btn.disabled = true;
  setText("queues-error", "");
  try {
    await api("POST", "/queues/" + encodeURIComponent(name) + (pause ? "/pause" : "/resume"));
    btn.textContent = pause ? "Resume" : "Pause"; // the next poll redraws the row
  } catch (e) {
    showErr("queues-error", (pause ? "Pause " : "Resume ") + name + ": " + e.message, e);
  } finally {
    btn.disabled = false;
  }
}

// ---- the task list ------------------------------------------------------------

const list = {
  rows: [],
  cursors: [""], // the cursor of each page shown so far: [""] is the newest page
  next: "",
  seq: 0, // the latest request: older answers are dropped
  refreshTimer: null,
};

function filters() {
  const q = new URLSearchParams();
  for (const [k, id] of [["state", "f-state"], ["type", "f-type"], ["queue", "f-queue"]]) {
    if ($(id).value) q.set(k, $(id).value);
  }
  return q;
}

async function loadList() {
  const q = filters();
  q.set("limit", String(PAGE));
  const cursor = list.cursors[list.cursors.length - 1];
  if (cursor) q.set("cursor", cursor);
  const seq = ++list.seq;
  try {
    const d = await api("GET", "/tasks?" + q);
    if (seq !== list.seq) return;
    list.rows = d.tasks || [];
    list.next = d.next_cursor || "";
    renderTotals(d.totals || {});
    renderRows();
    setText("list-error", "");
  } catch (e) {
    if (seq === list.seq && e.code !== "logged_out") setText("list-error", "Tasks: " + e.message);
  }
}

// scheduleRefresh lists again soon: events come in bursts, and one listing
// after a burst gives the totals and the new tasks.
function scheduleRefresh(ms) {
  if (list.refreshTimer) return;
  list.refreshTimer = setTimeout(() => { list.refreshTimer = null; loadList(); }, ms);
}

function renderTotals(totals) {
  const chips = ["all", ...STATES].map(s => {
    const active = ($("f-state").value || "all") === s;
    const b = el("button", { type: "button", class: "chip" + (active ? " active" : "") + " c-" + s, "data-state": s },
      s + " ", el("b", {}, String(totals[s] ?? 0)));
    b.addEventListener("click", () => { $("f-state").value = s === "all" ? "" : s; filtersChanged(); });
    return b;
  });
  $("totals").replaceChildren(...chips);
}

function taskRow(t) {
  const bar = el("div", { class: "bar" }, el("div", {}));
  bar.firstChild.style.width = Math.min(100, Math.max(0, t.progress || 0)) + "%";
  return el("tr", { "data-id": t.id, "data-state": t.state },
    el("td", {}, taskLink(t.id)),
    el("td", {}, t.type),
    el("td", {}, t.queue || "default"),
    el("td", {}, stateBadge(t.state)),
    el("td", { class: "num" }, (t.attempts || 0) + (t.max_attempts ? " / " + t.max_attempts : "")),
    el("td", { title: t.progress_message || "" }, bar, el("span", { class: "muted" }, " " + (t.progress || 0) + " %")),
    el("td", {}, t.owner || "—"),
    el("td", { title: t.created_at || "" }, when(t.created_at)),
    el("td", { title: t.updated_at || "" }, when(t.updated_at)));
}

function renderRows() {
  $("task-rows").replaceChildren(...list.rows.map(taskRow));
  $("list-empty").hidden = list.rows.length > 0;
  $("older").disabled = !list.next;
  $("newest").disabled = list.cursors.length === 1;
  setText("page-info", list.cursors.length === 1 ? "newest first" : "page " + list.cursors.length);
}

// onTaskEvent patches the row of a task that changed, at once; the
// listing that follows adds new tasks and moves the totals.
function onTaskEvent(t) {
  const i = list.rows.findIndex(r => r.id === t.id);
  if (i >= 0) {
    list.rows[i] = t;
    const old = $("task-rows").querySelector('tr[data-id="' + CSS.escape(t.id) + '"]');
    if (old) old.replaceWith(taskRow(t));
  }
  scheduleRefresh(300);
}

// listLoop keeps the list live while it is shown: the events of GET
// /tasks/events, or, when the stream cannot be had, a listing every 2 s
// (trying the stream again every 20 s).
async function listLoop(signal) {
  await loadList();
  while (!signal.aborted) {
    const opened = Date.now();
    try {
      await stream("/tasks/events?" + filters(), signal, ev => {
        if (ev.event === "task") {
          try { onTaskEvent(JSON.parse(ev.data)); } catch (e) { /* a bad event: the next listing corrects it */ }
        }
      }, () => { setLive("live", "on", "live"); loadList(); });
    } catch (e) {
      if (signal.aborted || e.status === 401) return;
    }
    if (signal.aborted) return;
    // Closed (an overflow, a gateway going away) or refused: list now, and
    // poll for a while unless the stream had been up for long.
    await loadList();
    if (Date.now() - opened > 10000) continue;
    setLive("live", "off", "polling every 2 s");
    for (let i = 0; i < 10 && !signal.aborted; i++) {
      await sleep(POLL_MS, signal);
      if (!signal.aborted) await loadList();
    }
  }
}

function filtersChanged() {
  list.cursors = [""];
  list.rows = [];
  if (location.hash !== "" && location.hash !== "#/tasks") location.hash = "#/tasks";
  else route(); // a new stream with the new filters
}
for (const id of ["f-state", "f-type", "f-queue"]) $(id).addEventListener("change", filtersChanged);

$("older").addEventListener("click", () => {
  if (!list.next) return;
  list.cursors.push(list.next);
  loadList();
});
$("newest").addEventListener("click", () => { list.cursors = [""]; loadList(); });

$("search-form").addEventListener("submit", e => {
  e.preventDefault();
  const id = $("search").value.trim();
  if (id) location.hash = "#/task/" + encodeURIComponent(id);
});

// ---- one task -----------------------------------------------------------------

let cur = null; // the record shown on the task page
let follower = null; // AbortController of the task page's live updates

async function showTask(id, signal) {
  cur = null;
  for (const i of ["task-msg", "task-error", "t-state", "t-progress", "t-payload", "t-result"]) setText(i, "");
  for (const i of ["t-fields", "t-timeline", "t-errors"]) $(i).replaceChildren();
  setText("t-id", id);
  $("task-view").dataset.id = id;
  $("task-view").dataset.state = "";
  buttons(null);
  try {
    renderTask(await api("GET", "/tasks/" + encodeURIComponent(id)));
  } catch (e) {
    showErr("task-error", e.message, e);
    return;
  }
  follow(id, signal);
}

// follow keeps the task page live until the task is final: the events of
// GET /tasks/{id}/events, or a read every 2 s when the stream fails.
async function follow(id, parent) {
  if (follower) follower.abort();
  follower = new AbortController();
  const signal = AbortSignal.any([parent, follower.signal]);
  while (!signal.aborted && cur && !FINAL.has(cur.state)) {
    try {
      await stream("/tasks/" + encodeURIComponent(id) + "/events", signal, ev => {
        if (ev.event === "task") renderTask(JSON.parse(ev.data));
      }, () => setLive("t-live", "on", "live"));
    } catch (e) {
      if (signal.aborted || e.status === 401) return;
    }
    if (signal.aborted || (cur && FINAL.has(cur.state))) break;
    setLive("t-live", "off", "polling every 2 s");
    await sleep(POLL_MS, signal);
    if (signal.aborted) return;
    try { renderTask(await api("GET", "/tasks/" + encodeURIComponent(id))); } catch (e) { showErr("task-error", e.message, e); }
  }
  if (!signal.aborted) setLive("t-live", "", "final");
}

function buttons(t) {
  $("retry-btn").disabled = !t || !RETRYABLE.has(t.state);
  $("cancel-btn").disabled = !t || FINAL.has(t.state);
  $("delete-btn").disabled = !t || !FINAL.has(t.state);
  $("delete-btn").textContent = "Delete";
}

function renderTask(t) {
  if (!t || (cur && cur.id !== t.id)) return;
  cur = t;
  const v = $("task-view");
  v.dataset.id = t.id;
  v.dataset.state = t.state;
  v.dataset.generation = String(t.generation || 0);
  setText("t-id", t.id);
  $("t-state").replaceWith(Object.assign(stateBadge(t.state), { id: "t-state" }));
  buttons(t);
  const pct = Math.min(100, Math.max(0, t.progress || 0));
  $("t-bar").style.width = pct + "%";
  $("t-bar").className = "s-" + t.state;
  setText("t-progress", pct + " %" + (t.progress_message ? " — " + t.progress_message : ""));

  const fields = [
    ["type", t.type], ["queue", t.queue || "default"], ["owner", t.owner || "—"],
    ["attempts", (t.attempts || 0) + (t.max_attempts ? " of " + t.max_attempts : "")],
    ["generation", String(t.generation || 0) + (t.generation ? " (retried)" : "")],
    ["worker", t.worker || "—"], ["timeout", t.timeout_ms ? duration(t.timeout_ms / 1000) : "—"],
    ["request id", t.request_id || "—"],
  ];
  $("t-fields").replaceChildren(...fields.flatMap(([k, val]) => [el("dt", {}, k), el("dd", {}, val)]));

  const created = Date.parse(t.created_at);
  const steps = [["created", t.created_at], ["run at", t.run_at], ["started", t.started_at], ["finished", t.finished_at]];
  $("t-timeline").replaceChildren(...steps.map(([label, iso]) => {
    const since = iso && !isNaN(created) ? (Date.parse(iso) - created) / 1000 : null;
    return el("li", { class: iso ? "done" : "pending", title: iso || "" },
      el("b", {}, label), " ", iso ? when(iso) : label === "run at" && t.started_at ? "not delayed" : "—",
      since != null && label !== "created" ? el("span", { class: "muted" }, " (+" + duration(Math.max(0, since)) + ")") : null);
  }));

  // The error history: the record's failures, one line per failed
  // attempt (the last ten, across retries), then the current error when
  // it is not the last failure's (a hand-back, a retry's note).
  const errs = [];
  const failures = Array.isArray(t.failures) ? t.failures : [];
  for (const f of failures) {
    errs.push(el("p", { class: "error-line" }, el("b", {}, "attempt " + f.attempt +
      (t.max_attempts ? " of " + t.max_attempts : "") + (f.generation ? ", generation " + f.generation : "")),
    " ", el("span", { class: "muted" }, when(f.at)), ": ", el("code", {}, f.error)));
  }
  const lastFailure = failures.length ? failures[failures.length - 1].error : "";
  if (t.error && t.error !== lastFailure) {
    errs.push(el("p", { class: "error-line" }, el("b", {}, "now"), ": ", el("code", {}, t.error)));
  }
  if (!errs.length) errs.push(el("p", { class: "muted" }, "No error recorded."));
  $("t-errors").replaceChildren(...errs);
  setText("t-payload", pretty(t.payload));
  setText("t-result", pretty(t.result));
}

async function taskAction(label, method, path, after) {
  setText("task-msg", "");
  setText("task-error", "");
  try {
    const d = await api(method, path);
    after(d);
  } catch (e) {
    showErr("task-error", label + ": " + e.message, e);
  }
}

$("retry-btn").addEventListener("click", () => {
  if (!cur) return;
  const id = cur.id;
  taskAction("Retry", "POST", "/tasks/" + encodeURIComponent(id) + "/retry", rec => {
    setText("task-msg", "Queued again, generation " + (rec && rec.generation || "?") + ".");
    renderTask(rec);
    follow(id, view.signal);
  });
});

$("cancel-btn").addEventListener("click", () => {
  if (!cur) return;
  const id = cur.id;
  taskAction("Cancel", "DELETE", "/tasks/" + encodeURIComponent(id), rec => {
    setText("task-msg", "Cancelled.");
    if (rec && rec.id) renderTask(rec);
  });
});

// Delete asks twice (no dialog): the first click arms it for 5 s.
$("delete-btn").addEventListener("click", () => {
  if (!cur) return;
  const b = $("delete-btn");
  if (!b.dataset.armed) {
    b.dataset.armed = "1";
    b.textContent = "Really delete?";
    setTimeout(() => { delete b.dataset.armed; b.textContent = "Delete"; }, 5000);
    return;
  }
  delete b.dataset.armed;
  const id = cur.id;
  taskAction("Delete", "DELETE", "/tasks/" + encodeURIComponent(id) + "?purge=true", () => {
    setText("task-msg", "Deleted: the record is gone.");
    $("task-view").dataset.state = "deleted";
    buttons(null);
  });
});

// ---- the dead-letter queue ------------------------------------------------------

async function dlqLoop(signal) {
  while (!signal.aborted) {
    const q = new URLSearchParams({ state: "dead", limit: "200" });
    if ($("dlq-type").value) q.set("type", $("dlq-type").value);
    try {
      const d = await api("GET", "/tasks?" + q);
      const rows = (d.tasks || []).map(t => el("tr", { "data-id": t.id, "data-state": t.state },
        el("td", {}, taskLink(t.id)), el("td", {}, t.type), el("td", {}, t.queue || "default"),
        el("td", { class: "num" }, String(t.attempts || 0)), el("td", { class: "err" }, t.error || ""),
        el("td", {}, t.owner || "—"), el("td", { title: t.finished_at || "" }, when(t.finished_at))));
      $("dlq-rows").replaceChildren(...rows);
      $("dlq-empty").hidden = rows.length > 0;
      const total = (d.totals || {}).dead ?? rows.length;
      setText("dlq-count", total > rows.length ? "the newest " + rows.length + " of " + total : total + " dead");
      setText("dlq-error", "");
    } catch (e) {
      if (!signal.aborted) showErr("dlq-error", "Dead letters: " + e.message, e);
    }
    await sleep(POLL_MS, signal);
  }
}

$("dlq-type").addEventListener("change", () => {
  $("dlq-retry").disabled = !$("dlq-type").value;
  setText("dlq-msg", "");
  if (location.hash === "#/dlq") route();
});

$("dlq-retry").addEventListener("click", async () => {
  const typ = $("dlq-type").value;
  if (!typ) return;
  setText("dlq-msg", "");
  setText("dlq-error", "");
  try {
    const d = await api("POST", "/tasks/dlq/retry?type=" + encodeURIComponent(typ));
    const failed = d.failed || [];
    setText("dlq-msg", "Retried " + d.retried + " dead task(s) of type " + d.type + "." +
      (failed.length ? " Not retried: " + failed.map(f => (f.id || "?") + " (" + (f.reason || "?") + ")").join(", ") : ""));
  } catch (e) {
    showErr("dlq-error", "Retry all of " + typ + ": " + e.message, e);
  }
});

// ---- start --------------------------------------------------------------------

if (token) start(token); else showLogin();
