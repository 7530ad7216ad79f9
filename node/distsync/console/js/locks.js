// Locks view: holders (mode, session, fencing token, lease remaining), FIFO waiters, the
// wait-for graph with the latest refused cycle, and the sessions with their keep-alives.
import { get } from "./api.js";
import { el, replaceRows, td } from "./dom.js";
import { buildGraph, drawGraph } from "./graph.js";

const MAX_SESSIONS = 50;
const MAX_LOCKS = 100;

function lease(info) {
  if (!info || info.lease_remaining_ms === undefined) return "?";
  if (info.lease_remaining_ms === null) return "(new leader: full TTL)";
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
    .filter((lk) => lk && (lk.holders.length || lk.waiters.length));
  // Sessions and their leases live on the leader (the request is forwarded there); without
  // a leader there is nothing to ask.
  const sessions = new Map();
  if (leaderKnown) {
    const page = await get(`/v1/sessions?limit=${MAX_SESSIONS}`);
    for (const s of page.sessions) sessions.set(s.session, s);
  }
  return { locks, more: list.locks.length > MAX_LOCKS || Boolean(list.next),
    recent: report.recent || [], cycles: report.cycles, sessions };
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

  const srows = [...data.sessions.values()].map((s) => el("tr", { "data-session": s.session },
    el("th", { scope: "row" }, s.session), td(s.name || ""),
    td(`${(s.ttl_ms / 1000).toFixed(0)} s`, "num"), td(lease(s), "num"),
    td(s.holds.join(", ") || "none"), td(s.waits.join(", ") || "none")));
  replaceRows(document.getElementById("sessions"), srows, "no open session (or no leader to ask)");
}

