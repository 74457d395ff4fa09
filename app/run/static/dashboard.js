// The dashboard: polls /api/dashboard (every worker's figures, merged) and redraws.
"use strict";
(() => {
  const { el, fmt, pct } = edgewise;
  const POLL_MS = 1000;
  const $ = id => document.getElementById(id);
  edgewise.tokenBox($("token"));

  function setText(id, text) { $(id).textContent = text; }

  function workers(view) {
    const down = view.workers.filter(w => !w.ok);
    const text = `${view.workers.length - down.length}/${view.workers.length} workers answered`;
    $("workers").textContent = down.length ? `${text} (missing: ${down.map(w => w.url + " " + w.error).join("; ")})` : text;
    $("workers").className = down.length ? "bad" : "";
  }

  function figures(view) {
    const f = view.fleet;
    setText("samples-per-second", fmt(f.samples_per_second, 1));
    setText("predictions", fmt(f.predictions));
    setText("devices", fmt(f.devices));
    setText("low-rate", pct(f.low_confidence_rate));
    setText("accuracy", pct(f.recent.accuracy));
    setText("latency", `${fmt(f.recent.latency_p50_ms, 1)} / ${fmt(f.recent.latency_p95_ms, 1)}`);
    setText("pending", fmt(view.review.queued));
    setText("corrected", fmt(view.corrections.corrected));
    setText("dead-letters", fmt(view.dead_letters.total));
    $("dead-box").classList.toggle("attention", view.dead_letters.total > 0);
  }

  function drawCharts(view) {
    const labels = Object.entries(view.fleet.recent.labels || {}).map(([label, value]) => ({ label, value }));
    charts.bars($("labels-chart"), labels);
    const conf = view.confidence.buckets.filter(b => b.le !== "+Inf")
      .map(b => ({ label: "≤" + b.le, value: b.count, colour: parseFloat(b.le) <= 0.6 ? charts.COLOURS[1] : charts.COLOURS[0] }));
    charts.bars($("confidence-chart"), conf);
    const perWindow = view.windows.list.slice().reverse().map(w => ({
      label: new Date(w.start * 1000).toLocaleTimeString("en-GB"), value: w.total.count }));
    charts.bars($("rate-chart"), perWindow, { colour: charts.COLOURS[2] });
    const models = Object.entries(view.accuracy.true_labels);
    charts.lines($("accuracy-chart"), models.map(([name, m]) => ({
      name, points: m.windows.filter(w => w.accuracy !== null).map(w => [w.start, w.accuracy]) })));
    charts.legend($("accuracy-legend"), models.map(([name]) => name));
  }

  function tables(view) {
    const names = new Set([...Object.keys(view.accuracy.true_labels), ...Object.keys(view.accuracy.corrections)]);
    $("models").tBodies[0].replaceChildren(...[...names].sort().map(name => {
      const t = (view.accuracy.true_labels[name] || {}).cumulative || {};
      const c = view.accuracy.corrections[name] || {};
      return el("tr", { "data-model": name }, el("td", {}, name), el("td", {}, pct(t.accuracy)), el("td", {}, fmt(t.count)),
        el("td", { class: "corrected-accuracy" }, pct(c.accuracy)), el("td", { class: "corrected-count" }, fmt(c.count)));
    }));
    const dead = [];
    for (const [reason, stages] of Object.entries(view.dead_letters.by_reason))
      for (const [stage, n] of Object.entries(stages)) dead.push(el("tr", {}, el("td", {}, reason), el("td", {}, stage), el("td", {}, fmt(n))));
    $("dead").tBodies[0].replaceChildren(...(dead.length ? dead : [el("tr", {}, el("td", { class: "muted", colspan: 3 }, "none"))]));
    const lag = Object.entries(view.consumer_lag.groups).map(([group, g]) => el("tr", { "data-group": group },
      el("td", {}, group), el("td", {}, fmt(Object.keys(g.partitions).length)), el("td", { class: "lag" }, fmt(g.total))));
    $("lag").tBodies[0].replaceChildren(...(lag.length ? lag : [el("tr", {}, el("td", { class: "muted", colspan: 3 }, "no commits yet"))]));
    $("device-table").tBodies[0].replaceChildren(...view.devices.map(d => {
      const c = d.current || {};
      return el("tr", { "data-device": d.device }, el("td", {}, d.device), el("td", {}, fmt(d.rate, 1)), el("td", {}, fmt(c.count)),
        el("td", {}, fmt(c.mean_confidence, 3)), el("td", {}, spark(c.confidence_histogram)),
        el("td", {}, fmt(c.low_confidence)), el("td", {}, pct(c.accuracy)),
        el("td", {}, fmt(c.latency_p50_ms)), el("td", {}, fmt(c.latency_p95_ms)), el("td", {}, fmt(d.late)),
        el("td", {}, d.newest ? new Date(d.newest * 1000).toLocaleTimeString("en-GB") : "–"));
    }));
    $("sites-card").hidden = !view.sites.length;
    $("site-table").tBodies[0].replaceChildren(...view.sites.map(s => {
      const n = s.newest || {};
      return el("tr", {}, el("td", {}, s.site), el("td", {}, fmt(s.devices)), el("td", {}, fmt(n.frames)),
        el("td", {}, fmt(n.scored)), el("td", {}, fmt(n.low)), el("td", {}, fmt(n.mean_confidence, 3)));
    }));
  }

  // confidence per tenth of 0..1 as ten small bars, tallest = most samples
  function spark(counts) {
    const box = el("span", { class: "spark" });
    if (!counts) return box;
    const top = Math.max(1, ...counts);
    const total = counts.reduce((a, b) => a + b, 0);
    box.title = counts.map((n, i) => `${i / 10}-${(i + 1) / 10}: ${n}`).join(", ");
    box.dataset.total = String(total);
    for (const n of counts) box.append(el("i", { style: `height:${Math.round(100 * n / top)}%` }));
    return box;
  }

  function retrainStatus(view) {
    const runs = view.retrain || [];
    if (!runs.length) return;
    $("retrain-status").replaceChildren(...runs.map(r => {
      const last = r.last ? `last: v${r.last.version} ${r.last.decision} (${r.last.reason})` : "no candidate yet";
      const sh = r.shadow;
      const shadow = sh ? `; v${sh.version} in shadow against v${sh.against}: ${fmt(sh.samples)}/${fmt(sh.needed)} samples` +
        (sh.accuracy == null ? "" : `, accuracy ${fmt(sh.accuracy, 3)} vs ${fmt(sh.served_accuracy, 3)}`) +
        (sh.agreement == null ? "" : `, agreement ${fmt(sh.agreement, 3)}`) : "";
      return el("div", { class: r.error ? "bad" : "" },
        `${r.state}; ${r.since_last}/${r.every} new corrections toward the next candidate${shadow}; ${last}` +
        (r.error ? `; error: ${r.error}` : ""));
    }));
  }

  async function changeModel(path, body) {
    const answer = await edgewise.postJSON(path, body);
    $("model-message").textContent = answer.status === 200 ? `serving v${answer.body.served}`
      : `refused (${answer.status}): ${answer.body.error || ""} ${answer.body.detail || ""}`;
    $("model-message").className = "message " + (answer.status === 200 ? "ok" : "bad");
    versions();
  }
  $("rollback").addEventListener("click", () => changeModel("/api/models/rollback", {}));

  async function versions() {
    try {
      const listing = (await edgewise.getJSON("/api/models")).models;
      $("versions").tBodies[0].replaceChildren(...listing.slice().reverse().slice(0, 20).map(m => {
        const d = m.decision || {};
        const button = el("button", { "data-version": String(m.version) }, "promote");
        button.addEventListener("click", () => changeModel("/api/models/promote", { version: m.version }));
        const data = m.training_data || {};
        return el("tr", { "data-model-version": String(m.version) },
          el("td", {}, `${m.name} v${m.version}`), el("td", {}, pct(m.metrics.accuracy)),
          el("td", {}, data.corrections !== undefined ? `${data.base_train_rows} base + ${data.corrections} corrections` : `${data.train_rows || "?"} rows`),
          el("td", { title: d.reason || "" , class: d.decision === "rejected" ? "bad" : "" }, d.decision || "–"),
          el("td", {}, m.promoted ? "served" : ""), el("td", {}, m.promoted ? "" : button));
      }));
    } catch (err) { /* the figures above say when workers are missing */ }
  }
  versions();
  setInterval(versions, 3000);

  async function poll() {
    try {
      const view = await edgewise.getJSON("/api/dashboard");
      workers(view); figures(view); drawCharts(view); tables(view); retrainStatus(view);
      setText("updated", new Date().toLocaleTimeString("en-GB"));
      document.body.dataset.updates = String(Number(document.body.dataset.updates || 0) + 1);
    } catch (err) {
      $("workers").textContent = String(err);
      $("workers").className = "bad";
    }
    setTimeout(poll, POLL_MS);
  }
  poll();
})();
