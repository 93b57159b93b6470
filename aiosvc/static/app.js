// The dashboard: signs in, follows the event stream, and keeps every view current.

import { ApiError, get, getAll, loginState, onUnauthorized, post } from "./api.js";
import { byId, refreshTimes } from "./dom.js";
import { apply, emit, on, openSession, state } from "./state.js";
import { EventStream } from "./stream.js";
import { setupSessions } from "./sessions.js";
import { hideSession, setupSession, showSession } from "./session.js";
import { setupPanels, toast } from "./panels.js";

const TOPICS = ["sessions", "approvals", "hooks", "system"];
const SESSION_ROUTE = /^#\/sessions\/([A-Za-z0-9_-]{1,64})$/;
const CONNECTION = {
  connecting: "Connecting…",
  connected: "Connected",
  reconnecting: "Reconnecting…",
  resynchronising: "Resynchronising…",
  offline: "Signed out",
};

let queued = null; // events that arrive while a resynchronisation runs (else null)
let again = false; // another resynchronisation was asked for while one ran
let synced = false; // a first resynchronisation has fetched everything

function setConnection(name) {
  state.connection = name;
  const el = byId("connection");
  el.dataset.state = name;
  byId("connection-label").textContent = CONNECTION[name] || name;
}

const stream = new EventStream({
  onEvent: (event) => (queued ? queued.push(event) : apply(event)),
  onReset: () => resync(),
  onDropped: () => resync(),
  onOpen: ({ resumed }) => {
    // Resumed: the daemon replays what was missed, or says `reset`. Otherwise what happened
    // while no stream was open is unknown: fetch it all.
    if (!resumed) resync();
  },
  onState: (name) => {
    if (!queued) setConnection(name);
  },
  onUnauthorized: () => showSignin(),
});

/** Fetch everything shown over REST, then apply what arrived meanwhile, in order. */
async function resync() {
  if (queued) {
    again = true;
    return;
  }
  queued = [];
  setConnection("resynchronising");
  try {
    do {
      again = false;
      const [sessions, approvals, agents] = await Promise.all([
        getAll("/api/v1/sessions"),
        get("/api/v1/approvals?status=pending&limit=500"),
        get("/api/v1/agents?limit=500"),
      ]);
      state.sessions = new Map(sessions.map((s) => [s.id, s]));
      state.approvals = new Map(approvals.data.map((a) => [a.id, a]));
      state.resolved = new Set();
      state.agents = agents.data;
      emit("sessions");
      emit("approvals");
      emit("agents");
      if (state.current) await showSession(state.current.id);
    } while (again);
  } catch (failure) {
    if (!(failure instanceof ApiError && failure.status === 401)) {
      toast(`Refreshing failed: ${failure.message}`);
    }
  } finally {
    const events = queued;
    queued = null;
    // A piece of text may already be in what was fetched: deltas are skipped, and the
    // message's final event brings its whole text.
    for (const event of events) if (event.type !== "message.delta") apply(event);
    setConnection(stream.state);
    if (!synced) {
      synced = true;
      // (for scripts/bench_dashboard.py: everything fetched is on screen from here)
      requestAnimationFrame(() => performance.mark("aiosvc-interactive"));
    }
  }
  refreshHealth();
}

async function refreshHealth() {
  try {
    state.health = (await get("/health")).data;
  } catch (failure) {
    state.health = failure instanceof ApiError && failure.details.status ? failure.details : null;
  }
  emit("health");
}

async function refreshAgents() {
  try {
    state.agents = (await get("/api/v1/agents?limit=500")).data;
    emit("agents");
  } catch {
    // shown as it was; the next resynchronisation tries again
  }
}

function route() {
  const found = SESSION_ROUTE.exec(location.hash);
  if (found) {
    document.body.dataset.view = "session";
    byId("overview").hidden = true;
    stream.follow([...TOPICS, `session:${found[1]}`]);
    // (before the first resynchronisation, that one opens it)
    if (synced) showSession(found[1]);
    else openSession(found[1]);
  } else {
    document.body.dataset.view = "overview";
    hideSession();
    byId("overview").hidden = false;
    stream.follow(TOPICS);
  }
  emit("route");
}

function showShell() {
  byId("signin").hidden = true;
  byId("shell").hidden = false;
  byId("signout").hidden = !state.auth.expires_at;
  stream.start();
  route();
}

function showSignin() {
  stream.stop();
  state.auth = { authenticated: false, expires_at: null };
  byId("shell").hidden = true;
  byId("signin").hidden = false;
  document.body.dataset.view = "signin";
  setConnection("offline");
  byId("signin-key").focus();
}

function setupSignin() {
  const form = byId("signin-form");
  const error = byId("signin-error");
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const key = byId("signin-key").value;
    error.textContent = "";
    if (!key) {
      error.textContent = "Enter an API key.";
      return;
    }
    const button = form.querySelector("button");
    button.disabled = true;
    try {
      await post("/api/v1/login", { key });
      state.auth = await loginState();
      if (!state.auth.authenticated) throw new ApiError(401, "unauthorized", "Not signed in.");
      byId("signin-key").value = "";
      showShell();
    } catch (failure) {
      error.textContent =
        failure.status === 401 ? "That key is not valid." : failure.message || String(failure);
    } finally {
      button.disabled = false;
    }
  });
  byId("signout").addEventListener("click", async () => {
    try {
      await post("/api/v1/logout");
    } catch (failure) {
      if (failure.status !== 401) {
        toast(failure.message);
        return;
      }
    }
    location.hash = "#/";
    location.reload(); // nothing of what was shown stays in the page
  });
}

async function boot() {
  setupSessions();
  setupSession();
  setupPanels();
  setupSignin();
  on("config", refreshAgents);
  onUnauthorized(() => showSignin());
  window.addEventListener("hashchange", () => state.auth.authenticated && route());
  window.addEventListener("offline", () => stream.offline());
  window.addEventListener("online", () => stream.online());
  setInterval(refreshTimes, 30_000);
  setInterval(() => state.auth.authenticated && refreshHealth(), 30_000);
  for (;;) {
    try {
      state.auth = await loginState();
      break;
    } catch (failure) {
      setConnection("reconnecting");
      await new Promise((resolve) => setTimeout(resolve, 2000));
    }
  }
  if (state.auth.authenticated) showShell();
  else showSignin();
}

boot();
