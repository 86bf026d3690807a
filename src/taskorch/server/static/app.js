// taskorch dashboard: a dependency-free single page over the public REST API and the
// WebSocket at /ws/tasks (and /ws/chat). The API key or token the user enters is kept in
// sessionStorage (gone with the tab) and sent as a header, never in a URL. Errors from the
// API are shown as they are: HTTP status, error code, message, request id.
"use strict";

const KEY_STORAGE = "taskorch.credential";
const STATUSES = ["PENDING", "RUNNING", "COMPLETED", "FAILED", "CANCELLED"];
const TERMINAL = new Set(["COMPLETED", "FAILED", "CANCELLED"]);
const PAGE_SIZE = 20;

// -- small helpers --------------------------------------------------------------------------

function $(selector, root = document) { return root.querySelector(selector); }

function h(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else if (name === "text") node.textContent = value;
    else node.setAttribute(name, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function when(text) { return text ? new Date(text).toLocaleString() : ""; }
function json(value) { return JSON.stringify(value, null, 2); }
function statusCell(status) { return h("span", { class: `status ${status}`, text: status }); }

function credential() { return sessionStorage.getItem(KEY_STORAGE) || ""; }

function authHeaders() {
  const secret = credential();
  if (!secret) return {};
  // taskorch API keys start with tko_; anything else is an OAuth bearer token.
  return secret.startsWith("tko_") ? { "x-api-key": secret } : { authorization: `Bearer ${secret}` };
}

// -- the REST API ---------------------------------------------------------------------------

class ApiError extends Error {
  constructor(status, body, requestId) {
    const code = body && (body.reason || (body.error && body.error.code) || "");
    const message = (body && body.message) || (typeof body === "string" ? body : "");
    super(`HTTP ${status}${code ? " " + code : ""}: ${message}`);
    this.status = status;
    this.body = body;
    this.requestId = requestId || (body && body.request_id) || "";
  }
}

async function api(method, path, body) {
  const headers = { ...authHeaders() };
  if (body !== undefined) headers["content-type"] = "application/json";
  const response = await fetch(path, {
    method, headers, body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await response.text();
  let parsed = text;
  try { parsed = text ? JSON.parse(text) : {}; } catch (_) { /* not JSON: shown as text */ }
  if (!response.ok) throw new ApiError(response.status, parsed, response.headers.get("x-request-id"));
  return parsed;
}

function showError(error) {
  const box = $("#error");
  if (!error) { box.hidden = true; box.textContent = ""; return; }
  const id = error.requestId ? ` (request ${error.requestId})` : "";
  box.textContent = (error instanceof ApiError ? error.message : String(error.message || error)) + id;
  box.hidden = false;
}

async function guarded(action) {
  try { showError(null); return await action(); } catch (error) { showError(error); return undefined; }
}

// -- the WebSocket ----------------------------------------------------------------------------

// One connection per path, authenticated by its first message; subscriptions are re-made on
// reconnect, each resuming after the last sequence it delivered.
class Live {
  constructor(path) {
    this.path = path;
    this.handlers = new Map(); // key -> {request, onMessage, last}
    this.ws = null;
    this.backoff = 500;
    this.closed = false;
  }

  url() { return `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}${this.path}`; }

  connect() {
    if (this.ws && this.ws.readyState <= WebSocket.OPEN) return;
    const ws = new WebSocket(this.url());
    this.ws = ws;
    ws.onopen = () => {
      this.backoff = 500;
      $("#live-state").textContent = "live: connected";
      const secret = credential();
      if (secret) {
        ws.send(JSON.stringify(secret.startsWith("tko_")
          ? { action: "auth", api_key: secret } : { action: "auth", token: secret }));
      }
      for (const entry of this.handlers.values()) this.sendRequest(entry);
    };
    ws.onmessage = (frame) => this.dispatch(JSON.parse(frame.data));
    ws.onclose = () => {
      $("#live-state").textContent = "live: reconnecting";
      if (!this.closed && this.handlers.size) {
        setTimeout(() => this.connect(), this.backoff);
        this.backoff = Math.min(this.backoff * 2, 10000);
      }
    };
  }

  sendRequest(entry) {
    const request = { ...entry.request };
    if (entry.last) request.after_sequence = entry.last;
    this.ws.send(JSON.stringify(request));
  }

  send(key, request, onMessage) {
    const entry = { request, onMessage, last: 0 };
    this.handlers.set(key, entry);
    if (this.ws && this.ws.readyState === WebSocket.OPEN) this.sendRequest(entry);
    else this.connect();
  }

  forget(key) {
    const entry = this.handlers.get(key);
    this.handlers.delete(key);
    if (entry && entry.request.task_id && this.ws && this.ws.readyState === WebSocket.OPEN) {
      this.ws.send(JSON.stringify({ action: "unsubscribe", task_id: entry.request.task_id }));
    }
  }

  dispatch(message) {
    const key = message.task_id || message.session_id || "";
    const entry = this.handlers.get(key) || this.handlers.get(`post:${key}`);
    if (message.type === "error" && !entry) { showError(new Error(`${message.code}: ${message.message}`)); return; }
    if (message.type === "lagged" && entry) {
      // Fell behind: subscribe again from the last update delivered.
      entry.last = message.after_sequence || entry.last;
      this.sendRequest(entry);
      return;
    }
    if (!entry) {
      const all = this.handlers.get("*");
      if (all && message.type === "update") all.onMessage(message);
      return;
    }
    if (message.type === "update" && entry.request.task_id !== "*") entry.last = message.sequence;
    entry.onMessage(message);
    if (message.type === "update" && this.handlers.get("*") && entry !== this.handlers.get("*")) {
      this.handlers.get("*").onMessage(message);
    }
  }

  reset() {
    this.closed = true;
    this.handlers.clear();
    if (this.ws) this.ws.close();
    this.ws = null;
    this.closed = false;
  }
}

const tasksLive = new Live("/ws/tasks");
const chatLive = new Live("/ws/chat");

// -- views ------------------------------------------------------------------------------------

const view = () => $("#view");
let leaving = [];

function onLeave(cleanup) { leaving.push(cleanup); }

async function overview() {
  const cards = h("div", { class: "cards" },
    STATUSES.map((s) => h("div", { class: "card" },
      h("div", { class: `status ${s}`, text: s }), h("div", { class: "n", id: `count-${s}`, text: "…" }))));
  const recent = h("tbody");
  view().replaceChildren(h("h2", { text: "Tasks by status" }), cards,
    h("h3", { text: "Latest tasks" }), h("table", { id: "recent" }, taskHead(), recent));
  let timer = null;
  const refresh = () => guarded(async () => {
    const totals = await Promise.all(STATUSES.map((s) => api("GET", `/v1/tasks?status=${s}&limit=1`)));
    totals.forEach((page, i) => { $(`#count-${STATUSES[i]}`).textContent = page.total; });
    const latest = await api("GET", "/v1/tasks?limit=10&sort_by=created_at&order=desc");
    recent.replaceChildren(...latest.tasks.map(taskRow));
    return true;
  });
  if (!(await refresh())) return; // refused: the error stays shown
  // Live counts: any change of the caller's tasks refreshes them (at most every 2 s).
  tasksLive.send("*", { action: "subscribe", task_id: "*" }, (message) => {
    if (message.type !== "update" || message.event === "PROGRESS" || timer) return;
    timer = setTimeout(() => { timer = null; refresh(); }, 2000);
  });
  onLeave(() => { clearTimeout(timer); tasksLive.forget("*"); });
}

function taskHead() {
  return h("thead", {}, h("tr", {}, ["Task", "Type", "Status", "Progress", "Priority", "Created"]
    .map((t) => h("th", { text: t }))));
}

function taskRow(task) {
  return h("tr", { "data-task-id": task.task_id, "data-status": task.status },
    h("td", {}, h("a", { href: `#/task/${task.task_id}`, text: task.task_id.slice(0, 8) })),
    h("td", { text: task.task_type || task.template || "" }),
    h("td", {}, statusCell(task.status)),
    h("td", { text: `${Math.round(task.progress || 0)}%` }),
    h("td", { text: task.priority }),
    h("td", { text: when(task.created_at) }));
}

async function taskList(params) {
  const status = params.get("status") || "";
  const sort = params.get("sort_by") || "created_at";
  const order = params.get("order") || "desc";
  const page = Math.max(1, Number(params.get("page") || 1));
  const go = (changes) => {
    const next = new URLSearchParams({ status, sort_by: sort, order, page, ...changes });
    location.hash = `#/tasks?${next}`;
  };
  const select = (id, value, options, onchange) => h("select", { id, onchange },
    options.map(([v, label]) => h("option", { value: v, selected: v === value, text: label })));
  const body = h("tbody");
  const info = h("span", { id: "task-page-info", class: "muted" });
  view().replaceChildren(
    h("h2", { text: "Tasks" }),
    h("div", { class: "toolbar" },
      h("label", { text: "Status" }),
      select("task-filter-status", status, [["", "any"], ...STATUSES.map((s) => [s, s])],
        (e) => go({ status: e.target.value, page: 1 })),
      h("label", { text: "Sort by" }),
      select("task-sort", sort, [["created_at", "created"], ["priority", "priority"],
        ["status", "status"], ["task_type", "type"]], (e) => go({ sort_by: e.target.value })),
      select("task-order", order, [["desc", "descending"], ["asc", "ascending"]],
        (e) => go({ order: e.target.value })),
      h("button", { id: "task-prev", disabled: page <= 1, onclick: () => go({ page: page - 1 }), text: "‹ Previous" }),
      h("button", { id: "task-next", onclick: () => go({ page: page + 1 }), text: "Next ›" }),
      info),
    h("table", { id: "task-table" }, taskHead(), body));
  await guarded(async () => {
    const query = new URLSearchParams({ page, limit: PAGE_SIZE, sort_by: sort, order });
    if (status) query.set("status", status);
    const listed = await api("GET", `/v1/tasks?${query}`);
    body.replaceChildren(...listed.tasks.map(taskRow));
    const pages = listed.pagination.pages || 1;
    info.textContent = `page ${page} of ${pages}, ${listed.total} tasks`;
    $("#task-next").disabled = page >= pages;
  });
}

async function taskPage(taskId) {
  const progress = h("progress", { id: "task-progress", max: 100, value: 0 });
  const progressText = h("span", { id: "task-progress-text", text: "0%" });
  const status = h("span", { id: "task-status" });
  const message = h("span", { id: "task-message", class: "muted" });
  const output = h("pre", { id: "task-output" });
  const result = h("pre", { id: "task-result" });
  const events = h("ol", { id: "task-events" });
  const subtasks = h("tbody", { id: "task-subtasks" });
  const artifacts = h("ul", { id: "task-artifacts" });
  const cancel = h("button", { id: "task-cancel", text: "Cancel",
    onclick: () => guarded(async () => { show(await api("POST", `/v1/tasks/${taskId}:cancel`, {})); }) });
  const details = h("pre", { id: "task-details" });
  view().replaceChildren(
    h("h2", {}, "Task ", h("code", { text: taskId })),
    h("section", {}, status, " ", progress, " ", progressText, " ", message, " ", cancel),
    h("section", {}, h("h3", { text: "Output" }), output),
    h("section", {}, h("h3", { text: "Result" }), result, artifacts),
    h("section", {}, h("h3", { text: "Subtasks" }), h("table", {}, h("thead", {}, h("tr", {},
      ["Subtask", "Kind", "Status", "Progress", "Attempt", "Worker", "Error"].map((t) => h("th", { text: t })))), subtasks)),
    h("section", {}, h("h3", { text: "Events" }), events),
    h("section", {}, h("h3", { text: "Task" }), details));

  function setProgress(value) {
    const percent = Math.round(Number(value) || 0);
    progress.value = percent;
    progressText.textContent = `${percent}%`;
  }

  function show(task) {
    status.replaceChildren(statusCell(task.status));
    status.dataset.status = task.status;
    setProgress(task.status === "COMPLETED" ? 100 : task.progress);
    cancel.hidden = TERMINAL.has(task.status);
    if (task.result && Object.keys(task.result).length) result.textContent = json(task.result);
    if (task.error) result.textContent = `${task.error_code || "ERROR"}: ${task.error}`;
    const files = (task.result && task.result.artifacts) || [];
    artifacts.replaceChildren(...files.map((a) => h("li", {},
      h("a", { href: "#", text: `${a.name} (${a.content_type}, ${a.size} bytes)`,
        onclick: (e) => { e.preventDefault(); download(taskId, a.name); } }))));
    details.textContent = json(task);
  }

  async function loadSubtasks() {
    const listed = await api("GET", `/v1/tasks/${taskId}/subtasks`);
    subtasks.replaceChildren(...listed.subtasks.map((s) => h("tr", {},
      h("td", { text: s.name || s.subtask_id.slice(0, 8) }), h("td", { text: s.kind }),
      h("td", {}, statusCell(s.status)), h("td", { text: `${Math.round(s.progress || 0)}%` }),
      h("td", { text: `${s.attempt}/${s.max_attempts}` }), h("td", { text: s.worker_id || "" }),
      h("td", { text: s.error || "" }))));
  }

  let subtaskTimer = null;
  const task = await guarded(() => api("GET", `/v1/tasks/${taskId}`));
  if (!task) return;
  show(task);
  guarded(loadSubtasks);
  if (task.output) output.textContent = task.output;
  tasksLive.send(taskId, { action: "subscribe", task_id: taskId }, (update) => {
    if (update.type === "error") { showError(new Error(`${update.code}: ${update.message}`)); return; }
    if (update.type !== "update") return;
    if (update.event === "SNAPSHOT") output.textContent = "";
    events.append(h("li", { "data-sequence": update.sequence },
      `#${update.sequence} ${update.event} ${update.status}`,
      update.event === "PROGRESS" ? ` ${Math.round(update.progress)}%` : "",
      update.message ? ` — ${update.message}` : ""));
    if (update.output_delta) output.textContent += update.output_delta;
    status.replaceChildren(statusCell(update.status));
    status.dataset.status = update.status;
    message.textContent = update.message || "";
    if (update.event === "PROGRESS" || update.event === "SNAPSHOT") setProgress(update.progress);
    if (update.task) show(update.task);
    if (update.event === "STATUS_CHANGED") guarded(loadSubtasks);
    else if (update.event === "PROGRESS" && !subtaskTimer) {
      // The subtasks' own progress: re-read at most once a second while the task runs.
      subtaskTimer = setTimeout(() => { subtaskTimer = null; guarded(loadSubtasks); }, 1000);
    }
  });
  onLeave(() => { clearTimeout(subtaskTimer); tasksLive.forget(taskId); });
}

async function download(taskId, name) {
  await guarded(async () => {
    const response = await fetch(`/v1/tasks/${taskId}/artifacts/${encodeURIComponent(name)}`, { headers: authHeaders() });
    if (!response.ok) throw new ApiError(response.status, await response.json().catch(() => ({})));
    const url = URL.createObjectURL(await response.blob());
    h("a", { href: url, download: name }).click();
    setTimeout(() => URL.revokeObjectURL(url), 10000);
  });
}

async function submitForm() {
  const kind = h("select", { id: "submit-kind" },
    [["text", "Text analysis"], ["echo", "Echo (diagnostics)"], ["inference", "Inference"], ["template", "Template"]]
      .map(([v, t]) => h("option", { value: v, text: t })));
  const fields = h("div");
  const priority = h("input", { id: "submit-priority", type: "number", min: 1, max: 10, value: 5 });
  const form = h("form", { id: "submit-form" },
    h("label", { text: "Kind" }), kind, fields,
    h("label", { text: "Priority (1-10)" }), priority,
    h("p", {}, h("button", { id: "submit-button", type: "submit", text: "Submit" })));
  view().replaceChildren(h("h2", { text: "Submit a task" }), form);
  let templates = null;

  async function render() {
    const choice = kind.value;
    if (choice === "text") {
      fields.replaceChildren(h("label", { text: "Text" }), h("textarea", { id: "submit-text" }));
    } else if (choice === "echo") {
      fields.replaceChildren(h("label", { text: "input_data (JSON)" }),
        h("textarea", { id: "submit-input", text: '{"delay_seconds": 2, "progress_steps": 4}' }));
    } else if (choice === "inference") {
      const models = await guarded(() => api("GET", "/v1/models")) || { models: [], supported_task_types: [] };
      fields.replaceChildren(
        h("label", { text: "Task type" }), h("select", { id: "submit-task-type" },
          models.supported_task_types.map((t) => h("option", { value: t, text: t }))),
        h("label", { text: "Model" }), h("select", { id: "submit-model" },
          models.models.map((m) => h("option", { value: m.name, text: `${m.name} (${m.task})` }))),
        h("label", { text: "input_data (JSON)" }), h("textarea", { id: "submit-input", text: '{"text": ""}' }),
        h("label", { text: "parameters (JSON)" }), h("textarea", { id: "submit-parameters", text: "{}" }));
    } else {
      templates = templates || (await guarded(() => api("GET", "/v1/templates")) || { templates: [] }).templates;
      const picker = h("select", { id: "submit-template", onchange: () => params(picker.value) },
        templates.map((t) => h("option", { value: t.name, text: t.name })));
      const box = h("div", { id: "template-params" });
      fields.replaceChildren(h("label", { text: "Template" }), picker, box);
      const params = (name) => {
        const template = templates.find((t) => t.name === name);
        box.replaceChildren(h("p", { class: "muted", text: template ? template.description : "" }),
          ...(template ? template.parameters : []).map(paramInput));
      };
      if (templates.length) params(templates[0].name);
    }
  }

  kind.addEventListener("change", render);
  await render();
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    guarded(async () => {
      const body = { priority: Number(priority.value) };
      const parse = (id) => {
        const text = $(`#${id}`).value.trim();
        try { return text ? JSON.parse(text) : {}; } catch (e) { throw new Error(`${id}: not JSON (${e.message})`); }
      };
      if (kind.value === "text") body.text = $("#submit-text").value;
      else if (kind.value === "echo") { body.task_type = "echo"; body.input_data = parse("submit-input"); }
      else if (kind.value === "inference") {
        body.task_type = $("#submit-task-type").value;
        body.model_name = $("#submit-model").value;
        body.input_data = parse("submit-input");
        body.parameters = parse("submit-parameters");
      } else {
        body.template = $("#submit-template").value;
        body.parameters = {};
        for (const input of document.querySelectorAll("#template-params [data-param]")) {
          const value = input.type === "checkbox" ? input.checked
            : input.type === "number" ? (input.value === "" ? undefined : Number(input.value)) : input.value;
          if (value !== undefined && value !== "") body.parameters[input.dataset.param] = value;
        }
      }
      const task = await api("POST", "/v1/tasks", body);
      location.hash = `#/task/${task.task_id}`;
    });
  });
}

function paramInput(p) {
  const label = h("label", { text: `${p.name}${p.required ? " *" : ""} — ${p.description || p.type}` });
  let input;
  if (p.enum && p.enum.length) {
    input = h("select", {}, p.enum.map((v) => h("option", { value: v, text: v })));
  } else if (p.type === "boolean") {
    input = h("input", { type: "checkbox" });
  } else if (p.type === "integer" || p.type === "number") {
    input = h("input", { type: "number", step: p.type === "integer" ? 1 : "any" });
  } else {
    input = h("input", { type: "text" });
  }
  input.dataset.param = p.name;
  input.id = `param-${p.name}`;
  return h("div", {}, label, input);
}

async function models() {
  const body = h("tbody");
  view().replaceChildren(h("h2", { text: "Models" }), h("table", { id: "model-table" },
    h("thead", {}, h("tr", {}, ["Model", "Task", "Family", "State", "Execution provider", "Batch"]
      .map((t) => h("th", { text: t })))), body));
  await guarded(async () => {
    const listed = await api("GET", "/v1/models");
    body.replaceChildren(...listed.models.map((m) => h("tr", { "data-model": m.name },
      h("td", { text: m.name }), h("td", { text: m.task }), h("td", { text: m.family }),
      h("td", { text: m.state }), h("td", { text: m.execution_provider || "-" }),
      h("td", { text: m.max_batch_size }))));
    if (!listed.models.length) body.append(h("tr", {}, h("td", { colspan: 6, class: "muted", text: "no models in the repository" })));
  });
}

async function chat(params) {
  const current = params.get("session") || "";
  const sessions = h("ul", { id: "chat-sessions" });
  const modelPick = h("select", { id: "chat-model" });
  const messages = h("div", { id: "chat-messages" });
  const input = h("textarea", { id: "chat-input", placeholder: "Message" });
  const send = h("button", { id: "chat-send", text: "Send", disabled: !current });
  view().replaceChildren(h("h2", { text: "Chat" }), h("div", { class: "chat" },
    h("div", {}, h("label", { text: "Model" }), modelPick,
      h("button", { id: "chat-new", text: "New session", onclick: () => guarded(async () => {
        const session = await api("POST", "/v1/chat/sessions", { model_name: modelPick.value });
        location.hash = `#/chat?session=${session.session_id}`;
      }) }), sessions),
    h("div", {}, messages, input, h("p", {}, send))));

  const bubble = (m) => h("div", { class: `msg ${m.role.toLowerCase()}`, "data-message-id": m.message_id, "data-status": m.status },
    h("div", { class: "who", text: `${m.role.toLowerCase()} · ${m.status}` }), h("div", { class: "text", text: m.content }));

  await guarded(async () => {
    const [listed, known] = await Promise.all([api("GET", "/v1/chat/sessions?limit=50"), api("GET", "/v1/models")]);
    modelPick.replaceChildren(...known.models.filter((m) => m.task === "text_generation")
      .map((m) => h("option", { value: m.name, text: m.name })));
    sessions.replaceChildren(...listed.sessions.map((s) => h("li", {
      class: s.session_id === current ? "active" : "", "data-session-id": s.session_id,
      onclick: () => { location.hash = `#/chat?session=${s.session_id}`; },
      text: `${s.title || s.model_name} · ${s.session_id.slice(0, 8)}`,
    })));
    if (current) {
      const page = await api("GET", `/v1/chat/sessions/${current}/messages?limit=200`);
      messages.replaceChildren(...page.messages.filter((m) => m.role !== "SYSTEM").map(bubble));
    }
  });

  send.addEventListener("click", () => {
    const content = input.value;
    if (!content.trim()) return;
    input.value = "";
    send.disabled = true;
    const replies = new Map();
    chatLive.send(`post:${current}`, { action: "post", session_id: current, content }, (event) => {
      if (event.type === "error") { showError(new Error(`${event.code}: ${event.message}`)); send.disabled = false; return; }
      if (event.type !== "chat") return;
      if (event.event === "MESSAGE_ADDED" && event.message) {
        const node = bubble(event.message);
        replies.set(event.message.message_id, node);
        messages.append(node);
      } else if (event.event === "REPLY_STARTED") {
        const node = replies.get(event.message_id);
        if (node) { $(".text", node).textContent = ""; node.dataset.status = "RUNNING"; }
      } else if (event.event === "REPLY_DELTA") {
        const node = replies.get(event.message_id);
        if (node) $(".text", node).textContent += event.delta;
      } else if (event.event === "REPLY_FINISHED" && event.message) {
        const node = replies.get(event.message_id);
        if (node) node.replaceWith(bubble(event.message));
        chatLive.forget(`post:${current}`);
        send.disabled = false;
      }
    });
  });
}

async function workers() {
  const slots = h("div", { id: "workers-slots", class: "cards" });
  const leases = h("tbody", { id: "workers-leases" });
  view().replaceChildren(h("h2", { text: "Workers" }), slots,
    h("h3", { text: "Leases of running work" }),
    h("table", {}, h("thead", {}, h("tr", {}, ["Worker", "Task", "Subtask", "Kind", "Attempt", "Lease expires"]
      .map((t) => h("th", { text: t })))), leases));
  await guarded(async () => {
    const health = await api("GET", "/v1/health");
    slots.replaceChildren(
      h("div", { class: "card" }, h("div", { class: "muted", text: "in-process slots" }), h("div", { class: "n", text: health.worker_slots })),
      h("div", { class: "card" }, h("div", { class: "muted", text: "busy" }), h("div", { class: "n", text: health.busy_worker_slots })),
      h("div", { class: "card" }, h("div", { class: "muted", text: "server" }), h("div", { class: "n", text: health.status })));
    const running = await api("GET", "/v1/tasks?status=RUNNING&limit=50");
    const rows = [];
    for (const task of running.tasks) {
      const listed = await api("GET", `/v1/tasks/${task.task_id}/subtasks`);
      for (const s of listed.subtasks.filter((x) => x.status === "RUNNING")) {
        rows.push(h("tr", {}, h("td", { text: s.worker_id }),
          h("td", {}, h("a", { href: `#/task/${task.task_id}`, text: task.task_id.slice(0, 8) })),
          h("td", { text: s.subtask_id.slice(0, 8) }), h("td", { text: s.kind }),
          h("td", { text: `${s.attempt}/${s.max_attempts}` }), h("td", { text: when(s.lease_expires_at) })));
      }
    }
    leases.replaceChildren(...(rows.length ? rows : [h("tr", {}, h("td", { colspan: 6, class: "muted", text: "nothing running" }))]));
  });
}

// -- routing and log-in -----------------------------------------------------------------------

async function route() {
  for (const cleanup of leaving.splice(0)) cleanup();
  showError(null);
  const [path, query = ""] = location.hash.replace(/^#/, "").split("?");
  const params = new URLSearchParams(query);
  for (const link of document.querySelectorAll("nav a")) {
    link.classList.toggle("active", link.getAttribute("href") === `#${path}`);
  }
  if (path.startsWith("/task/")) return taskPage(decodeURIComponent(path.slice(6)));
  const views = { "/tasks": taskList, "/submit": submitForm, "/models": models, "/chat": chat, "/workers": workers };
  return (views[path] || overview)(params);
}

function showLogin() {
  const secret = credential();
  $("#whoami").textContent = secret ? `key ${secret.slice(0, 8)}…` : "no key";
  $("#logout-button").hidden = !secret;
  $("#login-key").hidden = !!secret;
  $("#login-button").hidden = !!secret;
}

$("#login").addEventListener("submit", (event) => {
  event.preventDefault();
  const secret = $("#login-key").value.trim();
  if (!secret) return;
  sessionStorage.setItem(KEY_STORAGE, secret);
  $("#login-key").value = "";
  tasksLive.reset();
  chatLive.reset();
  showLogin();
  route();
});

$("#logout-button").addEventListener("click", () => {
  sessionStorage.removeItem(KEY_STORAGE);
  tasksLive.reset();
  chatLive.reset();
  showLogin();
  route();
});

window.addEventListener("hashchange", route);
showLogin();
route();
