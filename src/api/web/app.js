// nightowl's page: plain DOM, no framework, no build step. Every value from
// the server is written with textContent, never as HTML, and the page's CSP
// forbids inline script, so a log line cannot run code here.
"use strict";

const $ = (sel) => document.querySelector(sel);
const el = (tag, text, cls) => {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (cls) node.className = cls;
  return node;
};
const SVG = "http://www.w3.org/2000/svg";
const svgEl = (tag, attrs) => {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
  return node;
};
const number = new Intl.NumberFormat("en-US");
const fmt = (n) => number.format(n);

let token = sessionStorage.getItem("nightowl.token") || "";
// The token's own role (GET /api/v1/whoami): buttons the token may not use
// are shown disabled instead of answering 403.
let me = null;

// A token runs four searches at once and a few dozen requests a second
// (docs/limits.md); past that the server answers 503 or 429 with
// Retry-After, before doing anything: the page waits as told and asks again.
const BUSY_RETRIES = 3;

async function api(path, options = {}, attempt = 0) {
  const headers = Object.assign({ Authorization: "Bearer " + token }, options.headers || {});
  const response = await fetch(path, Object.assign({}, options, { headers }));
  if ((response.status === 503 || response.status === 429) && attempt < BUSY_RETRIES) {
    const seconds = Math.min(Number(response.headers.get("Retry-After")) || 1, 5);
    await new Promise((resolve) => setTimeout(resolve, seconds * 1000));
    return api(path, options, attempt + 1);
  }
  if (response.status === 401) {
    logout("token rejected");
    throw new Error("token rejected");
  }
  const body = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(body.error || response.status + " " + response.statusText);
  return body;
}

// ---------------------------------------------------------------- login

async function login(candidate) {
  token = candidate.trim();
  try {
    await api("/api/v1/count?q=*&since=1m");
  } catch (e) {
    $("#login-error").textContent = e.message;
    token = "";
    return;
  }
  sessionStorage.setItem("nightowl.token", token);
  me = await api("/api/v1/whoami").catch(() => null);
  $("#login").hidden = true;
  $("#app").hidden = false;
  $("#tabs").hidden = false;
  $("#logout").hidden = false;
  $("#whoami").textContent = me
    ? me.tenant + " · " + me.role + " · token " + me.token_id
    : "token " + (token.split("_")[1] || "?");
  const backtestButton = $("#backtest-form button");
  backtestButton.disabled = !canAct();
  backtestButton.title = canAct() ? "" : "needs a rule-editor or admin token";
  openLink();
  search();
  loadPaging();
}

// A page's "open" link (`#q=...&since=...&until=...`, alert/receiver/view.rs)
// fills the search form with the alert's evidence.
function openLink() {
  if (!location.hash.startsWith("#q=")) return;
  const link = new URLSearchParams(location.hash.slice(1));
  $("#q").value = link.get("q") || "*";
  if (link.get("since")) {
    $("#range").value = "custom";
    $("#custom-range").hidden = false;
    $("#from").value = link.get("since");
    $("#to").value = link.get("until") || "";
  }
  history.replaceState(null, "", location.pathname);
  show("search");
}

// Whether alerts reach anyone: said on every tab, not only the Alerts one.
function showPaging(paging) {
  const banner = $("#paging");
  const why = paging && paging.nobody_paged;
  banner.textContent = why ? "Nobody is being paged: " + why.replace(/^nobody is paged: /, "") : "";
  banner.hidden = !why;
}

async function loadPaging() {
  try {
    showPaging((await api("/api/v1/alerts")).paging);
  } catch (e) {
    // No alert stage on this node: nothing to say about paging.
  }
}

function logout(reason) {
  sessionStorage.removeItem("nightowl.token");
  token = "";
  me = null;
  $("#app").hidden = true;
  $("#tabs").hidden = true;
  $("#logout").hidden = true;
  $("#login").hidden = false;
  $("#whoami").textContent = "";
  $("#login-error").textContent = reason || "";
}

// Acking, silencing and backtesting need a rule editor (or an admin).
const canAct = () => !me || me.role === "rule-editor" || me.role === "admin";

// --------------------------------------------------------------- search

// Top values the server ranks over every matching line (`path`, and the
// user agent of older partitions, over the newest matches: the answer's
// `sampled_lines` says how many, and the facet says so).
const FACETS = ["status", "host", "client_ip", "method", "user", "path", "user_agent"];
const PAGE = 100;

// Columns: the fixed ones, and the ones a user may add (kept in
// localStorage, so the choice survives a reload).
const COLUMNS = [
  { id: "time", label: "time", value: (h) => h.timestamp, always: true },
  { id: "host", label: "host", value: (h) => h.host || "" },
  { id: "client", label: "client", value: (h) => h.client_ip || "" },
  { id: "request", label: "request", value: (h) => (h.method ? h.method + " " + (h.path || "") : (h.raw || "").slice(0, 120)), always: true },
  { id: "status", label: "status", value: (h) => h.status || "" },
  { id: "bytes", label: "bytes", value: (h) => (h.bytes === undefined ? "" : fmt(h.bytes)), optional: true },
  { id: "duration", label: "duration", value: (h) => (h.duration === undefined ? "" : h.duration + " s"), optional: true },
  { id: "user_agent", label: "user agent", value: (h) => h.user_agent || "", optional: true, cls: "ua" },
  { id: "referer", label: "referer", value: (h) => h.referer || "", optional: true, cls: "referer" },
];
const DEFAULT_COLUMNS = ["time", "host", "client", "request", "status"];

function chosenColumns() {
  try {
    const saved = JSON.parse(localStorage.getItem("nightowl.columns") || "null");
    if (Array.isArray(saved)) return COLUMNS.filter((c) => c.always || saved.includes(c.id));
  } catch (e) {
    // A damaged entry falls back to the defaults.
  }
  return COLUMNS.filter((c) => DEFAULT_COLUMNS.includes(c.id));
}

function setupColumns() {
  const box = $("#column-choices");
  box.replaceChildren();
  const chosen = chosenColumns().map((c) => c.id);
  for (const c of COLUMNS.filter((c) => !c.always)) {
    const input = el("input");
    input.type = "checkbox";
    input.value = c.id;
    input.checked = chosen.includes(c.id);
    input.addEventListener("change", () => {
      const ids = [...box.querySelectorAll("input:checked")].map((i) => i.value);
      localStorage.setItem("nightowl.columns", JSON.stringify(ids));
      showHits(current.hits);
    });
    const label = el("label");
    label.append(input, " " + c.label);
    box.append(label);
  }
}

// The search on screen: what "Load more" and the facets build on.
const current = { params: "", hits: [], count: 0, limit: PAGE, seq: 0 };

// The time range of the form as API parameters, or an error to show.
function rangeParams() {
  const range = $("#range").value;
  if (range !== "custom") return "&since=" + encodeURIComponent(range);
  const from = $("#from").value.trim();
  const to = $("#to").value.trim();
  if (!from) throw new Error("from: give a time (2026-11-24T10:00:00Z) or a duration ago (2h)");
  return "&since=" + encodeURIComponent(from) + (to ? "&until=" + encodeURIComponent(to) : "");
}

function clearResults() {
  $("#count").textContent = "";
  $("#range-shown").textContent = "";
  $("#histogram").replaceChildren();
  $("#facets").replaceChildren();
  $("#hits tbody").replaceChildren();
  $("#shown").textContent = "";
  $("#more").hidden = true;
  current.hits = [];
  current.count = 0;
  const notice = $("#partial");
  if (notice) {
    notice.textContent = "";
    notice.hidden = true;
  }
}

async function search() {
  const seq = ++current.seq;
  const q = $("#q").value.trim() || "*";
  $("#search-error").textContent = "";
  let params;
  try {
    params = "q=" + encodeURIComponent(q) + rangeParams();
  } catch (e) {
    clearResults();
    $("#search-error").textContent = e.message;
    return;
  }
  try {
    const [hits, count, histogram] = await Promise.all([
      api("/api/v1/search?" + params + "&limit=" + PAGE),
      api("/api/v1/count?" + params),
      api("/api/v1/histogram?" + params),
    ]);
    if (seq !== current.seq) return; // a newer search is on its way
    Object.assign(current, { params, hits: hits.hits, count: count.count, limit: PAGE });
    $("#count").textContent = fmt(count.count) + " matches";
    showPartial([hits, count, histogram]);
    const interval = histogram.interval_secs * 1000;
    const buckets = histogram.buckets.map((b) => [b.start_ms, b.count]);
    const domain = buckets.length
      ? [buckets[0][0], buckets[buckets.length - 1][0] + interval]
      : null;
    $("#range-shown").textContent = domain
      ? iso(domain[0]) + " → " + iso(domain[1]) + " UTC, " + duration(interval / 1000) + " per bar"
      : "";
    drawHistogram($("#histogram"), buckets, interval, domain, "bar", zoomTo);
    showHits(current.hits);
    showFacets(params, seq);
  } catch (e) {
    if (seq !== current.seq) return;
    // Nothing of the previous query stays under the error.
    clearResults();
    $("#search-error").textContent = e.message;
  }
}

async function loadMore() {
  const seq = current.seq;
  const limit = current.limit + PAGE;
  try {
    const hits = await api("/api/v1/search?" + current.params + "&limit=" + limit);
    if (seq !== current.seq) return;
    current.hits = hits.hits;
    current.limit = limit;
    showHits(current.hits);
  } catch (e) {
    $("#search-error").textContent = e.message;
  }
}

// A node with cluster peers says when some did not answer: the numbers
// shown are then short, and the page must say so (docs/fanout.md).
function showPartial(answers) {
  let notice = $("#partial");
  if (!notice) {
    notice = el("p", undefined, "error");
    notice.id = "partial";
    $("#search-error").after(notice);
  }
  const partial = answers.find((a) => a && a.partial === true);
  if (!partial) {
    notice.textContent = "";
    notice.hidden = true;
    return;
  }
  const failed = (partial.shards && partial.shards.failed) || [];
  const total = (partial.shards && partial.shards.total) || 0;
  notice.textContent = "partial results: " + (total - failed.length) + " of " + total +
    " shards answered (no answer from " + failed.map((f) => f.node).join(", ") + ")";
  notice.hidden = false;
}

function showHits(hits) {
  const columns = chosenColumns();
  const head = $("#hits thead tr");
  head.replaceChildren(...columns.map((c) => el("th", c.label)));
  const body = $("#hits tbody");
  body.replaceChildren();
  for (const hit of hits) {
    const row = el("tr", undefined, "hit");
    row.append(...columns.map((c) => el("td", c.value(hit), c.cls)));
    row.addEventListener("click", () => {
      const next = row.nextElementSibling;
      if (next && next.classList.contains("raw")) {
        next.remove();
        return;
      }
      const raw = el("tr", undefined, "raw");
      const cell = el("td", hit.raw);
      cell.colSpan = columns.length;
      raw.append(cell);
      row.after(raw);
    });
    body.append(row);
  }
  $("#shown").textContent = hits.length
    ? fmt(hits.length) + " of " + fmt(Math.max(current.count, hits.length)) + " lines, newest first"
    : "no lines";
  $("#more").hidden = hits.length >= current.count || hits.length < current.limit;
}

async function showFacets(params, seq) {
  const aside = $("#facets");
  aside.replaceChildren();
  // Two at a time, so the facets leave search slots for what the user
  // asks next (Load more, the next query).
  const answers = await inTurns(FACETS, 2, (field) =>
    api("/api/v1/top?" + params + "&field=" + field + "&limit=8").catch(() => null),
  );
  if (seq !== current.seq) return;
  FACETS.forEach((field, i) => {
    const top = answers[i];
    if (!top || !top.values.length) return;
    const box = el("div", undefined, "facet-group");
    box.dataset.field = field;
    const title = el("h3", field.replace("_", " ") + " ");
    if (top.sampled_lines) title.append(el("small", "in the newest " + fmt(top.sampled_lines) + " lines"));
    box.append(title);
    for (const v of top.values) box.append(facetRow(field, String(v.value), v.count));
    aside.append(box);
  });
}

// `run` over `items`, at most `width` at once; the answers in their order.
async function inTurns(items, width, run) {
  const answers = new Array(items.length);
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const i = next++;
      answers[i] = await run(items[i]);
    }
  };
  await Promise.all(Array.from({ length: Math.min(width, items.length) }, worker));
  return answers;
}

function facetRow(field, value, n) {
  const row = el("div", undefined, "facet");
  const link = el("a");
  link.href = "#";
  link.title = "only " + field + " " + value;
  link.append(el("span", value), el("span", fmt(n)));
  link.addEventListener("click", (event) => {
    event.preventDefault();
    refine(field + ":" + quote(value));
  });
  const exclude = el("button", "−", "exclude");
  exclude.type = "button";
  exclude.title = "exclude " + field + " " + value;
  exclude.setAttribute("aria-label", exclude.title);
  exclude.addEventListener("click", () => refine("NOT " + field + ":" + quote(value)));
  row.append(link, exclude);
  return row;
}

function refine(term) {
  const q = $("#q").value.trim();
  $("#q").value = q && q !== "*" ? q + " AND " + term : term;
  search();
}

function quote(value) {
  return /^[\w.:\/-]+$/.test(value) ? value : '"' + value.replace(/\\/g, "\\\\").replace(/"/g, '\\"') + '"';
}

// Drag across the histogram: search that span, as an absolute range.
function zoomTo(fromMs, toMs) {
  if (!(toMs > fromMs)) return;
  $("#range").value = "custom";
  $("#custom-range").hidden = false;
  $("#from").value = iso(fromMs) + "Z";
  $("#to").value = iso(toMs) + "Z";
  search();
}

// --------------------------------------------------------------- charts

const iso = (ms) => new Date(ms).toISOString().slice(0, 19);

function duration(secs) {
  if (secs % 86400 === 0) return secs / 86400 + " d";
  if (secs % 3600 === 0) return secs / 3600 + " h";
  if (secs % 60 === 0) return secs / 60 + " min";
  return secs + " s";
}

// Tick steps a reader counts in, from a second to a week; longer spans
// tick on calendar months and years.
const STEPS = [1, 5, 10, 30, 60, 300, 600, 1800, 3600, 3 * 3600, 6 * 3600, 12 * 3600, 86400, 2 * 86400, 7 * 86400].map((s) => s * 1000);
const MONTH_STEPS = [1, 2, 3, 6, 12, 24, 60, 120];
const pad = (n) => String(n).padStart(2, "0");

// [time, label] pairs for an axis over [t0, t1] with at most `most` ticks.
function ticks(t0, t1, most) {
  const out = [];
  const step = STEPS.find((s) => (t1 - t0) / s <= most);
  if (step) {
    for (let t = Math.ceil(t0 / step) * step; t <= t1; t += step) {
      const d = new Date(t);
      const day = pad(d.getUTCMonth() + 1) + "-" + pad(d.getUTCDate());
      const hm = pad(d.getUTCHours()) + ":" + pad(d.getUTCMinutes());
      let label;
      if (step >= 86400000) label = day;
      else if (step < 60000) label = hm + ":" + pad(d.getUTCSeconds());
      else label = d.getUTCHours() === 0 && d.getUTCMinutes() === 0 ? day + " " + hm : hm;
      out.push([t, label]);
    }
    return out;
  }
  const start = new Date(t0);
  const months = (t1 - t0) / (30.44 * 86400000);
  const m = MONTH_STEPS.find((k) => months / k <= most) || MONTH_STEPS[MONTH_STEPS.length - 1];
  let index = start.getUTCFullYear() * 12 + start.getUTCMonth() + 1;
  index = Math.ceil(index / m) * m;
  for (;; index += m) {
    const t = Date.UTC(Math.floor(index / 12), index % 12, 1);
    if (t > t1) break;
    const year = String(Math.floor(index / 12));
    out.push([t, m >= 12 ? year : year + "-" + pad((index % 12) + 1)]);
  }
  return out;
}

// Bars at their time on a time axis (UTC ticks), the max per bar on the
// left. With `onZoom`, a drag selects a span and hands it over.
function drawHistogram(svg, points, intervalMs, domain, cls, onZoom) {
  // Kept to draw again at the new width when the window is resized.
  svg.lastDraw = [points, intervalMs, domain, cls, onZoom];
  svg.replaceChildren();
  svg.onmousedown = null;
  const width = svg.clientWidth || 800;
  const plot = 104;
  const height = plot + 30;
  svg.setAttribute("viewBox", "0 0 " + width + " " + height);
  if (!domain || !(domain[1] > domain[0])) return;
  const [t0, t1] = domain;
  const x = (t) => ((t - t0) / (t1 - t0)) * width;
  const max = Math.max(1, ...points.map((p) => p[1]));
  const barWidth = Math.max(1, x(t0 + intervalMs) - 1);
  for (const [start, count] of points) {
    if (!count) continue;
    const h = Math.max(1, (count / max) * plot);
    const rect = svgEl("rect", { x: x(start), y: plot - h, width: barWidth, height: h, class: cls });
    const title = svgEl("title");
    title.textContent = iso(start) + "Z: " + fmt(count);
    rect.append(title);
    svg.append(rect);
  }
  svg.append(svgEl("line", { x1: 0, y1: plot + 0.5, x2: width, y2: plot + 0.5, class: "axis" }));
  for (const [t, text] of ticks(t0, t1, Math.max(2, Math.floor(width / 90)))) {
    const tx = x(t);
    svg.append(svgEl("line", { x1: tx, y1: plot, x2: tx, y2: plot + 4, class: "tick" }));
    const label = svgEl("text", { x: tx, y: plot + 15, "text-anchor": tx < 30 ? "start" : tx > width - 30 ? "end" : "middle", class: "tick-label" });
    label.textContent = text;
    svg.append(label);
  }
  const label = svgEl("text", { x: 0, y: 10 });
  label.textContent = "max " + fmt(max) + " per " + duration(intervalMs / 1000) + " (UTC)";
  svg.append(label);
  if (!onZoom) return;
  svg.onmousedown = (down) => {
    down.preventDefault();
    const box = svg.getBoundingClientRect();
    const scale = width / box.width;
    const at = (event) => Math.min(width, Math.max(0, (event.clientX - box.left) * scale));
    const startX = at(down);
    const selection = svgEl("rect", { x: startX, y: 0, width: 0, height: plot, class: "selection" });
    svg.append(selection);
    const move = (event) => {
      const nowX = at(event);
      selection.setAttribute("x", String(Math.min(startX, nowX)));
      selection.setAttribute("width", String(Math.abs(nowX - startX)));
    };
    const up = (event) => {
      window.removeEventListener("mousemove", move);
      window.removeEventListener("mouseup", up);
      selection.remove();
      const endX = at(event);
      // A click is not a zoom: it needs a few pixels of drag.
      if (Math.abs(endX - startX) < 3) return;
      const time = (px) => t0 + (px / width) * (t1 - t0);
      onZoom(Math.floor(time(Math.min(startX, endX))), Math.ceil(time(Math.max(startX, endX))));
    };
    window.addEventListener("mousemove", move);
    window.addEventListener("mouseup", up);
  };
}

// --------------------------------------------------------------- alerts

async function loadAlerts(keepError) {
  if (!keepError) $("#alerts-error").textContent = "";
  try {
    const all = $("#show-resolved").checked ? "?all=true" : "";
    const answer = await api("/api/v1/alerts" + all);
    showPaging(answer.paging);
    const body = $("#alerts tbody");
    body.replaceChildren();
    const allowed = canAct();
    const denied = "needs a rule-editor or admin token";
    const button = (text, onClick) => {
      const b = el("button", text);
      b.type = "button";
      b.disabled = !allowed;
      if (!allowed) b.title = denied;
      b.addEventListener("click", onClick);
      return b;
    };
    for (const a of answer.alerts) {
      const row = el("tr");
      const actions = el("td", undefined, "actions");
      if (a.state === "firing") {
        actions.append(
          button("Ack", () => act(() => api("/api/v1/alerts/" + a.fingerprint + "/ack", { method: "POST" }))),
          button("Silence 2h", () =>
            act(() =>
              api("/api/v1/silences", {
                method: "POST",
                headers: { "Content-Type": "application/json" },
                body: JSON.stringify({
                  matchers: ["alertname=" + a.rule_id, "key=" + a.key],
                  ends_at: (Date.now() + 2 * 3600 * 1000) * 1e6,
                  comment: "silenced from the web page",
                }),
              }),
            ),
          ),
        );
      }
      if (a.state === "silenced" && a.silenced_by && a.silenced_by.length) {
        actions.append(
          button("Unsilence", () =>
            act(() => Promise.all(a.silenced_by.map((id) => api("/api/v1/silences/" + encodeURIComponent(id), { method: "DELETE" })))),
          ),
        );
      }
      const evidence = el("button", "Evidence");
      evidence.type = "button";
      evidence.addEventListener("click", () => showEvidence(a));
      actions.append(evidence);
      // When the attack happened (its first line's own time) rather than
      // when nightowl raised the alert; the latter is in the tooltip.
      const raisedMs = a.starts_at / 1e6;
      const eventMs = a.evidence_from > 0 ? a.evidence_from / 1e6 : raisedMs;
      const since = el("td", iso(eventMs) + "Z");
      since.title = "first line of the evidence; alert raised " + iso(raisedMs) + "Z";
      row.append(
        el("td", a.state, "state-" + a.state),
        el("td", a.severity, "sev-" + a.severity),
        el("td", a.title + " (" + a.rule_id + ")"),
        el("td", a.key),
        since,
        el("td", a.firings),
        actions,
      );
      body.append(row);
    }
  } catch (e) {
    $("#alerts-error").textContent = e.message;
  }
}

// The evidence over its own time span (event time), as an absolute range.
function showEvidence(a) {
  $("#q").value = a.evidence_query || a.key || "*";
  if (a.evidence_from > 0 && a.evidence_to >= a.evidence_from) {
    $("#range").value = "custom";
    $("#custom-range").hidden = false;
    $("#from").value = iso(a.evidence_from / 1e6) + "Z";
    // Inclusive end: one second more covers its last line.
    $("#to").value = iso(a.evidence_to / 1e6 + 1000) + "Z";
  }
  show("search");
  search();
}

async function act(call) {
  let failed = false;
  try {
    await call();
  } catch (e) {
    failed = true;
    $("#alerts-error").textContent = e.message;
  }
  loadAlerts(failed);
}

// ---------------------------------------------------------------- rules

async function loadRules() {
  try {
    const answer = await api("/api/v1/rules");
    const from = [answer.builtin ? "the embedded pack" : "", answer.dir || ""].filter((x) => x).join(" and ");
    $("#rules-status").textContent = answer.loaded + " rules loaded" + (from ? " from " + from : "");
    const body = $("#rules tbody");
    body.replaceChildren();
    for (const r of answer.rules || []) {
      const row = el("tr");
      // Lines too old for every window of the rule: left out of it, never silently.
      const late = r.lines_too_late || 0;
      row.append(el("td", r.id), el("td", r.title), el("td", r.severity, "sev-" + r.severity), el("td", r.kind), el("td", r.enabled ? "yes" : "no"), el("td", late, late > 0 ? "too-late" : ""), el("td", r.source));
      body.append(row);
    }
  } catch (e) {
    $("#rules-status").textContent = e.message;
  }
}

async function backtest() {
  $("#backtest-error").textContent = "";
  $("#backtest-result").replaceChildren();
  $("#backtest-histogram").replaceChildren();
  const progress = $("#backtest-progress");
  progress.hidden = false;
  try {
    const response = await fetch("/api/v1/rules/backtest", {
      method: "POST",
      headers: { Authorization: "Bearer " + token, "Content-Type": "application/json" },
      body: JSON.stringify({ rules: $("#rule-yaml").value, since: $("#backtest-range").value, name: "web page" }),
    });
    if (!response.ok) {
      const body = await response.json().catch(() => ({}));
      throw new Error(body.error || response.status + " " + response.statusText);
    }
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let pending = "";
    let report = null;
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      pending += decoder.decode(value, { stream: true });
      let nl;
      while ((nl = pending.indexOf("\n")) >= 0) {
        const message = JSON.parse(pending.slice(0, nl));
        pending = pending.slice(nl + 1);
        if (message.progress) {
          progress.max = Math.max(1, message.progress.total);
          progress.value = message.progress.scanned;
        } else if (message.report) {
          report = message.report;
        } else if (message.error) {
          throw new Error(message.error);
        }
      }
    }
    if (!report) throw new Error("the backtest ended without a report");
    showBacktest(report);
  } catch (e) {
    $("#backtest-result").replaceChildren();
    $("#backtest-histogram").replaceChildren();
    $("#backtest-error").textContent = e.message;
  } finally {
    progress.hidden = true;
  }
}

function showBacktest(report) {
  const out = $("#backtest-result");
  out.append(el("p", "replayed " + fmt(report.lines) + " lines from " + report.since + " to " + report.until + ": " + fmt(report.firings) + " firings"));
  for (const rule of report.rules) {
    out.append(el("h3", rule.rule_id + ": " + rule.firings + " firings, " + rule.distinct_keys + " keys"));
    const table = el("table", undefined, "backtest-keys");
    const head = el("thead");
    const headRow = el("tr");
    headRow.append(el("th", "key"), el("th", "firings"), el("th", "first"), el("th", "last"));
    head.append(headRow);
    const body = el("tbody");
    for (const k of rule.keys) {
      const row = el("tr");
      row.append(el("td", k.key || "-"), el("td", k.firings), el("td", k.first), el("td", k.last));
      body.append(row);
    }
    table.append(head, body);
    out.append(table);
  }
  // The whole range replayed, empty buckets too (the report lists only
  // the buckets with firings).
  const interval = Math.max(1, report.interval_secs) * 1000;
  const since = Date.parse(report.since);
  const until = Date.parse(report.until);
  const firstBucket = Math.floor(since / interval) * interval;
  const points = report.buckets.map((b) => [Date.parse(b.start), b.firings]);
  drawHistogram($("#backtest-histogram"), points, interval, [firstBucket, Math.max(until, firstBucket + interval)], "firing", null);
}

// ------------------------------------------------------------- patterns

// The top log patterns of the matching lines (GET /api/v1/patterns): lines,
// a sparkline over the range, "new" when the pattern has no line in the
// range's first interval; a click searches its lines.
async function loadPatterns() {
  $("#patterns-error").textContent = "";
  const body = $("#patterns tbody");
  body.replaceChildren();
  const range = $("#patterns-range").value;
  try {
    const q = $("#pq").value.trim() || "*";
    const answer = await api("/api/v1/patterns?q=" + encodeURIComponent(q) + "&since=" + encodeURIComponent(range) + "&limit=50");
    for (const p of answer.patterns || []) {
      const row = el("tr", undefined, "pattern");
      row.dataset.id = p.id;
      const cell = el("td");
      if (p.new_since) {
        const mark = el("span", "new", "new");
        mark.title = "first line in this range at " + p.new_since;
        cell.append(mark);
      }
      const link = el("a", p.template || "pattern " + p.id, "template");
      link.href = "#";
      link.title = "pattern:" + p.id;
      link.addEventListener("click", (event) => {
        event.preventDefault();
        $("#q").value = "pattern:" + p.id;
        $("#range").value = range;
        $("#custom-range").hidden = true;
        show("search");
        search();
      });
      cell.append(link);
      row.append(el("td", fmt(p.count)), el("td"), cell);
      row.children[1].append(sparkline(p.series || []));
      body.append(row);
    }
    if (!body.childElementCount) $("#patterns-error").textContent = "no patterns in this range";
  } catch (e) {
    $("#patterns-error").textContent = e.message;
  }
}

function sparkline(series) {
  const svg = svgEl("svg", { class: "spark", viewBox: "0 0 " + Math.max(series.length, 1) + " 10", preserveAspectRatio: "none", role: "img" });
  const max = Math.max(1, ...series);
  series.forEach((n, i) => {
    if (n > 0) {
      const h = Math.max(1, (n / max) * 10);
      svg.append(svgEl("rect", { x: i, y: 10 - h, width: 0.85, height: h }));
    }
  });
  return svg;
}

// ------------------------------------------------------------------ wiring

function show(view) {
  for (const name of ["search", "patterns", "alerts", "rules"]) {
    $("#view-" + name).hidden = name !== view;
    document.querySelector('nav button[data-view="' + name + '"]').classList.toggle("active", name === view);
  }
  if (view === "alerts") loadAlerts();
  if (view === "rules") loadRules();
  if (view === "patterns") loadPatterns();
}

document.addEventListener("DOMContentLoaded", () => {
  $("#login-form").addEventListener("submit", (e) => {
    e.preventDefault();
    login($("#token").value);
  });
  $("#logout").addEventListener("click", () => logout(""));
  $("#search-form").addEventListener("submit", (e) => {
    e.preventDefault();
    search();
  });
  $("#range").addEventListener("change", () => {
    const custom = $("#range").value === "custom";
    $("#custom-range").hidden = !custom;
    if (custom && !$("#from").value) $("#from").value = iso(Date.now() - 3600 * 1000) + "Z";
  });
  $("#more").addEventListener("click", loadMore);
  $("#backtest-form").addEventListener("submit", (e) => {
    e.preventDefault();
    backtest();
  });
  $("#refresh-alerts").addEventListener("click", () => loadAlerts());
  $("#patterns-form").addEventListener("submit", (e) => {
    e.preventDefault();
    loadPatterns();
  });
  $("#show-resolved").addEventListener("change", () => loadAlerts());
  for (const button of document.querySelectorAll("nav button")) {
    button.addEventListener("click", () => show(button.dataset.view));
  }
  let resizing = null;
  window.addEventListener("resize", () => {
    clearTimeout(resizing);
    resizing = setTimeout(() => {
      for (const svg of document.querySelectorAll("svg")) {
        if (svg.lastDraw && svg.childElementCount) drawHistogram(svg, ...svg.lastDraw);
      }
    }, 100);
  });
  setupColumns();
  showHits([]);
  $("#shown").textContent = "";
  if (token) login(token);
});
