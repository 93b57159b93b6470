// The side panels: pending approvals, hook activity, agents, the daemon's health; and toasts.

import { ApiError, post } from "./api.js";
import { batched, byId, fill, fullTime, h, pretty, sessionHref, timeAgo } from "./dom.js";
import { on, putApproval, state } from "./state.js";

/** A short message at the bottom of the window. */
export function toast(text, ms = 5000) {
  const el = h("div", { class: "toast", role: "alert", text });
  byId("toasts").append(el);
  setTimeout(() => el.remove(), ms);
}

function sessionLabel(id) {
  const session = state.sessions.get(id);
  return session ? session.title || "Untitled session" : id;
}

function sessionLink(id) {
  return h("a", { href: sessionHref(id), text: sessionLabel(id), dataset: { session: id } });
}

function decide(approval, decision, buttons) {
  return async () => {
    for (const button of buttons) button.disabled = true;
    try {
      const answer = await post(`/api/v1/approvals/${encodeURIComponent(approval.id)}`, {
        decision,
      });
      putApproval(answer.data);
    } catch (failure) {
      if (failure instanceof ApiError && failure.status === 409) {
        putApproval({ ...approval, status: "expired" }); // decided elsewhere meanwhile
        toast("This approval was already resolved.");
      } else {
        toast(failure.message);
        for (const button of buttons) button.disabled = false;
      }
    }
  };
}

function approvalCard(approval) {
  const approve = h("button", { type: "button", class: "primary small", text: "Approve" });
  const deny = h("button", { type: "button", class: "small", text: "Deny" });
  approve.addEventListener("click", decide(approval, "approve", [approve, deny]));
  deny.addEventListener("click", decide(approval, "deny", [approve, deny]));
  return h(
    "article",
    {
      class: "approval card",
      dataset: { id: approval.id },
      "aria-label": `Approval for ${approval.tool}`,
    },
    h(
      "div",
      { class: "line" },
      h("span", { class: "name", text: approval.tool }),
      approval.session_id ? h("span", {}, "in ", sessionLink(approval.session_id)) : null,
      timeAgo(approval.created_at),
    ),
    h("pre", { class: "input", text: pretty(approval.input) }),
    h("div", { class: "row" }, approve, deny),
  );
}

const renderApprovals = batched(() => {
  const pending = [...state.approvals.values()].sort((a, b) =>
    a.created_at < b.created_at ? -1 : 1,
  );
  const listEl = byId("approval-list");
  // Keep the cards that stay (a click in progress keeps its state); add and remove the others.
  const shown = new Map([...listEl.children].map((el) => [el.dataset.id, el]));
  const wanted = new Set(pending.map((a) => a.id));
  for (const [id, el] of shown) if (!wanted.has(id)) el.remove();
  for (const approval of pending) {
    if (!shown.has(approval.id) || !shown.get(approval.id).isConnected) {
      listEl.append(approvalCard(approval));
    }
  }
  if (!pending.length) fill(listEl, h("p", { class: "empty", text: "Nothing waits for approval." }));
  else listEl.querySelector(".empty")?.remove();
  for (const link of listEl.querySelectorAll("a[data-session]")) {
    link.textContent = sessionLabel(link.dataset.session);
  }
  byId("approval-count").textContent = pending.length ? String(pending.length) : "";
});

function compact(value) {
  const text = JSON.stringify(value);
  return text && text.length > 400 ? `${text.slice(0, 400)}…` : text || "";
}

const renderHooks = batched(() => {
  const items = state.hooks.slice(0, 50).map((hook) => {
    const data = hook.data || {};
    return h(
      "li",
      { dataset: { id: hook.id } },
      h("div", { class: "line" }, h("span", { class: "type", text: hook.type }), timeAgo(hook.ts)),
      data.session_id ? h("div", { class: "where" }, "in ", sessionLink(data.session_id)) : null,
      data.data !== undefined && data.data !== null ? h("pre", { text: compact(data.data) }) : null,
    );
  });
  const listEl = byId("activity-list");
  fill(listEl, items);
  if (!items.length) {
    listEl.append(
      h("li", { class: "empty", text: "No hook events yet. Events posted to /api/v1/hooks show here." }),
    );
  }
});

const renderAgents = batched(() => {
  fill(
    byId("agent-list"),
    state.agents.map((agent) =>
      h(
        "li",
        {},
        h("span", { class: "name", text: agent.name }),
        h("span", { class: "kind", text: agent.kind }),
        agent.default ? h("span", { class: "badge", text: "default" }) : null,
      ),
    ),
  );
});

function uptime(seconds) {
  const s = Math.floor(seconds);
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
  return `${Math.floor(s / 86400)} d ${Math.floor((s % 86400) / 3600)} h`;
}

const renderHealth = batched(() => {
  const health = state.health;
  const el = byId("health");
  if (!health) {
    fill(el, h("dt", { text: "Status" }), h("dd", { class: "bad", text: "unreachable" }));
    byId("health-summary").textContent = "";
    return;
  }
  const bad = health.status !== "ok";
  fill(
    el,
    h("dt", { text: "Status" }),
    h("dd", { class: bad ? "bad" : "", text: health.status }),
    h("dt", { text: "Version" }),
    h("dd", { text: health.version }),
    h("dt", { text: "Up for" }),
    h("dd", { text: uptime(health.uptime_s), title: fullTime(health.checked_at) }),
    h("dt", { text: "Database" }),
    h("dd", { class: health.db === "ok" ? "" : "bad", text: health.db }),
  );
  byId("health-summary").textContent = `v${health.version} · up ${uptime(health.uptime_s)}`;
});

/** Wire the panels to the state. */
export function setupPanels() {
  on("approvals", renderApprovals);
  on("sessions", renderApprovals); // (session titles in the cards)
  on("hooks", renderHooks);
  on("agents", renderAgents);
  on("health", renderHealth);
  renderApprovals();
  renderHooks();
}
