// Talking to the daemon: JSON calls that ask for an API key when one answers 401, and the native SSE
// progress stream (docs/streaming.md) read from fetch's ReadableStream, so a Stop can abort it.

const KEY_STORAGE = "qwend.apiKey";

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

export const apiKey = {
  get: () => localStorage.getItem(KEY_STORAGE),
  forget: () => localStorage.removeItem(KEY_STORAGE),
  onChange: () => {},
};

let keyPrompt = null; // one dialog for every request refused at the same moment

function askForKey(refused) {
  keyPrompt ??= new Promise((resolve) => {
    const dialog = document.getElementById("key-dialog");
    const input = document.getElementById("key-input");
    const command = document.createElement("code");
    command.textContent = "qwend keys create NAME";
    document.getElementById("key-reason").replaceChildren(...(refused
      ? ["The key kept in this browser was refused. Enter another one."]
      : ["This daemon asks for an API key (", command, " makes one). It is kept in this browser."]));
    input.value = "";
    dialog.oncancel = (event) => event.preventDefault(); // nothing works without a key: keep asking
    document.getElementById("key-form").onsubmit = (event) => {
      event.preventDefault();
      const key = input.value.trim();
      if (!key) return;
      localStorage.setItem(KEY_STORAGE, key);
      dialog.close();
      keyPrompt = null;
      apiKey.onChange();
      resolve();
    };
    dialog.showModal();
    input.focus();
  });
  return keyPrompt;
}

async function errorMessage(response) {
  const text = await response.text();
  try {
    const body = JSON.parse(text);
    const detail = body.detail ?? body.error?.message ?? body.error;
    if (typeof detail === "string") return detail;
    if (detail) return JSON.stringify(detail);
  } catch {
    // not JSON: the text itself
  }
  return text || `${response.status} ${response.statusText}`;
}

/** fetch() a daemon route; a 401 asks for a key (once for all waiting calls) and tries again. */
export async function api(path, { method = "GET", body, signal } = {}) {
  for (;;) {
    const key = apiKey.get();
    const headers = { Accept: body === undefined ? "application/json" : "application/json, text/event-stream" };
    if (key) headers.Authorization = `Bearer ${key}`;
    if (body !== undefined) headers["Content-Type"] = "application/json";
    const response = await fetch(path, {
      method, headers, signal, body: body === undefined ? undefined : JSON.stringify(body),
    });
    if (response.status === 401) {
      if (key && apiKey.get() === key) apiKey.forget();
      await askForKey(Boolean(key));
      continue;
    }
    if (!response.ok) throw new ApiError(response.status, await errorMessage(response));
    return response;
  }
}

export async function getJSON(path) {
  return (await api(path)).json();
}

export async function sendJSON(method, path, body) {
  return (await api(path, { method, body })).json();
}

/** The named events of an SSE response, as {name, data} with data parsed from JSON. */
export async function* sseEvents(response) {
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += value;
      let end;
      while ((end = buffer.search(/\r?\n\r?\n/)) >= 0) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end).replace(/^\r?\n\r?\n/, "");
        const event = parseBlock(block);
        if (event) yield event;
      }
    }
  } finally {
    reader.releaseLock();
  }
}

function parseBlock(block) {
  let name = "message";
  const data = [];
  for (const line of block.split(/\r?\n/)) {
    if (!line || line.startsWith(":")) continue; // comments carry the keep-alive pings
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "event") name = value;
    else if (field === "data") data.push(value);
  }
  return data.length ? { name, data: JSON.parse(data.join("\n")) } : null;
}
