// Tiny DOM helpers: elements are built with textContent only (no HTML strings, so no
// injection from names that come out of the API).

export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

export function td(value, cls) {
  return el("td", { class: cls }, value === undefined || value === null ? "—" : value);
}

export function num(value) {
  return td(value === undefined || value === null ? "—" : Number(value).toLocaleString("en"), "num");
}

export function replaceRows(table, rows, empty) {
  const tbody = table.tBodies[0];
  const cols = table.tHead.rows[0].cells.length;
  tbody.replaceChildren(...(rows.length ? rows
    : [el("tr", {}, el("td", { colspan: cols, class: "muted" }, empty))]));
}

// A state as text first (readable without colour), styled by class.
export function state(text, kind) {
  return el("span", { class: `state state-${kind || text}` }, text);
}

export function ago(ms) {
  if (ms === null || ms === undefined) return "never";
  const s = Math.max(0, ms) / 1000;
  if (s < 1.5) return "now";
  if (s < 120) return `${s.toFixed(0)} s ago`;
  return `${(s / 60).toFixed(0)} min ago`;
}
