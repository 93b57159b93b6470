// One session: its header and actions, its history (the last page first, older pages as the
// reader scrolls up), the reply streaming in, tool calls, and the message box.

import { api, ApiError, get, post } from "./api.js";
import { batched, byId, clock, fill, fullTime, h, pretty, statusBadge, timeAgo } from "./dom.js";
import {
  emit,
  on,
  openSession,
  prependMessages,
  putApproval,
  putMessage,
  putSession,
  setLastPage,
  state,
} from "./state.js";
import { available as markdownAvailable, markdown } from "./markdown.js";
import { toast } from "./panels.js";

const PAGE = 50;
const NEAR_BOTTOM_PX = 80;
const ACTIVE = new Set(["running", "waiting_approval"]);

const view = byId("session-view");
const history = byId("history");
const top = byId("history-top");
const list = byId("message-list");
const input = byId("composer-input");
let elements = new Map(); // message id -> {el, body, extra, text}
let loadingOlder = false;
let stick = true; // keep the newest message in view while the reader is at the bottom
let deleting = null; // the session this page deletes (its own deletion needs no notice)

const path = (id, rest = "") => `/api/v1/sessions/${encodeURIComponent(id)}${rest}`;

function atBottom() {
  return history.scrollHeight - history.scrollTop - history.clientHeight < NEAR_BOTTOM_PX;
}

const follow = batched(() => {
  if (stick) history.scrollTop = history.scrollHeight;
});

function who(message) {
  if (message.role === "user") return "You";
  if (message.role === "assistant") {
    const session = state.sessions.get(message.session_id);
    return (session && session.agent) || "Assistant";
  }
  return message.role === "tool" ? "Tool" : "System";
}

function messageElement(message) {
  const body = h("div", { class: "msg-body" });
  const extra = h("div", { class: "msg-extra" });
  const status = h("span", { class: "msg-status" });
  const el = h(
    "article",
    { class: "msg", dataset: { id: message.id, role: message.role } },
    h(
      "div",
      { class: "msg-head" },
      h("span", { class: "who", text: who(message) }),
      h("time", { datetime: message.created_at, title: fullTime(message.created_at) }, clock(message.created_at)),
      status,
    ),
    body,
    extra,
  );
  return { el, body, extra, status, text: null, formatted: false };
}

const STATUS_TEXT = { streaming: "writing…", pending: "queued", cancelled: "cancelled", failed: "failed" };

function toolBlock(call) {
  const decision = call.approval
    ? h("span", {
        class: `decision decision-${call.approval}`,
        text: call.approval === "pending" ? "waiting for approval" : call.approval,
      })
    : null;
  const parts = [
    h("div", { class: "tool-head" }, "Tool call", h("span", { class: "name", text: call.tool }), decision),
  ];
  if (call.input !== undefined) parts.push(h("pre", { class: "input", text: pretty(call.input) }));
  if (call.output !== undefined) {
    parts.push(h("div", { class: "result-label", text: call.is_error ? "Error" : "Result" }));
    const output = typeof call.output === "string" ? call.output : pretty(call.output);
    parts.push(h("pre", { class: "output", text: output }));
  }
  return h("div", { class: `tool${call.is_error ? " is-error" : ""}` }, parts);
}

/** Bring one message's element up to date (made and placed if new). */
function renderMessage(id) {
  const current = state.current;
  const message = current && current.messages.get(id);
  if (!message) return;
  let entry = elements.get(id);
  if (!entry) {
    entry = messageElement(message);
    elements.set(id, entry);
    const index = current.order.indexOf(id);
    const next = current.order.slice(index + 1).find((other) => elements.get(other)?.el.isConnected);
    list.insertBefore(entry.el, next ? elements.get(next).el : null);
  }
  entry.el.dataset.status = message.status;
  // (a cut final event: shown while the whole text is read from the history)
  if (message.truncated) entry.el.dataset.truncated = "true";
  else delete entry.el.dataset.truncated;
  entry.status.textContent = message.truncated ? "loading the rest…" : STATUS_TEXT[message.status] || "";
  // A reply is drawn from its Markdown once it is whole (streamed, it grows as plain text;
  // a cut one waits for its whole text); the user's words and tools' output stay as typed.
  const drawn = message.role === "assistant" && message.status === "complete" && !message.truncated;
  const formatted = drawn && markdownAvailable();
  if (entry.text !== message.content || entry.formatted !== formatted) {
    if (formatted) fill(entry.body, markdown(message.content));
    else entry.body.textContent = message.content;
    entry.body.classList.toggle("md", formatted);
    entry.text = message.content;
    entry.formatted = formatted;
  }
  const extras = (current.tools.get(id) || []).map(toolBlock);
  if (message.status === "failed" || message.status === "cancelled") {
    const error = message.error || {};
    const text =
      message.status === "cancelled"
        ? "Cancelled"
        : `Failed: ${error.message || "the reply failed"}${error.code ? ` (${error.code})` : ""}`;
    extras.push(h("div", { class: "msg-error", role: "note", text }));
  }
  fill(entry.extra, extras);
}

function renderAll() {
  elements = new Map();
  list.replaceChildren();
  for (const id of state.current.order) renderMessage(id);
  renderTop();
}

function renderTop() {
  const current = state.current;
  if (!current || !current.loaded) top.textContent = "Loading…";
  else if (current.prev) top.textContent = loadingOlder ? "Loading older messages…" : "Scroll up for older messages";
  else top.textContent = current.order.length ? "Start of the session" : "No messages yet. Say something below.";
}

const renderHead = batched(() => {
  const current = state.current;
  const session = current && state.sessions.get(current.id);
  if (!session) return;
  const titleEl = byId("session-title");
  titleEl.textContent = session.title || "Untitled session";
  titleEl.classList.toggle("untitled", !session.title);
  document.title = `${session.title || "Untitled session"} · aiosvc`;
  const detail = state.statusDetail.get(session.id);
  fill(
    byId("session-meta"),
    statusBadge(session.status),
    detail && session.status === "waiting_approval" ? h("span", { text: detail }) : null,
    h("span", { text: `agent ${session.agent}` }),
    session.project ? h("span", { text: `project ${session.project}` }) : null,
    session.computer ? h("span", { text: `on ${session.computer}` }) : null,
    h("span", {}, `${session.message_count} messages · active `, timeAgo(session.last_message_at || session.updated_at)),
  );
  const ended = session.status === "ended";
  byId("end-session").disabled = ended;
  byId("cancel-reply").disabled = !ACTIVE.has(session.status);
  byId("send").disabled = ended;
  input.disabled = ended;
  const notice = byId("session-notice");
  notice.hidden = !ended;
  notice.textContent = ended ? "This session has ended: its history stays, it takes no more messages." : "";
});

async function loadOlder() {
  const current = state.current;
  if (!current || !current.loaded || !current.prev || loadingOlder) return;
  loadingOlder = true;
  renderTop();
  try {
    const query = `?limit=${PAGE}&before=${encodeURIComponent(current.prev)}`;
    const page = await get(path(current.id, `/messages${query}`));
    if (state.current !== current) return;
    const height = history.scrollHeight;
    const scrolled = history.scrollTop;
    const fresh = prependMessages(page.data);
    current.prev = page.prev;
    const before = list.firstChild;
    for (const message of fresh) {
      const entry = messageElement(message);
      elements.set(message.id, entry);
      list.insertBefore(entry.el, before);
      renderMessage(message.id);
    }
    history.scrollTop = scrolled + (history.scrollHeight - height); // the reader stays put
  } catch (failure) {
    toast(failure.message);
  } finally {
    loadingOlder = false;
    renderTop();
  }
}

/** Open a session (or open it again after a resynchronisation): fetch it, its last page of
 * history and its approvals; live events meanwhile are merged by id. */
export async function showSession(id) {
  const current = openSession(id);
  elements = new Map();
  list.replaceChildren();
  stick = true;
  renderTop();
  view.hidden = false;
  try {
    const session = (await get(path(id))).data;
    if (state.current !== current) return;
    putSession(session);
    const offset = Math.max(0, session.message_count - PAGE);
    const [page, approvals] = await Promise.all([
      get(path(id, `/messages?limit=${PAGE}&offset=${offset}`)),
      get(`/api/v1/approvals?session_id=${encodeURIComponent(id)}&limit=500`),
    ]);
    if (state.current !== current) return;
    setLastPage(page.data, page.prev);
    for (const approval of approvals.data.reverse()) putApproval(approval);
    renderAll();
    renderHead();
    history.scrollTop = history.scrollHeight;
    // (for scripts/bench_dashboard.py: the last page is on screen from here)
    requestAnimationFrame(() => performance.mark("aiosvc-session-shown"));
  } catch (failure) {
    if (state.current !== current) return;
    if (failure instanceof ApiError && failure.status === 404) {
      top.textContent = "This session does not exist (it may have been deleted).";
      byId("session-title").textContent = "Session not found";
      byId("session-meta").replaceChildren();
    } else {
      top.textContent = `The history could not be loaded: ${failure.message}`;
    }
  }
}

export function hideSession() {
  view.hidden = true;
  state.current = null;
  elements = new Map();
  list.replaceChildren();
  document.title = "aiosvc";
}

function setupComposer() {
  const form = byId("composer");
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const current = state.current;
    const content = input.value;
    if (!current || !content.trim()) return;
    const send = byId("send");
    send.disabled = true;
    try {
      const answer = await post(path(current.id, "/messages"), { content });
      if (input.value === content) input.value = "";
      stick = true;
      putMessage(answer.data.message);
    } catch (failure) {
      toast(failure.message);
    } finally {
      renderHead();
      send.disabled = false;
    }
  });
  input.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      form.requestSubmit();
    }
  });
}

function act(button, run) {
  button.addEventListener("click", async () => {
    const current = state.current;
    if (!current) return;
    button.disabled = true;
    try {
      await run(current);
    } catch (failure) {
      toast(failure.message);
    } finally {
      button.disabled = false;
      renderHead();
    }
  });
}

function setupActions() {
  act(byId("cancel-reply"), (current) => post(path(current.id, "/cancel")));
  act(byId("end-session"), async (current) => putSession((await post(path(current.id, "/end"))).data));
  const remove = byId("delete-session");
  let armed = null;
  act(remove, async (current) => {
    if (!armed) {
      remove.textContent = "Confirm delete";
      remove.classList.add("confirm");
      armed = setTimeout(() => {
        armed = null;
        remove.textContent = "Delete";
        remove.classList.remove("confirm");
      }, 4000);
      return;
    }
    clearTimeout(armed);
    armed = null;
    remove.textContent = "Delete";
    remove.classList.remove("confirm");
    deleting = current.id;
    await api("DELETE", path(current.id));
    state.sessions.delete(current.id);
    emit("sessions");
    location.hash = "#/";
  });
  const form = byId("rename-form");
  const title = byId("session-title");
  const rename = (open) => {
    form.hidden = !open;
    title.hidden = open;
    if (open) {
      const session = state.sessions.get(state.current.id);
      byId("rename-input").value = (session && session.title) || "";
      byId("rename-input").focus();
    }
  };
  byId("rename").addEventListener("click", () => state.current && rename(true));
  byId("rename-cancel").addEventListener("click", () => rename(false));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    try {
      const body = { title: byId("rename-input").value.trim() };
      putSession((await api("PATCH", path(state.current.id), body)).data);
      rename(false);
    } catch (failure) {
      toast(failure.message);
    }
  });
}

/** A message whose final event came cut (`truncated`, a very long reply): read it whole from
 * the history, by the cursor of a neighbour. */
async function refetchWhole(message) {
  const current = state.current;
  if (!current || current.id !== message.session_id) return;
  const index = current.order.indexOf(message.id);
  let query = `?limit=1&offset=0`;
  if (index > 0) query = `?limit=1&after=${encodeURIComponent(current.order[index - 1])}`;
  else if (index >= 0 && index + 1 < current.order.length) {
    query = `?limit=1&before=${encodeURIComponent(current.order[index + 1])}`;
  }
  try {
    const page = await get(path(current.id, `/messages${query}`));
    const whole = page.data.find((m) => m.id === message.id);
    if (whole && state.current === current) putMessage(whole);
  } catch (failure) {
    toast(failure.message);
  }
}

/** Wire the view: live updates, scrolling, the message box and the actions. */
export function setupSession() {
  on("message", (id) => {
    if (!state.current || !state.current.loaded) return; // (the first page renders them)
    renderMessage(id);
    renderTop();
    follow();
  });
  on("delta", ({ id, delta }) => {
    const entry = elements.get(id);
    if (!entry) return;
    entry.body.append(delta);
    entry.text += delta;
    follow();
  });
  on("current", renderHead);
  on("truncated", refetchWhole);
  on("current-deleted", () => {
    if (state.current && state.current.id !== deleting) toast("This session was deleted.");
    location.hash = "#/";
  });
  history.addEventListener("scroll", () => {
    stick = atBottom();
    if (history.scrollTop < 300) loadOlder();
  });
  new IntersectionObserver((entries) => entries.some((e) => e.isIntersecting) && loadOlder(), {
    root: history,
  }).observe(top);
  setupComposer();
  setupActions();
}
