// What the page knows, kept current from the event stream, and who is told of a change.
//
// Everything is keyed by id and every update is applied only if it is not older than what is
// known, so an event seen twice (a replay after a reconnect, a snapshot racing an event)
// changes nothing the second time.

const FINAL = new Set(["complete", "failed", "cancelled"]);
const MAX_HOOKS = 200;

export const state = {
  auth: { authenticated: false, expires_at: null },
  sessions: new Map(), // id -> session
  approvals: new Map(), // id -> pending approval
  resolved: new Set(), // ids of approvals seen resolved (a late "requested" is ignored)
  hooks: [], // newest first: {id, type, ts, data}
  agents: [],
  health: null,
  connection: "connecting",
  statusDetail: new Map(), // session id -> detail of its status ("waiting for approval of …")
  current: null, // the open session's view: see openSession
};

const listeners = new Map();

/** Call `listener(detail)` whenever `topic` changes. */
export function on(topic, listener) {
  if (!listeners.has(topic)) listeners.set(topic, []);
  listeners.get(topic).push(listener);
}

/** Tell the listeners of `topic`. */
export function emit(topic, detail) {
  for (const listener of listeners.get(topic) || []) listener(detail);
}

/** The open session's view state, fresh. */
export function openSession(id) {
  state.current = {
    id,
    messages: new Map(), // id -> message
    order: [], // message ids, oldest first
    tools: new Map(), // message id -> [{call_id, tool, input, output, is_error, approval}]
    prev: null, // the cursor of the page before the first shown (null: none)
    loaded: false,
  };
  return state.current;
}

/** A session as the daemon sent it, unless what is known is newer. */
export function putSession(session) {
  const known = state.sessions.get(session.id);
  if (known && known.updated_at > session.updated_at) return;
  state.sessions.set(session.id, session);
  emit("sessions");
  if (state.current && state.current.id === session.id) emit("current");
}

export function dropSession(id) {
  state.sessions.delete(id);
  for (const [key, approval] of state.approvals) {
    if (approval.session_id === id) state.approvals.delete(key);
  }
  emit("sessions");
  emit("approvals");
  if (state.current && state.current.id === id) emit("current-deleted");
}

/** A message of the open session (others are not kept); false when it was not taken. */
export function putMessage(message) {
  const view = state.current;
  if (!view || view.id !== message.session_id) return false;
  const known = view.messages.get(message.id);
  if (known && FINAL.has(known.status) && !FINAL.has(message.status)) return false;
  // An event cut for the stream never replaces the whole text read from the history.
  if (known && FINAL.has(known.status) && !known.truncated && message.truncated) return false;
  if (!known) view.order.push(message.id); // (ids are random: the order is arrival's)
  view.messages.set(message.id, message);
  emit("message", message.id);
  return true;
}

/** The latest page of the history: before any message that arrived live meanwhile. */
export function setLastPage(messages, prev) {
  const view = state.current;
  const ids = messages.map((m) => m.id);
  const later = view.order.filter((id) => !ids.includes(id));
  for (const message of messages) {
    const known = view.messages.get(message.id);
    if (!(known && FINAL.has(known.status) && !FINAL.has(message.status))) {
      view.messages.set(message.id, message);
    }
  }
  view.order = [...ids, ...later];
  view.prev = prev;
  view.loaded = true;
}

/** Older messages, before every one shown. */
export function prependMessages(messages) {
  const view = state.current;
  const fresh = messages.filter((m) => !view.messages.has(m.id));
  for (const message of fresh) view.messages.set(message.id, message);
  view.order = [...fresh.map((m) => m.id), ...view.order];
  return fresh;
}

export function putApproval(approval) {
  if (approval.status === "pending") {
    if (state.resolved.has(approval.id)) return;
    state.approvals.set(approval.id, approval);
  } else {
    state.resolved.add(approval.id);
    state.approvals.delete(approval.id);
  }
  emit("approvals");
  noteToolApproval(approval);
}

/** A tool call of a message of the open session (from `tool.use`, or from its approval). */
export function putTool(messageId, call) {
  const view = state.current;
  if (!view) return;
  const calls = view.tools.get(messageId) || [];
  // A call is known by its id (tool.use, tool.result), its approval by the approval's id;
  // otherwise each goes with the latest call of that tool that lacks the other's id.
  const same = (c) =>
    (call.call_id && c.call_id === call.call_id) ||
    (call.approval_id && c.approval_id === call.approval_id);
  let found = calls.find(same);
  if (!found) {
    found = calls
      .filter(
        (c) =>
          c.tool === call.tool &&
          !(call.call_id && c.call_id) &&
          !(call.approval_id && c.approval_id),
      )
      .pop();
  }
  if (!found) {
    found = { call_id: null, approval_id: null, tool: call.tool, approval: null };
    calls.push(found);
  }
  for (const [key, value] of Object.entries(call)) {
    if (value !== undefined && value !== null) found[key] = value;
  }
  view.tools.set(messageId, calls);
  emit("message", messageId);
}

function noteToolApproval(approval) {
  const view = state.current;
  if (!view || view.id !== approval.session_id || !approval.message_id) return;
  putTool(approval.message_id, {
    tool: approval.tool,
    input: approval.input,
    approval: approval.status,
    approval_id: approval.id,
  });
}

export function addHook(event) {
  if (state.hooks.some((hook) => hook.id === event.id)) return;
  state.hooks.unshift({ id: event.id, type: event.type, ts: event.ts, data: event.data });
  state.hooks.sort((a, b) => b.id - a.id);
  state.hooks.length = Math.min(state.hooks.length, MAX_HOOKS);
  emit("hooks");
}

/** Apply one event from the stream. */
export function apply(event) {
  const data = event.data || {};
  const view = state.current;
  switch (event.type) {
    case "session.created":
    case "session.updated":
    case "session.ended":
      putSession(data);
      break;
    case "session.deleted":
      dropSession(data.id);
      break;
    case "message.created":
    case "message.started":
    case "message.completed":
    case "message.failed":
    case "message.cancelled":
      if (putMessage(data) && data.truncated) emit("truncated", data);
      break;
    case "message.delta":
      if (view && view.messages.has(data.message_id)) {
        const message = view.messages.get(data.message_id);
        if (message.status === "streaming" || message.status === "pending") {
          message.content += data.delta;
          emit("delta", { id: data.message_id, delta: data.delta });
        }
      }
      break;
    case "tool.use":
      putTool(data.message_id, { call_id: data.call_id, tool: data.tool, input: data.input });
      break;
    case "tool.result":
      putTool(data.message_id, {
        call_id: data.call_id,
        tool: data.tool,
        output: data.output,
        is_error: data.is_error,
      });
      break;
    case "approval.requested":
    case "approval.resolved":
      putApproval(data);
      break;
    case "status":
      if (data.detail) state.statusDetail.set(data.session_id, data.detail);
      else state.statusDetail.delete(data.session_id);
      if (view && view.id === data.session_id) emit("current");
      break;
    case "config.reloaded":
      emit("config");
      break;
    default:
      if (event.type.startsWith("hook.")) addHook(event);
  }
}
