// Hand-written SVG charts: bars and lines, enough for the dashboard. No libraries.
"use strict";
const charts = (() => {
  const NS = "http://www.w3.org/2000/svg";
  const COLOURS = ["#2f6fdb", "#c2410c", "#15803d", "#7c3aed", "#b45309", "#0e7490", "#be185d", "#4d7c0f"];
  function svg(width, height) {
    const s = document.createElementNS(NS, "svg");
    s.setAttribute("viewBox", `0 0 ${width} ${height}`);
    s.setAttribute("width", "100%");
    s.setAttribute("height", height);
    return s;
  }
  function node(tag, attrs, text) {
    const n = document.createElementNS(NS, tag);
    for (const [k, v] of Object.entries(attrs)) n.setAttribute(k, v);
    if (text !== undefined) n.textContent = text;
    return n;
  }
  // bars: [{label, value}] drawn in a box, value labels on top
  function bars(target, data, opts) {
    const o = Object.assign({ width: 360, height: 150, colour: COLOURS[0] }, opts || {});
    const s = svg(o.width, o.height);
    const max = Math.max(1, ...data.map(d => d.value));
    const slot = (o.width - 10) / Math.max(1, data.length);
    data.forEach((d, i) => {
      const h = (o.height - 36) * d.value / max;
      const x = 5 + i * slot;
      s.append(node("rect", { x: x + 2, y: o.height - 18 - h, width: Math.max(1, slot - 4),
        height: h, fill: d.colour || o.colour, "data-label": d.label, "data-value": d.value }));
      s.append(node("text", { x: x + slot / 2, y: o.height - 5, "text-anchor": "middle" }, d.label));
      s.append(node("text", { x: x + slot / 2, y: o.height - 22 - h, "text-anchor": "middle" },
        d.text !== undefined ? d.text : d.value));
    });
    target.replaceChildren(s);
  }
  // lines: series [{name, points: [[x, y]]}], y in 0..yMax
  function lines(target, series, opts) {
    const o = Object.assign({ width: 360, height: 150, yMax: 1 }, opts || {});
    const s = svg(o.width, o.height);
    const xs = series.flatMap(se => se.points.map(p => p[0]));
    if (!xs.length) { target.replaceChildren(node("text", {}, "")); target.textContent = "no data yet"; return; }
    const x0 = Math.min(...xs), x1 = Math.max(...xs, x0 + 1);
    const px = x => 30 + (o.width - 40) * (x - x0) / (x1 - x0);
    const py = y => o.height - 15 - (o.height - 30) * y / o.yMax;
    [0, 0.5, 1].forEach(f => {
      s.append(node("line", { x1: 30, x2: o.width - 10, y1: py(f * o.yMax), y2: py(f * o.yMax), stroke: "#e5e7eb" }));
      s.append(node("text", { x: 2, y: py(f * o.yMax) + 4 }, (f * o.yMax).toFixed(o.yMax <= 1 ? 1 : 0)));
    });
    series.forEach((se, i) => {
      const colour = COLOURS[i % COLOURS.length];
      const pts = se.points.slice().sort((a, b) => a[0] - b[0]);
      if (pts.length > 1) s.append(node("polyline", { points: pts.map(p => `${px(p[0])},${py(p[1])}`).join(" "),
        fill: "none", stroke: colour, "stroke-width": 2 }));
      pts.forEach(p => s.append(node("circle", { cx: px(p[0]), cy: py(p[1]), r: 3, fill: colour })));
    });
    target.replaceChildren(s);
  }
  function legend(target, names) {
    target.replaceChildren(...names.map((n, i) => {
      const span = document.createElement("span");
      const swatch = document.createElement("i");
      swatch.style.background = COLOURS[i % COLOURS.length];
      span.append(swatch, n);
      return span;
    }));
  }
  return { bars, lines, legend, COLOURS };
})();
