// The session list (with its filters) and the form that creates a session.

import { ApiError, post } from "./api.js";
import { batched, byId, fill, h, sessionHref, statusBadge, timeAgo } from "./dom.js";
import { on, putSession, state } from "./state.js";

const list = byId("session-list");
const empty = byId("session-empty");
const statusFilter = byId("filter-status");
const projectFilter = byId("filter-project");

/** When a session was last active. */
export function lastActivity(session) {
  return session.last_message_at || session.updated_at || session.created_at;
}

function byActivity(a, b) {
  const left = lastActivity(a);
  const right = lastActivity(b);
  return left < right ? 1 : left > right ? -1 : 0;
}

function item(session) {
  const current = state.current && state.current.id === session.id;
  const title = session.title
    ? h("span", { class: "title", text: session.title })
    : h("span", { class: "title untitled", text: "Untitled session" });
  const sub = [session.agent, session.project, session.computer].filter(Boolean);
  return h(
    "li",
    { dataset: { id: session.id } },
    h(
      "a",
      { href: sessionHref(session.id), "aria-current": current ? "page" : null },
      h("span", { class: "line" }, title, timeAgo(lastActivity(session))),
      h(
        "span",
        { class: "sub" },
        statusBadge(session.status),
        sub.map((part) => h("span", { text: part })),
      ),
    ),
  );
}

function renderProjects() {
  const names = [...new Set([...state.sessions.values()].map((s) => s.project).filter(Boolean))];
  names.sort((a, b) => a.localeCompare(b));
  const chosen = projectFilter.value;
  fill(
    projectFilter,
    h("option", { value: "", text: "All" }),
    names.map((name) => h("option", { value: name, text: name })),
  );
  projectFilter.value = names.includes(chosen) ? chosen : "";
  fill(byId("project-names"), names.map((name) => h("option", { value: name })));
}

const render = batched(() => {
  renderProjects();
  const status = statusFilter.value;
  const project = projectFilter.value;
  const all = [...state.sessions.values()];
  const shown = all
    .filter((s) => (!status || s.status === status) && (!project || s.project === project))
    .sort(byActivity);
  fill(list, shown.map(item));
  byId("session-count").textContent = all.length ? String(all.length) : "";
  empty.hidden = shown.length > 0;
  empty.textContent = all.length
    ? "No session matches these filters."
    : "No sessions yet. Start one with “New session”.";
});

function renderAgents() {
  const select = byId("new-agent");
  const chosen = select.value;
  fill(
    select,
    state.agents.map((agent) =>
      h("option", {
        value: agent.name,
        text: agent.default ? `${agent.name} (default)` : agent.name,
        selected: chosen ? agent.name === chosen : agent.default,
      }),
    ),
  );
}

function setupForm() {
  const form = byId("new-session");
  const toggle = byId("new-session-toggle");
  const error = byId("new-session-error");
  const show = (open) => {
    form.hidden = !open;
    toggle.setAttribute("aria-expanded", String(open));
    if (open) byId("new-title").focus();
  };
  toggle.addEventListener("click", () => show(form.hidden));
  byId("new-session-close").addEventListener("click", () => show(false));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    error.textContent = "";
    const body = { agent: byId("new-agent").value };
    const title = byId("new-title").value.trim();
    const project = byId("new-project").value.trim();
    if (title) body.title = title;
    if (project) body.project = project;
    if (!body.agent) delete body.agent;
    const button = form.querySelector("button[type=submit]");
    button.disabled = true;
    try {
      const created = (await post("/api/v1/sessions", body)).data;
      putSession(created);
      form.reset();
      renderAgents();
      show(false);
      location.hash = sessionHref(created.id);
    } catch (failure) {
      error.textContent = failure instanceof ApiError ? failure.message : String(failure);
    } finally {
      button.disabled = false;
    }
  });
}

/** Wire the list, its filters and the form. */
export function setupSessions() {
  statusFilter.addEventListener("change", render);
  projectFilter.addEventListener("change", render);
  setupForm();
  on("sessions", render);
  on("route", render);
  on("agents", renderAgents);
}
