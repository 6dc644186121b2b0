// Values the softphone shows and checks: the shift's call list, the screen pop, durations and
// the formats the signaling protocol accepts. Nothing here touches the page or the network.

export const E164 = /^\+[1-9][0-9]{1,14}$/;
export const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
export const CODE = /^[a-z][a-z0-9_]{0,31}$/;
export const DTMF = /^[0-9*#A-D]{1,32}$/;
export const NOTES_MAX = 2000;

/** "m:ss", or "h:mm:ss" from an hour on. */
export function formatDuration(seconds) {
  const total = Math.max(0, Math.floor(Number(seconds) || 0));
  const h = Math.floor(total / 3600);
  const m = Math.floor((total % 3600) / 60);
  const s = String(total % 60).padStart(2, "0");
  return h > 0 ? `${h}:${String(m).padStart(2, "0")}:${s}` : `${m}:${s}`;
}

/** Local wall-clock time of an ISO timestamp, hours and minutes. */
export function formatClock(iso) {
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return "";
  return d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
}

/** "lunch" -> "Lunch", "follow_up" -> "Follow up". */
export function humanize(word) {
  const text = String(word ?? "").replace(/_/g, " ").trim();
  return text ? text[0].toUpperCase() + text.slice(1) : "";
}

/** Why a transfer target is not acceptable, or null when it is. */
export function transferProblem(kind, to) {
  const target = String(to ?? "").trim();
  if (kind === "number") {
    return E164.test(target) ? null : "Enter the number in international format, e.g. +14155550123.";
  }
  if (kind === "agent" || kind === "queue") {
    return UUID.test(target) ? null : `Pick the ${kind} from the list or paste its ID.`;
  }
  return "Choose whether to transfer to an agent, a queue or a number.";
}

/** The wrap-up code as the protocol wants it: a code or null, or an error message. */
export function wrapUpCode(text) {
  const raw = String(text ?? "").trim();
  if (!raw) return { code: null, error: null };
  const code = raw.toLowerCase().replace(/[\s-]+/g, "_");
  if (!CODE.test(code)) {
    return {
      code: null,
      error: "The outcome code starts with a letter and has only lowercase letters, digits and _.",
    };
  }
  return { code, error: null };
}

function text(value) {
  if (value === null || value === undefined) return "";
  if (typeof value === "object") {
    try {
      return JSON.stringify(value);
    } catch {
      return String(value);
    }
  }
  return String(value);
}

function pairs(object, limit = 20) {
  if (!object || typeof object !== "object" || Array.isArray(object)) return [];
  return Object.entries(object)
    .filter(([, v]) => v !== null && v !== undefined && v !== "")
    .slice(0, limit)
    .map(([k, v]) => [humanize(k), text(v)]);
}

const SHOWN_CONTACT_KEYS = new Set(["name", "vip", "blocked"]);
const KNOWN_CONTEXT_KEYS = new Set(["contact", "lookup", "path"]);

/** What the incoming-call banner shows for an `offered` message. */
export function screenPop(offered) {
  const context = offered && typeof offered.context === "object" && offered.context ? offered.context : {};
  const contact = context.contact && typeof context.contact === "object" ? context.contact : null;
  const path = Array.isArray(context.path) ? context.path.map(text).filter(Boolean) : [];
  const extras = Object.entries(context).filter(([k]) => !KNOWN_CONTEXT_KEYS.has(k));
  const contactExtras = contact
    ? Object.entries(contact).filter(([k]) => !SHOWN_CONTACT_KEYS.has(k))
    : [];
  return {
    from: text(offered?.from_number) || "Unknown number",
    to: text(offered?.to_number),
    contactName: contact ? text(contact.name) : "",
    vip: Boolean(contact?.vip),
    blocked: Boolean(contact?.blocked),
    known: Boolean(contact),
    queue: text(offered?.queue_name) || text(offered?.queue_id) || "",
    waitedSeconds: Number(offered?.waited_seconds) || 0,
    timeoutSeconds: Math.max(0, Number(offered?.timeout_seconds) || 0),
    path,
    lookup: pairs(context.lookup),
    details: [...pairs(Object.fromEntries(contactExtras)), ...pairs(Object.fromEntries(extras))],
  };
}

const LIVE = new Set(["ringing", "connected", "held"]);

/** True while a call in this state still needs the call panel. */
export function isLive(state) {
  return LIVE.has(state);
}

function seconds(fromIso, toIso) {
  const a = Date.parse(fromIso);
  const b = Date.parse(toIso);
  return Number.isFinite(a) && Number.isFinite(b) && b >= a ? (b - a) / 1000 : null;
}

/**
 * The calls of this shift, built from `call` messages (one row per call_id, newest first).
 * Each row: call_id, direction, number, started_at, connected_at, ended_at, state, cause,
 * rejected, outcome, duration (seconds or null).
 */
export class CallLog {
  #rows = new Map();
  #rejectedBeforeListed = new Set();

  constructor(rows = []) {
    for (const row of Array.isArray(rows) ? rows : []) {
      if (row && typeof row.call_id === "string") this.#rows.set(row.call_id, { ...row });
    }
  }

  get rows() {
    return [...this.#rows.values()].sort((a, b) => String(b.started_at).localeCompare(String(a.started_at)));
  }

  get(callId) {
    return this.#rows.get(callId) ?? null;
  }

  /** Folds a `call` message into the list and returns the updated row. */
  apply(msg) {
    if (!msg || typeof msg.call_id !== "string") return null;
    const at = typeof msg.at === "string" ? msg.at : new Date().toISOString();
    const row = this.#rows.get(msg.call_id) ?? {
      call_id: msg.call_id,
      direction: msg.direction === "outbound" ? "outbound" : "inbound",
      number: "",
      started_at: at,
      connected_at: null,
      ended_at: null,
      state: null,
      cause: null,
      rejected: this.#rejectedBeforeListed.has(msg.call_id),
    };
    if (msg.direction === "inbound" || msg.direction === "outbound") row.direction = msg.direction;
    const number = row.direction === "outbound" ? msg.to_number : msg.from_number;
    if (number) row.number = String(number);
    row.state = msg.state;
    if ((msg.state === "connected" || msg.state === "held") && !row.connected_at) row.connected_at = at;
    if (msg.state === "ended" || msg.state === "offer_withdrawn") {
      row.ended_at = row.ended_at ?? at;
      if (msg.cause) row.cause = String(msg.cause);
    }
    this.#rows.set(row.call_id, row);
    return CallLog.describe(row);
  }

  /** Remembers that this agent turned the offer down. */
  markRejected(callId) {
    const row = this.#rows.get(callId);
    if (row) row.rejected = true;
    else this.#rejectedBeforeListed.add(callId);
  }

  /** Rows with outcome and duration filled in, newest first. */
  describeAll() {
    return this.rows.map((row) => CallLog.describe(row));
  }

  static describe(row) {
    let outcome;
    if (row.connected_at) outcome = row.ended_at ? "answered" : row.state === "held" ? "on hold" : "in progress";
    else if (row.rejected) outcome = "rejected";
    else if (row.state === "offer_withdrawn") outcome = "missed";
    else if (row.state === "ended") outcome = row.direction === "outbound" ? "not answered" : "missed";
    else outcome = row.state === "ringing" ? "ringing" : String(row.state ?? "");
    // Both ends on the server's clock; a call still going has no duration yet.
    const duration = row.connected_at && row.ended_at ? seconds(row.connected_at, row.ended_at) : null;
    return { ...row, outcome, duration };
  }

  toJSON() {
    return this.rows.slice(0, 200);
  }
}
