// The dice table: pick a prompt, set the dice, roll N variations, keep one and roll on from it.
// Talks only to this server's /api (see /docs); every error the API answers is shown as its message.
"use strict";

const $ = (id) => document.getElementById(id);
const MODES = ["major", "minor", "dorian", "mixolydian", "lydian", "phrygian", "locrian", "harmonic_minor",
  "melodic_minor", "major_pentatonic", "minor_pentatonic", "blues"];
const TONICS = ["C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B"];
const FIGURES = {  // the style/memorisation figures of theremin.metrics.style, in a musician's words
  "style/pitch_class_overlap": "pitch classes like the corpus", "style/interval_oa": "intervals like the corpus",
  "memo/longest_copied_notes": "longest run copied from the corpus (notes)",
};
// the parts "add a part" offers (theremin.roll.parts: drums or a General MIDI family) and each family's program
const ADD_PARTS = ["drums", "bass", "guitar", "piano", "strings", "synth lead", "synth pad", "organ", "brass", "reed",
  "pipe", "ensemble", "chromatic percussion", "ethnic", "percussive"];
const FAMILY_PROGRAM = { piano: 0, "chromatic percussion": 11, organ: 16, guitar: 25, bass: 33, strings: 48,
  ensemble: 48, brass: 61, reed: 65, pipe: 73, "synth lead": 80, "synth pad": 88, "synth effects": 96, ethnic: 104,
  percussive: 112, "sound effects": 120 };
const DRUM_WORDS = ["drums", "drum", "percussion kit"];
const NONE_WORDS = ["none", "null", "off"]; // a field of only such a word means "not set" to the server
const MAX_PART_CHARS = 40; // the server's limits.max_key_chars: the longest add_part
// state.midi: the prompt as parsed here; state.roles: per track "keep", "mute" or "reroll"; state.addPart: a
// family (or drums) to add, "" for none
const state = { prompt: null, presets: {}, history: [], busy: false, midi: null, roles: [], addPart: "", loading: 0,
  readBars: null, layout: null, promptBars: 0 };

function showError(message) {
  const box = $("error");
  box.textContent = message;
  box.hidden = !message;
}

async function api(url, options) {
  let response;
  try {
    response = await fetch(url, options);
  } catch (e) {
    throw new Error(`the server cannot be reached (${e.message})`);
  }
  if (!response.ok) {
    let detail = `${response.status} ${response.statusText}`;
    try {
      const body = await response.json();
      if (typeof body.detail === "string") detail = body.detail;
      else if (body.detail) detail = JSON.stringify(body.detail);
    } catch (_) { /* not JSON: keep the status line */ }
    const retry = response.headers.get("Retry-After");
    throw new Error(retry ? `${detail} (retry in ${retry} s)` : detail);
  }
  return response;
}

// ---- the prompt -------------------------------------------------------------------------------------------
// plan: the track choices to restore (a history entry's), else every track is kept
async function setPrompt(blob, name, plan = null) {
  const loading = ++state.loading; // a prompt picked while another is read wins over it
  state.prompt = blob ? { blob, name } : null;
  state.midi = null;
  state.readBars = null;
  state.roles = [];
  state.addPart = "";
  $("others-join").checked = false;
  showFileName(blob, name);
  if (!blob) {
    $("prompt-info").textContent = "No prompt: the model starts a piece of its own.";
    showParts();
    return;
  }
  try {
    const bytes = await blob.arrayBuffer();
    if (loading !== state.loading) return;
    const midi = parseMidi(bytes);
    const beatsPerBar = (midi.timeSig[0] * 4) / midi.timeSig[1];
    let last = 0;
    for (const n of midi.notes) last = Math.max(last, n.end);
    const bars = Math.ceil(last / beatsPerBar);
    state.promptBars = bars;
    const odd = midi.oddMeter ? ` (its time signature ${midi.oddMeter} is not a meter: drawn in 4/4)` : "";
    const tracks = midi.parts.length > 1 ? `, ${midi.parts.length} tracks` : "";
    $("prompt-info").textContent = `${name}: ${midi.notes.length} notes, ${bars} bars${tracks}${odd}`;
    state.midi = midi;
    state.roles = midi.parts.map(() => "keep");
    if (plan && plan.roles && plan.roles.length === midi.parts.length) {
      state.roles = [...plan.roles];
      state.addPart = plan.addPart || "";
      $("others-join").checked = !!plan.othersJoin;
    }
  } catch (e) {
    if (loading !== state.loading) return;
    $("prompt-info").textContent = `${name}: cannot draw it (${e.message}); the server will say more`;
  }
  showParts();
}

// the file input shows the prompt's file: a dropped file too (not "No file chosen"); a built-in prompt or a kept
// variation is no file of the user's, the input is emptied
function showFileName(blob, name) {
  const input = $("prompt-file");
  if (blob instanceof File) {
    if (!input.files.length || input.files[0] !== blob) {
      try {
        const files = new DataTransfer();
        files.items.add(blob);
        input.files = files.files;
      } catch (_) { /* an old browser: the label below still names it */ }
    }
    $("prompt-file-name").textContent = `prompt file: ${name}`;
  } else {
    input.value = "";
    $("prompt-file-name").textContent = "";
  }
}

async function pickDemo(name) {
  if (!name) return;
  const response = await api(`/api/prompts/${encodeURIComponent(name)}.mid`);
  await setPrompt(await response.blob(), name);
}

// ---- the prompt's tracks: keep, mute or re-roll each; add a part ------------------------------------------
const norm = (s) => String(s).toLowerCase().replaceAll("_", " ").replaceAll("-", " ").split(/\s+/).filter(Boolean).join(" ");
const same = (a, b) => a.length === b.length && a.every((x, i) => x === b[i]);

// the tracks one spec names, as the server resolves it (theremin.roll.parts.select_parts): a track name, drums,
// a family, a program number
function selects(spec, parts) {
  const s = norm(spec);
  const pick = (f) => parts.flatMap((p, i) => (f(p) ? [i] : []));
  let hit = pick((p) => p.name && norm(p.name) === s);
  if (!hit.length && DRUM_WORDS.includes(s)) hit = pick((p) => p.drum);
  if (!hit.length && s in FAMILY_PROGRAM) hit = pick((p) => p.family === s);
  if (!hit.length && /^\d+$/.test(s)) hit = pick((p) => !p.drum && p.program === Number(s));
  return hit;
}

// a track name the form fields can carry: no comma (specs are comma-separated), not a word the server reads as
// "not set", short enough
function usableName(name) {
  const s = (name || "").trim();
  return !!norm(s) && !s.includes(",") && s.length <= MAX_PART_CHARS && !NONE_WORDS.includes(s.toLowerCase()) &&
    s.toLowerCase() !== "all";
}

// the spec that names track i: its name; a track with none (or one shared) by its family (drums for drums),
// else its program: the first that names it alone
function specFor(i, parts) {
  const part = parts[i];
  const candidates = [];
  if (usableName(part.name)) candidates.push(part.name.trim());
  candidates.push(part.drum ? "drums" : part.family);
  if (!part.drum) candidates.push(String(part.program));
  return candidates.find((c) => same(selects(c, parts), [i])) || candidates[0];
}

// how track i is re-rolled: add_part=<its name> (the server drops its notes and rolls it anew over the other
// parts); a track with no usable name is muted and a part of its sound added (the same roll), when a spec names
// it alone and other notes stay; null: it cannot be re-rolled
function rerollOf(i, parts, roles) {
  const part = parts[i];
  const left = parts.map((_, k) => k).filter((k) => k !== i && roles[k] !== "mute");
  if (usableName(part.name)) {
    const name = part.name.trim().toLowerCase();
    const first = parts.findIndex((p, k) => roles[k] !== "mute" && p.name && p.name.trim().toLowerCase() === name);
    if (first === i) return { addPart: part.name.trim(), mute: [] };
  }
  const spec = specFor(i, parts);
  if (!same(selects(spec, parts), [i]) || !left.some((k) => parts[k].notes > 0)) return null;
  const roles2 = roles.map((r, k) => (k === i ? "mute" : r));
  const words = part.drum ? DRUM_WORDS : [String(part.program), GM_PROGRAMS[part.program]];
  return { addPart: newPartWord(words, parts, roles2), mute: [spec] };
}

// add_part for a new part: the first of `words` (all name one sound) that no track left in the prompt is called
// (the server would re-roll a track of that name instead)
function newPartWord(words, parts, roles) {
  const named = (w) => parts.some((p, k) => roles[k] !== "mute" && p.name && p.name.trim().toLowerCase() === w.toLowerCase());
  return words.find((w) => !named(w)) || words[0];
}

function addSpec(family, parts, roles) {
  return newPartWord(family === "drums" ? DRUM_WORDS : [family, String(FAMILY_PROGRAM[family])], parts, roles);
}

// what the roll will do with the prompt's tracks: the form fields, and the words that say it
function partPlan() {
  const midi = state.midi;
  const plan = { mute: [], addPart: "", instruments: "", text: "", short: "" };
  if (!midi || !midi.parts.length) return plan;
  const parts = midi.parts, roles = state.roles;
  const label = (k) => parts[k].label;
  const muted = parts.map((_, k) => k).filter((k) => roles[k] === "mute");
  const kept = parts.map((_, k) => k).filter((k) => roles[k] === "keep");
  const rerolled = roles.indexOf("reroll");
  plan.mute = muted.map((k) => specFor(k, parts));
  const list = (ks) => ks.map(label).join(", ");
  const beatsPerBar = (midi.timeSig[0] * 4) / midi.timeSig[1];
  let lastOnset = -1;
  for (const n of midi.notes) if (roles[n.part] !== "mute") lastOnset = Math.max(lastOnset, n.start);
  const bars = lastOnset < 0 ? 0 : Math.floor(lastOnset / beatsPerBar + 1e-9) + 1;
  const span = `over the prompt's ${bars} bar${bars === 1 ? "" : "s"}`;
  const words = [];
  const shorts = [];
  if (muted.length) {
    words.push(`leaves out ${list(muted)}`);
    shorts.push(`muted ${list(muted)}`);
  }
  if (rerolled >= 0) {
    const how = rerollOf(rerolled, parts, roles);
    if (how) {
      plan.addPart = how.addPart;
      plan.mute.push(...how.mute);
      const over = kept.length ? ` over ${list(kept)}` : "";
      const its = parts[rerolled].notes === 1 ? "its note is" : `its ${parts[rerolled].notes} notes are`;
      words.push(`re-rolls ${label(rerolled)} ${span}: ${its} dropped and rolled anew${over} (the length does ` +
        "not apply)");
      shorts.push(`re-rolled ${label(rerolled)}`);
    }
  } else if (state.addPart) {
    plan.addPart = addSpec(state.addPart, parts, roles);
    const over = kept.length ? ` over ${list(kept)}` : "";
    words.push(`adds a ${state.addPart} part ${span}${over} (the length does not apply)`);
    shorts.push(`added ${state.addPart}`);
  } else if (!kept.length) {
    words.push("starts from silence: no track is left, as if there were no prompt");
  } else {
    const others = $("others-join").checked;
    if (others) plan.instruments = "all"; // the default is the prompt's (kept) parts: nothing to send for those
    words.push(`plays on with ${list(kept)}` + (others ? ", and other instruments may join" : ""));
    if (others) shorts.push("others may join");
  }
  plan.mute = [...new Set(plan.mute)];
  plan.text = `This roll ${words.join("; ")}.`;
  plan.short = shorts.join(", ");
  return plan;
}

// the prompt's roll with its tracks' roles, the chosen bars (the two fields) and the bars the last roll read
function drawPrompt() {
  const from = parseInt($("bars-from").value, 10), to = parseInt($("bars-to").value, 10);
  const chosen = Number.isFinite(from) || Number.isFinite(to)
    ? [Number.isFinite(from) ? from : 1, Number.isFinite(to) ? to : Math.max(1, state.promptBars || 1)] : null;
  state.layout = drawPianoRoll($("prompt-roll"), state.midi, state.roles, { chosen, read: state.readBars });
}

// a drag across the prompt's roll picks its bars A..B (a click: that bar alone)
function wireBarDrag() {
  const canvas = $("prompt-roll");
  const barOf = (e) => {
    const r = canvas.getBoundingClientRect();
    return state.layout && state.layout.barAt(((e.clientX - r.left) / r.width) * canvas.width);
  };
  let start = null;
  const pick = (e) => {
    const bar = barOf(e);
    if (start == null || !bar) return;
    $("bars-from").value = Math.min(start, bar);
    $("bars-to").value = Math.max(start, bar);
    drawPrompt();
  };
  canvas.addEventListener("pointerdown", (e) => {
    start = barOf(e);
    if (!start) return;
    canvas.setPointerCapture(e.pointerId);
    pick(e);
  });
  canvas.addEventListener("pointermove", pick);
  canvas.addEventListener("pointerup", (e) => { pick(e); start = null; });
}

function showParts() {
  const midi = state.midi;
  const box = $("parts");
  const rerolled = state.roles.indexOf("reroll");
  if (midi && rerolled >= 0 && !rerollOf(rerolled, midi.parts, state.roles)) state.roles[rerolled] = "keep"; // muted all else
  drawPrompt();
  if (!midi || !midi.parts.length) {
    box.hidden = true;
    $("part-list").replaceChildren();
    return;
  }
  box.hidden = false;
  $("part-list").replaceChildren(...midi.parts.map((part, i) => partRow(part, i)));
  $("add-part").value = state.addPart;
  showPlan();
}

function partRow(part, i) {
  const row = document.createElement("div");
  row.className = "part";
  row.dataset.index = i;
  row.dataset.name = part.label;
  const swatch = document.createElement("span");
  swatch.className = part.drum ? "swatch drum" : "swatch";
  swatch.style.background = partColor(i);
  const name = document.createElement("span");
  name.className = "part-name";
  name.textContent = part.drum && part.label === "Drums" ? "Drums" : `${part.label} (${part.family})`;
  name.title = part.drum ? "drums (channel 10)" : `program ${part.program}: ${GM_PROGRAMS[part.program]}`;
  const count = document.createElement("span");
  count.className = "part-notes muted";
  count.textContent = `${part.notes} note${part.notes === 1 ? "" : "s"}`;
  const choices = document.createElement("span");
  choices.className = "choices";
  choices.setAttribute("role", "radiogroup");
  choices.setAttribute("aria-label", `${part.label}: keep, mute or re-roll`);
  const reroll = rerollOf(i, state.midi.parts, state.roles.map((r, k) => (k === i ? "keep" : r)));
  for (const [value, text, title] of [
    ["keep", "keep", "it stays in the prompt and may play on"],
    ["mute", "mute", "left out before rolling: the model never hears it"],
    ["reroll", "re-roll", "its notes are dropped and rolled anew over the other parts"],
  ]) {
    const label = document.createElement("label");
    const input = document.createElement("input");
    input.type = "radio";
    input.name = `part-${i}`;
    input.value = value;
    input.checked = state.roles[i] === value;
    if (value === "reroll" && !reroll) {
      input.disabled = true;
      label.title = "a track with no name of its own (or one the server cannot tell apart) cannot be re-rolled; " +
        "mute it and add a part instead";
    } else {
      label.title = title;
    }
    input.addEventListener("change", () => setRole(i, value));
    label.append(input, ` ${text}`);
    choices.append(label);
  }
  row.append(swatch, name, count, choices);
  return row;
}

function setRole(i, role) {
  if (role === "reroll") { // one track at a time: another re-roll goes back to keep, and no part is added
    state.roles = state.roles.map((r) => (r === "reroll" ? "keep" : r));
    state.addPart = "";
  }
  state.roles[i] = role;
  showParts();
}

function showPlan() {
  const plan = partPlan();
  $("parts-plan").textContent = plan.text;
  $("others-join").disabled = !!plan.addPart || !state.roles.includes("keep");
}

// ---- the dice ---------------------------------------------------------------------------------------------
function applyPreset(name) {
  const p = state.presets[name] || {};
  if (p.n != null) $("n").value = p.n;
  if (p.length != null) $("length").value = p.length;
  if (p.unit) $("unit").value = p.unit;
  if (p.temperature != null) { $("temperature").value = p.temperature; showTemperature(); }
}

function showTemperature() {
  $("temperature-out").textContent = Number($("temperature").value).toFixed(2);
}

function fields(keepBars) {
  const f = new FormData();
  const put = (name, value) => { if (value !== "" && value != null) f.append(name, value); };
  put("preset", $("preset").value);
  put("n", $("n").value);
  put("length", $("length").value);
  put("unit", $("unit").value);
  put("temperature", $("temperature").value);
  put("seed", $("seed").value);
  put("max_polyphony", $("polyphony").value);
  if ($("key-tonic").value) put("key", `${$("key-tonic").value} ${$("key-mode").value}`);
  const lo = $("pitch-lo").value, hi = $("pitch-hi").value; // one end left empty: MIDI's own end there
  if (lo !== "" || hi !== "") put("pitch_range", `${lo === "" ? 0 : lo},${hi === "" ? 127 : hi}`);
  if (keepBars != null) put("keep_bars", keepBars);
  else if ($("bars-from").value !== "" || $("bars-to").value !== "") {
    // one field filled: from bar 1, or up to the last bar the prompt has
    const last = Math.max(1, state.promptBars || 1);
    put("prompt_bars", `${$("bars-from").value || 1}-${$("bars-to").value || last}`);
  }
  if (state.prompt) {
    f.append("prompt", state.prompt.blob, state.prompt.name);
    const plan = partPlan();
    if (plan.mute.length) put("mute", plan.mute.join(","));
    put("add_part", plan.addPart);
    put("instruments", plan.instruments);
  }
  return f;
}

async function roll(keepBars = null) {
  if (state.busy) return;
  state.busy = true;
  $("roll").disabled = $("reroll").disabled = true;
  $("status").textContent = "rolling…";
  showError("");
  try {
    const plan = state.prompt ? partPlan() : null;
    const tracks = plan && { roles: [...state.roles], addPart: state.addPart, othersJoin: $("others-join").checked,
      short: plan.short };
    const response = await api("/api/rolls", { method: "POST", body: fields(keepBars) });
    const body = await response.json();
    const entry = { body, prompt: state.prompt, keepBars, plan: tracks };
    state.history.push(entry);
    addHistory(entry, state.history.length);
    showRoll(entry);
    $("status").textContent = `rolled in ${body.seconds.toFixed(2)} s (seed ${body.seed})`;
    const p = body.prompt || {};
    state.readBars = p.bars && state.prompt === entry.prompt ? p.bars : null;
    drawPrompt();
    $("prompt-bars-used").textContent = p.bars
      ? `the model read bars ${p.bars[0]}-${p.bars[1]} (${p.notes} notes)` +
        (p.trimmed ? ": the last bars that fit its context" : "")
      : "";
  } catch (e) {
    showError(e.message);
    markStale(true);
    $("status").textContent = "";
  } finally {
    state.busy = false;
    $("roll").disabled = $("reroll").disabled = false;
  }
}

// ---- results ----------------------------------------------------------------------------------------------
// after a failed roll the cards on show answer an earlier one: said, and greyed, not left as if they were the answer
function markStale(stale) {
  const shown = $("cards").children.length > 0;
  $("results").classList.toggle("stale", stale && shown);
  $("stale-note").hidden = !(stale && shown);
}

function showRoll(entry) {
  const { body } = entry;
  markStale(false);
  $("results-title").hidden = false;
  $("results-title").textContent = `Variations — seed ${body.seed}` + (entry.keepBars != null ? `, kept ${entry.keepBars} bar${entry.keepBars === 1 ? "" : "s"} of the prompt and re-rolled the rest` : "") +
    (entry.plan && entry.plan.short ? `, ${entry.plan.short}` : "");
  const cards = $("cards");
  cards.replaceChildren(...body.variations.map((v) => card(body, v)));
  document.querySelectorAll("#history li").forEach((li) => li.classList.toggle("current", li.dataset.id === body.id));
}

function card(body, v) {
  const el = document.createElement("article");
  el.className = "card";
  el.dataset.index = v.index;
  const figures = Object.entries(v.figures || {})
    .map(([k, x]) => `<span title="${k}">${FIGURES[k] || k}: ${x}</span>`).join(" ");
  el.innerHTML = `
    <h3>Variation ${v.index} <small class="muted">${v.notes} new notes</small></h3>
    <img alt="piano roll of variation ${v.index}" src="${v.png}">
    <audio controls preload="none" src="${v.wav}"></audio>
    <div class="row">
      <a class="button secondary download" href="${v.midi}" download="theremin-${body.id.slice(0, 8)}-${v.index}.mid"
        title="the prompt and the new notes">MIDI</a>
      ${v.midi_new ? `<a class="button secondary download-new" href="${v.midi_new}"
        download="theremin-${body.id.slice(0, 8)}-${v.index}-new.mid"
        title="only the new notes from the roll point on (${v.clip_notes ?? v.notes}), moved to bar 1: a clip to drag into a DAW">new notes only (clip)</a>` : ""}
      <button type="button" class="keep primary">keep: roll on from here</button>
    </div>
    <p class="figures muted">${figures}</p>`;
  el.querySelector(".keep").addEventListener("click", () => keep(body, v));
  return el;
}

async function keep(body, v) {
  showError("");
  try {
    const response = await api(v.midi);
    await setPrompt(await response.blob(), `variation ${v.index} of roll ${body.id.slice(0, 8)}`);
    $("demo-prompt").value = "";
    $("status").textContent = `kept variation ${v.index}: it is the prompt now`;
  } catch (e) {
    showError(e.message);
  }
}

function addHistory(entry, number) {
  const { body } = entry;
  const li = document.createElement("li");
  li.dataset.id = body.id;
  const button = document.createElement("button");
  button.type = "button";
  button.className = "link";
  const s = body.settings;
  const kept = entry.keepBars != null ? ` · K=${entry.keepBars}: kept ${entry.keepBars} bar${entry.keepBars === 1 ? "" : "s"}, re-rolled the rest` : "";
  const tracks = entry.plan && entry.plan.short ? ` · ${entry.plan.short}` : "";
  button.textContent = `roll ${number}: ${body.variations.length} × ${s.length} ${s.unit}, ${s.temperature.toFixed(2)} temp, seed ${body.seed}` +
    (entry.prompt ? ` — from ${entry.prompt.name}` : "") + kept + tracks;
  button.addEventListener("click", async () => {
    await setPrompt(entry.prompt ? entry.prompt.blob : null, entry.prompt ? entry.prompt.name : "", entry.plan);
    showRoll(entry);
  });
  li.append(button);
  $("history").prepend(li);
}

// ---- wiring -----------------------------------------------------------------------------------------------
async function init() {
  for (const t of TONICS) $("key-tonic").add(new Option(t, t));
  for (const m of MODES) $("key-mode").add(new Option(m.replaceAll("_", " "), m));
  $("temperature").addEventListener("input", showTemperature);
  $("prompt-file").addEventListener("change", (e) => {
    const file = e.target.files[0];
    if (file) { $("demo-prompt").value = ""; setPrompt(file, file.name); }
  });
  const drop = $("drop");
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    const file = e.dataTransfer.files[0];
    if (file) { $("demo-prompt").value = ""; setPrompt(file, file.name); }
  });
  for (const family of ADD_PARTS) $("add-part").add(new Option(family, family));
  $("add-part").addEventListener("change", (e) => {
    state.addPart = e.target.value;
    if (state.addPart) state.roles = state.roles.map((r) => (r === "reroll" ? "keep" : r)); // one add_part a roll
    showParts();
  });
  $("others-join").addEventListener("change", showPlan);
  for (const id of ["bars-from", "bars-to"]) $(id).addEventListener("input", drawPrompt);
  wireBarDrag();
  $("demo-prompt").addEventListener("change", (e) => pickDemo(e.target.value).catch((err) => showError(err.message)));
  $("clear-prompt").addEventListener("click", () => { $("demo-prompt").value = ""; setPrompt(null); });
  $("preset").addEventListener("change", (e) => applyPreset(e.target.value));
  $("roll").addEventListener("click", () => roll());
  $("reroll").addEventListener("click", () => roll(Number($("keep-bars").value)));
  document.addEventListener("keydown", (e) => {
    const typing = e.target.closest && e.target.closest("input, select, textarea, button, a, audio");
    if (e.code === "Space" && !typing) { e.preventDefault(); roll(); }
  });
  showParts();
  try {
    const info = await (await api("/api/model")).json();
    state.presets = info.presets || {};
    for (const name of Object.keys(state.presets)) $("preset").add(new Option(name, name, name === "default", name === "default"));
    applyPreset("default");
    $("n").max = info.limits.max_n;
    const corpus = info.corpus.dir ? `${info.corpus.dir.split("/").pop()}${info.corpus.pieces ? ` (${info.corpus.pieces} pieces)` : ""}` : "unknown";
    const bits = info.val_bits_per_note != null ? `${info.val_bits_per_note.toFixed(2)} bits/note` : "no val figure";
    $("model-info").textContent = `model ${info.checkpoint.split("/").slice(-4).join("/")} · step ${info.step} · ` +
      `${(info.params / 1e6).toFixed(2)}M params · vocab ${info.vocab} · ${bits} · learned from ${corpus}`;
    const prompts = (await (await api("/api/prompts")).json()).prompts;
    for (const p of prompts) $("demo-prompt").add(new Option(`${p.name} (${p.notes} notes)`, p.name));
  } catch (e) {
    showError(e.message);
  }
}

init();
