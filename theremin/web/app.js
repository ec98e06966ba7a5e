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
const state = { prompt: null, presets: {}, history: [], busy: false };

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
async function setPrompt(blob, name) {
  state.prompt = blob ? { blob, name } : null;
  const canvas = $("prompt-roll");
  if (!blob) {
    $("prompt-info").textContent = "No prompt: the model starts a piece of its own.";
    drawPianoRoll(canvas, null);
    return;
  }
  try {
    const midi = parseMidi(await blob.arrayBuffer());
    const bars = Math.ceil(Math.max(0, ...midi.notes.map((n) => n.end)) / ((midi.timeSig[0] * 4) / midi.timeSig[1]));
    const odd = midi.oddMeter ? ` (its time signature ${midi.oddMeter} is not a meter: drawn in 4/4)` : "";
    $("prompt-info").textContent = `${name}: ${midi.notes.length} notes, ${bars} bars${odd}`;
    drawPianoRoll(canvas, midi);
  } catch (e) {
    $("prompt-info").textContent = `${name}: cannot draw it (${e.message}); the server will say more`;
    drawPianoRoll(canvas, null);
  }
}

async function pickDemo(name) {
  if (!name) return;
  const response = await api(`/api/prompts/${encodeURIComponent(name)}.mid`);
  await setPrompt(await response.blob(), name);
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
  if ($("pitch-lo").value !== "" || $("pitch-hi").value !== "") put("pitch_range", `${$("pitch-lo").value},${$("pitch-hi").value}`);
  if (keepBars != null) put("keep_bars", keepBars);
  if (state.prompt) f.append("prompt", state.prompt.blob, state.prompt.name);
  return f;
}

async function roll(keepBars = null) {
  if (state.busy) return;
  state.busy = true;
  $("roll").disabled = $("reroll").disabled = true;
  $("status").textContent = "rolling…";
  showError("");
  try {
    const response = await api("/api/rolls", { method: "POST", body: fields(keepBars) });
    const body = await response.json();
    const entry = { body, prompt: state.prompt, keepBars };
    state.history.push(entry);
    addHistory(entry, state.history.length);
    showRoll(entry);
    $("status").textContent = `rolled in ${body.seconds.toFixed(2)} s (seed ${body.seed})`;
  } catch (e) {
    showError(e.message);
    $("status").textContent = "";
  } finally {
    state.busy = false;
    $("roll").disabled = $("reroll").disabled = false;
  }
}

// ---- results ----------------------------------------------------------------------------------------------
function showRoll(entry) {
  const { body } = entry;
  $("results-title").hidden = false;
  $("results-title").textContent = `Variations — seed ${body.seed}` + (entry.keepBars != null ? `, kept ${entry.keepBars} bar${entry.keepBars === 1 ? "" : "s"} of the prompt and re-rolled the rest` : "");
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
      <a class="button secondary download" href="${v.midi}" download="theremin-${body.id.slice(0, 8)}-${v.index}.mid">MIDI</a>
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
  button.textContent = `roll ${number}: ${body.variations.length} × ${s.length} ${s.unit}, ${s.temperature.toFixed(2)} temp, seed ${body.seed}` +
    (entry.prompt ? ` — from ${entry.prompt.name}` : "");
  button.addEventListener("click", async () => {
    await setPrompt(entry.prompt ? entry.prompt.blob : null, entry.prompt ? entry.prompt.name : "");
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
  $("demo-prompt").addEventListener("change", (e) => pickDemo(e.target.value).catch((err) => showError(err.message)));
  $("clear-prompt").addEventListener("click", () => { $("demo-prompt").value = ""; setPrompt(null); });
  $("preset").addEventListener("change", (e) => applyPreset(e.target.value));
  $("roll").addEventListener("click", () => roll());
  $("reroll").addEventListener("click", () => roll(Number($("keep-bars").value)));
  document.addEventListener("keydown", (e) => {
    const typing = e.target.closest && e.target.closest("input, select, textarea, button, a, audio");
    if (e.code === "Space" && !typing) { e.preventDefault(); roll(); }
  });
  drawPianoRoll($("prompt-roll"), null);
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
