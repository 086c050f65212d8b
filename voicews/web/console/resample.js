// A streaming sample-rate converter: windowed-sinc interpolation (Hann window, 8 zero
// crossings each side of the filter's cutoff), polyphase table.  The cutoff sits at 90 %
// of the lower rate's Nyquist frequency, so 48 kHz → 8 kHz does not alias and 8 kHz →
// 48 kHz leaves no images.  Used in the audio thread (worklets.js) both ways.

export class Resampler {
  constructor(inRate, outRate, zeroCrossings = 8, phases = 256) {
    this.step = inRate / outRate; // input samples per output sample
    const cutoff = Math.min(1, outRate / inRate) * 0.9;
    this.half = Math.ceil(zeroCrossings / cutoff); // filter half-width, input samples
    this.phases = phases;
    const size = 2 * this.half * phases + 1;
    this.table = new Float32Array(size);
    for (let i = 0; i < size; i++) {
      const x = i / phases - this.half;
      const window = 0.5 + 0.5 * Math.cos((Math.PI * x) / this.half);
      const sinc = x === 0 ? 1 : Math.sin(Math.PI * cutoff * x) / (Math.PI * cutoff * x);
      this.table[i] = cutoff * sinc * window;
    }
    this.buffer = new Float32Array(this.half); // history: starts silent
    this.time = this.half; // where the next output sample sits in `buffer`
  }

  /** Feed input samples; returns the output samples they complete. */
  push(input) {
    const buffer = new Float32Array(this.buffer.length + input.length);
    buffer.set(this.buffer);
    buffer.set(input, this.buffer.length);
    const {half, phases, table, step} = this;
    const count = Math.max(0, Math.ceil((buffer.length - half - this.time) / step));
    const out = new Float32Array(count);
    let t = this.time;
    let made = 0;
    while (made < count && Math.floor(t) + half < buffer.length) {
      const base = Math.floor(t);
      let acc = 0;
      for (let n = base - half + 1; n <= base + half; n++) {
        acc += buffer[n] * table[Math.round((t - n + half) * phases)];
      }
      out[made++] = acc;
      t += step;
    }
    const keep = Math.max(0, Math.floor(t) - half + 1);
    this.buffer = buffer.slice(keep);
    this.time = t - keep;
    return made === count ? out : out.subarray(0, made);
  }
}
