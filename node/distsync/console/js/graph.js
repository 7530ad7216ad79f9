// The wait-for graph as SVG: sessions (circles) and locks (boxes) on a circle, "waits" edges
// from a session to the lock it waits for, "held by" edges from a lock to its holders. The
// cycle of the latest refused acquire is added (its refused edge included) and marked.
const SVG = "http://www.w3.org/2000/svg";

function svg(tag, attrs = {}, text) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  if (text !== undefined) node.textContent = text;
  return node;
}

// The graph's nodes and edges from GET /v1/locks and the latest deadlock record.
export function buildGraph(locks, deadlock) {
  const nodes = new Map();
  const ring = []; // the refused cycle's nodes in cycle order
  const edges = new Map();
  const addNode = (id, kind) => {
    const key = `${kind}:${id}`;
    if (!nodes.has(key)) nodes.set(key, { key, id, kind, cycle: false });
    return nodes.get(key);
  };
  const addEdge = (from, to, label) => {
    const key = `${from.key}>${to.key}`;
    if (!edges.has(key)) edges.set(key, { key, from, to, label, cycle: false });
    return edges.get(key);
  };
  for (const lk of locks) {
    const lock = addNode(lk.lock, "lock");
    for (const h of lk.holders) addEdge(lock, addNode(h.session, "session"), "held by");
    for (const w of lk.waiters) addEdge(addNode(w.session, "session"), lock, "waits");
  }
  if (deadlock) {
    const n = deadlock.cycle.length;
    for (let i = 0; i < n; i++) {
      ring.push(addNode(deadlock.cycle[i], "session"), addNode(deadlock.locks[i], "lock"));
    }
    for (let i = 0; i < n; i++) {
      const s = addNode(deadlock.cycle[i], "session");
      const lock = addNode(deadlock.locks[i], "lock");
      const next = addNode(deadlock.cycle[(i + 1) % n], "session");
      s.cycle = lock.cycle = next.cycle = true;
      addEdge(s, lock, i === 0 ? "waits (refused)" : "waits").cycle = true;
      addEdge(lock, next, "held by").cycle = true;
    }
  }
  return { nodes: layoutOrder([...nodes.values()], [...edges.values()], ring), edges: [...edges.values()] };
}

// Neighbours next to each other on the circle (a breadth-first walk, the refused cycle's
// nodes first and in cycle order), so few edges cross.
function layoutOrder(nodes, edges, ring) {
  const near = new Map(nodes.map((n) => [n.key, []]));
  for (const e of edges) {
    near.get(e.from.key).push(e.to);
    near.get(e.to.key).push(e.from);
  }
  const out = [];
  const seen = new Set();
  const visit = (start) => {
    const queue = [start];
    while (queue.length) {
      const n = queue.shift();
      if (seen.has(n.key)) continue;
      seen.add(n.key);
      out.push(n);
      queue.push(...near.get(n.key).filter((m) => !seen.has(m.key)));
    }
  };
  for (const n of ring) {
    if (!seen.has(n.key)) { seen.add(n.key); out.push(n); }
  }
  for (const n of out.slice()) for (const m of near.get(n.key)) visit(m);
  for (const n of nodes) visit(n);
  return out;
}

export function drawGraph(container, graph) {
  const { nodes, edges } = graph;
  if (!nodes.length) {
    container.replaceChildren(document.createTextNode("No lock is held or awaited."));
    return;
  }
  const w = 640, h = 420, cx = w / 2, cy = h / 2;
  const r = nodes.length === 1 ? 0 : Math.min(cx, cy) - 60;
  nodes.forEach((n, i) => {
    const a = (2 * Math.PI * i) / nodes.length - Math.PI / 2;
    n.x = cx + r * Math.cos(a);
    n.y = cy + r * Math.sin(a);
  });
  const root = svg("svg", {
    viewBox: `0 0 ${w} ${h}`, role: "img",
    "aria-label": `Wait-for graph: ${nodes.length} nodes, ${edges.length} edges`
      + (edges.some((e) => e.cycle) ? ", with a refused deadlock cycle" : ""),
  });
  const defs = svg("defs");
  for (const [id, color] of [["arrow", "#555"], ["arrow-cycle", "#a00000"]]) {
    const m = svg("marker", { id, viewBox: "0 0 10 10", refX: 10, refY: 5, markerWidth: 7,
      markerHeight: 7, orient: "auto-start-reverse" });
    m.append(svg("path", { d: "M 0 0 L 10 5 L 0 10 z", fill: color }));
    defs.append(m);
  }
  root.append(defs);
  const radius = 22;
  for (const e of edges) {
    const dx = e.to.x - e.from.x, dy = e.to.y - e.from.y;
    const len = Math.hypot(dx, dy) || 1;
    const ux = dx / len, uy = dy / len;
    const g = svg("g", { class: e.cycle ? "edge cycle" : "edge", "data-from": e.from.id,
      "data-to": e.to.id, "data-label": e.label });
    g.append(svg("line", { x1: e.from.x + ux * radius, y1: e.from.y + uy * radius,
      x2: e.to.x - ux * (radius + 2), y2: e.to.y - uy * (radius + 2),
      "marker-end": `url(#${e.cycle ? "arrow-cycle" : "arrow"})` }));
    const mx = (e.from.x + e.to.x) / 2 - uy * 10, my = (e.from.y + e.to.y) / 2 + ux * 10;
    g.append(svg("text", { x: mx, y: my, "text-anchor": "middle" },
      e.cycle ? `${e.label} · cycle` : e.label));
    root.append(g);
  }
  for (const n of nodes) {
    const g = svg("g", { class: `${n.kind}${n.cycle ? " in-cycle" : ""}`, "data-id": n.id });
    if (n.kind === "session") g.append(svg("circle", { cx: n.x, cy: n.y, r: radius }));
    else g.append(svg("rect", { x: n.x - 34, y: n.y - 16, width: 68, height: 32, rx: 3 }));
    const label = n.id.length > 14 ? `${n.id.slice(0, 13)}…` : n.id;
    g.append(svg("text", { x: n.x, y: n.y + radius + 14, "text-anchor": "middle" },
      `${n.kind === "lock" ? "lock " : "session "}${label}`));
    g.append(svg("title", {}, `${n.kind} ${n.id}${n.cycle ? " (in the refused cycle)" : ""}`));
    root.append(g);
  }
  container.replaceChildren(root);
}
