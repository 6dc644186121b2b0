// The agent signaling WebSocket (/v1/agent/ws): authenticates, keeps the connection alive and
// reconnects with backoff when it drops.

export const CLOSE_UNAUTHENTICATED = 4401;
export const CLOSE_NOT_AN_AGENT = 4403;
export const CLOSE_REPLACED = 4409;

const HELLO_WAIT_MS = 15_000;
const PING_EVERY_MS = 20_000;
// No frame for this long (pongs included) means the connection is dead even if the browser has
// not noticed yet, as after a laptop sleeps or a network changes.
const SILENCE_LIMIT_MS = 50_000;

/** Seconds to wait before reconnect attempt `attempt` (0-based): 1, 2, 4, 8, then 15. */
export function backoffSeconds(attempt) {
  return Math.min(15, 2 ** Math.max(0, attempt));
}

export function agentSocketUrl(location) {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  return `${scheme}//${location.host}/v1/agent/ws`;
}

/**
 * Events:
 * - "message" (detail: the parsed server message), "hello" is also delivered as a message;
 * - "ready" (detail: hello) once the server accepted the token;
 * - "down" (detail: {code, reason, wasReady}) whenever the connection is lost;
 * - "reconnecting" (detail: {seconds, attempt}) when the next attempt is scheduled;
 * - "fatal" (detail: {code}) when reconnecting would not help: 4401 twice in a row (the
 *   session is no longer accepted), 4403 (not an agent, or no seat), 4409 (another window
 *   took over).
 */
export class Signaling extends EventTarget {
  #url;
  #token;
  #ws = null;
  #running = false;
  #ready = false;
  #attempt = 0;
  #timer = 0;
  #helloTimer = 0;
  #pingTimer = 0;
  #lastHeard = 0;
  #refs = 0;
  #pings = 0;
  #refusedOnce = false;
  #generation = 0;

  /**
   * @param {string} url the WebSocket URL
   * @param {(fresh: boolean) => Promise<string>} token gives the access token to send in `auth`
   */
  constructor(url, token) {
    super();
    this.#url = url;
    this.#token = token;
  }

  /** The current WebSocket, or null between attempts. */
  get ws() {
    return this.#ws;
  }

  /** True once the server has said hello on the current connection. */
  get ready() {
    return this.#ready;
  }

  get running() {
    return this.#running;
  }

  start() {
    if (this.#running) return;
    this.#running = true;
    this.#attempt = 0;
    this.#refusedOnce = false;
    this.#connect(false);
  }

  stop() {
    this.#running = false;
    this.#generation += 1;
    clearTimeout(this.#timer);
    this.#timer = 0;
    const ws = this.#ws;
    if (ws) this.#lost(ws, 1000, "signed out");
  }

  /** Skips the rest of the backoff wait, e.g. when the browser says it is back online. */
  retryNow() {
    if (!this.#running || this.#ws || !this.#timer) return;
    clearTimeout(this.#timer);
    this.#timer = 0;
    this.#connect(false);
  }

  /**
   * Sends a message once the connection is authenticated; returns its `ref`, or null when
   * there is no connection to send it on.
   */
  send(type, fields = {}) {
    const ws = this.#ws;
    if (!this.#ready || !ws || ws.readyState !== WebSocket.OPEN) return null;
    this.#refs += 1;
    const ref = `c${this.#refs}`;
    ws.send(JSON.stringify({ ...fields, type, ref }));
    return ref;
  }

  async #connect(freshToken) {
    this.#timer = 0;
    this.#generation += 1;
    const generation = this.#generation;
    let token;
    try {
      token = await this.#token(freshToken);
    } catch (err) {
      if (!this.#running || generation !== this.#generation) return;
      if (err && err.status === 401) {
        this.#running = false;
        this.#emit("fatal", { code: CLOSE_UNAUTHENTICATED });
        return;
      }
      this.#scheduleReconnect();
      return;
    }
    if (!this.#running || this.#ws || generation !== this.#generation) return;
    let ws;
    try {
      ws = new WebSocket(this.#url);
    } catch {
      this.#scheduleReconnect();
      return;
    }
    this.#ws = ws;
    this.#lastHeard = Date.now();
    ws.onopen = () => {
      if (ws !== this.#ws) return;
      ws.send(JSON.stringify({ type: "auth", token }));
      this.#helloTimer = setTimeout(() => this.#lost(ws, 4000, "no hello"), HELLO_WAIT_MS);
    };
    ws.onmessage = (event) => {
      if (ws !== this.#ws) return;
      this.#lastHeard = Date.now();
      let msg;
      try {
        msg = JSON.parse(event.data);
      } catch {
        return;
      }
      if (!msg || typeof msg !== "object" || typeof msg.type !== "string") return;
      if (msg.type === "hello") {
        clearTimeout(this.#helloTimer);
        this.#ready = true;
        this.#attempt = 0;
        this.#refusedOnce = false;
        this.#keepAlive(ws);
        this.#emit("ready", msg);
      }
      this.#emit("message", msg);
    };
    ws.onclose = (event) => this.#lost(ws, event.code, event.reason);
    ws.onerror = () => {
      // A close event always follows; that is where recovery starts.
    };
  }

  #keepAlive(ws) {
    clearInterval(this.#pingTimer);
    this.#pingTimer = setInterval(() => {
      if (ws !== this.#ws) return;
      if (Date.now() - this.#lastHeard > SILENCE_LIMIT_MS) {
        this.#lost(ws, 4000, "no answer to ping");
        return;
      }
      this.#pings += 1;
      this.send("ping", { id: `p${this.#pings}` });
    }, PING_EVERY_MS);
  }

  #lost(ws, code, reason) {
    if (ws !== this.#ws) return;
    const wasReady = this.#ready;
    this.#ws = null;
    this.#ready = false;
    clearTimeout(this.#helloTimer);
    clearInterval(this.#pingTimer);
    ws.onopen = ws.onmessage = ws.onclose = ws.onerror = null;
    if (ws.readyState === WebSocket.CONNECTING || ws.readyState === WebSocket.OPEN) {
      try {
        ws.close(code >= 4000 && code < 5000 ? code : 1000, String(reason || "").slice(0, 100));
      } catch {
        // Already closing.
      }
    }
    this.#emit("down", { code, reason, wasReady });
    if (!this.#running) return;
    if (code === CLOSE_NOT_AN_AGENT || code === CLOSE_REPLACED) {
      this.#running = false;
      this.#emit("fatal", { code });
      return;
    }
    if (code === CLOSE_UNAUTHENTICATED) {
      if (this.#refusedOnce) {
        this.#running = false;
        this.#emit("fatal", { code });
        return;
      }
      // The token may have run out while the connection was down: try once with a fresh one.
      this.#refusedOnce = true;
      this.#connect(true);
      return;
    }
    this.#scheduleReconnect();
  }

  #scheduleReconnect() {
    clearTimeout(this.#timer);
    const seconds = backoffSeconds(this.#attempt);
    this.#emit("reconnecting", { seconds, attempt: this.#attempt });
    this.#attempt += 1;
    this.#timer = setTimeout(() => this.#connect(false), seconds * 1000);
  }

  #emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }
}
