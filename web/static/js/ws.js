// The live connection: a fresh ticket for every connection, the snapshot, then
// events; resume after a drop; commands matched to their replies by id.
import { api, ApiError, goToLogin } from "./api.js";

const MIN_DELAY = 500;
const MAX_DELAY = 10000;
const COMMAND_TIMEOUT = 20000;

export class Live {
  // handlers: onSnapshot(msg), onResumed(msg), onEvent(event), onStatus(state)
  constructor(handlers) {
    this.handlers = handlers;
    this.ws = null;
    this.seq = null;
    this.stream = null;
    this.attempt = 0;
    this.nextId = 0;
    this.pending = new Map();
    this.everOnline = false;
    this.url = null;
    this.timer = null;
  }

  async start() {
    const settings = await api("GET", "/api/settings/widget");
    this.url = settings.websocket_url;
    this.settings = settings;
    this.connect();
    return settings;
  }

  status(state) {
    this.state = state;
    this.handlers.onStatus(state);
  }

  async connect() {
    this.timer = null;
    this.status(this.everOnline ? "reconnecting" : "connecting");
    let ticket;
    try {
      ticket = (await api("POST", "/api/auth/ticket", undefined, { quiet: true })).ticket;
    } catch (error) {
      if (error.status !== 401) this.retry();
      return;
    }
    let ws;
    try {
      ws = new WebSocket(this.url);
    } catch {
      this.retry();
      return;
    }
    this.ws = ws;
    ws.addEventListener("open", () => {
      const auth = { type: "auth", token: ticket };
      if (this.seq !== null && this.stream) {
        auth.resume_from = this.seq;
        auth.stream = this.stream;
      }
      ws.send(JSON.stringify(auth));
    });
    ws.addEventListener("message", (m) => {
      let message;
      try {
        message = JSON.parse(m.data);
      } catch {
        return;
      }
      this.receive(message);
    });
    ws.addEventListener("close", (e) => {
      if (this.ws !== ws) return;
      this.ws = null;
      for (const [, p] of this.pending) {
        p.reject(new ApiError(0, "offline", "connection closed"));
        clearTimeout(p.timer);
      }
      this.pending.clear();
      this.handlers.onDown();
      if (e.code === 4401 && e.reason === "access revoked") {
        goToLogin();
        return;
      }
      this.retry();
    });
  }

  retry() {
    if (this.timer !== null) return;
    // Exponential backoff with jitter: 0.5 s doubling to 10 s, each wait drawn in [d/2, d].
    const ceiling = Math.min(MAX_DELAY, MIN_DELAY * 2 ** this.attempt);
    const delay = ceiling / 2 + Math.random() * (ceiling / 2);
    this.attempt += 1;
    this.status(this.everOnline ? "reconnecting" : "connecting");
    this.timer = setTimeout(() => this.connect(), delay);
  }

  online() {
    this.attempt = 0;
    this.everOnline = true;
    this.status("online");
  }

  receive(message) {
    if (typeof message.seq === "number") this.seq = message.seq;
    switch (message.type) {
      case "auth.ok":
        this.stream = message.stream;
        this.me = message;
        if (message.resumed) {
          this.online();
          this.handlers.onResumed(message);
        }
        break;
      case "snapshot":
        this.stream = message.stream || this.stream;
        this.handlers.onSnapshot(message);
        this.online();
        break;
      case "event":
        this.handlers.onEvent(message.event);
        break;
      case "result":
      case "error": {
        const p = this.pending.get(message.id);
        if (!p) break;
        this.pending.delete(message.id);
        clearTimeout(p.timer);
        if (message.type === "result") p.resolve(message.data || {});
        else p.reject(new ApiError(0, message.code, message.message, message.details));
        break;
      }
      default:
        break;
    }
  }

  command(name, args) {
    const ws = this.ws;
    if (!ws || ws.readyState !== WebSocket.OPEN || this.state !== "online") {
      return Promise.reject(new ApiError(0, "offline", "not connected"));
    }
    this.nextId += 1;
    const id = `c-${this.nextId}`;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new ApiError(0, "timeout", "no reply"));
      }, COMMAND_TIMEOUT);
      this.pending.set(id, { resolve, reject, timer });
      ws.send(JSON.stringify({ type: "command", id, name, args }));
    });
  }
}
