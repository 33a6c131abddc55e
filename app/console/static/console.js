// The SEAL console: one page over the service's own JSON API (no build step, no CDN).
// Every value a user or a model wrote is put in the page as text (textContent), never as HTML.

const KEY_STORE = "seal-console-key";
const view = document.getElementById("view");
const TERMINAL = new Set(["published", "rejected", "failed", "cancelled"]);
const DOCUMENTS_SHOWN = 200; // the most documents a knowledge base's page lists (the API's page size)

// The page on screen. A page draws only while it is current, so a slow one finishing after the user
// moved on cannot paint over the next; its timers and streams stop when it is closed.
class Screen {
  constructor() {
    this.current = true;
    this.controller = new AbortController();
    this.timers = [];
  }

  show(...nodes) {
    if (this.current) view.replaceChildren(...nodes);
    return this.current;
  }

  every(ms, run) {
    const timer = setInterval(run, ms);
    this.timers.push(timer);
    return () => clearInterval(timer);
  }

  close() {
    this.current = false;
    this.controller.abort();
    this.timers.forEach(clearInterval);
  }
}

let screen = new Screen();

// ---------------------------------------------------------------- DOM and formatting helpers

function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (name.startsWith("on")) el.addEventListener(name.slice(2), value);
    else if (name === "dataset") Object.assign(el.dataset, value);
    else el.setAttribute(name, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

const pct = (x) => (x === null || x === undefined ? "–" : `${Math.round(100 * x)}%`);
const when = (iso) => (iso ? new Date(iso).toLocaleString() : "–");
const badge = (text, kind = text) => h("span", { class: `badge ${kind}` }, text);

function table(headers, rows, attrs = {}) {
  return h("table", attrs,
    h("thead", {}, h("tr", {}, headers.map((x) => h("th", {}, x)))),
    h("tbody", {}, rows.length ? rows : h("tr", {}, h("td", { colspan: headers.length, class: "empty" }, "none yet"))));
}

function flash(message, kind = "error") {
  const box = document.getElementById("flash");
  box.textContent = message;
  box.className = kind;
  box.hidden = !message;
}

// ---------------------------------------------------------------- the API, with the tab's key

class ApiError extends Error {
  constructor(status, body) {
    super(body?.error?.message || `HTTP ${status}`);
    this.status = status;
    this.body = body;
  }
}

function authHeaders() {
  const key = sessionStorage.getItem(KEY_STORE);
  return key ? { Authorization: `Bearer ${key}` } : {};
}

async function api(path, { method = "GET", json, body, headers = {} } = {}) {
  const init = { method, headers: { ...authHeaders(), ...headers } };
  if (json !== undefined) {
    init.body = JSON.stringify(json);
    init.headers["Content-Type"] = "application/json";
  } else if (body !== undefined) {
    init.body = body;
  }
  const response = await fetch(path, init);
  if (response.status === 401) {
    askForKey("This service needs an API key.");
  }
  const text = await response.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch { data = { error: { message: text } }; }
  if (!response.ok) throw new ApiError(response.status, data);
  return data;
}

// Server-sent events over fetch: EventSource cannot send the Authorization header.
async function* sse(ui, path, init = {}) {
  const response = await fetch(path, { ...init, headers: { ...authHeaders(), ...(init.headers || {}) },
                                       signal: ui.controller.signal });
  if (!response.ok) {
    let body = null;
    try { body = await response.json(); } catch { /* not JSON */ }
    throw new ApiError(response.status, body);
  }
  yield { response };
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    // Normalise line ends only within a complete event: a chunk may end between the \r and \n of one.
    buffer += decoder.decode(value, { stream: true });
    let end;
    while ((end = buffer.search(/\r\n\r\n|\n\n|\r\r/)) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + (buffer.startsWith("\r\n\r\n", end) ? 4 : 2));
      const event = { event: "message", data: "" };
      for (const line of block.split(/\r\n|\r|\n/)) {
        const [field, ...rest] = line.split(":");
        const value = rest.join(":").replace(/^ /, "");
        if (field === "event") event.event = value;
        else if (field === "data") event.data += (event.data ? "\n" : "") + value;
      }
      if (event.data) yield event;
    }
  }
}

function askForKey(message) {
  const dialog = document.getElementById("key-dialog");
  const error = document.getElementById("key-error");
  error.textContent = message || "";
  error.hidden = !message;
  if (!dialog.open) dialog.showModal();
}

document.getElementById("key-form").addEventListener("submit", () => {
  sessionStorage.setItem(KEY_STORE, document.getElementById("key-input").value.trim());
  document.getElementById("key-input").value = "";
  showWho();
  render();
});

document.getElementById("sign-out").addEventListener("click", () => {
  sessionStorage.removeItem(KEY_STORE);
  screen.close();
  showWho();
  view.replaceChildren();
  askForKey("");
});

function showWho() {
  const key = sessionStorage.getItem(KEY_STORE);
  document.getElementById("who").textContent = key ? `key …${key.slice(-4)}` : "";
  document.getElementById("sign-out").hidden = !key;
}

// ---------------------------------------------------------------- routing

const pages = [
  [/^#\/?$/, "kbs", knowledgeBases],
  [/^#\/kb\/(.+)$/, "kbs", knowledgeBase],
  [/^#\/teach(?:\/(.+))?$/, "teach", teach],
  [/^#\/job\/(.+)$/, "teach", job],
  [/^#\/ask(?:\/(.+))?$/, "ask", ask],
  [/^#\/operations$/, "operations", operations],
];

async function render() {
  screen.close();
  const ui = (screen = new Screen());
  flash("");
  const hash = location.hash || "#/";
  for (const [pattern, nav, page] of pages) {
    const match = hash.match(pattern);
    if (!match) continue;
    document.querySelectorAll("nav a").forEach((a) => a.classList.toggle("active", a.dataset.nav === nav));
    ui.show(h("p", { class: "loading" }, "Loading…"));
    try {
      await page(ui, ...match.slice(1).map((part) => (part === undefined ? undefined : decodeURIComponent(part))));
    } catch (error) {
      if (error.name !== "AbortError") ui.show(h("p", { class: "error" }, error.message));
    }
    return;
  }
  ui.show(h("p", { class: "error" }, "No such page."));
}

window.addEventListener("hashchange", render);

// ---------------------------------------------------------------- knowledge bases

async function knowledgeBases(ui) {
  const adapters = (await api("/v1/adapters")).data.filter((a) => !a.retired);
  const lastJobs = await Promise.all(adapters.map((a) =>
    api(`/v1/learn?adapter=${encodeURIComponent(a.name)}&limit=1`).then((r) => r.data[0]).catch(() => null)));
  const admin = adapters.some((a) => a.tenant);
  ui.show(
    h("div", { class: "title-row" }, h("h1", {}, "Knowledge bases"), h("a", { class: "button", href: "#/teach" }, "Teach…")),
    table(["Name", "Kind", ...(admin ? ["Tenant"] : []), "Version", "Documents", "Shards", "Last job"],
      adapters.map((a, i) => {
        const last = lastJobs[i];
        return h("tr", { dataset: { kb: a.name } },
          h("td", {}, h("a", { href: `#/kb/${encodeURIComponent(a.name)}` }, a.name)),
          h("td", {}, a.kind === "knowledge_base" ? "knowledge base" : "single adapter"),
          admin ? h("td", {}, a.tenant || "–") : null,
          h("td", {}, a.current_version === null ? "–" : `v${a.current_version}`),
          h("td", {}, a.documents ?? "–"),
          h("td", {}, a.shards ?? "–"),
          h("td", {}, last ? h("a", { href: `#/job/${last.id}` }, badge(last.status), " ", when(last.created_at)) : "–"));
      }), { id: "kb-list" }));
}

async function knowledgeBase(ui, name) {
  const path = `/v1/adapters/${encodeURIComponent(name)}`;
  // Jobs need the learn scope: a key that may only ask still sees the knowledge base, without its jobs.
  const [kb, jobs] = await Promise.all([api(path), api(`/v1/learn?adapter=${encodeURIComponent(name)}&limit=200`)
    .catch((error) => (error.status === 403 ? { data: [] } : Promise.reject(error)))]);
  const isKb = kb.kind === "knowledge_base";
  const listed = isKb ? await api(`${path}/documents?limit=${DOCUMENTS_SHOWN}`) : { data: [], total: 0 };
  const documents = listed.data;
  const learnJobs = jobs.data.filter((j) => j.kind === "learn" || j.kind === "consolidate");

  const act = (label, message, run, cls = "") => h("button", {
    type: "button", class: cls,
    onclick: async () => {
      if (!confirm(message)) return;
      try {
        await run();
        if (!ui.current) return; // the action moved on (consolidate opens its job)
        flash(`${label}: done.`, "ok");
        await knowledgeBase(ui, name);
      } catch (error) {
        flash(`${label}: ${error.message}`);
      }
    },
  }, label);

  const versions = [...kb.versions].sort((a, b) => b.version - a.version).map((v) => h("tr", { dataset: { version: v.version } },
    h("td", {}, `v${v.version}`, v.version === kb.current_version ? badge("serving", "published") : null),
    h("td", {}, badge(v.status)),
    h("td", {}, v.source),
    h("td", {}, v.parent_version ? `v${v.parent_version}` : "–"),
    h("td", {}, v.job_id ? h("a", { href: `#/job/${v.job_id}` }, v.job_id.slice(0, 8)) : "–"),
    h("td", {}, when(v.created_at)),
    h("td", {}, v.status === "published" && v.version !== kb.current_version && !v.files_purged
      ? act("Roll back", `Serve ${name}@v${v.version} again, instead of v${kb.current_version}?`,
          () => api(`${path}/rollback`, { method: "POST", json: { version: v.version } }), "rollback")
      : null)));

  const docs = documents.map((d) => h("tr", { dataset: { document: d.id } },
    h("td", {}, d.id),
    h("td", {}, d.title || "(untitled)"),
    h("td", {}, badge(d.job_status === "rejected" && d.state === "context" ? "rejected" : d.state)),
    h("td", {}, d.answered_from === "weights" ? "its weights" : "reading it"),
    h("td", {}, d.shard || "–"),
    h("td", {}, pct(d.accuracy_weights)),
    h("td", {}, pct(d.accuracy_context)),
    h("td", {}, h("a", { href: `#/job/${d.job_id}` }, d.job_id.slice(0, 8))),
    h("td", {}, act("Forget", `Forget document ${d.id} (${d.title || "untitled"})? A new version is published without it.`,
      () => api(`${path}/documents/${d.id}`, { method: "DELETE" })))));

  ui.show(
    h("div", { class: "title-row" },
      h("h1", {}, name),
      h("div", { class: "actions" },
        h("a", { class: "button", href: `#/teach/${encodeURIComponent(name)}` }, "Teach it"),
        h("a", { class: "button", href: `#/ask/${encodeURIComponent(name)}` }, "Ask it"),
        kb.retired ? null : act("Consolidate", `Retrain ${name} from its record (a "sleep")? It runs as a learn job.`,
          async () => { const j = await api(`${path}/consolidate`, { method: "POST" }); location.hash = `#/job/${j.id}`; }),
        kb.retired ? null : act("Retire", `Retire ${name}? It stops serving and its queued jobs are cancelled.`,
          () => api(path, { method: "DELETE" }), "danger"))),
    h("p", { class: "summary" },
      `${isKb ? "Knowledge base" : "Single adapter"} · serving ${kb.current_version ? `v${kb.current_version}` : "nothing yet"}`,
      isKb ? ` · ${kb.documents} documents in ${kb.shards} shards` : "",
      kb.tenant ? ` · tenant ${kb.tenant}` : "", kb.retired ? " · retired" : ""),
    isKb ? h("section", {}, h("h2", {}, "Documents"),
      table(["#", "Title", "State", "Answered from", "Shard", "From weights", "Read in context", "Job", ""], docs,
        { id: "documents" }),
      listed.total > documents.length ? h("p", { class: "muted" },
        `The first ${documents.length} of ${listed.total} documents (GET ${path}/documents pages through all).`) : null)
      : null,
    h("section", {}, h("h2", {}, "Retention"), retentionChart(learnJobs)),
    h("section", {}, h("h2", {}, "Versions"),
      table(["Version", "Status", "Source", "Parent", "Job", "Created", ""], versions, { id: "versions" })),
    h("section", {}, h("h2", {}, "Gate reports"),
      learnJobs.length ? learnJobs.map((j) => gateReport(j)) : h("p", { class: "empty" }, "No learn jobs yet.")));
}

// Accuracy across versions, from the numbers each gate already stored (SEAL's Figure 6): the new
// document's probes, the earlier documents' probes and the general canary, after each learn.
function retentionChart(jobs) {
  const points = [];
  for (const j of [...jobs].reverse()) {
    for (const d of j.metrics?.documents || []) {
      const n = d.gate?.numbers || {};
      points.push({ label: j.version ? `v${j.version}` : j.status, job: j, title: d.title,
                    new: n.new_after ?? d.accuracy_after, old: n.old_after, canary: n.canary_after,
                    context: d.accuracy_context });
    }
  }
  if (!points.length) return h("p", { class: "empty" }, "Retention appears once a learn has been gated.");
  const series = [["new", "this document (from weights)"], ["context", "this document (read in context)"],
                  ["old", "earlier documents"], ["canary", "general questions"]];
  const W = 640, H = 220, L = 40, B = 30, T = 10, R = 10;
  const x = (i) => L + (points.length === 1 ? (W - L - R) / 2 : (i * (W - L - R)) / (points.length - 1));
  const y = (v) => T + (1 - v) * (H - T - B);
  const ns = "http://www.w3.org/2000/svg";
  const s = (tag, attrs, text) => {
    const el = document.createElementNS(ns, tag);
    for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
    if (text !== undefined) el.textContent = text;
    return el;
  };
  const svg = s("svg", { viewBox: `0 0 ${W} ${H}`, class: "chart", role: "img",
                         "aria-label": "accuracy on each document across versions" });
  for (const v of [0, 0.5, 1]) {
    svg.append(s("line", { x1: L, x2: W - R, y1: y(v), y2: y(v), class: "grid" }));
    svg.append(s("text", { x: L - 6, y: y(v) + 4, class: "axis", "text-anchor": "end" }, pct(v)));
  }
  points.forEach((p, i) => svg.append(s("text", { x: x(i), y: H - 8, class: "axis", "text-anchor": "middle" }, p.label)));
  for (const [key] of series) {
    const pts = points.map((p, i) => [i, p[key]]).filter(([, v]) => v !== null && v !== undefined);
    if (!pts.length) continue;
    if (pts.length > 1) svg.append(s("polyline", { points: pts.map(([i, v]) => `${x(i)},${y(v)}`).join(" "), class: `line ${key}` }));
    for (const [i, v] of pts) {
      const dot = s("circle", { cx: x(i), cy: y(v), r: 4, class: `dot ${key}` });
      dot.append(s("title", {}, `${points[i].label} ${points[i].title || ""}: ${pct(v)}`));
      svg.append(dot);
    }
  }
  return h("figure", { id: "retention" }, svg,
    h("figcaption", {}, series.map(([key, label]) => h("span", { class: `legend ${key}` }, label))));
}

function gateReport(j) {
  const docs = j.metrics?.documents || [];
  const head = docs.map((d) => `${d.title || "untitled"}: ${pct(d.accuracy_before)} → ${pct(d.accuracy_after)}`
    + (d.accuracy_context !== null && d.accuracy_context !== undefined ? ` (read in context ${pct(d.accuracy_context)})` : "")).join("; ");
  return h("details", { class: "gate", dataset: { job: j.id } },
    h("summary", {}, badge(j.status), ` ${j.version ? `v${j.version}` : ""} ${when(j.created_at)} `,
      h("span", { class: "muted" }, head || j.error || j.kind)),
    j.error ? h("p", { class: "error" }, j.error) : null,
    docs.map((d) => h("div", { class: "gate-doc" },
      h("h3", {}, d.title || "untitled", d.shard ? ` · ${d.shard}` : "", d.answers_from ? ` · answers from ${d.answers_from}` : ""),
      d.gate?.reasons?.length ? h("ul", { class: "reasons" }, d.gate.reasons.map((r) => h("li", {}, r))) : null,
      numbers(d.gate?.numbers || {}),
      predictions("Probes", d.predictions || [], true),
      predictions("Earlier documents", d.gate?.old_predictions || [], false),
      canary(d.gate?.canary_predictions || []))));
}

function numbers(n) {
  const rows = [["this document", n.new_before, n.new_after], ["earlier documents", n.old_before, n.old_after],
                ["general questions (canary)", n.canary_before, n.canary_after]]
    .filter(([, b, a]) => b !== undefined || a !== undefined)
    .map(([label, b, a]) => h("tr", {}, h("td", {}, label), h("td", {}, pct(b)), h("td", {}, pct(a))));
  return rows.length ? table(["", "Before", "After"], rows, { class: "numbers" }) : null;
}

function predictions(title, preds, withBefore) {
  if (!preds.length) return null;
  return h("details", {}, h("summary", {}, `${title} (${preds.filter((p) => p.correct).length} of ${preds.length} right)`),
    table(["Question", "Expected", ...(withBefore ? ["Before"] : []), "After", ""], preds.map((p) => h("tr", {},
      h("td", {}, p.question), h("td", {}, p.answer), withBefore ? h("td", {}, p.before ?? "–") : null,
      h("td", {}, p.prediction ?? "–"), h("td", {}, p.correct ? "✓" : "✗")))));
}

function canary(preds) {
  if (!preds.length) return null;
  const lost = preds.filter((p) => p.correct_before && !p.correct).length;
  return h("p", { class: "muted" }, `Canary: ${preds.filter((p) => p.correct).length} of ${preds.length} general answers kept`
    + (lost ? `, ${lost} lost` : ""));
}

// ---------------------------------------------------------------- teach

async function teach(ui, preselect) {
  const adapters = (await api("/v1/adapters")).data.filter((a) => !a.retired);
  let fileDocuments = null; // documents read from a .jsonl file, sent as they are
  const select = h("select", { id: "teach-kb", name: "kb" },
    adapters.map((a) => h("option", { value: a.name, selected: a.name === preselect }, a.name)),
    h("option", { value: "", selected: !adapters.length || (preselect && !adapters.some((a) => a.name === preselect)) },
      "New knowledge base…"));
  const newName = h("input", { id: "teach-new", placeholder: "name, e.g. handbook", pattern: "[A-Za-z0-9][A-Za-z0-9._\\-]*",
                                value: preselect && !adapters.some((a) => a.name === preselect) ? preselect : "" });
  const title = h("input", { id: "teach-title", placeholder: "optional" });
  const text = h("textarea", { id: "teach-text", rows: 10, placeholder: "Paste the document here, or upload a file." });
  const probes = h("textarea", { id: "teach-probes", rows: 3, placeholder: "optional, one per line:  question | answer" });
  const fileNote = h("span", { class: "muted" });
  const file = h("input", { id: "teach-file", type: "file", accept: ".txt,.md,.jsonl,.pdf",
    onchange: async () => {
      const f = file.files[0];
      fileDocuments = null;
      if (!f) return;
      try {
        if (f.name.toLowerCase().endsWith(".jsonl")) {
          fileDocuments = (await f.text()).split("\n").filter((l) => l.trim()).map((line) => {
            const item = JSON.parse(line);
            return { title: item.title, text: item.text ?? item.context,
                     probes: (item.probes ?? item.questions ?? []).map((p) => ({ question: p.question, answer: p.answer })) };
          });
          fileNote.textContent = `${fileDocuments.length} documents from ${f.name}`;
        } else {
          const out = await api(`/v1/files/extract?filename=${encodeURIComponent(f.name)}`, { method: "POST", body: f,
            headers: { "Content-Type": "application/octet-stream" } });
          text.value = out.text;
          if (!title.value) title.value = out.title;
          fileNote.textContent = `${out.characters} characters from ${f.name}`;
        }
      } catch (error) {
        flash(`${f.name}: ${error.message}`);
      }
    } });
  const showName = () => { newName.hidden = select.value !== ""; };
  select.addEventListener("change", showName);
  showName();

  const form = h("form", { id: "teach-form", class: "stack",
    onsubmit: async (event) => {
      event.preventDefault();
      const adapter = select.value || newName.value.trim();
      if (!adapter) return flash("Name the knowledge base to teach.");
      const asked = probes.value.split("\n").filter((l) => l.includes("|")).map((l) => {
        const [question, ...answer] = l.split("|");
        return { question: question.trim(), answer: answer.join("|").trim() };
      });
      const documents = fileDocuments || [{ text: text.value, ...(title.value.trim() ? { title: title.value.trim() } : {}),
                                            ...(asked.length ? { probes: asked } : {}) }];
      try {
        const job = await api("/v1/learn", { method: "POST", json: { adapter, documents } });
        location.hash = `#/job/${job.id}`;
      } catch (error) {
        flash(error.message);
      }
    } },
    h("label", {}, "Knowledge base ", select, " ", newName),
    h("label", {}, "Title ", title),
    h("label", {}, "Document ", text),
    h("label", {}, "Or a file (.txt, .md, .pdf, or .jsonl of documents) ", file, " ", fileNote),
    h("label", {}, "Probes ", probes),
    h("p", { class: "muted" }, "Without probes the model writes its own questions and keeps those it answers "
      + "when it reads the document. The document is answerable in context as soon as it is accepted."),
    h("button", { type: "submit", id: "teach-submit" }, "Teach"));
  ui.show(h("h1", {}, "Teach"), form);
}

async function job(ui, id) {
  const path = `/v1/learn/${encodeURIComponent(id)}`;
  let current = await api(path);
  const status = h("span", { id: "job-status" });
  const stage = h("span", { id: "job-stage" });
  const bar = h("progress", { id: "job-progress", max: 1, value: current.progress });
  const outcome = h("div", { id: "job-outcome" });
  const events = h("ol", { id: "job-events", class: "events" });
  const cancel = h("button", { type: "button", onclick: async () => {
    if (!confirm("Cancel this learn job?")) return;
    try { await api(`${path}/cancel`, { method: "POST" }); } catch (error) { flash(error.message); }
  } }, "Cancel");

  const show = (j) => {
    current = j;
    status.replaceChildren(badge(j.status));
    stage.textContent = TERMINAL.has(j.status) ? "" : j.stage ? `${j.stage} · ${pct(j.progress)}` : pct(j.progress);
    bar.value = j.progress;
    cancel.hidden = TERMINAL.has(j.status);
    if (!TERMINAL.has(j.status)) return;
    const name = encodeURIComponent(j.adapter);
    if (j.status === "published") {
      outcome.replaceChildren(h("p", { class: "ok" }, `Published ${j.adapter} v${j.version}. `,
        h("a", { href: `#/ask/${name}` }, "Ask it"), " · ", h("a", { href: `#/kb/${name}` }, "See the knowledge base")));
    } else {
      outcome.replaceChildren(h("p", { class: "error" }, `Not learned (${j.status}): ${j.error || "no reason recorded"}`),
        h("p", { class: "muted" }, "Accepted documents stay answerable: the base model reads them in context."));
    }
    outcome.append(gateReport(j));
  };
  ui.show(
    h("h1", {}, "Learn job ", h("code", {}, id)),
    h("p", {}, "Into ", h("a", { href: `#/kb/${encodeURIComponent(current.adapter)}` }, current.adapter),
      ` · ${current.documents} document(s) · created ${when(current.created_at)}`),
    h("p", { class: "progress-row" }, status, " ", bar, " ", stage, " ", cancel),
    outcome, h("h2", {}, "Events"), events);
  show(current);

  // The stage and progress live on the job; its events stream. Poll one, follow the other.
  const stop = ui.every(1000, async () => {
    try { show(await api(path)); if (TERMINAL.has(current.status)) stop(); } catch { /* next tick */ }
  });
  try {
    for await (const event of sse(ui, `${path}/events`)) {
      if (event.response) continue;
      const data = JSON.parse(event.data);
      if (event.event === "end") break;
      events.append(h("li", { class: data.level }, h("time", {}, new Date(data.at).toLocaleTimeString()), " ", data.message));
    }
  } catch (error) {
    if (error.name !== "AbortError") events.append(h("li", { class: "warning" }, `event stream: ${error.message}`));
  }
  if (ui.current) show(await api(path));
}

// ---------------------------------------------------------------- ask

async function ask(ui, preselect) {
  const models = (await api("/v1/models")).data;
  const base = models[0]?.id;
  const select = h("select", { id: "ask-model" },
    models.map((m) => h("option", { value: m.id, selected: m.id === preselect }, m.id === base ? `${m.id} (base model)` : m.id)));
  const question = h("textarea", { id: "ask-question", rows: 3, placeholder: "Ask a question" });
  const answer = h("div", { id: "ask-answer", class: "answer" });
  const route = h("p", { id: "ask-route", class: "muted" });
  const form = h("form", { id: "ask-form", class: "stack",
    onsubmit: async (event) => {
      event.preventDefault();
      answer.textContent = "";
      route.textContent = "";
      const button = form.querySelector("button");
      button.disabled = true;
      try {
        const stream = sse(ui, "/v1/chat/completions", { method: "POST", headers: { "Content-Type": "application/json" },
          body: JSON.stringify({ model: select.value, stream: true, max_tokens: 128, temperature: 0,
                                 messages: [{ role: "user", content: question.value }] }) });
        for await (const event of stream) {
          if (event.response) { route.replaceChildren(describeRoute(event.response.headers.get("seal-route"), select.value === base)); continue; }
          if (event.data === "[DONE]") break;
          const delta = JSON.parse(event.data).choices?.[0]?.delta?.content;
          if (delta) answer.textContent += delta;
        }
      } catch (error) {
        flash(error.message);
      } finally {
        button.disabled = false;
      }
    } },
    h("label", {}, "Model or knowledge base ", select), question, h("button", { type: "submit" }, "Ask"));
  ui.show(h("h1", {}, "Ask"), form, route, answer);
}

function describeRoute(header, isBase) {
  if (!header) return isBase ? "Answered by the base model." : "Answered by the adapter's weights.";
  const [kind, rest] = header.includes(":") ? header.split(/:(.*)/s) : [null, header];
  const words = kind === "pending" ? `the base model reading document ${rest}, whose learn is still running`
    : kind === "context" ? `the base model reading document ${rest}`
      : header === "base" ? "the base model (no document matched the question)"
        : `the shard ${header}, from its weights`;
  return h("span", {}, "Answered by ", words, " · ", h("code", { id: "ask-route-header" }, `seal-route: ${header}`));
}

// ---------------------------------------------------------------- operations

async function operations(ui) {
  const draw = async () => {
    const ops = await api("/v1/operations");
    const cards = [h("div", { class: "card" }, h("h3", {}, "Jobs"),
      table(["Status", "Jobs"], Object.entries(ops.jobs).map(([s, n]) => h("tr", {}, h("td", {}, badge(s)), h("td", {}, n)))))];
    if (ops.queues) {
      cards.push(h("div", { class: "card" }, h("h3", {}, "Queue"),
        table(["Queue", "Waiting"], Object.entries(ops.queues).map(([q, n]) => h("tr", {}, h("td", {}, q), h("td", {}, n))))));
    }
    if (ops.workers) {
      cards.push(h("div", { class: "card", id: "ops-workers" }, h("h3", {}, "Workers"),
        h("p", { class: "big" }, `${ops.workers.busy} busy of ${ops.workers.total}`)));
    }
    cards.push(h("div", { class: "card wide" }, h("h3", {}, `Served by ${ops.process || "this API process"}`),
      table(["Name", "Kind", "Version"], ops.served.map((s) => h("tr", {}, h("td", {}, s.name),
        h("td", {}, s.kind === "knowledge_base" ? "knowledge base" : "adapter"), h("td", {}, s.version ? `v${s.version}` : "–"))))));
    ui.show(h("h1", {}, "Operations"), h("div", { class: "cards", id: "operations" }, cards),
      h("p", { class: "muted" }, "The numbers /metrics exports, refreshed every 3 s."));
  };
  await draw();
  ui.every(3000, () => draw().catch((error) => ui.current && flash(error.message)));
}

showWho();
render();
