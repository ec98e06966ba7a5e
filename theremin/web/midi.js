// A minimal Standard MIDI File reader and a piano-roll painter: enough to show a prompt before it is sent.
// The server reads the file for real (and says what is wrong with it); this only draws.
"use strict";

const MAX_BAR_BEATS = 32; // as the server's limits.max_bar_beats
const MAX_BAR_LINES = 64; // a long song labels every k-th bar instead of piling numbers into a strip

function parseMidi(buffer) {
  const d = new DataView(buffer);
  const tag = (at) => String.fromCharCode(d.getUint8(at), d.getUint8(at + 1), d.getUint8(at + 2), d.getUint8(at + 3));
  if (buffer.byteLength < 14 || tag(0) !== "MThd") throw new Error("not a MIDI file");
  const tracks = d.getUint16(10), division = d.getUint16(12);
  if (division & 0x8000) throw new Error("SMPTE time division");
  let p = 8 + d.getUint32(4);
  const notes = [];
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
    let tick = 0, status = 0;
    const open = new Map(); // channel*128+pitch -> start ticks (first in, first out)
    while (p < end) {
      tick += varlen(end);
      let s = d.getUint8(p);
      if (s & 0x80) p++; else s = status;
      if (s === 0xff) {
        const type = d.getUint8(p++), len = varlen(end);
        if (type === 0x58 && len >= 2 && tick === 0) timeSig = [d.getUint8(p), 2 ** d.getUint8(p + 1)];
        p += len;
      } else if (s === 0xf0 || s === 0xf7) {
        p += varlen(end);
      } else {
        status = s;
        const kind = s & 0xf0, ch = s & 0x0f, a = d.getUint8(p++);
        const b = kind === 0xc0 || kind === 0xd0 ? 0 : d.getUint8(p++);
        const key = ch * 128 + a;
        if (kind === 0x90 && b > 0) {
          if (!open.has(key)) open.set(key, []);
          open.get(key).push(tick);
        } else if ((kind === 0x80 || kind === 0x90) && open.has(key) && open.get(key).length) {
          const start = open.get(key).shift();
          if (ch !== 9) notes.push({ start: start / division, end: tick / division, pitch: a });
        }
      }
    }
    p = end;
  }
  notes.sort((x, y) => x.start - y.start || x.pitch - y.pitch);
  // 0/4, 4/256 or 255/1 would make bars of no or endless length (the tab hung drawing them): drawn in 4/4,
  // and said (the server refuses such a prompt with its reason)
  const [num, den] = timeSig;
  const meter = num >= 1 && den >= 1 && den <= 64 && (num * 4) / den <= MAX_BAR_BEATS;
  return { notes, timeSig: meter ? timeSig : [4, 4], oddMeter: meter ? null : `${num}/${den}` };
}

function drawPianoRoll(canvas, midi, color = "#4c72b0") {
  const g = canvas.getContext("2d");
  const w = canvas.width, h = canvas.height;
  g.clearRect(0, 0, w, h);
  g.fillStyle = "#fafafa";
  g.fillRect(0, 0, w, h);
  const notes = midi ? midi.notes : [];
  if (!notes.length) return;
  const lo = Math.min(...notes.map((n) => n.pitch)) - 2, hi = Math.max(...notes.map((n) => n.pitch)) + 2;
  const beatsPerBar = (midi.timeSig[0] * 4) / midi.timeSig[1];
  const endBeat = Math.max(...notes.map((n) => n.end), beatsPerBar);
  const bars = Math.ceil(endBeat / beatsPerBar);
  const x = (beat) => (beat / (bars * beatsPerBar)) * (w - 2) + 1;
  const rowH = h / (hi - lo + 1);
  g.strokeStyle = "#ddd";
  g.fillStyle = "#999";
  g.font = "10px sans-serif";
  const every = Math.max(1, Math.ceil(bars / MAX_BAR_LINES));
  for (let bar = 0; bar <= bars; bar += every) {
    g.beginPath();
    g.moveTo(x(bar * beatsPerBar), 0);
    g.lineTo(x(bar * beatsPerBar), h);
    g.stroke();
    if (bar < bars) g.fillText(String(bar + 1), x(bar * beatsPerBar) + 3, 10);
  }
  g.fillStyle = color;
  for (const n of notes) {
    g.fillRect(x(n.start), h - (n.pitch - lo + 1) * rowH, Math.max(2, x(n.end) - x(n.start) - 1), Math.max(2, rowH - 1));
  }
}
