// The dynakv console: polls /v1/console (every member's report, gathered by the node serving
// this page) and draws it. Plain JavaScript and inline SVG, no build step. Every text from
// the cluster goes through textContent, never innerHTML: member names are operators' input.
"use strict";

const POLL_MS = 2000;
const HISTORY_SECONDS = 300;
const SVG = "http://www.w3.org/2000/svg";
const PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2",
                 "#17becf", "#bcbd22", "#7f7f7f", "#d62728", "#393b79", "#637939"];
// node -> Map(t -> load sample): kept here as well as on the nodes, so a node that stops
// answering keeps its line up to the moment it stopped.
const loadHistory = new Map();

function el(tag, attrs = {}, ...children) {
  const node = tag.startsWith("svg:") ? document.createElementNS(SVG, tag.slice(4))
                                      : document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value !== null && value !== undefined) node.setAttribute(name, value);
  }
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.append(typeof child === "string" || typeof child === "number" ? String(child) : child);
  }
  return node;
}

function colours(members) {
  const names = members.map(m => m.name).sort();
  return new Map(names.map((name, i) => [name, PALETTE[i % PALETTE.length]]));
}

function duration(seconds) {
  if (seconds === null || seconds === undefined) return "-";
  if (seconds < 120) return `${Math.round(seconds)} s`;
  if (seconds < 7200) return `${Math.round(seconds / 60)} min`;
  if (seconds < 172800) return `${(seconds / 3600).toFixed(1)} h`;
  return `${(seconds / 86400).toFixed(1)} d`;
}

function bar(value, max, label) {
  return el("div", {}, el("progress", {value: String(value), max: String(max || 1)}),
            el("span", {class: "sub"}, label));
}

function renderHeader(view) {
  const summary = document.getElementById("summary");
  const up = view.members.filter(m => m.status === "up" && m.reachable).length;
  summary.textContent = `cluster ${view.cluster} · ${up} of ${view.members.length} members up · ` +
    `ring epoch ${view.epoch}, ${view.ring.size} partitions · claimant ${view.claimant} · ` +
    `served by ${view.serving} · ${new Date(view.generated_at * 1000).toLocaleTimeString()}`;
  document.title = `dynakv ${view.cluster} (${up}/${view.members.length} up)`;
}

function renderAlerts(view) {
  document.getElementById("alerts").replaceChildren(...view.alerts.map(a => el("li", {}, a)));
}

function reapingCell(report) {
  const r = report.reaping;
  if (r.blocked) return el("span", {class: "warn"}, `waits: ${r.blocked}`,
                           el("span", {class: "sub"}, `${r.reaped} reaped`));
  return el("span", {}, "running", el("span", {class: "sub"}, `${r.reaped} reaped, ${r.scanned} scanned`));
}

function memberRow(m, colour) {
  const down = m.status === "down";
  const cls = [down ? "down" : "", m.reachable ? "" : "unreachable"].join(" ").trim();
  const row = el("tr", {class: cls || null, "data-member": m.name, "data-status": m.status,
                        "data-reachable": String(m.reachable)});
  const name = el("td", {}, el("span", {class: "swatch", style: `background:${colour}`}),
                  el("a", {href: m.console_url}, m.name));
  const status = el("td", {}, el("span", {class: `badge ${m.status}`}, m.status));
  if (!m.reachable && m.error) status.append(el("span", {class: "sub error"}, m.error));
  const cells = [name, status, el("td", {}, `${m.datacenter}/${m.rack}`),
    el("td", {}, m.node_addr, el("span", {class: "sub"}, m.http_addr)),
    el("td", {}, `${m.partitions}`, el("span", {class: "sub"}, `${(100 * m.share).toFixed(1)}%`))];
  const r = m.report;
  if (!r) {
    cells.push(el("td", {colspan: "6", class: "quiet"}, "no report from this member"));
  } else {
    const aae = r.anti_entropy;
    const delivered = r.hints_delivered, pending = r.hints_pending;
    const sees = r.down_peers.length ? el("span", {class: "sub error"},
                                          `sees down: ${r.down_peers.join(", ")}`) : null;
    cells.push(
      el("td", {}, `${r.keys}`),
      el("td", {"data-hints": String(pending)}, bar(delivered, delivered + pending,
         `${pending} pending, ${delivered} delivered` + (r.hints_dropped ? `, ${r.hints_dropped} dropped` : ""))),
      el("td", {}, `${r.transfers_pending} pending`, el("span", {class: "sub"},
         `${r.transfers.length} pulling now`)),
      el("td", {}, bar(aae.trees_built, aae.trees_wanted,
         `${aae.trees_built}/${aae.trees_wanted} built · ${aae.exchanges} exchanges, ` +
         `${aae.keys_repaired} keys repaired`)),
      el("td", {}, reapingCell(r)),
      el("td", {}, duration(r.uptime_seconds), sees));
  }
  row.append(...cells);
  return row;
}

function renderMembers(view, palette) {
  const body = document.querySelector("#members tbody");
  body.replaceChildren(...view.members.map(m => memberRow(m, palette.get(m.name))));
}

function arc(cx, cy, r0, r1, a0, a1) {
  const p = (r, a) => `${(cx + r * Math.sin(a)).toFixed(2)} ${(cy - r * Math.cos(a)).toFixed(2)}`;
  return `M ${p(r1, a0)} A ${r1} ${r1} 0 0 1 ${p(r1, a1)} L ${p(r0, a1)} ` +
         `A ${r0} ${r0} 0 0 0 ${p(r0, a0)} Z`;
}

function renderRing(view, palette) {
  const {size, owners, next_owners: next, moving} = view.ring;
  const down = new Set(view.members.filter(m => m.status === "down" || !m.reachable).map(m => m.name));
  const svg = el("svg:svg", {viewBox: "0 0 200 200", role: "img",
                             "aria-label": `ring of ${size} partitions`});
  const step = 2 * Math.PI / size, gap = size > 128 ? 0 : step * 0.06;
  const movingSet = new Set(moving);
  owners.forEach((owner, i) => {
    const title = el("svg:title", {}, `partition ${i}: ${owner}` +
                     (movingSet.has(i) ? ` → ${next[i]}` : "") + (down.has(owner) ? " (down)" : ""));
    svg.append(el("svg:path", {d: arc(100, 100, 58, 84, i * step + gap, (i + 1) * step - gap),
      fill: palette.get(owner) || "#ccc", class: `partition${down.has(owner) ? " down-owner" : ""}`,
      "data-partition": String(i), "data-owner": owner}, title));
    if (movingSet.has(i)) {
      svg.append(el("svg:path", {d: arc(100, 100, 87, 96, i * step + gap, (i + 1) * step - gap),
        fill: palette.get(next[i]) || "#ccc", class: "moving", "data-partition": String(i),
        "data-next-owner": next[i]}, el("svg:title", {}, `partition ${i} moving to ${next[i]}`)));
    }
  });
  svg.append(el("svg:text", {x: "100", y: "96", "text-anchor": "middle", "font-size": "13"},
                `${size} partitions`));
  svg.append(el("svg:text", {x: "100", y: "113", "text-anchor": "middle", "font-size": "10",
                             fill: "#6b7280"},
                moving.length ? `${moving.length} moving (outer ring)` : "no moves pending"));
  document.getElementById("ring").replaceChildren(svg);
  const counts = new Map();
  owners.forEach(o => counts.set(o, (counts.get(o) || 0) + 1));
  document.getElementById("legend").replaceChildren(...view.members.map(m =>
    el("li", {}, el("span", {class: "swatch", style: `background:${palette.get(m.name)}`}),
       `${m.name}: ${counts.get(m.name) || 0}` + (down.has(m.name) ? " (down)" : ""))));
}

function renderTransfers(view) {
  const box = document.getElementById("transfers");
  if (!view.transfers.length) {
    const pending = view.transfers_pending;
    box.replaceChildren(el("p", {class: "quiet"}, pending
      ? `${pending} partition transfers pending towards the next ring; none pulling right now`
      : "no transfers in progress"));
    return;
  }
  box.replaceChildren(...view.transfers.map(t => el("div", {class: "transfer",
      "data-partition": String(t.partition), "data-node": t.node},
    el("div", {}, `partition ${t.partition} → ${t.node}`,
       el("span", {class: "sub"}, `from ${t.from ?? "-"} (source ${Math.min(t.sources_done + 1, t.sources)} ` +
          `of ${t.sources}) · ${t.keys} keys, ${(t.bytes / 1e6).toFixed(2)} MB received`)),
    el("progress", {value: String(t.fraction), max: "1"}),
    el("span", {class: "sub"}, `${(100 * t.fraction).toFixed(1)}%`))));
}

function remember(view) {
  const now = view.generated_at;
  for (const m of view.members) {
    if (!loadHistory.has(m.name)) loadHistory.set(m.name, new Map());
    const samples = loadHistory.get(m.name);
    for (const s of m.load) samples.set(s.t, s);
    for (const t of samples.keys()) if (t < now - HISTORY_SECONDS) samples.delete(t);
  }
}

function chart(target, field, now, palette, unit) {
  const W = 720, H = 150, L = 40, B = 18, T = 8;
  const series = [...loadHistory.entries()].map(([name, samples]) =>
    [name, [...samples.values()].filter(s => s[field] !== null).sort((a, b) => a.t - b.t)]);
  let max = 0;
  for (const [, s] of series) for (const p of s) max = Math.max(max, p[field]);
  max = max > 0 ? max * 1.1 : 1;
  const x = t => L + (W - L) * (1 - (now - t) / HISTORY_SECONDS);
  const y = v => T + (H - T - B) * (1 - v / max);
  const svg = el("svg:svg", {viewBox: `0 0 ${W} ${H}`, preserveAspectRatio: "none",
                             "data-field": field});
  for (const frac of [0, 0.5, 1]) {
    svg.append(el("svg:line", {x1: String(L), x2: String(W), y1: String(y(max * frac)),
      y2: String(y(max * frac)), stroke: "#e2e5ea"}),
      el("svg:text", {x: String(L - 4), y: String(y(max * frac) + 3), "text-anchor": "end"},
         (max * frac).toFixed(max < 10 ? 1 : 0)));
  }
  svg.append(el("svg:text", {x: String(L), y: String(H - 4)}, "-5 min"),
             el("svg:text", {x: String(W), y: String(H - 4), "text-anchor": "end"}, "now"));
  for (const [name, points] of series) {
    if (!points.length) continue;
    const d = points.filter(p => p.t >= now - HISTORY_SECONDS)
      .map((p, i) => `${i ? "L" : "M"} ${x(p.t).toFixed(1)} ${y(p[field]).toFixed(1)}`).join(" ");
    svg.append(el("svg:path", {d, fill: "none", stroke: palette.get(name) || "#999",
      "stroke-width": "1.5", "data-node": name}, el("svg:title", {}, `${name} ${unit}`)));
  }
  document.getElementById(target).replaceChildren(svg);
}

function render(view) {
  const palette = colours(view.members);
  remember(view);
  renderHeader(view);
  renderAlerts(view);
  renderMembers(view, palette);
  renderRing(view, palette);
  renderTransfers(view);
  chart("chart-ops", "ops_per_s", view.generated_at, palette, "requests/s");
  chart("chart-p99", "p99_ms", view.generated_at, palette, "p99 ms");
  document.body.dataset.updated = String(view.generated_at);
}

async function poll() {
  const connection = document.getElementById("connection");
  try {
    const response = await fetch("/v1/console", {cache: "no-store"});
    const body = await response.json();
    if (!response.ok) throw new Error(`${body.error}: ${body.message}`);
    render(body);
    connection.className = "ok";
    connection.textContent = "";
  } catch (err) {
    connection.className = "error";
    connection.textContent = `this node did not answer: ${err.message}`;
  } finally {
    setTimeout(poll, POLL_MS);
  }
}

poll();
