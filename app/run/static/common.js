// Shared by the dashboard and the correction station: requests carrying the API token
// (kept in this browser's localStorage), and small DOM helpers. No libraries.
"use strict";
const edgewise = (() => {
  const TOKEN_KEY = "edgewise.token";
  function token() { return localStorage.getItem(TOKEN_KEY) || ""; }
  function setToken(value) { localStorage.setItem(TOKEN_KEY, value); }
  function headers(extra) {
    const h = Object.assign({}, extra || {});
    if (token()) h["Authorization"] = "Bearer " + token();
    return h;
  }
  async function getJSON(path) {
    const r = await fetch(path, { headers: headers(), cache: "no-store" });
    if (!r.ok) throw new Error(path + ": HTTP " + r.status);
    return r.json();
  }
  async function postJSON(path, body) {
    const r = await fetch(path, { method: "POST", body: JSON.stringify(body),
      headers: headers({ "Content-Type": "application/json" }) });
    let answer = null;
    try { answer = await r.json(); } catch (e) { answer = { detail: "no JSON answer" }; }
    return { status: r.status, body: answer };
  }
  async function imageURL(path) {  // through fetch, so that a read token can be sent
    const r = await fetch(path, { headers: headers() });
    if (!r.ok) return "";
    return URL.createObjectURL(await r.blob());
  }
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "class") node.className = v; else node.setAttribute(k, v);
    }
    for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(String(c)));
    return node;
  }
  function fmt(value, digits) {
    if (value === null || value === undefined) return "–";
    if (typeof value !== "number") return String(value);
    return digits === undefined ? value.toLocaleString("en-US") : value.toFixed(digits);
  }
  function pct(value) { return value === null || value === undefined ? "–" : (100 * value).toFixed(1) + "%"; }
  function tokenBox(input) {
    input.value = token();
    input.addEventListener("change", () => { setToken(input.value.trim()); input.blur(); });
  }
  return { token, setToken, headers, getJSON, postJSON, imageURL, el, fmt, pct, tokenBox };
})();
