// What happened on each call, as the page shows it: one entry per event in the order they
// arrived; a partial transcript is updated in place by the next partial, and its final
// replaces it (at the end: after the speech_stopped that usually comes first).

const MAX_ENTRIES = 500; // per call: the oldest go first
const MAX_CALLS = 50; // timelines kept; ended calls' go first

function compact(data) {
  const text = JSON.stringify(data);
  return text === "{}" ? "" : text.length > 200 ? `${text.slice(0, 199)}…` : text;
}

/** [text, css class] of an event, or null for one the timeline leaves out. */
function describe(record) {
  const d = record.data || {};
  switch (record.kind) {
    case "call_started":
      return [`call started (${record.pipeline})`, "call"];
    case "call_ended":
      return [`call ended: ${d.outcome}`, d.outcome === "error" ? "error" : "call"];
    case "dtmf":
      return [`DTMF ${d.digit}${d.duration ? ` (${d.duration} ms)` : ""}`, "dtmf"];
    case "speech_started":
      return ["speech on", "speech"];
    case "speech_stopped":
      return [`speech off${typeof d.start === "number" && typeof d.end === "number"
        ? ` (${(d.end - d.start).toFixed(2)} s)` : ""}`, "speech"];
    case "transcript":
      return [d.text || "", d.final ? "transcript final" : "transcript partial"];
    case "barge_in":
      return [`barge-in ${compact(d)}`.trim(), "barge"];
    case "played":
      return [`played ${compact(d.payload)}`.trim(), "played"];
    case "cleared":
      return ["cleared (audio dropped)", "played"];
    case "pipeline_switched":
      return [`pipeline ${d.from} → ${d.to}`, "call"];
    default:
      return [`${record.kind} ${compact(d)}`.trim(),
              /error|fail/.test(record.kind) ? "error" : "other"];
  }
}

export class Timelines {
  constructor() {
    this.calls = new Map();
  }

  get(uuid) {
    let timeline = this.calls.get(uuid);
    if (!timeline) {
      timeline = {items: [], partial: null, ended: false};
      this.calls.set(uuid, timeline);
      if (this.calls.size > MAX_CALLS) {
        const old = [...this.calls].find(([, t]) => t.ended) || [...this.calls][0];
        this.calls.delete(old[0]);
      }
    }
    return timeline;
  }

  ended(uuid) {
    const timeline = this.calls.get(uuid);
    return Boolean(timeline && timeline.ended);
  }
}

/** Add `record` to its call's timeline; returns {item, replaced} (or null: nothing shown). */
export function addEvent(timelines, record) {
  const timeline = timelines.get(record.uuid);
  if (record.kind === "call_ended") timeline.ended = true;
  const shown = describe(record);
  if (!shown) return null;
  const [text, cls] = shown;
  const item = {time: record.time, kind: record.kind, source: record.source, text, cls,
                final: record.kind === "transcript" ? Boolean(record.data.final) : null,
                node: null};
  if (record.kind === "transcript") {
    const partial = timeline.partial;
    if (partial && !item.final) { // the engine's better guess: in place
      Object.assign(partial, {time: item.time, text: item.text});
      return {item: partial, replaced: true};
    }
    if (partial) { // the final takes the partial's place, after what came meanwhile
      timeline.partial = null;
      timeline.items.splice(timeline.items.indexOf(partial), 1);
      if (partial.node) partial.node.remove();
    }
    if (!item.text) return null; // an empty final: the partials were noise
    if (!item.final) timeline.partial = item;
  }
  timeline.items.push(item);
  if (timeline.items.length > MAX_ENTRIES) {
    const gone = timeline.items.shift();
    if (gone.node) gone.node.remove();
    if (gone === timeline.partial) timeline.partial = null;
  }
  return {item, replaced: false};
}

function node(item) {
  const li = document.createElement("li");
  const time = document.createElement("span");
  time.className = "time";
  const kind = document.createElement("span");
  kind.className = "kind";
  const text = document.createElement("span");
  text.className = "text";
  li.append(time, kind, text);
  item.node = li;
  fill(item);
  return li;
}

function fill(item) {
  const li = item.node;
  li.className = item.cls;
  li.dataset.kind = item.kind;
  if (item.final !== null) li.dataset.final = String(item.final);
  li.children[0].textContent = `${item.time.toFixed(2)} s`;
  li.children[1].textContent = item.kind === "transcript" ? (item.final ? "said" : "hearing")
    : item.source;
  li.children[2].textContent = item.text;
}

/** Show a timeline in `list`: all of it, or (with `entry`) just the change it made. */
export function renderTimeline(list, timeline, entry = null) {
  const atBottom = list.scrollTop + list.clientHeight >= list.scrollHeight - 20;
  if (entry === null) {
    for (const item of timeline.items) item.node = null;
    list.replaceChildren(...timeline.items.map(node));
  } else if (entry.replaced && entry.item.node) {
    fill(entry.item);
  } else if (!entry.replaced) {
    list.append(node(entry.item));
  }
  if (atBottom || entry === null) list.scrollTop = list.scrollHeight;
}
