"""midichar: one note = one Unicode character.

A piece becomes a string ordered by time, one character per note, so sentencepiece BPE can learn multi-note
tokens. All characters lie in U+10000..U+10FFFF (2^20 code points): never whitespace, newline, control or
surrogate, so a corpus can hold one piece per line.

Time is musical: a grid of ``grid`` steps per quarter-note beat (12 by default: 16ths and triplets). Absolute
onsets and offsets are quantised to the grid first and steps are taken between quantised positions, so
rounding never drifts. Tempo is kept exactly (microseconds per quarter note, as in the file), so a decoded
file sounds like the original in seconds.

Bit layout (code point = 0x10000 + index), with S = len(steps), D = len(durations), V = len(velocities):

    index in [0, S*D*V*128)            NOTE   ((step_i * D + dur_i) * V + vel_i) * 128 + pitch
    next max_rest code points          REST   advance time by n = 1..max_rest grid steps
    next max_dur_ext code points       DUR_EXT lengthen the preceding note by n = 1..max_dur_ext steps
    next 4096                          TEMPO_HI high 12 bits of a tempo (microseconds per quarter, 24 bits)
    next 4096                          TEMPO_LO low 12 bits; always right after a TEMPO_HI
    the rest up to 2^20                reserved (invalid)

Pitch is the low field, so transposing a note by k semitones adds k to its code point.

Multi-character forms (nothing is ever clamped or dropped):
- a gap between events that is not in ``steps``: REST chars carry ``gap - s`` and the event carries ``s``,
  the largest table step not above the gap; REST amounts are ``max_rest`` repeated, then the remainder;
- a duration not in ``durations``: the note carries the largest table duration below it, and DUR_EXT chars
  right after it carry the remainder (``max_dur_ext`` repeated, then the remainder);
- a tempo change: TEMPO_HI TEMPO_LO at its grid position (reached by REST chars), before the notes there.
  Tempo starts at 120 bpm (MIDI's default); a tempo equal to the current one is not written.

Canonical order: events by grid position; at one position the tempo first, then notes by rising pitch.
Quantisation: positions round to the nearest grid step; a note keeps at least one step of duration; notes
of one pitch at one position sound as one (the longest is kept); velocity becomes the nearest level.
``encode(decode(t)) == t`` holds for every canonical text, and ``decode(encode(p))`` is ``p`` on the grid.
"""

from __future__ import annotations

import bisect
import os
from dataclasses import dataclass
from pathlib import Path

from theremin.cli import ThereminError
from theremin.midi import DEFAULT_TEMPO_US, MidiError, Note, Piece, read_midi, write_midi
from theremin.resolvers import plain

BASE = 0x10000
PLANE_SPAN = 0x100000  # code points U+10000..U+10FFFF
TEMPO_FIELD = 4096  # 12 bits per tempo half


class CodecError(ThereminError):
    """A text that is not valid midichar; the message gives the character position and the reason."""


@dataclass(frozen=True)
class Event:
    """One decoded character group, for tools that walk a text (samplers, analysis)."""

    kind: str  # "note" | "rest" | "dur_ext" | "tempo_hi" | "tempo_lo"
    value: int  # step / rest length / extension / tempo half


def _default_config() -> dict:
    from omegaconf import OmegaConf

    from theremin.paths import conf_dir

    path = conf_dir() / "codec" / "default.yaml"
    if not path.exists():
        raise FileNotFoundError(f"{path}: codec defaults not found (theremin runs from a source checkout)")
    cfg = OmegaConf.to_container(OmegaConf.load(path))
    cfg.pop("_target_", None)
    return cfg


class MidiChar:
    """The midichar codec. ``MidiChar()`` uses conf/codec/default.yaml; keyword arguments override it."""

    def __init__(self, **overrides):
        cfg = _default_config()
        unknown = set(overrides) - set(cfg)
        if unknown:
            raise TypeError(f"unknown codec settings: {sorted(unknown)} (known: {sorted(cfg)})")
        # plain values (Hydra passes ListConfig): the config goes into JSON manifests and cache keys as it is
        cfg.update({k: plain(v) for k, v in overrides.items() if v is not None})
        self.config = cfg
        self.grid = int(cfg["grid"])
        self.velocities = [int(v) for v in cfg["velocities"]]
        self.steps = [int(s) for s in cfg["steps"]]
        self.durations = [int(d) for d in cfg["durations"]]
        self.max_rest = int(cfg["max_rest"])
        self.max_dur_ext = int(cfg["max_dur_ext"])
        self.ticks_per_beat = int(cfg["ticks_per_beat"])
        self.max_gap_beats = float(cfg["max_gap_beats"])
        self._check()
        self._step_index = {s: i for i, s in enumerate(self.steps)}
        self._dur_index = {d: i for i, d in enumerate(self.durations)}
        self._vel_bounds = [(a + b) / 2 for a, b in zip(self.velocities, self.velocities[1:])]
        nv = len(self.velocities)
        self.n_notes = len(self.steps) * len(self.durations) * nv * 128
        self.rest_lo = self.n_notes
        self.ext_lo = self.rest_lo + self.max_rest
        self.tempo_hi_lo = self.ext_lo + self.max_dur_ext
        self.tempo_lo_lo = self.tempo_hi_lo + TEMPO_FIELD
        self.n_codes = self.tempo_lo_lo + TEMPO_FIELD

    def _check(self) -> None:
        def rising(name, xs, lo, hi):
            if not xs or xs != sorted(set(xs)) or xs[0] < lo or xs[-1] > hi:
                raise ValueError(f"codec.{name} must be strictly rising values in [{lo}, {hi}], got {xs}")

        rising("velocities", self.velocities, 1, 127)
        rising("steps", self.steps, 0, 1 << 20)
        rising("durations", self.durations, 1, 1 << 20)
        if self.steps[0] != 0:
            raise ValueError("codec.steps must start at 0 (notes of a chord share one onset)")
        if self.durations[0] != 1:
            raise ValueError("codec.durations must start at 1 (the shortest note lasts one grid step)")
        if self.grid < 1 or self.ticks_per_beat % self.grid:
            raise ValueError(f"codec.ticks_per_beat ({self.ticks_per_beat}) must be a multiple of grid ({self.grid})")
        if self.max_rest < self.steps[-1] or self.max_dur_ext < 1:
            raise ValueError("codec.max_rest must be >= the largest step, codec.max_dur_ext >= 1")
        size = (len(self.steps) * len(self.durations) * len(self.velocities) * 128 + self.max_rest
                + self.max_dur_ext + 2 * TEMPO_FIELD)
        if size > PLANE_SPAN:
            raise ValueError(
                f"codec layout needs {size} code points but only {PLANE_SPAN} exist in U+10000..U+10FFFF: "
                "shorten codec.steps, codec.durations, codec.velocities or the escape ranges")

    # ---- characters -------------------------------------------------------------------------------------
    def note_char(self, step_i: int, dur_i: int, vel_i: int, pitch: int) -> str:
        nv = len(self.velocities)
        return chr(BASE + ((step_i * len(self.durations) + dur_i) * nv + vel_i) * 128 + pitch)

    def split_note(self, ch: str) -> tuple[int, int, int, int]:
        """(step_index, duration_index, velocity_index, pitch) of a NOTE char."""
        i = ord(ch) - BASE
        i, pitch = divmod(i, 128)
        i, vel_i = divmod(i, len(self.velocities))
        step_i, dur_i = divmod(i, len(self.durations))
        return step_i, dur_i, vel_i, pitch

    def kind(self, ch: str) -> str:
        """'note', 'rest', 'dur_ext', 'tempo_hi', 'tempo_lo' or 'invalid'."""
        i = ord(ch) - BASE
        if i < 0:
            return "invalid"
        if i < self.rest_lo:
            return "note"
        if i < self.ext_lo:
            return "rest"
        if i < self.tempo_hi_lo:
            return "dur_ext"
        if i < self.tempo_lo_lo:
            return "tempo_hi"
        if i < self.n_codes:
            return "tempo_lo"
        return "invalid"

    def is_note(self, ch: str) -> bool:
        return 0 <= ord(ch) - BASE < self.n_notes

    def count_notes(self, text: str) -> int:
        lo, hi = chr(BASE), chr(BASE + self.n_notes)
        return sum(1 for c in text if lo <= c < hi)

    def transpose(self, text: str, semitones: int) -> str | None:
        """The text with every note moved by ``semitones``; None if a note would leave MIDI's 0..127."""
        if semitones == 0:
            return text
        lo, hi = chr(BASE), chr(BASE + self.n_notes)
        out = []
        for c in text:
            if lo <= c < hi:
                pitch = (ord(c) - BASE) % 128 + semitones
                if not 0 <= pitch <= 127:
                    return None
                c = chr(ord(c) + semitones)
            out.append(c)
        return "".join(out)

    @staticmethod
    def _amount_chars(n: int, lo: int, most: int) -> list[str]:
        """n as escape chars of the range starting at ``lo`` (value k = code lo + k - 1): ``most`` repeated,
        then the remainder."""
        full, rem = divmod(n, most)
        return [chr(BASE + lo + most - 1)] * full + ([chr(BASE + lo + rem - 1)] if rem else [])

    def _rest_chars(self, n: int) -> list[str]:
        return self._amount_chars(n, self.rest_lo, self.max_rest)

    def _ext_chars(self, n: int) -> list[str]:
        return self._amount_chars(n, self.ext_lo, self.max_dur_ext)

    def _tempo_chars(self, us: int) -> list[str]:
        hi, lo = divmod(us, TEMPO_FIELD)
        return [chr(BASE + self.tempo_hi_lo + hi), chr(BASE + self.tempo_lo_lo + lo)]

    def velocity_index(self, velocity: int) -> int:
        return bisect.bisect_left(self._vel_bounds, velocity)

    # ---- encoding ---------------------------------------------------------------------------------------
    def quantize(self, piece: Piece) -> tuple[list[tuple[int, int, int, int]], list[tuple[int, int]]]:
        """Notes as (position, duration, pitch, velocity_index) and tempos as (position, us) on the grid."""
        tpb, g = piece.ticks_per_beat, self.grid

        def q(tick: int) -> int:  # nearest grid step, halves rounding up, in exact integer arithmetic
            return (2 * tick * g + tpb) // (2 * tpb)

        best: dict[tuple[int, int], tuple[int, int]] = {}
        for n in piece.notes:
            pos = q(n.start)
            dur = max(1, q(n.end) - pos)
            key, value = (pos, n.pitch), (dur, self.velocity_index(n.velocity))
            if key not in best or value > best[key]:  # the longest sounds; of equal ones, the loudest
                best[key] = value
        notes = [(pos, dur, pitch, vel) for (pos, pitch), (dur, vel) in sorted(best.items())]
        end = max((pos + dur for pos, dur, _, _ in notes), default=0)
        by_pos: dict[int, int] = {}
        for tick, us in piece.tempos:
            if not 1 <= us < TEMPO_FIELD * TEMPO_FIELD:
                raise CodecError(f"tempo {us} us per quarter is outside MIDI's 24-bit range")
            by_pos[q(tick)] = us  # several changes inside one grid step: the last one holds
        tempos, current = [], DEFAULT_TEMPO_US
        for pos in sorted(by_pos):
            if pos < end and by_pos[pos] != current:  # tempo after the last note ends changes nothing
                tempos.append((pos, by_pos[pos]))
                current = by_pos[pos]
        return notes, tempos

    def encode(self, piece: Piece) -> str:
        """Piece → text (canonical). Raises :class:`MidiError` for an absurd silence."""
        notes, tempos = self.quantize(piece)
        events = sorted([(pos, 0, us, 0, 0) for pos, us in tempos]
                        + [(pos, 1, pitch, dur, vel) for pos, dur, pitch, vel in notes])
        max_gap = self.max_gap_beats * self.grid
        out: list[str] = []
        cursor = 0
        for pos, is_note, a, dur, vel in events:
            gap = pos - cursor
            if gap > max_gap:
                raise MidiError(None, f"absurd silence of {gap / self.grid:.0f} beats before beat "
                                      f"{pos / self.grid:.0f} (codec.max_gap_beats={self.max_gap_beats:g})")
            cursor = pos
            if not is_note:
                out += self._rest_chars(gap)
                out += self._tempo_chars(a)
                continue
            step_i = bisect.bisect_right(self.steps, gap) - 1
            out += self._rest_chars(gap - self.steps[step_i])
            dur_i = bisect.bisect_right(self.durations, dur) - 1
            out.append(self.note_char(step_i, dur_i, vel, a))
            out += self._ext_chars(dur - self.durations[dur_i])
        return "".join(out)

    def encode_file(self, path: str | os.PathLike, min_notes: int = 1) -> str:
        """Read, clean (see theremin.midi) and encode a MIDI file; :class:`MidiError` names the reason."""
        piece = read_midi(path, min_notes=min_notes)
        try:
            return self.encode(piece)
        except (MidiError, CodecError) as e:
            raise MidiError(path, getattr(e, "reason", str(e))) from e

    # ---- decoding ---------------------------------------------------------------------------------------
    def decode_grid(
        self, text: str, errors: str = "strict"
    ) -> tuple[list[tuple[int, int, int, int]], list[tuple[int, int]]]:
        """Text → notes (position, duration, pitch, velocity_index) and tempos (position, us) on the grid.

        Raises :class:`CodecError` (with the character position) for characters outside the alphabet, a
        DUR_EXT with no note before it, or a tempo half without its partner. ``errors="skip"`` drops such
        characters instead (for text of unknown origin, e.g. an unconstrained model sample).
        """
        if errors == "skip":
            text = self.repair(text)
        notes: list[list[int]] = []
        tempos: list[tuple[int, int]] = []
        cursor = 0
        pending_hi = None
        prev = None  # kind of the previous char
        nd, nv = len(self.durations), len(self.velocities)
        for i, ch in enumerate(text):
            code = ord(ch) - BASE
            k = self.kind(ch)
            if pending_hi is not None and k != "tempo_lo":
                raise CodecError(f"char {i}: TEMPO_HI must be followed by TEMPO_LO, got {k}")
            if k == "note":
                rest, pitch = divmod(code, 128)
                rest, vel_i = divmod(rest, nv)
                step_i, dur_i = divmod(rest, nd)
                cursor += self.steps[step_i]
                notes.append([cursor, self.durations[dur_i], pitch, vel_i])
            elif k == "rest":
                cursor += code - self.rest_lo + 1
            elif k == "dur_ext":
                if prev not in ("note", "dur_ext"):
                    raise CodecError(f"char {i}: DUR_EXT must follow a note, it follows {prev or 'nothing'}")
                notes[-1][1] += code - self.ext_lo + 1
            elif k == "tempo_hi":
                pending_hi = code - self.tempo_hi_lo
            elif k == "tempo_lo":
                if pending_hi is None:
                    raise CodecError(f"char {i}: TEMPO_LO without a TEMPO_HI before it")
                us = pending_hi * TEMPO_FIELD + code - self.tempo_lo_lo
                if us == 0:
                    raise CodecError(f"char {i}: tempo of 0 microseconds per quarter")
                tempos.append((cursor, us))
                pending_hi = None
            else:
                raise CodecError(f"char {i}: U+{ord(ch):04X} is not a midichar of this codec")
            prev = k
        if pending_hi is not None:
            raise CodecError(f"char {len(text) - 1}: text ends inside a tempo (TEMPO_HI without TEMPO_LO)")
        return [tuple(n) for n in notes], tempos

    def repair(self, text: str) -> str:
        """The text without the characters that make it invalid (foreign chars, orphan escapes)."""
        out: list[str] = []
        prev = None
        for ch in text:
            k = self.kind(ch)
            if prev == "tempo_hi" and k != "tempo_lo":
                out.pop()
                prev = "dropped"  # what followed the dropped TEMPO_HI cannot attach to the char before it
            if k == "invalid" or (k == "dur_ext" and prev not in ("note", "dur_ext")) or (
                k == "tempo_lo" and prev != "tempo_hi"
            ):
                continue
            if k == "tempo_lo" and (ord(out[-1]) - BASE - self.tempo_hi_lo) == 0 and ord(ch) - BASE == self.tempo_lo_lo:
                out.pop()  # a tempo of 0 microseconds
                prev = self.kind(out[-1]) if out else None
                continue
            out.append(ch)
            prev = k
        if prev == "tempo_hi":
            out.pop()
        return "".join(out)

    def decode(self, text: str, errors: str = "strict") -> Piece:
        """Text → Piece at ``ticks_per_beat`` resolution (notes sorted by time, then pitch)."""
        notes, tempos = self.decode_grid(text, errors)
        k = self.ticks_per_beat // self.grid
        out = sorted(Note(pos * k, (pos + dur) * k, pitch, self.velocities[vel]) for pos, dur, pitch, vel in notes)
        return Piece(notes=out, ticks_per_beat=self.ticks_per_beat, tempos=[(pos * k, us) for pos, us in tempos])

    def decode_to_file(self, text: str, path: str | os.PathLike, **write_kwargs) -> Path:
        """Decode and write a one-track MIDI file atomically (``write_kwargs`` go to theremin.midi.write_midi)."""
        piece = self.decode(text)
        return write_midi(piece, path, **write_kwargs)
