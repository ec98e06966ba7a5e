"""Sampling constraints at the token level: every sampled sequence decodes to valid MIDI.

A token is a sentencepiece piece of "spm text": midichar characters, plus the tokenizer's factor characters
(a note outside the vocabulary spelled as one char per group of its fields). The automaton is midichar's
:data:`~theremin.codec.midichar.GRAMMAR` (DUR_EXT only after a note, TEMPO_HI then TEMPO_LO), with one state per
unfinished factor group on top (a complete group reads as a NOTE); each token moves it from one state to
another or is rejected. For every state the set of allowed tokens is computed once (lazily) as a boolean
mask over the vocabulary, and only states from which a complete text can still be reached count, so
sampling can never paint itself into a corner.

Musical constraints:
- pitch range and key/scale: with absolute pitches static per token, folded into the same masks; with a
  relative tokenizer (``tokenizer.pitch=relative``) a token's pitches are intervals from the row's last pitch
  (``prev``) or from the first pitch of its latest onset (``group_first``), so each token's notes are
  precomputed as (anchor, offset) and the row's mask ANDs two lookup tables indexed by those two pitches
  (see :meth:`Constraints._relative_tables`);
- maximum polyphony depends on what is sounding, so it is checked per row on the candidate tokens that
  survive the sampling filters (temperature, top-k/p, min-p), masking violators until none is left.
Byte-fallback pieces and unk/bos are never sampled; EOS only ends a complete text.

Instruments (a codec with ``instruments=True``): a row knows its current part (:attr:`RowState.part`, the SELECT
code: the header's first DECL sets it, each SELECT switches; with no header the one piano part plays), learnt
from the prompt's tokens as they are advanced. A note of a drum part is a drum sound, not a pitch: the key,
pitch range, register window and polyphony never apply to it (with a relative tokenizer its pitch is absolute,
see :func:`theremin.codec.tokenizer.to_relative`). Each part keeps its own relative references (its ``prev``,
``group_first`` and latest onset), so a token that switches parts is decoded per row from the references of the
parts it plays (:meth:`Constraints._part_checks`). :attr:`RowState.allowed_parts` (the SELECT chars a roll may
switch to; :meth:`Constraints.allowed_parts` gives a prompt's) masks every token that would switch to another
part, and the states that stay live are computed under that mask, so the no-dead-end guarantee holds.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
import torch

from theremin.codec.midichar import (
    ACCEPTING,
    BASE,
    DECL,
    DUR_EXT,
    GRAMMAR,
    NOTE,
    REST,
    SELECT,
    SOUNDS,
    START,
    TEMPO_HI0,
)
from theremin.errors import ThereminError
from theremin.model.gpt import filter_logits
from theremin.music.midi import PIANO, Part

NOTE_NAMES = {"C": 0, "D": 2, "E": 4, "F": 5, "G": 7, "A": 9, "B": 11}
SCALES = {
    "major": (0, 2, 4, 5, 7, 9, 11), "ionian": (0, 2, 4, 5, 7, 9, 11),
    "minor": (0, 2, 3, 5, 7, 8, 10), "aeolian": (0, 2, 3, 5, 7, 8, 10), "natural_minor": (0, 2, 3, 5, 7, 8, 10),
    "harmonic_minor": (0, 2, 3, 5, 7, 8, 11), "melodic_minor": (0, 2, 3, 5, 7, 9, 11),
    "dorian": (0, 2, 3, 5, 7, 9, 10), "phrygian": (0, 1, 3, 5, 7, 8, 10), "lydian": (0, 2, 4, 6, 7, 9, 11),
    "mixolydian": (0, 2, 4, 5, 7, 9, 10), "locrian": (0, 1, 3, 5, 6, 8, 10),
    "major_pentatonic": (0, 2, 4, 7, 9), "minor_pentatonic": (0, 3, 5, 7, 10), "blues": (0, 3, 5, 6, 7, 10),
    "chromatic": tuple(range(12)),
}

# automaton states: midichar's, then FACTOR + j = inside a factor group after j + 1 of its chars; + DRUM while the
# current part is a drum part (only where it matters to the static masks: absolute pitches checked per token)
FACTOR = max(GRAMMAR) + 1
DRUM = 64
COMPLETE = ACCEPTING
NEW_PART = (-1, 60, 60)  # a part's (latest onset, prev, group_first) before its first note (tokenizer._relative)


class ConstraintError(ThereminError):
    """A constraint setting that cannot work; the message names it."""


def parse_key(name: str) -> frozenset[int]:
    """'C major', 'F# minor', 'Bb dorian', 'a harmonic minor' → the allowed pitch classes."""
    m = re.fullmatch(r"\s*([A-Ga-g])([#b♯♭]?)[\s_-]*([A-Za-z_ -]*)\s*", name or "")
    mode = (m.group(3).strip().lower().replace(" ", "_").replace("-", "_") or "major") if m else ""
    if not m or mode not in SCALES:
        raise ConstraintError(f"key {name!r} is not a key: use a tonic A-G with an optional # or b and one of "
                              f"{', '.join(sorted(SCALES))} (e.g. 'C major', 'F# minor', 'Bb dorian')")
    tonic = (NOTE_NAMES[m.group(1).upper()] + {"#": 1, "♯": 1, "b": -1, "♭": -1}.get(m.group(2), 0)) % 12
    return frozenset((tonic + i) % 12 for i in SCALES[mode])


@dataclass
class RowState:
    """What one sequence has produced so far (dynamic part of the constraints)."""

    state: int = START
    cursor: int = 0  # grid position of the last event
    ends: list[int] = field(default_factory=list)  # end positions of the pitched notes placed so far
    notes: int = 0  # distinct notes: one pitch of one part sampled twice on one onset sounds (and counts) once
    chord_pos: int = -1  # onset of the latest notes (of any part) and their part * 128 + pitch
    chord: set[int] = field(default_factory=set)
    partial: list[str] = field(default_factory=list)  # factor chars of an unfinished group
    done: bool = False
    pending: bytes = b""  # UTF-8 bytes of a char spelled in byte tokens, not complete yet
    # relative tokenizers (theremin.codec.tokenizer.to_relative): the absolute pitch of the current part's last note,
    # and of its first note on its latest onset; the next note's interval counts from one of them
    prev: int = 60
    group_first: int = 60
    # [lo, hi]: a soft pitch window (sampling.register_margin around the prompt): notes stay inside it wherever
    # some allowed token can, so a roll keeps the prompt's register (a relative tokenizer's intervals drift)
    register: tuple[int, int] | None = None
    # the current part: its SELECT code (program + 128 * drum + 256 * ordinal; 0 = the piano of a text with no
    # header), set by the header's first DECL and by each SELECT the row advances over
    part: int = 0
    onset: int = -1  # onset of the current part's latest note: a note there is a chord tone of it (relative)
    # the other parts' (latest onset, prev, group_first), kept while another part plays
    others: dict[int, tuple[int, int, int]] = field(default_factory=dict)
    # the SELECT chars this row may switch to (Constraints.allowed_parts gives a prompt's); None: any part
    allowed_parts: frozenset[str] | None = None

    @property
    def drum(self) -> bool:
        """Whether the current part is a drum part (its notes are drum sounds, not pitches)."""
        return self.part % SOUNDS >= SOUNDS // 2

    def copy(self) -> RowState:
        return RowState(self.state, self.cursor, list(self.ends), self.notes, self.chord_pos, set(self.chord),
                        list(self.partial), self.done, self.pending, self.prev, self.group_first, self.register,
                        self.part, self.onset, dict(self.others), self.allowed_parts)


class Constraints:
    """Token masks for one tokenizer (+ optional pitch range, key, max polyphony). The parts a row may switch to
    are the row's own (:attr:`RowState.allowed_parts`): one Constraints serves prompts of any instruments."""

    def __init__(self, tokenizer, pitch_range: tuple[int, int] | None = None, key: str | None = None,
                 max_polyphony: int | None = None):
        self.tok, self.codec = tokenizer, tokenizer.codec
        self.relative = bool(getattr(tokenizer, "relative", False))
        allowed = set(range(128))
        if pitch_range is not None:
            lo, hi = (int(v) for v in pitch_range)
            if not 0 <= lo <= hi <= 127:
                raise ConstraintError(f"pitch_range {list(pitch_range)} must be [lo, hi] with 0 <= lo <= hi <= 127")
            allowed &= set(range(lo, hi + 1))
        if key:
            pcs = parse_key(key)
            allowed &= {p for p in range(128) if p % 12 in pcs}
        if not allowed:
            raise ConstraintError(f"pitch_range {pitch_range} and key {key!r} leave no pitch to play")
        self.allowed_pitches = allowed
        # pitches the static masks check: a relative token's pitch is only known per row (see row_mask)
        self._static_pitches = allowed if not self.relative else frozenset(range(128))
        if max_polyphony is not None and int(max_polyphony) < 1:
            raise ConstraintError(f"max_polyphony must be >= 1, got {max_polyphony}")
        self.max_polyphony = int(max_polyphony) if max_polyphony else None
        self.factors = getattr(tokenizer, "factors", None)
        self.n_groups = len(self.factors.groups) if self.factors is not None else 0
        # the interval's anchor depends on the note's step, and the row's last pitch is updated as a note
        # completes: the pitch must come in the last factor group (the step in it or before it)
        pitch_last = self.factors is None or "pitch" in self.factors.groups[-1]
        if self.relative and len(allowed) < 128 and not pitch_last:
            raise ConstraintError(f"pitch_range and key with a relative tokenizer need a factor_layout with the "
                                  f"pitch in its last group (e.g. step+vel,dur,pitch), not {self.factors.layout!r}")
        self.V = tokenizer.vocab_size
        # a server keeps dozens of Constraints (serve's max_constraint_sets): at most ~4 MB of masks in each cache; a
        # miss costs ~30 us, so a small cache does
        self._row_masks_cap = max(64, (4 << 20) // self.V)
        self.pieces = [self._piece(i) for i in range(self.V)]
        # byte-fallback tokens: never sampled, but a prompt spells a char the vocabulary lacks (a tempo or rest
        # the corpus never had) in them; advance() reassembles the char so the prompt's state stays right
        self._bytes = {i: int(self.tok.sp.id_to_piece(i)[3:5], 16) for i in range(self.V) if self.tok.sp.is_byte(i)}
        # a drum part's notes escape the static pitch masks: the automaton then tracks whether the part is one
        self._drum_states = self.codec.instruments and len(self._static_pitches) < 128
        # tokens that switch parts (a SELECT, or a DECL: the header's first declares the current part): token →
        # (its SELECT chars, the sounds its DECL chars declare); masked per row by RowState.allowed_parts
        self._part_tokens = self._switching_tokens()
        self._masks: dict[tuple, torch.Tensor] = {}  # (state, allowed parts) → mask
        self._live_by: dict[frozenset[str] | None, set[int]] = {}  # allowed parts → live states
        self._live = self._live_states()
        self._lead_pitch, self._lead_factor_pitch = self._lead_pitches()
        # relative tokens: the pitches (range, key) and the rising chord order are only known per row
        self._rel_offsets: list | None = None  # [new_onset][anchor]: (V, notes) intervals, -1 pads (register)
        self._rel_open: list = []  # [new_onset]: (V, 2) chord notes left open by a token (_relative_notes)
        self._rel, self._rise = (self._relative_tables(len(allowed) < 128) if self.relative and pitch_last
                                 else (None, None))
        # relative tokens that switch parts: their notes, per (current part, at START), see _part_checks
        self._part_arrays_by: dict[tuple[int, bool], _PartArrays | None] = {}
        self._ok_pitch = np.zeros(128, dtype=bool)
        self._ok_pitch[sorted(allowed)] = True
        # absolute tokenizers: per (drum part, at START), (V, notes) pitches of each token's pitched notes, -1 pads
        self._pitches: dict[tuple[bool, bool], np.ndarray] = {}
        self._register_masks: dict[tuple, torch.Tensor | np.ndarray] = {}  # (window, ...) → tokens inside it
        self._row_masks: dict[tuple, torch.Tensor] = {}  # (state, parts, new onset, prev, group_first, ...) → mask

    # ---- static part ------------------------------------------------------------------------------------
    def _piece(self, i: int) -> str | None:
        sp = self.tok.sp
        if sp.is_control(i) or sp.is_unknown(i) or sp.is_byte(i):
            return None
        return sp.id_to_piece(i)

    def _factor_group(self, ch: str) -> tuple[int, int] | None:
        if self.factors is None:
            return None
        o = ord(ch)
        for g, (start, size) in enumerate(zip(self.factors.starts, self.factors.sizes)):
            if start <= o < start + size:
                return g, o - start
        return None

    def _note_step_pitch(self, ch: str, cls: int, fg, step: int) -> tuple[int, int | None] | None:
        """(onset step, pitch field) a note char or factor char gives, within a token whose last known step is
        ``step`` (a factor char that does not hold the step keeps it; one that does not hold the pitch gives
        None for it); None for any other char."""
        c = self.codec
        if fg is not None:
            s = self._factor_field(*fg, "step")
            return (step if s is None else c.steps[s]), self._factor_field(*fg, "pitch")
        if cls == NOTE:
            step_i, _, _, rel = c.split_note(ch)
            return c.steps[step_i], rel
        return None

    def _factor_field(self, g: int, v: int, name: str) -> int | None:
        """The value of note field ``name`` held by factor char ``v`` of group ``g`` (None if not there)."""
        fields = self.factors.groups[g]
        if name not in fields:
            return None
        for f in reversed(fields):
            v, val = divmod(v, self.factors.radix[f])
            if f == name:
                return val
        return None

    def _factor_pitch(self, g: int, v: int) -> int | None:
        return self._factor_field(g, v, "pitch")

    def _part_key(self, ch: str) -> int:
        """The part a SELECT char switches to, or the first part of the sound a DECL char declares: its SELECT
        code (sound + 256 * ordinal)."""
        code = ord(ch) - BASE
        return code - self.codec.select_lo if code >= self.codec.select_lo else code - self.codec.decl_lo

    def step_char(self, state: int, ch: str, check_pitch: bool = True) -> int | None:
        """The automaton: next state after ``ch``, or None when ``ch`` cannot come here. ``state`` + DRUM: the
        current part is a drum part (its notes pass the pitch checks); the DRUM bit follows SELECT chars and the
        header's first DECL."""
        drum, state = state & DRUM, state & ~DRUM
        ok_pitch = self._static_pitches if check_pitch and not drum else range(128)
        fg = self._factor_group(ch)
        if state >= FACTOR:  # inside a factor group: only its next group may follow
            want = state - FACTOR + 1
            if fg is None or fg[0] != want:
                return None
            pitch = self._factor_pitch(*fg)
            if pitch is not None and pitch not in ok_pitch:
                return None
            return (NOTE if want == self.n_groups - 1 else state + 1) | drum
        if fg is not None:  # a factor group spells a note: it opens where a NOTE char may come
            if fg[0] != 0 or NOTE not in GRAMMAR[state]:
                return None
            pitch = self._factor_pitch(*fg)
            if pitch is not None and pitch not in ok_pitch:
                return None
            return (NOTE if self.n_groups == 1 else FACTOR) | drum
        cls = self.codec.char_class(ch)
        nxt = GRAMMAR[state].get(cls)
        if nxt == NOTE and (ord(ch) - BASE) % 128 not in ok_pitch:
            return None
        if nxt is None or nxt == TEMPO_HI0:  # sampling writes no absurd sub-4096-us tempo
            return None
        if self._drum_states and (cls == SELECT or (cls == DECL and state == START)):
            drum = DRUM if self._part_key(ch) % SOUNDS >= SOUNDS // 2 else 0
        return nxt | drum

    def step_token(self, state: int, token: int) -> int | None:
        piece = self.pieces[token]
        if not piece:
            return None
        for ch in piece:
            state = self.step_char(state, ch)
            if state is None:
                return None
        return state

    def _states(self) -> list[int]:
        # TEMPO_HI0 is never entered (step_char refuses it)
        states = [*(s for s in GRAMMAR if s != TEMPO_HI0), *range(FACTOR, FACTOR + max(0, self.n_groups - 1))]
        return states + [s | DRUM for s in states] if self._drum_states else states

    def _live_states(self) -> set[int]:
        """States from which a complete text is reachable with the allowed tokens (any part allowed)."""
        # every state's next state per token (-1: refused), kept for mask(): the automaton runs once per (state,
        # token); the live states under a parts mask are found from it (_live_for)
        self._next = {s: np.array([-1 if (n := self.step_token(s, t)) is None else n for t in range(self.V)])
                      for s in self._states()}
        return self._live_for(None)

    def _live_for(self, parts: frozenset[str] | None) -> set[int]:
        """States from which a complete text is reachable with the tokens that switch only to ``parts``."""
        live = self._live_by.get(parts)
        if live is not None:
            return live
        blocked = self._blocked(parts)
        trans = {s: set(np.unique(nxt[(nxt >= 0) & ~blocked]).tolist()) for s, nxt in self._next.items()}
        live = set(COMPLETE) | ({s | DRUM for s in COMPLETE} if self._drum_states else set())
        changed = True
        while changed:
            changed = False
            for s, nxt in trans.items():
                if s not in live and nxt & live:
                    live.add(s)
                    changed = True
        if len(self._live_by) >= 64:
            self._live_by.clear()
        self._live_by[parts] = live
        return live

    def _switching_tokens(self) -> dict[int, tuple[frozenset[str], frozenset[int]]]:
        """Per token holding SELECT or DECL chars: (its SELECT chars, the sounds its DECL chars declare)."""
        out = {}
        if not self.codec.instruments:
            return out
        for t, piece in enumerate(self.pieces):
            classes = [self.codec.char_class(ch) for ch in piece or ""]
            if SELECT in classes or DECL in classes:
                out[t] = (frozenset(ch for ch, k in zip(piece, classes) if k == SELECT),
                          frozenset(self._part_key(ch) for ch, k in zip(piece, classes) if k == DECL))
        return out

    def _blocked(self, parts: frozenset[str] | None) -> np.ndarray:
        """Bool (V,): tokens that switch to a part outside ``parts`` (a SELECT of another part, a DECL of a sound
        none of them has); none when ``parts`` is None."""
        out = np.zeros(self.V, dtype=bool)
        if parts is not None:
            sounds = {self._part_key(ch) % SOUNDS for ch in parts}
            for t, (selects, decls) in self._part_tokens.items():
                out[t] = not (selects <= parts and decls <= sounds)
        return out

    def allowed_parts(self, prompt: str | Iterable[Part]) -> frozenset[str] | None:
        """The SELECT chars of a prompt's parts (its text, or its parts in order): what
        :attr:`RowState.allowed_parts` holds for a roll that keeps the prompt's instruments. None (any part) with a
        codec without instruments."""
        c = self.codec
        if not c.instruments:
            return None
        if not isinstance(prompt, str):
            return frozenset(c.part_keys(list(prompt) or [PIANO]))
        out, count = set(), {}
        for ch in prompt:
            cls = c.char_class(ch)
            if cls == SELECT:
                out.add(ch)
            elif cls == DECL:  # the k-th part of a sound has ordinal k
                snd = self._part_key(ch)
                if count.get(snd, 0) < c.max_same_program:
                    out.add(chr(BASE + c.select_lo + count.get(snd, 0) * SOUNDS + snd))
                count[snd] = count.get(snd, 0) + 1
        if not count:  # no header: the piano plays until a SELECT
            out.add(c.select_char(PIANO, 0))
        return frozenset(out)

    def _lead_pitches(self) -> tuple[np.ndarray, np.ndarray]:
        """Per token: the pitch of a note char that opens it with step 0 (else 128), and the pitch of a
        pitch-factor char that opens it (else 128); intervals with a relative tokenizer. A pitch already on the
        current onset would sound once and count once, so such tokens are masked there (a greedy model can loop
        on them otherwise). 128 indexes the "no such note" entry of _chord_mask's lookup."""
        lead, lead_factor = np.full(self.V, 128), np.full(self.V, 128)
        last = self.n_groups - 1
        for t, piece in enumerate(self.pieces):
            if not piece:
                continue
            ch = piece[0]
            if self.codec.char_class(ch) == NOTE:
                step_i, _, _, pitch = self.codec.split_note(ch)
                if self.codec.steps[step_i] == 0:
                    lead[t] = pitch
            elif (fg := self._factor_group(ch)) is not None and fg[0] == last and last > 0:
                pitch = self._factor_pitch(*fg)
                lead_factor[t] = 128 if pitch is None else pitch
        return lead, lead_factor

    def _relative_notes(self, piece: str, new_onset: bool) -> tuple[list[tuple[int, int]], list[tuple[int, int, int]],
                                                                    tuple[int, int] | None]:
        """The pitches a token's notes get, decoded back to absolute (see tokenizer._relative): per note
        (anchor, offset), its pitch being (the row's ``prev`` if anchor is 0 else its ``group_first``) + offset,
        mod 128. ``new_onset``: whether a first note of step 0 with no rest before it would start a new onset
        (the row's cursor, plus a step already in its unfinished factor group, is past its latest onset).
        Also, per note on the same onset as the note before it, (anchor, offset before, offset after): a chord
        rises (canonical order), so its pitch must be above the one before, i.e. the interval must not wrap
        past 127 (a wrapped interval decodes to a note far below the chord). Last, when the token ends inside a
        factor group whose note joins the current onset, the (anchor, offset) its pitch must rise above (else
        None): the note is committed before its pitch is known."""
        c = self.codec
        prev, first = (0, 0), (1, 0)  # (anchor, offset) of the row's prev and group_first while in the token
        out, rising, moved, step, opening, pending = [], [], False, 0, True, False
        for ch in piece:
            cls, fg = c.char_class(ch), self._factor_group(ch)
            got = self._note_step_pitch(ch, cls, fg, step)
            if got is None:
                moved |= cls == REST
                continue
            step, rel = got
            if rel is None:
                pending = True
                continue
            new = moved or step != 0 or (opening and new_onset)
            anchor = first if new else prev
            before, prev = anchor, (anchor[0], (anchor[1] + rel) % 128)
            if new:
                first = prev
            else:
                rising.append((before[0], before[1], prev[1]))
            out.append(prev)
            moved, step, opening, pending = False, 0, False, False
        joins = pending and not (moved or step != 0 or (opening and new_onset))
        return out, rising, (prev if joins else None)

    def _relative_tables(self, with_range: bool) -> tuple[list | None, list]:
        """Lookup tables [new_onset][anchor]: bool (128, V), entry [p, t] true when every note of token t anchored
        there is fine with that anchor at pitch p (None: no token has such notes), so a row's mask is
        tables[new][0][prev] & tables[new][1][group_first]: two lookups per step. Two sets from one decoding of
        the vocabulary: notes on an allowed pitch (only ``with_range``), and chord notes rising (see
        _relative_notes)."""
        ok = np.zeros(128, dtype=bool)
        ok[sorted(self.allowed_pitches)] = True
        # [offset, anchor]: anchor + offset allowed; row 128 pads tokens with fewer notes
        shifted = np.stack([np.roll(ok, -o) for o in range(128)] + [np.ones(128, dtype=bool)])
        pitch = np.arange(128)
        ranges, rises, self._rel_offsets, self._rel_open = [], [], [], []
        for new_onset in (False, True):  # tokens that switch parts are checked per row (_part_checks)
            decoded = [self._relative_notes(p, new_onset) if p and t not in self._part_tokens else ([], [], None)
                       for t, p in enumerate(self.pieces)]
            # a chord note left open by the token: [anchor of its lower neighbour + 1 (0: none), offset]
            self._rel_open.append(np.array([(0, 0) if o is None else (o[0] + 1, o[1]) for *_, o in decoded]))
            in_range, rising, offsets = [], [], []
            for anchor in (0, 1):
                offs = [[o for a, o in ns if a == anchor] for ns, _, _ in decoded]
                pairs = [[(b, e) for a, b, e in rs if a == anchor] for _, rs, _ in decoded]
                width, n_pairs = max(map(len, offs), default=0), max(map(len, pairs), default=0)
                table = None
                m = np.full((self.V, width), 128)
                for t, os_ in enumerate(offs):
                    m[t, : len(os_)] = os_
                offsets.append(np.where(m == 128, -1, m) if width else None)
                if with_range and width:
                    table = np.ones((self.V, 128), dtype=bool)
                    for j in range(width):
                        table &= shifted[m[:, j]]
                    table = torch.from_numpy(np.ascontiguousarray(table.T))
                in_range.append(table)
                table = None
                if n_pairs:  # [token, pair]: offsets before/after the interval; valid: a real pair
                    b = np.zeros((self.V, n_pairs), dtype=np.int64)
                    e = np.zeros((self.V, n_pairs), dtype=np.int64)
                    valid = np.zeros((self.V, n_pairs), dtype=bool)
                    for t, ps in enumerate(pairs):
                        for j, (ob, oe) in enumerate(ps):
                            b[t, j], e[t, j], valid[t, j] = ob, oe, True
                    table = np.ones((self.V, 128), dtype=bool)
                    for j in range(n_pairs):
                        up = (pitch[None, :] + e[:, j, None]) % 128 > (pitch[None, :] + b[:, j, None]) % 128
                        table &= up | ~valid[:, j, None]
                    table = torch.from_numpy(np.ascontiguousarray(table.T))
                rising.append(table)
            ranges.append(in_range)
            rises.append(rising)
            self._rel_offsets.append(offsets)
        return (ranges if with_range else None), rises

    def _token_pitches(self, drum: bool, at_start: bool) -> np.ndarray:
        """(V, notes): the absolute pitches each token's notes (note chars, pitch factor chars) of pitched parts
        get, -1 pads, for a row in a drum part (``drum``) or not, before any char (``at_start``: a DECL there
        declares the current part) or not."""
        out = self._pitches.get((drum, at_start))
        if out is not None:
            return out
        per = []
        for piece in self.pieces:
            ps, in_drum, declared = [], drum, not at_start
            for ch in piece or "":
                if (fg := self._factor_group(ch)) is not None:
                    if (p := self._factor_pitch(*fg)) is not None and not in_drum:
                        ps.append(p)
                    continue
                cls = self.codec.char_class(ch)
                if cls == NOTE and not in_drum:
                    ps.append((ord(ch) - BASE) % 128)
                elif cls == SELECT or (cls == DECL and not declared):
                    in_drum, declared = self._part_key(ch) % SOUNDS >= SOUNDS // 2, declared or cls == DECL
            per.append(ps)
        out = np.full((self.V, max(map(len, per), default=0)), -1)
        for t, ps in enumerate(per):
            out[t, : len(ps)] = ps
        self._pitches[(drum, at_start)] = out
        return out

    def _register_mask(self, row: RowState, new_onset: bool, window: tuple[int, int],
                       checks: _PartChecks | None = None) -> torch.Tensor | None:
        """Bool (V,): tokens whose notes of pitched parts all land in ``window`` from this row (None: a tokenizer
        whose notes' pitches are not known per token). ``checks``: the row's tokens that switch parts."""
        lo, hi = window

        def inside(pitches: np.ndarray, pad: np.ndarray) -> np.ndarray:
            return (pad | ((pitches >= lo) & (pitches <= hi))).all(axis=1)

        if not self.relative:
            key = (window, row.drum, row.state == START)
            m = self._register_masks.get(key)
            if m is None:
                if len(self._register_masks) >= 256:
                    self._register_masks.clear()
                pitches = self._token_pitches(row.drum, row.state == START)
                m = self._register_masks[key] = torch.from_numpy(inside(pitches, pitches < 0))
            return m
        if self._rel_offsets is None:
            return None
        anchors = (row.prev, row.group_first)
        key = (new_onset, *anchors, window)
        # the tokens that stay in the row's part; in a drum part they play sounds, which no window holds
        ok = np.ones(self.V, dtype=bool) if row.drum else self._register_masks.get(key)
        if ok is None:
            ok = np.ones(self.V, dtype=bool)
            for anchor, offs in zip(anchors, self._rel_offsets[new_onset]):
                if offs is not None:
                    ok &= inside((anchor + offs) % 128, offs < 0)
            # a chord note left open must still find a rising pitch inside: its lower neighbour below the top
            which, off = self._rel_open[new_onset].T
            for a, anchor in enumerate(anchors):
                ok &= ~((which == a + 1) & ((anchor + off) % 128 >= hi))
            if len(self._register_masks) >= self._row_masks_cap:
                self._register_masks.clear()
            self._register_masks[key] = ok
        if checks is not None:  # the tokens that switch parts
            bad = (checks.pitch < lo) | (checks.pitch > hi)
            ok = ok & self._token_ok(checks.arrays, bad, checks.open_valid & (checks.open_pitch >= hi)).numpy()
        return torch.from_numpy(ok)

    def _chord_mask(self, row: RowState) -> torch.Tensor | None:
        """Bool (V,): tokens that would repeat a pitch the current part already sounds from the current onset."""
        if not row.chord or row.cursor != row.chord_pos:
            return None
        if row.state < FACTOR:
            lead = self._lead_pitch
        elif row.state == FACTOR + self.n_groups - 2 and self._partial_step(row) == 0:
            lead = self._lead_factor_pitch
        else:
            return None
        mine = [k % 128 for k in row.chord if k // 128 == row.part]
        if not mine:
            return None
        # on the same onset a relative token's interval counts from the part's last pitch: look up intervals then
        pitches = [(p - row.prev) % 128 for p in mine] if self.relative and not row.drum else mine
        sounding = np.zeros(129, dtype=bool)
        sounding[pitches] = True
        return torch.from_numpy(sounding[lead])

    def _partial_step(self, row: RowState) -> int | None:
        for ch in row.partial:
            fg = self._factor_group(ch)
            step = None if fg is None else self._factor_field(*fg, "step")
            if step is not None:
                return self.codec.steps[step]
        return None

    def mask(self, state: int, parts: frozenset[str] | None = None) -> torch.Tensor:
        """Bool (V,): tokens allowed after ``state`` (grammar, pitch range, key; + DRUM: in a drum part) that
        switch only to ``parts`` (SELECT chars; None: any), EOS excluded."""
        m = self._masks.get((state, parts))
        if m is None:
            live = self._live_for(parts)
            ok = np.isin(self._next[state], list(live)) & ~self._blocked(parts)
            if not ok.any():
                raise ConstraintError("no token can continue under these constraints (pitch_range/key too "
                                      "narrow for this tokenizer's vocabulary)")
            if len(self._masks) >= self._row_masks_cap:
                self._masks.clear()
            m = self._masks[(state, parts)] = torch.from_numpy(ok)
        return m

    def _state(self, row: RowState) -> int:
        """The automaton state of a row: its grammar state, + DRUM in a drum part where that matters."""
        return row.state | DRUM if self._drum_states and row.drum else row.state

    def row_mask(self, row: RowState) -> torch.Tensor:
        """Bool (V,): tokens allowed for this row: :meth:`mask` of its state and allowed parts, and with a
        relative tokenizer the pitch range and key for the pitches its tokens would get here, and chord notes
        rising (no interval that wraps past 127) where any token can (the grammar may have committed to a chord
        note that cannot rise within the range: then the range wins). The row's register window, last, where any
        token keeps it. None of it applies to the notes of a drum part."""
        state, parts = self._state(row), row.allowed_parts
        parts = parts if parts is None else frozenset(parts)  # a set given: hashable for the caches
        if self._rel is None and self._rise is None and row.register is None:
            return self.mask(state, parts)
        new_onset = row.cursor + (self._partial_step(row) or 0) != row.onset
        base = self.mask(state, parts)
        checks = self._part_checks(row, base)  # tokens that switch parts: from every part's references
        key = (state, parts, row.drum, new_onset, row.prev, row.group_first, row.register) if self.relative else \
            (state, parts, row.drum, row.state == START, row.register)
        m = self._row_masks.get(key) if checks is None else None
        if m is not None:
            return m
        m = base
        for anchor, table in zip((row.prev, row.group_first), self._rel[new_onset] if self._rel else ()):
            if table is not None and not row.drum:
                m = m & table[anchor]
        if checks is not None and checks.range is not None:
            m = m & checks.range
        if not m.any():
            raise ConstraintError("no token can continue under these constraints (pitch_range/key too narrow "
                                  "for this tokenizer's vocabulary)")
        rising = m if checks is None else m & checks.rise
        for anchor, table in zip((row.prev, row.group_first), self._rise[new_onset] if self._rise else ()):
            if table is not None and not row.drum:
                rising = rising & table[anchor]
        if rising.any():
            m = rising
        if row.register is not None:
            m = self._in_register(row, new_onset, m, checks)
        if checks is None:
            if len(self._row_masks) >= self._row_masks_cap:
                self._row_masks.clear()
            self._row_masks[key] = m
        return m

    def _in_register(self, row: RowState, new_onset: bool, m: torch.Tensor,
                     checks: _PartChecks | None = None) -> torch.Tensor:
        """``m`` cut to the tokens that keep the row's register window; where none can (a chord note committed
        at the window's top must still rise), the window widened in steps of a tritone until some can."""
        lo, hi = row.register
        for widen in range(0, 128, 6):
            window = (max(0, lo - widen), min(127, hi + widen))
            inside = self._register_mask(row, new_onset, window, checks)
            if inside is None or window == (0, 127):
                return m
            if (m & inside).any():
                return m & inside
        return m

    # ---- tokens that switch parts (relative tokenizers) ---------------------------------------------------
    def _part_walk(self, piece: str, cur: int, at_start: bool, flag: bool) -> tuple[list[tuple], tuple | None]:
        """The notes of a token that switches parts, decoded back to absolute as tokenizer._relative does, each
        part from its own references. Per note of a pitched part: (part, anchor, offset, below), its pitch being
        that part's ``prev`` (anchor 0) or ``group_first`` (anchor 1) at the token's start + offset, mod 128;
        ``below``: for a chord note (same onset as its part's note before it), the offset it must rise above, else
        None. ``cur``: the row's part; ``at_start``: before any char (a DECL declares the current part there);
        ``flag``: whether a part's first note in the token, with no time moved before it, is on a new onset of
        that part (the row's cursor is past that part's latest onset; each part's notes depend on its own flag
        only). Also (part, anchor, offset) of the note a chord note left open by the token must rise above, else
        None (see _relative_notes)."""
        c = self.codec
        part, declared, clock = cur, not at_start, 0  # clock: how often time moved in the token
        refs: dict[int, tuple] = {}  # part → (prev, first, clock at its last note), prev and first (anchor, offset)
        notes, step, pending = [], 0, False

        def where(part: int, at: int) -> tuple:
            prev, first, last = refs.get(part, ((0, 0), (1, 0), None))
            return prev, first, (at != last if last is not None else at != 0 or flag)

        for ch in piece:
            cls, fg = c.char_class(ch), self._factor_group(ch)
            got = self._note_step_pitch(ch, cls, fg, step)
            if got is not None:
                step, rel = got
                if rel is None:
                    pending = True
                    continue
            else:
                clock += cls == REST
                if cls == SELECT or (cls == DECL and not declared):
                    part, declared = self._part_key(ch), declared or cls == DECL
                continue
            clock += step != 0
            step, pending = 0, False
            if part % SOUNDS >= SOUNDS // 2:  # a drum sound: absolute, unchecked, moves no reference
                continue
            prev, first, new = where(part, clock)
            note = ((first if new else prev)[0], ((first if new else prev)[1] + rel) % 128)
            notes.append((part, *note, None if new else prev[1]))
            refs[part] = (note, note if new else first, clock)
        if not pending or part % SOUNDS >= SOUNDS // 2:
            return notes, None
        prev, _, new = where(part, clock + (step != 0))
        return notes, (None if new else (part, *prev))

    def _part_arrays(self, cur: int, at_start: bool) -> _PartArrays | None:
        """:class:`_PartArrays` of the vocabulary's tokens that switch parts, for a row in part ``cur``."""
        if (cur, at_start) in self._part_arrays_by:
            return self._part_arrays_by[cur, at_start]
        tokens = sorted(self._part_tokens)
        walks = [[self._part_walk(self.pieces[t], cur, at_start, flag) for t in tokens] for flag in (False, True)]
        used = {n[0] for w in walks for notes, o in w for n in (*notes, *([o] if o else []))}
        keys = [cur, *sorted(used - {cur})]
        index = {k: j for j, k in enumerate(keys)}
        tok, slot, per = [], [], ([], [])
        opened = np.zeros((2, len(tokens), 4), dtype=np.int64)  # [variant, token]: valid, slot, anchor, offset
        for i in range(len(tokens)):
            for v in (0, 1):
                notes, o = walks[v][i]
                per[v].extend((a, off, below is not None, below or 0) for _, a, off, below in notes)
                if o is not None:
                    opened[v, i] = (1, index[o[0]], o[1], o[2])
            tok += [i] * len(walks[0][i][0])
            slot += [index[n[0]] for n in walks[0][i][0]]
        notes = np.array(per, dtype=np.int64).reshape(2, len(tok), 4)
        open_slot = np.maximum(opened[0, :, 1], opened[1, :, 1])  # the same part in both variants, where valid
        out = None if not tokens else _PartArrays(
            np.array(tokens), torch.tensor(tokens), index, np.array(tok, dtype=np.int64),
            np.array(slot, dtype=np.int64), notes[..., 0], notes[..., 1], notes[..., 2].astype(bool), notes[..., 3],
            open_slot, opened[..., 0].astype(bool), opened[..., 2], opened[..., 3])
        if len(self._part_arrays_by) >= 64:
            self._part_arrays_by.clear()
        self._part_arrays_by[cur, at_start] = out
        return out

    def _part_checks(self, row: RowState, base: torch.Tensor) -> _PartChecks | None:
        """The pitches the notes of the tokens that switch parts get from this row (each part's own references)
        and which tokens break the pitch range and key or the rising chord order (None: no such token is allowed
        here, or the tokenizer is absolute: its pitches are checked per token once)."""
        if self._rise is None or not self._part_tokens:
            return None
        arr = self._part_arrays(row.part, row.state == START)
        if arr is None or not base[arr.tokens_t].any():
            return None
        refs, onsets = np.full((len(arr.index), 2), 60), np.full(len(arr.index), NEW_PART[0])
        refs[0], onsets[0] = (row.prev, row.group_first), row.onset
        for k, (on, prev, first) in row.others.items():
            if (j := arr.index.get(k)) is not None and j:
                refs[j], onsets[j] = (prev, first), on
        # a part past its latest onset: the variant where its first note in the token starts a new one
        v = (onsets != row.cursor + (self._partial_step(row) or 0)).astype(np.int64)
        vn, cols = v[arr.slot], np.arange(len(arr.tok))
        ref = refs[arr.slot, arr.anchor[vn, cols]]
        pitch = (ref + arr.offset[vn, cols]) % 128
        falls = arr.rises[vn, cols] & (pitch <= (ref + arr.below[vn, cols]) % 128)
        vo, rows = v[arr.open_slot], np.arange(len(arr.tokens))
        open_pitch = (refs[arr.open_slot, arr.open_anchor[vo, rows]] + arr.open_offset[vo, rows]) % 128
        in_range = None if self._rel is None else self._token_ok(arr, ~self._ok_pitch[pitch])
        return _PartChecks(arr, pitch, in_range, self._token_ok(arr, falls), arr.open_valid[vo, rows], open_pitch)

    def _token_ok(self, arr: _PartArrays, bad: np.ndarray, bad_tokens: np.ndarray | None = None) -> torch.Tensor:
        """Bool (V,): false for the tokens of ``arr`` with a ``bad`` note (or ``bad_tokens`` true), else true."""
        worse = np.bincount(arr.tok, weights=bad, minlength=len(arr.tokens)) > 0
        ok = np.ones(self.V, dtype=bool)
        ok[arr.tokens[worse | bad_tokens if bad_tokens is not None else worse]] = False
        return torch.from_numpy(ok)

    # ---- dynamic part -----------------------------------------------------------------------------------
    def advance(self, row: RowState, token: int, check_polyphony: bool = False) -> bool:
        """Apply a token to a row state (in place). With ``check_polyphony``, return False (and leave the
        state unchanged) if a note of the token would exceed max_polyphony."""
        if not check_polyphony:
            return self._advance(row, token, False)
        probe = row.copy()
        if not self._advance(probe, token, True):
            return False
        row.__dict__.update(probe.__dict__)
        return True

    def _advance(self, w: RowState, token: int, check_polyphony: bool) -> bool:
        """:meth:`advance` in place: on False ``w`` is left half-way (a copy, or a probe)."""
        if token == self.tok.eos_id:
            w.done = True
            return True
        c = self.codec
        chars = self.pieces[token] or ""
        if token in self._bytes:
            chars, w.pending = _utf8_char(w.pending + bytes([self._bytes[token]]))
        for ch in chars:
            nxt = self.step_char(w.state, ch, check_pitch=False)  # the prompt may use any pitch
            note = None
            cls = c.char_class(ch)
            if cls == NOTE:
                note = ch
            elif cls == REST:
                w.cursor += ord(ch) - BASE - c.rest_lo + 1
            elif cls == DUR_EXT:
                if w.ends and not w.drum:  # a drum note is in no polyphony count
                    w.ends[-1] += ord(ch) - BASE - c.ext_lo + 1
            elif cls == SELECT or (cls == DECL and w.state == START):  # the header's first DECL: the first part
                self._switch(w, self._part_key(ch))
            elif (fg := self._factor_group(ch)) is not None:
                w.partial.append(ch)
                step = self._factor_field(*fg, "step")
                if (check_polyphony and step is not None and not w.drum
                        and not self._room(w.ends, w.cursor + c.steps[step])):
                    return False  # the onset is known once the step's group is: check it before the note ends
                if len(w.partial) == self.n_groups:
                    note = self.factors.unfactor(self.factors.group_re.fullmatch("".join(w.partial)))
                    w.partial = []
            if note is not None and not self._place(w, note, check_polyphony):
                return False
            if nxt is not None:
                w.state = nxt & ~DRUM
        # a switch is followed by its part's note, at most the longest step later: there must be room for it then
        return not (check_polyphony and w.state == SELECT and not w.drum
                    and not self._room(w.ends, w.cursor + c.steps[-1]))

    def _place(self, w: RowState, note: str, check_polyphony: bool) -> bool:
        """A complete note char on the row: time, sounding notes, the part's references, the chord."""
        c = self.codec
        step_i, dur_i, _, pitch = c.split_note(note)
        w.cursor += c.steps[step_i]
        cursor = w.cursor
        if not w.drum:  # a drum note: a sound, in no polyphony count, its pitch absolute, no reference moves
            if check_polyphony and not self._room(w.ends, cursor):
                return False
            w.ends = [e for e in w.ends if e > cursor]  # only sounding notes matter from here on
            w.ends.append(cursor + c.durations[dur_i])
            new = w.onset != cursor
            if self.relative:  # the interval → the absolute pitch (tokenizer._relative's references)
                pitch = (pitch + (w.group_first if new else w.prev)) % 128
                w.prev, w.group_first = pitch, pitch if new else w.group_first
            w.onset = cursor
        if w.chord_pos != cursor:
            w.chord_pos, w.chord = cursor, set()
        w.notes += w.part * 128 + pitch not in w.chord
        w.chord.add(w.part * 128 + pitch)
        return True

    @staticmethod
    def _switch(w: RowState, part: int) -> None:
        """The row's current part becomes ``part``, with its own references (tokenizer._relative's)."""
        if part != w.part:
            w.others[w.part] = (w.onset, w.prev, w.group_first)
            w.onset, w.prev, w.group_first = w.others.pop(part, NEW_PART)
            w.part = part

    def _room(self, ends: list[int], onset: int) -> bool:
        """Can one more note start at ``onset`` without exceeding max_polyphony?"""
        return self.max_polyphony is None or sum(1 for e in ends if e > onset) < self.max_polyphony

    def complete(self, row: RowState) -> bool:
        return row.state in COMPLETE and not row.pending

    def _switch_first(self, row: RowState, m: torch.Tensor) -> torch.Tensor:
        """``m`` without the tokens that would play a note of the row's current part when that part is not one
        it may play (``sampling.instruments`` without it, ``add_part``): such a row switches before its next
        note. Where no token can (the grammar committed to a note), ``m`` as it is."""
        if row.allowed_parts is None or not self.codec.instruments:
            return m
        if chr(BASE + self.codec.select_lo + row.part) in row.allowed_parts:
            return m
        if not hasattr(self, "_plays_first"):
            self._plays_first = torch.tensor([self._plays_before_switch(p or "") for p in self.pieces])
        cut = m & ~self._plays_first.to(m.device)
        return cut if cut.any() else m

    def _plays_before_switch(self, piece: str) -> bool:
        """Whether a token's text holds a note (or a factor char, or a DUR_EXT) before any SELECT."""
        for ch in piece:
            cls = self.codec.char_class(ch)
            if cls == SELECT:
                return False
            if cls in (NOTE, DUR_EXT) or self._factor_group(ch) is not None:
                return True
        return False

    def apply(self, row: RowState, logits: torch.Tensor, want_end: bool, sampling: dict) -> torch.Tensor:
        """Mask one row's logits (V,) for its state. ``want_end``: the length target is reached, so a
        complete row must end (EOS only)."""
        neg = torch.full_like(logits, float("-inf"))  # on the logits' device, as everything made here
        if row.done or (want_end and self.complete(row)):  # finished rows pad with EOS; a row at its length ends
            only_eos = neg.clone()
            only_eos[self.tok.eos_id] = 0.0
            return only_eos
        allowed = self._switch_first(row, self.row_mask(row))
        repeats = self._chord_mask(row)
        if repeats is not None and (allowed & ~repeats).any():
            allowed = allowed & ~repeats
        out = torch.where(allowed.to(logits.device), logits, neg)
        if self.max_polyphony is None:
            return out
        # polyphony: check the tokens that could be sampled, mask violators, until the candidates are clean
        checked: set[int] = set()
        while True:
            cand = torch.isfinite(filter_logits(out[None], **sampling)[0]).nonzero().flatten().tolist()
            bad = []
            for t in cand:
                if t in checked:
                    continue
                checked.add(t)
                if not self._advance(row.copy(), t, check_polyphony=True):
                    bad.append(t)
            if not bad:
                return out
            out[bad] = float("-inf")
            if torch.isneginf(out).all():
                raise ConstraintError(f"max_polyphony={self.max_polyphony} leaves no token to sample here")


_UTF8_LEADS = ((0x80, 0x00), (0xE0, 0xC0), (0xF0, 0xE0), (0xF8, 0xF0))  # (mask, value) of 1..4-byte chars


def _utf8_char(pending: bytes) -> tuple[str, bytes]:
    """(the char, b"") once ``pending`` holds a whole UTF-8 char, else ("", pending) while it is incomplete;
    bytes that cannot start or continue a char are dropped."""
    lead = pending[0]
    size = next((n for n, (mask, value) in enumerate(_UTF8_LEADS, 1) if lead & mask == value), 0)
    if size == 0:
        return "", b""
    if len(pending) < size:
        return "", pending
    try:
        return pending[:size].decode("utf-8"), b""
    except UnicodeDecodeError:
        return "", b""


class _PartArrays(NamedTuple):
    """The notes of pitched parts in the vocabulary's tokens that switch parts, for a row in one part (see
    Constraints._part_walk), flat over notes (N) and per variant v (0/1: the note's part not past / past its
    latest onset at the token's start)."""

    tokens: np.ndarray  # (m,) the tokens
    tokens_t: torch.Tensor  # the same, to index a mask
    index: dict[int, int]  # part (SELECT code) → slot; slot 0 is the row's part
    tok: np.ndarray  # (N,) the note's token, an index into tokens
    slot: np.ndarray  # (N,) the note's part
    anchor: np.ndarray  # (2, N) 0: its part's prev, 1: its group_first
    offset: np.ndarray  # (2, N) pitch = anchor's pitch + offset, mod 128
    rises: np.ndarray  # (2, N) a chord note: it must rise above anchor + below
    below: np.ndarray  # (2, N)
    open_slot: np.ndarray  # (m,) a chord note left open by the token (see _relative_notes): its part,
    open_valid: np.ndarray  # (2, m) whether there is one,
    open_anchor: np.ndarray  # (2, m) and the anchor + offset of the note it must rise above
    open_offset: np.ndarray  # (2, m)


class _PartChecks(NamedTuple):
    """What _part_checks found for one row: per note of ``arrays`` its pitch, and per token masks (V,)."""

    arrays: _PartArrays
    pitch: np.ndarray  # (N,)
    range: torch.Tensor | None  # in the pitch range and key (None: no such constraint)
    rise: torch.Tensor  # chord notes rising
    open_valid: np.ndarray  # (m,)
    open_pitch: np.ndarray  # (m,)
