// Turning messages and stream events into the page. Model output is untrusted: marked renders its
// Markdown, DOMPurify sanitizes the HTML, and images other than data: URLs are never loaded (the page's
// Content-Security-Policy blocks them too), so an injected ![](https://host/?secret) cannot leak anything.

/* global marked, DOMPurify, hljs */

marked.use({ gfm: true, breaks: false });
hljs.configure({ ignoreUnescapedHTML: true });

DOMPurify.addHook("afterSanitizeAttributes", (node) => {
  if (node.tagName === "A") {
    node.setAttribute("target", "_blank");
    node.setAttribute("rel", "noopener noreferrer");
  } else if (node.tagName === "IMG" && !(node.getAttribute("src") || "").startsWith("data:")) {
    node.setAttribute("data-blocked", node.getAttribute("src") || "");
    node.removeAttribute("src");
  }
});
const PURIFY = { FORBID_TAGS: ["style", "form", "button", "textarea", "select"], FORBID_ATTR: ["style"] };

export function element(tag, className, text) {
  const el = document.createElement(tag);
  if (className) el.className = className;
  if (text !== undefined) el.textContent = text;
  return el;
}

export function renderMarkdown(el, text) {
  el.innerHTML = DOMPurify.sanitize(marked.parse(text), PURIFY);
  for (const img of el.querySelectorAll("img[data-blocked]")) {
    const note = element("span", "blocked-image", `[image not loaded: ${img.alt || img.dataset.blocked}]`);
    note.title = `${img.dataset.blocked} (only images in the page itself are shown)`;
    img.replaceWith(note);
  }
  for (const code of el.querySelectorAll("pre > code")) highlight(code);
}

function highlight(code, language) {
  if (language) code.classList.add(`language-${language}`);
  hljs.highlightElement(code);
  const pre = code.parentElement;
  const copy = element("button", "copy", "copy");
  copy.type = "button";
  copy.addEventListener("click", async () => {
    await navigator.clipboard.writeText(code.textContent);
    copy.textContent = "copied";
    setTimeout(() => (copy.textContent = "copy"), 1200);
  });
  pre.append(copy);
}

function codeBlock(text, language) {
  const pre = element("pre");
  const code = element("code", "", text);
  pre.append(code);
  highlight(code, language && hljs.getLanguage(language) ? language : undefined);
  return pre;
}

/** A tool call and, once it arrives, its result: `.tool-card` with the tool's name, arguments and result. */
function toolCard(call) {
  const card = element("div", "tool-card running");
  card.dataset.tool = call.name;
  const head = element("div", "tool-head");
  head.append(element("span", "tool-icon", "⚙"), element("span", "tool-name", call.name),
    element("span", "tool-state", "running…"));
  card.append(head, toolArguments(call));
  return card;
}

function toolArguments(call) {
  const box = element("div", "tool-args");
  let args;
  try {
    args = JSON.parse(call.arguments || "{}");
  } catch {
    box.append(codeBlock(call.arguments));
    return box;
  }
  const rest = {};
  for (const [name, value] of Object.entries(args ?? {})) {
    if (typeof value === "string" && (name === "code" || value.includes("\n"))) {
      box.append(element("div", "tool-label", name));
      box.append(codeBlock(value, call.name.includes("python") ? "python" : undefined));
    } else {
      rest[name] = value;
    }
  }
  if (Object.keys(rest).length) box.prepend(codeBlock(JSON.stringify(rest, null, 2), "json"));
  return box;
}

function fillResult(card, { success, result, error }) {
  card.classList.remove("running");
  card.classList.add(success ? "ok" : "failed");
  card.querySelector(".tool-state").textContent = success ? "done" : "failed";
  const box = element("div", "tool-result");
  box.append(element("div", "tool-label", success ? "Result" : "Error"));
  const text = String((success ? result : error) ?? "");
  box.append(element("pre", success ? (text ? "" : "empty") : "error", text || "(no output)"));
  card.append(box);
}

/** One assistant reply as it streams (or as the history has it): reasoning, text parts and tool cards. */
export class Answer {
  constructor() {
    this.el = element("div", "msg assistant");
    this.reasoning = element("details", "reasoning");
    this.reasoning.hidden = true;
    this.reasoning.append(element("summary", "", "Reasoning"), element("div", "reasoning-text"));
    this.parts = element("div", "parts");
    this.meta = element("div", "meta");
    this.el.append(this.reasoning, this.parts, this.meta);
    this.text = "";
    this.textEl = null;
    this.cards = new Map();
    this.frame = 0;
  }

  get empty() {
    return !this.parts.childElementCount;
  }

  addReasoning(text) {
    const box = this.reasoning.lastElementChild;
    box.textContent += text;
    if (this.reasoning.hidden) {
      this.reasoning.hidden = false;
      this.reasoning.open = true; // open while it streams; closed once the answer starts
    }
  }

  addText(text) {
    if (!text) return;
    if (!this.textEl) {
      this.textEl = element("div", "markdown");
      this.parts.append(this.textEl);
      this.text = "";
      if (!this.reasoning.hidden) this.reasoning.open = false;
    }
    this.text += text;
    this.frame ||= requestAnimationFrame(() => this.flush());
  }

  /** Render the text received so far now (the stream renders at most once a frame). */
  flush() {
    cancelAnimationFrame(this.frame);
    this.frame = 0;
    if (this.textEl) renderMarkdown(this.textEl, this.text);
    this.onRender?.();
  }

  /** Text after this goes into a new part (the next step of a tool loop). */
  newPart() {
    this.flush();
    this.textEl = null;
  }

  addToolCall(call) {
    this.newPart();
    const card = toolCard(call);
    this.cards.set(call.id, card);
    this.parts.append(card);
  }

  addToolResult(result) {
    let card = this.cards.get(result.id);
    if (!card) {
      card = toolCard({ name: result.name || "tool", arguments: "{}" });
      this.parts.append(card);
    }
    fillResult(card, result);
  }

  note(text, className = "") {
    this.meta.textContent = text;
    this.meta.className = `meta ${className}`;
  }

  fail(message) {
    this.flush();
    this.parts.append(element("div", "error-box", message));
  }
}

/** The messages of GET /v1/sessions/{id} as the page shows them: one block per user message and reply. */
export function renderHistory(log, messages) {
  let answer = null;
  let tokens = 0;
  let steps = 0;
  let stopped = false; // the answer was cut short (Stop, a closed tab): kept as far as it came
  const close = () => {
    answer?.flush();
    if (answer && stopped) answer.note("Stopped", "stopped");
    else if (answer && tokens) answer.note(`${tokens} tokens${steps > 1 ? ` · ${steps} steps` : ""}`);
    tokens = steps = 0;
    stopped = false;
  };
  for (const message of messages) {
    if (message.role === "system") continue;
    if (message.role === "user" || message.role === "summary") {
      close();
      answer = null;
      log.append(message.role === "user" ? userMessage(message.content, message.folded)
        : element("div", "msg summary", `Summary of the earlier conversation: ${message.content}`));
      continue;
    }
    if (!answer) {
      answer = new Answer();
      answer.el.classList.toggle("folded", message.folded);
      log.append(answer.el);
    }
    if (message.role === "assistant") {
      tokens += message.completion_tokens || 0;
      steps += 1;
      stopped ||= Boolean(message.stopped);
      if (message.reasoning) answer.addReasoning(message.reasoning);
      answer.newPart();
      answer.addText(message.content);
      for (const call of message.tool_calls ?? []) answer.addToolCall(call);
    } else if (message.role === "tool") {
      const failed = message.content.startsWith("Error: ");
      answer.addToolResult({
        id: message.tool_call_id, name: message.name, success: !failed,
        result: failed ? null : message.content, error: failed ? message.content.slice(7) : null,
      });
    }
  }
  close();
  for (const details of log.querySelectorAll("details.reasoning")) details.open = false;
}

export function userMessage(text, folded = false) {
  const msg = element("div", `msg user${folded ? " folded" : ""}`);
  msg.append(element("div", "bubble", text));
  return msg;
}
