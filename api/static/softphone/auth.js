// Signing in and keeping the access token fresh. The tokens are kept in memory and in this
// tab's sessionStorage (so a reload does not sign the agent out), never in localStorage or a
// cookie. The refresh token rotates on every use: the newest one always replaces the old.

const STORE_KEY = "switchboard.softphone.session";
const REFRESH_MARGIN_MS = 60_000;
const FRESH_ENOUGH_MS = 30_000;
const RETRY_MS = 10_000;
// Answers to a refresh that mean the refresh token is no good any more.
const SESSION_OVER = new Set([400, 401, 403, 404, 422]);

export class AuthError extends Error {
  constructor(message, status) {
    super(message);
    this.name = "AuthError";
    this.status = status;
  }
}

async function problemText(response, fallback) {
  try {
    const problem = await response.json();
    return problem.detail || problem.title || fallback;
  } catch {
    return fallback;
  }
}

async function loginFailure(response) {
  if (response.status === 401) return "Wrong email or password.";
  if (response.status === 422 || response.status === 400) {
    return "Enter your email address and password.";
  }
  if (response.status === 429) {
    const wait = Number(response.headers.get("retry-after"));
    return Number.isFinite(wait) && wait > 0
      ? `Too many attempts. Try again in ${Math.ceil(wait)} s.`
      : "Too many attempts. Try again in a minute.";
  }
  return problemText(response, `Sign-in failed (HTTP ${response.status}).`);
}

/** The claims of a JWT, unverified: only to shape the page, never to trust. */
function claimsOf(token) {
  try {
    const part = token.split(".")[1];
    const base64 = part.replace(/-/g, "+").replace(/_/g, "/");
    return JSON.parse(atob(base64.padEnd(Math.ceil(base64.length / 4) * 4, "=")));
  } catch {
    return {};
  }
}

function post(path, body) {
  return fetch(path, {
    method: "POST",
    headers: { "content-type": "application/json", accept: "application/json" },
    body: JSON.stringify(body),
    credentials: "same-origin",
    cache: "no-store",
  });
}

/**
 * The signed-in agent's tokens. Events: "ended" (detail: message) when the session can no
 * longer be renewed and the agent has to sign in again.
 */
export class Session extends EventTarget {
  #tokens = null;
  #timer = 0;
  #refreshing = null;
  #storage;

  constructor(storage = globalThis.sessionStorage) {
    super();
    this.#storage = storage ?? null;
  }

  get signedIn() {
    return this.#tokens !== null;
  }

  /** The user's role from the access token (owner, admin, supervisor, agent, ...), or null. */
  get role() {
    if (!this.#tokens) return null;
    const role = claimsOf(this.#tokens.accessToken).role;
    return typeof role === "string" ? role : null;
  }

  /** Picks up the tokens this tab kept across a reload. */
  restore() {
    try {
      const saved = JSON.parse(this.#storage?.getItem(STORE_KEY) ?? "null");
      if (
        !saved ||
        typeof saved.accessToken !== "string" ||
        typeof saved.refreshToken !== "string" ||
        typeof saved.expiresAt !== "number"
      ) {
        return false;
      }
      this.#tokens = saved;
      this.#schedule();
      return true;
    } catch {
      return false;
    }
  }

  async login(email, password) {
    let response;
    try {
      response = await post("/v1/auth/login", { email, password });
    } catch {
      throw new AuthError("Can't reach the server. Check your connection and try again.", 0);
    }
    if (!response.ok) throw new AuthError(await loginFailure(response), response.status);
    this.#accept(await response.json());
  }

  /** An access token good for at least the next half minute. */
  async accessToken({ fresh = false } = {}) {
    if (!this.#tokens) throw new AuthError("Not signed in.", 401);
    if (fresh || this.#tokens.expiresAt - Date.now() < FRESH_ENOUGH_MS) await this.refresh();
    if (!this.#tokens) throw new AuthError("Not signed in.", 401);
    return this.#tokens.accessToken;
  }

  /** Rotates the tokens; concurrent callers share one request. */
  refresh() {
    if (!this.#refreshing) {
      this.#refreshing = this.#refresh().finally(() => {
        this.#refreshing = null;
      });
    }
    return this.#refreshing;
  }

  /** Renews now if the token ran out while timers were held back (a hidden tab, a sleeping laptop). */
  checkExpiry() {
    if (this.#tokens && this.#tokens.expiresAt - Date.now() < REFRESH_MARGIN_MS) {
      this.refresh().catch(() => {});
    }
  }

  async logout() {
    const tokens = this.#tokens;
    this.#clear();
    if (!tokens) return;
    try {
      await post("/v1/auth/logout", { refresh_token: tokens.refreshToken });
    } catch {
      // The refresh token expires on its own; nothing more to do offline.
    }
  }

  async #refresh() {
    const tokens = this.#tokens;
    if (!tokens) throw new AuthError("Not signed in.", 401);
    let response;
    try {
      response = await post("/v1/auth/refresh", { refresh_token: tokens.refreshToken });
    } catch {
      this.#retrySoon();
      throw new AuthError("Can't reach the server.", 0);
    }
    if (tokens !== this.#tokens) {
      // Signed out (or in again) meanwhile: this answer belongs to nobody.
      throw new AuthError("Not signed in.", 401);
    }
    if (SESSION_OVER.has(response.status)) {
      this.#end("Your session has ended. Please sign in again.");
      throw new AuthError("Your session has ended.", 401);
    }
    if (!response.ok) {
      this.#retrySoon();
      throw new AuthError(await problemText(response, "Could not renew the session."), response.status);
    }
    this.#accept(await response.json());
  }

  #accept(pair) {
    if (!pair || typeof pair.access_token !== "string" || typeof pair.refresh_token !== "string") {
      throw new AuthError("The server sent an unexpected answer.", 0);
    }
    const lifetime = Math.max(1, Number(pair.expires_in) || 0) * 1000;
    this.#tokens = {
      accessToken: pair.access_token,
      refreshToken: pair.refresh_token,
      expiresAt: Date.now() + lifetime,
    };
    try {
      this.#storage?.setItem(STORE_KEY, JSON.stringify(this.#tokens));
    } catch {
      // Storage full or blocked: the tokens still work from memory.
    }
    this.#schedule();
  }

  #schedule() {
    clearTimeout(this.#timer);
    if (!this.#tokens) return;
    const left = this.#tokens.expiresAt - Date.now();
    const delay = left > 2 * REFRESH_MARGIN_MS ? left - REFRESH_MARGIN_MS : Math.max(1000, left / 2);
    this.#timer = setTimeout(() => this.refresh().catch(() => {}), delay);
  }

  #retrySoon() {
    clearTimeout(this.#timer);
    if (this.#tokens) this.#timer = setTimeout(() => this.refresh().catch(() => {}), RETRY_MS);
  }

  #clear() {
    clearTimeout(this.#timer);
    this.#tokens = null;
    try {
      this.#storage?.removeItem(STORE_KEY);
    } catch {
      // Nothing kept, nothing to remove.
    }
  }

  #end(message) {
    this.#clear();
    this.dispatchEvent(new CustomEvent("ended", { detail: message }));
  }
}
