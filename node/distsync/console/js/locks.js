// Locks view: holders (mode, session, fencing token, lease remaining), FIFO waiters, the
// wait-for graph with the latest refused cycle, and the sessions with their keep-alives.
import { get } from "./api.js";
import { el, replaceRows, td } from "./dom.js";
import { buildGraph, drawGraph } from "./graph.js";

const MAX_SESSIONS = 50;
const MAX_LOCKS = 100;

function lease(info) {
  if (!info) return "?";
  if (info.lease_remaining_ms === null || info.lease_remaining_ms === undefined) return "(leader starting)";
  return `${(info.lease_remaining_ms / 1000).toFixed(1)} s`;
}

export async function loadLocks(leaderKnown) {
  const [list, report] = await Promise.all([
    get("/v1/locks?consistency=stale&limit=1000"),
    get("/v1/locks/deadlocks?consistency=stale"),
  ]);
  // The list carries counts; each lock's holders and waiters come from its own read.
  const locks = (await Promise.all(list.locks.slice(0, MAX_LOCKS).map((lk) =>
    get(`/v1/locks/${encodeURIComponent(lk.lock)}?consistency=stale`).catch(() => null))))
    .filter(Boolean);
  const ids = new Set();
  for (const lk of locks) {
    for (const h of lk.holders) ids.add(h.session);
    for (const w of lk.waiters) ids.add(w.session);
  }
  // A session's lease lives on the leader only; without a leader there is nothing to ask.
  const sessions = new Map();
  if (leaderKnown) {
    const wanted = [...ids].slice(0, MAX_SESSIONS);
    const got = await Promise.all(wanted.map((id) =>
      get(`/v1/sessions/${encodeURIComponent(id)}`).catch(() => null)));
    wanted.forEach((id, i) => sessions.set(id, got[i]));
  }
  return { locks, more: list.locks.length > MAX_LOCKS || Boolean(list.next), recent: report.recent || [], cycles: report.cycles, ids, sessions };
}

export function renderLocks(data) {
  const rows = data.locks.map((lk) => el("tr", { "data-lock": lk.lock },
    el("th", { scope: "row" }, lk.lock),
    td(lk.mode || "free"),
    el("td", {}, el("ul", { class: "plain" }, lk.holders.map((h) => el("li", {
      "data-holder": h.session,
    }, `holder ${h.session} · ${h.mode} · token ${h.token} · lease ${lease(data.sessions.get(h.session))}`)))),
    el("td", {}, lk.waiters.length ? el("ol", {}, lk.waiters.map((w) => el("li", {
      "data-waiter": w.session,
    }, `waiter ${w.session} · ${w.mode}${w.upgrade ? " (upgrade)" : ""} · wait ${w.wait_id}`))) : "none")));
  if (data.more) {
    rows.push(el("tr", {}, el("td", { colspan: 4, class: "muted" },
      `only the first ${MAX_LOCKS} locks are shown (GET /v1/locks pages through all)`)));
  }
  replaceRows(document.getElementById("locks"), rows, "no lock is held");

  const latest = data.recent.length ? data.recent[data.recent.length - 1] : null;
  drawGraph(document.getElementById("graph"), buildGraph(data.locks, latest));

  const dl = document.getElementById("deadlocks");
  const items = [...data.recent].reverse().map((d) => {
    const steps = d.cycle.map((s, i) => `${s} waits for ${d.locks[i]} held by ${d.cycle[(i + 1) % d.cycle.length]}`);
    return el("li", { "data-index": d.index, "data-cycle": d.cycle.join(" ") },
      `log index ${d.index}: ${d.session} asked for ${d.lock}, refused (deadlock). Cycle: `,
      steps.join("; "), ".");
  });
  for (const c of data.cycles) {
    items.unshift(el("li", { class: "error" }, `CYCLE IN THE GRAPH (should never happen): ${c.sessions.join(" → ")}`));
  }
  dl.replaceChildren(...(items.length ? items : [el("li", { class: "muted" }, "none since this node started")]));

  const srows = [...data.ids].slice(0, MAX_SESSIONS).map((id) => {
    const s = data.sessions.get(id);
    return el("tr", { "data-session": id }, el("th", { scope: "row" }, id),
      td(s ? s.name || "" : null),
      td(s ? `${(s.ttl_ms / 1000).toFixed(0)} s` : null, "num"),
      td(lease(s), "num"),
      td(s ? (s.holds || []).map((h) => h.lock || h).join(", ") : null),
      td(s ? (s.waits || []).map((w) => w.lock || w).join(", ") : null));
  });
  replaceRows(document.getElementById("sessions"), srows, "no session holds or waits for a lock");
}

