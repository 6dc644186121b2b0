// Values the softphone shows and checks: the shift's call list, the screen pop, durations and
// the formats the signaling protocol accepts. Nothing here touches the page or the network.

export const E164 = /^\+[1-9][0-9]{1,14}$/;
// What the server accepts for a number to dial and for the caller ID shown to them.
export const DIAL_E164 = /^\+[1-9][0-9]{6,14}$/;
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

/**
 * A number typed to dial, as the protocol wants it: spaces, brackets, dots and dashes are
 * dropped ("+1 (415) 555-0123" -> "+14155550123"). Returns {number, error}.
 */
export function dialNumber(text) {
  const number = String(text ?? "").replace(/[\s().-]/g, "");
  if (!number) return { number: null, error: "Enter the number to call." };
  if (!DIAL_E164.test(number)) {
    return {
      number: null,
      error: "Enter the number in international format: + and the country code, e.g. +14155550123.",
    };
  }
  return { number, error: null };
}

// Plain words for the server's refusals, by code. The server's own message is written for
// developers, so the page only falls back to it for codes it does not know.
export const DIAL_ERRORS = {
  busy: "Your line is in use. Finish the current call (or stop supervising) before calling out.",
  no_media: "Your audio line is not connected yet. Wait until it says connected, then try again.",
  caller_id_not_owned: "That caller ID is not one of your organisation's numbers. Pick another.",
  international_not_allowed: "Your organisation does not allow calls to other countries.",
  premium_not_allowed: "Your organisation does not allow calls to premium-rate numbers.",
  invalid_destination: "That number cannot be called. Check it and try again.",
  no_trunk: "There is no phone line to place this call on. Ask your administrator.",
  concurrent_call_limit:
    "Your organisation has as many calls going as it may have at once. Try again in a moment.",
  tenant_inactive: "Your organisation cannot place calls right now. Ask your administrator.",
  invalid_message: "The number or the caller ID was not accepted. Check both and try again.",
};

export const MONITOR_ERRORS = {
  forbidden: "Supervising calls needs the owner, admin or supervisor role.",
  no_media: "Your audio line is not connected yet. Wait until it says connected, then try again.",
  busy: "You are on a call of your own. Finish it before supervising another.",
  already_monitoring: "You are supervising another call already. Stop that one first.",
  not_connected: "That call is not talking to an agent right now.",
  own_call: "That is your own call.",
  monitored: "Another supervisor is on that call already.",
  call_not_found: "There is no live call with that ID.",
  not_monitoring: "You are not supervising that call any more.",
  invalid_message: "That call ID was not accepted. Check it and try again.",
};

/**
 * What the agent is told when a call they dialed ended without being answered, by cause, or
 * null when there is nothing to say (they cancelled it themselves).
 */
export function dialOutcome(cause, number) {
  const who = number || "the number";
  switch (cause) {
    case "no_answer":
      return `No answer from ${who}.`;
    case "busy":
      return `${who} is busy. Try again later.`;
    case "failed":
      return `The call to ${who} could not be connected.`;
    case "cancelled":
    case "agent_hangup":
    case "local_hangup":
      return null;
    default:
      return cause ? `The call to ${who} ended: ${humanize(cause).toLowerCase()}.` : null;
  }
}

const MONITOR_ENDED = {
  stopped: "you stopped supervising",
  call_ended: "the call ended",
  transferred: "the call was transferred",
  supervisor_unreachable: "your audio line dropped",
  supervisor_signed_off: "your softphone signed off",
};

/**
 * The supervising panel's status line for a `monitor` notice; `agent` is the agent's name
 * when the page knows it (else their ID).
 */
export function monitorStatus(msg, agent = "") {
  const caller = String(msg?.from_number || "") || "an unknown number";
  const who = agent || String(msg?.agent_id || "") || "unknown";
  switch (msg?.mode) {
    case "listen":
      return `Listening to ${caller} (agent ${who}). Nobody hears you.`;
    case "whisper":
      return `Whispering to the agent (${who}). The caller does not hear you.`;
    case "barge":
      return `Barged in: ${caller} and the agent (${who}) both hear you.`;
    case "ended": {
      const cause = MONITOR_ENDED[msg.cause] ?? (humanize(msg.cause).toLowerCase() || "the call ended");
      return `Ended: ${cause}.`;
    }
    default:
      return "";
  }
}

/** What the agent sees (and hears read out) when a supervisor speaks on their call. */
export function supervisorNotice(mode) {
  if (mode === "whisper") return "A supervisor is coaching you (only you hear them)";
  if (mode === "barge") return "A supervisor joined the call";
  return "";
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

const LIVE = new Set(["dialing", "ringing", "connected", "held"]);

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
