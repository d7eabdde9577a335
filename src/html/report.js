// Draws a fleetsim report from the JSON in <script id="data">: one run, several runs compared
// (the first is the reference), or a sweep. Tables are plain DOM; charts are uPlot.
"use strict";

// A failure to draw is shown on the page, not only in the console.
window.addEventListener("error", (e) => {
  const box = document.createElement("pre");
  box.id = "page-error";
  box.textContent = "This report could not be drawn: " + e.message;
  document.body.prepend(box);
});

const D = JSON.parse(document.getElementById("data").textContent);
const app = document.getElementById("app");
const COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2",
  "#17becf", "#7f7f7f", "#bcbd22"];
const MEASURES = [["delivery", "delivery"], ["round_trip", "round trip"],
  ["completion", "completion"], ["engine_lag", "engine lag"]];
// Spectra: latency at 1/(1-p) = 10^(k/10), k = 0, 1, ...
const SPECTRUM_X = Array.from({ length: 61 }, (_, k) => Math.pow(10, k / 10));
// Charts with more series than this show only the first ones (a note says so).
const MAX_SERIES = 12;

function el(tag, attrs, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v !== undefined && v !== null) e.setAttribute(k, v);
  }
  for (const k of kids.flat()) {
    if (k === null || k === undefined) continue;
    e.append(k instanceof Node ? k : String(k));
  }
  return e;
}

function num(v, digits) {
  if (v === null || v === undefined || Number.isNaN(v)) return "–";
  const d = digits === undefined ? (Math.abs(v) >= 100 || Number.isInteger(v) ? 0 : 2) : digits;
  return v.toLocaleString("en-US", { maximumFractionDigits: d, minimumFractionDigits: 0 });
}

function ms(v) {
  if (v === null || v === undefined) return "–";
  if (v >= 1000) return dur(v / 1000);
  return num(v, v < 10 ? 2 : 1) + " ms";
}

function dur(s) {
  if (s === null || s === undefined) return "–";
  if (s < 1) return num(s * 1000, 0) + " ms";
  if (s < 60) return num(s, 1) + " s";
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), r = Math.round(s % 60);
  if (h > 0) return h + " h " + String(m).padStart(2, "0") + " min";
  return m + " min " + String(r).padStart(2, "0") + " s";
}

function pct(share) {
  return num(share * 100, share < 0.01 && share > 0 ? 3 : 2) + " %";
}

// 1/(1-p) as a percentile label: 1 -> 0%, 10 -> 90%, 1000 -> 99.9%.
function pctLabel(x) {
  const p = 100 * (1 - 1 / x);
  const digits = Math.max(0, Math.round(Math.log10(x)) - 2);
  return p.toFixed(digits) + "%";
}

function usMs(us) { return us / 1000; }

// A latency tick: 250 ms, 1.5 s, 5 min.
function msTick(v) {
  if (v < 1000) return num(v) + " ms";
  if (v < 120000) return num(v / 1000, 1) + " s";
  return num(v / 60000, 1) + " min";
}

// A time tick (seconds since the start): 30 s, 20 min, 1 h 30.
function secTick(s) {
  if (s < 60) return num(s) + " s";
  if (s < 3600) return num(s / 60, 1) + " min";
  const h = Math.floor(s / 3600), m = Math.round((s % 3600) / 60);
  return m === 0 ? h + " h" : h + " h " + String(m).padStart(2, "0");
}
// Tick steps for milliseconds: 1-2-5 below a second, then whole seconds and minutes.
const MS_INCRS = [0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 50, 100,
  200, 500, 1000, 2000, 5000, 10000, 15000, 30000, 60000, 120000, 300000, 600000, 900000, 1800000,
  3600000];
// Tick steps for seconds: whole minutes and hours once the run is long.
const SEC_INCRS = [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1200, 1800, 3600, 7200, 10800,
  21600, 43200, 86400];

function section(title, ...kids) {
  app.append(el("h2", {}, title), ...kids);
}

// rows: arrays of cells; a cell is a value or {v, cls, title}.
function table(headers, rows, rowClass) {
  const head = el("tr", {}, headers.map((h) => el("th", {}, h)));
  const body = rows.map((r, i) => el("tr", { class: rowClass ? rowClass(i) : null },
    r.map((c) => {
      if (c !== null && typeof c === "object" && !(c instanceof Node)) {
        return el("td", { class: c.cls, title: c.title }, c.v);
      }
      return el("td", { class: typeof c === "number" ? "n" : null }, c);
    })));
  return el("div", { class: "scroll" }, el("table", {}, el("thead", {}, head), el("tbody", {}, body)));
}

function chartBox(parent) {
  const box = el("div", { class: "chart" });
  parent.append(box);
  return box;
}

function chartWidth(box) {
  return Math.max(480, Math.floor(box.getBoundingClientRect().width) - 12);
}

// A uPlot chart in `parent`: x and y axes labelled, legend with values under the cursor.
function plot(parent, o) {
  const box = chartBox(parent);
  const series = [{ label: o.xLabel, value: (u, v) => (v === null || v === undefined ? "–" : o.xFmt(v)) }]
    .concat(o.series.map((s, i) => ({
      label: s.label,
      stroke: s.color || COLORS[i % COLORS.length],
      width: s.width || 1.5,
      dash: s.dash,
      scale: s.scale || "y",
      spanGaps: true,
      points: { show: !!s.points },
      value: (u, v) => (v === null || v === undefined ? "–" : (s.fmt || o.yFmt)(v)),
    })));
  const axes = [
    Object.assign({ label: o.xLabel, values: (u, splits) => splits.map((v) => (v === null ? "" : o.xFmt(v))) }, o.xAxis || {}),
    { label: o.yLabel, size: 70, incrs: o.yIncrs, values: (u, splits) => splits.map((v) => (v === null ? "" : o.yTick(v))) },
  ];
  if (o.y2Label) {
    axes.push({ label: o.y2Label, scale: "y2", side: 1, size: 70, grid: { show: false },
      values: (u, splits) => splits.map((v) => (v === null ? "" : num(v))) });
  }
  const scales = { x: Object.assign({ time: false }, o.xScale || {}), y: o.yScale || {} };
  if (o.y2Label) scales.y2 = {};
  const chart = new uPlot({
    title: o.title,
    width: chartWidth(box),
    height: o.height || 300,
    scales,
    axes,
    series,
    cursor: { drag: { x: true, y: false } },
    hooks: o.faults && o.faults.length ? { drawClear: [(u) => shadeFaults(u, o.faults)] } : {},
  }, o.data, box);
  box.setAttribute("role", "img");
  box.setAttribute("aria-label", `${o.title}: ${o.yLabel}${o.y2Label ? " and " + o.y2Label : ""} against ${o.xLabel}`);
  if (o.note) box.append(el("p", { class: "note" }, o.note));
  return chart;
}

function spectrumChart(parent, title, lines) {
  const shown = lines.filter((l) => l.values && l.values.some((v) => v !== null));
  if (shown.length === 0) return;
  const kept = shown.slice(0, MAX_SERIES);
  const last = Math.max(...kept.map((l) => l.values.reduce((a, v, i) => (v === null ? a : i), 0)));
  const xs = SPECTRUM_X.slice(0, last + 1);
  plot(parent, {
    title,
    xLabel: "percentile",
    xFmt: pctLabel,
    xScale: { distr: 3, log: 10 },
    xAxis: { splits: (u, i, min, max) => xs.filter((x) => Math.abs(Math.log10(x) - Math.round(Math.log10(x))) < 1e-9) },
    yLabel: "latency",
    yFmt: ms,
    yTick: msTick,
    yIncrs: MS_INCRS,
    series: kept.map((l) => ({ label: l.label, width: l.width, dash: l.dash, color: l.color })),
    data: [xs].concat(kept.map((l) => l.values.slice(0, last + 1))),
    note: shown.length > kept.length ? `the first ${kept.length} of ${shown.length} series` : null,
  });
}

// The scenario's fault windows behind a time chart: a shaded band for each window, a line for
// each instant (a disconnect storm, a hub restart), labelled with the fault's kind.
const FAULT_FILL = "rgba(214, 39, 40, 0.10)";
const FAULT_LINE = "rgba(214, 39, 40, 0.75)";
function shadeFaults(u, faults) {
  const ctx = u.ctx;
  const { top, height } = u.bbox;
  ctx.save();
  ctx.font = `${Math.round(11 * devicePixelRatio)}px sans-serif`;
  for (const f of faults) {
    const x0 = u.valToPos(f.start_s, "x", true);
    const x1 = u.valToPos(f.end_s, "x", true);
    if (f.end_s > f.start_s) {
      ctx.fillStyle = FAULT_FILL;
      ctx.fillRect(x0, top, Math.max(1, x1 - x0), height);
    } else {
      ctx.strokeStyle = FAULT_LINE;
      ctx.lineWidth = devicePixelRatio;
      ctx.beginPath();
      ctx.moveTo(x0, top);
      ctx.lineTo(x0, top + height);
      ctx.stroke();
    }
    ctx.fillStyle = FAULT_LINE;
    ctx.fillText(f.kind, x0 + 3 * devicePixelRatio, top + 12 * devicePixelRatio);
  }
  ctx.restore();
}

function faultTable(s) {
  const faults = s.faults || [];
  if (faults.length === 0) return;
  section("Faults", el("p", { class: "note" },
    "The scenario's faults, shaded on the charts over time."),
  table(["kind", "target", "what", "from", "to"], faults.map((f) => [
    f.kind, f.target, f.detail || "", "+" + dur(f.start_s), f.end_s > f.start_s ? "+" + dur(f.end_s) : "(an instant)",
  ])));
}

function connectedChart(parent, run) {
  const t = run.timeseries;
  if (t.second.length === 0 || !t.connected.some((n) => n > 0)) return;
  plot(parent, Object.assign(secondsAxis(), {
    title: "Devices connected",
    yLabel: "devices",
    yFmt: (v) => num(v),
    yTick: (v) => num(v),
    series: [{ label: "connected", width: 2, color: COLORS[3] }],
    data: [t.second, t.connected],
    faults: run.summary.faults,
  }));
}

function secondsAxis() {
  return { xLabel: "time since start", xFmt: dur,
    xAxis: { incrs: SEC_INCRS, space: 70, values: (u, splits) => splits.map(secTick) } };
}

function verdictBanner(run) {
  const v = run.verdict;
  const pass = v.exit_code === 0;
  app.append(el("div", { class: "verdict " + (pass ? "pass" : "fail"), id: "verdict" },
    "Verdict: " + v.headline, el("small", {}, "exit code " + v.exit_code)));
  if (v.invalid) app.append(el("p", { class: "bad" }, "Invalid run: " + v.invalid));
  if (v.thresholds.length > 0) {
    app.append(table(["threshold", "condition", "actual", "result"], v.thresholds.map((t) => [
      t.key, t.condition, t.actual === null ? "(no data)" : t.actual,
      t.skipped ? { v: "skipped", cls: "skip" } : t.held ? { v: "held", cls: "ok" } : { v: "BROKEN", cls: "bad" },
    ])));
  } else {
    app.append(el("p", { class: "note" }, "The scenario sets no thresholds."));
  }
  if (v.comparison.length > 0) {
    app.append(el("h3", {}, "Against the baseline"));
    const fmt = (r, x) => (r.kind === "time" ? ms(x / 1000) : r.kind === "ratio" ? pct(x) : num(x));
    app.append(table(["job", "figure", "baseline", "this run", "change", ""], v.comparison.map((r) => [
      r.job || "(all)", r.figure, fmt(r, r.baseline), fmt(r, r.run),
      r.change === null ? "–" : num(r.change * 100, 1) + " %",
      r.regression ? { v: "REGRESSION", cls: "bad" } : { v: "ok", cls: "ok" },
    ])));
  }
}

function facts(s) {
  return [
    ["scenario", s.scenario], ["seed", s.seed],
    ["clock", s.clock], ["devices", num(s.devices)],
    ["simulated time", dur(s.simulated_s)], ["wall time", dur(s.wall_s)],
    ["speed-up", num(s.speedup, 1) + "×"], ["complete", s.complete ? "yes" : "no (interrupted)"],
    ["started", s.started_at], ["ended", s.ended_at],
    ["operations", num(s.throughput.ops_total)], ["failed operations", num(s.throughput.failures_total)],
    ["mean ops/s", num(s.throughput.ops_per_s_mean, 1)], ["peak ops/s", num(s.throughput.ops_per_s_peak, 1)],
  ];
}

function jobRows(s) {
  return s.jobs.map((j) => {
    const h = s.job_histograms[j.jobId];
    const st = j.deviceJobStatistics;
    const p = (m, k) => (h ? ms(usMs(h[m][k])) : "–");
    return [j.jobId, j.type, j.status, num(st.deviceCount), num(st.succeededCount),
      { v: num(st.failedCount), cls: st.failedCount > 0 ? "bad" : null },
      num(st.runningCount + st.pendingCount), dur(j.makespan_ms / 1000), num(j.ops_per_s, 1),
      p("delivery", "p50_us"), p("delivery", "p99_us"), p("completion", "p50_us"), p("completion", "p99_us")];
  });
}
const JOB_HEADERS = ["job", "type", "status", "devices", "succeeded", "failed", "not ended",
  "makespan", "ops/s", "delivery p50", "delivery p99", "completion p50", "completion p99"];

function rollouts(s) {
  if (s.rollouts.length === 0) return;
  section("Rollouts");
  for (const r of s.rollouts) {
    app.append(el("h3", {}, `${r.id}: ${r.status}`, r.reason ? ` (${r.reason})` : ""));
    app.append(table(["devices", "succeeded", "failed", "retried", "makespan"], [[
      num(r.devices), num(r.succeeded), { v: num(r.failed), cls: r.failed > 0 ? "bad" : null },
      num(r.retried), dur(r.makespan_ms / 1000)]]));
    app.append(table(["wave", "job", "devices", "succeeded", "failed", "started", "ended", "rate at end"],
      r.waves.map((w, i) => [i + 1, w.jobId, num(w.devices), num(w.succeeded), num(w.failed),
        dur(w.started_s), w.ended_s === null ? "running" : dur(w.ended_s),
        w.rate_per_minute_at_end === null ? "–" : num(w.rate_per_minute_at_end, 0) + "/min"])));
  }
}

function failureCauses(runs) {
  const causes = new Map();
  runs.forEach((run, i) => {
    for (const j of run.summary.jobs) {
      for (const [cause, n] of Object.entries(j.failures || {})) {
        const row = causes.get(cause) || runs.map(() => 0);
        row[i] += n;
        causes.set(cause, row);
      }
    }
  });
  return causes;
}

function throughputChart(parent, run, title) {
  const t = run.timeseries;
  if (t.second.length === 0) return;
  plot(parent, Object.assign(secondsAxis(), {
    title,
    yLabel: "operations per second",
    yFmt: (v) => num(v, 1) + "/s",
    yTick: (v) => num(v),
    y2Label: "in flight",
    series: [
      { label: "ops/s", width: 2 },
      { label: "failures/s", color: COLORS[1] },
      { label: "in flight", color: COLORS[2], scale: "y2", fmt: (v) => num(v) },
    ],
    data: [t.second, t.ops_per_s, t.failures, t.in_flight],
    faults: run.summary.faults,
  }));
}

function progressChart(parent, run) {
  const ids = Object.keys(run.progress).filter((id) => run.progress[id].length > 0);
  if (ids.length === 0) return;
  const kept = ids.slice(0, MAX_SERIES / 2);
  const tables = kept.map((id) => {
    const rows = [[0, 0, 0]].concat(run.progress[id]);
    return [rows.map((r) => r[0]), rows.map((r) => r[1]), rows.map((r) => r[2])];
  });
  const data = uPlot.join(tables);
  const series = [];
  kept.forEach((id, i) => {
    const color = COLORS[i % COLORS.length];
    series.push({ label: id + " succeeded", color, width: 2 });
    series.push({ label: id + " failed", color, dash: [6, 4] });
  });
  plot(parent, Object.assign(secondsAxis(), {
    title: "Each job's devices ended (cumulative)",
    yLabel: "devices",
    yFmt: (v) => num(v),
    yTick: (v) => num(v),
    series,
    data,
    faults: run.summary.faults,
    note: ids.length > kept.length ? `the first ${kept.length} of ${ids.length} jobs` : null,
  }));
}

function runPage(run) {
  const s = run.summary;
  app.append(el("h1", {}, `${s.scenario} — ${run.label}`));
  verdictBanner(run);
  section("Run");
  const dl = el("dl", { class: "facts" });
  for (const [k, v] of facts(s)) dl.append(el("dt", {}, k), el("dd", {}, v));
  app.append(dl);
  section("Jobs", s.jobs.length ? table(JOB_HEADERS, jobRows(s)) : el("p", { class: "note" }, "No job ran."));
  rollouts(s);
  faultTable(s);
  section("Latency percentile spectra");
  app.append(el("p", { class: "note" },
    "Latency against percentile on a 1/(1−p) scale (HdrHistogram's plot): the tail is spread out; " +
    "drag to zoom, double-click to reset."));
  const spectra = el("div", { class: "charts" });
  app.append(spectra);
  for (const [m, name] of MEASURES) {
    const sp = run.spectra[m];
    if (!sp) continue;
    const lines = [{ label: "all jobs", values: sp.all, width: 2.5, color: "#000" }]
      .concat(s.jobs.filter((j) => sp.jobs[j.jobId])
        .map((j, i) => ({ label: j.jobId, values: sp.jobs[j.jobId], color: COLORS[i % COLORS.length] })));
    spectrumChart(spectra, `${name} latency`, lines);
  }
  section("Over time");
  const over = el("div", { class: "charts" });
  app.append(over);
  throughputChart(over, run, "Throughput, failures and operations in flight");
  connectedChart(over, run);
  progressChart(over, run);
  section("Failures by cause");
  const causes = failureCauses([run]);
  if (causes.size === 0) {
    app.append(el("p", { class: "note" }, "No operation failed."));
  } else {
    const total = [...causes.values()].reduce((a, r) => a + r[0], 0);
    const perJob = s.jobs.filter((j) => j.failures && Object.keys(j.failures).length);
    app.append(table(["cause", "failed devices", "share"].concat(perJob.map((j) => j.jobId)),
      [...causes.entries()].map(([cause, r]) => [cause, num(r[0]), pct(r[0] / total)]
        .concat(perJob.map((j) => num(j.failures[cause] || 0))))));
  }
}

// A cell of a comparison: the value, and its change against the reference (first run) coloured
// by whether higher is better (+1), worse (-1) or neither (0).
function cmpCell(value, ref, fmt, better) {
  if (value === null || value === undefined) return { v: "–" };
  if (ref === null || ref === undefined || ref === value || better === undefined) return { v: fmt(value) };
  const change = ref === 0 ? null : (value - ref) / Math.abs(ref);
  const cls = better === 0 || (change !== null && Math.abs(change) < 0.01) ? null
    : (value > ref) === (better > 0) ? "better" : "worse";
  const delta = change === null ? "(was 0)" : (change > 0 ? "+" : "") + num(change * 100, 1) + " %";
  return { v: el("span", {}, fmt(value), el("span", { class: "delta" }, delta)), cls,
    title: "against " + D.runs[0].label };
}

function comparePage(runs) {
  app.append(el("h1", {}, "Comparison of " + runs.length + " runs"));
  app.append(el("p", { class: "note" }, `Changes are against the first run, ${runs[0].label}; ` +
    "green is better, red is worse."));
  app.append(table(["run", "scenario", "verdict", "exit code"], runs.map((r) => [
    r.label, r.summary.scenario,
    { v: r.verdict.headline, cls: r.verdict.exit_code === 0 ? "ok" : "bad" }, r.verdict.exit_code])));
  const ref = runs[0].summary;
  section("Run");
  const rowsOf = [
    ["devices", (s) => s.devices, num, 0], ["seed", (s) => s.seed, String, undefined],
    ["clock", (s) => s.clock, String, undefined],
    ["simulated time", (s) => s.simulated_s, dur, 0], ["wall time", (s) => s.wall_s, dur, -1],
    ["operations", (s) => s.throughput.ops_total, num, 0],
    ["failed operations", (s) => s.throughput.failures_total, num, -1],
    ["mean ops/s", (s) => s.throughput.ops_per_s_mean, (v) => num(v, 1), 1],
    ["peak ops/s", (s) => s.throughput.ops_per_s_peak, (v) => num(v, 1), 1],
  ];
  for (const [m, name] of MEASURES) {
    for (const k of ["p50_us", "p99_us", "p999_us"]) {
      rowsOf.push([`${name} ${k.replace("_us", "")}`, (s) => s.histograms[m].count ? usMs(s.histograms[m][k]) : null, ms, -1]);
    }
  }
  app.append(table(["figure"].concat(runs.map((r) => r.label)), rowsOf.map(([name, f, fmt, better]) =>
    [name].concat(runs.map((r) => cmpCell(f(r.summary), f(ref), fmt, better))))));
  section("Jobs");
  const ids = [...new Set(runs.flatMap((r) => r.summary.jobs.map((j) => j.jobId)))];
  const job = (s, id) => s.jobs.find((j) => j.jobId === id);
  const jobFigures = [
    ["status", (j) => j.status, String, undefined],
    ["makespan", (j) => j.makespan_ms / 1000, dur, -1],
    ["failed", (j) => j.deviceJobStatistics.failedCount, num, -1],
    ["ops/s", (j) => j.ops_per_s, (v) => num(v, 1), 1],
  ];
  const jobRowsCmp = [];
  for (const id of ids) {
    for (const [name, f, fmt, better] of jobFigures) {
      const r0 = job(ref, id);
      jobRowsCmp.push([id, name].concat(runs.map((r) => {
        const j = job(r.summary, id);
        return cmpCell(j ? f(j) : null, r0 ? f(r0) : null, fmt, better);
      })));
    }
  }
  app.append(table(["job", "figure"].concat(runs.map((r) => r.label)), jobRowsCmp));
  const rids = [...new Set(runs.flatMap((r) => r.summary.rollouts.map((x) => x.id)))];
  if (rids.length > 0) {
    section("Rollouts");
    const ro = (s, id) => s.rollouts.find((x) => x.id === id);
    const figs = [
      ["status", (x) => x.status, String, undefined],
      ["waves", (x) => x.waves.length, num, 0],
      ["makespan", (x) => x.makespan_ms / 1000, dur, -1],
      ["failed", (x) => x.failed, num, -1],
      ["retried", (x) => x.retried, num, -1],
    ];
    const rows = [];
    for (const id of rids) {
      for (const [name, f, fmt, better] of figs) {
        const r0 = ro(ref, id);
        rows.push([id, name].concat(runs.map((r) => {
          const x = ro(r.summary, id);
          return cmpCell(x ? f(x) : null, r0 ? f(r0) : null, fmt, better);
        })));
      }
    }
    app.append(table(["rollout", "figure"].concat(runs.map((r) => r.label)), rows));
  }
  section("Latency percentile spectra, all jobs");
  const spectra = el("div", { class: "charts" });
  app.append(spectra);
  for (const [m, name] of MEASURES) {
    spectrumChart(spectra, `${name} latency`, runs.map((r, i) => ({
      label: r.label, values: r.spectra[m] ? r.spectra[m].all : null, width: i === 0 ? 2.5 : 1.5,
      color: COLORS[i % COLORS.length] })));
  }
  section("Throughput over time");
  const over = el("div", { class: "charts" });
  app.append(over);
  const withRows = runs.filter((r) => r.timeseries.second.length > 0);
  if (withRows.length > 0) {
    plot(over, Object.assign(secondsAxis(), {
      title: "Operations per second",
      yLabel: "operations per second",
      yFmt: (v) => num(v, 1) + "/s",
      yTick: (v) => num(v),
      series: withRows.map((r) => ({ label: r.label })),
      data: uPlot.join(withRows.map((r) => [r.timeseries.second, r.timeseries.ops_per_s])),
    }));
  }
  const causes = failureCauses(runs);
  if (causes.size > 0) {
    section("Failures by cause");
    app.append(table(["cause"].concat(runs.map((r) => r.label)), [...causes.entries()].map(([cause, r]) =>
      [cause].concat(r.map((n) => cmpCell(n, r[0], num, -1))))));
  }
}

function sweepPage(sw) {
  app.append(el("h1", {}, `Sweep of ${sw.scenario}`));
  const k = sw.keys.length;
  const met = sw.rows.filter((r) => r.target_met).length;
  if (sw.target) {
    const best = sw.smallest === null ? null : sw.rows[sw.smallest];
    app.append(el("div", { class: "verdict " + (best ? "pass" : "fail"), id: "verdict" },
      best ? `Target met by ${met} of ${sw.rows.length}; smallest: ` +
        sw.keys.map((key, i) => `${key} = ${best.values[i]}`).join(", ")
        : `No combination meets the target (${sw.rows.length} tried)`,
      el("small", {}, "target: " + sw.target)));
  }
  app.append(el("p", { class: "note" }, `${sw.rows.length} combinations of ` +
    sw.keys.join(", ") + ". Each row links to the combination's own report."));
  const rolloutIds = [...new Set(sw.rows.flatMap((r) => Object.keys(r.rollouts)))];
  const inRollout = (id) => rolloutIds.some((r) => id.startsWith(r + "-w"));
  const jobIds = [...new Set(sw.rows.flatMap((r) => Object.keys(r.jobs)))].filter((id) => !inRollout(id));
  const items = rolloutIds.map((id) => ["rollout", id]).concat(jobIds.map((id) => ["job", id]));
  const headers = sw.keys.concat(items.flatMap(([, id]) => [id + " makespan", id + " failed", id + " status"]),
    ["delivery p50", "delivery p99", "completion p50", "completion p99", "mean ops/s", "verdict"],
    sw.target ? ["target"] : [], ["report"]);
  const rows = sw.rows.map((r) => r.values.concat(items.flatMap(([kind, id]) => {
    const x = (kind === "rollout" ? r.rollouts : r.jobs)[id];
    return x ? [dur(x.makespan_s), pct(x.failed_share), x.status] : ["–", "–", "–"];
  }), [ms(r.delivery_p50_ms), ms(r.delivery_p99_ms), ms(r.completion_p50_ms), ms(r.completion_p99_ms),
    num(r.ops_per_s_mean, 1), { v: r.verdict, cls: r.verdict === "passed" ? "ok" : "bad" }],
  sw.target ? [r.target_met ? { v: "met", cls: "ok" } : { v: "not met", cls: "bad" }] : [],
  [el("a", { href: r.dir + "/report.html" }, r.dir)]));
  app.append(table(headers, rows, (i) => (i === sw.smallest ? "best" : sw.rows[i].target_met ? "met" : null)));

  // Figures against the last numeric key (the others make one series each).
  const numeric = (i) => sw.rows.every((r) => r.values[i] !== "" && !Number.isNaN(Number(r.values[i])));
  let xi = -1;
  for (let i = k - 1; i >= 0; i--) if (numeric(i)) { xi = i; break; }
  const xCat = xi < 0;
  if (xCat) xi = k - 1;
  const xValues = [...new Set(sw.rows.map((r) => r.values[xi]))];
  if (!xCat) xValues.sort((a, b) => Number(a) - Number(b));
  const xOf = (r) => (xCat ? xValues.indexOf(r.values[xi]) : Number(r.values[xi]));
  const groupOf = (r) => r.values.filter((_, i) => i !== xi).map((v, j) => `${sw.keys.filter((_, i) => i !== xi)[j]}=${v}`).join(" ") || "all";
  const groups = [...new Set(sw.rows.map(groupOf))];
  const xs = xValues.map((v, i) => (xCat ? i : Number(v)));
  const makespan = [dur, "makespan", secTick, SEC_INCRS];
  const latency = [ms, "latency", msTick, MS_INCRS];
  const figures = rolloutIds.map((id) => [`${id} makespan`, (r) => (r.rollouts[id] ? r.rollouts[id].makespan_s : null), ...makespan])
    .concat(jobIds.slice(0, 4).map((id) => [`${id} makespan`, (r) => (r.jobs[id] ? r.jobs[id].makespan_s : null), ...makespan]))
    .concat([["completion p99", (r) => r.completion_p99_ms, ...latency],
      ["delivery p99", (r) => r.delivery_p99_ms, ...latency],
      ["mean ops/s", (r) => r.ops_per_s_mean, (v) => num(v, 1) + "/s", "operations per second", (v) => num(v), undefined]]);
  section("Figures against " + sw.keys[xi]);
  const charts = el("div", { class: "charts" });
  app.append(charts);
  for (const [title, f, fmt, yLabel, yTick, yIncrs] of figures) {
    const data = [xs].concat(groups.map((g) => xs.map((x) => {
      const r = sw.rows.find((row) => groupOf(row) === g && xOf(row) === x);
      return r ? f(r) : null;
    })));
    plot(charts, {
      title,
      xLabel: sw.keys[xi],
      xFmt: (v) => (xCat ? (xValues[Math.round(v)] ?? "") : num(v)),
      xAxis: { splits: () => xs },
      yLabel,
      yFmt: fmt,
      yTick,
      yIncrs,
      yScale: { range: (u, min, max) => [0, max > 0 ? max * 1.1 : 1] },
      series: groups.map((g) => ({ label: g, width: 2, points: true })),
      data,
    });
  }
}

if (D.kind === "run") runPage(D.runs[0]);
else if (D.kind === "compare") comparePage(D.runs);
else sweepPage(D.sweep);
document.body.dataset.ready = "1";
