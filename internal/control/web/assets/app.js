// The Trellis dashboard: a hash-routed page per view, each drawn from the
// control plane's read-only API (the one the CLI uses) and refreshed every
// few seconds. No framework and no build step: DOM and SVG built by hand,
// text always set as text, never parsed as HTML.

const WINDOW = "1m";        // the rate window of every golden metric
const REFRESH_MS = 5000;    // how often a view refreshes
const TAP_ROWS = 200;       // live requests kept on screen
const TAP_MAX_RPS = 100;    // what a tap asks each proxy for, as the CLI
// The charts' spans: points × step, each point's rates over window.
const CHART_SPANS = {
  "5m": { points: 30, step: "10s", window: "30s" },
  "10m": { points: 40, step: "15s", window: "30s" },
  "30m": { points: 60, step: "30s", window: "1m" },
  "1h": { points: 60, step: "1m", window: "2m" },
  "6h": { points: 60, step: "6m", window: "12m" },
};

// ---- DOM helpers -----------------------------------------------------------

const SVG = "http://www.w3.org/2000/svg";

// h builds an element: h("a", {href: "#/"}, "text", child, ...).
function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  setAttrs(el, attrs);
  el.append(...children.flat().filter((c) => c !== null && c !== undefined && c !== false));
  return el;
}

// s builds an SVG element.
function s(tag, attrs = {}, ...children) {
  const el = document.createElementNS(SVG, tag);
  setAttrs(el, attrs);
  el.append(...children.flat().filter((c) => c !== null && c !== undefined && c !== false));
  return el;
}

function setAttrs(el, attrs) {
  for (const [k, v] of Object.entries(attrs)) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? "" : String(v));
  }
}

// ---- formatting --------------------------------------------------------------

const pct = (v) => (v === null || v === undefined ? "-" : (100 * v).toFixed(2) + "%");
const rps = (v) => (v === null || v === undefined ? "-" : v.toFixed(1) + "rps");
const ms = (v) => (v === null || v === undefined ? "-" : v < 10 ? v.toFixed(1) + "ms" : Math.round(v) + "ms");
const successClass = (v) => (v === null || v === undefined ? "" : v >= 0.99 ? "good" : v >= 0.95 ? "warn" : "bad");
const failing = (v) => v !== null && v !== undefined && v < 0.99;

// seconds reads a duration such as "15s" or "6m".
function seconds(d) { return parseFloat(d) * ({ s: 1, m: 60, h: 3600 }[d.slice(-1)] || 1); }

// expiry says when a certificate expires and how soon.
function expiry(iso) {
  if (!iso) return "-";
  const left = (new Date(iso) - Date.now()) / 3600000;
  const soon = left < 1 ? `${Math.round(left * 60)} min` : `${left.toFixed(1)} h`;
  return `${new Date(iso).toLocaleString()} (in ${soon})`;
}

// ---- the API -----------------------------------------------------------------

async function api(path, signal) {
  const resp = await fetch(path, { headers: { Accept: "application/json" }, signal });
  if (!resp.ok) {
    let msg = resp.status + " " + resp.statusText;
    try { msg = (await resp.json()).error || msg; } catch { /* not JSON */ }
    throw new Error(path.split("?")[0] + ": " + msg);
  }
  return resp.json();
}

function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== "" && v !== undefined && v !== null) q.set(k, v);
  return q.toString();
}

// ---- the shell: routing, namespace, refresh ---------------------------------

const view = document.getElementById("view");
const nsSelect = document.getElementById("namespace");
const errorBox = document.getElementById("error");
const updated = document.getElementById("updated");
let current = null; // {stop()} of the view on screen

function route() {
  const hash = location.hash.replace(/^#/, "") || "/";
  const [path, qs] = hash.split("?");
  const params = new URLSearchParams(qs || "");
  const parts = path.split("/").filter(Boolean).map(decodeURIComponent);
  return { name: parts[0] || "overview", parts, params };
}

function link(path, params = {}) {
  const q = query(params);
  return "#" + path + (q ? "?" + q : "");
}

function namespace() { return nsSelect.value; }

// errors holds what each poller last failed with, so one poller's success
// does not hide another's failure.
const errors = new Map();

function setError(id, err) {
  if (err) errors.set(id, String(err.message || err));
  else errors.delete(id);
  errorBox.hidden = errors.size === 0;
  errorBox.textContent = [...new Set(errors.values())].join("\n");
}

let pollers = 0;

// every runs fn now and every ms until the view changes; fn gets a get(path)
// whose requests are cancelled then, so nothing late lands on another view.
function every(fn, ms = REFRESH_MS) {
  const id = ++pollers;
  const ctrl = new AbortController();
  const get = (path) => api(path, ctrl.signal);
  let timer = null;
  const tick = async () => {
    try {
      await fn(get);
      if (ctrl.signal.aborted) return;
      setError(id, null);
      updated.textContent = "updated " + new Date().toLocaleTimeString();
    } catch (err) {
      if (ctrl.signal.aborted) return;
      setError(id, err);
    }
    timer = setTimeout(tick, ms);
  };
  tick();
  return { stop() { ctrl.abort(); clearTimeout(timer); setError(id, null); } };
}

async function loadNamespaces() {
  try {
    const list = await api("/v1/resources/Workload");
    const names = [...new Set(list.items.map((w) => w.metadata.namespace))].sort();
    const chosen = route().params.get("ns") || nsSelect.value;
    nsSelect.replaceChildren(h("option", { value: "" }, "all"), ...names.map((n) => h("option", { value: n }, n)));
    if (chosen && !names.includes(chosen)) nsSelect.append(h("option", { value: chosen }, chosen));
    nsSelect.value = chosen;
    setError("namespaces", null);
  } catch (err) {
    setError("namespaces", err);
  }
}

nsSelect.addEventListener("change", () => {
  const r = route();
  const params = Object.fromEntries(r.params);
  params.ns = nsSelect.value;
  location.hash = link("/" + r.parts.join("/"), params);
});

function render() {
  if (current) current.stop();
  const r = route();
  const ns = r.params.get("ns");
  if (ns && ![...nsSelect.options].some((o) => o.value === ns)) nsSelect.append(h("option", { value: ns }, ns));
  if (r.params.has("ns")) nsSelect.value = ns;
  for (const a of document.querySelectorAll("header nav a")) {
    a.toggleAttribute("aria-current", a.dataset.view === r.name || (r.name === "workload" && a.dataset.view === "overview"));
    if (a.hasAttribute("aria-current")) a.setAttribute("aria-current", "page");
  }
  view.replaceChildren();
  const views = { overview, topology, workload, tap, authz };
  current = (views[r.name] || notFound)(r);
  document.title = "Trellis · " + (r.parts.slice(1).join("/") || r.name);
}

window.addEventListener("hashchange", render);
loadNamespaces().then(render);
setInterval(loadNamespaces, 30000);

function notFound(r) {
  view.append(h("h1", {}, "Not found"), h("p", {}, "No view ", h("code", {}, r.name), ". ", h("a", { href: "#/" }, "Back to the overview")));
  return { stop() {} };
}

// ---- sortable tables ---------------------------------------------------------

// table builds a sortable table: columns [{key, label, value(row), cell(row), left}].
function table(columns, rows, sort, onSort, rowKey) {
  const col = columns.find((c) => c.key === sort.key) || columns[0];
  const none = (v) => v === null || v === undefined;
  const sorted = [...rows].sort((a, b) => {
    const x = col.value(a), y = col.value(b);
    if (none(x) || none(y)) return none(x) - none(y); // rows without a value last, either way
    const c = x === y ? 0 : x < y ? -1 : 1;
    return sort.desc ? -c : c;
  });
  return h("table", {},
    h("thead", {}, h("tr", {}, columns.map((c) =>
      h("th", { class: c.left ? "left" : null, scope: "col", "aria-sort": c.key === col.key ? (sort.desc ? "descending" : "ascending") : null },
        c.value ? h("button", { type: "button", onclick: () => onSort(c.key) }, c.label) : c.label)))),
    h("tbody", {}, sorted.map((r) => h("tr", { "data-row": rowKey(r) }, columns.map((c) => h("td", { class: c.left ? "left" : null }, c.cell(r)))))));
}

function sortState(defaultKey) {
  const st = { key: defaultKey, desc: false };
  return {
    st,
    toggle(key) {
      if (st.key === key) st.desc = !st.desc;
      else { st.key = key; st.desc = key !== "name" && key !== "namespace"; }
    },
  };
}

// ---- sparkline and charts ----------------------------------------------------

function sparkline(values, cls) {
  const w = 110, hgt = 22;
  const pts = values.map((v, i) => [i, v]).filter(([, v]) => v !== null && v !== undefined);
  const svg = s("svg", { class: "spark", width: w, height: hgt, viewBox: `0 0 ${w} ${hgt}`, role: "img", "aria-label": "requests per second over the last minutes" });
  if (pts.length < 2) return svg;
  const max = Math.max(...pts.map(([, v]) => v), 1e-9);
  const x = (i) => (i / (values.length - 1)) * (w - 2) + 1;
  const y = (v) => hgt - 2 - (v / max) * (hgt - 4);
  svg.append(s("polyline", { points: pts.map(([i, v]) => `${x(i).toFixed(1)},${y(v).toFixed(1)}`).join(" "), fill: "none",
    stroke: cls === "bad" ? "#d33a2c" : "#2f6fdb", "stroke-width": 1.5 }));
  return svg;
}

// chart draws lines [{label, color, values}] over times (ms since epoch).
function chart(title, times, lines, fmt, fixedMax) {
  const W = 520, H = 170, L = 48, R = 8, T = 8, B = 22;
  const all = lines.flatMap((l) => l.values).filter((v) => v !== null && v !== undefined);
  const max = fixedMax ?? Math.max(...all, 1e-9) * 1.1;
  const min = fixedMax !== undefined && all.length ? Math.min(Math.min(...all) * 0.98, fixedMax * 0.9) : 0;
  const x = (i) => L + (i / Math.max(times.length - 1, 1)) * (W - L - R);
  const y = (v) => T + (1 - (v - min) / (max - min || 1)) * (H - T - B);
  const svg = s("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": title, "data-points": all.length });
  for (const f of [0, 0.5, 1]) {
    const v = min + f * (max - min);
    svg.append(s("line", { class: "axis", x1: L, x2: W - R, y1: y(v), y2: y(v) }), s("text", { x: L - 4, y: y(v) + 3, "text-anchor": "end" }, fmt(v)));
  }
  if (times.length) {
    const t0 = new Date(times[0]), t1 = new Date(times[times.length - 1]);
    svg.append(s("text", { x: L, y: H - 6 }, t0.toLocaleTimeString()), s("text", { x: W - R, y: H - 6, "text-anchor": "end" }, t1.toLocaleTimeString()));
  }
  for (const l of lines) {
    let d = "", pen = false;
    l.values.forEach((v, i) => {
      if (v === null || v === undefined) { pen = false; return; }
      d += (pen ? "L" : "M") + x(i).toFixed(1) + "," + y(v).toFixed(1);
      pen = true;
    });
    svg.append(s("path", { d, fill: "none", stroke: l.color, "stroke-width": 2 }));
    l.values.forEach((v, i) => {
      if (v !== null && v !== undefined) svg.append(s("circle", { class: "point", cx: x(i), cy: y(v), r: 1.8, fill: l.color }, s("title", {}, `${l.label} ${fmt(v)} at ${new Date(times[i]).toLocaleTimeString()}`)));
    });
  }
  return h("div", { class: "card chart" }, h("h3", {}, title),
    h("div", { class: "legend" }, lines.map((l) => h("span", {}, swatch(l.color), l.label))), svg);
}

// swatch is a legend's colour sample (set through the CSSOM: the page's
// policy forbids inline style attributes).
function swatch(color) {
  const i = h("i");
  i.style.background = color;
  return i;
}

// ---- overview ----------------------------------------------------------------

function overview(r) {
  const kind = r.params.get("kind") || "workload";
  const sorter = sortState("name");
  let rows = [], series = new Map();
  const tabs = h("div", { class: "tabs", role: "tablist" }, ["workload", "service", "namespace"].map((k) =>
    h("a", { href: link("/", { kind: k, ns: namespace() }), "aria-current": k === kind ? "page" : null }, k + "s")));
  const holder = h("div");
  view.append(h("h1", {}, "Overview"), h("div", { class: "toolbar" }, tabs, h("span", { class: "muted" }, `golden metrics over the last ${WINDOW}; sparklines: requests per second, last 10 minutes`)), holder);
  const key = (row) => row.namespace + "/" + row.name;
  const columns = [
    { key: "namespace", label: "Namespace", left: true, value: (x) => x.namespace, cell: (x) => x.namespace },
    { key: "name", label: "Name", left: true, value: (x) => x.name,
      cell: (x) => kind === "namespace" ? x.name : h("a", { href: link(`/workload/${encodeURIComponent(x.namespace)}/${encodeURIComponent(x.name)}`, { kind, ns: namespace() }) }, x.name) },
    { key: "meshed", label: "Meshed", value: (x) => x.meshed, cell: (x) => `${x.meshed}/${x.instances}` },
    { key: "success", label: "Success", value: (x) => x.success, cell: (x) => h("span", { class: successClass(x.success), "data-success": x.success }, pct(x.success)) },
    { key: "rps", label: "RPS", value: (x) => x.rps, cell: (x) => h("span", { "data-rps": x.rps }, rps(x.rps)) },
    { key: "p50", label: "P50", value: (x) => x.latencyP50Ms, cell: (x) => ms(x.latencyP50Ms) },
    { key: "p95", label: "P95", value: (x) => x.latencyP95Ms, cell: (x) => ms(x.latencyP95Ms) },
    { key: "p99", label: "P99", value: (x) => x.latencyP99Ms, cell: (x) => ms(x.latencyP99Ms) },
    { key: "tcp", label: "TCP", value: (x) => x.tcpConnections, cell: (x) => String(x.tcpConnections) },
    { key: "trend", label: "Last 10 min", cell: (x) => sparkline((series.get(key(x)) || {}).rps || [], successClass(x.success)) },
  ];
  const draw = () => holder.replaceChildren(rows.length ? table(columns, rows, sorter.st, (k) => { sorter.toggle(k); draw(); }, key)
    : h("p", { class: "muted" }, "Nothing registered yet."));
  const stats = every(async (get) => {
    rows = (await get("/v1/stat?" + query({ kind, namespace: namespace(), window: WINDOW }))).rows;
    draw();
  });
  const trends = every(async (get) => {
    const reply = await get("/v1/series?" + query({ kind, namespace: namespace(), window: "30s", points: 20, step: "30s" }));
    series = new Map(reply.series.map((x) => [key(x), x]));
    draw();
  }, 30000);
  return { stop() { stats.stop(); trends.stop(); } };
}

// ---- topology ----------------------------------------------------------------

function topology() {
  const holder = h("div", { class: "topology" });
  view.append(h("h1", {}, "Topology"),
    h("p", { class: "muted" }, `Who calls whom over the last ${WINDOW}: green edges are mutual TLS, red ones fail more than 1 % of requests; hover an edge for the identities.`),
    holder);
  const poll = every(async (get) => {
    const [edges, stat] = await Promise.all([
      get("/v1/edges?" + query({ namespace: namespace(), window: WINDOW })),
      get("/v1/stat?" + query({ kind: "workload", namespace: namespace(), window: WINDOW })),
    ]);
    holder.replaceChildren(drawGraph(stat.rows, edges.rows));
  });
  return poll;
}

// drawGraph lays workloads out in columns by their depth in the call graph
// (callers left of callees) and draws each edge with its numbers.
function drawGraph(nodes, edges) {
  const id = (ns, name) => ns + "/" + name;
  const byId = new Map(nodes.map((n) => [id(n.namespace, n.name), n]));
  for (const e of edges) {
    for (const [ns, name] of [[e.srcNamespace, e.src], [e.dstNamespace, e.dst]]) {
      if (!byId.has(id(ns, name))) byId.set(id(ns, name), { namespace: ns, name, success: null, rps: 0 });
    }
  }
  // Depth: the longest chain of callers, bounded so cycles end.
  const depth = new Map([...byId.keys()].map((k) => [k, 0]));
  for (let round = 0; round < byId.size; round++) {
    let changed = false;
    for (const e of edges) {
      const a = id(e.srcNamespace, e.src), b = id(e.dstNamespace, e.dst);
      if (a !== b && depth.get(b) < depth.get(a) + 1 && depth.get(a) + 1 < byId.size) { depth.set(b, depth.get(a) + 1); changed = true; }
    }
    if (!changed) break;
  }
  const byDepth = [];
  for (const [k, d] of depth) (byDepth[d] ||= []).push(k);
  const columns = byDepth.filter(Boolean); // a cycle can leave a depth empty
  columns.forEach((c) => c.sort());
  const NW = 200, NH = 40, GX = 170, GY = 28, PAD = 20;
  const pos = new Map();
  columns.forEach((c, i) => c.forEach((k, j) => pos.set(k, { x: PAD + i * (NW + GX), y: PAD + j * (NH + GY) })));
  const width = PAD * 2 + columns.length * (NW + GX) - GX;
  const height = PAD * 2 + Math.max(...columns.map((c) => c.length), 1) * (NH + GY) - GY;
  const svg = s("svg", { width: Math.max(width, 300), height: Math.max(height, 120), role: "img", "aria-label": `call graph: ${byId.size} workloads, ${edges.length} edges` },
    s("defs", {}, s("marker", { id: "arrow", viewBox: "0 0 10 10", refX: 10, refY: 5, markerWidth: 8, markerHeight: 8, markerUnits: "userSpaceOnUse", orient: "auto-start-reverse" },
      s("path", { d: "M0,0 L10,5 L0,10 z", fill: "#9aa7b8" }))));
  for (const e of edges) {
    const a = pos.get(id(e.srcNamespace, e.src)), b = pos.get(id(e.dstNamespace, e.dst));
    const x1 = a.x + NW, y1 = a.y + NH / 2;
    let x2 = b.x, y2 = b.y + NH / 2, d;
    if (x2 > x1) {
      const mx = (x1 + x2) / 2;
      d = `M${x1},${y1} C${mx},${y1} ${mx},${y2} ${x2},${y2}`;
    } else { // a call back to the same or an earlier column: loop below
      x2 = b.x + NW / 2; y2 = b.y + NH;
      d = `M${a.x + NW / 2},${a.y + NH} C${a.x + NW / 2},${a.y + NH + 60} ${x2},${y2 + 60} ${x2},${y2}`;
    }
    const cls = ["edge", e.secured ? "mtls" : "plain", failing(e.success) ? "failing" : ""].join(" ").trim();
    const label = `${pct(e.success)} · ${rps(e.rps)}`;
    const tip = `${e.srcNamespace}/${e.src} → ${e.dstNamespace}/${e.dst}\n` +
      (e.secured ? `mutual TLS\nclient: ${e.clientId || "?"}\nserver: ${e.serverId || "?"}` : `not mutual TLS${e.noTlsReason ? ": " + e.noTlsReason : ""}`) +
      `\nsuccess ${pct(e.success)}, ${rps(e.rps)}, p99 ${ms(e.latencyP99Ms)}`;
    svg.append(s("g", { class: cls, "data-src": id(e.srcNamespace, e.src), "data-dst": id(e.dstNamespace, e.dst), "data-mtls": String(e.secured) },
      s("title", {}, tip),
      s("path", { d, "marker-end": "url(#arrow)" }),
      s("text", { x: (x1 + x2) / 2, y: (y1 + y2) / 2 - 5, "text-anchor": "middle" }, (e.secured ? "mTLS · " : "plaintext · ") + label)));
  }
  for (const [k, n] of byId) {
    const p = pos.get(k);
    svg.append(s("g", { class: "node" + (failing(n.success) ? " failing" : ""), "data-node": k },
      s("a", { href: link(`/workload/${encodeURIComponent(n.namespace)}/${encodeURIComponent(n.name)}`, { ns: namespace() }) },
        s("title", {}, `${k}\nsuccess ${pct(n.success)}, ${rps(n.rps)}`),
        s("rect", { x: p.x, y: p.y, width: NW, height: NH, rx: 6 }),
        s("text", { x: p.x + 10, y: p.y + 17 }, n.name),
        s("text", { x: p.x + 10, y: p.y + 32, class: "muted" }, `${n.namespace} · ${pct(n.success)} · ${rps(n.rps)}`))));
  }
  return svg;
}

// ---- workload (or service) detail --------------------------------------------

function workload(r) {
  const ns = r.parts[1] || "default", name = r.parts[2] || "";
  const kind = r.params.get("kind") === "service" ? "service" : "workload";
  const span = CHART_SPANS[r.params.get("span")] ? r.params.get("span") : "10m";
  const charts = h("div", { class: "charts" });
  const routes = h("div"), edgesBox = h("div"), instances = h("div");
  const spans = h("label", {}, "Charts over the last ", h("select", { "aria-label": "chart span", onchange: (ev) => {
    location.hash = link(`/workload/${encodeURIComponent(ns)}/${encodeURIComponent(name)}`, { ...Object.fromEntries(r.params), span: ev.target.value });
  } }, Object.keys(CHART_SPANS).map((k) => h("option", { value: k, selected: k === span }, k))));
  view.append(h("h1", {}, `${kind} ${ns}/${name}`), h("div", { class: "toolbar" }, spans), charts,
    h("h2", {}, "Routes"), routes, h("h2", {}, "Edges"), edgesBox, h("h2", {}, "Instances"), instances);
  const trend = every(async (get) => {
    const reply = await get("/v1/series?" + query({ kind, name, namespace: ns, ...CHART_SPANS[span] }));
    const x = reply.series.find((v) => v.name === name) || { success: [], rps: [], latencyP50Ms: [], latencyP95Ms: [], latencyP99Ms: [] };
    charts.replaceChildren(
      chart("Success rate", reply.times, [{ label: "success", color: "#1f9d55", values: x.success }], pct, 1),
      chart("Requests per second", reply.times, [{ label: "RPS", color: "#2f6fdb", values: x.rps }], (v) => v.toFixed(1)),
      chart("Latency", reply.times, [
        { label: "p50", color: "#1f9d55", values: x.latencyP50Ms },
        { label: "p95", color: "#d08a00", values: x.latencyP95Ms },
        { label: "p99", color: "#d33a2c", values: x.latencyP99Ms }], ms));
  }, Math.max(15000, seconds(CHART_SPANS[span].step) * 1000)); // a new point per step
  const rest = every(async (get) => {
    const [wls, edges, certs] = await Promise.all([get("/v1/resources/Workload?" + query({ namespace: ns })),
      get("/v1/edges?" + query({ namespace: ns, window: WINDOW })), get("/v1/certificates?" + query({ namespace: ns }))]);
    const expires = new Map(certs.rows.map((c) => [c.instance, c.expires]));
    const mine = wls.items.filter((w) => kind === "service" ? w.spec.service === name : (w.metadata.labels || {})["trellis.dev/workload"] === name);
    instances.replaceChildren(mine.length ? h("table", {},
      h("thead", {}, h("tr", {}, ["Instance", "Address", "Service", "Identity", "Certificate expires", "Mesh port"].map((c) => h("th", { class: "left" }, c)))),
      h("tbody", {}, mine.map((w) => h("tr", {}, [w.metadata.name, w.spec.address, w.spec.service, w.spec.identity || "(no proxy identity)",
        expiry(expires.get(w.metadata.name)), String(w.spec.meshPort || "-")].map((c) => h("td", { class: "left" }, c))))))
      : h("p", { class: "muted" }, "No registered instance."));
    const mineEdges = edges.rows.filter((e) => (e.srcNamespace === ns && e.src === name) || (e.dstNamespace === ns && e.dst === name));
    edgesBox.replaceChildren(mineEdges.length ? h("table", {},
      h("thead", {}, h("tr", {}, ["From", "To", "mTLS", "Success", "RPS", "P99", "Client identity", "Server identity"].map((c, i) => h("th", { class: i < 3 || i > 5 ? "left" : null }, c)))),
      h("tbody", {}, mineEdges.map((e) => h("tr", {},
        h("td", { class: "left" }, `${e.srcNamespace}/${e.src}`), h("td", { class: "left" }, `${e.dstNamespace}/${e.dst}`),
        h("td", { class: "left" }, h("span", { class: "pill" + (e.secured ? "" : " no") }, e.secured ? "yes" : "no")),
        h("td", {}, h("span", { class: successClass(e.success) }, pct(e.success))), h("td", {}, rps(e.rps)), h("td", {}, ms(e.latencyP99Ms)),
        h("td", { class: "left" }, e.clientId || "-"), h("td", { class: "left" }, e.serverId || "-")))))
      : h("p", { class: "muted" }, "No traffic in or out over the window."));
    const services = [...new Set(mine.map((w) => w.spec.service).filter(Boolean))];
    const rows = (await Promise.all(services.map((svc) => get("/v1/routes?" + query({ service: svc, namespace: ns, window: WINDOW }))))).flatMap((x) => x.rows);
    routes.replaceChildren(rows.length ? h("table", {},
      h("thead", {}, h("tr", {}, ["Route", "Kind", "Service", "Success", "RPS", "P50", "P99", "Retries/s", "Timeouts/s"].map((c, i) => h("th", { class: i < 3 ? "left" : null }, c)))),
      h("tbody", {}, rows.map((x) => h("tr", {},
        h("td", { class: "left" }, x.route), h("td", { class: "left" }, x.kind || "-"), h("td", { class: "left" }, x.service),
        h("td", {}, h("span", { class: successClass(x.success) }, pct(x.success))), h("td", {}, rps(x.rps)), h("td", {}, ms(x.latencyP50Ms)), h("td", {}, ms(x.latencyP99Ms)),
        h("td", {}, x.retriesPerSec.toFixed(2)), h("td", {}, x.timeoutsPerSec.toFixed(2))))))
      : h("p", { class: "muted" }, "No service: no routes."));
  });
  return { stop() { trend.stop(); rest.stop(); } };
}

// ---- authorization policy ----------------------------------------------------

function authz(r) {
  const chosen = r.params.get("workload") || "";
  const servers = h("div"), detail = h("div");
  // The picker is built once and only its options change: rebuilding it
  // would close it under the user's pointer.
  const pick = h("select", { "aria-label": "workload", onchange: (ev) => { location.hash = link("/authz", { ns: namespace(), workload: ev.target.value }); } },
    h("option", { value: "" }, "choose a workload"));
  if (chosen) pick.append(h("option", { value: chosen, selected: true }, chosen));
  view.append(h("h1", {}, "Policy"), h("h2", {}, "Servers"), servers, h("h2", {}, "Authorizations"), h("div", { class: "toolbar" }, pick), detail);
  return every(async (get) => {
    const [srv, wl] = await Promise.all([get("/v1/stat?" + query({ kind: "server", namespace: namespace(), window: WINDOW })),
      get("/v1/stat?" + query({ kind: "workload", namespace: namespace(), window: WINDOW }))]);
    servers.replaceChildren(srv.rows.length ? h("table", {},
      h("thead", {}, h("tr", {}, ["Namespace", "Server", "Instances", "Allowed RPS", "Unauthorized/s"].map((c, i) => h("th", { class: i < 2 ? "left" : null }, c)))),
      h("tbody", {}, srv.rows.map((x) => h("tr", {}, h("td", { class: "left" }, x.namespace), h("td", { class: "left" }, x.name),
        h("td", {}, String(x.instances)), h("td", {}, rps(x.rps)), h("td", {}, h("span", { class: x.unauthorizedPerSec > 0 ? "bad" : "" }, x.unauthorizedPerSec.toFixed(2)))))))
      : h("p", { class: "muted" }, "No Server resource: every port follows its default policy."));
    const have = new Set([...pick.options].map((o) => o.value));
    for (const x of wl.rows) {
      const v = x.namespace + "/" + x.name;
      if (!have.has(v)) pick.append(h("option", { value: v }, v));
    }
    const parts = [];
    if (chosen) {
      const [ns, name] = chosen.split("/");
      const rows = (await get("/v1/authz?" + query({ workload: name, namespace: ns, window: WINDOW }))).rows;
      parts.push(rows.length ? h("table", {},
        h("thead", {}, h("tr", {}, ["Server", "Route", "Authorization", "Kind", "Outcome", "Per second"].map((c, i) => h("th", { class: i < 5 ? "left" : null }, c)))),
        h("tbody", {}, rows.map((x) => h("tr", {}, h("td", { class: "left" }, `${x.serverKind}/${x.server}`), h("td", { class: "left" }, x.route || "*"),
          h("td", { class: "left" }, x.authz || "-"), h("td", { class: "left" }, x.authzKind || "-"),
          h("td", { class: "left" }, h("span", { class: x.denied ? "bad" : x.authzKind === "audit" ? "warn" : "good" }, x.denied ? "UNAUTHORIZED" : x.authzKind === "audit" ? "audit: would deny" : "allowed")),
          h("td", {}, x.perSec.toFixed(2))))))
        : h("p", { class: "muted" }, "No authorization decision over the window."));
    }
    detail.replaceChildren(...parts);
  });
}

// ---- live requests -------------------------------------------------------------

function tap(r) {
  const p = r.params;
  const form = {
    target: h("input", { name: "target", value: p.get("target") || "", placeholder: "workload/web", size: 16, "aria-label": "target (workload/NAME, service/NAME, namespace/NAME)" }),
    method: h("input", { name: "method", value: p.get("method") || "", placeholder: "GET", size: 6, "aria-label": "method" }),
    path: h("input", { name: "path", value: p.get("path") || "", placeholder: "/api", size: 14, "aria-label": "path prefix" }),
    authority: h("input", { name: "authority", value: p.get("authority") || "", placeholder: "web:8080", size: 14, "aria-label": "authority" }),
  };
  let ctrl = null;
  const toggle = h("button", { type: "button", class: "primary" }, "Start");
  const status = h("span", { class: "muted", "aria-live": "polite" });
  const events = h("tbody");
  const top = h("tbody");
  const agg = new Map(); // method path → {count, ok, best, worst, last}
  const pending = new Map(); // proxy id → request
  view.append(h("h1", {}, "Live requests"),
    h("form", { class: "toolbar", onsubmit: (ev) => { ev.preventDefault(); start(); } },
      h("label", {}, "Target", form.target), h("label", {}, "Method", form.method), h("label", {}, "Path", form.path),
      h("label", {}, "Authority", form.authority), toggle, status),
    h("h2", {}, "Top paths"),
    h("table", {}, h("thead", {}, h("tr", {}, ["Method", "Path", "Count", "Success", "Best", "Worst", "Last"].map((c, i) => h("th", { class: i < 2 ? "left" : null }, c)))), top),
    h("h2", {}, "Requests"),
    h("div", { class: "tap-events" }, h("table", {}, h("thead", {}, h("tr", {}, ["Time", "Instance", "Direction", "Method", "Authority", "Path", "Status", "Latency", "mTLS"].map((c, i) => h("th", { class: i < 6 ? "left" : null }, c)))), events)));
  toggle.addEventListener("click", () => (ctrl ? stop() : start()));

  function stop(msg = "paused") {
    delete status.dataset.state;
    if (ctrl) ctrl.abort();
    ctrl = null;
    toggle.textContent = "Resume";
    status.textContent = msg;
  }

  function drawTop() {
    const rows = [...agg.entries()].sort((a, b) => b[1].count - a[1].count).slice(0, 20);
    top.replaceChildren(...rows.map(([k, v]) => {
      const [m, path] = k.split(" ");
      return h("tr", {}, h("td", { class: "left" }, m), h("td", { class: "left" }, path), h("td", {}, String(v.count)),
        h("td", {}, h("span", { class: successClass(v.ok / v.count) }, pct(v.ok / v.count))), h("td", {}, ms(v.best)), h("td", {}, ms(v.worst)), h("td", {}, ms(v.last)));
    }));
  }

  function onEvent(ev) {
    if (ev.type === "error") { setError("tap", new Error(`tap of ${ev.namespace}/${ev.workload}: ${ev.error}`)); return; }
    const key = ev.proxyAddr + "#" + ev.id;
    if (ev.type === "requestInit") {
      if (pending.size > 10000) pending.clear(); // their ends were dropped
      pending.set(key, ev);
      return;
    }
    if (ev.type !== "responseEnd" && ev.type !== "responseInit") return;
    const req = pending.get(key);
    if (!req) return;
    if (ev.type === "responseInit") { req.status = ev.status; req.latencyMicros = ev.latencyMicros; return; }
    pending.delete(key);
    const status = req.status || 0;
    const okay = (ev.grpcStatus === undefined || ev.grpcStatus === null ? status > 0 && status < 500 : ev.grpcStatus === 0) && !ev.error;
    const latency = (req.latencyMicros || ev.durationMicros || 0) / 1000;
    const k = req.method + " " + req.path;
    if (!agg.has(k) && agg.size >= 1000) agg.clear(); // bounded: paths can be endless
    const a = agg.get(k) || { count: 0, ok: 0, best: Infinity, worst: 0, last: 0 };
    a.count++; if (okay) a.ok++; a.best = Math.min(a.best, latency); a.worst = Math.max(a.worst, latency); a.last = latency;
    agg.set(k, a);
    events.prepend(h("tr", { "data-path": req.path },
      h("td", { class: "left" }, new Date(req.time).toLocaleTimeString()), h("td", { class: "left" }, `${req.namespace}/${req.workload}`),
      h("td", { class: "left" }, req.proxy || "-"), h("td", { class: "left" }, req.method), h("td", { class: "left" }, req.authority || "-"),
      h("td", { class: "left" }, req.path), h("td", {}, h("span", { class: okay ? "good" : "bad" }, String(ev.grpcStatus ?? status))),
      h("td", {}, ms(latency)), h("td", {}, h("span", { class: "pill" + (req.tls ? "" : " no") }, req.tls ? "yes" : "no"))));
    while (events.children.length > TAP_ROWS) events.lastChild.remove();
    drawTop();
  }

  async function start() {
    const target = form.target.value.trim();
    if (!target) { status.textContent = "give a target, e.g. workload/web"; form.target.focus(); return; }
    const params = { target, namespace: namespace() || "default", method: form.method.value.trim(), path: form.path.value.trim(),
      authority: form.authority.value.trim(), max_rps: TAP_MAX_RPS };
    history.replaceState(null, "", link("/tap", { ...params, ns: namespace(), namespace: undefined, max_rps: undefined }));
    if (ctrl) ctrl.abort();
    setError("tap", null);
    ctrl = new AbortController();
    const mine = ctrl;
    toggle.textContent = "Pause";
    status.textContent = "tapping " + target;
    try {
      const resp = await fetch("/v1/tap?" + query(params), { signal: mine.signal });
      if (!resp.ok) throw new Error("tap: " + (await resp.text()).trim());
      status.textContent = "streaming from " + target;
      status.dataset.state = "streaming";
      const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
      let buf = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += value;
        let nl;
        while ((nl = buf.indexOf("\n")) >= 0) {
          const line = buf.slice(0, nl); buf = buf.slice(nl + 1);
          if (line.trim()) onEvent(JSON.parse(line));
        }
      }
      if (ctrl === mine) stop("the tap ended");
    } catch (err) {
      if (err.name === "AbortError") return;
      if (ctrl === mine) stop("stopped");
      setError("tap", err);
    }
  }

  if (p.get("target")) start();
  return { stop() { if (ctrl) ctrl.abort(); ctrl = null; setError("tap", null); } };
}
