// The correction station: the review queue of every partition, one sample at a time.
"use strict";
(() => {
  const { el, fmt } = edgewise;
  const $ = id => document.getElementById(id);
  const POLL_MS = 1500;
  let items = [];            // the fleet's queue, as last fetched
  let current = null;        // the item shown
  const skipped = new Set(); // skipped in this session
  const sent = new Map();    // id -> label, corrected here (hidden until the queue agrees)
  const history = [];        // corrections made here, newest last (undo)
  let session = 0;
  let busy = false;
  edgewise.tokenBox($("token"));

  for (let label = 0; label <= 9; label++) {
    const b = el("button", { "data-label": String(label) }, String(label));
    b.addEventListener("click", () => correct(label));
    $("keys").append(b);
  }
  $("skip").addEventListener("click", skip);
  $("undo").addEventListener("click", undo);
  $("order").addEventListener("change", () => { current = null; load(); });

  function say(text, bad) { $("message").textContent = text; $("message").className = "message " + (bad ? "bad" : "ok"); }

  function waiting() { return items.filter(i => !sent.has(i.id) && !skipped.has(i.id)); }

  async function show(item) {
    current = item;
    $("empty").hidden = !!item;
    $("item").hidden = !item;
    document.body.dataset.current = item ? item.id : "";
    if (!item) return;
    $("item-id").textContent = item.id;
    $("item-device").textContent = item.device;
    $("item-model").textContent = `${item.model} v${item.model_version}`;
    $("item-predicted").textContent = item.label;
    $("item-confidence").textContent = `${fmt(item.confidence, 3)} / ${fmt(item.margin, 3)}`;
    $("item-topk").textContent = (item.top_k || []).map(([l, p]) => `${l}: ${p.toFixed(3)}`).join("  ");
    const tabular = Array.isArray(item.row);  // a row of features instead of an image
    $("image").hidden = tabular;
    $("row").hidden = !tabular;
    if (tabular) {
      const names = (await featureNames(item)) || [];
      if (current === item) $("row").replaceChildren(el("tbody", {}, ...item.row.map((v, i) => el("tr", {},
        el("th", {}, names[i] || `feature ${i + 1}`), el("td", {}, v === null ? "missing" : String(v))))));
      return;
    }
    const url = await edgewise.imageURL(item.image);
    if (current === item) $("image").src = url;
  }

  const schemas = {};  // feature names per model version, from /api/models
  async function featureNames(item) {
    const key = `${item.model}:${item.model_version}`;
    if (!(key in schemas)) {
      try {
        for (const m of (await edgewise.getJSON("/api/models")).models)
          if (m.input_schema) schemas[`${m.name}:${m.version}`] = m.input_schema.features.map(f => f.name);
      } catch (e) { /* the row is shown without names */ }
      if (!(key in schemas)) schemas[key] = null;
    }
    return schemas[key];
  }

  function drawQueue() {
    const list = waiting();
    $("queue").replaceChildren(...list.slice(0, 40).map(i => el("li", { "data-id": i.id },
      el("span", {}, `${fmt(i.confidence, 2)}`), el("span", {}, `→ ${i.label}`),
      el("span", { class: "muted" }, `${i.device} · ${i.model}:${i.model_version}`))));
  }

  function next() {
    const list = waiting();
    if (!list.length && skipped.size && items.length) skipped.clear();  // start the skipped over
    const again = waiting();
    show(again.length ? again[0] : null);
    drawQueue();
  }

  async function load() {
    try {
      const order = $("order").value;
      const view = await edgewise.getJSON(`/api/fleet/review?limit=100&order=${order}`);
      items = view.items;
      const listed = new Set(items.map(i => i.id));
      for (const id of [...sent.keys()]) if (!listed.has(id)) sent.delete(id);  // the queue agrees
      $("pending").textContent = fmt(Math.max(0, view.queued - sent.size));
      const down = view.workers.filter(w => !w.ok);
      $("workers").textContent = down.length ? `missing: ${down.map(w => w.url).join(", ")}` : `${view.workers.length} workers answered`;
      $("workers").className = down.length ? "bad" : "";
      if (!current || sent.has(current.id) || !listed.has(current.id)) next(); else drawQueue();
      const dash = await edgewise.getJSON("/api/dashboard");
      $("corrected").textContent = fmt(dash.corrections.corrected);
    } catch (err) {
      say(String(err), true);
    }
  }

  async function correct(label) {
    if (!current || busy) return;
    busy = true;
    const item = current;
    try {
      const answer = await edgewise.postJSON("/api/corrections", { id: item.id, label });
      if (answer.status === 202) {
        sent.set(item.id, label);
        history.push(item);
        session += 1;
        $("session").textContent = String(session);
        say(`${item.id}: true label ${label} (the model said ${item.label})`);
        document.body.dataset.lastCorrection = `${item.id}:${label}`;
        next();
      } else if (answer.status === 404) {  // gone meanwhile (corrected elsewhere, evicted)
        skipped.add(item.id);
        say(`${item.id} is no longer waiting: ${answer.body.detail || ""}`, true);
        next();
      } else {
        say(`not accepted (${answer.status}): ${answer.body.error || ""} ${answer.body.detail || ""}`, true);
      }
    } finally { busy = false; }
  }

  function skip() { if (current) { skipped.add(current.id); next(); } }

  async function undo() {
    const item = history[history.length - 1];
    if (!item || busy) { say("nothing to undo", true); return; }
    busy = true;
    try {
      const answer = await edgewise.postJSON("/api/corrections", { id: item.id, label: null });
      if (answer.status === 202) {
        history.pop();
        sent.delete(item.id);
        skipped.delete(item.id);
        session -= 1;
        $("session").textContent = String(session);
        say(`${item.id}: correction taken back`);
        document.body.dataset.lastUndo = item.id;
        show(item);
      } else {
        say(`undo not accepted (${answer.status}): ${answer.body.error || ""} ${answer.body.detail || ""}`, true);
      }
    } finally { busy = false; }
  }

  document.addEventListener("keydown", event => {
    if (event.target.tagName === "INPUT" || event.target.tagName === "SELECT") return;
    if (/^[0-9]$/.test(event.key) && !event.ctrlKey && !event.metaKey) { event.preventDefault(); correct(Number(event.key)); }
    else if (event.key === "s" || event.key === "ArrowRight") { event.preventDefault(); skip(); }
    else if (event.key === "u" || event.key === "Backspace" || (event.key === "z" && (event.ctrlKey || event.metaKey))) { event.preventDefault(); undo(); }
  });

  async function poll() { await load(); setTimeout(poll, POLL_MS); }
  poll();
})();
