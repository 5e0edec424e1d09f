// nvscope web: the page's state, built from the server-sent events of /events (docs/web.md), drawn with Plotly.js.
"use strict";
const S = window.nvscope = {
  runs: {}, data: {}, health: null, lastSeq: 0, selected: null, plotly: false,
  log: [],        // per delta event: {run, first, n, recv, drawn} (epoch ms), for latency measurements
  drawn: {},      // run id -> pixels drawn on its map
  firstMap: null, // epoch ms of the first map drawn
  plotlyAt: null, // epoch ms when Plotly.js had loaded
  shown: {},      // run id -> the maps as drawn: name -> 2-D array (null: not measured)
  shownFrom: {},  // run id -> what `shown` holds: "live" (on-line values) or "final" (the file's run-end maps)
};
const now = () => performance.timeOrigin + performance.now();
const $ = (id) => document.getElementById(id);
const LOCK_STATES = ["locked", "recovered", "lost"];

function runData(id) { return S.data[id] || (S.data[id] = {columns: {}, final: null}); }

function applyRows(ev) {  // a delta: rows first, first+1, ... of the named columns
  const cols = runData(ev.run_id).columns;
  let n = 0;
  for (const [k, v] of Object.entries(ev)) {
    if (k === "run_id" || k === "first" || !Array.isArray(v)) continue;
    const c = cols[k] || (cols[k] = []);
    for (let i = 0; i < v.length; i++) c[ev.first + i] = v[i];
    n = v.length;
  }
  return n;
}

const handlers = {
  snapshot(d) {
    S.snapshots = (S.snapshots || 0) + 1;
    S.runs = {}; for (const r of d.runs) S.runs[r.run_id] = r;
    S.data = d.data; S.health = d.health;
    pickRun(); renderList(); renderHealth(); schedule();
  },
  run(d) { S.runs[d.run_id] = d; pickRun(); renderList(); if (d.run_id === S.selected) schedule(); },
  health(d) { S.health = d; renderHealth(); },
  final(d) { runData(d.run_id).final = d; if (d.run_id === S.selected) schedule(); },
};
for (const t of ["pixels", "g2", "lock", "deer", "curves", "step"]) handlers[t] = (d) => {
  const n = applyRows(d);
  if (S.log.length < 200000) S.log.push({run: d.run_id, type: t, first: d.first, n, recv: now(), drawn: null});
  if (d.run_id === S.selected) schedule();
};

function connect() {  // (again after S.source.close(): resumes after the last event seen)
  const es = new EventSource("/events" + (S.lastSeq ? "?since=" + S.lastSeq : ""));
  es.onopen = () => { $("conn").textContent = "live"; };
  es.onerror = () => { $("conn").textContent = "reconnecting..."; };  // EventSource resumes with Last-Event-ID
  for (const t of Object.keys(handlers)) es.addEventListener(t, (e) => {
    S.lastSeq = Number(e.lastEventId);
    handlers[t](JSON.parse(e.data));
  });
  S.source = es;
}
S.connect = connect;

// ------------------------------------------------------------------ run list, health, progress
function pickRun() {
  const ids = Object.keys(S.runs).sort().reverse();
  const running = ids.find((id) => S.runs[id].status === "running");
  if (!S.selected || ($("follow").checked && running && running !== S.selected)) {
    select(running || ids.find((id) => S.runs[id].status !== "unreadable") || null);
  }
}

async function select(id) {
  S.selected = id; renderList();
  if (id && !S.data[id]) {  // an older run, not in the snapshot: its rows once
    const r = await fetch("/api/runs/" + encodeURIComponent(id));
    if (r.ok) { const d = await r.json(); if (!S.data[id]) S.data[id] = {columns: d.columns, final: d.final}; }
  }
  $("plots").innerHTML = ""; $("note").textContent = "";
  for (const k of Object.keys(signatures)) delete signatures[k];
  schedule();
}

function fmtTime(s) {
  if (s == null) return "-";
  s = Math.round(s); const h = Math.floor(s / 3600), m = Math.floor(s % 3600 / 60);
  return (h ? h + " h " : "") + (h || m ? m + " min " : "") + (s % 60) + " s";
}

function renderList() {
  const body = $("runs").tBodies[0]; body.innerHTML = "";
  for (const id of Object.keys(S.runs).sort().reverse()) {
    const r = S.runs[id], tr = body.insertRow();
    tr.dataset.run = id; tr.dataset.status = r.status;
    if (id === S.selected) tr.className = "sel";
    tr.insertCell().textContent = r.file || id;
    const st = tr.insertCell(); st.className = r.status; st.textContent = r.status;
    tr.insertCell().textContent = r.n_planned ? `${r.n_done}/${r.n_planned}` : String(r.n_done || 0);
    if (r.reason) { const rr = body.insertRow(); rr.dataset.run = id; const c = rr.insertCell(); c.colSpan = 3;
      c.className = "reason"; c.textContent = r.reason; }
    tr.onclick = () => { $("follow").checked = false; select(id); };
  }
  renderProgress();
}

function renderProgress() {
  const r = S.runs[S.selected];
  if (!r) { $("title").textContent = "no run yet"; $("progress").textContent = ""; return; }
  $("title").innerHTML = `${r.run_id} <span class="${r.status}">${r.status}</span>`;
  let elapsed = r.elapsed_s, remaining = r.remaining_s;
  if (r.status === "running" && r.created_unix_s) {
    elapsed = Date.now() / 1000 - r.created_unix_s;
    remaining = r.n_planned && r.n_done ? elapsed / r.n_done * (r.n_planned - r.n_done) : null;
  }
  const unit = r.kind === "vqns" ? "curves" : r.kind === "mri" ? "tip positions" : "pixels";
  const pct = r.n_planned ? ` (${(100 * r.n_done / r.n_planned).toFixed(0)} %)` : "";
  $("progress").textContent = `${unit} ${r.n_done}${r.n_planned ? " of " + r.n_planned : ""}${pct} · elapsed ` +
    `${fmtTime(elapsed)} · remaining ${r.status === "running" ? fmtTime(remaining) : "-"} · photons ` +
    `${Number(r.photons).toLocaleString()}` + (r.reason ? ` · ${r.reason}` : "");
}
setInterval(renderProgress, 1000);

function renderHealth() {
  const h = S.health; if (!h) return;
  $("badges").innerHTML = "";
  const body = $("health").tBodies[0]; body.innerHTML = "";
  for (const [name, src] of Object.entries(h.sources)) {
    const b = document.createElement("span"); b.className = "badge " + src.badge; b.dataset.source = name;
    b.textContent = `${name} ${src.badge}`; b.title = src.reason || "ok"; $("badges").append(b, " ");
    const tr = body.insertRow(); tr.insertCell().innerHTML = `<b>${name}</b>`;
    const figs = Object.entries(src).filter(([k, v]) => k !== "badge" && v !== null && v !== "");
    tr.insertCell().textContent = figs.map(([k, v]) => `${k}: ${typeof v === "number" && !Number.isInteger(v) ?
      v.toFixed(3) : v}`).join(" · ");
  }
}

// ------------------------------------------------------------------ maps and curves
let pending = false;
function schedule() { if (!pending) { pending = true; requestAnimationFrame(draw); } }
S.plotlyReady = () => { S.plotly = true; S.plotlyAt = now(); schedule(); };

function grid(ny, nx) { return Array.from({length: ny}, () => new Array(nx).fill(null)); }

function place(ix, iy, values, ny, nx) {  // rows -> (ny, nx) map, null where not measured
  const z = grid(ny, nx);
  for (let i = 0; i < ix.length; i++) {
    const x = ix[i], y = iy[i];
    if (values[i] !== undefined && x >= 0 && x < nx && y >= 0 && y < ny) z[y][x] = values[i];
  }
  return z;
}

function srmMaps(run, d) {
  const c = d.columns, [ny, nx] = run.grid_shape;
  if (d.final && d.final.maps && d.final.maps.pl_cps) return d.final.maps;  // the run-end maps of the file
  const ix = c.ix || [], iy = c.iy || [];
  return {pl_cps: place(ix, iy, c.pl_cps || [], ny, nx), g2: place(ix, iy, c.g2 || [], ny, nx),
    G2: place(ix, iy, c.G2 || [], ny, nx)};
}

function mriMaps(d) {  // the scan and plane in progress: locked detuning and lock state; the last DEER plane
  const c = d.columns, maps = {}, scans = c.lock_scan || [], planes = c.lock_plane || [];
  const rowsOf = (scan, plane, sc, pl) => sc.map((_, i) => i).filter((i) => sc[i] === scan && pl[i] === plane);
  const size = (v) => v.length ? Math.max(...v) + 1 : 1;
  let last = scans.length - 1;
  while (last >= 0 && scans[last] === 0) last--;  // (the retracted-tip rows are no map)
  if (last >= 0) {
    const idx = rowsOf(scans[last], planes[last], scans, planes);
    const ix = idx.map((i) => c.lock_ix[i]), iy = idx.map((i) => c.lock_iy[i]), nx = size(ix), ny = size(iy);
    const tag = `${["retracted", "psf", "deer"][scans[last]]} ${planes[last]}`;
    maps[`${tag}: locked detuning (Hz)`] = place(ix, iy, idx.map((i) => c.lock_detuning_hz[i]), ny, nx);
    maps[`${tag}: lock state (0 locked, 1 recovered, 2 lost)`] = place(ix, iy, idx.map((i) => c.lock_state[i]), ny, nx);
  }
  const ds = c.deer_scan || [];
  if (ds.length) {
    const p = c.deer_plane[ds.length - 1], idx = rowsOf(ds[ds.length - 1], p, ds, c.deer_plane);
    const ix = idx.map((i) => c.deer_ix[i]), iy = idx.map((i) => c.deer_iy[i]);
    maps[`deer ${p}: DEER dip 1 - n_rf/n_ref`] = place(ix, iy, idx.map((i) => c.deer_dip[i]), size(iy), size(ix));
  }
  return maps;
}

function plotDiv(key) {
  let el = document.querySelector(`[data-plot="${CSS.escape(key)}"]`);
  if (!el) { el = document.createElement("div"); el.className = "plot"; el.dataset.plot = key; $("plots").append(el); }
  return el;
}

function heat(z, title) {  // a map on its whole grid, cells not yet measured left blank
  const nx = z.length ? z[0].length : 1, ny = z.length || 1;
  return [[{z, type: "heatmap", colorscale: "Viridis", hoverongaps: false,
    ...(title.includes("lock state") ? {zmin: 0, zmax: 2} : {})}],
  {title: {text: title, font: {size: 13}}, margin: {l: 40, r: 10, t: 30, b: 30},
    xaxis: {range: [-0.5, nx - 0.5], title: "ix", constrain: "domain"},
    yaxis: {range: [-0.5, ny - 0.5], title: "iy", scaleanchor: "x", constrain: "domain"}}];
}

const signatures = {};  // plot -> what it shows (run, cells measured, final or not): redrawn only when that changes
function drawMaps(id, maps) {
  const fin = S.data[id] && S.data[id].final ? "final" : "live", jobs = [];
  S.shown[id] = maps;
  S.shownFrom[id] = fin;
  for (const [k, z] of Object.entries(maps)) {
    const sig = `${id} ${fin} ${z.flat().filter((v) => v != null).length}`;
    const el = plotDiv(k);
    if (signatures[k] === sig && el.data) continue;
    const same = el.data && signatures[k] && signatures[k].split(" ").slice(0, 2).join(" ") === `${id} ${fin}`;
    signatures[k] = sig;
    jobs.push(same ? Plotly.restyle(el, {z: [z]}, [0]) : Plotly.react(el, ...heat(z, k)));  // new cells only: restyle
  }
  const first = Object.values(maps)[0];
  S.drawn[id] = first ? first.flat().filter((v) => v != null).length : 0;
  document.body.dataset.pixels = S.drawn[id];
  return jobs;
}

function nameOf(n) { return n === 0 ? "FID" : n === 1 ? "echo" : `CPMG-${n}`; }

function drawVqns(id, d) {
  const c = d.columns, f = d.final || {}, traces = [];
  (c.t || []).forEach((t, i) => {
    traces.push({x: t, y: c.coherence[i], error_y: {array: c.sigma[i], visible: true}, mode: "markers",
      name: nameOf(c.n_pulses[i]), type: "scatter"});
    if (f.fits && f.fits[i]) traces.push({x: t, y: f.fits[i], mode: "lines", name: nameOf(c.n_pulses[i]) + " fit"});
  });
  const jobs = [Plotly.react(plotDiv("curves"), traces, {title: "coherence curves C(t)", xaxis: {type: "log", title: "t (s)"},
    margin: {t: 30}})];
  S.drawn[id] = (c.t || []).length;
  if (f.steps && f.steps.length) {
    const st = f.steps[f.steps.length - 1];
    const x = st.omega.map((w) => w / (2 * Math.PI));
    jobs.push(Plotly.react(plotDiv("spectrum"), f.steps.map((s, i) => ({x, y: s.S_fit, mode: "lines",
      name: `after ${s.n_curves} curves`, visible: i === f.steps.length - 1 ? true : "legendonly"})).concat([
      {x, y: st.S_hi, mode: "lines", line: {width: 0}, showlegend: false},
      {x, y: st.S_lo, mode: "lines", fill: "tonexty", line: {width: 0}, name: "band (16-84 %)"}]),
      {title: "noise spectrum S(f) and its band", xaxis: {type: "log", title: "f (Hz)"}, yaxis: {type: "log",
        title: "S (rad²/s)"}, margin: {t: 30}}));
    const rank = (st.ranked || []).map((n) => `${nameOf(n)}`).join(" > ");
    $("note").textContent = `next sequence, best first: ${rank}` + (f.stop_reason ? ` · stopped: ${f.stop_reason}` : "");
  } else if (c.S_fit && c.S_fit.length) {  // live: the loop's last step (vqns_live/ rows)
    const i = c.S_fit.length - 1, x = c.omega[i].map((w) => w / (2 * Math.PI));
    jobs.push(Plotly.react(plotDiv("spectrum"), [
      {x, y: c.S_fit[i], mode: "lines", name: `after ${c.n_curves[i]} curves`},
      {x, y: c.S_hi[i], mode: "lines", line: {width: 0}, showlegend: false},
      {x, y: c.S_lo[i], mode: "lines", fill: "tonexty", line: {width: 0}, name: "band (16-84 %)"}],
      {title: "noise spectrum S(f) and its band", xaxis: {type: "log", title: "f (Hz)"}, yaxis: {type: "log",
        title: "S (rad²/s)"}, margin: {t: 30}}));
    $("note").textContent = `after ${c.n_curves[i]} curves, ${c.lorentzians[i]} Lorentzians: next sequence, best ` +
      `first: ${c.ranked[i].map(nameOf).join(" > ")} (best ${Number(c.best_rate[i]).toPrecision(3)} nats/s)`;
  } else {
    $("note").textContent = "the spectrum, its band and the ranking of the next sequence appear after the first fit";
  }
  return jobs;
}

function draw() {
  pending = false;
  renderProgress();
  const id = S.selected, run = S.runs[id], d = S.data[id];
  if (!S.plotly || !run || !d) return;
  const t0 = now();
  let jobs = [];
  if (run.kind === "srm") { jobs = drawMaps(id, srmMaps(run, d)); $("note").textContent = d.final ?
    "run-end maps (fitted on the whole scan)" : "on-line values, pixel by pixel"; }
  else if (run.kind === "mri") { jobs = drawMaps(id, mriMaps(d)); $("note").textContent = (d.final ?
    "the last tip scan" : "the tip scan in progress") + ": locked NV frequency minus the tip-retracted one, " +
    "the lock state, the DEER dip"; }
  else if (run.kind === "vqns") jobs = drawVqns(id, d);
  Promise.all(jobs).then(() => {
    const t = now();
    if (S.firstMap === null && jobs.length) S.firstMap = t;
    for (let i = S.log.length - 1; i >= 0 && S.log[i].drawn === null; i--) if (S.log[i].recv <= t0) S.log[i].drawn = t;
  });
}

connect();
