// The softphone's audio thread: the microphone → 20 ms L16 frames at the call's rate, and
// the call's frames → the speakers through a jitter buffer that answers notify and clear
// the way Vonage does.  Loaded with audioWorklet.addModule("worklets.js").

import {Resampler} from "./resample.js";

const LEVEL_SECONDS = 0.1; // how often each side reports its level to the page

function toInt16(value) {
  const scaled = Math.round(value * 32768);
  return scaled > 32767 ? 32767 : scaled < -32768 ? -32768 : scaled;
}

/** Microphone → resampled to the call's rate → whole 20 ms frames, posted as ArrayBuffers
 * (silence while the microphone gives nothing, so frames flow like Vonage's). */
class Capture extends AudioWorkletProcessor {
  constructor(options) {
    super();
    const rate = options.processorOptions.rate;
    this.resampler = new Resampler(sampleRate, rate);
    this.size = rate / 50; // samples in 20 ms
    this.frame = new Int16Array(this.size);
    this.fill = 0;
    this.silence = new Float32Array(128);
    this.running = true;
    this.power = 0;
    this.counted = 0;
    this.every = Math.round(rate * LEVEL_SECONDS);
    this.port.onmessage = (event) => {
      if (event.data === "stop") this.running = false;
    };
  }

  process(inputs) {
    if (!this.running) return false;
    const channels = inputs[0];
    const samples = channels && channels.length ? channels[0] : this.silence;
    const out = this.resampler.push(samples);
    for (let i = 0; i < out.length; i++) {
      const value = toInt16(out[i]);
      this.frame[this.fill++] = value;
      this.power += value * value;
      if (this.fill === this.size) {
        const frame = this.frame.buffer; // transferred: this.frame is left detached
        this.port.postMessage({type: "frame", frame}, [frame]);
        this.frame = new Int16Array(this.size);
        this.fill = 0;
      }
      if (++this.counted === this.every) {
        this.port.postMessage({type: "level", rms: Math.sqrt(this.power / this.counted) / 32768});
        this.power = 0;
        this.counted = 0;
      }
    }
    return true;
  }
}

/** The call's audio → speakers.  Frames queue at the context's rate; playing starts once
 * PREBUFFER seconds are queued (or a mark waits, or audio stopped arriving), and starts
 * over after an underrun.  A notify mark is answered when the audio queued before it has
 * been played; clear drops the queue, answers the marks it held, then says cleared. */
const PREBUFFER = 0.06;
const MAX_QUEUE = 60; // seconds, like Vonage's buffer; past it new audio is dropped

class Player extends AudioWorkletProcessor {
  constructor(options) {
    super();
    this.resampler = new Resampler(options.processorOptions.rate, sampleRate);
    this.queue = []; // Float32Array chunks and {mark: payload}
    this.offset = 0; // samples of queue[0] already played
    this.queued = 0; // samples of audio queued
    this.playing = false;
    this.lastArrival = 0;
    this.dropped = 0;
    this.running = true;
    this.power = 0;
    this.counted = 0;
    this.every = Math.round(sampleRate * LEVEL_SECONDS);
    this.port.onmessage = (event) => this.receive(event.data);
  }

  receive(message) {
    if (message.type === "audio") {
      const frame = new Int16Array(message.frame);
      const floats = new Float32Array(frame.length);
      for (let i = 0; i < frame.length; i++) floats[i] = frame[i] / 32768;
      const chunk = this.resampler.push(floats);
      if (this.queued + chunk.length > MAX_QUEUE * sampleRate) {
        this.dropped += 1;
        return;
      }
      this.queue.push(chunk);
      this.queued += chunk.length;
      this.lastArrival = currentTime;
    } else if (message.type === "mark") {
      this.queue.push({mark: message.payload});
    } else if (message.type === "clear") {
      const marks = this.queue.filter((item) => !(item instanceof Float32Array));
      this.queue = [];
      this.offset = 0;
      this.queued = 0;
      this.playing = false;
      this.port.postMessage({type: "cleared", marks: marks.map((item) => item.mark)});
    } else if (message.type === "stop") {
      this.running = false;
    }
  }

  answerMarks() {
    while (this.queue.length && !(this.queue[0] instanceof Float32Array)) {
      this.port.postMessage({type: "played", payload: this.queue.shift().mark});
    }
  }

  process(inputs, outputs) {
    if (!this.running) return false;
    const out = outputs[0][0];
    this.answerMarks(); // marks with no audio before them
    if (!this.playing) {
      const waiting = this.queue.length > 0 && this.queue.some((item) => !(item instanceof Float32Array));
      const stalled = this.queued > 0 && currentTime - this.lastArrival > 0.1;
      this.playing = this.queued >= PREBUFFER * sampleRate || waiting || stalled;
    }
    let written = 0;
    while (this.playing && written < out.length && this.queue.length) {
      const chunk = this.queue[0];
      const take = Math.min(chunk.length - this.offset, out.length - written);
      out.set(chunk.subarray(this.offset, this.offset + take), written);
      written += take;
      this.offset += take;
      this.queued -= take;
      if (this.offset === chunk.length) {
        this.queue.shift();
        this.offset = 0;
        this.answerMarks();
      }
    }
    if (written < out.length) {
      out.fill(0, written);
      if (this.playing && !this.queued) this.playing = false; // underrun: buffer again
    }
    for (let channel = 1; channel < outputs[0].length; channel++) outputs[0][channel].set(out);
    for (let i = 0; i < out.length; i++) this.power += out[i] * out[i];
    this.counted += out.length;
    if (this.counted >= this.every) {
      this.port.postMessage({
        type: "level", rms: Math.sqrt(this.power / this.counted),
        queued: this.queued / sampleRate, dropped: this.dropped,
      });
      this.power = 0;
      this.counted = 0;
    }
    return true;
  }
}

registerProcessor("voicews-capture", Capture);
registerProcessor("voicews-player", Player);
