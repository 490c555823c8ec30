// solopool dashboard: polls the pool's JSON API and fills in the page. Hand-written, no
// dependencies. Number formatting follows pool/units.py.
"use strict";

const params = new URLSearchParams(location.search);
const REFRESH_SECONDS = Math.max(1, Number(params.get("refresh")) || 5);
const HISTORY_SECONDS = 60;
const COLORS = ["#f7931a", "#3b82f6", "#10b981", "#a855f7", "#ef4444", "#14b8a6", "#eab308", "#ec4899"];
const SI = ["", "k", "M", "G", "T", "P", "E", "Z", "Y"];
const DAY = 86400;
const YEAR = 365.25 * DAY;

const $ = (id) => document.getElementById(id);

function setText(id, text) {
  const el = $(id);
  if (el && el.textContent !== text) el.textContent = text;
}

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else node.setAttribute(k, v);
  }
  for (const child of children) node.append(child);
  return node;
}

// --- formatting (as pool/units.py) -----------------------------------------------------------

function sig(value, digits = 3) {
  if (value === 0) return "0";
  let decimals = Math.max(0, digits - 1 - Math.floor(Math.log10(Math.abs(value))));
  let text = value.toFixed(decimals);
  if (decimals && text.replace(".", "").replace(/^0+/, "").length > digits) {
    text = value.toFixed(decimals - 1);
  }
  return text;
}

function scaled(value) {
  let i = 0;
  while (Math.abs(value) >= 999.5 && i < SI.length - 1) {
    value /= 1000;
    i += 1;
  }
  return [value, SI[i]];
}

function fmtHashrate(h) {
  if (!Number.isFinite(h) || h <= 0) return "0 H/s";
  const [v, p] = scaled(h);
  return `${sig(v)} ${p}H/s`;
}

function fmtBand(band) {
  if (band === null || band === undefined) return "";
  const percent = 100 * band;
  return percent >= 10 ? `± ${percent.toFixed(0)}%` : `± ${sig(percent, 2)}%`;
}

function fmtDifficulty(d) {
  if (d === null || d === undefined || !Number.isFinite(d) || d <= 0) return "–";
  if (d >= 1) {
    const [v, p] = scaled(d);
    return `${sig(v)} ${p}`.trim();
  }
  if (d >= 1e-6) return sig(d);
  // Python writes e-07 where JavaScript writes e-7.
  return d.toExponential(2).replace(/e([+-])(\d)$/, (_, sign, digit) => `e${sign}0${digit}`);
}

function fmtDuration(s) {
  if (s === null || s === undefined || !Number.isFinite(s)) return "never";
  s = Math.max(0, s);
  if (s < 60) return `${s.toFixed(0)} s`;
  if (s < 3600) return `${(s / 60).toFixed(0)} min`;
  if (s < 2 * DAY) return `${sig(s / 3600, 2)} hours`;
  if (s < YEAR) return `${sig(s / DAY, 3)} days`;
  const years = s / YEAR;
  if (years < 1000) return `${sig(years, 3)} years`;
  if (years < 1e6) return `${Math.round(years).toLocaleString("en-US")} years`;
  const scales = [[1e18, "quintillion"], [1e15, "quadrillion"], [1e12, "trillion"], [1e9, "billion"], [1e6, "million"]];
  for (const [scale, word] of scales) {
    if (years >= scale) return `${sig(years / scale, 3)} ${word} years`;
  }
  return `${years} years`;
}

function fmtProbability(p) {
  if (p === null || p === undefined || p <= 0) return "0 %";
  const percent = 100 * p;
  if (percent >= 99.95 && p < 1) return "> 99.9 %";
  if (percent < 1e-9) return `${percent.toExponential(2)} %`;
  return `${sig(percent, 3)} %`;
}

function fmtOneIn(p) {
  if (p === null || p === undefined || p <= 0) return "never";
  const n = 1 / p;
  if (n < 1.5) return "1 in 1";
  if (n >= 1e15) return `1 in ${n.toExponential(2)}`;
  const step = Math.pow(10, Math.floor(Math.log10(n)) - 2);
  const rounded = step >= 1 ? Math.round(n / step) * step : Math.round(n);
  return `1 in ${rounded.toLocaleString("en-US", { maximumFractionDigits: 0 })}`;
}

function fmtCount(n) {
  return (n || 0).toLocaleString("en-US");
}

function fmtBtc(sats) {
  return sats === null || sats === undefined ? "–" : `${(sats / 1e8).toFixed(8)} BTC`;
}

function shortAddress(address) {
  return address && address.length > 24 ? `${address.slice(0, 14)}…${address.slice(-8)}` : address || "";
}

function workerLabel(name, address) {
  const worker = name && name.startsWith(address) ? name.slice(address.length + 1) : "";
  return worker ? `${worker} · ${shortAddress(address)}` : shortAddress(address);
}

function fmtAgo(t, now) {
  if (!t) return "never";
  return `${fmtDuration(Math.max(0, now - t))} ago`;
}

function rateNode(e) {
  const span = el("span", {});
  if (!e || !(e.hashrate > 0)) {
    span.textContent = "0 H/s";
    return span;
  }
  span.append(fmtHashrate(e.hashrate));
  if (e.band !== null && e.band !== undefined) {
    span.append(" ", el("span", { class: "band", text: fmtBand(e.band) }));
  }
  return span;
}

function rateText(e) {
  if (!e || !(e.hashrate > 0)) return "0 H/s";
  return e.band === null || e.band === undefined
    ? fmtHashrate(e.hashrate)
    : `${fmtHashrate(e.hashrate)} ${fmtBand(e.band)}`;
}

// --- fetching ----------------------------------------------------------------------------------

async function getJSON(path) {
  const response = await fetch(path, { cache: "no-store" });
  const body = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(body.error || `${path}: HTTP ${response.status}`);
  return body;
}

function showBanner(text) {
  const banner = $("banner");
  banner.textContent = text;
  banner.hidden = !text;
}

// --- rendering ---------------------------------------------------------------------------------

function renderPool(pool) {
  setText("network", pool.network || "–");
  const dot = $("node-dot");
  dot.className = `dot ${pool.node && pool.node.ok ? "ok" : "down"}`;
  setText("node-status", pool.node && pool.node.ok
    ? `node ok · ${(1000 * (pool.node.rpc_latency || 0)).toFixed(0)} ms`
    : `node down: ${(pool.node && pool.node.error) || "no answer"}`);
  setText("height", pool.height === null ? "–" : fmtCount(pool.height));
  setText("net-difficulty", fmtDifficulty(pool.difficulty));
  setText("template-age", fmtDuration(pool.template_age));

  const h = pool.hashrate || {};
  setText("pool-hashrate", rateText(h["10m"]));
  setText("pool-hashrate-1m", rateText(h["1m"]));
  setText("pool-hashrate-1h", rateText(h["1h"]));
  setText("pool-hashrate-24h", rateText(h["24h"]));

  const odds = pool.odds;
  if (odds) {
    setText("odds-one-in", odds.block_probability > 0 ? fmtOneIn(odds.block_probability) : "no hashrate yet");
    setText("odds-percent", fmtProbability(odds.block_probability));
    setText("odds-expected", fmtDuration(odds.expected_seconds));
    setText("odds-day", fmtProbability(odds.chance_day));
    setText("odds-month", fmtProbability(odds.chance_month));
    setText("odds-year", fmtProbability(odds.chance_year));
  }

  const best = pool.best_share || {};
  setText("best-all-time", fmtDifficulty(best.all_time));
  setText("best-since-block", fmtDifficulty(best.since_block));
  setText("best-net", fmtDifficulty(pool.difficulty));
  setText("best-ratio", best.all_time && pool.difficulty
    ? fmtProbability(best.all_time / pool.difficulty).replace(" %", "%") : "–");

  const blocks = pool.blocks || {};
  setText("blocks-found", fmtCount(blocks.found));
  const last = pool.last_block;
  setText("last-block", last
    ? `last: height ${fmtCount(last.height)}, ${fmtAgo(last.found_at, pool.time)} (${last.status})`
    : "none yet");
  setText("miners", fmtCount(pool.miners));
  const shares = pool.shares || {};
  setText("pool-accepted", fmtCount(shares.accepted));
  setText("pool-stale", fmtCount(shares.stale));
  setText("pool-rejected", fmtCount(shares.rejected));
  setText("version", `solopool ${pool.version}`);
  setText("uptime", fmtDuration(pool.uptime));
  renderSv2(pool.stratum_v2);
}

function renderSv2(sv2) {
  $("sv2-panel").hidden = !sv2;
  if (!sv2) return;
  // The host the browser reached the pool by is the one miners on the same network use.
  const host = location.hostname.includes(":") ? `[${location.hostname}]` : location.hostname;
  setText("sv2-host", location.hostname);
  setText("sv2-port", String(sv2.port));
  setText("sv2-url", `stratum2+tcp://${host}:${sv2.port}/${sv2.authority_pubkey}`);
  setText("sv2-key", sv2.authority_pubkey);
}

function renderWorkers(data) {
  const body = $("workers-body");
  const rows = [];
  for (const w of data.workers) {
    const name = el("div", { class: "worker-name", text: w.worker || "(no name)" });
    const addr = el("div", { class: "worker-addr", text: shortAddress(w.address), title: w.address });
    const status = el("span", { class: `pill ${w.online ? "online" : "offline"}`, text: w.online ? "online" : "offline" });
    const cell = (content, cls, key) => {
      const td = el("td", { class: cls || "" });
      if (key) td.dataset.field = key;
      td.append(content);
      return td;
    };
    const tr = el("tr", { class: w.online ? "online" : "offline" });
    tr.dataset.worker = w.name;
    tr.append(
      cell(el("div", {}, name, addr), "", "name"),
      cell(status, "", "status"),
      cell(w.protocol === "sv2" ? "SV2" : "V1", "", "protocol"),
      cell(rateNode(w.hashrate["10m"]), "num", "hashrate"),
      cell(fmtHashrate(w.hashrate["1h"].hashrate), "num", "hashrate-1h"),
      cell(fmtHashrate(w.hashrate["24h"].hashrate), "num", "hashrate-24h"),
      cell(fmtDifficulty(w.difficulty), "num", "difficulty"),
      cell(fmtCount(w.accepted), "num", "accepted"),
      cell(fmtCount(w.stale), "num", "stale"),
      cell(fmtCount(w.rejected), "num", "rejected"),
      cell(fmtDifficulty(w.best_share.all_time), "num", "best"),
      cell(fmtDifficulty(w.best_share.since_block), "num", "best-since-block"),
      cell(fmtAgo(w.last_share_at, data.time), "", "last-share"),
    );
    rows.push(tr);
  }
  if (!rows.length) return;
  body.replaceChildren(...rows);
}

function renderBlocks(data) {
  const body = $("blocks-body");
  if (!data.blocks.length) return;
  const rows = data.blocks.slice(0, 50).map((b) => {
    const tr = el("tr", {});
    tr.dataset.hash = b.hash;
    const hash = el("span", { class: "mono", text: `${b.hash.slice(0, 16)}…${b.hash.slice(-8)}`, title: b.hash });
    tr.append(
      el("td", { class: "num", text: fmtCount(b.height) }),
      el("td", {}, hash),
      el("td", { text: workerLabel(b.worker, b.address), title: b.worker || b.address }),
      el("td", { class: "num", text: fmtBtc(b.reward) }),
      el("td", {}, el("span", { class: `pill ${b.status}`, text: b.status })),
      el("td", { class: "num", text: b.confirmations === null ? "–" : fmtCount(b.confirmations) }),
      el("td", { text: fmtAgo(b.found_at, data.time) }),
    );
    return tr;
  });
  body.replaceChildren(...rows);
}

// --- chart -------------------------------------------------------------------------------------

const SVG = "http://www.w3.org/2000/svg";

function svg(tag, attrs) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  return node;
}

let lastHistory = null;

function renderChart(history) {
  lastHistory = history;
  const box = $("chart");
  const legend = $("chart-legend");
  const series = Object.entries(history.workers || {}).slice(0, COLORS.length);
  const pool = history.pool || [];
  const max = Math.max(0, ...pool.filter((v) => v !== null));
  if (!pool.length || max <= 0) {
    box.replaceChildren(el("div", { class: "empty", text: "no shares in the last 24 hours" }));
    legend.replaceChildren();
    return;
  }
  const W = Math.max(320, box.clientWidth || 720), H = Math.max(120, box.clientHeight || 220);
  const left = 76, right = 12, top = 10, bottom = 24;
  const n = pool.length;
  const x = (i) => left + (i + 0.5) * (W - left - right) / n;
  const y = (v) => top + (H - top - bottom) * (1 - v / (max * 1.1));
  const root = svg("svg", { viewBox: `0 0 ${W} ${H}`, role: "img" });
  root.append(svg("title", {}));
  root.firstChild.textContent = "hashrate over the last 24 hours";
  for (const frac of [0, 0.5, 1]) {
    const v = max * 1.1 * frac;
    root.append(svg("line", { x1: left, x2: W - right, y1: y(v), y2: y(v), class: "axis" }));
    const label = svg("text", { x: left - 6, y: y(v) + 4, "text-anchor": "end" });
    label.textContent = fmtHashrate(v);
    root.append(label);
  }
  for (let hours = 24; hours >= 0; hours -= 6) {
    const i = n - 1 - hours * 3600 / history.bin_seconds;
    const label = svg("text", { x: Math.max(left, Math.min(W - right, x(i))), y: H - 6, "text-anchor": "middle" });
    label.textContent = hours ? `−${hours} h` : "now";
    root.append(label);
  }
  // null: before anyone was mining (no line), unlike 0 (mining, no shares).
  const line = (values, color, width) => {
    const points = values.map((v, i) => (v === null ? null : [x(i), y(v)])).filter(Boolean);
    if (points.length === 1) {
      return svg("circle", { cx: points[0][0], cy: points[0][1], r: width + 1.5, fill: color });
    }
    return svg("polyline", {
      points: points.map(([px, py]) => `${px.toFixed(1)},${py.toFixed(1)}`).join(" "),
      fill: "none", stroke: color, "stroke-width": width, "stroke-linejoin": "round",
    });
  };
  const items = [];
  if (series.length > 1) {
    series.forEach(([name, values], k) => {
      root.append(line(values, COLORS[(k + 1) % COLORS.length], 1.5));
      items.push([name.split(/[._]/).slice(1).join(".") || name, COLORS[(k + 1) % COLORS.length]]);
    });
  }
  root.append(line(pool, COLORS[0], 2.5));
  items.unshift(["all workers", COLORS[0]]);
  box.replaceChildren(root);
  legend.replaceChildren(...items.map(([name, color]) => {
    const swatch = el("i", {});
    swatch.style.background = color;
    return el("span", {}, swatch, name);
  }));
}

// --- payout check ------------------------------------------------------------------------------

async function showJob(event) {
  event.preventDefault();
  const address = $("job-address").value.trim();
  const out = $("job-result");
  if (!address) return;
  out.replaceChildren(el("div", { class: "note", text: "asking the pool…" }));
  try {
    const job = await getJSON(`/api/job/${encodeURIComponent(address)}`);
    const verdict = el("div", {
      class: `verdict ${job.pays_only_you ? "good" : "bad"}`,
      text: job.pays_only_you
        ? `✓ The whole reward (${fmtBtc(job.coinbase_value)}) of block ${fmtCount(job.height)} pays ${job.address}, and only it.`
        : "✗ These outputs do not pay the whole reward to this address.",
    });
    const table = el("table", { class: "grid" });
    table.append(el("thead", {}, el("tr", {},
      el("th", { text: "#" }), el("th", { text: "type" }), el("th", { class: "num", text: "value" }),
      el("th", { text: "address" }), el("th", { text: "script" }))));
    const body = el("tbody", {});
    for (const o of job.outputs) {
      body.append(el("tr", {},
        el("td", { text: String(o.index) }),
        el("td", { text: o.type }),
        el("td", { class: "num", text: fmtBtc(o.value) }),
        el("td", { class: "mono", text: o.address || "–" }),
        el("td", { class: "mono", text: o.script_hex })));
    }
    table.append(body);
    out.replaceChildren(verdict, el("div", { class: "scroll" }, table));
  } catch (err) {
    out.replaceChildren(el("div", { class: "verdict bad", text: err.message }));
  }
}

// --- loop --------------------------------------------------------------------------------------

let historyAt = 0;
let workersSeen = -1;

async function refresh() {
  try {
    const [pool, workers, blocks] = await Promise.all([
      getJSON("/api/pool"), getJSON("/api/workers?limit=500"), getJSON("/api/blocks"),
    ]);
    renderPool(pool);
    renderWorkers(workers);
    renderBlocks(blocks);
    const now = Date.now() / 1000;
    if (now - historyAt >= HISTORY_SECONDS || workers.workers.length !== workersSeen) {
      historyAt = now;
      workersSeen = workers.workers.length;
      renderChart(await getJSON("/api/history"));
    }
    showBanner("");
    setText("updated", `updated ${new Date().toLocaleTimeString()}`);
    document.body.dataset.updates = String(Number(document.body.dataset.updates || 0) + 1);
  } catch (err) {
    showBanner(`Cannot reach the pool: ${err.message}. Retrying…`);
  } finally {
    setTimeout(refresh, REFRESH_SECONDS * 1000);
  }
}

document.addEventListener("DOMContentLoaded", () => {
  $("job-form").addEventListener("submit", showJob);
  window.addEventListener("resize", () => { if (lastHistory) renderChart(lastHistory); });
  refresh();
});
