// directord's live status page: polls api/status every 2 seconds and draws it.
// Every text from the daemon goes through textContent (names, check reasons and event lines
// are data, never markup). A token given as #token=... is kept for this tab only
// (sessionStorage), removed from the address bar, and sent as "Authorization: Bearer".
"use strict";

const POLL_MS = 2000;

function token() {
  const m = /(?:^|&)token=([^&]+)/.exec(location.hash.slice(1));
  if (m) {
    sessionStorage.setItem("directord-token", decodeURIComponent(m[1]));
    history.replaceState(null, "", location.pathname + location.search);
  }
  return sessionStorage.getItem("directord-token");
}

function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined && text !== null) e.textContent = String(text);
  if (cls) e.className = cls;
  return e;
}

function row(cells) {
  const tr = el("tr");
  for (const c of cells) tr.append(c instanceof Node ? c : el("td", c));
  return tr;
}

function healthCell(state) {
  const td = el("td", state || "");
  td.className = state || "";
  td.dataset.health = state || "";
  return td;
}

function adminCell(rs) {
  const state = rs.admin || "";
  const td = el("td", state === "enabled" ? "" : state + (rs.admin_reason ? `: ${rs.admin_reason}` : ""));
  td.dataset.admin = state;
  if (state && state !== "enabled") td.className = "admin";
  return td;
}

function fill(tbody, rows) {
  tbody.replaceChildren(...rows);
}

function services(doc) {
  const box = document.getElementById("services");
  const parts = [];
  for (const svc of doc.services || []) {
    const title = el("h3", `${svc.name}`);
    const how = [svc.key, svc.scheduler, svc.forwarding].filter(Boolean).join(" · ");
    title.append(el("span", `  ${how}`, "muted"));
    const table = el("table");
    table.dataset.service = svc.name;
    const head = el("thead");
    head.append(row(["real server", "health", "admin", "for", "weight", "configured", "active", "inactive", "last check"].map((h) => el("th", h))));
    const body = el("tbody");
    fill(body, (svc.real_servers || []).map((rs) => {
      const tr = row([
        `${rs.address}:${rs.port}` + (rs.role && rs.role !== "real" ? ` (${rs.role})` : ""),
        healthCell(rs.role === "real" ? rs.health : rs.role),
        adminCell(rs),
        rs.in_state_s == null ? "" : `${Math.round(rs.in_state_s)} s`,
        rs.weight ?? "",
        rs.configured_weight ?? "",
        rs.active_conns ?? "",
        rs.inactive_conns ?? "",
        rs.last_check ?? "",
      ]);
      tr.dataset.realServer = `${rs.address}:${rs.port}`;
      return tr;
    }));
    table.append(head, body);
    parts.push(title, table);
  }
  box.replaceChildren(...parts);
}

function ha(doc) {
  const section = document.getElementById("ha");
  const h = doc.ha;
  section.hidden = !h;
  if (!h) return;
  document.getElementById("node").textContent = h.node || "";
  const facts = [["state", h.state], ["holds", h.holds ?? ""]];
  for (const p of h.peers || []) {
    facts.push([`peer ${p.node}`, `${p.status}` + (p.last_heard_s == null ? "" : `, heard ${p.last_heard_s.toFixed(2)} s ago`)]);
  }
  const dl = document.getElementById("ha-facts");
  dl.replaceChildren(...facts.flatMap(([k, v]) => [el("dt", k), el("dd", v)]));
  dl.dataset.state = h.state || "";
  fill(document.querySelector("#ha-groups tbody"), (h.groups || []).map((g) => {
    const tr = row([(g.resources || []).join(" "), g.owner, g.holder ?? "nobody", g.held ? "yes" : "no"]);
    tr.dataset.held = g.held ? "yes" : "no";
    return tr;
  }));
  fill(document.querySelector("#ha-media tbody"), (h.media || []).map((m) =>
    row([m.medium, m.link ?? "", m.sent ?? "", m.received ?? "", m.send_errors ?? ""])));
}

function events(doc) {
  const list = (doc.recent_events || []).slice().reverse();
  fill(document.getElementById("events"), list.map((e) => {
    const when = new Date(e.at * 1000).toLocaleTimeString();
    const li = el("li", `${when} ${e.kind}: ${e.message ?? ""}`);
    li.dataset.kind = e.kind;
    return li;
  }));
}

function summary(doc) {
  let up = 0, total = 0;
  for (const svc of doc.services || []) {
    for (const rs of svc.real_servers || []) {
      if (rs.role !== "real") continue;
      total += 1;
      if (rs.health === "up") up += 1;
    }
  }
  const n = (doc.services || []).length;
  return `${n} virtual service${n === 1 ? "" : "s"}, ${up}/${total} real servers up` +
    (doc.ha ? `, HA ${doc.ha.state}` : "");
}

async function poll() {
  const error = document.getElementById("error");
  try {
    const headers = {};
    const t = token();
    if (t) headers.Authorization = `Bearer ${t}`;
    const r = await fetch("api/status", { headers, cache: "no-store" });
    if (r.status === 401) throw new Error("a token is required: open this page as …/#token=YOUR-TOKEN");
    if (!r.ok) throw new Error(`the daemon answered ${r.status}`);
    const doc = await r.json();
    services(doc);
    ha(doc);
    events(doc);
    document.getElementById("summary").textContent = summary(doc);
    document.getElementById("updated").textContent = `updated ${new Date().toLocaleTimeString()}`;
    document.body.dataset.updates = String(Number(document.body.dataset.updates || 0) + 1);
    error.hidden = true;
  } catch (e) {
    error.textContent = String(e.message || e);
    error.hidden = false;
  } finally {
    setTimeout(poll, POLL_MS);
  }
}

poll();
