// mcp-proxy console: one EventSource, the view re-drawn in place at most once a second.
// No framework, no inline code (the page's CSP allows only this file).
"use strict";

(function () {
  const $ = (id) => document.getElementById(id);
  const SVG = "http://www.w3.org/2000/svg";
  let source = null;
  let retry = 1000;

  function el(tag, attrs, text) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
    if (text !== undefined) e.textContent = text;
    return e;
  }

  function fmt(n, digits) {
    if (n === null || n === undefined) return "–";
    return Number(n).toFixed(digits === undefined ? 1 : digits);
  }

  // A small line chart of up to three series (numbers or null), scaled to the largest.
  function chart(label, series) {
    const w = 120, h = 28;
    const svg = document.createElementNS(SVG, "svg");
    svg.setAttribute("class", "chart");
    svg.setAttribute("viewBox", `0 0 ${w} ${h}`);
    svg.setAttribute("role", "img");
    svg.setAttribute("aria-label", label);
    const max = Math.max(1e-9, ...series.flatMap((s) => s.values.filter((v) => v !== null)));
    for (const s of series) {
      const n = s.values.length;
      const x = (i) => 2 + (i * (w - 4)) / Math.max(1, n - 1);
      const y = (v) => h - 2 - (v / max) * (h - 4);
      const pts = s.values
        .map((v, i) => (v === null ? null : `${x(i)},${y(v)}`))
        .filter((p) => p !== null)
        .join(" ");
      const line = document.createElementNS(SVG, "polyline");
      line.setAttribute("class", s.cls);
      line.setAttribute("points", pts);
      svg.appendChild(line);
      // A point with no neighbour draws no line: a dot shows it.
      s.values.forEach((v, i) => {
        const alone = v !== null && (s.values[i - 1] ?? null) === null && (s.values[i + 1] ?? null) === null;
        if (!alone) return;
        const dot = document.createElementNS(SVG, "circle");
        dot.setAttribute("class", s.cls);
        dot.setAttribute("cx", x(i));
        dot.setAttribute("cy", y(v));
        dot.setAttribute("r", "1.8");
        svg.appendChild(dot);
      });
    }
    return svg;
  }

  function chartCell(c) {
    const cell = el("td");
    const wrap = el("div", { class: "chart-cell" });
    const w = c.window || {};
    wrap.appendChild(
      chart(`calls per second, last 5 minutes; now ${fmt(w.calls_per_second, 2)} on average`, [
        { cls: "calls", values: c.calls_per_second || [] },
      ])
    );
    wrap.appendChild(el("span", {}, `${fmt(w.calls_per_second, 2)}/s`));
    wrap.appendChild(
      chart(`latency p50 and p99 in ms, last 5 minutes; p50 ${fmt(w.p50_ms, 2)}, p99 ${fmt(w.p99_ms, 2)}`, [
        { cls: "p50", values: c.p50_ms || [] },
        { cls: "p99", values: c.p99_ms || [] },
      ])
    );
    wrap.appendChild(el("span", {}, `p50 ${fmt(w.p50_ms, 2)} · p99 ${fmt(w.p99_ms, 2)} ms`));
    cell.appendChild(wrap);
    return cell;
  }

  function poolName(p) {
    return p.name === null ? "default pool" : p.name;
  }

  function renderPools(view) {
    const box = $("pools");
    const pools = view.pools || [];
    const members = pools.reduce((n, p) => n + p.members.length, 0);
    const instances = (view.instances || []).filter((i) => i !== null).length;
    $("summary").textContent =
      `${pools.length} pool(s), ${members} member(s)` +
      (instances > 0 ? ` on ${instances} instance(s)` : "") +
      `; ${(view.audit && view.audit.total) || 0} request(s) recorded.`;
    const frag = document.createDocumentFragment();
    for (const p of pools) {
      const section = el("section", { class: "pool", "aria-label": `Pool ${poolName(p)}` });
      section.appendChild(el("h3", {}, `Pool: ${poolName(p)}` + (p.instance ? ` (instance ${p.instance})` : "")));
      const c = (p.chart && p.chart.window) || {};
      section.appendChild(
        el(
          "p",
          { class: "pool-stats" },
          `${p.members.length} member(s), ${p.client_sessions} client session(s), ${p.in_flight} in flight, ` +
            `${fmt(c.calls_per_second, 2)} calls/s, p50 ${fmt(c.p50_ms, 2)} ms, p99 ${fmt(c.p99_ms, 2)} ms over 5 minutes`
        )
      );
      const table = el("table", { class: "members" });
      table.appendChild(el("caption", {}, `Members of ${poolName(p)}`));
      const head = el("tr");
      for (const [t, cls] of [
        ["Member", ""], ["State", ""], ["Delivery", ""], ["Kind", ""], ["Protocol versions", ""],
        ["Connected since (UTC)", ""], ["In flight", "num"], ["Client sessions", "num"],
        ["Calls/s and latency, last 5 minutes", ""],
      ]) {
        head.appendChild(el("th", { scope: "col", class: cls }, t));
      }
      table.appendChild(el("thead")).appendChild(head);
      const body = el("tbody");
      for (const m of p.members) {
        const tr = el("tr", { class: m.status });
        tr.appendChild(el("th", { scope: "row" }, `#${m.member}`));
        const state = el("td");
        state.appendChild(el("span", { class: `badge badge-${m.status}` }, m.status));
        if (m.down_since) state.appendChild(document.createTextNode(` since ${m.down_since.slice(11, 19)}`));
        tr.appendChild(state);
        tr.appendChild(el("td", {}, m.delivery === "channel" ? "channel" : "long poll"));
        tr.appendChild(el("td", {}, m.kind));
        tr.appendChild(el("td", {}, (m.protocol_versions || []).join(", ") || "–"));
        tr.appendChild(el("td", {}, m.connected_since.replace("T", " ").slice(0, 19)));
        tr.appendChild(el("td", { class: "num" }, String(m.in_flight)));
        tr.appendChild(el("td", { class: "num" }, String(m.client_sessions)));
        tr.appendChild(chartCell(m.chart || {}));
        body.appendChild(tr);
      }
      table.appendChild(body);
      section.appendChild(table);
      frag.appendChild(section);
    }
    box.replaceChildren(frag);
    const select = $("f-pool");
    const known = new Set([...select.options].map((o) => o.value));
    for (const p of pools) {
      if (p.name !== null && !known.has(p.name)) {
        select.appendChild(el("option", { value: p.name }, p.name));
        known.add(p.name);
      }
    }
  }

  function renderAudit(view) {
    const lines = (view.audit && view.audit.lines) || [];
    const body = $("audit").querySelector("tbody");
    const frag = document.createDocumentFragment();
    for (const r of lines) {
      const failed = r.status >= 400 || r.error_code !== null;
      const tr = el("tr", { class: failed ? "failed" : "" });
      const cells = [
        [r.time.replace("T", " ").slice(0, 23), ""],
        [r.request_id || "–", "mono"],
        [r.pool === "" ? "default" : r.pool, ""],
        [r.member === null ? "–" : `#${r.member}`, ""],
        [(r.client && r.client.token) || "–", "mono"],
        [r.peer || "–", "mono"],
        [r.method || `${r.http_method} ${r.route}`, ""],
        [r.name || "–", ""],
        [String(r.status), "status num"],
        [r.error_code === null ? "–" : String(r.error_code), "num"],
        [fmt(r.latency_ms, 2), "num"],
        [`${r.bytes_in} / ${r.bytes_out}`, "num"],
      ];
      for (const [text, cls] of cells) tr.appendChild(el("td", { class: cls }, text));
      frag.appendChild(tr);
    }
    body.replaceChildren(frag);
    $("audit-caption").textContent = lines.length
      ? `The newest ${lines.length} request(s) matching the filters, newest first.`
      : "No request matches the filters yet.";
  }

  function connect() {
    if (source) source.close();
    const query = new URLSearchParams(new FormData($("filters"))).toString();
    source = new EventSource(`/console/events?${query}`);
    source.addEventListener("state", (e) => {
      retry = 1000;
      const view = JSON.parse(e.data);
      renderPools(view);
      renderAudit(view);
      $("status").textContent = `Live · updated ${view.generated_at.slice(11, 19)} UTC`;
    });
    source.onerror = () => {
      source.close();
      $("status").textContent = "Disconnected; reconnecting…";
      // The session may have ended: a reload lands on the login page if so.
      fetch("/console/api/state?limit=1", { credentials: "same-origin" }).then((r) => {
        if (r.status === 401) window.location.assign("/console/login");
        else setTimeout(connect, retry);
        retry = Math.min(retry * 2, 30000);
      }, () => setTimeout(connect, retry));
    };
  }

  document.addEventListener("DOMContentLoaded", () => {
    $("filters").addEventListener("submit", (e) => {
      e.preventDefault();
      connect();
    });
    connect();
  });
})();
