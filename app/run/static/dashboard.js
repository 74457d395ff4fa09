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
    setText("latency", `${fmt(f.recent.latency_p50_ms)} / ${fmt(f.recent.latency_p95_ms)}`);
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
    $("device-table").tBodies[0].replaceChildren(...view.devices.map(d => {
      const c = d.current || {};
      return el("tr", { "data-device": d.device }, el("td", {}, d.device), el("td", {}, fmt(d.rate, 1)), el("td", {}, fmt(c.count)),
        el("td", {}, fmt(c.mean_confidence, 3)), el("td", {}, fmt(c.low_confidence)), el("td", {}, pct(c.accuracy)),
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

  async function poll() {
    try {
      const view = await edgewise.getJSON("/api/dashboard");
      workers(view); figures(view); drawCharts(view); tables(view);
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
