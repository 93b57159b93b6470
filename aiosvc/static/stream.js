// The live connection: the daemon's event stream (SSE, /api/v1/events), read with fetch.
//
// Why not EventSource: it delivers only the event types a page registered a listener for,
// and hook events are named by whoever posts them (`hook.<type>`), so the activity feed
// would miss them. fetch reads every event, sends the same login cookie, and resumes the
// same way: `Last-Event-ID` with the id of the last event seen, on every reconnect.

const WATCHDOG_MS = 45_000; // the daemon writes a heartbeat every 15 s
const MAX_RETRY_MS = 10_000;

export class EventStream {
  /**
   * handlers: onEvent(event), onReset(), onDropped(count), onOpen({resumed}),
   * onState(state), onUnauthorized().
   */
  constructor(handlers) {
    this.handlers = handlers;
    this.lastId = null;
    this.topics = ["sessions", "approvals", "hooks", "system"];
    this.retryMs = 2000;
    this.failures = 0;
    this.controller = null;
    this.timer = null;
    this.running = false;
    this.state = "connecting";
  }

  /** Connect (again), resuming after the last event seen. */
  start() {
    this.running = true;
    this.reconnect(0);
  }

  /** The network went away (the browser says so): drop the stream now rather than when a
   * heartbeat is missed, and try again once the network is back. */
  offline() {
    if (!this.running) return;
    clearTimeout(this.timer);
    if (this.controller) this.controller.abort();
    this.controller = null;
    this.setState("reconnecting");
  }

  /** The network is back: reconnect at once. */
  online() {
    if (this.running && !this.controller) {
      this.failures = 0;
      this.reconnect(0);
    }
  }

  /** Close the stream for good (signed out). */
  stop() {
    this.running = false;
    clearTimeout(this.timer);
    if (this.controller) this.controller.abort();
    this.controller = null;
  }

  /** Follow these topics from now on (a new stream that resumes where this one was). */
  follow(topics) {
    if (topics.join(",") === this.topics.join(",")) return;
    this.topics = topics;
    if (this.running) this.reconnect(0);
  }

  setState(state) {
    if (state === this.state) return;
    this.state = state;
    this.handlers.onState(state);
  }

  reconnect(delay) {
    clearTimeout(this.timer);
    if (this.controller) this.controller.abort();
    this.controller = null;
    if (!this.running) return;
    this.timer = setTimeout(() => this.connect(), delay);
  }

  retry() {
    if (!this.running) return;
    this.setState("reconnecting");
    const delay = Math.min(this.retryMs * 1.5 ** this.failures, MAX_RETRY_MS);
    this.failures += 1;
    this.reconnect(delay);
  }

  async connect() {
    const controller = new AbortController();
    this.controller = controller;
    const headers = { Accept: "text/event-stream" };
    const resumed = this.lastId !== null;
    if (resumed) headers["Last-Event-ID"] = String(this.lastId);
    const url = `/api/v1/events?topics=${encodeURIComponent(this.topics.join(","))}`;
    let response;
    try {
      response = await fetch(url, {
        headers,
        signal: controller.signal,
        credentials: "same-origin",
        cache: "no-store",
      });
    } catch {
      if (!controller.signal.aborted) this.retry();
      return;
    }
    if (controller.signal.aborted) return;
    if (response.status === 401) {
      this.stop();
      this.handlers.onUnauthorized();
      return;
    }
    if (!response.ok || !response.body) {
      this.retry();
      return;
    }
    this.failures = 0;
    this.setState("connected");
    this.handlers.onOpen({ resumed });
    try {
      await this.read(response.body, controller);
    } catch {
      // the connection broke: retried below
    }
    if (!controller.signal.aborted) this.retry();
  }

  async read(body, controller) {
    const reader = body.pipeThrough(new TextDecoderStream()).getReader();
    let watchdog = setTimeout(() => controller.abort(), WATCHDOG_MS);
    let buffer = "";
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done || controller.signal.aborted) return;
        clearTimeout(watchdog);
        watchdog = setTimeout(() => controller.abort(), WATCHDOG_MS);
        buffer += value.replace(/\r\n?/g, "\n");
        let end = buffer.indexOf("\n\n");
        while (end >= 0) {
          this.block(buffer.slice(0, end));
          buffer = buffer.slice(end + 2);
          end = buffer.indexOf("\n\n");
        }
      }
    } finally {
      clearTimeout(watchdog);
      reader.cancel().catch(() => {});
    }
  }

  /** One SSE block: its fields, then the event it makes. */
  block(text) {
    let id = null;
    let type = "message";
    const data = [];
    for (const line of text.split("\n")) {
      if (line === "" || line.startsWith(":")) continue;
      const colon = line.indexOf(":");
      const field = colon < 0 ? line : line.slice(0, colon);
      let value = colon < 0 ? "" : line.slice(colon + 1);
      if (value.startsWith(" ")) value = value.slice(1);
      if (field === "id") id = value;
      else if (field === "event") type = value;
      else if (field === "data") data.push(value);
      else if (field === "retry" && /^\d+$/.test(value)) this.retryMs = Number(value);
    }
    if (id !== null && /^\d+$/.test(id)) this.lastId = Number(id);
    if (data.length === 0) return;
    let payload;
    try {
      payload = JSON.parse(data.join("\n"));
    } catch {
      return;
    }
    if (type === "reset") this.handlers.onReset();
    else if (type === "dropped") this.handlers.onDropped(payload.data.count);
    else if (type === "shutdown") this.setState("reconnecting");
    else {
      const event = { id: this.lastId, type, topic: payload.topic, ts: payload.ts };
      event.data = payload.data;
      this.handlers.onEvent(event);
    }
  }
}
