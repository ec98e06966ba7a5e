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
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np
import torch

from theremin.codec.midichar import ACCEPTING, BASE, DUR_EXT, GRAMMAR, NOTE, REST, START, TEMPO_HI0
from theremin.errors import ThereminError
from theremin.model.gpt import filter_logits

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

# automaton states: midichar's, then FACTOR + j = inside a factor group after j + 1 of its chars
FACTOR = max(GRAMMAR) + 1
COMPLETE = ACCEPTING


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
    ends: list[int] = field(default_factory=list)  # end positions of the notes placed so far
    notes: int = 0  # distinct notes: one pitch sampled twice on one onset sounds (and counts) once
    chord_pos: int = -1  # onset of the latest notes and their pitches
    chord: set[int] = field(default_factory=set)
    partial: list[str] = field(default_factory=list)  # factor chars of an unfinished group
    done: bool = False
    pending: bytes = b""  # UTF-8 bytes of a char spelled in byte tokens, not complete yet
    # relative tokenizers (theremin.codec.tokenizer.to_relative): the absolute pitch of the last note, and of the first
    # note on the latest onset; the next note's interval counts from one of them
    prev: int = 60
    group_first: int = 60
    # [lo, hi]: a soft pitch window (sampling.register_margin around the prompt): notes stay inside it wherever
    # some allowed token can, so a roll keeps the prompt's register (a relative tokenizer's intervals drift)
    register: tuple[int, int] | None = None

    def copy(self) -> RowState:
        return RowState(self.state, self.cursor, list(self.ends), self.notes, self.chord_pos, set(self.chord),
                        list(self.partial), self.done, self.pending, self.prev, self.group_first, self.register)


class Constraints:
    """Token masks for one tokenizer (+ optional pitch range, key, max polyphony)."""

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
        self.pieces = [self._piece(i) for i in range(self.V)]
        # byte-fallback tokens: never sampled, but a prompt spells a char the vocabulary lacks (a tempo or rest
        # the corpus never had) in them; advance() reassembles the char so the prompt's state stays right
        self._bytes = {i: int(self.tok.sp.id_to_piece(i)[3:5], 16) for i in range(self.V) if self.tok.sp.is_byte(i)}
        self._masks: dict[int, torch.Tensor] = {}
        self._live = self._live_states()
        self._lead_pitch, self._lead_factor_pitch = self._lead_pitches()
        # relative tokens: the pitches (range, key) and the rising chord order are only known per row
        self._rel_offsets: list | None = None  # [new_onset][anchor]: (V, notes) intervals, -1 pads (register)
        self._rel_open: list = []  # [new_onset]: (V, 2) chord notes left open by a token (_relative_notes)
        self._rel, self._rise = (self._relative_tables(len(allowed) < 128) if self.relative and pitch_last
                                 else (None, None))
        # absolute tokenizers: (V, notes) pitches of each token's notes, -1 pads (register)
        self._pitches = None if self.relative else self._token_pitches()
        self._register_masks: dict[tuple[int, int], torch.Tensor] = {}
        self._row_masks: dict[tuple, torch.Tensor] = {}  # (state, new onset, prev, group_first, register) → mask
        # a server keeps dozens of Constraints (serve's max_constraint_sets): at most ~4 MB of masks each; a miss
        # costs ~30 us, so a small cache does
        self._row_masks_cap = max(64, (4 << 20) // self.V)

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

    def step_char(self, state: int, ch: str, check_pitch: bool = True) -> int | None:
        """The automaton: next state after ``ch``, or None when ``ch`` cannot come here."""
        ok_pitch = self._static_pitches if check_pitch else range(128)
        fg = self._factor_group(ch)
        if state >= FACTOR:  # inside a factor group: only its next group may follow
            want = state - FACTOR + 1
            if fg is None or fg[0] != want:
                return None
            pitch = self._factor_pitch(*fg)
            if pitch is not None and pitch not in ok_pitch:
                return None
            return NOTE if want == self.n_groups - 1 else state + 1
        if fg is not None:  # a factor group spells a note: it opens where a NOTE char may come
            if fg[0] != 0 or NOTE not in GRAMMAR[state]:
                return None
            pitch = self._factor_pitch(*fg)
            if pitch is not None and pitch not in ok_pitch:
                return None
            return NOTE if self.n_groups == 1 else FACTOR
        nxt = GRAMMAR[state].get(self.codec.char_class(ch))
        if nxt == NOTE and (ord(ch) - BASE) % 128 not in ok_pitch:
            return None
        if nxt == TEMPO_HI0:  # sampling writes no absurd sub-4096-us tempo
            return None
        return nxt

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
        return [*(s for s in GRAMMAR if s != TEMPO_HI0), *range(FACTOR, FACTOR + max(0, self.n_groups - 1))]

    def _live_states(self) -> set[int]:
        """States from which a complete text is reachable with the allowed tokens."""
        # every state's next state per token, kept for mask(): the automaton runs once per (state, token)
        self._next = {s: [self.step_token(s, t) for t in range(self.V)] for s in self._states()}
        trans = {s: set(nxt) - {None} for s, nxt in self._next.items()}
        live = set(COMPLETE)
        changed = True
        while changed:
            changed = False
            for s, nxt in trans.items():
                if s not in live and nxt & live:
                    live.add(s)
                    changed = True
        return live

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
            if fg is not None:
                s = self._factor_field(*fg, "step")
                step = step if s is None else c.steps[s]
                rel = self._factor_field(*fg, "pitch")
                if rel is None:
                    pending = True
                    continue
            elif cls == NOTE:
                step_i, _, _, rel = c.split_note(ch)
                step = c.steps[step_i]
            else:
                moved |= cls == REST
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
        for new_onset in (False, True):
            decoded = [self._relative_notes(p, new_onset) if p else ([], [], None) for p in self.pieces]
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

    def _token_pitches(self) -> np.ndarray:
        """(V, notes): the absolute pitches each token's notes (note chars, pitch factor chars) get, -1 pads."""
        per = []
        for piece in self.pieces:
            ps = []
            for ch in piece or "":
                if (fg := self._factor_group(ch)) is not None:
                    if (p := self._factor_pitch(*fg)) is not None:
                        ps.append(p)
                elif self.codec.char_class(ch) == NOTE:
                    ps.append((ord(ch) - BASE) % 128)
            per.append(ps)
        out = np.full((self.V, max(map(len, per), default=0)), -1)
        for t, ps in enumerate(per):
            out[t, : len(ps)] = ps
        return out

    def _register_mask(self, row: RowState, new_onset: bool, window: tuple[int, int]) -> torch.Tensor | None:
        """Bool (V,): tokens whose notes all land in ``window`` from this row (None: a tokenizer whose notes'
        pitches are not known per token)."""
        lo, hi = window

        def inside(pitches: np.ndarray, pad: np.ndarray) -> np.ndarray:
            return (pad | ((pitches >= lo) & (pitches <= hi))).all(axis=1)

        if not self.relative:
            m = self._register_masks.get(window)
            if m is None:
                if len(self._register_masks) >= 256:
                    self._register_masks.clear()
                m = self._register_masks[window] = torch.from_numpy(
                    inside(self._pitches, self._pitches < 0))
            return m
        if self._rel_offsets is None:
            return None
        ok = np.ones(self.V, dtype=bool)
        anchors = (row.prev, row.group_first)
        for anchor, offs in zip(anchors, self._rel_offsets[new_onset]):
            if offs is not None:
                ok &= inside((anchor + offs) % 128, offs < 0)
        # a chord note left open must still find a rising pitch inside: its lower neighbour below the top
        which, off = self._rel_open[new_onset].T
        for a, anchor in enumerate(anchors):
            ok &= ~((which == a + 1) & ((anchor + off) % 128 >= hi))
        return torch.from_numpy(ok)

    def _chord_mask(self, row: RowState) -> torch.Tensor | None:
        """Bool (V,): tokens that would repeat a pitch already sounding from the current onset."""
        if not row.chord or row.cursor != row.chord_pos:
            return None
        if row.state < FACTOR:
            lead = self._lead_pitch
        elif row.state == FACTOR + self.n_groups - 2 and self._partial_step(row) == 0:
            lead = self._lead_factor_pitch
        else:
            return None
        # on the same onset a relative token's interval counts from the last pitch: look up intervals then
        pitches = [(p - row.prev) % 128 for p in row.chord] if self.relative else list(row.chord)
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

    def mask(self, state: int) -> torch.Tensor:
        """Bool (V,): tokens allowed after ``state`` (grammar, pitch range, key), EOS excluded."""
        m = self._masks.get(state)
        if m is None:
            ok = np.array([nxt is not None and nxt in self._live for nxt in self._next[state]], dtype=bool)
            if not ok.any():
                raise ConstraintError("no token can continue under these constraints (pitch_range/key too "
                                      "narrow for this tokenizer's vocabulary)")
            m = self._masks[state] = torch.from_numpy(ok)
        return m

    def row_mask(self, row: RowState) -> torch.Tensor:
        """Bool (V,): tokens allowed for this row: :meth:`mask` of its state, and with a relative tokenizer
        the pitch range and key for the pitches its tokens would get here, and chord notes rising (no interval
        that wraps past 127) where any token can (the grammar may have committed to a chord note that cannot rise
        within the range: then the range wins). The row's register window, last, where any token keeps it."""
        if self._rel is None and self._rise is None and row.register is None:
            return self.mask(row.state)
        new_onset = row.cursor + (self._partial_step(row) or 0) != row.chord_pos
        key = (row.state, new_onset, row.prev, row.group_first, row.register) if self.relative else \
            (row.state, row.register)
        m = self._row_masks.get(key)
        if m is not None:
            return m
        m = self.mask(row.state)
        for anchor, table in zip((row.prev, row.group_first), self._rel[new_onset] if self._rel else ()):
            if table is not None:
                m = m & table[anchor]
        if not m.any():
            raise ConstraintError("no token can continue under these constraints (pitch_range/key too narrow "
                                  "for this tokenizer's vocabulary)")
        rising = m
        for anchor, table in zip((row.prev, row.group_first), self._rise[new_onset] if self._rise else ()):
            if table is not None:
                rising = rising & table[anchor]
        if rising.any():
            m = rising
        if row.register is not None:
            m = self._in_register(row, new_onset, m)
        if len(self._row_masks) >= self._row_masks_cap:
            self._row_masks.clear()
        self._row_masks[key] = m
        return m

    def _in_register(self, row: RowState, new_onset: bool, m: torch.Tensor) -> torch.Tensor:
        """``m`` cut to the tokens that keep the row's register window; where none can (a chord note committed
        at the window's top must still rise), the window widened in steps of a tritone until some can."""
        lo, hi = row.register
        for widen in range(0, 128, 6):
            window = (max(0, lo - widen), min(127, hi + widen))
            inside = self._register_mask(row, new_onset, window)
            if inside is None or window == (0, 127):
                return m
            if (m & inside).any():
                return m & inside
        return m

    # ---- dynamic part -----------------------------------------------------------------------------------
    def advance(self, row: RowState, token: int, check_polyphony: bool = False) -> bool:
        """Apply a token to a row state (in place). With ``check_polyphony``, return False (and leave the
        state unchanged) if a note of the token would exceed max_polyphony."""
        c = self.codec
        if token == self.tok.eos_id:
            row.done = True
            return True
        state, cursor, ends, notes, partial = row.state, row.cursor, list(row.ends), row.notes, list(row.partial)
        chord_pos, chord, prev, group_first = row.chord_pos, set(row.chord), row.prev, row.group_first
        chars, pending = self.pieces[token] or "", row.pending
        if token in self._bytes:
            chars, pending = _utf8_char(pending + bytes([self._bytes[token]]))
        for ch in chars:
            nxt = self.step_char(state, ch, check_pitch=False)  # the prompt may use any pitch
            note = None
            cls = c.char_class(ch)
            if cls == NOTE:
                note = ch
            elif cls == REST:
                cursor += ord(ch) - BASE - c.rest_lo + 1
            elif cls == DUR_EXT and ends:
                ends[-1] += ord(ch) - BASE - c.ext_lo + 1
            elif (fg := self._factor_group(ch)) is not None:
                partial.append(ch)
                step = self._factor_field(*fg, "step")
                if check_polyphony and step is not None and not self._room(ends, cursor + c.steps[step]):
                    return False  # the onset is known once the step's group is: check it before the note ends
                if len(partial) == self.n_groups:
                    note = self.factors.unfactor(self.factors.group_re.fullmatch("".join(partial)))
                    partial = []
            if note is not None:
                step_i, dur_i, _, pitch = c.split_note(note)
                cursor += c.steps[step_i]
                if check_polyphony and not self._room(ends, cursor):
                    return False
                ends = [e for e in ends if e > cursor]  # only sounding notes matter from here on
                ends.append(cursor + c.durations[dur_i])
                new = chord_pos != cursor
                if self.relative:  # the interval → the absolute pitch (tokenizer._relative's references)
                    pitch = (pitch + (group_first if new else prev)) % 128
                    prev, group_first = pitch, pitch if new else group_first
                if new:
                    chord_pos, chord = cursor, set()
                notes += pitch not in chord
                chord.add(pitch)
            state = nxt if nxt is not None else state
        row.state, row.cursor, row.ends, row.notes, row.partial = state, cursor, ends, notes, partial
        row.chord_pos, row.chord, row.pending = chord_pos, chord, pending
        row.prev, row.group_first = prev, group_first
        return True

    def _room(self, ends: list[int], onset: int) -> bool:
        """Can one more note start at ``onset`` without exceeding max_polyphony?"""
        return self.max_polyphony is None or sum(1 for e in ends if e > onset) < self.max_polyphony

    def complete(self, row: RowState) -> bool:
        return row.state in COMPLETE and not row.pending

    def apply(self, row: RowState, logits: torch.Tensor, want_end: bool, sampling: dict) -> torch.Tensor:
        """Mask one row's logits (V,) for its state. ``want_end``: the length target is reached, so a
        complete row must end (EOS only)."""
        neg = torch.full_like(logits, float("-inf"))  # on the logits' device, as everything made here
        if row.done or (want_end and self.complete(row)):  # finished rows pad with EOS; a row at its length ends
            only_eos = neg.clone()
            only_eos[self.tok.eos_id] = 0.0
            return only_eos
        allowed = self.row_mask(row)
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
                probe = row.copy()
                if not self.advance(probe, t, check_polyphony=True):
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
