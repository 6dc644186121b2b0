// The page's elements and small helpers that only touch the page.

const $ = (id) => document.getElementById(id);

/** Every element the softphone updates, by name. */
export const ui = {
  agentName: $("agent-name"),
  statusLine: $("status-line"),
  statusDot: $("status-dot"),
  legState: $("leg-state"),
  logoutBtn: $("logout-btn"),
  alert: $("alert"),
  announcer: $("announcer"),
  micRetry: $("mic-retry"),
  audioUnlock: $("audio-unlock"),
  reconnectBtn: $("reconnect-btn"),
  loginView: $("login-view"),
  loginForm: $("login-form"),
  loginEmail: $("login-email"),
  loginPassword: $("login-password"),
  loginSubmit: $("login-submit"),
  phoneView: $("phone-view"),
  stateSelect: $("state-select"),
  awayReason: $("away-reason"),
  presenceHint: $("presence-hint"),
  dialForm: $("dial-form"),
  dialNumber: $("dial-number"),
  dialCallerId: $("dial-caller-id"),
  dialCallerIdHelp: $("dial-caller-id-help"),
  dialError: $("dial-error"),
  dialSubmit: $("dial-submit"),
  dialHint: $("dial-hint"),
  monitorPanel: $("monitor-panel"),
  monitorForm: $("monitor-form"),
  monitorCallId: $("monitor-call-id"),
  monitorMode: $("monitor-mode"),
  monitorError: $("monitor-error"),
  monitorStart: $("monitor-start"),
  monitorStop: $("monitor-stop"),
  monitorStatus: $("monitor-status"),
  offerBanner: $("offer-banner"),
  offerCountdown: $("offer-countdown"),
  offerProgress: $("offer-progress"),
  offerFrom: $("offer-from"),
  offerContact: $("offer-contact"),
  offerQueue: $("offer-queue"),
  offerWaited: $("offer-waited"),
  offerPath: $("offer-path"),
  offerTo: $("offer-to"),
  offerLookupBox: $("offer-lookup-box"),
  offerLookup: $("offer-lookup"),
  offerDetailsBox: $("offer-details-box"),
  offerDetails: $("offer-details"),
  answerBtn: $("answer-btn"),
  rejectBtn: $("reject-btn"),
  callPanel: $("call-panel"),
  callTitle: $("call-title"),
  callNumber: $("call-number"),
  callState: $("call-state"),
  callContact: $("call-contact"),
  callDirection: $("call-direction"),
  callTimer: $("call-timer"),
  supervisorIndicator: $("supervisor-indicator"),
  consultBar: $("consult-bar"),
  consultStatus: $("consult-status"),
  consultComplete: $("consult-complete"),
  consultCancel: $("consult-cancel"),
  muteBtn: $("mute-btn"),
  holdBtn: $("hold-btn"),
  transferBtn: $("transfer-btn"),
  hangupBtn: $("hangup-btn"),
  keypad: $("keypad"),
  dtmfSent: $("dtmf-sent"),
  wrapupForm: $("wrapup-form"),
  wrapupTimer: $("wrapup-timer"),
  wrapupSummary: $("wrapup-summary"),
  wrapupCode: $("wrapup-code"),
  wrapupNotes: $("wrapup-notes"),
  wrapupCount: $("wrapup-count"),
  wrapupSubmit: $("wrapup-submit"),
  callsHandled: $("calls-handled"),
  callList: $("call-list"),
  callListEmpty: $("call-list-empty"),
  transferDialog: $("transfer-dialog"),
  transferForm: $("transfer-form"),
  transferKind: $("transfer-kind"),
  transferToLabel: $("transfer-to-label"),
  transferTo: $("transfer-to"),
  transferDirectory: $("transfer-directory"),
  transferAttended: $("transfer-attended"),
  transferError: $("transfer-error"),
  transferCancel: $("transfer-cancel"),
  transferSubmit: $("transfer-submit"),
  audio: $("remote-audio"),
};

// ---- Plain messages in #alert ------------------------------------------------------------

const alerts = new Map();

export function showAlert(key, text, { ms = 0, info = false } = {}) {
  const previous = alerts.get(key);
  if (previous) clearTimeout(previous.timer);
  const timer = ms ? setTimeout(() => clearAlert(key), ms) : 0;
  alerts.set(key, { text, info, timer });
  renderAlerts();
}

export function clearAlert(key) {
  const entry = alerts.get(key);
  if (!entry) return;
  clearTimeout(entry.timer);
  alerts.delete(key);
  renderAlerts();
}

function renderAlerts() {
  ui.alert.replaceChildren(
    ...[...alerts.values()].map(({ text, info }) => {
      const p = document.createElement("p");
      p.textContent = text;
      if (info) p.className = "info";
      return p;
    }),
  );
}

/** True when no control has the focus, so moving it disturbs nobody. */
export function nothingFocused() {
  const active = document.activeElement;
  return active === null || active === document.body || active.closest("[hidden]") !== null;
}

export function clearAllAlerts() {
  for (const entry of alerts.values()) clearTimeout(entry.timer);
  alerts.clear();
  renderAlerts();
}

/** Says `text` through the screen reader's live region. */
export function announce(text) {
  ui.announcer.textContent = "";
  // A fresh text node makes screen readers speak it even when it repeats.
  setTimeout(() => {
    ui.announcer.textContent = text;
  }, 50);
}

// ---- Building blocks ---------------------------------------------------------------------

/** Fills a <dl> with [term, value] pairs, as text. */
export function fillFacts(dl, pairs) {
  dl.replaceChildren(
    ...pairs.flatMap(([key, value]) => {
      const dt = document.createElement("dt");
      dt.textContent = key;
      const dd = document.createElement("dd");
      dd.textContent = value;
      return [dt, dd];
    }),
  );
}

export function badge(className, text) {
  const span = document.createElement("span");
  span.className = className;
  span.textContent = text;
  return span;
}

export function cell(text, className = "") {
  const td = document.createElement("td");
  td.textContent = text;
  if (className) td.className = className;
  return td;
}
