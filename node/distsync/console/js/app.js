// The console's controller: sign-in, the poll loop, views, the banner and admin actions.
import { api, get, getToken, setToken } from "./api.js";
import { renderCache } from "./cache.js";
import { renderCluster, trackLeader } from "./cluster.js";
import { el } from "./dom.js";
import { loadLocks, renderLocks } from "./locks.js";
import { loadQueues, peekQueue, renderQueues } from "./queues.js";

const VIEWS = ["cluster", "locks", "queues", "cache"];
const params = new URLSearchParams(location.search);
const INTERVAL_MS = Math.max(250, Number(params.get("interval_ms")) || 1000);
const $ = (id) => document.getElementById(id);

const ui = {
  role: null, signedIn: false, selectedQueue: null, peek: null, busy: false, timer: null,
  memo: { leader: undefined, reachable: {} }, events: [],
};

function view() {
  const v = location.hash.slice(1);
  return VIEWS.includes(v) ? v : "cluster";
}

function showView() {
  const v = view();
  for (const s of document.querySelectorAll("main > section")) s.hidden = s.dataset.view !== v;
  for (const a of document.querySelectorAll("#tabs a")) {
    if (a.dataset.view === v) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
}

function addEvent(text) {
  const at = new Date().toLocaleTimeString("en-GB");
  ui.events.unshift(`${at} ${text}`);
  ui.events.length = Math.min(ui.events.length, 50);
  $("events").replaceChildren(...ui.events.map((e) => el("li", {}, e)));
}

function banner(text) {
  const b = $("banner");
  b.hidden = !text;
  b.textContent = text || "";
}

function confirmDialog(text) {
  const d = $("confirm");
  $("confirm-text").textContent = text;
  return new Promise((resolve) => {
    d.addEventListener("close", () => resolve(d.returnValue === "ok"), { once: true });
    d.returnValue = "";
    d.showModal();
  });
}

// An admin action: confirm, call the documented API, say what happened.
async function act(question, call, describe) {
  if (!(await confirmDialog(question))) return;
  const out = $("action-result");
  out.textContent = "working…";
  try {
    out.textContent = describe(await call());
    ui.peek = null; // what it showed may have changed
    addEvent(out.textContent);
  } catch (e) {
    out.textContent = `failed: ${e.message}`;
  }
  poll();
}

const ctx = {
  get isAdmin() { return ui.role === "admin"; },
  get selected() { return ui.selectedQueue; },
  get peek() { return ui.peek; },
  select(name) { ui.selectedQueue = name; ui.peek = null; poll(); },
  async doPeek(name) {
    try {
      ui.peek = await peekQueue(name);
    } catch (e) {
      ui.peek = { queue: name, error: e.message };
    }
    poll();
  },
  act,
};

async function poll() {
  if (ui.busy || !ui.signedIn) return;
  ui.busy = true;
  try {
    const overview = await get("/v1/cluster/nodes");
    trackLeader(overview, ui.memo, addEvent);
    const via = overview.nodes.find((n) => n.id === overview.via);
    $("whereami").textContent = `node ${overview.via}${via ? ` (${via.addr})` : ""}`;
    if (!overview.leader) {
      banner(`node ${overview.via} has lost the leader (an election is under way or too few `
        + "members answer); what is shown is its last applied state.");
    } else if (overview.nodes.some((n) => !n.reachable)) {
      banner(`member(s) not answering: ${overview.nodes.filter((n) => !n.reachable).map((n) => n.id).join(", ")}`);
    } else {
      banner("");
    }
    const v = view();
    if (v === "cluster") renderCluster(overview, ctx);
    else if (v === "cache") renderCache(overview);
    else if (v === "locks") {
      // Sessions are read on the leader: ask only while it answers this node.
      const leaderUp = overview.nodes.some((n) => n.id === overview.leader && n.reachable);
      renderLocks(await loadLocks(leaderUp));
    }
    else if (v === "queues") renderQueues(await loadQueues(), ctx);
    $("updated").textContent = new Date().toLocaleTimeString("en-GB");
    document.body.dataset.updated = String(Date.now());
  } catch (e) {
    if (e.status === 401) {
      signedOut("the token was refused (401); sign in again");
    } else {
      banner(`cannot read from node: ${e.message}`);
    }
  } finally {
    ui.busy = false;
  }
}

function signedOut(message) {
  ui.signedIn = false;
  clearInterval(ui.timer);
  ui.timer = null;
  $("main").hidden = $("tabs").hidden = true;
  $("login").hidden = false;
  $("login-error").textContent = message || "";
  $("logout").hidden = true;
}

async function start() {
  const who = await api("GET", "/v1/auth/whoami");
  if (who.auth && !who.role) {
    signedOut(getToken() ? "that token is not valid on this node" : "");
    return;
  }
  ui.role = who.role;
  ui.signedIn = true;
  document.body.classList.toggle("is-admin", who.role === "admin");
  $("whoami").textContent = who.auth ? `signed in: ${who.role} role${who.role === "admin" ? "" : " (read-only view)"}`
    : "client authentication is off (development cluster)";
  $("logout").hidden = !who.auth;
  $("login").hidden = true;
  $("main").hidden = $("tabs").hidden = false;
  showView();
  await poll();
  ui.timer = setInterval(poll, INTERVAL_MS);
}

$("interval").textContent = String(INTERVAL_MS / 1000);
$("login").addEventListener("submit", (ev) => {
  ev.preventDefault();
  setToken($("token").value.trim());
  $("token").value = "";
  start();
});
$("logout").addEventListener("click", () => {
  setToken("");
  document.body.classList.remove("is-admin");
  signedOut("");
});
window.addEventListener("hashchange", () => {
  $("action-result").textContent = "";
  showView();
  poll();
});
start().catch((e) => banner(`cannot reach this node: ${e.message}`));
