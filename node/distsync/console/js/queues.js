// Queues view: counts per queue, enqueue and ack rates from the stats counters between two
// polls, the partition -> consumer assignment of the hash ring, and a redrive of a queue's
// dead letters (admin) through the documented queue API.
import { api, get } from "./api.js";
import { el, num, replaceRows, td } from "./dom.js";

const MAX_DETAILS = 50;
const DLQ = ".dlq";
const prev = new Map(); // queue -> {t, enqueued, acked}

export async function loadQueues() {
  const list = await get("/v1/queues?consistency=stale");
  const names = list.queues.map((q) => q.name).slice(0, MAX_DETAILS);
  const details = await Promise.all(names.map((n) =>
    get(`/v1/queues/${encodeURIComponent(n)}?consistency=stale`).catch(() => null)));
  const t = performance.now();
  const byName = new Map();
  names.forEach((n, i) => {
    const d = details[i];
    if (!d) return;
    const p = prev.get(n);
    const dt = p ? (t - p.t) / 1000 : 0;
    d.rates = dt > 0 ? {
      enqueued: Math.max(0, d.stats.enqueued - p.enqueued) / dt,
      acked: Math.max(0, d.stats.acked - p.acked) / dt,
    } : null;
    prev.set(n, { t, enqueued: d.stats.enqueued, acked: d.stats.acked });
    byName.set(n, d);
  });
  return { queues: list.queues, details: byName };
}

// The oldest messages of a queue, left in place (GET /v1/queues/{q}/messages: no lease, no
// delivery counted, no receipt).
export async function peekQueue(queue) {
  const got = await get(`/v1/queues/${encodeURIComponent(queue)}/messages?limit=10&consistency=stale`);
  return { queue, messages: got.messages, total: got.total, at: new Date().toLocaleTimeString("en-GB") };
}

function short(value) {
  const s = JSON.stringify(value);
  return s.length > 120 ? `${s.slice(0, 119)}…` : s;
}

function peekBox(peek) {
  if (!peek) return null;
  if (peek.error) return el("p", { class: "error" }, `peek at ${peek.queue} failed: ${peek.error}`);
  return el("div", { class: "scroll" }, el("table", { id: "peek", "data-queue": peek.queue },
    el("caption", {}, `${peek.queue}: the ${peek.messages.length} oldest of ${peek.total} `
      + `message(s), read at ${peek.at} without taking them`),
    el("thead", {}, el("tr", {}, ["Id", "State", "Deliveries", "Why dead-lettered / last error",
      "Body"].map((h) => el("th", { scope: "col" }, h)))),
    el("tbody", {}, peek.messages.length ? peek.messages.map((m) => el("tr", { "data-id": m.id },
      el("th", { scope: "row" }, m.id), td(m.state.replace("_", " ")), num(m.deliveries),
      td(m.dead_letter ? `from ${m.dead_letter.queue} after ${m.dead_letter.deliveries} `
        + `deliveries: ${m.dead_letter.error}` : m.error || ""),
      el("td", {}, el("code", {}, short(m.body)))))
      : [el("tr", {}, el("td", { colspan: 5, class: "muted" }, "empty"))])));
}

function rate(d, key) {
  return td(d && d.rates ? d.rates[key].toFixed(1) : "—", "num");
}

// Move up to 100 dead letters back: lease them from q.dlq, enqueue their bodies into q in one
// request, then ack them in the DLQ. A failure before the ack leaves them in the DLQ (they come
// back after the lease); one after the enqueue can at worst deliver a message twice.
export async function redrive(queue) {
  const dlq = queue + DLQ;
  const consumer = "console-redrive";
  const got = await api("POST", `/v1/queues/${encodeURIComponent(dlq)}/dequeue`,
    { consumer, max: 100, visibility_ms: 30000 });
  try {
    if (!got.messages.length) return { moved: 0 };
    const messages = got.messages.map((m) => {
      const out = { body: m.body };
      if (m.key !== undefined && m.key !== null) out.key = m.key;
      if (m.headers) out.headers = m.headers;
      return out;
    });
    try {
      await api("POST", `/v1/queues/${encodeURIComponent(queue)}/messages`, { messages });
    } catch (e) {
      await api("POST", `/v1/queues/${encodeURIComponent(dlq)}/nack`,
        { receipts: got.messages.map((m) => m.receipt) }).catch(() => null);
      throw e;
    }
    await api("POST", `/v1/queues/${encodeURIComponent(dlq)}/ack`,
      { receipts: got.messages.map((m) => m.receipt) });
    return { moved: got.messages.length };
  } finally {
    await api("DELETE", `/v1/queues/${encodeURIComponent(dlq)}/consumers/${consumer}`).catch(() => null);
  }
}

export function renderQueues(data, ctx) {
  const rows = data.queues.map((q) => {
    const d = data.details.get(q.name);
    const dead = d ? d.dead_lettered : null;
    return el("tr", { "data-queue": q.name },
      el("th", { scope: "row" }, el("button", {
        type: "button", class: "link", "aria-pressed": ctx.selected === q.name ? "true" : "false",
        onclick: () => ctx.select(q.name),
      }, q.name)),
      el("td", { class: "num", "data-count": "ready" }, String(q.ready)),
      el("td", { class: "num", "data-count": "in_flight" }, String(q.in_flight)),
      el("td", { class: "num", "data-count": "delayed" }, String(q.delayed)),
      el("td", { class: "num", "data-count": "dead_lettered" }, dead === null ? "—" : String(dead)),
      num(q.consumers), rate(d, "enqueued"), rate(d, "acked"));
  });
  replaceRows(document.getElementById("queues"), rows, "no queue yet");

  const box = document.getElementById("queue-detail");
  const d = ctx.selected ? data.details.get(ctx.selected) : null;
  if (!d) {
    box.replaceChildren(el("p", { class: "muted" },
      data.queues.length ? "Choose a queue to see its partitions and consumers." : ""));
    return;
  }
  const parts = el("table", { id: "partitions" },
    el("caption", {}, `${d.name}: partitions and their consumer (hash ring over consumer ids)`),
    el("thead", {}, el("tr", {}, ["Partition", "Consumer", "Ready", "In flight"].map((h) =>
      el("th", { scope: "col" }, h)))),
    el("tbody", {}, d.partitions.map((p) => el("tr", {},
      el("th", { scope: "row" }, String(p.partition)), td(p.consumer || "unassigned"),
      num(p.ready), num(p.in_flight)))));
  const consumers = el("ul", {}, d.consumers.length ? d.consumers.map((c) => el("li", {},
    `${c.id}: partitions ${c.partitions.join(", ") || "none"}, ${c.in_flight} in flight`))
    : [el("li", { class: "muted" }, "no consumer registered")]);
  const dlqName = d.name.endsWith(DLQ) ? null : d.dead_letter_queue;
  const dlqCount = dlqName && data.queues.find((q) => q.name === dlqName);
  const redriveBox = dlqName && ctx.isAdmin ? el("p", { class: "admin-only" },
    el("button", {
      type: "button", class: "danger", "data-action": "redrive", "data-queue": d.name,
      onclick: () => ctx.act(
        `Move up to 100 messages from ${dlqName} back into ${d.name}? They are delivered again `
        + "with new ids.",
        () => redrive(d.name), (r) => `${r.moved} message(s) moved from ${dlqName} to ${d.name}`),
    }, `Redrive ${dlqName} → ${d.name}`)) : null;
  const peekButtons = el("p", {}, [d.name, ...(dlqName ? [dlqName] : [])].map((name) =>
    el("button", { type: "button", "data-peek": name, onclick: () => ctx.doPeek(name) },
      `Peek at ${name}`)));
  box.replaceChildren(
    el("h3", {}, `Queue ${d.name}`),
    el("p", {}, `${d.messages} messages, ${d.bytes} bytes; options: partitions ${d.options.partitions}, `
      + `visibility ${d.options.visibility_ms} ms, max deliveries ${d.options.max_deliveries}; `
      + `dead-letter queue ${dlqName || "none yet"}${dlqCount ? ` (${dlqCount.messages} messages)` : ""}.`),
    el("p", {}, `Totals: enqueued ${d.stats.enqueued}, acked ${d.stats.acked}, redelivered `
      + `${d.stats.redelivered}, dead-lettered ${d.stats.dead_lettered}.`),
    el("div", { class: "scroll" }, parts), el("h4", {}, "Consumers"), consumers,
    el("h4", {}, "Messages"), peekButtons,
    ...[peekBox(ctx.peek && (ctx.peek.queue === d.name || ctx.peek.queue === dlqName)
      ? ctx.peek : null), redriveBox].filter(Boolean));
}
