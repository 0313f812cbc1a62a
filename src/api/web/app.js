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

let token = sessionStorage.getItem("nightowl.token") || "";

async function api(path, options = {}) {
  const headers = Object.assign({ Authorization: "Bearer " + token }, options.headers || {});
  const response = await fetch(path, Object.assign({}, options, { headers }));
  if (response.status === 401) {
    logout("token rejected");
    throw new Error("token rejected");
  }
  const body = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(body.error || response.statusText);
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
  $("#login").hidden = true;
  $("#app").hidden = false;
  $("#tabs").hidden = false;
  $("#logout").hidden = false;
  $("#whoami").textContent = "token " + (token.split("_")[1] || "?");
  search();
  loadPaging();
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
  $("#app").hidden = true;
  $("#tabs").hidden = true;
  $("#logout").hidden = true;
  $("#login").hidden = false;
  $("#whoami").textContent = "";
  $("#login-error").textContent = reason || "";
}

// --------------------------------------------------------------- search

const FACETS = ["status", "host", "client_ip", "method"];

async function search() {
  const q = $("#q").value.trim() || "*";
  const since = $("#range").value;
  const params = "q=" + encodeURIComponent(q) + "&since=" + since;
  $("#search-error").textContent = "";
  try {
    const [hits, count, histogram] = await Promise.all([
      api("/api/v1/search?" + params + "&limit=200"),
      api("/api/v1/count?" + params),
      api("/api/v1/histogram?" + params),
    ]);
    $("#count").textContent = count.count + " matches";
    showPartial([hits, count, histogram]);
    drawHistogram($("#histogram"), histogram.buckets.map((b) => [b.start_ms, b.count]), histogram.interval_secs, "");
    showHits(hits.hits);
    showFacets(params);
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
  const body = $("#hits tbody");
  body.replaceChildren();
  for (const hit of hits) {
    const row = el("tr", undefined, "hit");
    row.append(
      el("td", hit.timestamp),
      el("td", hit.host || ""),
      el("td", hit.client_ip || ""),
      el("td", hit.method ? hit.method + " " + (hit.path || "") : (hit.raw || "").slice(0, 120)),
      el("td", hit.status || ""),
    );
    row.addEventListener("click", () => {
      const next = row.nextElementSibling;
      if (next && next.classList.contains("raw")) {
        next.remove();
        return;
      }
      const raw = el("tr", undefined, "raw");
      const cell = el("td", hit.raw);
      cell.colSpan = 5;
      raw.append(cell);
      row.after(raw);
    });
    body.append(row);
  }
}

async function showFacets(params) {
  const aside = $("#facets");
  aside.replaceChildren();
  for (const field of FACETS) {
    let top;
    try {
      top = await api("/api/v1/top?" + params + "&field=" + field + "&limit=8");
    } catch (e) {
      continue;
    }
    if (!top.values.length) continue;
    aside.append(el("h3", field));
    for (const v of top.values) {
      const link = el("a");
      link.href = "#";
      link.append(el("span", v.value), el("span", v.count));
      link.addEventListener("click", (event) => {
        event.preventDefault();
        const current = $("#q").value.trim();
        const term = field + ":" + quote(String(v.value));
        $("#q").value = current && current !== "*" ? current + " AND " + term : term;
        search();
      });
      aside.append(link);
    }
  }
}

function quote(value) {
  return /^[\w.:\/-]+$/.test(value) ? value : '"' + value.replace(/"/g, '\\"') + '"';
}

function drawHistogram(svg, points, intervalSecs, cls) {
  svg.replaceChildren();
  const width = svg.clientWidth || 800;
  const height = 110;
  svg.setAttribute("viewBox", "0 0 " + width + " " + (height + 10));
  if (!points.length) return;
  const max = Math.max(1, ...points.map((p) => p[1]));
  const barWidth = Math.max(1, width / points.length - 1);
  points.forEach(([start, count], i) => {
    const h = (count / max) * height;
    const rect = document.createElementNS(SVG, "rect");
    rect.setAttribute("x", String(i * (width / points.length)));
    rect.setAttribute("y", String(height - h));
    rect.setAttribute("width", String(barWidth));
    rect.setAttribute("height", String(h));
    if (cls) rect.setAttribute("class", cls);
    const title = document.createElementNS(SVG, "title");
    title.textContent = new Date(start).toISOString() + ": " + count;
    rect.append(title);
    svg.append(rect);
  });
  const label = document.createElementNS(SVG, "text");
  label.setAttribute("x", "0");
  label.setAttribute("y", String(height + 10));
  label.textContent = "max " + max + " per " + intervalSecs + " s";
  svg.append(label);
}

// --------------------------------------------------------------- alerts

async function loadAlerts() {
  $("#alerts-error").textContent = "";
  try {
    const all = $("#show-resolved").checked ? "?all=true" : "";
    const answer = await api("/api/v1/alerts" + all);
    showPaging(answer.paging);
    const body = $("#alerts tbody");
    body.replaceChildren();
    for (const a of answer.alerts) {
      const row = el("tr");
      const actions = el("td");
      if (a.state === "firing") {
        const ack = el("button", "Ack");
        ack.addEventListener("click", () => act(() => api("/api/v1/alerts/" + a.fingerprint + "/ack", { method: "POST" })));
        actions.append(ack);
      }
      const silence = el("button", "Silence 2h");
      silence.addEventListener("click", () =>
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
      );
      const evidence = el("button", "Evidence");
      evidence.addEventListener("click", () => {
        $("#q").value = a.evidence_query || a.key || "*";
        // Widen the range until it covers the evidence's first line.
        const ageMs = Date.now() - a.evidence_from / 1e6;
        const ranges = [["15m", 9e5], ["1h", 3.6e6], ["24h", 8.64e7], ["7d", 6.048e8], ["30d", 2.592e9]];
        const fit = ranges.find(([, ms]) => ms >= ageMs);
        if (fit) $("#range").value = fit[0];
        show("search");
        search();
      });
      actions.append(silence, evidence);
      row.append(
        el("td", a.state, "state-" + a.state),
        el("td", a.severity, "sev-" + a.severity),
        el("td", a.title + " (" + a.rule_id + ")"),
        el("td", a.key),
        el("td", new Date(a.starts_at / 1e6).toISOString()),
        el("td", a.firings),
        actions,
      );
      body.append(row);
    }
  } catch (e) {
    $("#alerts-error").textContent = e.message;
  }
}

async function act(call) {
  try {
    await call();
  } catch (e) {
    $("#alerts-error").textContent = e.message;
  }
  loadAlerts();
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
      row.append(el("td", r.id), el("td", r.title), el("td", r.severity, "sev-" + r.severity), el("td", r.kind), el("td", r.enabled ? "yes" : "no"), el("td", r.source));
      body.append(row);
    }
  } catch (e) {
    $("#rules-status").textContent = e.message;
  }
}

async function backtest() {
  $("#backtest-error").textContent = "";
  $("#backtest-result").replaceChildren();
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
      throw new Error(body.error || response.statusText);
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
    $("#backtest-error").textContent = e.message;
  } finally {
    progress.hidden = true;
  }
}

function showBacktest(report) {
  const out = $("#backtest-result");
  out.append(el("p", "replayed " + report.lines + " lines: " + report.firings + " firings"));
  for (const rule of report.rules) {
    out.append(el("h3", rule.rule_id + ": " + rule.firings + " firings, " + rule.distinct_keys + " keys"));
    const table = el("table");
    for (const k of rule.keys) {
      const row = el("tr");
      row.append(el("td", k.key || "-"), el("td", k.firings), el("td", k.first), el("td", k.last));
      table.append(row);
    }
    out.append(table);
  }
  drawHistogram(
    $("#backtest-histogram"),
    report.buckets.map((b) => [Date.parse(b.start), b.firings]),
    report.interval_secs,
    "firing",
  );
}

// ------------------------------------------------------------------ wiring

function show(view) {
  for (const name of ["search", "alerts", "rules"]) {
    $("#view-" + name).hidden = name !== view;
    document.querySelector('nav button[data-view="' + name + '"]').classList.toggle("active", name === view);
  }
  if (view === "alerts") loadAlerts();
  if (view === "rules") loadRules();
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
  $("#backtest-form").addEventListener("submit", (e) => {
    e.preventDefault();
    backtest();
  });
  $("#refresh-alerts").addEventListener("click", loadAlerts);
  $("#show-resolved").addEventListener("change", loadAlerts);
  for (const button of document.querySelectorAll("nav button")) {
    button.addEventListener("click", () => show(button.dataset.view));
  }
  if (token) login(token);
});
