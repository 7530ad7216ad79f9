// Cache view: each node's hit ratio, lines per MESI state, invalidations and backend health.
import { el, num, replaceRows, state, td } from "./dom.js";

export function renderCache(overview) {
  const rows = overview.nodes.map((n) => {
    if (!n.reachable || !n.cache) {
      return el("tr", { "data-node": n.id }, el("th", { scope: "row" }, n.id),
        el("td", { colspan: 8 }, state("down", "down"), " ", n.error || "no answer"));
    }
    const c = n.cache;
    const backend = c.backend_errors ? state(`${c.backend} · ${c.backend_errors} errors`, "lost")
      : state(`${c.backend} · no errors`, "ok");
    return el("tr", { "data-node": n.id }, el("th", { scope: "row" }, n.id),
      td(`${(c.hit_ratio * 100).toFixed(1)} %`, "num"), num(c.hits), num(c.misses),
      td(`${c.states.M} / ${c.states.E} / ${c.states.S}`, "num"), num(c.bytes),
      td(`${c.invalidations_sent} / ${c.invalidations_received}`, "num"), num(c.evictions),
      el("td", {}, backend));
  });
  replaceRows(document.getElementById("cache"), rows, "no members");
}
