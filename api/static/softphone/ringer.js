// The sound of an incoming call, made with Web Audio so it needs no file. Browsers only let a
// page make sound after a click, so `unlock()` runs on the sign-in click and on "Turn on call
// audio".

const PATTERN_MS = 3000;

export class Ringer {
  #context = null;
  #timer = 0;

  /** Creates or resumes the audio context; call from a click handler. */
  unlock() {
    const Context = globalThis.AudioContext ?? globalThis.webkitAudioContext;
    if (!Context) return;
    try {
      this.#context ??= new Context();
      if (this.#context.state === "suspended") this.#context.resume().catch(() => {});
    } catch {
      this.#context = null;
    }
  }

  get ringing() {
    return this.#timer !== 0;
  }

  start() {
    if (this.#timer) return;
    this.#ring();
    this.#timer = setInterval(() => this.#ring(), PATTERN_MS);
  }

  stop() {
    clearInterval(this.#timer);
    this.#timer = 0;
  }

  // Two short double beeps, like a desk phone.
  #ring() {
    const ctx = this.#context;
    if (!ctx || ctx.state !== "running") return;
    const start = ctx.currentTime + 0.05;
    for (const offset of [0, 0.4]) {
      const gain = ctx.createGain();
      gain.gain.setValueAtTime(0, start + offset);
      gain.gain.linearRampToValueAtTime(0.15, start + offset + 0.02);
      gain.gain.setValueAtTime(0.15, start + offset + 0.28);
      gain.gain.linearRampToValueAtTime(0, start + offset + 0.3);
      gain.connect(ctx.destination);
      for (const frequency of [440, 480]) {
        const tone = ctx.createOscillator();
        tone.frequency.value = frequency;
        tone.connect(gain);
        tone.start(start + offset);
        tone.stop(start + offset + 0.32);
      }
    }
  }
}
