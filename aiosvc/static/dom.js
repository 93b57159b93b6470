// Building the page. Everything that comes from the daemon (titles, messages, tool input, hook
// data) goes into text nodes: nothing here ever parses a string as HTML.

/** An element with properties and children; strings become text nodes. */
export function h(tag, props, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(props || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") el.className = value;
    else if (key === "text") el.textContent = String(value);
    else if (key === "dataset") Object.assign(el.dataset, value);
    else if (key.startsWith("on")) {
      // handlers are functions of this code, never strings (which would be code to run)
      if (typeof value !== "function") throw new TypeError(`${key} must be a function`);
      el.addEventListener(key.slice(2), value);
    } else if (value === true) el.setAttribute(key, "");
    else el.setAttribute(key, String(value));
  }
  add(el, children);
  return el;
}

/** Append children (nodes, or strings as text) to an element. */
export function add(el, children) {
  for (const child of [children].flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

/** Replace every child of an element. */
export function fill(el, ...children) {
  el.replaceChildren();
  return add(el, children);
}

/** The element with this id (the page's skeleton is in index.html). */
export function byId(id) {
  return document.getElementById(id);
}

/** Run `render` once at the next frame however many times it is asked for before. */
export function batched(render) {
  let asked = false;
  return () => {
    if (asked) return;
    asked = true;
    requestAnimationFrame(() => {
      asked = false;
      render();
    });
  };
}

const RELATIVE = new Intl.RelativeTimeFormat(undefined, { numeric: "auto" });
const CLOCK = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit" });
const FULL = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "medium" });
const STEPS = [
  [60, "second"],
  [60, "minute"],
  [24, "hour"],
  [7, "day"],
  [4.35, "week"],
  [12, "month"],
  [Infinity, "year"],
];

/** "3 minutes ago" for an RFC 3339 time (empty for none). */
export function ago(iso) {
  if (!iso) return "";
  let amount = (Date.parse(iso) - Date.now()) / 1000;
  if (Math.abs(amount) < 10) return "just now";
  for (const [size, unit] of STEPS) {
    if (Math.abs(amount) < size) return RELATIVE.format(Math.round(amount), unit);
    amount /= size;
  }
  return "";
}

/** "14:05" for an RFC 3339 time. */
export function clock(iso) {
  return iso ? CLOCK.format(new Date(iso)) : "";
}

/** The full date and time, for a title attribute. */
export function fullTime(iso) {
  return iso ? FULL.format(new Date(iso)) : "";
}

/** A <time> element showing a relative time, refreshed by `refreshTimes`. */
export function timeAgo(iso) {
  return h("time", { datetime: iso, title: fullTime(iso), class: "ago", text: ago(iso) });
}

/** Bring every relative time on the page up to date. */
export function refreshTimes() {
  for (const el of document.querySelectorAll("time.ago")) {
    el.textContent = ago(el.getAttribute("datetime"));
  }
}

/** JSON for people: indented, as text (never as markup). */
export function pretty(value) {
  if (value === undefined) return "";
  try {
    return JSON.stringify(value, null, 2);
  } catch {
    return String(value);
  }
}

/** A session's status as people read it. */
export const STATUS_LABELS = {
  idle: "Idle",
  running: "Running",
  waiting_approval: "Waiting for approval",
  ended: "Ended",
};

/** A small badge showing a session's status. */
export function statusBadge(status) {
  return h("span", {
    class: `badge status-${status}`,
    text: STATUS_LABELS[status] || status,
  });
}

/** The link to a session's view. */
export function sessionHref(id) {
  return `#/sessions/${encodeURIComponent(id)}`;
}
