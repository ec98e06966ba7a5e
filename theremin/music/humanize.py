"""Humanized copies of score-like pieces: a base corpus written from scores (one velocity, notes exactly on the
grid and as long as written) teaches a model nothing about how played or sequenced MIDI looks. A share of the
corpus's augmented copies is therefore rendered the way such files come (``data.humanize``, train split only):

- ``performed``: a piano performance recorded at MIDI's nominal 120 bpm, the way Maestro-style files are: the
  piece played at its own tempo with rubato (a slow random walk of the beat length), onsets scattered by a few
  milliseconds (the top voice of a chord slightly ahead), notes released early or held by the player's
  articulation, velocities following a phrase-level dynamic curve with accents. On the codec's grid this gives
  onset steps and durations of every size, as performances have;
- ``sequenced``: a part programmed in a sequencer, as multitrack pop files are: onsets stay on the grid and the
  tempo stays, notes are gated shorter (staccato to legato per piece), velocities carry beat accents.

:func:`humanize` is a pure function of the piece and a :class:`random.Random`, so a corpus built twice is the
same (the corpus seeds it from each file's hash). Every setting is :class:`HumanizeConfig`.
"""

from __future__ import annotations

import bisect
import math
import random
from dataclasses import dataclass, fields

from theremin.config import known_settings
from theremin.errors import ThereminError
from theremin.music.midi import DEFAULT_TEMPO_US, Note, Piece

STYLES = ("performed", "sequenced")
NOMINAL_TPB = 480  # a performance's own resolution (ticks per beat at 120 bpm: 960 per second)
WALK_BEATS = 64  # random walks (rubato, dynamics) step beat by beat at most this far across a rest


class HumanizeError(ThereminError):
    """A humanize setting that cannot work; the message names it."""


@dataclass(frozen=True)
class HumanizeConfig:
    """How humanized copies are made (``data.humanize`` in conf/data/base.yaml overrides these)."""

    share: float = 0.4  # of the train split's augmented copies (transpositions), this share is humanized
    styles: tuple[str, ...] = STYLES  # one is drawn per copy
    # performed
    tempo_range: tuple[float, float] = (0.8, 1.6)  # the played tempo over the score's (log-uniform)
    rubato: float = 0.04  # sd of the per-beat step of the log beat-length walk
    onset_jitter_s: float = 0.015  # sd of each onset, seconds
    lead_s: float = 0.008  # the top note of a chord sounds this much ahead
    articulation: tuple[float, float] = (0.2, 0.9)  # sounding share of the written length, drawn per piece
    length_jitter: float = 0.25  # sd of the log of each note's length
    level: tuple[int, int] = (40, 90)  # a performed piece's mean velocity, drawn per piece
    # sequenced
    gate: tuple[float, float] = (0.3, 1.0)  # sounding share of the written length, drawn per piece
    seq_level: tuple[int, int] = (55, 110)
    # velocity shape, both styles
    phrase_sd: float = 4.0  # per-beat step of the dynamic curve (mean-reverting)
    accent: int = 8  # on the beat
    top_accent: int = 6  # the highest note of a chord (the tune)
    velocity_jitter: float = 8.0  # per-note sd

    def __post_init__(self):
        if not 0.0 <= self.share <= 1.0:
            raise HumanizeError(f"data.humanize.share must be in [0, 1], got {self.share}")
        styles = tuple(self.styles)
        if not styles or any(s not in STYLES for s in styles):
            raise HumanizeError(f"data.humanize.styles must name some of {list(STYLES)}, got {list(styles)}")
        object.__setattr__(self, "styles", styles)
        for name in ("tempo_range", "articulation", "level", "gate", "seq_level"):
            lo, hi = getattr(self, name)
            if not 0 < lo <= hi:
                raise HumanizeError(f"data.humanize.{name} must be [lo, hi] with 0 < lo <= hi, got {[lo, hi]}")
            object.__setattr__(self, name, (lo, hi))
        if self.level[1] > 127 or self.seq_level[1] > 127:
            raise HumanizeError("data.humanize.level / seq_level are MIDI velocities: at most 127")

    @classmethod
    def from_config(cls, cfg) -> HumanizeConfig | None:
        """From ``data.humanize`` (a mapping, or null for none); an unknown key is refused by name."""

        if cfg is None or isinstance(cfg, HumanizeConfig):
            return cfg
        d = known_settings(cls, cfg, "data.humanize", "a humanize setting", HumanizeError)
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})

    def as_dict(self) -> dict:
        return {f.name: list(v) if isinstance(v := getattr(self, f.name), tuple) else v for f in fields(self)}


def _chord_roles(notes: list[Note]) -> list[int]:
    """Per note: +1 the highest of its onset's notes, -1 the lowest (of 2+), 0 otherwise (notes sorted by
    start, then pitch)."""
    roles = [0] * len(notes)
    i = 0
    while i < len(notes):
        j = i
        while j + 1 < len(notes) and notes[j + 1].start == notes[i].start:
            j += 1
        if j > i:
            roles[i], roles[j] = -1, 1
        i = j + 1
    return roles


def _velocities(notes: list[Note], tpb: int, rng: random.Random, level: float, cfg: HumanizeConfig) -> list[int]:
    roles = _chord_roles(notes)
    out, curve, beat = [], 0.0, notes[0].start // tpb - 1
    for n, role in zip(notes, roles):
        b = n.start // tpb
        beat = max(beat, b - WALK_BEATS)  # across a long rest the curve has forgotten where it was
        while beat < b:  # the dynamic curve moves once per beat
            beat += 1
            curve = 0.9 * curve + rng.gauss(0.0, cfg.phrase_sd)
        v = level + curve + rng.gauss(0.0, cfg.velocity_jitter)
        v += cfg.accent if n.start % tpb == 0 else 0
        v += cfg.top_accent if role == 1 else 0
        out.append(max(1, min(127, round(v))))
    return out


def _beat_times(piece: Piece, rng: random.Random, speed: float, rubato: float):
    """``at(tick)``: the played time in seconds of each tick, asked in rising order. Each beat lasts the score's
    beat at its tempo, divided by ``speed``, times a rubato walk (AR(1) in log beat length). Beats are walked
    one by one only near notes: across a gap of more than :data:`WALK_BEATS` beats the walk has forgotten its
    start, so the gap is played at the mean tempo (a file's long rests cost no time or memory)."""
    tpb, score_seconds, tempo_ticks = piece.ticks_per_beat, piece.clock(), [at for at, _ in piece.tempos]

    def beat_seconds(b: int) -> float:  # a beat at the tempo its start is in, played at ``speed``
        i = bisect.bisect_right(tempo_ticks, b * tpb) - 1
        return (piece.tempos[i][1] if i >= 0 else DEFAULT_TEMPO_US) / 1e6 / speed

    walk = rng.gauss(0.0, rubato)
    beat, start, length = 0, 0.0, beat_seconds(0) * math.exp(walk)

    def at(tick: int) -> float:
        nonlocal beat, start, length, walk
        b, r = divmod(tick, tpb)
        if b - beat > WALK_BEATS:  # the gap up to WALK_BEATS beats before b, at the score's tempo
            skip_to = b - WALK_BEATS
            start += length + (score_seconds(skip_to * tpb) - score_seconds((beat + 1) * tpb)) / speed
            beat, walk, length = skip_to, 0.0, beat_seconds(skip_to)
        while beat < b:
            start += length
            beat += 1
            walk = 0.85 * walk + rng.gauss(0.0, rubato)
            length = beat_seconds(beat) * math.exp(walk)
        return start + length * r / tpb

    return at


def _performed(piece: Piece, rng: random.Random, cfg: HumanizeConfig) -> Piece:
    tpb, notes = piece.ticks_per_beat, piece.notes
    lo, hi = cfg.tempo_range
    speed = math.exp(rng.uniform(math.log(lo), math.log(hi)))
    at = _beat_times(piece, rng, speed, cfg.rubato)
    played = {t: at(t) for t in sorted({n.start for n in notes} | {n.end for n in notes})}
    at((max(played) // tpb + 1) * tpb)  # one beat past the end: the random stream corpora were built with

    roles = _chord_roles(notes)
    a_lo, a_hi = cfg.articulation
    articulation = rng.uniform(a_lo, a_hi)
    vels = _velocities(notes, tpb, rng, rng.uniform(*cfg.level), cfg)
    per_s = 2 * NOMINAL_TPB  # ticks per second at 120 bpm
    out = []
    for n, role, v in zip(notes, roles, vels):
        start = played[n.start] + rng.gauss(0.0, cfg.onset_jitter_s) - (cfg.lead_s if role == 1 else 0.0)
        length = (played[n.end] - played[n.start]) * articulation * math.exp(rng.gauss(0.0, cfg.length_jitter))
        s = max(0, round(start * per_s))
        out.append(Note(s, s + max(1, round(max(0.025, length) * per_s)), n.pitch, v))
    out.sort(key=lambda n: (n.start, n.pitch))
    return Piece(notes=out, ticks_per_beat=NOMINAL_TPB, tempos=[(0, DEFAULT_TEMPO_US)])


def _sequenced(piece: Piece, rng: random.Random, cfg: HumanizeConfig) -> Piece:
    gate = rng.uniform(*cfg.gate)
    vels = _velocities(piece.notes, piece.ticks_per_beat, rng, rng.uniform(*cfg.seq_level), cfg)
    out = [Note(n.start, n.start + max(1, round((n.end - n.start) * gate)), n.pitch, v)
           for n, v in zip(piece.notes, vels)]
    return Piece(notes=out, ticks_per_beat=piece.ticks_per_beat, tempos=list(piece.tempos),
                 time_signatures=list(piece.time_signatures))


def humanize(piece: Piece, rng: random.Random, cfg: HumanizeConfig | None = None, style: str | None = None) -> Piece:
    """The piece played (``performed``) or programmed (``sequenced``); ``style`` None draws one of
    ``cfg.styles``. Pitches and note count stay; timing and velocities change."""
    cfg = cfg or HumanizeConfig()
    style = style or rng.choice(cfg.styles)
    if style not in STYLES:
        raise HumanizeError(f"humanize style must be one of {list(STYLES)}, got {style!r}")
    if not piece.notes:
        return piece
    return _performed(piece, rng, cfg) if style == "performed" else _sequenced(piece, rng, cfg)
