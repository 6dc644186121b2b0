// The softphone page: wires sign-in, signaling and the audio leg to what the agent sees.

import { AuthError, Session } from "./auth.js";
import {
  CallLog,
  DIAL_E164,
  DIAL_ERRORS,
  DTMF,
  MONITOR_ERRORS,
  NOTES_MAX,
  UUID,
  dialNumber,
  dialOutcome,
  formatClock,
  formatDuration,
  humanize,
  isLive,
  monitorStatus,
  screenPop,
  supervisorNotice,
  transferProblem,
  wrapUpCode,
} from "./calls.js";
import { MediaLeg } from "./media.js";
import { Ringer } from "./ringer.js";
import {
  CLOSE_NOT_AN_AGENT,
  CLOSE_REPLACED,
  CLOSE_UNAUTHENTICATED,
  Signaling,
  agentSocketUrl,
} from "./signaling.js";
import {
  announce,
  badge,
  cell,
  clearAlert,
  clearAllAlerts,
  fillFacts,
  nothingFocused,
  showAlert,
  ui,
} from "./ui.js";

export const CONNECTION_LOST = "Connection lost - reconnecting...";
const NOT_CONNECTED = "Not connected to the server right now. Try again in a moment.";
const SESSION_ENDED = "Your session has ended. Please sign in again.";
const ERROR_TEXT = {
  no_media: "Your audio line is not connected yet. Wait until it says connected, then try again.",
};
// How long past the offer's timeout an answered call may take to connect before we give up.
const ANSWER_GRACE_S = 15;
const CALL_LOG_KEY = "switchboard.softphone.calls.";
const DEFAULT_AWAY_REASONS = ["break", "lunch", "meeting", "training", "admin"];

const session = new Session();
const signaling = new Signaling(agentSocketUrl(window.location), (fresh) =>
  session.accessToken({ fresh }),
);
const media = new MediaLeg({
  send: (type, fields) => signaling.send(type, fields),
  canSend: () => signaling.ready,
  audio: ui.audio,
});
const ringer = new Ringer();

const state = {
  hello: null,
  presence: null,
  lastOffer: null,
  offer: null,
  offerShownAt: 0,
  answering: false,
  call: null,
  lastEnded: null,
  wrapUp: null,
  wrapUpSentFor: null,
  leg: "disconnected",
  clockOffset: 0,
  log: new CallLog(),
  logKey: null,
  actions: new Map(),
  directory: { agent: [], queue: [] },
  directoryLoaded: false,
  permissionWatched: false,
  // Bumped on every sign-out, so answers to requests of an earlier sign-in are dropped.
  epoch: 0,
  // The tenant's numbers to call from ({e164, label}), null until loaded.
  numbers: null,
  numbersLoading: false,
  // A `dial` sent and not answered yet: {ref, number, callerId, at}.
  dial: null,
  // The call this supervisor is on: {callId, mode (null until the server confirms), agentId,
  // fromNumber, stopping, sentAt}.
  monitor: null,
  // A supervisor heard on this agent's call: {callId, mode: "whisper" | "barge"}.
  supervisor: null,
  consult: null,
};

// For the end-to-end tests and for support staff poking at a live page.
window.softphone = {
  get ws() {
    return signaling.ws;
  },
  get pc() {
    return media.pc;
  },
  get remoteStream() {
    return media.remoteStream;
  },
  /** The agent's presence state as the server last reported it (null before hello). */
  get state() {
    return state.presence ? state.presence.state : null;
  },
  /** The last `offered` message (the call offer and its screen pop). */
  get lastOffer() {
    return state.lastOffer;
  },
  get presence() {
    return state.presence;
  },
  get call() {
    return state.call;
  },
  get legState() {
    return state.leg;
  },
  get lastSdpOffer() {
    return media.lastSdpOffer;
  },
  /** The call this supervisor is on, as the server last confirmed it (null when none). */
  get monitor() {
    return state.monitor && state.monitor.mode ? { ...state.monitor } : null;
  },
};

// ---- Plain messages ----------------------------------------------------------------------

function errorText(msg) {
  return ERROR_TEXT[msg.code] || msg.message || `The server refused that (${msg.code || "error"}).`;
}

// ---- Sending -----------------------------------------------------------------------------

/** Sends a message; returns its ref, or null (and says so) when not connected. */
function act(type, fields, { onError = null, quiet = false } = {}) {
  const ref = signaling.send(type, fields);
  if (ref === null) {
    if (!quiet) showAlert("action", NOT_CONNECTED, { ms: 6000 });
    return null;
  }
  state.actions.set(ref, { type, onError, at: Date.now() });
  return ref;
}

// ---- Views -------------------------------------------------------------------------------

function showLogin(message) {
  ui.phoneView.hidden = true;
  ui.loginView.hidden = false;
  ui.logoutBtn.hidden = true;
  ui.agentName.textContent = "";
  if (message) showAlert("session", message);
  renderStatus();
  ui.loginEmail.focus();
}

function showPhone() {
  ui.loginView.hidden = true;
  ui.phoneView.hidden = false;
  ui.logoutBtn.hidden = false;
  clearAlert("session");
  clearAlert("login");
  renderStatus();
}

function resetWork() {
  closeOffer();
  closeTransfer();
  state.epoch += 1;
  state.hello = null;
  state.presence = null;
  state.call = null;
  state.lastEnded = null;
  state.wrapUp = null;
  state.wrapUpSentFor = null;
  state.actions.clear();
  state.directory = { agent: [], queue: [] };
  state.directoryLoaded = false;
  state.log = new CallLog();
  state.logKey = null;
  state.numbers = null;
  state.numbersLoading = false;
  state.dial = null;
  state.monitor = null;
  state.supervisor = null;
  ui.wrapupForm.hidden = true;
  ui.stateSelect.disabled = true;
  resetDial();
  resetMonitor();
  renderCall();
  renderLog();
}

function signOutLocally(message, { logout = false } = {}) {
  signaling.stop();
  media.stop();
  ringer.stop();
  if (logout) session.logout();
  clearAllAlerts();
  ui.micRetry.hidden = true;
  ui.audioUnlock.hidden = true;
  ui.reconnectBtn.hidden = true;
  resetWork();
  setLeg("disconnected");
  showLogin(message);
}

function connect() {
  ui.reconnectBtn.hidden = true;
  signaling.start();
  renderStatus();
}

// ---- Status line -------------------------------------------------------------------------

function presenceText(p) {
  switch (p.state) {
    case "available":
      return "Available";
    case "away":
      return p.reason ? `Away (${humanize(p.reason)})` : "Away";
    case "offline":
      return "Offline";
    case "reserved":
    case "ringing":
      return "Incoming call";
    case "on_call":
      return "On a call";
    case "wrap_up": {
      const left = secondsUntil(p.wrap_up_until);
      return left === null ? "Wrap-up" : `Wrap-up - ${formatDuration(left)} left`;
    }
    default:
      return humanize(p.state) || "Unknown";
  }
}

function dotState(p) {
  if (!p) return "offline";
  if (p.state === "available" || p.state === "away" || p.state === "wrap_up") return p.state;
  if (p.state === "offline") return "offline";
  return "busy";
}

function renderStatus() {
  let text;
  if (!session.signedIn) text = "Signed out";
  else if (!signaling.ready) {
    if (!signaling.running) text = "Not connected";
    else text = state.hello ? "Reconnecting..." : "Connecting...";
  }
  else if (!state.presence) text = "Connected";
  else {
    text = presenceText(state.presence);
    const since = state.presence.since ? formatClock(state.presence.since) : "";
    if (since && ["available", "away", "offline"].includes(state.presence.state)) {
      text += ` since ${since}`;
    }
  }
  if (ui.statusLine.textContent !== text) ui.statusLine.textContent = text;
  ui.statusDot.dataset.state = signaling.ready ? dotState(state.presence) : "offline";
  renderDial();
  renderMonitor();
  const title = state.offer
    ? `Incoming call - ${screenPop(state.offer).from}`
    : `${text} - Softphone`;
  if (document.title !== title) document.title = title;
}

function setLeg(word) {
  state.leg = word;
  ui.legState.textContent = word;
  ui.legState.dataset.state = word;
  if (word === "connected") clearAlert("media");
  renderHint();
  renderDial();
  renderMonitor();
}

// ---- Presence ----------------------------------------------------------------------------

function fillReasons(reasons) {
  const list = Array.isArray(reasons) && reasons.length ? reasons : DEFAULT_AWAY_REASONS;
  const chosen = ui.awayReason.value;
  ui.awayReason.replaceChildren(
    ...list.map((reason) => new Option(humanize(reason), String(reason))),
  );
  if (list.includes(chosen)) ui.awayReason.value = chosen;
}

function showServerPresence() {
  const p = state.presence;
  if (p && ["available", "away", "offline"].includes(p.state)) ui.stateSelect.value = p.state;
  if (p && p.state === "away" && p.reason) {
    if (![...ui.awayReason.options].some((o) => o.value === p.reason)) {
      ui.awayReason.append(new Option(humanize(p.reason), p.reason));
    }
    ui.awayReason.value = p.reason;
  }
}

// How far this computer's clock is ahead of the server's, learned when a presence change
// arrives as it happens (its `since` is then the server's "now"). Wrap-up countdowns use it.
function learnClockOffset(p, before) {
  const since = Date.parse(p.since ?? "");
  if (!before || before.state === p.state || !Number.isFinite(since)) return;
  state.clockOffset = Date.now() - since;
}

function secondsUntil(iso) {
  const until = Date.parse(iso ?? "");
  if (!Number.isFinite(until)) return null;
  const left = (until - (Date.now() - state.clockOffset)) / 1000;
  // A wrap-up of hours means the clocks disagree, not that the agent has hours.
  return left > 3600 ? null : Math.max(0, left);
}

function onPresence(p, { live = true } = {}) {
  if (!p || typeof p.state !== "string") return;
  const before = state.presence;
  if (live) learnClockOffset(p, before);
  state.presence = p;
  showServerPresence();
  if (typeof p.calls_handled === "number") ui.callsHandled.textContent = String(p.calls_handled);
  if (p.state === "wrap_up") openWrapUp(p.call_id);
  else if (before && before.state === "wrap_up") wrapUpTimeOver();
  // After a reload in the middle of a call the server may only tell us which call it is.
  const known = p.call_id ? state.log.get(p.call_id) : null;
  if (p.state === "on_call" && p.call_id && !state.call && !(known && known.ended_at)) {
    state.call = newCall({ call_id: p.call_id, state: "connected" });
    state.call.connectedAt = Date.now();
    if (known && known.number) state.call.number = known.number;
    renderCall();
  }
  renderHint();
  renderStatus();
}

function renderHint() {
  let hint = "";
  if (ui.stateSelect.value === "available" && state.leg !== "connected") {
    hint = "Calls ring here once the audio line is connected.";
  } else if (state.presence && state.presence.state === "available" && !state.call) {
    hint = "Waiting for calls. An incoming call shows up here with a ring.";
  }
  ui.presenceHint.textContent = hint;
}

function askPresence() {
  const wanted = ui.stateSelect.value;
  const fields = { state: wanted };
  if (wanted === "away" && ui.awayReason.value) fields.reason = ui.awayReason.value;
  const ref = act("presence", fields, { onError: showServerPresence });
  if (ref === null) showServerPresence();
}

ui.stateSelect.addEventListener("change", askPresence);
ui.awayReason.addEventListener("change", () => {
  if (ui.stateSelect.value === "away") askPresence();
});

// ---- Incoming call -----------------------------------------------------------------------

function contactLine(pop) {
  if (!pop.known) return [document.createTextNode("Not in your contacts")];
  const parts = [document.createTextNode(pop.contactName || "Known caller")];
  if (pop.vip) parts.push(badge("vip", "VIP"));
  if (pop.blocked) parts.push(badge("blocked", "Blocked"));
  return parts;
}

function onOffered(msg) {
  if (typeof msg.call_id !== "string") return;
  state.lastOffer = msg;
  state.offer = msg;
  state.offerShownAt = performance.now();
  state.answering = false;
  const pop = screenPop(msg);
  ui.offerFrom.textContent = pop.from;
  ui.offerContact.replaceChildren(...contactLine(pop));
  ui.offerQueue.textContent = pop.queue || "-";
  ui.offerPath.textContent = pop.path.length ? pop.path.join(" \u2192 ") : "-";
  ui.offerTo.textContent = pop.to || "-";
  fillFacts(ui.offerLookup, pop.lookup);
  ui.offerLookupBox.hidden = pop.lookup.length === 0;
  fillFacts(ui.offerDetails, pop.details);
  ui.offerDetailsBox.hidden = pop.details.length === 0;
  ui.offerCountdown.parentElement.hidden = pop.timeoutSeconds <= 0;
  ui.offerProgress.hidden = pop.timeoutSeconds <= 0;
  ui.answerBtn.textContent = "Answer";
  ui.answerBtn.disabled = false;
  ui.rejectBtn.disabled = false;
  ui.offerBanner.hidden = false;
  tickOffer();
  ringer.start();
  const who = pop.contactName ? `${pop.contactName}, ${pop.from}` : pop.from;
  announce(`Incoming call from ${who}${pop.queue ? ` for ${pop.queue}` : ""}`);
  // Only take the focus when nothing else has it, so typing elsewhere is never hijacked.
  if (nothingFocused()) ui.answerBtn.focus();
  renderStatus();
}

function closeOffer(callId = null) {
  if (!state.offer || (callId && state.offer.call_id !== callId)) return;
  const hadFocus = ui.offerBanner.contains(document.activeElement);
  state.offer = null;
  state.answering = false;
  ui.offerBanner.hidden = true;
  ringer.stop();
  if (hadFocus) {
    if (state.call) ui.callTitle.focus();
    else document.activeElement.blur();
  }
  renderStatus();
}

function tickOffer() {
  const offer = state.offer;
  if (!offer) return;
  const pop = screenPop(offer);
  const elapsed = (performance.now() - state.offerShownAt) / 1000;
  ui.offerWaited.textContent = formatDuration(pop.waitedSeconds + elapsed);
  if (pop.timeoutSeconds <= 0) return;
  const left = Math.max(0, pop.timeoutSeconds - elapsed);
  ui.offerCountdown.textContent = String(Math.ceil(left));
  ui.offerProgress.value = left / pop.timeoutSeconds;
  if (left <= 0 && !state.answering) {
    closeOffer(offer.call_id);
    showAlert("offer", `Missed call from ${pop.from}.`, { ms: 8000, info: true });
  } else if (state.answering && elapsed > pop.timeoutSeconds + ANSWER_GRACE_S) {
    closeOffer(offer.call_id);
    showAlert("offer", `The call from ${pop.from} could not be connected.`, { ms: 10000 });
  }
}

ui.answerBtn.addEventListener("click", () => {
  const offer = state.offer;
  if (!offer || state.answering) return;
  ringer.unlock();
  const ref = act(
    "answer",
    { call_id: offer.call_id },
    {
      onError: () => {
        if (state.offer !== offer) return;
        state.answering = false;
        ui.answerBtn.textContent = "Answer";
        ui.answerBtn.disabled = false;
        ui.rejectBtn.disabled = false;
      },
    },
  );
  if (ref === null) return;
  state.answering = true;
  ringer.stop();
  ui.answerBtn.disabled = true;
  ui.rejectBtn.disabled = true;
  ui.answerBtn.textContent = "Connecting...";
});

ui.rejectBtn.addEventListener("click", () => {
  const offer = state.offer;
  if (!offer || state.answering) return;
  if (act("reject", { call_id: offer.call_id }) === null) return;
  state.log.markRejected(offer.call_id);
  closeOffer(offer.call_id);
  renderLog();
});

// ---- The call ----------------------------------------------------------------------------

function newCall(msg) {
  const offer = state.lastOffer && state.lastOffer.call_id === msg.call_id ? state.lastOffer : null;
  const pop = offer ? screenPop(offer) : null;
  return {
    call_id: msg.call_id,
    state: msg.state,
    direction: msg.direction === "outbound" ? "outbound" : "inbound",
    number: "",
    contact: pop && pop.known ? pop.contactName : "",
    connectedAt: null,
    muted: false,
    holdPending: false,
    hangingUp: false,
    sentAt: 0,
    dtmf: "",
  };
}

function onCall(msg) {
  if (typeof msg.call_id !== "string") return;
  const row = state.log.apply(msg);
  saveLog();
  renderLog();
  const { call_id: id, state: callState } = msg;

  if (callState === "offer_withdrawn") {
    if (state.offer && state.offer.call_id === id) {
      const from = screenPop(state.offer).from;
      closeOffer(id);
      showAlert("offer", `The call from ${from} is no longer waiting for you.`, {
        ms: 8000,
        info: true,
      });
    }
    return;
  }

  if (isLive(callState)) {
    // An inbound call rings in the offer banner (from `offered`) until it is answered; only
    // an outgoing call rings in the call panel.
    if (callState === "ringing" && msg.direction !== "outbound") return;
    if (state.offer && state.offer.call_id === id) closeOffer(id);
    const fresh = !state.call || state.call.call_id !== id;
    if (fresh) {
      state.call = newCall(msg);
      media.setMuted(false);
      if (state.wrapUp && !wrapUpTouched()) hideWrapUp();
    }
    const call = state.call;
    const before = fresh ? null : call.state;
    call.state = callState;
    if (msg.direction === "inbound" || msg.direction === "outbound") call.direction = msg.direction;
    const number = call.direction === "outbound" ? msg.to_number : msg.from_number;
    if (number) call.number = String(number);
    // The talk timer runs on this computer's clock: its clock and the server's may differ.
    if ((callState === "connected" || callState === "held") && !call.connectedAt) {
      call.connectedAt = Date.now();
    }
    call.holdPending = false;
    renderCall();
    const outgoing = call.direction === "outbound";
    if (fresh && outgoing) {
      // The agent just pressed Call: the call panel is where the call goes on (or is hung up).
      if (nothingFocused() || ui.dialForm.contains(document.activeElement)) ui.callTitle.focus();
      if (callState === "dialing") announce(`Calling ${call.number || "the number"}`);
    } else if (callState === "connected" && nothingFocused()) {
      ui.callTitle.focus();
    }
    if (outgoing && before === "dialing" && callState === "connected") {
      announce(`${call.number || "The number you called"} answered`);
    }
    return;
  }

  if (callState === "ended") {
    if (state.offer && state.offer.call_id === id) closeOffer(id);
    if (row && row.connected_at) {
      state.lastEnded = { call_id: id, number: row.number, duration: row.duration };
    }
    if (state.supervisor && state.supervisor.callId === id) state.supervisor = null;
    if (state.call && state.call.call_id === id) {
      const hadFocus = ui.callPanel.contains(document.activeElement);
      const call = state.call;
      state.call = null;
      media.setMuted(false);
      closeTransfer();
      renderCall();
      if (hadFocus && ui.callPanel.contains(document.activeElement)) document.activeElement.blur();
      // A call the agent dialed that was never answered: say why, next to where they dial.
      if (call.direction === "outbound" && row && !row.connected_at) {
        const outcome = dialOutcome(row.cause, row.number || call.number);
        if (outcome) ui.dialError.textContent = outcome;
      }
      if (state.presence && state.presence.state === "wrap_up") openWrapUp(id);
    }
  }
}

function renderCall() {
  const call = state.call;
  ui.callPanel.hidden = !call;
  renderHint();
  renderConsult();
  renderDial();
  renderMonitor();
  renderSupervisor();
  if (!call) return;
  const talking = call.state === "connected" || call.state === "held";
  const held = call.state === "held";
  ui.callNumber.textContent = call.number || "Unknown number";
  ui.callState.textContent = call.state;
  ui.callState.dataset.state = call.state;
  ui.callContact.textContent = call.contact || "";
  ui.callDirection.textContent = call.direction === "outbound" ? "Outgoing call" : "Incoming call";
  ui.holdBtn.textContent = held ? "Resume" : "Hold";
  ui.holdBtn.setAttribute("aria-pressed", String(held));
  ui.holdBtn.disabled = !talking || call.holdPending;
  ui.muteBtn.textContent = call.muted ? "Unmute" : "Mute";
  ui.muteBtn.setAttribute("aria-pressed", String(call.muted));
  ui.muteBtn.disabled = !talking;
  ui.transferBtn.disabled = !talking;
  ui.hangupBtn.disabled = call.hangingUp;
  ui.hangupBtn.textContent = call.hangingUp ? "Hanging up..." : "Hang up";
  for (const key of ui.keypad.querySelectorAll("button[data-digit]")) key.disabled = !talking;
  ui.dtmfSent.textContent = call.dtmf || "-";
  renderCallTimer();
}

function renderCallTimer() {
  const call = state.call;
  if (!call) return;
  const seconds = call.connectedAt ? (Date.now() - call.connectedAt) / 1000 : 0;
  const text = formatDuration(seconds);
  if (ui.callTimer.textContent !== text) ui.callTimer.textContent = text;
}

ui.hangupBtn.addEventListener("click", () => {
  const call = state.call;
  if (!call || call.hangingUp) return;
  const ref = act(
    "hangup",
    { call_id: call.call_id },
    {
      onError: () => {
        call.hangingUp = false;
        renderCall();
      },
    },
  );
  if (ref === null) return;
  call.hangingUp = true;
  call.sentAt = Date.now();
  renderCall();
});

ui.holdBtn.addEventListener("click", () => {
  const call = state.call;
  if (!call || call.holdPending) return;
  const type = call.state === "held" ? "resume" : "hold";
  const ref = act(
    type,
    { call_id: call.call_id },
    {
      onError: () => {
        call.holdPending = false;
        renderCall();
      },
    },
  );
  if (ref === null) return;
  call.holdPending = true;
  call.sentAt = Date.now();
  renderCall();
});

ui.muteBtn.addEventListener("click", () => {
  const call = state.call;
  if (!call) return;
  call.muted = !call.muted;
  // The local track goes silent at once, whatever the server makes of the message.
  media.setMuted(call.muted);
  act("mute", { call_id: call.call_id, muted: call.muted }, { quiet: true });
  renderCall();
});

function sendDigit(digit) {
  const call = state.call;
  if (!call || !DTMF.test(digit)) return;
  if (act("dtmf", { call_id: call.call_id, digits: digit }) === null) return;
  call.dtmf = (call.dtmf + digit).slice(-32);
  ui.dtmfSent.textContent = call.dtmf;
}

ui.keypad.addEventListener("click", (event) => {
  const key = event.target.closest("button[data-digit]");
  if (key && !key.disabled) sendDigit(key.dataset.digit);
});

ui.keypad.addEventListener("keydown", (event) => {
  if (event.ctrlKey || event.metaKey || event.altKey) return;
  const key = ui.keypad.querySelector(`button[data-digit="${CSS.escape(event.key)}"]`);
  if (!key || key.disabled) return;
  event.preventDefault();
  key.focus();
  sendDigit(key.dataset.digit);
});

// ---- Transfer ----------------------------------------------------------------------------

const TRANSFER_LABELS = {
  number: "Number (E.164, e.g. +14155550123)",
  agent: "Agent (pick from the list or paste the agent's ID)",
  queue: "Queue (pick from the list or paste the queue's ID)",
};

function renderDirectory() {
  const kind = ui.transferKind.value;
  const entries = state.directory[kind] ?? [];
  ui.transferDirectory.replaceChildren(
    ...entries.map(({ id, label }) => {
      const option = document.createElement("option");
      option.value = id;
      option.label = label;
      option.textContent = label;
      return option;
    }),
  );
  ui.transferToLabel.textContent = TRANSFER_LABELS[kind] ?? "Transfer to";
  ui.transferTo.placeholder = kind === "number" ? "+14155550123" : "";
  ui.transferTo.inputMode = kind === "number" ? "tel" : "text";
}

// Supervisors may list queues and colleagues; an agent may not, and types or pastes the IDs.
const DIRECTORY_ROLES = new Set(["owner", "admin", "supervisor"]);

async function loadDirectory() {
  if (state.directoryLoaded) return;
  state.directoryLoaded = true;
  if (!DIRECTORY_ROLES.has(session.role)) return;
  let token;
  try {
    token = await session.accessToken();
  } catch {
    return;
  }
  const me = state.hello ? state.hello.agent_id : null;
  const sources = [
    ["queue", "/v1/queues?limit=100", (q) => ({ id: q.id, label: q.name })],
    [
      "agent",
      "/v1/users?limit=100",
      (u) =>
        ["agent", "supervisor"].includes(u.role) && u.status === "active" && u.id !== me
          ? { id: u.id, label: u.name || u.email }
          : null,
    ],
  ];
  for (const [kind, path, pick] of sources) {
    try {
      const response = await fetch(path, {
        headers: { authorization: `Bearer ${token}`, accept: "application/json" },
        cache: "no-store",
      });
      if (!response.ok) continue;
      const body = await response.json();
      const items = Array.isArray(body.data) ? body.data : [];
      state.directory[kind] = items.map(pick).filter(Boolean);
    } catch {
      // Typing the ID still works.
    }
  }
  renderDirectory();
}

function closeTransfer() {
  if (ui.transferDialog.open) ui.transferDialog.close();
}

ui.transferBtn.addEventListener("click", () => {
  if (!state.call) return;
  ui.transferError.textContent = "";
  ui.transferTo.value = "";
  ui.transferAttended.checked = false;
  renderDirectory();
  ui.transferDialog.showModal();
  ui.transferTo.focus();
});

ui.transferKind.addEventListener("change", () => {
  ui.transferError.textContent = "";
  renderDirectory();
});

ui.transferCancel.addEventListener("click", closeTransfer);

ui.transferForm.addEventListener("submit", (event) => {
  event.preventDefault();
  const call = state.call;
  if (!call) {
    closeTransfer();
    return;
  }
  const kind = ui.transferKind.value;
  let to = ui.transferTo.value.trim();
  if (kind === "number") to = to.replace(/[\s().-]/g, "");
  const problem = transferProblem(kind, to);
  if (problem) {
    ui.transferError.textContent = problem;
    ui.transferTo.focus();
    return;
  }
  const attended = ui.transferAttended.checked;
  const ref = act(
    "transfer",
    { call_id: call.call_id, to_kind: kind, to, attended },
    { onError: (msg) => showAlert("transfer", `Transfer failed: ${errorText(msg)}`, { ms: 10000 }) },
  );
  if (ref === null) {
    ui.transferError.textContent = NOT_CONNECTED;
    return;
  }
  closeTransfer();
  showAlert("transfer", attended ? "Connecting you first, then handing over..." : "Transferring...", {
    ms: 5000,
    info: true,
  });
});

// ---- Call a number -----------------------------------------------------------------------

const CALLER_ID_HELP = {
  loading: "Loading your organisation's numbers...",
  list: "One of your organisation's numbers.",
  none: "Your organisation has no numbers to call from. Ask your administrator.",
  typed: "Your organisation's numbers could not be loaded: type one of them, e.g. +14155550100.",
};
// How long a `dial` or a `monitor` may go unanswered before the page lets the agent try again
// (the server gives up on the media node after 10 s and says so).
const REQUEST_WAIT_MS = 20_000;

function setText(element, text) {
  if (element.textContent !== text) element.textContent = text;
}

/**
 * The caller ID is picked from a list of the tenant's numbers; when the list cannot be loaded
 * it is typed instead. Both controls carry the same id, so the label and the tests find it.
 */
function useCallerIdControl(kind) {
  const wantList = kind === "list";
  const old = ui.dialCallerId;
  if ((old instanceof HTMLSelectElement) === wantList) return;
  const control = document.createElement(wantList ? "select" : "input");
  control.id = old.id;
  control.name = old.name;
  control.setAttribute("aria-describedby", "dial-caller-id-help");
  if (!wantList) {
    control.type = "tel";
    control.inputMode = "tel";
    control.autocomplete = "off";
    control.spellcheck = false;
    control.maxLength = 32;
    control.placeholder = "+14155550100";
  }
  control.addEventListener("input", clearDialError);
  const hadFocus = document.activeElement === old;
  old.replaceWith(control);
  ui.dialCallerId = control;
  if (hadFocus) control.focus();
}

function fillCallerIds(numbers) {
  useCallerIdControl("list");
  const chosen = ui.dialCallerId.value;
  ui.dialCallerId.replaceChildren(
    ...numbers.map(({ e164, label }) => new Option(label ? `${e164} - ${label}` : e164, e164)),
  );
  if (numbers.some((n) => n.e164 === chosen)) ui.dialCallerId.value = chosen;
  ui.dialCallerIdHelp.textContent = numbers.length ? CALLER_ID_HELP.list : CALLER_ID_HELP.none;
}

/** The tenant's numbers, for the caller ID. Every role that can sign in here may read them. */
async function loadNumbers() {
  if (state.numbers !== null || state.numbersLoading) return;
  state.numbersLoading = true;
  const epoch = state.epoch;
  let numbers = null;
  try {
    const token = await session.accessToken();
    const response = await fetch("/v1/numbers?limit=100", {
      headers: { authorization: `Bearer ${token}`, accept: "application/json" },
      cache: "no-store",
    });
    if (response.ok) {
      const body = await response.json();
      if (body && Array.isArray(body.data)) {
        numbers = body.data
          .filter((n) => n && typeof n.e164 === "string" && DIAL_E164.test(n.e164))
          .map((n) => ({ e164: n.e164, label: typeof n.label === "string" ? n.label.trim() : "" }));
      }
    }
  } catch {
    numbers = null; // typed instead, below
  }
  if (epoch !== state.epoch) return; // signed out meanwhile
  state.numbersLoading = false;
  if (numbers === null) {
    useCallerIdControl("typed");
    ui.dialCallerIdHelp.textContent = CALLER_ID_HELP.typed;
  } else {
    state.numbers = numbers;
    fillCallerIds(numbers);
  }
  renderDial();
}

/** Why the agent cannot dial right now, or "" when they can. */
function dialBlocker() {
  if (!signaling.ready) return "Not connected to the server.";
  if (state.leg !== "connected") return "Calls go out once the audio line is connected.";
  if (state.dial) return "Calling...";
  if (state.call) {
    return state.call.state === "dialing"
      ? "Calling. Hang up in the call panel to cancel."
      : "Finish the current call first.";
  }
  if (state.offer) return "Answer or reject the incoming call first.";
  if (state.monitor) return "Stop supervising the call first.";
  if (state.numbers && state.numbers.length === 0) return "There is no number to call from.";
  return "";
}

function renderDial() {
  const blocker = dialBlocker();
  ui.dialSubmit.disabled = blocker !== "";
  setText(ui.dialSubmit, state.dial ? "Calling..." : "Call");
  setText(ui.dialHint, blocker);
}

function clearDialError() {
  ui.dialError.textContent = "";
}

function resetDial() {
  ui.dialNumber.value = "";
  clearDialError();
  fillCallerIds([]);
  ui.dialCallerIdHelp.textContent = CALLER_ID_HELP.loading;
}

/** A refused `dial`: said in plain words next to the form; handled, so no second alert. */
function dialRefused(msg, dial) {
  if (state.dial === dial) state.dial = null;
  ui.dialError.textContent = DIAL_ERRORS[msg.code] || errorText(msg);
  renderDial();
  if (nothingFocused() || document.activeElement === ui.dialSubmit) ui.dialNumber.focus();
  return true;
}

/** The server placed the call: the `call` notices follow (or came first). */
function onDialing(msg) {
  if (typeof msg.call_id !== "string") return;
  const dial = state.dial && state.dial.ref === msg.ref ? state.dial : null;
  if (msg.ref) state.actions.delete(msg.ref);
  if (!dial) return;
  state.dial = null;
  // Shown at once, even if the node's first notice is still on its way.
  if (!state.log.get(msg.call_id)) {
    onCall({
      type: "call",
      call_id: msg.call_id,
      state: "dialing",
      direction: "outbound",
      from_number: dial.callerId,
      to_number: dial.number,
    });
  }
  renderDial();
}

ui.dialNumber.addEventListener("input", clearDialError);
ui.dialCallerId.addEventListener("input", clearDialError);

ui.dialForm.addEventListener("submit", (event) => {
  event.preventDefault();
  const { number, error } = dialNumber(ui.dialNumber.value);
  if (error) {
    ui.dialError.textContent = error;
    ui.dialNumber.focus();
    return;
  }
  const callerId = String(ui.dialCallerId.value ?? "").replace(/[\s().-]/g, "");
  if (!DIAL_E164.test(callerId)) {
    ui.dialError.textContent =
      ui.dialCallerId instanceof HTMLSelectElement
        ? "Choose the number to show them."
        : "Enter the number to show them in international format, e.g. +14155550100.";
    ui.dialCallerId.focus();
    return;
  }
  const blocker = dialBlocker();
  if (blocker) {
    ui.dialError.textContent = blocker;
    return;
  }
  const dial = { ref: null, number, callerId, at: Date.now() };
  const ref = act(
    "dial",
    { number, caller_id: callerId },
    { quiet: true, onError: (msg) => dialRefused(msg, dial) },
  );
  if (ref === null) {
    ui.dialError.textContent = NOT_CONNECTED;
    return;
  }
  dial.ref = ref;
  state.dial = dial;
  ui.dialNumber.value = number;
  clearDialError();
  renderDial();
});

// ---- Supervising a call ------------------------------------------------------------------

// The roles whose users may listen to, whisper on and barge into their colleagues' calls.
const SUPERVISOR_ROLES = DIRECTORY_ROLES;
const NOT_SUPERVISING = "Not supervising a call.";

function canSupervise() {
  return SUPERVISOR_ROLES.has(session.role);
}

function agentLabel(agentId) {
  const known = state.directory.agent.find((entry) => entry.id === agentId);
  return known ? known.label : String(agentId || "");
}

function renderMonitor() {
  ui.monitorPanel.hidden = !canSupervise();
  const m = state.monitor;
  const joining = Boolean(m && !m.mode);
  setText(ui.monitorStart, m && m.mode ? "Switch mode" : "Start supervising");
  ui.monitorStart.disabled = joining || Boolean(m && m.stopping);
  ui.monitorStop.disabled = !m || m.stopping;
  ui.monitorCallId.readOnly = Boolean(m);
}

function resetMonitor() {
  ui.monitorCallId.value = "";
  ui.monitorMode.value = "listen";
  ui.monitorError.textContent = "";
  ui.monitorStatus.textContent = NOT_SUPERVISING;
  renderMonitor();
}

/** Why this supervisor cannot join a call now, or "" when they can. */
function monitorBlocker() {
  if (!signaling.ready) return NOT_CONNECTED;
  if (state.leg !== "connected") return MONITOR_ERRORS.no_media;
  if (state.call || state.dial) return MONITOR_ERRORS.busy;
  if (state.offer) return "Answer or reject the incoming call first.";
  return "";
}

function monitorRefused(msg, callId) {
  const m = state.monitor;
  if (m && m.callId === callId) {
    m.stopping = false;
    if (!m.mode || msg.code === "not_monitoring") {
      state.monitor = null;
      ui.monitorStatus.textContent = NOT_SUPERVISING;
    }
  }
  ui.monitorError.textContent = MONITOR_ERRORS[msg.code] || errorText(msg);
  renderMonitor();
  renderDial();
  return true;
}

function onMonitor(msg) {
  if (typeof msg.call_id !== "string") return;
  const m = state.monitor;
  if (msg.mode === "ended") {
    if (!m || m.callId === msg.call_id) state.monitor = null;
    ui.monitorStatus.textContent = monitorStatus(msg);
  } else if (msg.mode === "listen" || msg.mode === "whisper" || msg.mode === "barge") {
    state.monitor = {
      callId: msg.call_id,
      mode: msg.mode,
      agentId: typeof msg.agent_id === "string" ? msg.agent_id : null,
      fromNumber: typeof msg.from_number === "string" ? msg.from_number : null,
      stopping: false,
      sentAt: 0,
    };
    ui.monitorCallId.value = msg.call_id;
    ui.monitorMode.value = msg.mode;
    ui.monitorError.textContent = "";
    ui.monitorStatus.textContent = monitorStatus(msg, agentLabel(msg.agent_id));
  }
  renderMonitor();
  renderDial();
}

ui.monitorCallId.addEventListener("input", () => {
  ui.monitorError.textContent = "";
});

ui.monitorForm.addEventListener("submit", (event) => {
  event.preventDefault();
  if (!canSupervise()) return;
  const current = state.monitor;
  if (current && (!current.mode || current.stopping)) return;
  const callId = current ? current.callId : ui.monitorCallId.value.trim().toLowerCase();
  if (!UUID.test(callId)) {
    ui.monitorError.textContent =
      "Paste the call's ID: 32 letters and digits in five groups, like 0190a000-0000-7000-8000-0000000000c1.";
    ui.monitorCallId.focus();
    return;
  }
  const mode = ui.monitorMode.value;
  if (current && current.mode === mode) {
    ui.monitorError.textContent = "Choose another way to supervise, or stop.";
    return;
  }
  const blocker = current ? "" : monitorBlocker();
  if (blocker) {
    ui.monitorError.textContent = blocker;
    return;
  }
  const ref = act(
    "monitor",
    { call_id: callId, mode },
    { quiet: true, onError: (msg) => monitorRefused(msg, callId) },
  );
  if (ref === null) {
    ui.monitorError.textContent = NOT_CONNECTED;
    return;
  }
  ui.monitorError.textContent = "";
  if (!current) {
    state.monitor = { callId, mode: null, agentId: null, fromNumber: null, stopping: false };
    ui.monitorCallId.value = callId;
    ui.monitorStatus.textContent = "Joining the call...";
  }
  state.monitor.sentAt = Date.now();
  renderMonitor();
  renderDial();
});

ui.monitorStop.addEventListener("click", () => {
  const m = state.monitor;
  if (!m || m.stopping) return;
  const ref = act(
    "stop_monitor",
    { call_id: m.callId },
    { quiet: true, onError: (msg) => monitorRefused(msg, m.callId) },
  );
  if (ref === null) {
    ui.monitorError.textContent = NOT_CONNECTED;
    return;
  }
  ui.monitorError.textContent = "";
  m.stopping = true;
  m.sentAt = Date.now();
  renderMonitor();
});

// ---- An attended transfer under way ------------------------------------------------------

const CONSULT_ENDED = {
  no_answer: "did not answer",
  hung_up: "hung up",
  cancelled: "was cancelled",
  caller_gone: "ended: the caller hung up",
};

function renderConsult() {
  const c = state.consult;
  const live = Boolean(c && state.call && c.call_id === state.call.call_id);
  ui.consultBar.hidden = !live;
  if (!live) return;
  const who = c.to_kind === "agent" ? "the other agent" : c.to;
  setText(
    ui.consultStatus,
    c.state === "connected"
      ? `Talking to ${who}; the caller is on hold.`
      : `Calling ${who}; the caller is on hold.`,
  );
  ui.consultComplete.disabled = c.state !== "connected";
}

/** Where the consultation before an attended transfer stands. */
function onConsult(msg) {
  if (typeof msg.call_id !== "string") return;
  if (msg.state === "ringing" || msg.state === "connected") {
    state.consult = msg;
    if (msg.state === "connected") announce("Connected: the caller is on hold.");
  } else {
    state.consult = null;
    if (msg.state === "ended") {
      const why = CONSULT_ENDED[msg.reason] ?? "ended";
      showAlert("transfer", `The consultation ${why}. The caller is on hold with you.`, {
        ms: 10000,
        info: true,
      });
    }
  }
  renderConsult();
}

ui.consultComplete.addEventListener("click", () => {
  const c = state.consult;
  if (!c) return;
  act("transfer_complete", { call_id: c.call_id }, {
    onError: (msg) => showAlert("transfer", `Transfer failed: ${errorText(msg)}`, { ms: 10000 }),
  });
});

ui.consultCancel.addEventListener("click", () => {
  const c = state.consult;
  if (!c) return;
  act("transfer_cancel", { call_id: c.call_id });
});

// ---- A supervisor on the agent's call ----------------------------------------------------

function renderSupervisor() {
  const sup = state.supervisor;
  const call = state.call;
  const text = sup && call && sup.callId === call.call_id ? supervisorNotice(sup.mode) : "";
  setText(ui.supervisorIndicator, text);
  ui.supervisorIndicator.hidden = text === "";
  ui.supervisorIndicator.dataset.mode = text ? sup.mode : "";
}

/** A supervisor started or stopped talking on this agent's call (listening is never told). */
function onSupervisor(msg) {
  if (typeof msg.call_id !== "string") return;
  const mode = msg.mode === "whisper" || msg.mode === "barge" ? msg.mode : null;
  const before = state.supervisor && state.supervisor.callId === msg.call_id ? state.supervisor.mode : null;
  if (mode) state.supervisor = { callId: msg.call_id, mode };
  else if (before) state.supervisor = null;
  renderSupervisor();
  if (mode === before || !state.call || state.call.call_id !== msg.call_id) return;
  announce(mode ? supervisorNotice(mode) : "The supervisor is no longer speaking on your call");
}

// ---- Wrap-up -----------------------------------------------------------------------------

function wrapUpTouched() {
  return ui.wrapupCode.value.trim() !== "" || ui.wrapupNotes.value.trim() !== "";
}

function hideWrapUp() {
  state.wrapUp = null;
  ui.wrapupForm.hidden = true;
}

function openWrapUp(callId) {
  const id = callId || (state.lastEnded ? state.lastEnded.call_id : null);
  if (!id || state.wrapUpSentFor === id) return;
  if (state.call && state.call.call_id === id) return; // not ended yet
  if (!state.wrapUp || state.wrapUp.call_id !== id) {
    const row = state.log.get(id);
    const described = row ? CallLog.describe(row) : null;
    state.wrapUp = { call_id: id };
    ui.wrapupCode.value = "";
    ui.wrapupNotes.value = "";
    ui.wrapupCount.textContent = "0";
    const parts = [];
    if (described && described.number) parts.push(`Call with ${described.number}`);
    if (described && described.duration !== null) parts.push(formatDuration(described.duration));
    ui.wrapupSummary.textContent = parts.join(" - ");
  }
  const appearing = ui.wrapupForm.hidden;
  ui.wrapupForm.hidden = false;
  renderWrapUpTimer();
  if (appearing && nothingFocused()) ui.wrapupCode.focus();
}

function wrapUpTimeOver() {
  if (ui.wrapupForm.hidden) return;
  if (wrapUpTouched()) ui.wrapupTimer.textContent = "Wrap-up time is over; you can still save this.";
  else hideWrapUp();
}

function renderWrapUpTimer() {
  if (ui.wrapupForm.hidden) return;
  const p = state.presence;
  if (!p || p.state !== "wrap_up") return;
  const left = secondsUntil(p.wrap_up_until);
  const text = left === null ? "" : `${formatDuration(left)} left`;
  if (ui.wrapupTimer.textContent !== text) ui.wrapupTimer.textContent = text;
}

ui.wrapupNotes.addEventListener("input", () => {
  ui.wrapupCount.textContent = String(ui.wrapupNotes.value.length);
});

ui.wrapupCode.addEventListener("input", () => ui.wrapupCode.setCustomValidity(""));

ui.wrapupForm.addEventListener("submit", (event) => {
  event.preventDefault();
  const wrap = state.wrapUp;
  if (!wrap) {
    hideWrapUp();
    return;
  }
  const { code, error } = wrapUpCode(ui.wrapupCode.value);
  if (error) {
    ui.wrapupCode.setCustomValidity(error);
    ui.wrapupCode.reportValidity();
    showAlert("wrapup", error, { ms: 8000 });
    return;
  }
  const notes = ui.wrapupNotes.value.slice(0, NOTES_MAX);
  const ref = act(
    "wrap_up",
    { call_id: wrap.call_id, code, notes },
    {
      onError: () => {
        state.wrapUpSentFor = null;
        state.wrapUp = wrap;
        ui.wrapupForm.hidden = false;
      },
    },
  );
  if (ref === null) return;
  state.wrapUpSentFor = wrap.call_id;
  clearAlert("wrapup");
  hideWrapUp();
});

// ---- This shift's calls ------------------------------------------------------------------

function loadLog(agentId) {
  const key = CALL_LOG_KEY + agentId;
  if (state.logKey === key) return;
  state.logKey = key;
  let rows = [];
  try {
    rows = JSON.parse(sessionStorage.getItem(key) ?? "[]");
  } catch {
    rows = [];
  }
  state.log = new CallLog(rows);
  renderLog();
}

function saveLog() {
  if (!state.logKey) return;
  try {
    sessionStorage.setItem(state.logKey, JSON.stringify(state.log));
  } catch {
    // Storage full: the list still shows, it just won't survive a reload.
  }
}

function renderLog() {
  const live = state.call && state.call.connectedAt ? state.call : null;
  const rows = state.log.describeAll().map((row) =>
    live && row.call_id === live.call_id && !row.ended_at
      ? { ...row, duration: (Date.now() - live.connectedAt) / 1000 }
      : row,
  );
  ui.callList.replaceChildren(
    ...rows.map((row) => {
      const tr = document.createElement("tr");
      tr.dataset.callId = row.call_id;
      tr.dataset.outcome = row.outcome;
      const outcome = humanize(row.outcome) + (row.cause ? ` - ${humanize(row.cause)}` : "");
      tr.append(
        cell(formatClock(row.started_at), "num"),
        cell(row.number || "Unknown", "num"),
        cell(row.direction === "outbound" ? "Out" : "In"),
        cell(row.duration === null ? "-" : formatDuration(row.duration), "num"),
        cell(outcome),
      );
      return tr;
    }),
  );
  ui.callListEmpty.hidden = rows.length > 0;
}

// ---- Server messages ---------------------------------------------------------------------

function onHello(msg) {
  state.hello = msg;
  ui.agentName.textContent = msg.name || "";
  fillReasons(msg.away_reasons);
  if (msg.agent_id) loadLog(msg.agent_id);
  ui.stateSelect.disabled = false;
  clearAlert("connection");
  clearAlert("fatal");
  clearAlert("action");
  onPresence(msg.presence ?? { state: "offline" }, { live: false });
  media.start(Array.isArray(msg.ice_servers) ? msg.ice_servers : []);
  loadDirectory();
  loadNumbers();
}

function onError(msg) {
  if (media.offerRefused(msg)) return; // reported through "negotiation-failed"
  const action = msg.ref ? state.actions.get(msg.ref) : null;
  let handled = false;
  if (action) {
    state.actions.delete(msg.ref);
    // A handler that shows the refusal where it belongs returns true: no second message.
    if (action.onError) handled = action.onError(msg) === true;
  }
  if (!handled) showAlert("action", errorText(msg), { ms: 8000 });
}

function onLeg(msg) {
  if (typeof msg.state !== "string") return;
  setLeg(msg.state);
  media.legReport(msg.state);
}

signaling.addEventListener("message", (event) => {
  const msg = event.detail;
  switch (msg.type) {
    case "hello":
      onHello(msg);
      break;
    case "sdp_answer":
      media.acceptAnswer(msg);
      break;
    case "presence":
      onPresence(msg);
      break;
    case "offered":
      onOffered(msg);
      break;
    case "call":
      onCall(msg);
      break;
    case "dialing":
      onDialing(msg);
      break;
    case "monitor":
      onMonitor(msg);
      break;
    case "supervisor":
      onSupervisor(msg);
      break;
    case "consult":
      onConsult(msg);
      break;
    case "leg":
      onLeg(msg);
      break;
    case "error":
      onError(msg);
      break;
    default:
      break; // pong, and anything newer than this page
  }
});

signaling.addEventListener("down", () => {
  media.pause();
  ui.stateSelect.disabled = true;
  // Answers to these went with the connection; the call's own notices still come.
  state.dial = null;
  if (state.monitor && !state.monitor.mode) {
    state.monitor = null;
    ui.monitorStatus.textContent = NOT_SUPERVISING;
  }
  if (signaling.running) showAlert("connection", CONNECTION_LOST);
  renderStatus();
});

signaling.addEventListener("fatal", (event) => {
  const { code } = event.detail;
  clearAlert("connection");
  if (code === CLOSE_UNAUTHENTICATED) {
    signOutLocally(SESSION_ENDED, { logout: true });
    return;
  }
  media.stop();
  ringer.stop();
  closeOffer();
  if (code === CLOSE_REPLACED) {
    showAlert(
      "fatal",
      "The softphone was opened in another window or tab, so this one has stopped taking calls.",
    );
    ui.reconnectBtn.hidden = false;
  } else if (code === CLOSE_NOT_AN_AGENT) {
    showAlert(
      "fatal",
      "This account cannot take calls: it needs the agent role and a seat. Ask your administrator.",
    );
  }
  renderStatus();
});

// ---- Audio leg events --------------------------------------------------------------------

media.addEventListener("state", (event) => setLeg(event.detail));

media.addEventListener("microphone-error", (event) => {
  showAlert("mic", event.detail.message);
  ui.micRetry.hidden = false;
  watchMicrophonePermission();
});

media.addEventListener("microphone-ok", () => {
  clearAlert("mic");
  ui.micRetry.hidden = true;
});

media.addEventListener("negotiation-failed", (event) => {
  if (!signaling.ready) return; // the connection alert says it all
  showAlert("media", `The audio line could not be set up (${event.detail.message}). Retrying...`, {
    ms: 10000,
  });
});

media.addEventListener("autoplay-blocked", () => {
  ui.audioUnlock.hidden = false;
});

function watchMicrophonePermission() {
  if (state.permissionWatched || !navigator.permissions) return;
  state.permissionWatched = true;
  navigator.permissions
    .query({ name: "microphone" })
    .then((status) => {
      status.addEventListener("change", () => {
        if (status.state === "granted" && signaling.ready) media.retry();
      });
    })
    .catch(() => {
      // Not every browser can watch this permission; the retry button still works.
    });
}

ui.micRetry.addEventListener("click", () => {
  ringer.unlock();
  media.retry();
});

ui.audioUnlock.addEventListener("click", () => {
  ringer.unlock();
  ui.audio.play().then(
    () => {
      ui.audioUnlock.hidden = true;
    },
    () => {},
  );
});

ui.reconnectBtn.addEventListener("click", () => {
  clearAlert("fatal");
  connect();
});

// ---- Sign-in and sign-out ----------------------------------------------------------------

ui.loginForm.addEventListener("submit", async (event) => {
  event.preventDefault();
  ringer.unlock();
  const email = ui.loginEmail.value.trim();
  const password = ui.loginPassword.value;
  if (!email || !password) {
    showAlert("login", "Enter your email address and password.");
    return;
  }
  clearAlert("login");
  clearAlert("session");
  ui.loginSubmit.disabled = true;
  ui.loginSubmit.textContent = "Signing in...";
  try {
    await session.login(email, password);
    ui.loginPassword.value = "";
    showPhone();
    connect();
  } catch (err) {
    showAlert("login", err instanceof AuthError ? err.message : "Sign-in failed. Try again.");
    ui.loginPassword.focus();
  } finally {
    ui.loginSubmit.disabled = false;
    ui.loginSubmit.textContent = "Sign in";
  }
});

ui.logoutBtn.addEventListener("click", () => {
  if (state.call && !window.confirm("You are on a call. Sign out anyway? The call may be cut off.")) {
    return;
  }
  signaling.send("presence", { state: "offline" });
  signOutLocally(null, { logout: true });
});

session.addEventListener("ended", () => signOutLocally(SESSION_ENDED));

window.addEventListener("beforeunload", (event) => {
  if (state.call) {
    event.preventDefault();
    event.returnValue = "";
  }
});

window.addEventListener("online", () => signaling.retryNow());
document.addEventListener("visibilitychange", () => {
  if (document.visibilityState !== "visible") return;
  session.checkExpiry();
  signaling.retryNow();
});

// ---- Clock -------------------------------------------------------------------------------

function tick() {
  tickOffer();
  renderCallTimer();
  renderWrapUpTimer();
  if (state.presence && state.presence.state === "wrap_up") renderStatus();
  if (state.call && state.call.connectedAt) renderLog();
  const now = Date.now();
  const call = state.call;
  // No answer to hold or hang-up within a few seconds: let the agent try again.
  if (call && (call.holdPending || call.hangingUp) && now - call.sentAt > 8000) {
    call.holdPending = false;
    call.hangingUp = false;
    renderCall();
  }
  for (const [ref, action] of state.actions) {
    if (now - action.at > 60_000) state.actions.delete(ref);
  }
  if (state.dial && now - state.dial.at > REQUEST_WAIT_MS) {
    state.dial = null;
    ui.dialError.textContent = "No answer about that call. Check the list of calls, then try again.";
    renderDial();
  }
  const m = state.monitor;
  if (m && (!m.mode || m.stopping) && now - m.sentAt > REQUEST_WAIT_MS) {
    m.stopping = false;
    if (!m.mode) {
      state.monitor = null;
      ui.monitorStatus.textContent = NOT_SUPERVISING;
    }
    ui.monitorError.textContent = "No answer from the server. Try again.";
    renderMonitor();
    renderDial();
  }
}

setInterval(tick, 500);

// ---- Start -------------------------------------------------------------------------------

fillReasons(null);
resetDial();
resetMonitor();
renderLog();
renderCall();
if (session.restore()) {
  showPhone();
  connect();
} else {
  showLogin();
}
