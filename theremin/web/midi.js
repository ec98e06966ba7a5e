// A minimal Standard MIDI File reader and a piano-roll painter: enough to show a prompt, and its tracks, before
// it is sent. The server reads the file for real (and says what is wrong with it); this reads it the way the
// server does (theremin.music.midi.read_midi over symusic), so the page's tracks and note counts are the server's.
"use strict";

const MAX_BAR_BEATS = 32; // as the server's limits.max_bar_beats
const MAX_BAR_LINES = 64; // a long song labels every k-th bar instead of piling numbers into a strip

// General MIDI's program names (pretty_midi's table: what the server calls an unnamed part) and families
const GM_PROGRAMS = [
  "Acoustic Grand Piano", "Bright Acoustic Piano", "Electric Grand Piano", "Honky-tonk Piano", "Electric Piano 1",
  "Electric Piano 2", "Harpsichord", "Clavinet", "Celesta", "Glockenspiel", "Music Box", "Vibraphone", "Marimba",
  "Xylophone", "Tubular Bells", "Dulcimer", "Drawbar Organ", "Percussive Organ", "Rock Organ", "Church Organ",
  "Reed Organ", "Accordion", "Harmonica", "Tango Accordion", "Acoustic Guitar (nylon)", "Acoustic Guitar (steel)",
  "Electric Guitar (jazz)", "Electric Guitar (clean)", "Electric Guitar (muted)", "Overdriven Guitar",
  "Distortion Guitar", "Guitar Harmonics", "Acoustic Bass", "Electric Bass (finger)", "Electric Bass (pick)",
  "Fretless Bass", "Slap Bass 1", "Slap Bass 2", "Synth Bass 1", "Synth Bass 2", "Violin", "Viola", "Cello",
  "Contrabass", "Tremolo Strings", "Pizzicato Strings", "Orchestral Harp", "Timpani", "String Ensemble 1",
  "String Ensemble 2", "Synth Strings 1", "Synth Strings 2", "Choir Aahs", "Voice Oohs", "Synth Choir",
  "Orchestra Hit", "Trumpet", "Trombone", "Tuba", "Muted Trumpet", "French Horn", "Brass Section", "Synth Brass 1",
  "Synth Brass 2", "Soprano Sax", "Alto Sax", "Tenor Sax", "Baritone Sax", "Oboe", "English Horn", "Bassoon",
  "Clarinet", "Piccolo", "Flute", "Recorder", "Pan Flute", "Blown bottle", "Shakuhachi", "Whistle", "Ocarina",
  "Lead 1 (square)", "Lead 2 (sawtooth)", "Lead 3 (calliope)", "Lead 4 chiff", "Lead 5 (charang)", "Lead 6 (voice)",
  "Lead 7 (fifths)", "Lead 8 (bass + lead)", "Pad 1 (new age)", "Pad 2 (warm)", "Pad 3 (polysynth)", "Pad 4 (choir)",
  "Pad 5 (bowed)", "Pad 6 (metallic)", "Pad 7 (halo)", "Pad 8 (sweep)", "FX 1 (rain)", "FX 2 (soundtrack)",
  "FX 3 (crystal)", "FX 4 (atmosphere)", "FX 5 (brightness)", "FX 6 (goblins)", "FX 7 (echoes)", "FX 8 (sci-fi)",
  "Sitar", "Banjo", "Shamisen", "Koto", "Kalimba", "Bagpipe", "Fiddle", "Shanai", "Tinkle Bell", "Agogo",
  "Steel Drums", "Woodblock", "Taiko Drum", "Melodic Tom", "Synth Drum", "Reverse Cymbal", "Guitar Fret Noise",
  "Breath Noise", "Seashore", "Bird Tweet", "Telephone Ring", "Helicopter", "Applause", "Gunshot",
];
const FAMILIES = ["piano", "chromatic percussion", "organ", "guitar", "bass", "strings", "ensemble", "brass", "reed",
  "pipe", "synth lead", "synth pad", "synth effects", "ethnic", "percussive", "sound effects"];
// the prompt's colours: cool hues, one per track (the model's notes are orange on the server's rolls)
const PART_COLORS = ["#4c72b0", "#2a9d8f", "#8172b3", "#64b5cd", "#55a868", "#3b4cc0", "#6a3d9a", "#17becf",
  "#2c7a4b", "#7f8fd1", "#1d5c8a", "#9c8fd8"];

const defaultName = (program, drum) => (drum ? "Drums" : GM_PROGRAMS[program] || `program ${program}`);
const familyOf = (part) => (part.drum ? "drums" : FAMILIES[part.program >> 3]);
const partColor = (k) => PART_COLORS[k % PART_COLORS.length];

// a track's name as the server keeps it (theremin.music.midi.track_name): "" for none, or for General MIDI's
// own name of its sound (what the server writes for an unnamed part), or "theremin" (old rolls)
function trackName(name, program, drum) {
  const s = name.replace(/^\0+|\0+$/g, "");
  return s === defaultName(program, drum) || (!drum && s === "theremin") ? "" : s;
}

// the label the server gives a part in its roll JSON (prompt.parts[].name): its name, else General MIDI's
const partLabel = (part) => part.name || defaultName(part.program, part.drum);

function parseMidi(buffer) {
  const d = new DataView(buffer);
  const tag = (at) => String.fromCharCode(d.getUint8(at), d.getUint8(at + 1), d.getUint8(at + 2), d.getUint8(at + 3));
  if (buffer.byteLength < 14 || tag(0) !== "MThd") throw new Error("not a MIDI file");
  const tracks = d.getUint16(10), division = d.getUint16(12);
  if (division & 0x8000) throw new Error("SMPTE time division");
  const utf8 = new TextDecoder("utf-8"); // as symusic decodes a track name (bad bytes: U+FFFD)
  let p = 8 + d.getUint32(4);
  const raw = []; // {start, end, pitch, velocity, part} in ticks
  const parts = [];
  let timeSig = [4, 4];
  const varlen = (end) => {
    let v = 0, b;
    do { b = d.getUint8(p++); v = v * 128 + (b & 0x7f); } while (b & 0x80 && p < end);
    return v;
  };
  for (let t = 0; t < tracks && p + 8 <= buffer.byteLength; t++) {
    if (tag(p) !== "MTrk") break;
    const end = Math.min(p + 8 + d.getUint32(p + 4), buffer.byteLength);
    p += 8;
    let tick = 0, status = 0, name = "";
    const program = new Array(16).fill(0); // per channel, in this track (as symusic keeps it)
    const open = new Map(); // channel*128+pitch -> [[start tick, velocity, program]] (first in, first out)
    const byKey = new Map(); // channel*128+program -> notes: symusic's tracks of one MIDI track
    while (p < end) {
      tick += varlen(end);
      let s = d.getUint8(p);
      if (s & 0x80) p++; else s = status;
      if (s === 0xff) {
        const type = d.getUint8(p++), len = varlen(end);
        if (type === 0x58 && len >= 2 && tick === 0) timeSig = [d.getUint8(p), 2 ** d.getUint8(p + 1)];
        if (type === 0x03) name = utf8.decode(new Uint8Array(buffer, p, Math.max(0, Math.min(len, end - p))));
        p += len;
      } else if (s === 0xf0 || s === 0xf7) {
        p += varlen(end);
      } else {
        status = s;
        const kind = s & 0xf0, ch = s & 0x0f, a = d.getUint8(p++);
        const b = kind === 0xc0 || kind === 0xd0 ? 0 : d.getUint8(p++);
        const key = ch * 128 + a;
        if (kind === 0xc0) {
          program[ch] = a;
        } else if (kind === 0x90 && b > 0) {
          if (!open.has(key)) open.set(key, []);
          open.get(key).push([tick, b, program[ch]]);
        } else if ((kind === 0x80 || kind === 0x90) && open.has(key) && open.get(key).length) {
          const [start, velocity, prog] = open.get(key).shift();
          const k = ch * 128 + prog;
          if (!byKey.has(k)) byKey.set(k, []);
          byKey.get(k).push({ start, end: tick, pitch: a, velocity });
        }
      }
    }
    p = end;
    // one part per (channel, program) with notes, in that order; a track the server wrote for notes that overlap
    // a note of their pitch ("<name> overlap k") joins its part (theremin.music.midi._parts_of)
    for (const k of [...byKey.keys()].sort((x, y) => x - y)) {
      const ch = k >> 7, prog = k & 127, drum = ch === 9;
      const m = /^(.*) overlap (\d+)$/s.exec(name);
      let home = m ? parts.findIndex((q) => q.program === prog && q.drum === drum && q.name === trackName(m[1], prog, drum)) : -1;
      if (home < 0) {
        home = parts.length;
        parts.push({ name: trackName(name, prog, drum), program: prog, drum, channel: ch, notes: 0 });
      }
      for (const n of byKey.get(k)) { n.part = home; raw.push(n); }
    }
  }
  // notes of one pitch that start on one tick in one part sound as one, the longest (then loudest) wins: as the
  // server counts (drum notes are notes too)
  raw.sort((x, y) => x.start - y.start || x.pitch - y.pitch || x.part - y.part || x.end - y.end || x.velocity - y.velocity);
  const notes = [];
  raw.forEach((n, i) => {
    const next = raw[i + 1];
    if (next && next.start === n.start && next.pitch === n.pitch && next.part === n.part) return;
    parts[n.part].notes++;
    notes.push({ start: n.start / division, end: n.end / division, pitch: n.pitch, velocity: n.velocity, part: n.part });
  });
  for (const part of parts) { part.family = familyOf(part); part.label = partLabel(part); }
  // 0/4, 4/256 or 255/1 would make bars of no or endless length (the tab hung drawing them): drawn in 4/4,
  // and said (the server refuses such a prompt with its reason)
  const [num, den] = timeSig;
  const meter = num >= 1 && den >= 1 && den <= 64 && (num * 4) / den <= MAX_BAR_BEATS;
  return { notes, parts, timeSig: meter ? timeSig : [4, 4], oddMeter: meter ? null : `${num}/${den}` };
}

// the piano roll of a parsed prompt: one colour per part (cool hues: the prompt's), drum hits as diamonds;
// `roles` (optional, per part: "keep", "mute" or "reroll") fades muted parts and outlines re-rolled ones;
// `span` (optional): `chosen` [A, B] greys the bars outside the chosen prompt bars, `read` [A, B] underlines the
// bars the model read. Returns the layout ({bars, barAt(px)}) a drag on the canvas needs to pick bars.
function drawPianoRoll(canvas, midi, roles = null, span = null) {
  const g = canvas.getContext("2d");
  const w = canvas.width, h = canvas.height;
  g.clearRect(0, 0, w, h);
  g.fillStyle = "#fafafa";
  g.fillRect(0, 0, w, h);
  const notes = midi ? midi.notes : [];
  if (!notes.length) return null;
  let lo = 127, hi = 0, last = 0;
  for (const n of notes) { lo = Math.min(lo, n.pitch); hi = Math.max(hi, n.pitch); last = Math.max(last, n.end); }
  lo -= 2; hi += 2;
  const beatsPerBar = (midi.timeSig[0] * 4) / midi.timeSig[1];
  const endBeat = Math.max(last, beatsPerBar);
  const bars = Math.ceil(endBeat / beatsPerBar);
  const x = (beat) => (beat / (bars * beatsPerBar)) * (w - 2) + 1;
  const rowH = h / (hi - lo + 1);
  g.strokeStyle = "#ddd";
  g.fillStyle = "#999";
  g.font = "10px sans-serif";
  // bar lines every k-th bar, k a power of two (phrases of 4, 8, 16 bars) wide enough for the longest number
  const pxPerBar = (w - 2) / bars, need = g.measureText(String(bars)).width + 6;
  let every = 1;
  while (every < Math.ceil(bars / MAX_BAR_LINES) || every * pxPerBar < need) every *= 2;
  for (let bar = 0; bar <= bars; bar += every) {
    g.beginPath();
    g.moveTo(x(bar * beatsPerBar), 0);
    g.lineTo(x(bar * beatsPerBar), h);
    g.stroke();
    if (bar < bars) g.fillText(String(bar + 1), x(bar * beatsPerBar) + 3, 10);
  }
  const parts = midi.parts || [];
  for (const n of notes) {
    const part = parts[n.part] || { drum: false };
    const role = roles ? roles[n.part] : "keep";
    const color = partColor(n.part);
    const y = h - (n.pitch - lo + 1) * rowH, hh = Math.max(2, rowH - 1);
    g.globalAlpha = role === "mute" ? 0.18 : 0.45 + 0.55 * ((n.velocity || 100) / 127);
    g.fillStyle = color;
    g.strokeStyle = color;
    if (part.drum) { // a hit: a diamond at its onset
      const cx = x(n.start), cy = y + hh / 2, r = Math.max(3, Math.min(6, hh));
      g.beginPath();
      g.moveTo(cx, cy - r); g.lineTo(cx + r, cy); g.lineTo(cx, cy + r); g.lineTo(cx - r, cy); g.closePath();
      if (role === "reroll") g.stroke(); else g.fill();
    } else if (role === "reroll") { // to be rolled anew: its outline only
      g.strokeRect(x(n.start) + 0.5, y + 0.5, Math.max(2, x(n.end) - x(n.start) - 1), hh - 1);
    } else {
      g.fillRect(x(n.start), y, Math.max(2, x(n.end) - x(n.start) - 1), hh);
    }
  }
  g.globalAlpha = 1;
  const chosen = span && span.chosen, read = span && span.read;
  if (chosen) { // the bars outside the chosen ones, greyed
    const a = x((Math.max(1, chosen[0]) - 1) * beatsPerBar), b = x(Math.min(bars, chosen[1]) * beatsPerBar);
    g.fillStyle = "rgba(235, 235, 235, 0.78)";
    g.fillRect(0, 0, Math.max(0, a), h);
    g.fillRect(b, 0, Math.max(0, w - b), h);
    g.strokeStyle = "#e07b39";
    g.strokeRect(a + 0.5, 0.5, Math.max(1, b - a - 1), h - 1);
  }
  if (read) { // the bars the model read: a bar under the roll
    g.fillStyle = "#e07b39";
    g.fillRect(x((read[0] - 1) * beatsPerBar), h - 4, Math.max(2, x(read[1] * beatsPerBar) - x((read[0] - 1) * beatsPerBar)), 4);
  }
  const barAt = (px) => Math.min(bars, Math.max(1, Math.floor(((px - 1) / (w - 2)) * bars) + 1));
  return { bars, barAt };
}
