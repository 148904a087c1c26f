// Spool's dashboard: one page, hash routes, data from /api/v1, live updates from the event
// stream. No framework and no build step: `h` builds elements, each view renders into #view
// and re-renders itself (debounced) when the stream reports something it shows.
"use strict";

const $ = (selector) => document.querySelector(selector);
const STATES = ["ready", "running", "scheduled", "waiting", "succeeded", "dead", "cancelled"];
const ADMIN_REASON = "needs an admin token: this token can only read";

const session = { token: localStorage.getItem("spool.token") || "", role: null, authRequired: false, demo: false };
let view = null; // { onEvent(event), leave() } of the page shown
let pending = null; // the debounced refresh of the page shown
let routes = 0; // pages opened so far: a load for an earlier one draws nothing

// ---- elements ----

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else if (key === "class") el.className = value;
    else el.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : String(child));
  }
  return el;
}

function badge(state) {
  return h("span", { class: `badge state-${state}` }, state);
}

function jobLink(id) {
  return h("a", { href: `#/job/${encodeURIComponent(id)}`, class: "mono" }, id);
}

function time(ms) {
  if (ms === null || ms === undefined) return h("span", { class: "muted" }, "—");
  return h("time", { datetime: new Date(ms).toISOString(), title: new Date(ms).toISOString() }, ago(ms));
}

function ago(ms) {
  const s = Math.round((Date.now() - ms) / 1000);
  const abs = Math.abs(s);
  const text = abs < 60 ? `${abs}s` : abs < 3600 ? `${Math.round(abs / 60)}m` : abs < 86400 ? `${Math.round(abs / 3600)}h` : `${Math.round(abs / 86400)}d`;
  return s >= 0 ? `${text} ago` : `in ${text}`;
}

function pretty(value, encoding) {
  if (value === null || value === undefined) return h("span", { class: "muted" }, "none");
  const text = encoding ? `${value}` : JSON.stringify(value, null, 2);
  return h("pre", {}, encoding ? h("span", { class: "muted" }, `(${encoding}) `) : null, text);
}

function table(headers, rows, empty) {
  if (!rows.length) return h("p", { class: "empty" }, empty);
  return h("table", {}, h("thead", {}, h("tr", {}, headers.map((x) => h("th", {}, x)))), h("tbody", {}, rows));
}

function admin(el) {
  el.classList.add("admin");
  return el;
}

// Disables every admin control when the token may only read, saying why.
function applyRole(root = document) {
  const allowed = session.role === "admin";
  for (const el of root.querySelectorAll(".admin")) {
    el.disabled = !allowed;
    if (allowed) el.removeAttribute("title");
    else el.title = session.role ? ADMIN_REASON : "needs an admin token";
  }
}

// Replaces the page's content, keeping what the user did to the old one: the details they
// opened or closed, what they typed in a form's fields, and where the focus was.
function show(...nodes) {
  const main = $("#view");
  const open = new Map([...main.querySelectorAll("details[data-key]")].map((d) => [d.dataset.key, d.open]));
  const fieldKey = (el) => `${el.form ? el.form.id : ""}/${el.name}`;
  const typed = new Map([...main.querySelectorAll("[data-dirty][name]")].map((el) => [fieldKey(el), el.value]));
  const focused = document.activeElement && main.contains(document.activeElement) && document.activeElement.name ? fieldKey(document.activeElement) : null;
  main.replaceChildren(...nodes);
  for (const d of main.querySelectorAll("details[data-key]")) if (open.has(d.dataset.key)) d.open = open.get(d.dataset.key);
  for (const el of main.querySelectorAll("[name]")) {
    const key = fieldKey(el);
    if (typed.has(key)) { el.value = typed.get(key); el.dataset.dirty = "1"; }
    if (key === focused) el.focus();
  }
  applyRole(main);
}

// Forgets what was typed in `form`, so its next render shows the values it is given.
function clean(form) {
  if (form) for (const el of form.querySelectorAll("[data-dirty]")) delete el.dataset.dirty;
}

function flash(message) {
  const el = $("#error");
  el.textContent = message || "";
  el.hidden = !message;
}

// ---- the API ----

function headers(extra) {
  const all = { ...extra };
  if (session.token) all.Authorization = `Bearer ${session.token}`;
  return all;
}

async function api(method, path, body) {
  const init = { method, headers: headers(body === undefined ? {} : { "Content-Type": "application/json" }) };
  if (body !== undefined) init.body = JSON.stringify(body);
  const res = await fetch(`/api/v1${path}`, init);
  const text = await res.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch { data = null; }
  if (!res.ok) {
    const err = new Error((data && data.message) || `${method} ${path}: ${res.status} ${text}`);
    err.status = res.status;
    throw err;
  }
  return data;
}

function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== "" && v !== null && v !== undefined) q.set(k, v);
  const s = q.toString();
  return s ? `?${s}` : "";
}

// Runs an admin action, showing its error instead of throwing.
async function act(fn) {
  try {
    flash("");
    await fn();
  } catch (e) {
    flash(e.message);
  }
}

async function loadAuth() {
  try {
    const auth = await api("GET", "/auth");
    session.role = auth.role;
    session.authRequired = auth.auth_required;
    session.demo = auth.demo;
  } catch (e) {
    session.role = null;
    flash(e.message);
  }
  const role = $("#role");
  role.textContent = session.role ? `role: ${session.role}` : "no access";
  role.className = `badge role-${session.role || "none"}`;
  const note = $("#admin-note");
  note.hidden = session.role === "admin";
  note.textContent = session.role === "read"
    ? "Read-only token: enqueue, cancel, replay, purge and schedule edits need an admin token."
    : "Enter an API token to use the dashboard.";
  $("#demo").hidden = !session.demo;
  applyRole();
}

// ---- the event stream ----
// EventSource cannot send an Authorization header, so the stream is read with fetch.

let streamAbort = null;
let lastSeq = null;

async function follow() {
  if (streamAbort) streamAbort.abort();
  const abort = new AbortController();
  streamAbort = abort;
  while (!abort.signal.aborted) {
    try {
      const extra = lastSeq === null ? {} : { "Last-Event-ID": String(lastSeq) };
      const res = await fetch("/api/v1/events/stream", { headers: headers(extra), signal: abort.signal });
      if (!res.ok) throw new Error(`event stream: ${res.status}`);
      setLive(true);
      const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value.replace(/\r\n?/g, "\n");
        let end;
        while ((end = buffer.indexOf("\n\n")) >= 0) {
          message(buffer.slice(0, end));
          buffer = buffer.slice(end + 2);
        }
      }
    } catch (e) {
      if (abort.signal.aborted) return;
    }
    setLive(false);
    await new Promise((resolve) => setTimeout(resolve, 2000));
  }
}

// The last five minutes' events give the sparklines their history; the stream goes on from
// the newest of them.
async function seed() {
  try {
    const { events } = await api("GET", "/events?since=5m&limit=1000");
    throughput.counts.clear();
    for (const event of events) throughput.record(event);
    if (events.length) lastSeq = events[events.length - 1].seq;
  } catch {
    // No history: the sparklines start empty.
  }
}

function message(block) {
  let data = "";
  let id = null;
  for (const line of block.split("\n")) {
    if (line.startsWith("data:")) data += line.slice(5).trimStart();
    else if (line.startsWith("id:")) id = line.slice(3).trim();
  }
  if (!data) return;
  let event;
  try { event = JSON.parse(data); } catch { return; }
  lastSeq = id !== null ? Number(id) : event.seq;
  throughput.record(event);
  demo.onEvent(event);
  if (view && view.onEvent) view.onEvent(event);
}

function setLive(on) {
  const el = $("#live");
  el.textContent = on ? "live" : "offline";
  el.className = `badge ${on ? "live" : "offline"}`;
}

// Numbers a page's loads. `const current = fresh();` before a request; after it,
// `current()` tells whether its answer may still be shown: not when a newer load of the
// page began meanwhile (whose answer wins, even if it came first) or another page opened.
function loads() {
  const page = routes;
  let last = 0;
  return () => {
    const mine = ++last;
    return () => mine === last && page === routes;
  };
}

// Re-renders the page shown at most every 400 ms however many events arrive.
function refreshSoon(fn) {
  if (pending) return;
  pending = setTimeout(() => { pending = null; fn(); }, 400);
}

// Finished attempts per queue in 10-second buckets over the last 5 minutes, from the stream.
const throughput = {
  bucketMs: 10000,
  buckets: 30,
  counts: new Map(),
  record(event) {
    if (!event.queue || !["succeeded", "failed"].includes(event.kind)) return;
    const slot = Math.floor((event.at || Date.now()) / this.bucketMs);
    const perQueue = this.counts.get(event.queue) || new Map();
    perQueue.set(slot, (perQueue.get(slot) || 0) + 1);
    this.counts.set(event.queue, perQueue);
  },
  series(queue) {
    const now = Math.floor(Date.now() / this.bucketMs);
    const perQueue = this.counts.get(queue) || new Map();
    const out = [];
    for (let slot = now - this.buckets + 1; slot <= now; slot++) out.push(perQueue.get(slot) || 0);
    return out;
  },
  sparkline(queue) {
    const values = this.series(queue);
    const max = Math.max(1, ...values);
    const w = 120, hgt = 24;
    const points = values.map((v, i) => `${(i * w) / (values.length - 1)},${hgt - 1 - (v / max) * (hgt - 2)}`).join(" ");
    const ns = "http://www.w3.org/2000/svg";
    const svg = document.createElementNS(ns, "svg");
    svg.setAttribute("class", "spark");
    svg.setAttribute("viewBox", `0 0 ${w} ${hgt}`);
    svg.setAttribute("width", w);
    svg.setAttribute("height", hgt);
    const line = document.createElementNS(ns, "polyline");
    line.setAttribute("points", points);
    svg.append(line);
    const total = values.reduce((a, b) => a + b, 0);
    return h("span", { class: "spark-wrap", title: `${total} finished attempts in the last 5 minutes` }, svg, h("small", {}, `${total} in 5 min`));
  },
};

// ---- pages ----

async function queuesPage() {
  let queues = [];
  const render = () => {
    const columns = ["ready", "running", "scheduled", "waiting", "succeeded", "dead", "cancelled"];
    const rows = queues.map((q) => h("tr", { "data-queue": q.name },
      h("td", {}, h("a", { href: `#/jobs?queue=${encodeURIComponent(q.name)}` }, q.name)),
      columns.map((c) => h("td", { class: `num count-${c}` }, (q.counts && q.counts[c]) || 0)),
      h("td", {}, throughput.sparkline(q.name)),
      h("td", { class: "mono muted small" }, q.handler || "")));
    const form = h("form", { class: "row", id: "enqueue-form", onsubmit: (e) => { e.preventDefault(); enqueue(e.target); } },
      h("select", { name: "queue", "aria-label": "queue" }, queues.map((q) => h("option", {}, q.name))),
      h("input", { name: "payload", value: "{}", class: "wide", "aria-label": "payload (JSON)" }),
      h("input", { name: "delay", placeholder: "delay (10s)", size: 10, "aria-label": "delay" }),
      admin(h("button", { type: "submit" }, "Enqueue")));
    show(h("h1", {}, "Queues"),
      table(["queue", ...columns, "throughput", "handler"], rows, "No queues."),
      h("h2", {}, "Enqueue a job"), form);
  };
  const fresh = loads();
  const load = async () => {
    const current = fresh();
    try {
      const answer = (await api("GET", "/queues")).queues;
      if (!current()) return;
      queues = answer;
      render();
    } catch (e) { if (current()) flash(e.message); }
  };
  const enqueue = (form) => act(async () => {
    const body = { payload: JSON.parse(form.payload.value || "null") };
    if (form.delay.value) body.delay = form.delay.value;
    const res = await api("POST", `/queues/${encodeURIComponent(form.queue.value)}/jobs`, body);
    location.hash = `#/job/${encodeURIComponent(res.jobs[0].id)}`;
  });
  await load();
  const timer = setInterval(render, 5000); // the sparkline moves on even when nothing happens
  return { onEvent: () => refreshSoon(load), leave: () => clearInterval(timer) };
}

async function jobsPage(params) {
  const filter = { queue: params.get("queue") || "", state: params.get("state") || "", tenant: params.get("tenant") || "" };
  const after = params.get("after") || "";
  const back = (params.get("back") || "").split(",").filter(Boolean);
  const fresh = loads();
  const load = async () => {
    const current = fresh();
    let page;
    try {
      page = await api("GET", `/jobs${query({ ...filter, after, limit: 50 })}`);
    } catch (e) { if (current()) flash(e.message); return; }
    if (!current()) return;
    const link = (extra) => `#/jobs${query({ ...filter, ...extra })}`;
    const rows = page.jobs.map((j) => h("tr", { "data-job": j.id },
      h("td", {}, jobLink(j.id)), h("td", {}, j.queue), h("td", {}, badge(j.state)),
      h("td", { class: "num" }, `${j.failures}${j.max_attempts ? ` / ${j.max_attempts}` : ""}`),
      h("td", {}, j.tenant || ""), h("td", {}, time(j.enqueued_at)),
      h("td", { class: "error-text" }, j.last_error || "")));
    const form = h("form", { class: "row filters", id: "jobs-filter", onsubmit: (e) => { e.preventDefault(); location.hash = link({ queue: e.target.queue.value, state: e.target.state.value, tenant: e.target.tenant.value }); } },
      h("input", { name: "queue", placeholder: "queue", value: filter.queue, "aria-label": "queue" }),
      h("select", { name: "state", "aria-label": "state" }, h("option", { value: "" }, "any state"),
        STATES.map((s) => h("option", { value: s, selected: s === filter.state }, s))),
      h("input", { name: "tenant", placeholder: "tenant", value: filter.tenant, "aria-label": "tenant" }),
      h("button", { type: "submit" }, "Filter"));
    const prev = back.length ? link({ after: back[back.length - 1] === "-" ? "" : back[back.length - 1], back: back.slice(0, -1).join(",") }) : null;
    const next = page.next ? link({ after: page.next, back: [...back, after || "-"].join(",") }) : null;
    show(h("h1", {}, "Jobs"), form,
      table(["id", "queue", "state", "failures", "tenant", "enqueued", "last error"], rows, "No jobs match."),
      h("p", { class: "pager" },
        prev ? h("a", { href: prev, id: "prev" }, "← newer") : null, " ",
        next ? h("a", { href: next, id: "next" }, "older →") : null));
  };
  await load();
  // Only the first page follows the stream: later pages keep their place.
  return { onEvent: (e) => { if (!after && (!filter.queue || e.queue === filter.queue)) refreshSoon(load); } };
}

async function jobPage(id) {
  const fresh = loads();
  const load = async () => {
    const current = fresh();
    let job;
    try { job = await api("GET", `/jobs/${encodeURIComponent(id)}`); } catch (e) {
      if (current()) show(h("h1", {}, `Job ${id}`), h("p", { class: "empty" }, e.status === 404 ? "No such job." : e.message));
      return;
    }
    const tree = await childTree(job.children, 0);
    if (!current()) return;
    const finished = ["succeeded", "dead", "cancelled"].includes(job.state);
    const cancel = admin(h("button", { id: "cancel", class: "danger", disabled: finished,
      onclick: () => act(async () => { await api("POST", `/jobs/${encodeURIComponent(id)}/cancel`, {}); await load(); }) }, "Cancel job"));
    const facts = [
      ["queue", h("a", { href: `#/jobs?queue=${encodeURIComponent(job.queue)}` }, job.queue)],
      ["state", badge(job.state)],
      ["attempts", `${job.started} started, ${job.failures} failed${job.max_attempts ? `, at most ${job.max_attempts}` : ""}`],
      ["priority", job.priority],
      ["tenant", job.tenant], ["group", job.group], ["key", job.key],
      ["parent", job.parent ? jobLink(job.parent) : null],
      ["enqueued", time(job.enqueued_at)], ["runs at", time(job.run_at)], ["updated", time(job.updated_at)],
      ["progress", job.progress ? h("span", {}, h("progress", { max: 100, value: job.progress.percent }), ` ${job.progress.percent}% ${job.progress.message || ""}`) : null],
      ["lease", job.lease ? `${job.lease.worker || ""} until ${new Date(job.lease.expires_at || 0).toISOString()}` : null],
      ["last error", job.last_error ? h("span", { class: "error-text" }, `${job.last_phase ? `[${job.last_phase}] ` : ""}${job.last_error}`) : null],
    ].filter(([, v]) => v !== null && v !== undefined && v !== "");
    show(
      h("div", { class: "title-row" }, h("h1", {}, "Job ", h("span", { class: "mono" }, job.id), " ", badge(job.state)), finished ? null : cancel),
      h("dl", { class: "facts" }, facts.flatMap(([k, v]) => [h("dt", {}, k), h("dd", {}, v)])),
      h("div", { class: "columns" },
        h("section", {}, h("h2", {}, "Timeline"), timeline(job.events)),
        h("section", {}, h("h2", {}, "Attempts"), attempts(job.attempts))),
      h("div", { class: "columns three" },
        h("section", {}, h("h2", {}, "Payload"), pretty(job.payload, job.payload_encoding)),
        h("section", {}, h("h2", {}, "Output"), pretty(job.output, job.output_encoding)),
        h("section", {}, h("h2", {}, "Checkpoint"), pretty(job.checkpoint, job.checkpoint_encoding))),
      h("h2", {}, "Steps"),
      table(["step", "attempt", "at", "output"], (job.steps || []).map((s) => h("tr", {},
        h("td", {}, s.name), h("td", { class: "num" }, s.attempt), h("td", {}, time(s.at)), h("td", {}, pretty(s.output, s.output_encoding)))), "No steps."),
      h("h2", {}, "Children"), tree || h("p", { class: "empty" }, "No children."));
  };
  await load();
  return { onEvent: (e) => { if (e.job_id === id) refreshSoon(load); } };
}

function timeline(events) {
  if (!events || !events.length) return h("p", { class: "empty" }, "No events yet.");
  const start = events[0].at;
  return h("ol", { class: "timeline", id: "timeline" }, events.map((e) => h("li", { class: `event kind-${e.kind}`, "data-kind": e.kind },
    h("span", { class: "at mono" }, `+${((e.at - start) / 1000).toFixed(1)}s`),
    h("span", { class: "kind" }, e.kind),
    e.attempt ? h("span", { class: "muted" }, ` attempt ${e.attempt}`) : null,
    e.phase ? h("span", { class: "phase" }, ` [${e.phase}]`) : null,
    e.duration_ms !== null && e.duration_ms !== undefined ? h("span", { class: "muted" }, ` ${e.duration_ms} ms`) : null,
    e.message ? h("div", { class: "message" }, e.message) : null)));
}

function attempts(list) {
  if (!list || !list.length) return h("p", { class: "empty" }, "No attempts yet.");
  // The newest attempt and every failed one start open; the user's choice is kept after that.
  return h("div", { id: "attempts" }, list.map((a, i) => h("details", { class: `attempt outcome-${a.outcome}`, "data-key": `attempt-${a.attempt}-${a.run}`, open: a.error || i === list.length - 1 ? true : null },
    h("summary", {}, h("b", {}, `#${a.attempt}`), " ", badge(a.outcome),
      a.phase ? h("span", { class: "phase" }, ` [${a.phase}]`) : null,
      ` ${a.finished_at && a.started_at ? `${a.finished_at - a.started_at} ms` : ""} on ${a.worker || "?"}`,
      a.error ? h("div", { class: "error-text" }, a.error) : null),
    h("h3", {}, `Logs (${(a.logs || []).length})`),
    (a.logs || []).length ? h("pre", { class: "logs" }, a.logs.map((l) =>
      h("div", { class: `log-${l.level}` }, `${(l.at_us / 1000).toFixed(1).padStart(8)} ms ${l.level.padEnd(5)} ${l.message}${(l.fields || []).map(([k, v]) => ` ${k}=${v}`).join("")}`)))
      : h("p", { class: "muted" }, "No log lines."))));
}

// Children as a tree: each child's own children are fetched, a few levels deep.
async function childTree(children, depth) {
  if (!children || !children.length) return null;
  const items = await Promise.all(children.map(async (c) => {
    let sub = null;
    if (depth < 3) {
      try { sub = await childTree((await api("GET", `/jobs/${encodeURIComponent(c.id)}`)).children, depth + 1); } catch { sub = null; }
    }
    return h("li", {}, jobLink(c.id), " ", h("span", { class: "muted" }, c.queue), " ", badge(c.state),
      c.on_failure ? h("span", { class: "muted small" }, ` on failure: ${c.on_failure}`) : null,
      c.error ? h("span", { class: "error-text" }, ` ${c.error}`) : null, sub);
  }));
  return h("ul", { class: "tree" }, items);
}

async function dlqPage(params) {
  const filter = { queue: params.get("queue") || "", tenant: params.get("tenant") || "", since: params.get("since") || "" };
  const limit = 500;
  let jobs = [];
  let confirming = null; // { verb, count, run }
  const selected = new Set();
  // The jobs acted on are exactly those listed (or selected), so the count asked about is the
  // count touched: a job that dies meanwhile waits for the next look.
  const bulk = () => ({ ids: selected.size ? [...selected] : jobs.map((j) => j.id) });
  const ask = (verb, run) => {
    const count = selected.size || jobs.length;
    confirming = { verb, count, run };
    render();
  };
  const render = () => {
    const rows = jobs.map((j) => h("tr", { "data-job": j.id },
      h("td", {}, h("input", { type: "checkbox", "aria-label": `select ${j.id}`, checked: selected.has(j.id),
        onchange: (e) => { if (e.target.checked) selected.add(j.id); else selected.delete(j.id); render(); } })),
      h("td", {}, jobLink(j.id)), h("td", {}, j.queue), h("td", {}, j.tenant || ""),
      h("td", { class: "num" }, j.failures), h("td", {}, j.last_phase || ""),
      h("td", { class: "error-text" }, j.last_error || ""), h("td", {}, time(j.updated_at))));
    const scope = selected.size ? `${selected.size} selected` : `all ${jobs.length}${jobs.length >= limit ? "+" : ""}`;
    const form = h("form", { class: "row filters", id: "dlq-filter", onsubmit: (e) => { e.preventDefault(); location.hash = `#/dlq${query({ queue: e.target.queue.value, tenant: e.target.tenant.value, since: e.target.since.value })}`; } },
      h("input", { name: "queue", placeholder: "queue", value: filter.queue, "aria-label": "queue" }),
      h("input", { name: "tenant", placeholder: "tenant", value: filter.tenant, "aria-label": "tenant" }),
      h("input", { name: "since", placeholder: "died since (1h)", value: filter.since, "aria-label": "died since" }),
      h("button", { type: "submit" }, "Filter"));
    const actions = h("p", { class: "row" },
      admin(h("button", { id: "replay", disabled: !jobs.length, onclick: () => ask("replay", (body) => api("POST", "/dlq/replay", body)) }, `Replay ${scope}`)),
      admin(h("button", { id: "purge", class: "danger", disabled: !jobs.length, onclick: () => ask("purge", (body) => api("POST", "/dlq/purge", body)) }, `Purge ${scope}`)));
    const confirmBox = confirming ? h("div", { class: "confirm", id: "confirm", role: "alertdialog" },
      h("p", {}, `${confirming.verb === "purge" ? "Purge" : "Replay"} ${confirming.count} dead job${confirming.count === 1 ? "" : "s"}${selected.size ? "" : describe(filter)}? `,
        confirming.verb === "purge" ? "Purged jobs are deleted for good." : "They get fresh attempts."),
      admin(h("button", { id: "confirm-yes", class: confirming.verb === "purge" ? "danger" : "", onclick: () => {
        const { run } = confirming;
        confirming = null;
        act(async () => { await run(bulk()); selected.clear(); await load(); });
      } }, `${confirming.verb === "purge" ? "Purge" : "Replay"} ${confirming.count} job${confirming.count === 1 ? "" : "s"}`)),
      h("button", { id: "confirm-no", onclick: () => { confirming = null; render(); } }, "Keep them")) : null;
    show(h("h1", {}, "Dead-letter queue"), form, actions, confirmBox,
      table([h("input", { type: "checkbox", "aria-label": "select all", checked: jobs.length > 0 && selected.size === jobs.length,
        onchange: (e) => { selected.clear(); if (e.target.checked) jobs.forEach((j) => selected.add(j.id)); render(); } }),
      "id", "queue", "tenant", "failures", "phase", "last error", "died"], rows, "The dead-letter queue is empty."));
  };
  const fresh = loads();
  const load = async () => {
    const current = fresh();
    let answer;
    try { answer = (await api("GET", `/dlq${query({ ...filter, limit })}`)).jobs; } catch (e) { if (current()) flash(e.message); return; }
    if (!current()) return;
    jobs = answer;
    for (const id of [...selected]) if (!jobs.some((j) => j.id === id)) selected.delete(id);
    render();
  };
  await load();
  return { onEvent: (e) => { if (["dead-lettered", "replayed", "cancelled"].includes(e.kind) && !confirming) refreshSoon(load); } };
}

function describe(filter) {
  const parts = Object.entries(filter).filter(([, v]) => v).map(([k, v]) => `${k} ${v}`);
  return parts.length ? ` (${parts.join(", ")})` : "";
}

async function schedulesPage() {
  let schedules = [];
  let editing = null;
  const render = () => {
    const rows = schedules.map((s) => h("tr", { "data-schedule": s.name },
      h("td", {}, s.name), h("td", { class: "mono" }, s.spec), h("td", {}, s.queue), h("td", {}, s.missed),
      h("td", {}, time(s.next_run_at)), h("td", {}, time(s.last_run_at)),
      h("td", {}, s.last_job ? jobLink(s.last_job) : ""), h("td", {}, s.from_config ? "config" : "api"),
      h("td", {}, admin(h("button", { onclick: () => { clean($("#schedule-form")); editing = s; render(); } }, "Edit")), " ",
        admin(h("button", { class: "danger", onclick: () => act(async () => {
          await api("DELETE", `/schedules/${encodeURIComponent(s.name)}`); await load();
        }) }, "Delete")))));
    const e = editing || {};
    const every = e.spec && /^every /.test(e.spec) ? e.spec.replace(/^every /, "") : "";
    const form = h("form", { class: "grid-form", id: "schedule-form", onsubmit: (ev) => { ev.preventDefault(); save(ev.target); } },
      h("label", {}, "name", h("input", { name: "name", required: true, value: e.name || "" })),
      h("label", {}, "queue", h("input", { name: "queue", required: true, value: e.queue || "" })),
      h("label", {}, "cron (UTC)", h("input", { name: "cron", placeholder: "0 3 * * *", value: every ? "" : e.spec || "" })),
      h("label", {}, "or every", h("input", { name: "every", placeholder: "30s", value: every })),
      h("label", {}, "payload", h("input", { name: "payload", value: e.payload === undefined ? "{}" : JSON.stringify(e.payload) })),
      h("label", {}, "missed ticks", h("select", { name: "missed" }, ["skip", "catch-up"].map((m) => h("option", { selected: m === e.missed }, m)))),
      admin(h("button", { type: "submit" }, editing ? `Save ${editing.name}` : "Add schedule")),
      editing ? h("button", { type: "button", onclick: () => { clean($("#schedule-form")); editing = null; render(); } }, "New instead") : null);
    show(h("h1", {}, "Schedules"),
      table(["name", "spec", "queue", "missed", "next", "last", "last job", "from", ""], rows, "No schedules."),
      h("h2", {}, editing ? `Edit ${editing.name}` : "Add a schedule"), form);
  };
  const save = (form) => act(async () => {
    const body = { queue: form.queue.value, missed: form.missed.value, payload: JSON.parse(form.payload.value || "null") };
    if (form.cron.value) body.cron = form.cron.value;
    if (form.every.value) body.every = form.every.value;
    await api("PUT", `/schedules/${encodeURIComponent(form.name.value)}`, body);
    clean(form);
    editing = null;
    await load();
  });
  const fresh = loads();
  const load = async () => {
    const current = fresh();
    let answer;
    try { answer = (await api("GET", "/schedules")).schedules; } catch (e) { if (current()) flash(e.message); return; }
    if (!current()) return;
    schedules = answer;
    render();
  };
  await load();
  return { onEvent: (e) => { if (e.kind === "schedule-fired" && !editing) refreshSoon(load); } };
}

async function workersPage() {
  const fresh = loads();
  const load = async () => {
    const current = fresh();
    let workers = [];
    try { workers = (await api("GET", "/workers")).workers || []; } catch (e) { if (e.status !== 404 && current()) flash(e.message); }
    if (!current()) return;
    const rows = workers.map((w) => h("tr", {},
      h("td", { class: "mono" }, w.id), h("td", {}, w.host), h("td", { class: "num" }, w.pid), h("td", {}, w.version),
      h("td", {}, (w.queues || []).join(", ")), h("td", { class: "num" }, `${w.running} / ${w.concurrency}`),
      h("td", {}, time(w.started_at)), h("td", {}, time(w.last_heartbeat))));
    show(h("h1", {}, "Workers"), table(["id", "host", "pid", "version", "queues", "running", "started", "heartbeat"], rows, "No live workers."));
  };
  await load();
  const timer = setInterval(load, 5000); // heartbeats are not events
  return { leave: () => clearInterval(timer) };
}

// ---- the email demo panel ----

const demo = {
  jobs: new Map(), // id -> { mode, state, kinds }
  // The latest events of jobs the panel does not know yet: a job's first events can arrive
  // through the stream before the answer to the request that enqueued it.
  early: [],
  init() {
    $("#demo-form").addEventListener("submit", (e) => {
      e.preventDefault();
      const mode = e.submitter ? e.submitter.value : "ok";
      const form = e.target;
      act(async () => {
        const payload = { to: form.to.value, mode };
        if (form.delay_ms.value) payload.delay_ms = Number(form.delay_ms.value);
        const res = await api("POST", "/queues/email/jobs", { payload });
        const id = res.jobs[0].id;
        if (!this.jobs.has(id)) {
          this.jobs.set(id, { mode, state: "ready", kinds: [] });
          for (const event of this.early.filter((e) => e.job_id === id)) this.apply(this.jobs.get(id), event);
        }
        this.render();
      });
    });
  },
  onEvent(event) {
    const job = this.jobs.get(event.job_id);
    if (!job) {
      this.early.push(event);
      if (this.early.length > 500) this.early.shift();
      return;
    }
    this.apply(job, event);
    this.render();
  },
  apply(job, event) {
    job.kinds.push(event);
    const next = { started: "running", succeeded: "succeeded", "retry-scheduled": "scheduled", "dead-lettered": "dead", cancelled: "cancelled", replayed: "ready" }[event.kind];
    if (next) job.state = next;
  },
  render() {
    $("#demo-jobs").replaceChildren(...[...this.jobs].reverse().slice(0, 8).map(([id, job]) => h("li", { "data-job": id, "data-state": job.state },
      jobLink(id), ` email/${job.mode} `, badge(job.state), " ",
      h("span", { class: "chips" }, job.kinds.filter((e) => e.kind !== "enqueued").map((e) => h("span", { class: `chip kind-${e.kind}`, title: e.message || "" }, e.kind))))));
  },
};

// ---- routing ----

async function route() {
  routes += 1;
  if (view && view.leave) view.leave();
  view = null;
  clearTimeout(pending);
  pending = null;
  flash("");
  // A new page starts from its own fields, not what was typed on the last one.
  for (const el of $("#view").querySelectorAll("[data-dirty]")) delete el.dataset.dirty;
  const hash = location.hash.replace(/^#\/?/, "") || "queues";
  const [path, search] = hash.split("?");
  const params = new URLSearchParams(search || "");
  const [page, ...rest] = path.split("/");
  for (const a of document.querySelectorAll("nav a")) a.classList.toggle("active", a.dataset.route === page || (page === "job" && a.dataset.route === "jobs"));
  const pages = {
    queues: () => queuesPage(),
    jobs: () => jobsPage(params),
    job: () => jobPage(decodeURIComponent(rest.join("/"))),
    dlq: () => dlqPage(params),
    schedules: () => schedulesPage(),
    workers: () => workersPage(),
  };
  const open = pages[page] || pages.queues;
  // Events that arrive while the page loads are handed to it once it is shown: its first
  // load may have read the store before they were committed.
  const missed = [];
  const loading = { onEvent: (event) => missed.push(event) };
  view = loading;
  const shown = await open();
  if (view !== loading) {
    // Another route began meanwhile.
    if (shown && shown.leave) shown.leave();
    return;
  }
  view = shown;
  if (shown && shown.onEvent) for (const event of missed) shown.onEvent(event);
}

async function start() {
  $("#token").value = session.token;
  $("#token-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    session.token = $("#token").value.trim();
    if (session.token) localStorage.setItem("spool.token", session.token);
    else localStorage.removeItem("spool.token");
    await loadAuth();
    lastSeq = null;
    await seed();
    follow();
    route();
  });
  demo.init();
  for (const kind of ["input", "change"]) $("#view").addEventListener(kind, (e) => { if (e.target.name) e.target.dataset.dirty = "1"; });
  await loadAuth();
  window.addEventListener("hashchange", route);
  await seed();
  follow();
  await route();
}

start();
