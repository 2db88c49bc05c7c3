// qwend's chat page: sessions, profiles and models from the daemon's own API (docs/ui.md).

import { api, apiKey, getJSON, sendJSON, sseEvents } from "./api.js";
import { Answer, element, renderHistory, userMessage } from "./render.js";

const $ = (id) => document.getElementById(id);
const PROFILE_STORAGE = "qwend.profile";

const state = {
  sessions: [],
  current: null, // the open session's record
  health: null,
  loadedModels: null, // the loaded models /health last named (the model picker shows them)
  follow: true, // keep the conversation scrolled to its end (until the reader scrolls up)
  controller: null, // aborts the answer streaming now; the daemon cancels a turn whose client went away
};

// ---- model state (GET /health needs no key)

async function refreshHealth() {
  const badge = $("model-state");
  let health;
  try {
    health = await (await fetch("/health")).json();
  } catch {
    badge.className = "model-state down";
    badge.lastElementChild.textContent = "daemon unreachable";
    return;
  }
  state.health = health;
  let kind, label;
  if (health.loading?.length) {
    [kind, label] = ["loading", `loading ${health.loading.map((m) => m.model).join(", ")}…`];
  } else if (!health.model_loaded) {
    [kind, label] = ["idle", `${health.model} · not loaded`];
  } else if (health.generation_in_progress) {
    [kind, label] = ["busy", `${health.model} · generating`];
  } else {
    [kind, label] = ["ready", `${health.model} · ready`];
  }
  badge.className = `model-state ${kind}`;
  badge.lastElementChild.textContent = label;
  const loaded = Object.keys(health.queue ?? {}).sort().join(",");
  if (loaded !== state.loadedModels) {
    state.loadedModels = loaded;
    loadModels().catch(showError);
  }
}

// ---- pickers

async function loadProfiles() {
  const { profiles } = await getJSON("/v1/profiles");
  const select = $("profile");
  const wanted = localStorage.getItem(PROFILE_STORAGE) || "general";
  select.replaceChildren(...profiles.map((p) => new Option(p.name, p.name, false, p.name === wanted)));
  const describe = () => {
    const profile = profiles.find((p) => p.name === select.value);
    const tools = profile?.tools.length ? ` Tools: ${profile.tools.join(", ")}.` : "";
    $("profile-hint").textContent = profile ? `${profile.description}${tools}` : "";
  };
  select.onchange = () => {
    localStorage.setItem(PROFILE_STORAGE, select.value);
    describe();
  };
  describe();
}

async function loadModels() {
  const { data } = await getJSON("/v1/models");
  const select = $("model");
  const wanted = select.value || state.health?.model;
  select.replaceChildren(...data.map((m) => {
    const option = new Option(`${m.id}${m.loaded ? " · loaded" : ""}`, m.id);
    option.selected = m.id === wanted;
    return option;
  }));
}

// ---- sessions

function relativeTime(seconds) {
  const ago = Date.now() / 1000 - seconds;
  if (ago < 60) return "just now";
  if (ago < 3600) return `${Math.floor(ago / 60)} min ago`;
  if (ago < 86400) return `${Math.floor(ago / 3600)} h ago`;
  return new Date(seconds * 1000).toLocaleDateString();
}

const titleOf = (session) => session.title || "New chat";

function titleFrom(message) {
  const line = message.trim().split("\n")[0];
  if (line.length <= 60) return line;
  const cut = line.slice(0, 60);
  return `${cut.slice(0, cut.lastIndexOf(" ") > 30 ? cut.lastIndexOf(" ") : 60)}…`;
}

async function refreshSessions() {
  state.sessions = (await getJSON("/v1/sessions")).sessions;
  const list = $("sessions");
  list.replaceChildren(...state.sessions.map(sessionItem));
  $("no-sessions").hidden = state.sessions.length > 0;
}

function sessionItem(session) {
  const item = element("li", `session${session.session_id === state.current?.session_id ? " active" : ""}`);
  item.dataset.id = session.session_id;
  const open = element("button", "session-open");
  open.type = "button";
  open.append(element("span", "session-title", titleOf(session)),
    element("span", "session-sub", `${session.profile_name} · ${relativeTime(session.updated_at)}`));
  open.onclick = () => openSession(session.session_id).catch(showError);
  const rename = element("button", "icon-button rename", "✎");
  rename.type = "button";
  rename.title = rename.ariaLabel = "Rename";
  rename.onclick = () => startRename(item, session);
  const remove = element("button", "icon-button delete", "✕");
  remove.type = "button";
  remove.title = remove.ariaLabel = "Delete";
  remove.onclick = () => confirmDelete(remove, session);
  const actions = element("span", "session-actions");
  actions.append(rename, remove);
  item.append(open, actions);
  return item;
}

function startRename(item, session) {
  const input = element("input", "rename-input");
  input.value = session.title || "";
  input.maxLength = 200;
  input.ariaLabel = "Session title";
  item.querySelector(".session-title").replaceWith(input);
  input.focus();
  input.select();
  let done = false;
  const finish = async (save) => {
    if (done) return;
    done = true;
    const title = input.value.trim();
    if (save && title && title !== session.title) await renameSession(session.session_id, title).catch(showError);
    await refreshSessions();
  };
  input.onkeydown = (event) => {
    if (event.key === "Enter") finish(true);
    if (event.key === "Escape") finish(false);
  };
  input.onblur = () => finish(true);
}

async function renameSession(id, title) {
  const session = await sendJSON("PATCH", `/v1/sessions/${id}`, { title });
  if (state.current?.session_id === id) showHeading(session);
  return session;
}

function confirmDelete(button, session) {
  if (!button.classList.contains("confirm")) { // a second click within 3 s deletes
    button.classList.add("confirm");
    button.textContent = "Delete?";
    setTimeout(() => {
      button.classList.remove("confirm");
      button.textContent = "✕";
    }, 3000);
    return;
  }
  (async () => {
    await api(`/v1/sessions/${session.session_id}`, { method: "DELETE" });
    if (state.current?.session_id === session.session_id) closeSession();
    await refreshSessions();
  })().catch(showError);
}

function showHeading(session) {
  state.current = session;
  $("session-heading").textContent = session ? `${titleOf(session)} · ${session.profile_name}` : "";
}

function closeSession() {
  stop();
  showHeading(null);
  history.replaceState(null, "", location.pathname);
  $("log").replaceChildren($("welcome"));
  $("welcome").hidden = false;
}

async function openSession(id) {
  stop();
  const session = await getJSON(`/v1/sessions/${id}`);
  showHeading(session);
  history.replaceState(null, "", `#${id}`);
  const log = $("log");
  log.replaceChildren($("welcome"));
  $("welcome").hidden = session.messages.length > 0;
  renderHistory(log, session.messages);
  log.scrollTop = log.scrollHeight;
  for (const item of $("sessions").children) item.classList.toggle("active", item.dataset.id === id);
  document.body.classList.remove("nav-open");
  $("input").focus();
}

async function createSession() {
  const session = await sendJSON("POST", "/v1/sessions", { profile_name: $("profile").value, model: $("model").value || null });
  await refreshSessions();
  await openSession(session.session_id);
  return session;
}

// ---- chatting

function setStatus(text) {
  $("status").hidden = !text;
  $("status").textContent = text || "";
}

function showError(error) {
  setStatus(`⚠ ${error.message || error}`);
}

function setBusy(busy) {
  $("send").hidden = busy;
  $("stop").hidden = !busy;
  document.body.classList.toggle("busy", busy);
}

function stop() {
  state.controller?.abort();
}

function follow() {
  const log = $("log");
  if (state.follow) log.scrollTop = log.scrollHeight;
}

async function send(text) {
  if (state.controller || !text.trim()) return;
  if (!state.current) await createSession();
  const session = state.current;
  const log = $("log");
  $("welcome").hidden = true;
  const answer = new Answer();
  answer.onRender = follow;
  log.append(userMessage(text), answer.el);
  state.follow = true;
  follow();
  if (!session.title) { // name a new session after its first message
    renameSession(session.session_id, titleFrom(text)).then(refreshSessions).catch(() => {});
  }
  const controller = new AbortController();
  state.controller = controller;
  setBusy(true);
  setStatus("Sending…");
  const began = performance.now();
  let usage = null;
  let model = "";
  let finished = false;
  const handle = ({ name, data }) => {
    switch (name) {
      case "queued":
        setStatus(data.loading ? `Loading ${data.loading}…` : `Waiting in the queue: ${data.position} ahead`);
        break;
      case "started":
        model = data.model;
        setStatus("Thinking…");
        break;
      case "progress": // a long prompt read in chunks before the first token
        setStatus(`Reading the conversation: ${data.read.toLocaleString()} of ${data.total.toLocaleString()} tokens…`);
        break;
      case "reasoning":
        setStatus("Reasoning…");
        answer.addReasoning(data.text);
        break;
      case "token":
        setStatus("");
        answer.addText(data.text);
        break;
      case "tool_call":
        answer.addToolCall(data);
        setStatus(`Running ${data.name}…`);
        break;
      case "tool_result":
        answer.addToolResult(data);
        setStatus("Thinking…");
        break;
      case "usage":
        usage = data;
        break;
      case "done": {
        finished = true;
        if (answer.empty && data.response) answer.addText(data.response);
        answer.flush();
        const seconds = ((performance.now() - began) / 1000).toFixed(1);
        const parts = [model, usage && `${usage.completion_tokens} tokens`, `${seconds} s`,
          usage?.steps > 1 && `${usage.steps} steps`, data.finish_reason === "length" && "cut off at max_tokens"];
        answer.note(parts.filter(Boolean).join(" · "));
        break;
      }
      case "error":
        finished = true;
        answer.fail(data.detail);
        break;
    }
  };
  try {
    const response = await api(`/v1/sessions/${session.session_id}/chat`, {
      method: "POST", body: { message: text, stream: true }, signal: controller.signal,
    });
    for await (const event of sseEvents(response)) {
      handle(event);
      follow();
    }
    if (!finished) answer.fail("The connection closed before the answer was complete.");
  } catch (error) {
    answer.flush();
    if (error.name === "AbortError") answer.note("Stopped: kept in the session as far as it came.", "stopped");
    else answer.fail(error.message);
  } finally {
    state.controller = null;
    setBusy(false);
    if (!$("status").textContent.startsWith("⚠")) setStatus("");
    refreshSessions().catch(showError);
    refreshHealth();
  }
}

// ---- wiring

function autosize(input) {
  input.style.height = "auto";
  input.style.height = `${Math.min(input.scrollHeight, 200)}px`;
}

function start() {
  const input = $("input");
  $("composer").onsubmit = (event) => {
    event.preventDefault();
    const text = input.value;
    if (!text.trim() || state.controller) return;
    input.value = "";
    autosize(input);
    setStatus("");
    send(text).catch(showError);
  };
  input.oninput = () => autosize(input);
  $("log").onscroll = () => {
    const log = $("log");
    state.follow = log.scrollHeight - log.scrollTop - log.clientHeight < 80;
  };
  input.onkeydown = (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      $("composer").requestSubmit();
    }
  };
  document.addEventListener("keydown", (event) => {
    if (event.key === "Escape" && state.controller) stop();
  });
  $("stop").onclick = stop;
  $("new-session").onsubmit = (event) => {
    event.preventDefault();
    createSession().catch(showError);
  };
  const nav = (open) => {
    document.body.classList.toggle("nav-open", open);
    $("menu").setAttribute("aria-expanded", String(open));
  };
  $("menu").onclick = () => nav(!document.body.classList.contains("nav-open"));
  $("scrim").onclick = () => nav(false);
  apiKey.onChange = () => ($("forget-key").hidden = !apiKey.get());
  apiKey.onChange();
  $("forget-key").onclick = () => {
    apiKey.forget();
    apiKey.onChange();
  };

  refreshHealth();
  setInterval(() => document.hidden || refreshHealth(), 3000);
  Promise.all([loadProfiles(), refreshSessions()])
    .then(() => {
      const id = location.hash.slice(1);
      if (id && state.sessions.some((s) => s.session_id === id)) return openSession(id);
      input.focus();
    })
    .catch(showError);
}

start();
