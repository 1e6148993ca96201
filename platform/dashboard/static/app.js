// scalelab live dashboard: one snapshot a second over server-sent events
// (GET events), drawn as a topology and a few cards. No framework, no
// build step: the balancer serves this file as it is.
"use strict";

const SVG_H = 520, TOP = 34, BOTTOM = 500;
const HISTORY = 60; // samples kept for the sparklines
const history = { rate: [], hit: [], db: [], queue: [] };

// ---- formatting ----------------------------------------------------------
const nf = new Intl.NumberFormat("en-US");
function count(n) { return n == null ? "—" : nf.format(n); }
function rate(r) {
  if (r == null) return "—";
  if (r === 0) return "0";
  if (r < 10) return r.toFixed(1);
  return nf.format(Math.round(r));
}
function pct(x) { return x == null ? "—" : (x * 100).toFixed(x >= 0.995 || x === 0 ? 0 : 1) + "%"; }
function ms(x) { return x == null ? "—" : (x < 10 ? x.toFixed(1) : Math.round(x)) + " ms"; }
function hostPort(url) { try { return new URL(url).host; } catch (e) { return url; } }
function esc(s) {
  return String(s).replace(/[&<>"']/g, c => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
}
function short(s, n) { return s.length > n ? "…" + s.slice(s.length - n + 1) : s; }
function $(id) { return document.getElementById(id); }
function age(secs) {
  if (secs < 1) return Math.round(secs * 1000) + " ms";
  if (secs < 120) return Math.round(secs) + " s";
  if (secs < 7200) return Math.round(secs / 60) + " min";
  return Math.round(secs / 3600) + " h";
}
function setText(id, text) { const el = $(id); if (el && el.textContent !== text) el.textContent = text; }

// ---- the view: nodes and edges computed from a snapshot ---------------------
// Each node and edge has a stable id; the SVG is rebuilt only when the set
// of ids (or a position) changes, and otherwise only its texts and classes
// are updated, so the flow animations run smoothly.

function stack(n, y0, y1, maxH, gap) {
  if (n === 0) return [];
  const h = Math.min(maxH, (y1 - y0 - gap * (n - 1)) / n);
  const total = n * h + (n - 1) * gap;
  let y = y0 + (y1 - y0 - total) / 2;
  const out = [];
  for (let i = 0; i < n; i++) { out.push({ y, h }); y += h + gap; }
  return out;
}

function view(s) {
  const nodes = [], edges = [];
  const bal = s.balancer || { gateways: [], rate: 0, ready: 0, policy: "" };
  const nats = s.nats || {};
  const mid = (TOP + BOTTOM) / 2;

  const client = { id: "client", role: "client", x: 8, y: mid - 28, w: 100, h: 56, color: "var(--client)",
    title: "client", sub: "curl, browsers", big: "", small: "" };
  nodes.push(client);

  const lb = { id: "balancer", role: "balancer", x: 180, y: mid - 50, w: 170, h: 100, color: "var(--balancer)",
    title: "balancer", sub: location.host + " · " + (bal.policy || "").replace(/_/g, " "), // this page comes from the balancer
    big: rate(bal.rate) + " req/s", small: "ready " + bal.ready + "/" + bal.gateways.length + " · in flight " + count(bal.in_flight) };
  nodes.push(lb);
  edges.push({ id: "e-client", from: client, to: lb, label: rate(bal.rate) + "/s", active: bal.rate > 0 });

  const cacheBy = {};
  for (const c of (s.cache && s.cache.gateways) || []) cacheBy[c.id] = c;

  const gws = bal.gateways.length ? bal.gateways : [];
  const gwPos = stack(gws.length, TOP, BOTTOM, 104, 14);
  const bus = { id: "nats", role: "nats", x: 640, y: TOP, w: 84, h: BOTTOM - TOP, color: "var(--nats)" };
  gws.forEach((g, i) => {
    const hp = hostPort(g.url);
    const n = { id: "gw-" + i, role: "gateway", dataId: g.url, x: 408, y: gwPos[i].y, w: 190, h: gwPos[i].h,
      color: "var(--gateway)", title: "gateway", sub: hp,
      big: rate(g.rate) + " req/s",
      small: "p50 " + ms(g.p50_ms) + " · " + count(g.requests) + " total",
      down: g.state !== "healthy", stateText: g.state };
    nodes.push(n);
    edges.push({ id: "e-gw-" + i, from: lb, to: n, label: rate(g.rate) + "/s", active: g.rate > 0 });
    edges.push({ id: "e-bus-" + i, from: n, to: bus, label: "", active: g.rate > 0 });
  });

  nodes.push(Object.assign(bus, { title: "NATS", sub: nats.connected ? "v" + (nats.version || "?") : "not connected",
    big: "", small: nats.connected ? "rtt " + ms(nats.rtt_ms) : "", down: !nats.connected }));

  // Right-hand side: the task queue and workers, dbsvc, the cache.
  const q = s.queue, wk = s.workers, db = s.db, cache = s.cache;
  const workers = (wk && wk.workers) || [];
  const wkPos = stack(Math.max(workers.length, 1), TOP, 300, 92, 10);
  const queue = { id: "queue", role: "queue", x: 770, y: (TOP + 300) / 2 - 48, w: 166, h: 96, color: "var(--worker)",
    title: "TASKS queues", sub: "consumers workers-*",
    big: q ? count(q.pending) + " queued" : "—",
    small: q ? count(q.in_flight) + " in flight · " + count(q.dead) + " dead" : "no NATS connection", down: !q };
  nodes.push(queue);
  const queueBusy = q && (q.pending > 0 || q.in_flight > 0 || (wk && wk.task_rate > 0));
  edges.push({ id: "e-queue", from: bus, to: queue, label: "", active: !!queueBusy });
  if (workers.length) {
    workers.forEach((w, i) => {
      const n = { id: "wk-" + i, role: "worker", dataId: w.id, x: 982, y: wkPos[i].y, w: 200, h: wkPos[i].h,
        color: "var(--worker)", title: "worker", sub: short(w.id, 26),
        big: rate(w.task_rate) + " tasks/s",
        small: "running " + w.running + " · done " + count(w.succeeded),
        idle: w.task_rate === 0 && w.running === 0 };
      nodes.push(n);
      edges.push({ id: "e-wk-" + i, from: queue, to: n, label: w.task_rate > 0 ? rate(w.task_rate) + "/s" : "",
        active: w.task_rate > 0 || w.running > 0 });
    });
  } else {
    const n = { id: "wk-none", role: "worker", x: 982, y: wkPos[0].y, w: 200, h: wkPos[0].h, color: "var(--worker)",
      title: "workers", sub: nats.connected ? "no worker answers" : "no NATS connection", big: "", small: "", down: true };
    nodes.push(n);
    edges.push({ id: "e-wk-none", from: queue, to: n, label: "", active: false });
  }

  const dbn = { id: "dbsvc", role: "dbsvc", x: 982, y: 314, w: 200, h: 90, color: "var(--dbsvc)",
    title: "dbsvc", sub: db ? "SQLite · " + db.instances + (db.instances === 1 ? " instance" : " instances") : "no NATS connection",
    big: db ? rate(db.rate) + " queries/s" : "—", small: db ? "avg " + ms(db.avg_ms) + " · " + count(db.queries) + " total" : "",
    down: !db || db.instances === 0 };
  nodes.push(dbn);
  edges.push({ id: "e-db", from: bus, to: dbn, label: db && db.rate > 0 ? rate(db.rate) + "/s" : "", active: !!db && db.rate > 0 });

  const recent = cache && cache.recent_hit_ratio;
  const cn = { id: "cache", role: "cachesvc", x: 982, y: 414, w: 200, h: 90, color: "var(--cachesvc)",
    title: "cachesvc · KV cache", sub: cache ? "bucket cache · " + count(cache.entries) + " keys" : "no NATS connection",
    big: cache ? pct(cache.hit_ratio) + " hits" : "—",
    small: cache ? rate(cache.lookup_rate) + " lookups/s · now " + (recent == null ? "—" : pct(recent)) : "",
    down: !cache };
  nodes.push(cn);
  edges.push({ id: "e-cache", from: bus, to: cn, label: cache && cache.lookup_rate > 0 ? rate(cache.lookup_rate) + "/s" : "",
    active: !!cache && cache.lookup_rate > 0 });

  return { nodes, edges };
}

// ---- drawing ---------------------------------------------------------------
let shapeKey = "";

function edgePath(e) {
  const a = e.from, b = e.to;
  let x1 = a.x + a.w, y1 = a.y + a.h / 2, x2 = b.x, y2 = b.y + b.h / 2;
  if (b.role === "nats") y2 = y1;             // straight into the bus
  if (a.role === "nats") y1 = y2;             // straight out of it
  const dx = Math.max(30, (x2 - x1) / 2);
  return { d: `M${x1},${y1} C${x1 + dx},${y1} ${x2 - dx},${y2} ${x2},${y2}`, lx: (x1 + x2) / 2, ly: (y1 + y2) / 2 };
}

function build(v) {
  const parts = [];
  parts.push(`<defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="#94a3b8"/></marker></defs>`);
  parts.push(`<text class="legend" x="8" y="${SVG_H - 8}">moving dashes: traffic in the last second · figures per second unless they say otherwise</text>`);
  parts.push(`<text class="group-label" x="408" y="22">gateways</text><text class="group-label" x="778" y="22">async tasks</text><text class="group-label" x="982" y="22">services on the bus</text>`);
  for (const e of v.edges) {
    const p = edgePath(e);
    parts.push(`<path id="${e.id}" class="edge" d="${p.d}" marker-end="url(#arrow)"/>`);
    parts.push(`<rect id="${e.id}-lbg" class="edge-label-bg" x="${p.lx - 26}" y="${p.ly - 17}" width="52" height="14" rx="3"/>`);
    parts.push(`<text id="${e.id}-l" class="edge-label" x="${p.lx}" y="${p.ly - 6}" text-anchor="middle"></text>`);
  }
  for (const n of v.nodes) {
    const data = n.dataId ? ` data-id="${esc(n.dataId)}"` : "";
    if (n.role === "nats") {
      parts.push(`<g id="${n.id}" class="node" data-role="nats"><rect class="bus" x="${n.x}" y="${n.y}" width="${n.w}" height="${n.h}" rx="14" style="stroke:${n.color}"/>` +
        `<text class="title" x="${n.x + n.w / 2}" y="${n.y + n.h / 2 - 14}" text-anchor="middle" fill="${n.color}">NATS</text>` +
        `<text id="${n.id}-sub" class="sub" x="${n.x + n.w / 2}" y="${n.y + n.h / 2 + 6}" text-anchor="middle"></text>` +
        `<text id="${n.id}-small" class="small" x="${n.x + n.w / 2}" y="${n.y + n.h / 2 + 24}" text-anchor="middle"></text></g>`);
      continue;
    }
    // Boxes get short when there are many gateways or workers: then the
    // last line goes, and the big figure moves up.
    const compact = n.h < 86;
    parts.push(`<g id="${n.id}" class="node" data-role="${n.role}"${data}>` +
      `<rect x="${n.x}" y="${n.y}" width="${n.w}" height="${n.h}" rx="10" style="stroke:${n.color}"/>` +
      `<rect x="${n.x}" y="${n.y}" width="6" height="${n.h}" rx="3" style="fill:${n.color};stroke:none"/>` +
      `<text class="title" x="${n.x + 16}" y="${n.y + 20}" fill="${n.color}">${esc(n.title)}</text>` +
      `<text id="${n.id}-sub" class="sub" x="${n.x + 16}" y="${n.y + 35}"></text>` +
      `<text id="${n.id}-big" class="big" data-field="rate" x="${n.x + 16}" y="${n.y + (compact ? Math.min(60, n.h - 8) : 62)}"></text>` +
      (compact ? "" : `<text id="${n.id}-small" class="small" x="${n.x + 16}" y="${n.y + 80}"></text>`) +
      `</g>`);
  }
  $("topology").innerHTML = parts.join("");
}

function draw(s) {
  const v = view(s);
  const key = v.nodes.map(n => n.id + "@" + Math.round(n.y) + "x" + Math.round(n.h) + (n.dataId || "")).join("|");
  if (key !== shapeKey) { build(v); shapeKey = key; }
  for (const n of v.nodes) {
    setText(n.id + "-sub", n.sub || "");
    setText(n.id + "-big", n.big || "");
    setText(n.id + "-small", n.small || "");
    const g = $(n.id);
    if (g) {
      g.classList.toggle("down", !!n.down);
      g.classList.toggle("idle", !!n.idle);
    }
  }
  for (const e of v.edges) {
    const p = $(e.id);
    if (p) p.classList.toggle("active", !!e.active);
    setText(e.id + "-l", e.label || "");
    const bg = $(e.id + "-lbg");
    if (bg) bg.style.display = e.label ? "" : "none";
  }
}

// ---- cards, tables, sparklines ------------------------------------------------
function push(arr, v) { arr.push(v); if (arr.length > HISTORY) arr.shift(); }

function spark(id, values, color, fixedMax) {
  const el = $(id);
  if (!el) return;
  const max = fixedMax || Math.max(1e-9, ...values.map(v => v || 0));
  const pts = values.map((v, i) => {
    const x = values.length === 1 ? 120 : (i / (HISTORY - 1)) * 120 + (HISTORY - values.length) * 120 / (HISTORY - 1);
    const y = 29 - ((v || 0) / max) * 27;
    return x.toFixed(1) + "," + y.toFixed(1);
  });
  if (!pts.length) { el.innerHTML = ""; return; }
  const first = pts[0].split(",")[0], last = pts[pts.length - 1].split(",")[0];
  el.innerHTML = `<polygon points="${first},30 ${pts.join(" ")} ${last},30" fill="${color}"/>` +
    `<polyline points="${pts.join(" ")}" stroke="${color}"/>`;
}

function row(cells) { return "<tr>" + cells.join("") + "</tr>"; }
function td(v, cls) { return `<td${cls ? ` class="${cls}"` : ""}>${v}</td>`; }

function cards(s) {
  const bal = s.balancer || {};
  setText("policy", "policy " + (bal.policy || "—").replace(/_/g, " "));
  const nats = s.nats || {};
  const pill = $("nats-pill");
  pill.textContent = nats.connected ? "NATS connected" : "NATS: " + (nats.error || "not connected");
  pill.className = "pill " + (nats.connected ? "on" : "off");
  const note = $("nats-note");
  note.hidden = !!nats.connected;
  note.textContent = nats.connected ? "" : "No NATS figures: " + (nats.error || "no NATS connection") +
    ". The balancer's own figures are still live.";
  setText("clock", new Date(s.time).toLocaleTimeString());

  setText("total-rate", rate(bal.rate));
  setText("total-requests", count(bal.requests));
  setText("total-errors", count(bal.errors));
  setText("total-inflight", count(bal.in_flight));
  push(history.rate, bal.rate || 0);

  const c = s.cache;
  setText("hit-ratio", c ? pct(c.hit_ratio) : "—");
  setText("hit-ratio-recent", c && c.recent_hit_ratio != null ? pct(c.recent_hit_ratio) : "—");
  setText("cache-hits", c ? count(c.hits) : "—");
  setText("cache-misses", c ? count(c.misses) : "—");
  push(history.hit, c && c.recent_hit_ratio != null ? c.recent_hit_ratio : (history.hit.length ? history.hit[history.hit.length - 1] : 0));

  const db = s.db;
  setText("db-rate", db ? rate(db.rate) : "—");
  setText("db-queries", db ? count(db.queries) : "—");
  setText("db-avg", db ? ms(db.avg_ms) : "—");
  push(history.db, db ? db.rate : 0);

  const q = s.queue, wk = s.workers;
  setText("queue-pending", q ? count(q.pending) : "—");
  setText("queue-inflight", q ? count(q.in_flight) : "—");
  setText("queue-dead", q ? count(q.dead) : "—");
  setText("task-rate", wk ? rate(wk.task_rate) : "—");
  setText("queue-lines", q && q.queues && q.queues.length ? q.queues.map(l =>
    l.name + (l.paused ? " (paused)" : "") + " " + count(l.pending + l.in_flight) +
    (l.oldest_age_seconds > 0 ? " (" + age(l.oldest_age_seconds) + ")" : "")).join(" · ") : "no queue served yet");
  push(history.queue, q ? q.pending + q.in_flight : 0);

  spark("spark-rate", history.rate, "#2563eb");
  spark("spark-hit", history.hit, "#059669", 1);
  spark("spark-db", history.db, "#7c3aed");
  spark("spark-queue", history.queue, "#d97706");

  const cacheBy = {};
  for (const g of (c && c.gateways) || []) cacheBy[g.id] = g;
  const gwRows = (bal.gateways || []).map(g => {
    // A gateway's cache-client id is host:port with the machine's name;
    // match it on the port.
    const port = hostPort(g.url).split(":").pop();
    const cs = Object.values(cacheBy).find(x => x.id.endsWith(":" + port));
    const hits = cs ? pct((cs.local.hits + cs.kv.hits) / Math.max(1, cs.local.hits + cs.kv.hits + cs.loads)) : "—";
    return row([td(esc(hostPort(g.url))), td(`<span class="state ${esc(g.state)}">${esc(g.state)}</span>`),
      td(rate(g.rate), "num rate"), td(count(g.requests), "num requests"), td(count(g.errors), "num"),
      td(count(g.in_flight), "num"), td(ms(g.p50_ms), "num"), td(ms(g.p99_ms), "num"), td(hits, "num")]);
  });
  $("gateways").tBodies[0].innerHTML = gwRows.join("") || row([`<td class="empty" colspan="9">no gateway</td>`]);

  const wkRows = ((wk && wk.workers) || []).map(w => row([td(esc(w.id)), td(rate(w.task_rate), "num"),
    td(count(w.running), "num"), td(count(w.succeeded), "num"), td(count(w.retried), "num"),
    td(count(w.failed), "num"), td(count(w.dead), "num"), td(count(w.process_calls), "num")]));
  $("workers").tBodies[0].innerHTML = wkRows.join("") ||
    row([`<td class="empty" colspan="8">${wk ? "no worker answers" : "no NATS connection"}</td>`]);
}

// ---- the stream ----------------------------------------------------------------
function render(s) {
  cards(s);
  draw(s);
  document.body.dataset.samples = String((+document.body.dataset.samples || 0) + 1);
}

function connect() {
  const live = $("live");
  const es = new EventSource("events");
  es.onopen = () => { live.textContent = "live"; live.className = "pill on"; };
  es.onmessage = ev => {
    try { render(JSON.parse(ev.data)); } catch (e) { console.error(e); }
  };
  es.onerror = () => { live.textContent = "reconnecting…"; live.className = "pill off"; };
}

connect();
