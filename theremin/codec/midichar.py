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
    next 256                           DECL     declares a part: General MIDI program + 128 * drum (header only)
    next 256                           NAME     one byte (UTF-8) of the name of the part declared before it
    next 256 * max_same_program        SELECT   switch to the part (program + 128 * drum, ordinal): the next
                                                note is that part's (ordinal: the k-th part of that sound)
    the rest up to 2^20                reserved (invalid)

Instruments (``instruments=True``, the default): a piece is a list of parts (track name, program, drum flag).
A text starts with a header, one DECL (plus its NAME bytes) per part, unless the piece is one unnamed piano
part: a single-instrument piece costs nothing. Notes belong to the current part: the first declared one, until
a SELECT switches. So one note is one char wherever a piece stays on one instrument; a switch costs one char,
and the switch names the instrument itself, so a window cut from the middle of a piece still says which
instrument plays. A SELECT for a part the header did not declare adds one (a model may bring in a new part).
``instruments=False`` is the codec before instruments: drums dropped, every other note on one piano part.

Pitch is the low field, so transposing a note by k semitones adds k to its code point.

Multi-character forms (nothing is ever clamped or dropped):
- a gap between events that is not in ``steps``: REST chars carry ``gap - s`` and the event carries ``s``,
  the largest table step not above the gap; REST amounts are ``max_rest`` repeated, then the remainder;
- a duration not in ``durations``: the note carries the largest table duration below it, and DUR_EXT chars
  right after it carry the remainder (``max_dur_ext`` repeated, then the remainder);
- a tempo change: TEMPO_HI TEMPO_LO at its grid position (reached by REST chars), before the notes there.
  Tempo starts at 120 bpm (MIDI's default); a tempo equal to the current one is not written.

Which character may follow which is :data:`GRAMMAR`, a small automaton over character classes; decoding,
:meth:`MidiChar.repair` and the sampling constraints (theremin.roll.constraints) all walk it.

Canonical order: events by grid position; at one position the tempo first, then the notes of the current part,
then those of the other parts in part order, each part's by rising pitch (so a chord across parts costs one
switch per part). Quantisation: positions round to the nearest grid step; a note keeps at least one step of
duration; notes of one pitch at one position in one part sound as one (the longest is kept); velocity becomes
the nearest level. A part name longer than ``max_name_bytes`` (UTF-8) is cut at a character boundary. More
than ``max_same_program`` parts of one sound (2000 one-note piano tracks): the later ones fold into the last
that fits, every note kept.
``encode(decode(t)) == t`` holds for every canonical text, and ``decode(encode(p))`` is ``p`` on the grid.

Every setting and its default is :class:`CodecConfig`; conf/codec/default.yaml only overrides it.
"""

from __future__ import annotations

import bisect
import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from types import MappingProxyType

from theremin.config import known_settings, plain
from theremin.errors import ThereminError
from theremin.music.midi import DEFAULT_TEMPO_US, PIANO, MidiError, Note, Part, Piece, read_midi, write_midi

BASE = 0x10000
PLANE_SPAN = 0x100000  # code points U+10000..U+10FFFF
TEMPO_FIELD = 4096  # 12 bits per tempo half
SOUNDS = 256  # a part's sound: General MIDI program + 128 if it is a drum part


class CodecError(ThereminError):
    """A text that is not valid midichar (the message gives the character position and the reason), or codec
    settings that make no alphabet (the message names the setting)."""


# ---- settings -------------------------------------------------------------------------------------------
# Settings added after corpora, tokenizers and checkpoints already recorded a codec config: left out of
# MidiChar.config while at their default, so the config (and every cache key made from it) stays the same.
_LATER = {"recorded": "when changed"}


@dataclass(frozen=True)
class CodecConfig:
    """Every midichar setting with its default. Each value shapes the alphabet or what is refused, so a corpus,
    tokenizer or checkpoint made with one config does not fit another: the config is part of their keys."""

    # grid steps per quarter-note beat: 12 holds 16ths (3 steps) and 8th-note triplets (4 steps)
    grid: int = 12
    # velocity levels: a note's velocity becomes the nearest level (4 levels keep the alphabet small)
    velocities: tuple[int, ...] = (32, 64, 96, 124)
    # onset steps (grid units since the previous event) a note char holds; any other gap is the largest step
    # below it plus REST chars. 0..30 cover most score and performance gaps, the rest are common long ones.
    steps: tuple[int, ...] = (*range(31), 36, 42, 48, 72, 96)
    # durations (grid units) a note char holds; any other is the largest below it plus DUR_EXT chars
    durations: tuple[int, ...] = (*range(1, 41), 42, 45, 48, 54, 60, 72, 84, 96, 120, 144, 192, 240, 288, 384,
                                  576, 768)
    # escape chars: REST(n) advances time by n grid steps, DUR_EXT(n) lengthens the previous note by n (1..max)
    max_rest: int = 2048
    max_dur_ext: int = 2048
    # resolution of decoded MIDI files (a multiple of grid)
    ticks_per_beat: int = 480
    # a silence or a note longer than this (in beats) is refused as absurd rather than encoded as a wall of
    # escape chars: no file expands far beyond its size (at most ~24 chars per note with the defaults)
    max_gap_beats: float = 4096
    max_note_beats: float = field(default=4096, metadata=_LATER)
    # keep each note's part (program, drums, track): see the module docstring. Always recorded: a config
    # recorded before instruments existed lacks it and means False (MidiChar.from_recorded)
    instruments: bool = True
    # parts of one sound (program + drum flag) a piece may have, e.g. POP909's three piano tracks; a piece with
    # more is refused with that reason
    max_same_program: int = field(default=12, metadata=_LATER)
    # a part name's UTF-8 bytes kept in the header (longer names are cut at a character boundary)
    max_name_bytes: int = field(default=64, metadata=_LATER)

    def __post_init__(self):
        for f in fields(self):  # lists (YAML, JSON) become tuples: a frozen config holds no mutable value
            v = getattr(self, f.name)
            if isinstance(v, list):
                object.__setattr__(self, f.name, tuple(v))
        self._check()

    @classmethod
    def with_overrides(cls, **overrides) -> CodecConfig:
        """The defaults with ``overrides`` (None keeps a default; Hydra's ListConfig becomes a plain list)."""
        known_settings(cls, overrides, "codec", "a codec setting", CodecError)
        return cls(**{k: plain(v) for k, v in overrides.items() if v is not None})

    def as_dict(self) -> dict:
        """Plain values (lists, numbers) as given: what manifests, cache keys and checkpoints record, and what
        ``MidiChar(**d)`` rebuilds the same codec from."""
        out = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if f.metadata.get("recorded") == "when changed" and v == f.default:
                continue
            out[f.name] = list(v) if isinstance(v, tuple) else v
        return out

    def _check(self) -> None:
        def whole(name, v, lo):
            if isinstance(v, bool) or not isinstance(v, (int, float)) or v != int(v) or v < lo:
                raise CodecError(f"codec.{name} must be a whole number >= {lo}, got {v!r}")
            return int(v)

        def rising(name, xs, lo, hi):
            if not isinstance(xs, tuple) or not xs:
                raise CodecError(f"codec.{name} must be a list of numbers, got {xs!r}")
            xs = [whole(name, x, lo) for x in xs]
            if xs != sorted(set(xs)) or xs[-1] > hi:
                raise CodecError(f"codec.{name} must be strictly rising values in [{lo}, {hi}], got {xs}")
            return xs

        velocities = rising("velocities", self.velocities, 1, 127)
        steps = rising("steps", self.steps, 0, 1 << 20)
        durations = rising("durations", self.durations, 1, 1 << 20)
        if steps[0] != 0:
            raise CodecError("codec.steps must start at 0 (notes of a chord share one onset)")
        if durations[0] != 1:
            raise CodecError("codec.durations must start at 1 (the shortest note lasts one grid step)")
        grid, tpb = whole("grid", self.grid, 1), whole("ticks_per_beat", self.ticks_per_beat, 1)
        if tpb % grid:
            raise CodecError(f"codec.ticks_per_beat ({tpb}) must be a multiple of grid ({grid})")
        max_rest, max_dur_ext = whole("max_rest", self.max_rest, 1), whole("max_dur_ext", self.max_dur_ext, 1)
        if max_rest < steps[-1]:
            raise CodecError(f"codec.max_rest ({max_rest}) must be >= the largest step ({steps[-1]})")
        for name in ("max_gap_beats", "max_note_beats"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0:
                raise CodecError(f"codec.{name} must be a number of beats > 0, got {v!r}")
        if not isinstance(self.instruments, bool):
            raise CodecError(f"codec.instruments must be true or false, got {self.instruments!r}")
        same = whole("max_same_program", self.max_same_program, 1)
        whole("max_name_bytes", self.max_name_bytes, 0)
        size = len(steps) * len(durations) * len(velocities) * 128 + max_rest + max_dur_ext + 2 * TEMPO_FIELD
        if self.instruments:
            size += 2 * SOUNDS + SOUNDS * same
        if size > PLANE_SPAN:
            raise CodecError(
                f"codec layout needs {size} code points but only {PLANE_SPAN} exist in U+10000..U+10FFFF: "
                "shorten codec.steps, codec.durations, codec.velocities, the escape ranges or max_same_program")


# ---- the grammar ----------------------------------------------------------------------------------------
# Character classes (MidiChar.char_class). A tempo half of value 0 is a class of its own, so that a tempo of
# 0 microseconds (TEMPO_HI 0 then TEMPO_LO 0) is no word of the grammar.
INVALID, NOTE, REST, DUR_EXT, TEMPO_HI, TEMPO_HI0, TEMPO_LO, TEMPO_LO0, DECL, NAME, SELECT = range(11)
KIND = ("invalid", "note", "rest", "dur_ext", "tempo_hi", "tempo_hi", "tempo_lo", "tempo_lo",  # per class
        "decl", "name", "select")
# States: START before the first char, then the class of the last char (after TEMPO_LO0 the state is TEMPO_LO).
START = len(KIND)
# the chars that open an event; SELECT opens a note of another part
_EVENT = {NOTE: NOTE, REST: REST, TEMPO_HI: TEMPO_HI, TEMPO_HI0: TEMPO_HI0, SELECT: SELECT}
GRAMMAR: MappingProxyType[int, MappingProxyType[int, int]] = MappingProxyType({
    state: MappingProxyType(follow) for state, follow in {
        START: {**_EVENT, DECL: DECL},  # the header (DECL NAME*)* comes first or not at all
        DECL: {**_EVENT, DECL: DECL, NAME: NAME},
        NAME: {**_EVENT, DECL: DECL, NAME: NAME},
        NOTE: {**_EVENT, DUR_EXT: DUR_EXT},  # DUR_EXT only lengthens the note right before it
        DUR_EXT: {**_EVENT, DUR_EXT: DUR_EXT},
        REST: _EVENT,
        TEMPO_HI: {TEMPO_LO: TEMPO_LO, TEMPO_LO0: TEMPO_LO},  # a TEMPO_HI always has its TEMPO_LO right after
        TEMPO_HI0: {TEMPO_LO: TEMPO_LO},
        TEMPO_LO: _EVENT,
        SELECT: {NOTE: NOTE},  # a switch is always followed by the note it is for
    }.items()})
"""state → {class of the next char: next state}; a class missing there cannot come in that state."""
# a text may end in these (not inside a tempo, not after a switch)
ACCEPTING = frozenset({START, NOTE, DUR_EXT, REST, TEMPO_LO, DECL, NAME})
_STATE_AFTER = {cls: nxt for follow in GRAMMAR.values() for cls, nxt in follow.items()}  # one per class
# GRAMMAR as a table, _NEXT[state][class] (None: refused), for the loops that read every char
_NEXT = tuple(tuple(GRAMMAR.get(state, {}).get(cls) for cls in range(len(KIND))) for state in range(START + 1))


def refusal(state: int, cls: int, ch: str) -> str:
    """Why the grammar refuses ``ch`` (of class ``cls``) in ``state``: the reason for a message."""
    if state in (TEMPO_HI, TEMPO_HI0):
        return ("tempo of 0 microseconds per quarter" if cls == TEMPO_LO0
                else f"TEMPO_HI must be followed by TEMPO_LO, got {KIND[cls]}")
    if cls == DUR_EXT:
        return f"DUR_EXT must follow a note, it follows {KIND[state] if state != START else 'nothing'}"
    if cls in (TEMPO_LO, TEMPO_LO0):
        return "TEMPO_LO without a TEMPO_HI before it"
    if state == SELECT:
        return f"a part switch (SELECT) must be followed by a note, got {KIND[cls]}"
    if cls in (DECL, NAME):
        return f"{KIND[cls].upper()} belongs to the header, before any event"
    return f"U+{ord(ch):04X} is not a midichar of this codec"


class MidiChar:
    """The midichar codec. ``MidiChar()`` uses the defaults of :class:`CodecConfig`; keyword arguments override
    them (``MidiChar(**codec.config)`` rebuilds ``codec``)."""

    def __init__(self, **overrides):
        self.settings = CodecConfig.with_overrides(**overrides)
        # plain values: the config goes into JSON manifests, cache keys and checkpoints as it is
        self.config = self.settings.as_dict()
        s = self.settings
        self.grid = int(s.grid)
        self.velocities = [int(v) for v in s.velocities]
        self.steps = [int(x) for x in s.steps]
        self.durations = [int(d) for d in s.durations]
        self.max_rest = int(s.max_rest)
        self.max_dur_ext = int(s.max_dur_ext)
        self.ticks_per_beat = int(s.ticks_per_beat)
        self.max_gap_beats = float(s.max_gap_beats)
        self.max_note_beats = float(s.max_note_beats)
        self.instruments = bool(s.instruments)
        self.max_same_program = int(s.max_same_program)
        self.max_name_bytes = int(s.max_name_bytes)
        self._vel_bounds = [(a + b) / 2 for a, b in zip(self.velocities, self.velocities[1:])]
        nv = len(self.velocities)
        self.n_notes = len(self.steps) * len(self.durations) * nv * 128
        self.rest_lo = self.n_notes
        self.ext_lo = self.rest_lo + self.max_rest
        self.tempo_hi_lo = self.ext_lo + self.max_dur_ext
        self.tempo_lo_lo = self.tempo_hi_lo + TEMPO_FIELD
        self.decl_lo = self.tempo_lo_lo + TEMPO_FIELD
        self.name_lo = self.decl_lo + SOUNDS
        self.select_lo = self.name_lo + 256
        self.n_codes = self.select_lo + SOUNDS * self.max_same_program if self.instruments else self.decl_lo
        # the layout as (first code point, class) ranges, for char_class
        self._class_starts = [BASE + i for i in (0, self.rest_lo, self.ext_lo, self.tempo_hi_lo,
                                                 self.tempo_hi_lo + 1, self.tempo_lo_lo, self.tempo_lo_lo + 1,
                                                 self.decl_lo, self.name_lo, self.select_lo, self.n_codes)]
        self._classes = (INVALID, NOTE, REST, DUR_EXT, TEMPO_HI0, TEMPO_HI, TEMPO_LO0, TEMPO_LO,
                         *((DECL, NAME, SELECT) if self.instruments else (INVALID,) * 3), INVALID)

    @classmethod
    def from_recorded(cls, config: dict | None) -> MidiChar:
        """The codec a manifest, tokenizer or checkpoint recorded. A config recorded before instruments existed
        lacks ``instruments`` and was made without them."""
        config = dict(config or {})
        config.setdefault("instruments", False)
        return cls(**config)

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

    def decl_char(self, part: Part) -> str:
        return chr(BASE + self.decl_lo + sound(part))

    def select_char(self, part: Part, ordinal: int) -> str:
        return chr(BASE + self.select_lo + ordinal * SOUNDS + sound(part))

    def split_select(self, ch: str) -> tuple[Part, int]:
        """(the part's sound as an unnamed Part, ordinal) of a SELECT char."""
        ordinal, code = divmod(ord(ch) - BASE - self.select_lo, SOUNDS)
        return Part(code % 128, code >= 128), ordinal

    def char_class(self, ch: str) -> int:
        """The grammar's class of a char: NOTE, REST, DUR_EXT, TEMPO_HI(0), TEMPO_LO(0) or INVALID."""
        return self._classes[bisect.bisect_right(self._class_starts, ord(ch))]

    def kind(self, ch: str) -> str:
        """'note', 'rest', 'dur_ext', 'tempo_hi', 'tempo_lo' or 'invalid'."""
        return KIND[self.char_class(ch)]

    def is_note(self, ch: str) -> bool:
        return 0 <= ord(ch) - BASE < self.n_notes

    def count_notes(self, text: str) -> int:
        lo, hi = chr(BASE), chr(BASE + self.n_notes)
        return sum(1 for c in text if lo <= c < hi)

    def drum_flags(self, text: str) -> list[bool]:
        """Per char: whether it is a note of a drum part (the header's first part plays until a SELECT)."""
        lo, hi = chr(BASE), chr(BASE + self.n_notes)
        decl, name, sel, end = (chr(BASE + x) for x in (self.decl_lo, self.name_lo, self.select_lo, self.n_codes))
        drum, declared, out = False, False, []
        for c in text:
            if lo <= c < hi:
                out.append(drum)
                continue
            if sel <= c < end:
                drum = (ord(c) - BASE - self.select_lo) % SOUNDS >= 128
            elif decl <= c < name and not declared:
                drum, declared = ord(c) - BASE - self.decl_lo >= 128, True
            out.append(False)
        return out

    def transpose(self, text: str, semitones: int) -> str | None:
        """The text with every note moved by ``semitones`` (drum notes stay: their pitch is a drum sound);
        None if a note would leave MIDI's 0..127."""
        if semitones == 0:
            return text
        lo, hi = chr(BASE), chr(BASE + self.n_notes)
        has_drums = self.instruments and any(self.char_class(c) in (DECL, SELECT) for c in set(text))
        drums = self.drum_flags(text) if has_drums else None
        out = []
        for i, c in enumerate(text):
            if lo <= c < hi and not (drums and drums[i]):
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
    def quantize(self, piece: Piece) -> tuple[list[tuple[int, int, int, int, int]], list[tuple[int, int]]]:
        """Notes as (position, duration, pitch, velocity_index, part) and tempos as (position, us) on the grid.
        Without instruments every note is on part 0 and drum notes are left out."""
        tpb, g = piece.ticks_per_beat, self.grid

        def q(tick: int) -> int:  # nearest grid step, halves rounding up, in exact integer arithmetic
            return (2 * tick * g + tpb) // (2 * tpb)

        parts = piece.parts or [PIANO]
        best: dict[tuple[int, int, int], tuple[int, int]] = {}
        for n in piece.notes:
            part = n.part
            if not self.instruments:
                if 0 <= part < len(parts) and parts[part].is_drum:
                    continue
                part = 0
            pos = q(n.start)
            dur = max(1, q(n.end) - pos)
            key, value = (pos, n.pitch, part), (dur, self.velocity_index(n.velocity))
            if key not in best or value > best[key]:  # the longest sounds; of equal ones, the loudest
                best[key] = value
        notes = [(pos, dur, pitch, vel, part) for (pos, pitch, part), (dur, vel) in sorted(best.items())]
        end = max((pos + dur for pos, dur, *_ in notes), default=0)
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

    def header(self, parts: list[Part]) -> str:
        """The header chars of a piece with these parts ("" for one unnamed piano part, or no instruments)."""
        if not self.instruments or list(parts) in ([], [PIANO]):
            return ""
        out = []
        for part in parts:
            name = part.name.encode("utf-8")[:self.max_name_bytes].decode("utf-8", "ignore").encode("utf-8")
            out.append(self.decl_char(part))
            out += [chr(BASE + self.name_lo + b) for b in name]
        return "".join(out)

    def fold_parts(self, parts: list[Part]) -> tuple[list[Part], dict[int, int]]:
        """(parts, {old index: new index}): beyond ``max_same_program`` parts of one sound, the later ones join
        the last one the codec can hold (their notes all stay; their track identity goes), the rest renumbered.
        An empty map when nothing folds."""
        seen: dict[int, list[int]] = {}
        for i, p in enumerate(parts):
            seen.setdefault(sound(p), []).append(i)
        extra = {i: idx[self.max_same_program - 1] for idx in seen.values() for i in idx[self.max_same_program:]}
        if not extra:
            return parts, {}
        kept = [i for i in range(len(parts)) if i not in extra]
        new = {old: k for k, old in enumerate(kept)}
        return [parts[i] for i in kept], {i: new[extra.get(i, i)] for i in range(len(parts))}

    def part_keys(self, parts: list[Part]) -> list[str]:
        """Per part, its SELECT char; :class:`CodecError` when more parts share one sound than the codec holds."""
        seen: dict[int, int] = {}
        out = []
        for part in parts:
            if not (0 <= part.program <= 127):
                raise CodecError(f"part {part.name!r}: program {part.program} is outside General MIDI's 0..127")
            k = seen.get(sound(part), 0)
            if k >= self.max_same_program:
                what = "drum parts with program" if part.is_drum else "parts play program"
                raise CodecError(f"more than {self.max_same_program} {what} {part.program} "
                                 f"(codec.max_same_program={self.max_same_program})")
            seen[sound(part)] = k + 1
            out.append(self.select_char(part, k))
        return out

    def encode(self, piece: Piece) -> str:
        """Piece → text (canonical). Raises :class:`MidiError` for an absurd silence or note length. Parts of
        one sound beyond ``max_same_program`` fold into the last one it holds (:meth:`fold_parts`)."""
        if self.instruments:
            parts, fold = self.fold_parts(list(piece.parts or [PIANO]))
            if fold:
                piece = Piece([Note(n.start, n.end, n.pitch, n.velocity, fold.get(n.part, n.part))
                               for n in piece.notes], piece.ticks_per_beat, piece.tempos, piece.time_signatures, parts)
        notes, tempos = self.quantize(piece)
        max_dur = self.max_note_beats * self.grid
        parts = list(piece.parts or [PIANO]) if self.instruments else [PIANO]
        for pos, dur, _, _, part in notes:
            if dur > max_dur:
                raise MidiError(None, f"absurd note of {dur / self.grid:.0f} beats at beat {pos / self.grid:.0f} "
                                      f"(codec.max_note_beats={self.max_note_beats:g})")
            if not 0 <= part < len(parts):
                raise MidiError(None, f"note at beat {pos / self.grid:g} names part {part}; the piece has "
                                      f"{len(parts)}")
        keys = self.part_keys(parts) if self.instruments else [""]
        out: list[str] = [self.header(parts)]
        max_gap = self.max_gap_beats * self.grid
        cursor = current = 0
        for pos, tempo, group in _by_position(notes, tempos):
            gap = pos - cursor
            if gap > max_gap:
                raise MidiError(None, f"absurd silence of {gap / self.grid:.0f} beats before beat "
                                      f"{pos / self.grid:.0f} (codec.max_gap_beats={self.max_gap_beats:g})")
            if tempo is not None:
                out += self._rest_chars(gap)
                out += self._tempo_chars(tempo)
                cursor, gap = pos, 0
            # the current part's notes first, then the other parts in order, each by rising pitch
            for _, dur, pitch, vel, part in sorted(group, key=lambda n: (n[4] != current, n[4], n[2])):
                step_i = bisect.bisect_right(self.steps, gap) - 1
                out += self._rest_chars(gap - self.steps[step_i])
                if part != current:
                    out.append(keys[part])
                    current = part
                dur_i = bisect.bisect_right(self.durations, dur) - 1
                out.append(self.note_char(step_i, dur_i, vel, pitch))
                out += self._ext_chars(dur - self.durations[dur_i])
                cursor, gap = pos, 0
        return "".join(out)

    def encode_file(self, path: str | os.PathLike, min_notes: int = 1) -> str:
        """Read, clean (see theremin.music.midi) and encode a MIDI file; :class:`MidiError` names the reason."""
        piece = read_midi(path, min_notes=min_notes, instruments=self.instruments)
        try:
            return self.encode(piece)
        except (MidiError, CodecError) as e:
            raise MidiError(path, getattr(e, "reason", str(e))) from e

    # ---- decoding ---------------------------------------------------------------------------------------
    def decode_grid(
        self, text: str, errors: str = "strict"
    ) -> tuple[list[tuple[int, int, int, int, int]], list[tuple[int, int]]]:
        """Text → notes (position, duration, pitch, velocity_index, part) and tempos (position, us) on the grid;
        :meth:`decode_parts` gives the parts too.

        Raises :class:`CodecError` (with the character position) for characters outside the alphabet, a
        DUR_EXT with no note before it, a tempo half without its partner, a SELECT not followed by a note, or a
        header char after the header. ``errors="skip"`` drops such characters instead (for text of unknown
        origin, e.g. an unconstrained model sample).
        """
        notes, tempos, _ = self.decode_parts(text, errors)
        return notes, tempos

    def decode_parts(self, text: str, errors: str = "strict"):
        """:meth:`decode_grid` plus the parts: (notes, tempos, parts)."""
        if errors == "skip":
            text = self.repair(text)
        notes: list[list[int]] = []
        tempos: list[tuple[int, int]] = []
        names: list[bytearray] = []
        parts: list[Part] = []
        index: dict[int, int] = {}  # SELECT code → part index
        cursor = hi = part = 0
        state = START
        nd, nv = len(self.durations), len(self.velocities)
        starts, classes, find = self._class_starts, self._classes, bisect.bisect_right  # char_class, inlined
        for i, ch in enumerate(text):
            code = ord(ch)
            cls = classes[find(starts, code)]
            nxt = _NEXT[state][cls]
            if nxt is None:
                raise CodecError(f"char {i}: {refusal(state, cls, ch)}")
            code -= BASE
            if cls == NOTE:
                rest, pitch = divmod(code, 128)
                rest, vel_i = divmod(rest, nv)
                step_i, dur_i = divmod(rest, nd)
                cursor += self.steps[step_i]
                notes.append([cursor, self.durations[dur_i], pitch, vel_i, part])
            elif cls == REST:
                cursor += code - self.rest_lo + 1
            elif cls == DUR_EXT:
                notes[-1][1] += code - self.ext_lo + 1
            elif nxt == TEMPO_LO:
                tempos.append((cursor, hi * TEMPO_FIELD + code - self.tempo_lo_lo))
            elif cls in (TEMPO_HI, TEMPO_HI0):  # its TEMPO_LO comes next
                hi = code - self.tempo_hi_lo
            elif cls == DECL:
                snd = code - self.decl_lo
                ordinal = sum(1 for p in parts if sound(p) == snd)
                index[ordinal * SOUNDS + snd] = len(parts)
                parts.append(Part(snd % 128, snd >= 128))
                names.append(bytearray())
            elif cls == NAME:
                names[-1].append(code - self.name_lo)
            else:  # SELECT
                if not parts:
                    parts.append(PIANO)
                    index[0] = 0
                key = code - self.select_lo
                if key not in index:  # a part the header did not declare joins the piece
                    index[key] = len(parts)
                    parts.append(Part(key % SOUNDS % 128, key % SOUNDS >= 128))
                part = index[key]
            state = nxt
        if state not in ACCEPTING:
            where = "inside a tempo (TEMPO_HI without TEMPO_LO)" if state != SELECT else "after a part switch"
            raise CodecError(f"char {len(text) - 1}: text ends {where}")
        for k, name in enumerate(names):
            if name:
                parts[k] = Part(parts[k].program, parts[k].is_drum, name.decode("utf-8", "replace"))
        return [tuple(n) for n in notes], tempos, parts or [PIANO]

    def repair(self, text: str) -> str:
        """The text without the characters the grammar refuses: foreign chars, orphan escapes, a TEMPO_HI
        without its TEMPO_LO, a tempo of 0, a part switch not followed by a note, header chars after the
        header. Notes are never dropped."""
        out: list[str] = []
        before: list[int] = []  # the state before each kept char
        state = START
        starts, classes, find = self._class_starts, self._classes, bisect.bisect_right  # char_class, inlined
        for ch in text:
            cls = classes[find(starts, ord(ch))]
            nxt = _NEXT[state][cls]
            if nxt is None and state in (TEMPO_HI, TEMPO_HI0, SELECT):
                out.pop()  # the unfinished tempo or the dangling switch goes
                state = before.pop()
                if cls in (TEMPO_LO0, DUR_EXT):  # a tempo of 0: its TEMPO_LO goes too; a DUR_EXT cannot
                    continue  # attach to the char before the dropped one
                nxt = _NEXT[state][cls]
            if nxt is not None:
                out.append(ch)
                before.append(state)
                state = nxt
        if state not in ACCEPTING:
            out.pop()
        return "".join(out)

    def decode(self, text: str, errors: str = "strict") -> Piece:
        """Text → Piece at ``ticks_per_beat`` resolution (notes sorted by time, then pitch)."""
        notes, tempos, parts = self.decode_parts(text, errors)
        k = self.ticks_per_beat // self.grid
        out = sorted(Note(pos * k, (pos + dur) * k, pitch, self.velocities[vel], part)
                     for pos, dur, pitch, vel, part in notes)
        return Piece(notes=out, ticks_per_beat=self.ticks_per_beat, tempos=[(pos * k, us) for pos, us in tempos],
                     parts=parts)

    def decode_to_file(self, text: str, path: str | os.PathLike, **write_kwargs) -> Path:
        """Decode and write a MIDI file (a track per part) atomically (``write_kwargs`` go to
        theremin.music.midi.write_midi)."""
        piece = self.decode(text)
        return write_midi(piece, path, **write_kwargs)


def sound(part: Part) -> int:
    """A part's sound: its program, + 128 on a drum part (the DECL and SELECT field)."""
    return part.program + (SOUNDS // 2 if part.is_drum else 0)


def _by_position(notes, tempos):
    """(position, tempo or None, notes there) in time order: the canonical order's groups."""
    tempo_at = dict(tempos)
    i, n = 0, len(notes)
    for pos in sorted({p for p, *_ in notes} | set(tempo_at)):
        j = i
        while j < n and notes[j][0] == pos:
            j += 1
        yield pos, tempo_at.get(pos), notes[i:j]
        i = j
