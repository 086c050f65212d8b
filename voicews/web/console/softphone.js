// The softphone: a call from this browser to a pipeline, over the daemon's real /socket,
// speaking Vonage's side of the protocol (first message, 20 ms L16 frames, DTMF events,
// notify and clear answered once the audio before them has played).

import {api, root} from "./api.js";

const DTMF_MS = 260;

function newUuid() {
  if (crypto.randomUUID) return crypto.randomUUID();
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

export class Softphone {
  /** `setup`: the daemon's /console/api/setup; `on`: {state(text, busy), level(side, rms),
   * call(uuid)} callbacks. */
  constructor(setup, on) {
    this.setup = setup;
    this.on = on;
    this.ws = null;
    this.context = null;
    this.media = null;
    this.uuid = null;
  }

  get busy() {
    return this.ws !== null;
  }

  async call(pipeline, rate) {
    if (this.busy) return;
    if (!window.isSecureContext || !navigator.mediaDevices) {
      throw new Error("the browser gives the microphone to https:// pages and to " +
                      "http://localhost only: open the console that way");
    }
    this.uuid = `console-${newUuid()}`;
    this.on.state("starting the microphone…", true);
    try {
      // Made and resumed while the click that called us still counts as a user gesture
      // (autoplay rules); at the device's own rate, which every browser can connect a
      // microphone to: the worklets resample to the call's rate themselves.
      this.context = new AudioContext({latencyHint: "interactive"});
      const resumed = this.context.resume();
      this.media = await navigator.mediaDevices.getUserMedia({
        audio: {channelCount: 1, echoCancellation: true, noiseSuppression: false,
                autoGainControl: false},
      });
      await this.context.audioWorklet.addModule("worklets.js");
      await resumed;
      const url = new URL("socket", root);
      url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
      if (this.setup.ticket) {
        const {ticket} = await api("console/api/ticket", {method: "POST"});
        url.searchParams.set("ticket", ticket);
      }
      this.connect(url, pipeline, rate);
    } catch (error) {
      this.teardown();
      this.on.state(`not started: ${error.message || error}`, false);
      throw error;
    }
  }

  connect(url, pipeline, rate) {
    const context = this.context;
    const frameBytes = rate / 50 * 2;
    const player = new AudioWorkletNode(context, "voicews-player", {
      numberOfInputs: 0, numberOfOutputs: 1, outputChannelCount: [1],
      processorOptions: {rate},
    });
    player.connect(context.destination);
    const capture = new AudioWorkletNode(context, "voicews-capture", {
      numberOfInputs: 1, numberOfOutputs: 1, outputChannelCount: [1],
      processorOptions: {rate},
    });
    capture.connect(context.destination); // silent: it keeps the node pulled in every browser
    this.nodes = {player, capture, source: context.createMediaStreamSource(this.media)};
    this.nodes.source.connect(capture);
    const ws = this.ws = new WebSocket(url);
    ws.binaryType = "arraybuffer";
    this.on.state(`calling ${pipeline} at ${rate / 1000} kHz…`, true);
    const send = (message) => {
      if (ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify(message));
    };
    let opened = false;
    capture.port.onmessage = ({data}) => {
      if (data.type === "frame") {
        // Frames flow from the first message on, in real time (none saved up before it).
        if (opened && ws.readyState === WebSocket.OPEN) ws.send(data.frame);
      } else if (data.type === "level") {
        this.on.level("input", data.rms);
      }
    };
    ws.onopen = () => {
      send({event: "websocket:connected", "content-type": `audio/l16;rate=${rate}`,
            [this.setup.pipeline_header]: pipeline, uuid: this.uuid});
      opened = true;
      this.on.state(`in a call: ${pipeline}, ${rate / 1000} kHz`, true);
      this.on.call(this.uuid);
    };
    player.port.onmessage = ({data}) => {
      if (data.type === "played") {
        send({event: "websocket:notify", payload: data.payload});
      } else if (data.type === "cleared") {
        for (const payload of data.marks) send({event: "websocket:notify", payload});
        send({event: "websocket:cleared"});
      } else if (data.type === "level") {
        this.on.level("output", data.rms, data.queued);
      }
    };
    ws.onmessage = ({data}) => {
      if (typeof data !== "string") {
        if (data.byteLength === frameBytes) {
          player.port.postMessage({type: "audio", frame: data}, [data]);
        }
        return;
      }
      let command;
      try {
        command = JSON.parse(data);
      } catch (_) {
        return;
      }
      if (command.action === "clear") player.port.postMessage({type: "clear"});
      else if (command.action === "notify") {
        player.port.postMessage({type: "mark", payload: command.payload});
      }
    };
    ws.onclose = (event) => {
      const why = event.reason ? `: ${event.reason}` : "";
      this.teardown();
      this.on.state(opened ? `call ended (close ${event.code}${why})`
        : "the daemon refused the socket (at its call limit, draining, or refusing its " +
          "authorization: its log says which)", false);
    };
  }

  dtmf(digit) {
    if (this.ws && this.ws.readyState === WebSocket.OPEN) {
      this.ws.send(JSON.stringify({event: "websocket:dtmf", digit, duration: DTMF_MS}));
    }
  }

  hangup() {
    if (this.ws && this.ws.readyState <= WebSocket.OPEN) {
      this.ws.close(1000, "hung up in the console");
    }
  }

  teardown() {
    if (this.nodes) {
      this.nodes.capture.port.postMessage("stop");
      this.nodes.player.port.postMessage({type: "stop"});
      for (const node of Object.values(this.nodes)) node.disconnect();
      this.nodes = null;
    }
    if (this.media) for (const track of this.media.getTracks()) track.stop();
    if (this.context) this.context.close();
    this.media = this.context = this.ws = null;
    this.on.level("input", 0);
    this.on.level("output", 0, 0);
  }
}
