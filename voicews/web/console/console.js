// The console page: the token, the live calls table, a call's timeline and actions, and
// the softphone.  Everything from the daemon is written with textContent: event data is
// never parsed as HTML.

import {api, HttpError, setToken, stream, token} from "./api.js";
import {Softphone} from "./softphone.js";
import {addEvent, renderTimeline, Timelines} from "./timeline.js";

const $ = (id) => document.getElementById(id);
const FLOOR = -60; // the meters' bottom, dBFS
const POLL_MS = 5000; // /calls, to catch up after a reconnect
const RETRY_MS = 3000;

const state = {
  setup: null,
  calls: new Map(), // uuid -> call
  timelines: new Timelines(),
  selected: null,
  phone: null,
  streaming: null, // the AbortController of the /events request
  poll: null,
};

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (key === "dataset") Object.assign(node.dataset, value);
    else if (key.startsWith("aria-") || key === "role") node.setAttribute(key, value);
    else node[key] = value;
  }
  node.append(...children);
  return node;
}

// -- meters ------------------------------------------------------------------------------

function meter(label) {
  return el("div", {className: "meter", role: "meter", "aria-label": label,
                    "aria-valuemin": FLOOR, "aria-valuemax": 0, "aria-valuenow": FLOOR},
            el("div"));
}

/** Show `db` (null: no audio) on a meter: quick to rise, falling 30 dB a second at 5 Hz. */
function showLevel(node, db) {
  const target = db === null || db === undefined ? FLOOR : Math.max(FLOOR, Math.min(0, db));
  const shown = Number(node.dataset.shown ?? FLOOR);
  const value = target >= shown ? target : Math.max(target, shown - 6);
  node.dataset.shown = value;
  node.dataset.level = db === null || db === undefined ? "" : db;
  node.setAttribute("aria-valuenow", Math.round(value));
  node.firstChild.style.width = `${((value - FLOOR) / -FLOOR) * 100}%`;
  node.classList.toggle("hot", value > -6);
}

const dbOf = (rms) => (rms > 0 ? 20 * Math.log10(rms) : null);

// -- the calls table ---------------------------------------------------------------------

function duration(call) {
  if (call.started === null) return "";
  const seconds = Math.max(0, Math.floor((Date.now() - call.started) / 1000));
  const m = Math.floor(seconds / 60);
  return `${m}:${String(seconds % 60).padStart(2, "0")}`;
}

function addCall(uuid, fields = {}) {
  let call = state.calls.get(uuid);
  if (call) return call;
  const select = el("button", {type: "button", className: "link mono", textContent: uuid,
                               "aria-label": `Show call ${uuid}`});
  select.addEventListener("click", () => selectCall(uuid));
  const cells = {
    pipeline: el("td"), rate: el("td", {className: "num"}), duration: el("td", {className: "num"}),
    worker: el("td", {className: "mono muted"}),
    in: meter(`Input level of ${uuid}`), out: meter(`Output level of ${uuid}`),
  };
  const row = el("tr", {dataset: {uuid}}, el("td", {}, select), cells.pipeline, cells.rate,
                 cells.duration, cells.worker, el("td", {}, cells.in), el("td", {}, cells.out));
  call = {uuid, pipeline: "", rate: null, worker: "", started: null, row, cells,
          added: Date.now(), detailed: false};
  state.calls.set(uuid, call);
  $("calls").tBodies[0].append(row);
  updateCall(call, fields);
  countCalls();
  return call;
}

function updateCall(call, fields) {
  Object.assign(call, Object.fromEntries(
    Object.entries(fields).filter(([, value]) => value !== undefined && value !== null)));
  call.cells.pipeline.textContent = call.pipeline;
  call.cells.rate.textContent = call.rate ? `${call.rate / 1000} kHz` : "";
  call.cells.worker.textContent = call.worker;
  call.cells.duration.textContent = duration(call);
  const mine = state.phone && state.phone.uuid === call.uuid;
  call.row.classList.toggle("mine", Boolean(mine));
  call.row.classList.toggle("selected", state.selected === call.uuid);
}

function removeCall(uuid) {
  const call = state.calls.get(uuid);
  if (!call) return;
  call.row.remove();
  state.calls.delete(uuid);
  countCalls();
}

function countCalls() {
  $("call-count").textContent = state.calls.size;
  $("no-calls").hidden = state.calls.size > 0;
}

function described(info) {
  return {pipeline: info.pipeline, rate: info.rate, worker: info.worker,
          started: info.started ? Date.parse(info.started) : undefined};
}

async function detail(call) {
  if (call.detailed) return;
  call.detailed = true;
  try {
    updateCall(call, described(await api(`calls/${encodeURIComponent(call.uuid)}`)));
  } catch (error) {
    if (error instanceof HttpError && error.status === 404) removeCall(call.uuid);
    else call.detailed = false;
  }
}

async function refreshCalls() {
  let listed;
  try {
    listed = (await api("calls")).calls;
  } catch (_) {
    return; // the stream's reconnecting says so; the next poll tries again
  }
  const seen = new Set();
  for (const info of listed) {
    if (!info.uuid) continue;
    seen.add(info.uuid);
    const call = addCall(info.uuid);
    call.detailed = true;
    updateCall(call, described(info));
  }
  for (const [uuid, call] of state.calls) {
    if (!seen.has(uuid) && Date.now() - call.added > POLL_MS) removeCall(uuid);
  }
}

// -- events ------------------------------------------------------------------------------

function onRecord(record) {
  const uuid = record.uuid;
  if (!uuid) return;
  if (record.kind === "levels") {
    if (state.timelines.ended(uuid)) return;
    const call = addCall(uuid, {pipeline: record.pipeline});
    showLevel(call.cells.in, record.data.in);
    showLevel(call.cells.out, record.data.out);
    if (call.started === null) call.started = Date.now() - record.time * 1000;
    detail(call);
    return;
  }
  const entry = addEvent(state.timelines, record);
  if (record.kind === "call_ended") {
    removeCall(uuid);
  } else {
    const call = addCall(uuid, {pipeline: record.pipeline});
    if (record.kind === "pipeline_switched") updateCall(call, {pipeline: record.data.to});
    if (call.started === null) call.started = Date.now() - record.time * 1000;
    detail(call);
  }
  if (uuid === state.selected && entry) renderTimeline($("timeline"), state.timelines.get(uuid), entry);
  if (uuid === state.selected) showSelected();
}

async function follow() {
  while (state.streaming) {
    const controller = state.streaming;
    try {
      await stream("events?levels=1", onRecord, controller.signal, () => {
        badge("live", "ok");
        refreshCalls();
      });
      badge("stream ended: reconnecting…", "warn");
    } catch (error) {
      if (controller.signal.aborted) return;
      if (error instanceof HttpError && (error.status === 401 || error.status === 403)) {
        logout(error.message);
        return;
      }
      badge(`reconnecting… (${error.message})`, "warn");
    }
    await new Promise((resolve) => setTimeout(resolve, RETRY_MS));
  }
}

function badge(text, kind) {
  const node = $("stream-state");
  node.textContent = text;
  node.dataset.kind = kind;
}

// -- the selected call -------------------------------------------------------------------

function selectCall(uuid) {
  state.selected = uuid;
  for (const call of state.calls.values()) updateCall(call, {});
  renderTimeline($("timeline"), state.timelines.get(uuid));
  showSelected();
}

function showSelected() {
  const uuid = state.selected;
  const live = uuid !== null && state.calls.has(uuid);
  const ended = uuid !== null && state.timelines.ended(uuid);
  $("call-uuid").textContent = uuid === null ? "none selected" : `${uuid}${ended ? " (ended)" : ""}`;
  $("actions").disabled = !live;
}

async function act(action, body = {}) {
  const uuid = state.selected;
  if (!uuid) return;
  const status = $("action-status");
  status.textContent = `${action}…`;
  status.className = "muted";
  try {
    const answer = await api(`calls/${encodeURIComponent(uuid)}/${action}`, {method: "POST", body});
    status.textContent = `${action}: done${answer.seconds ? ` (${answer.seconds} s)` : ""}`;
  } catch (error) {
    status.textContent = `${action}: ${error.message}`;
    status.className = "error";
  }
}

// -- the softphone -----------------------------------------------------------------------

function setUpPhone(setup) {
  const phone = $("phone");
  state.phone = new Softphone(setup, {
    state(text, busy) {
      $("phone-state").textContent = text;
      phone.dataset.state = busy ? "busy" : "idle";
      $("phone-call").disabled = busy;
      $("phone-hangup").disabled = !busy;
      $("phone-pipeline").disabled = $("phone-rate").disabled = busy;
    },
    level(side, rms) {
      phone.dataset[side === "input" ? "inputRms" : "outputRms"] = rms.toFixed(5);
      showLevel($(side === "input" ? "phone-in" : "phone-out"), dbOf(rms));
    },
    call(uuid) {
      addCall(uuid, {pipeline: $("phone-pipeline").value});
      selectCall(uuid);
    },
  });
  $("phone-call").onclick = () => {
    state.phone.call($("phone-pipeline").value, Number($("phone-rate").value)).catch(() => {});
  };
  $("phone-hangup").onclick = () => state.phone.hangup();
  const keypad = $("keypad");
  keypad.replaceChildren();
  for (const digit of "123456789*0#") {
    const key = el("button", {type: "button", textContent: digit, "aria-label": `Key ${digit}`});
    key.addEventListener("click", () => state.phone.dtmf(digit));
    keypad.append(key);
  }
}

function options(select, values, chosen, empty = "") {
  select.replaceChildren(...values.map(([value, text]) =>
    el("option", {value, textContent: text, selected: value === chosen})));
  if (!values.length && empty) select.append(el("option", {value: "", textContent: empty}));
}

// -- token and start ---------------------------------------------------------------------

async function connect() {
  let setup;
  try {
    setup = await api("console/api/setup");
  } catch (error) {
    logout(error instanceof HttpError ? error.message : `cannot reach the daemon: ${error.message}`);
    return;
  }
  state.setup = setup;
  $("login").hidden = true;
  $("app").hidden = false;
  $("forget").hidden = false;
  $("daemon").textContent = `voicews ${setup.version} · ${setup.worker}`;
  const pipelines = setup.pipelines.map((name) => [name, name]);
  options($("phone-pipeline"), pipelines, setup.default_pipeline);
  options($("switch-pipeline"), pipelines, setup.default_pipeline);
  options($("phone-rate"), setup.rates.map((rate) => [String(rate), `${rate / 1000} kHz`]),
          String(setup.default_rate));
  options($("prompt"), setup.prompts.map((name) => [name, name]), null,
          "no prompts (control.prompts)");
  $("play").disabled = !setup.prompts.length;
  const canSay = setup.actions.includes("say");
  $("say").disabled = $("say-text").disabled = !canSay;
  $("say").title = canSay ? "" : "this daemon has no /say action";
  setUpPhone(setup);
  showSelected();
  state.streaming = new AbortController();
  follow();
  state.poll = setInterval(() => {
    for (const call of state.calls.values()) call.cells.duration.textContent = duration(call);
  }, 1000);
  state.refresh = setInterval(refreshCalls, POLL_MS);
}

function logout(reason = "") {
  if (state.streaming) state.streaming.abort();
  state.streaming = null;
  clearInterval(state.poll);
  clearInterval(state.refresh);
  if (state.phone) state.phone.hangup();
  for (const uuid of [...state.calls.keys()]) removeCall(uuid);
  $("app").hidden = true;
  $("login").hidden = false;
  $("forget").hidden = true;
  $("login-error").textContent = reason;
  badge("not connected", "");
  if (reason) setToken("");
  $("token").focus();
}

function start() {
  $("token-form").addEventListener("submit", (event) => {
    event.preventDefault();
    setToken($("token").value.trim());
    $("token").value = "";
    $("login-error").textContent = "";
    connect();
  });
  $("forget").addEventListener("click", () => {
    setToken("");
    logout();
  });
  $("hangup").addEventListener("click", () => act("hangup"));
  $("clear").addEventListener("click", () => act("clear"));
  $("switch").addEventListener("click", () => act("pipeline", {name: $("switch-pipeline").value}));
  $("play").addEventListener("click", () => act("play", {path: $("prompt").value}));
  $("say-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const text = $("say-text").value.trim();
    if (text) act("say", {text});
  });
  if (token()) connect();
  else logout();
}

start();
