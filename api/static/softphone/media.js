// The agent's persistent audio leg: the microphone, one RTCPeerConnection to the media node,
// non-trickle offers over signaling, and recovery when the leg drops.

import { backoffSeconds } from "./signaling.js";

export const ICE_GATHERING_CAP_MS = 5000;
export const DOWN_GRACE_MS = 3000;
const ANSWER_WAIT_MS = 15_000;
const CONNECT_WAIT_MS = 20_000;

export const MIC_DENIED = "Allow microphone access to take calls";

export class MicrophoneError extends Error {
  constructor(kind, message) {
    super(message);
    this.name = "MicrophoneError";
    this.kind = kind;
  }
}

class Superseded extends Error {}

/** What went wrong with getUserMedia, in words an agent can act on. */
export function microphoneProblem(err) {
  const name = err && err.name;
  if (name === "NotAllowedError" || name === "SecurityError" || name === "PermissionDeniedError") {
    return new MicrophoneError("denied", MIC_DENIED);
  }
  if (name === "NotFoundError" || name === "DevicesNotFoundError" || name === "OverconstrainedError") {
    return new MicrophoneError("missing", "No microphone found. Plug in a headset to take calls.");
  }
  if (name === "NotReadableError" || name === "TrackStartError" || name === "AbortError") {
    return new MicrophoneError(
      "busy",
      "The microphone is in use by another program or cannot be opened. Close that program and try again.",
    );
  }
  return new MicrophoneError("other", "The microphone could not be opened. Try again.");
}

/** Resolves when ICE gathering is complete, or after `capMs` with what was gathered so far. */
export function waitForIceGathering(pc, capMs = ICE_GATHERING_CAP_MS) {
  if (pc.iceGatheringState === "complete") return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer);
      pc.removeEventListener("icegatheringstatechange", onState);
      pc.removeEventListener("icecandidate", onCandidate);
      resolve();
    };
    const onState = () => {
      if (pc.iceGatheringState === "complete") done();
    };
    const onCandidate = (event) => {
      if (!event.candidate) done();
    };
    const timer = setTimeout(done, capMs);
    pc.addEventListener("icegatheringstatechange", onState);
    pc.addEventListener("icecandidate", onCandidate);
  });
}

function closePc(pc) {
  if (!pc) return;
  pc.ontrack = null;
  pc.onconnectionstatechange = null;
  try {
    pc.close();
  } catch {
    // Already closed.
  }
}

/**
 * Events:
 * - "state" (detail: connecting / connected / disconnected / failed), this side's view;
 * - "remote-stream" (detail: MediaStream) when the caller's audio source changes;
 * - "microphone-error" (detail: MicrophoneError);
 * - "microphone-ok" once the microphone opened after an error;
 * - "autoplay-blocked" when the browser wants a click before playing audio;
 * - "negotiation-failed" (detail: Error).
 */
export class MediaLeg extends EventTarget {
  #send;
  #canSend;
  #audio;
  #iceServers = [];
  #mic = null;
  #micFailed = false;
  #pc = null;
  // The leg being replaced: it keeps carrying audio until the new one connects.
  #previous = null;
  #remoteOf = new WeakMap();
  #remoteStream = null;
  #pending = null;
  #generation = 0;
  #phase = "idle";
  #failures = 0;
  #retryTimer = 0;
  #graceTimer = 0;
  #connectTimer = 0;
  #muted = false;
  #stopped = true;
  #lastLegReport = null;
  lastSdpOffer = null;
  nodeId = null;

  /**
   * @param {object} options
   * @param {(type: string, fields: object) => string | null} options.send sends a signaling message
   * @param {() => boolean} options.canSend whether signaling is connected and authenticated
   * @param {HTMLAudioElement} options.audio where the caller's audio plays
   */
  constructor({ send, canSend, audio }) {
    super();
    this.#send = send;
    this.#canSend = canSend;
    this.#audio = audio;
  }

  get pc() {
    return this.#pc;
  }

  get remoteStream() {
    return this.#remoteStream;
  }

  /** idle, negotiating, connecting, connected or down. */
  get phase() {
    return this.#phase;
  }

  get muted() {
    return this.#muted;
  }

  /** A signaling connection said hello: set up a fresh leg now. */
  start(iceServers) {
    this.#stopped = false;
    if (Array.isArray(iceServers)) this.#iceServers = iceServers;
    this.#failures = 0;
    this.#renegotiateNow();
  }

  /** Tries again now, e.g. after the agent allowed the microphone. */
  retry() {
    if (this.#stopped) return;
    this.#failures = 0;
    this.#renegotiateNow();
  }

  /** Signaling is gone: an offer in flight will get no answer. The leg itself stays up. */
  pause() {
    clearTimeout(this.#retryTimer);
    this.#retryTimer = 0;
    if (this.#pending) {
      const { reject, timer } = this.#pending;
      this.#pending = null;
      clearTimeout(timer);
      reject(new Error("The connection to the server was lost."));
    }
  }

  /** Signs out: hangs up the leg and releases the microphone. */
  stop() {
    this.#stopped = true;
    this.#generation += 1;
    this.pause();
    clearTimeout(this.#graceTimer);
    clearTimeout(this.#connectTimer);
    closePc(this.#pc);
    closePc(this.#previous);
    this.#pc = null;
    this.#previous = null;
    if (this.#mic) for (const track of this.#mic.getTracks()) track.stop();
    this.#mic = null;
    this.#remoteStream = null;
    this.#audio.srcObject = null;
    this.#setPhase("idle", "disconnected");
  }

  /** Mutes locally: the microphone track sends silence until unmuted. */
  setMuted(muted) {
    this.#muted = Boolean(muted);
    if (this.#mic) for (const track of this.#mic.getAudioTracks()) track.enabled = !this.#muted;
  }

  /** The server's `sdp_answer`; false when no offer was waiting for one. */
  acceptAnswer(msg) {
    if (!this.#pending || typeof msg.sdp !== "string") return false;
    const { resolve, timer } = this.#pending;
    this.#pending = null;
    clearTimeout(timer);
    this.nodeId = msg.node_id ?? null;
    resolve(msg.sdp);
    return true;
  }

  /** An `error` reply; true when it refused the offer in flight. */
  offerRefused(msg) {
    if (!this.#pending || !msg.ref || msg.ref !== this.#pending.ref) return false;
    const { reject, timer } = this.#pending;
    this.#pending = null;
    clearTimeout(timer);
    reject(new Error(msg.message || "The server refused the audio offer."));
    return true;
  }

  /** A `leg` message: the media node's view of the leg. */
  legReport(state) {
    this.#lastLegReport = state;
    if (this.#phase !== "connected") return; // a report about the leg being replaced
    if (state === "failed") {
      this.#recover();
    } else if (state === "disconnected") {
      clearTimeout(this.#graceTimer);
      const pc = this.#pc;
      this.#graceTimer = setTimeout(() => {
        const still = this.#lastLegReport === "disconnected" || this.#lastLegReport === "failed";
        if (pc === this.#pc && this.#phase === "connected" && still) this.#recover();
      }, DOWN_GRACE_MS);
    }
  }

  async #microphone() {
    const live = this.#mic && this.#mic.getAudioTracks().some((t) => t.readyState === "live");
    if (live) return this.#mic;
    if (!globalThis.navigator?.mediaDevices?.getUserMedia) {
      throw new MicrophoneError(
        "unsupported",
        "This browser cannot use the microphone here. Open the softphone over https in a current browser.",
      );
    }
    let stream;
    try {
      stream = await navigator.mediaDevices.getUserMedia({
        audio: { echoCancellation: true, noiseSuppression: true, autoGainControl: true },
      });
    } catch (err) {
      this.#micFailed = true;
      throw microphoneProblem(err);
    }
    this.#mic = stream;
    for (const track of stream.getAudioTracks()) {
      track.enabled = !this.#muted;
      track.addEventListener("ended", () => this.#microphoneEnded(stream));
    }
    if (this.#micFailed) {
      this.#micFailed = false;
      this.#emit("microphone-ok");
    }
    return stream;
  }

  // A headset unplugged or the device went away: open the microphone again and swap the track
  // into the running leg, no new offer needed.
  async #microphoneEnded(stream) {
    if (this.#mic !== stream || this.#stopped) return;
    this.#mic = null;
    let fresh;
    try {
      fresh = await this.#microphone();
    } catch (err) {
      this.#emit("microphone-error", err);
      return;
    }
    const [track] = fresh.getAudioTracks();
    for (const pc of [this.#pc, this.#previous]) {
      if (!pc) continue;
      for (const sender of pc.getSenders()) {
        if (sender.track === null || sender.track.kind === "audio") {
          sender.replaceTrack(track).catch(() => {});
        }
      }
    }
  }

  #renegotiateNow() {
    clearTimeout(this.#retryTimer);
    this.#retryTimer = 0;
    clearTimeout(this.#graceTimer);
    this.#run();
  }

  // The leg went down: renegotiate at once the first time, then with backoff.
  #recover() {
    if (this.#stopped) return;
    if (!this.#canSend()) {
      this.#setPhase("down", "disconnected");
      return; // the next hello starts a new leg
    }
    if (this.#failures === 0) {
      this.#failures = 1;
      this.#renegotiateNow();
    } else {
      this.#scheduleRetry();
    }
  }

  #scheduleRetry() {
    if (this.#stopped || this.#retryTimer) return;
    const seconds = backoffSeconds(this.#failures);
    this.#failures += 1;
    this.#retryTimer = setTimeout(() => {
      this.#retryTimer = 0;
      if (this.#canSend()) this.#run();
    }, seconds * 1000);
  }

  async #run() {
    if (this.#stopped) return;
    try {
      await this.#negotiate();
    } catch (err) {
      if (err instanceof Superseded) return;
      if (err instanceof MicrophoneError) {
        this.#emit("microphone-error", err);
        return;
      }
      this.#emit("negotiation-failed", err);
      if (this.#canSend()) this.#scheduleRetry();
    }
  }

  #check(generation) {
    if (generation !== this.#generation || this.#stopped) throw new Superseded();
  }

  async #negotiate() {
    this.#generation += 1;
    const generation = this.#generation;
    if (this.#pending) {
      const { reject, timer } = this.#pending;
      this.#pending = null;
      clearTimeout(timer);
      reject(new Superseded());
    }
    clearTimeout(this.#connectTimer);
    this.#setPhase("negotiating", "connecting");
    const stream = await this.#microphone();
    this.#check(generation);

    const pc = new RTCPeerConnection({ iceServers: this.#iceServers });
    const current = this.#pc;
    if (current && current.connectionState === "connected") {
      closePc(this.#previous);
      this.#previous = current;
    } else {
      closePc(current);
    }
    this.#pc = pc;
    try {
      const [track] = stream.getAudioTracks();
      pc.addTransceiver(track, { direction: "sendrecv", streams: [stream] });
      pc.ontrack = (event) => this.#onTrack(pc, event);
      pc.onconnectionstatechange = () => this.#onConnectionState(pc);
      await pc.setLocalDescription(await pc.createOffer());
      await waitForIceGathering(pc, ICE_GATHERING_CAP_MS);
      this.#check(generation);
      const offer = pc.localDescription.sdp;
      this.lastSdpOffer = offer;
      const answer = await this.#exchange(offer);
      this.#check(generation);
      await pc.setRemoteDescription({ type: "answer", sdp: answer });
      this.#check(generation);
      this.#setPhase("connecting", "connecting");
      this.#connectTimer = setTimeout(() => {
        if (pc === this.#pc && this.#phase === "connecting") {
          this.#emit("negotiation-failed", new Error("The audio line did not connect."));
          this.#dropFailed(pc);
          this.#recover();
        }
      }, CONNECT_WAIT_MS);
      if (pc.connectionState === "connected") this.#onConnectionState(pc);
    } catch (err) {
      if (!(err instanceof Superseded)) this.#dropFailed(pc);
      throw err;
    }
  }

  // Gives up on a leg that did not come up; falls back to the one it was replacing, if that one
  // still carries audio.
  #dropFailed(pc) {
    if (pc !== this.#pc) return;
    closePc(pc);
    const previous = this.#previous;
    this.#previous = null;
    if (previous && previous.connectionState === "connected") {
      this.#pc = previous;
      this.#setPhase("connected", "connected");
    } else {
      closePc(previous);
      this.#pc = null;
      this.#setPhase("down", "failed");
    }
  }

  #exchange(sdp) {
    return new Promise((resolve, reject) => {
      const ref = this.#send("sdp_offer", { sdp });
      if (ref === null) {
        reject(new Error("Not connected to the server."));
        return;
      }
      const timer = setTimeout(() => {
        if (this.#pending && this.#pending.ref === ref) {
          this.#pending = null;
          reject(new Error("The server did not answer the audio offer."));
        }
      }, ANSWER_WAIT_MS);
      this.#pending = { ref, resolve, reject, timer };
    });
  }

  #onTrack(pc, event) {
    const stream = event.streams[0] ?? new MediaStream([event.track]);
    this.#remoteOf.set(pc, stream);
    // With no working leg to keep playing, the new one's audio can take over at once.
    if (pc === this.#pc && (!this.#previous || pc.connectionState === "connected")) this.#adopt(pc);
  }

  #adopt(pc) {
    const stream = this.#remoteOf.get(pc);
    if (!stream || stream === this.#remoteStream) return;
    this.#remoteStream = stream;
    this.#audio.srcObject = stream;
    const playing = this.#audio.play();
    if (playing && typeof playing.catch === "function") {
      playing.catch((err) => {
        if (err && err.name === "NotAllowedError") this.#emit("autoplay-blocked");
      });
    }
    this.#emit("remote-stream", stream);
  }

  #onConnectionState(pc) {
    if (pc !== this.#pc) return;
    const state = pc.connectionState;
    if (state === "connected") {
      clearTimeout(this.#graceTimer);
      clearTimeout(this.#connectTimer);
      this.#failures = 0;
      this.#adopt(pc);
      closePc(this.#previous);
      this.#previous = null;
      this.#setPhase("connected", "connected");
    } else if (state === "disconnected") {
      if (this.#phase !== "connected") return;
      this.#emit("state", "disconnected");
      clearTimeout(this.#graceTimer);
      this.#graceTimer = setTimeout(() => {
        const down = pc.connectionState === "disconnected" || pc.connectionState === "failed";
        if (pc === this.#pc && down) {
          this.#setPhase("down", "disconnected");
          this.#recover();
        }
      }, DOWN_GRACE_MS);
    } else if (state === "failed") {
      clearTimeout(this.#graceTimer);
      clearTimeout(this.#connectTimer);
      if (this.#phase === "negotiating") return; // the offer exchange reports its own failure
      this.#dropFailed(pc);
      this.#recover();
    }
  }

  #setPhase(phase, shown) {
    this.#phase = phase;
    this.#emit("state", shown);
  }

  #emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }
}
