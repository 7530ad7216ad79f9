// Cluster view: members with role, term, commit/applied, lag and last contact; the Raft
// configuration; leader changes as events; admin actions through the documented API.
import { api } from "./api.js";
import { ago, el, num, replaceRows, state, td } from "./dom.js";

export function leaderLag(overview) {
  const lead = overview.nodes.find((n) => n.reachable && n.status.role === "leader");
  return lead ? lead.status : null;
}

function actions(n, overview, ctx) {
  if (!ctx.isAdmin) return td("");
  const buttons = [];
  const isLeader = n.reachable && n.status.role === "leader";
  if (n.voter && !isLeader && n.reachable) {
    buttons.push(el("button", {
      type: "button", "data-action": "transfer", "data-node": n.id,
      onclick: () => ctx.act(
        `Transfer leadership to ${n.id}? Writes pause for a moment while it takes over.`,
        () => api("POST", "/v1/cluster/transfer-leader", { to: n.id }),
        (r) => `leadership transferred: the leader is now ${r.leader}`),
    }, `Make ${n.id} leader`));
  }
  buttons.push(el("button", {
    type: "button", class: "danger", "data-action": "remove", "data-node": n.id,
    onclick: () => ctx.act(
      `Remove ${n.id} (${n.addr}) from the cluster? It stops being a member; to bring it back `
      + "it must be added again (POST /v1/cluster/members).",
      () => api("DELETE", `/v1/cluster/members/${encodeURIComponent(n.id)}`),
      (r) => `${n.id} removed; members now ${r.members.map((m) => m.id).join(", ")}`),
  }, `Remove ${n.id}`));
  return el("td", { class: "admin-only" }, ...buttons);
}

export function renderCluster(overview, ctx) {
  const via = overview.nodes.find((n) => n.id === overview.via);
  const viaStatus = via && via.reachable ? via.status : null;
  document.getElementById("leader").textContent = overview.leader || "none (no leader known)";
  document.getElementById("term").textContent = overview.term;
  document.getElementById("voters").textContent = viaStatus ? viaStatus.voters.join(", ") || "—" : "?";
  document.getElementById("learners").textContent = viaStatus ? viaStatus.learners.join(", ") || "none" : "?";
  const lead = leaderLag(overview);
  const rows = overview.nodes.map((n) => {
    const kind = n.voter ? "voter" : "learner";
    if (!n.reachable) {
      return el("tr", { "data-node": n.id },
        el("th", { scope: "row" }, n.id), el("td", {}, state("down", "down"), " ", (n.error || "").slice(0, 60)),
        td(kind), td(null), td(null), td(null), td(null),
        td(ago(n.last_seen_ms === null ? null : overview.now_ms - n.last_seen_ms)),
        actions(n, overview, ctx));
    }
    const s = n.status;
    let lag = null;
    if (lead && lead.progress && lead.progress[n.id]) {
      lag = Math.max(0, lead.last_index - lead.progress[n.id].match);
    } else if (lead) {
      lag = Math.max(0, lead.last_index - s.applied);
    }
    const role = s.role.replace("_", "-");
    return el("tr", { "data-node": n.id, "data-role": s.role },
      el("th", { scope: "row" }, n.id, n.id === overview.via ? " (this node)" : ""),
      el("td", {}, state(role, s.role === "leader" ? "leader" : "other"),
        s.ready ? "" : " not ready"),
      td(kind), num(s.term), num(s.commit), num(s.applied), num(lag),
      td(ago(overview.now_ms - n.last_seen_ms)), actions(n, overview, ctx));
  });
  replaceRows(document.getElementById("members"), rows, "no members");
}

// Leader changes as the console saw them, newest first.
export function trackLeader(overview, memo, addEvent) {
  const leader = overview.leader || null;
  if (memo.leader === undefined) {
    addEvent(leader ? `leader is ${leader} (term ${overview.term})` : "no leader known");
  } else if (leader !== memo.leader) {
    if (memo.leader && !leader) addEvent(`leader ${memo.leader} lost (term ${overview.term})`);
    else if (!memo.leader) addEvent(`new leader ${leader} (term ${overview.term})`);
    else addEvent(`leader changed: ${memo.leader} → ${leader} (term ${overview.term})`);
  }
  for (const n of overview.nodes) {
    const was = memo.reachable[n.id];
    if (was !== undefined && was !== n.reachable) {
      addEvent(n.reachable ? `${n.id} answers again` : `${n.id} stopped answering`);
    }
    memo.reachable[n.id] = n.reachable;
  }
  memo.leader = leader;
}
