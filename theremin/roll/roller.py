"""Rolling ideas: a checkpoint + a prompt MIDI (or none) → N variations as MIDI, WAV and piano roll PNG.

    from theremin import Roller, SamplingSettings
    roller = Roller.load("outputs/train/runs/default/checkpoints/last.ckpt")
    result = roller.roll("prompt.mid", SamplingSettings(n=4, length=32, unit="notes"), out_dir="rolls/")

Same checkpoint + prompt + settings + seed = the same notes. Every variation decodes to valid MIDI (see
theremin.roll.constraints). "Continue" extends the whole prompt; ``keep_bars=K`` keeps the prompt's first K bars
and re-rolls from bar K+1 (the dice-game move: keep what you like, roll the rest).
"""

from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from theremin.codec.midichar import MidiChar
from theremin.codec.tokenizer import MidiTokenizer
from theremin.model.checkpoint import DEFAULT_MAX_PARAMS, CheckpointError, open_checkpoint
from theremin.model.gpt import GPT
from theremin.music.midi import (
    CLIP_SUFFIX,
    PIANO,
    PROMPT_NOTES_MARKER,
    PROMPT_TRACK,
    MidiError,
    Note,
    Part,
    Piece,
    default_name,
    is_midi_path,
    read_midi,
    trim_overlaps,
    write_midi,
)
from theremin.music.render import piano_roll_png, render_wav
from theremin.roll.add_part import mute_parts, roll_new_part
from theremin.roll.constraints import Constraints, RowState
from theremin.roll.parts import PartSpecError, new_part, select_parts
from theremin.roll.results import GenerateError, Goal, Prompt, RollResult, Variation, parse_bars

log = logging.getLogger("theremin.roll.roller")

PIANO_KEYS = (21, 108)  # the register of a roll from nothing (A0-C8)


@dataclass(frozen=True)
class SamplingLimits:
    """Upper bounds on one request, checked before anything is allocated (a server exposes every
    SamplingSettings field). conf/generate.yaml ``limits`` overrides these defaults for theremin-generate;
    a server rolls with its own (conf/serve.yaml ``limits``, :class:`theremin.serve.forms.Limits`)."""

    max_n: int = 64  # variations per roll
    max_notes: int = 4096  # length with unit=notes
    max_bars: float = 256  # length with unit=bars
    max_seconds: float = 1200  # length with unit=seconds
    max_new_tokens: int = 32768  # tokens sampled per variation, whatever the length asked
    max_beats: float = 2048  # a length in bars or seconds, in beats at the prompt's meter and tempo
    # a prompt's tempos and meter: beyond these a length in bars or seconds means nothing a musician plays
    min_bpm: float = 10
    max_bpm: float = 1000
    max_bar_beats: float = 32  # quarter-note beats in one bar (255/1 would be 1020)

    def __post_init__(self) -> None:
        for name in ("max_n", "max_notes", "max_new_tokens"):
            _check_number(f"limits.{name}", getattr(self, name), 1, None, integer=True)
        for name in ("max_bars", "max_seconds", "max_beats", "min_bpm", "max_bpm", "max_bar_beats"):
            _check_number(f"limits.{name}", getattr(self, name), 0, None, lo_open=True)
        if self.min_bpm > self.max_bpm:
            raise GenerateError(f"limits.min_bpm={self.min_bpm} is above limits.max_bpm={self.max_bpm}")

    def max_length(self, unit: str) -> float:
        return {"notes": self.max_notes, "bars": self.max_bars, "seconds": self.max_seconds}[unit]


def check_meter(piece: Piece, limits: SamplingLimits, name: str = "the prompt") -> None:
    """Refuse a prompt whose tempo or time signature makes bars and seconds meaningless (a 185-byte file with
    3.6 bpm and 255/1 asked for a roll of 47,000 notes and a 32 GB WAV; 0/4 divided by zero)."""
    for tick, num, den in piece.time_signatures:
        where = f"at beat {tick / piece.ticks_per_beat:g}" if tick else "at its start"
        if num < 1 or den < 1 or den > 64 or den & (den - 1):
            raise GenerateError(f"prompt {name}: time signature {num}/{den} {where} is not a meter (a numerator "
                                "of at least 1 over 1, 2, 4, ..., 64)")
        beats = num * 4 / den
        if beats > limits.max_bar_beats:
            raise GenerateError(f"prompt {name}: time signature {num}/{den}: a bar of {beats:g} beats {where}, more "
                                f"than limits.max_bar_beats={limits.max_bar_beats:g}")
    for tick, us in piece.tempos:
        bpm = 60e6 / us if us > 0 else math.inf
        if not limits.min_bpm <= bpm <= limits.max_bpm:
            where = f"at beat {tick / piece.ticks_per_beat:g}" if tick else "at its start"
            shown = f"{bpm:.2f}".rstrip("0").rstrip(".")  # 3.58, 60000000
            raise GenerateError(f"prompt {name}: a tempo of {shown} bpm {where}, outside limits.min_bpm..max_bpm "
                                f"({limits.min_bpm:g}-{limits.max_bpm:g})")


def _check_number(name: str, value, lo: float | None, hi: float | None, *, integer: bool = False,
                  lo_open: bool = False, hint: str = "") -> None:
    """A finite int (``integer``) or real in [lo, hi] (lo excluded with ``lo_open``), else GenerateError."""
    ok_type = isinstance(value, int) if integer else isinstance(value, (int, float))
    if not ok_type or isinstance(value, bool) or not math.isfinite(value):
        raise GenerateError(f"{name}={value!r}: must be {'an integer' if integer else 'a finite number'}")
    if lo is not None and (value <= lo if lo_open else value < lo):
        raise GenerateError(f"{name}={value}: must be {'>' if lo_open else '>='} {lo}{hint}")
    if hi is not None and value > hi:
        raise GenerateError(f"{name}={value}: must be <= {hi}{hint}")


@dataclass
class SamplingSettings:
    n: int = 4  # variations
    seed: int = 0
    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = 0.95
    min_p: float | None = None
    length: float = 32  # in `unit`
    unit: str = "notes"  # notes | bars | seconds
    max_new_tokens: int | None = None  # cap (default: from the length)
    keep_bars: int | None = None  # re-roll: keep the prompt's first K bars
    pitch_range: tuple[int, int] | None = None
    # without a pitch_range: notes keep within this many semitones of the prompt's lowest and highest notes
    # where they can (a soft bound; the piano's keys with no prompt); None: anywhere
    register_margin: int | None = 12
    key: str | None = None
    max_polyphony: int | None = None
    # which of the prompt's parts may play (track names, families such as bass or drums, programs: see
    # theremin.roll.parts); None: every part of the prompt (a roll never brings in an instrument the prompt
    # lacks); "all": any instrument, new ones too
    instruments: list[str] | str | None = None
    # roll one new part over the prompt's bars (drums, a family such as bass, or a program): e.g. a bass line
    # for my chords; the prompt's notes stay as they are
    add_part: str | None = None
    # prompt parts left out before rolling (track names, families, programs): they neither sound nor play on
    mute: list[str] | str | None = None
    # "A-B": bars A..B of the prompt are the prompt (the last ones that fit the context, when they do not all),
    # and the roll continues after bar B; keep_bars=K is prompt_bars="1-K"
    prompt_bars: str | None = None
    # the share of the model's context the prompt may fill; the rest is room for the first new notes, and a roll
    # longer than that slides on (a KV-cache window). 0.75 of 1024 tokens holds a median 9 bars of POP909 even
    # through a Bach-only tokenizer (scripts/bench_context.py --meter 4/4); 0.5 held 6
    prompt_share: float = 0.75

    def check(self, limits: SamplingLimits | None = None) -> None:
        """Every field's type and range (bounded by ``limits``); messages name the field."""
        lim = limits or SamplingLimits()
        if self.unit not in ("notes", "bars", "seconds"):
            raise GenerateError(f"sampling.unit={self.unit!r}: use notes, bars or seconds")
        _check_number("sampling.n", self.n, 1, lim.max_n, integer=True, hint=" (limits.max_n)")
        _check_number("sampling.seed", self.seed, 0, 2**63 - 1, integer=True)
        _check_number("sampling.temperature", self.temperature, 0, None)
        _check_number("sampling.length", self.length, 0, lim.max_length(self.unit), lo_open=True,
                      hint=f" {self.unit} (limits.max_{self.unit})")
        if self.unit == "notes" and int(self.length) < 1:
            raise GenerateError(f"sampling.length={self.length}: at least 1 note")
        _check_number("sampling.prompt_share", self.prompt_share, 0.1, 0.95)
        optional = (("top_k", 1, None, True, False), ("top_p", 0, 1, False, True), ("min_p", 0, 1, False, False),
                    ("max_new_tokens", 1, lim.max_new_tokens, True, False), ("keep_bars", 0, None, True, False),
                    ("max_polyphony", 1, 128, True, False), ("register_margin", 0, 127, True, False))
        for name, lo, hi, integer, lo_open in optional:
            if getattr(self, name) is not None:
                _check_number(f"sampling.{name}", getattr(self, name), lo, hi, integer=integer, lo_open=lo_open,
                              hint=" (limits.max_new_tokens)" if name == "max_new_tokens" else "")
        if self.pitch_range is not None and (
                len(self.pitch_range) != 2 or not all(isinstance(p, int) and not isinstance(p, bool)
                                                      for p in self.pitch_range)):
            raise GenerateError(f"sampling.pitch_range={self.pitch_range!r}: use [lo, hi], two MIDI pitches")
        if self.key is not None and not isinstance(self.key, str):
            raise GenerateError(f"sampling.key={self.key!r}: use a key name such as 'D dorian'")
        self._check_parts()
        if self.prompt_bars is not None:
            bars = parse_bars(self.prompt_bars)
            if self.keep_bars is not None:
                raise GenerateError(f"sampling.prompt_bars={self.prompt_bars!r} and sampling.keep_bars="
                                    f"{self.keep_bars}: set one (keep_bars=K is prompt_bars=1-K)")
            if bars[1] > 100_000:
                raise GenerateError(f"sampling.prompt_bars={self.prompt_bars!r}: bar {bars[1]} is past any song")

    def _check_parts(self) -> None:
        for name in ("instruments", "mute"):
            value = getattr(self, name)
            specs = [value] if isinstance(value, str) else value
            if specs is not None and (not isinstance(specs, (list, tuple)) or len(specs) > 128
                                      or not all(isinstance(x, str) for x in specs)):
                raise GenerateError(f"sampling.{name}={str(value)[:80]!r}: use a list of track names, families "
                                    "(bass, drums, ...) or programs" + (", or 'all'" if name == "instruments" else ""))
        if self.add_part is not None and (not isinstance(self.add_part, str) or not 0 < len(self.add_part) <= 64):
            raise GenerateError(f"sampling.add_part={str(self.add_part)[:80]!r}: name drums, a family (bass, "
                                "strings, ...), a program, or one of the prompt's tracks to re-roll it")


class Roller:
    """A loaded model + tokenizer, ready to roll variations (keeps constraint masks cached)."""

    def __init__(self, model: GPT, tokenizer: MidiTokenizer, codec: MidiChar, checkpoint: str = "",
                 corpus_dir: str | os.PathLike | None = None, limits: SamplingLimits | None = None):
        self.model, self.tok, self.codec, self.checkpoint = model, tokenizer, codec, checkpoint
        self.corpus_dir = Path(corpus_dir) if corpus_dir else None  # the training corpus, for evaluation
        self.limits = limits or SamplingLimits()  # what one roll may ask for (settable: roller.limits = ...)
        self._constraints: dict[tuple, Constraints] = {}

    @classmethod
    def load(cls, checkpoint: str | os.PathLike, device: str = "cpu", max_params: int | None = None,
             limits: SamplingLimits | None = None) -> Roller:
        """A Roller from one checkpoint file, opened safely by :func:`theremin.model.checkpoint.open_checkpoint` (it
        carries its tokenizer; a model over ``max_params`` parameters, default ``DEFAULT_MAX_PARAMS``, is refused
        before allocation). Any problem is a GenerateError naming the file. The training corpus is used for the
        memorisation figures when it is on this machine; its absence is said, not fatal."""
        try:
            ck = open_checkpoint(checkpoint, max_params=DEFAULT_MAX_PARAMS if max_params is None else max_params)
        except CheckpointError as e:
            raise GenerateError(str(e)) from None
        if ck.corpus_dir is None:
            log.warning("the training corpus of %s is not on this machine (%s): rolling works, the memorisation "
                        "figures are skipped", checkpoint, ck.hparams["tokenizer"].get("corpus_dir"))
        return cls(ck.build_model(device), ck.tokenizer, ck.codec, str(checkpoint), ck.corpus_dir, limits)

    def constraints(self, s: SamplingSettings) -> Constraints:
        key = (tuple(s.pitch_range) if s.pitch_range else None, s.key, s.max_polyphony)
        if key not in self._constraints:
            self._constraints[key] = Constraints(self.tok, s.pitch_range, s.key, s.max_polyphony)
        return self._constraints[key]

    # ---- prompt -----------------------------------------------------------------------------------------
    def prompt(self, prompt: str | os.PathLike | Piece | None, keep_bars: int | None = None,
               bars: tuple[int, int] | None = None, share: float | None = None) -> Prompt:
        """The prompt as midichar: bars ``bars`` (first, last; 1-based) of it, or its first ``keep_bars`` bars,
        or all of it, and of those the last that fit ``share`` of the context (default
        SamplingSettings.prompt_share; see :class:`Prompt`)."""
        if prompt is None:
            return Prompt("", (4, 4), False, 0)
        piece = prompt if isinstance(prompt, Piece) else _read_prompt(prompt)
        check_meter(piece, self.limits, "the prompt" if isinstance(prompt, Piece) else repr(str(prompt)))
        ts = piece.time_signatures[0][1:] if piece.time_signatures else (4, 4)
        notes, tempos = self.codec.quantize(piece)
        parts = tuple(piece.parts) if self.codec.instruments else (PIANO,)
        bar = self.bar_steps(ts)
        if keep_bars is not None:
            bars = (1, keep_bars) if keep_bars > 0 else None
            if keep_bars > 0 and notes and notes[0][0] >= round(keep_bars * bar):
                raise GenerateError(_silent_keep_message(prompt, keep_bars, int(notes[0][0] // bar) + 1))
            if keep_bars == 0:  # roll from nothing on purpose
                notes, tempos = [], []
        first = 0
        if bars is not None:
            first, end = round((bars[0] - 1) * bar), round(bars[1] * bar)
            last_bar = int(notes[-1][0] // bar) + 1 if notes else 0
            if bars[0] > last_bar and keep_bars is None:
                raise GenerateError(f"sampling.prompt_bars={bars[0]}-{bars[1]}: the prompt has {last_bar} bars")
            notes = [n for n in notes if first <= n[0] < end]
            tempos = [t for t in tempos if t[0] < end]
        else:  # the end of the bar that holds the last onset: a length in bars fills whole bars
            end = round((notes[-1][0] // bar + 1) * bar) if notes else 0
        # the model reads the parts' sounds, not their names: a name its tokenizer never saw would be spelled in
        # bytes (4 tokens a letter) and crowd notes out of the context; the names come back in the variations
        had_notes = bool(notes)
        room = int(self.model.block_size * (SamplingSettings.prompt_share if share is None else share))
        notes, tempos, shift, truncated = self._keep_recent(notes, tempos, bar, unnamed(parts), first, room)
        if had_notes and not notes:  # not even one note fits beside the header that declares the parts
            raise GenerateError(f"{'the prompt' if isinstance(prompt, Piece) else f'prompt {prompt}'}: its "
                                f"{len(parts)} parts alone fill the model's context ({self.model.block_size} tokens); "
                                "leave some out (sampling.mute) or send fewer tracks")
        kept = (int(shift // bar) + 1, int(end // bar)) if notes or bars else None
        return Prompt(self._grid_text(notes, tempos, unnamed(parts)), ts, truncated, end - shift, parts, kept)

    def prompt_text(self, prompt: str | os.PathLike | Piece | None, keep_bars: int | None):
        """(text, time_signature, truncated): :meth:`prompt` without its end."""
        return self.prompt(prompt, keep_bars)[:3]

    def _keep_recent(self, notes, tempos, bar: float, parts, first: int, room: int):
        """(notes, tempos, shift, truncated): the most recent notes that fit ``room`` tokens (the rest of the
        context is for the continuation), cut at an onset and moved back by ``shift``, a whole number of bars, so bar
        lines stay where they were; the tempo in force at the cut comes along. When the last onset alone does
        not fit, its highest notes are kept. The cut is found by galloping back from the end, then bisecting:
        O(log n) encodings of texts at most about twice as long as what is kept, so any prompt, however long
        or dense, is trimmed in bounded time."""
        def suffix(i: int):
            if i == 0 and first == 0:
                return notes, tempos, 0
            if i >= len(notes):
                return [], [], 0
            cut = notes[i][0] if i > 0 else first
            shift = int(cut // bar * bar)
            in_force = [(0, us) for p, us in tempos if p <= cut][-1:]
            return ([(p - shift, d, pi, v, pa) for p, d, pi, v, pa in notes[i:]],
                    in_force + [(p - shift, us) for p, us in tempos if p > cut], shift)

        def fits(i: int) -> bool:
            kept, kept_tempos, _ = suffix(i)
            return len(self.tok.encode(self._grid_text(kept, kept_tempos, parts))) + 1 <= room

        if not notes:
            return notes, tempos, 0, False
        if fits(0):
            return *suffix(0), False
        onsets = [i for i in range(len(notes)) if i == 0 or notes[i][0] != notes[i - 1][0]]
        i = _first_fitting([*onsets, len(notes)], fits)
        if i == len(notes):  # one chord longer than the room: keep its top notes (notes rise in pitch)
            i = _first_fitting(list(range(onsets[-1], len(notes) + 1)), fits)
        return *suffix(i), True

    def _grid_text(self, notes, tempos, parts) -> str:
        k = self.codec.ticks_per_beat // self.codec.grid
        piece = Piece([Note(p * k, (p + d) * k, pi, self.codec.velocities[v], pa) for p, d, pi, v, pa in notes],
                      self.codec.ticks_per_beat, [(p * k, us) for p, us in tempos], parts=list(parts))
        return self.codec.encode(piece)

    def bar_steps(self, ts: tuple[int, int]) -> float:
        return ts[0] * 4 / ts[1] * self.codec.grid

    # ---- roll -------------------------------------------------------------------------------------------
    def roll(self, prompt=None, settings: SamplingSettings | None = None, out_dir: str | os.PathLike | None = None,
             render: dict | None = None) -> RollResult:
        """Generate ``settings.n`` variations; with ``out_dir``, write MIDI (+ WAV, PNG per ``render``).
        A length in bars or seconds counts from the prompt's end (see :class:`Prompt`)."""
        s = settings or SamplingSettings()
        s.check(self.limits)  # before anything is allocated
        render = _render_options(render, out_dir)
        cons = self.constraints(s)
        t0 = time.perf_counter()
        piece = self._prompt_piece(prompt, s)
        if s.add_part is not None:
            result = roll_new_part(self, piece, s, cons)
            result.seconds = time.perf_counter() - t0
            if out_dir is not None:
                self.write(result, Path(out_dir), s, render)
            return result
        p = self.prompt(piece, s.keep_bars, parse_bars(s.prompt_bars) if s.prompt_bars else None, s.prompt_share)
        if p.truncated:
            log.info("the prompt is longer than the model's context: kept bars %s", p.bars)
        prompt_ids = [self.tok.bos_id, *self.tok.encode(p.text)]
        base = self._prompt_state(cons, prompt_ids)
        base.allowed_parts = self.allowed_parts(p.parts if piece is not None else None, s)
        prompt_grid, prompt_tempos = self.codec.decode_grid(p.text)
        base.register = register_window([n[2] for n in prompt_grid if not p.parts[n[4]].is_drum], s)
        goal = self._goal(s, p, prompt_tempos, base.notes)
        rows = [base.copy() for _ in range(s.n)]
        out = self._sample(prompt_ids, rows, cons, s, goal)
        k = self.codec.ticks_per_beat // self.codec.grid
        prompt_keys = frozenset((n[0] * k, n[2]) for n in prompt_grid)
        variations = [self._variation(b, out[b, len(prompt_ids):].tolist(), prompt_ids, p, goal, prompt_keys)
                      for b in range(s.n)]
        result = RollResult(variations, self.codec.count_notes(p.text), p.truncated, time.perf_counter() - t0,
                            p.bars)
        if out_dir is not None:
            self.write(result, Path(out_dir), s, render)
        return result

    def _prompt_piece(self, prompt, s: SamplingSettings) -> Piece | None:
        """The prompt as a Piece (read from its file), without the parts ``s.mute`` names."""
        if prompt is None:
            for name in ("mute", "add_part"):
                if getattr(s, name):
                    raise GenerateError(f"sampling.{name} needs a prompt (its parts, its bars)")
            return None
        piece = prompt if isinstance(prompt, Piece) else _read_prompt(prompt)
        if s.mute:
            try:
                piece = mute_parts(piece, s.mute)
            except PartSpecError as e:
                raise GenerateError(str(e).replace("sampling.instruments", "sampling.mute")) from None
        return piece

    def allowed_parts(self, parts, s: SamplingSettings) -> frozenset[str] | None:
        """The SELECT chars a roll may switch to (theremin.roll.constraints: RowState.allowed_parts): the prompt's
        parts, or those ``s.instruments`` names; None (any) with ``instruments: all``, or with neither a prompt
        nor ``instruments``."""
        if not self.codec.instruments or (isinstance(s.instruments, str) and s.instruments.strip().lower() == "all"):
            return None
        try:
            if parts is None:  # no prompt: the named instruments are new parts
                if s.instruments is None:
                    return None
                specs = [s.instruments] if isinstance(s.instruments, str) else s.instruments
                news = [new_part(x) for x in specs]
                return frozenset(self.codec.part_keys(news))
            parts = list(parts)
            chosen = range(len(parts)) if s.instruments is None else select_parts(s.instruments, parts)
        except PartSpecError as e:
            raise GenerateError(str(e)) from None
        keys = self.codec.part_keys(parts)
        return frozenset(keys[i] for i in chosen)

    def _prompt_state(self, cons: Constraints, prompt_ids: list[int]) -> RowState:
        """The grammar state after the prompt's tokens: a prompt always ends on a complete event."""
        state = RowState()
        for t in prompt_ids[1:]:
            cons.advance(state, t)
        if not cons.complete(state):  # the prompt text is the codec's own: a bug if not
            raise RuntimeError("the prompt's tokens do not end on a complete event")
        return state

    def _goal(self, s: SamplingSettings, p: Prompt, prompt_tempos, prompt_notes: int) -> Goal:
        """When a variation is long enough (new notes, or a grid position from the prompt's end) and the token
        budget that bounds it: ~8 tokens per note at worst (factored notes, tempo and rest chars)."""
        if s.unit == "notes":
            notes, end, beats = int(s.length), None, None
        else:
            tempo_us = ([us for _, us in prompt_tempos] or [500_000])[-1]
            bar_beats = self.bar_steps(p.time_signature) / self.codec.grid
            beats = s.length * bar_beats if s.unit == "bars" else s.length * 1e6 / tempo_us
            if beats > self.limits.max_beats:
                at = f"{bar_beats:g} beats a bar" if s.unit == "bars" else f"{60e6 / tempo_us:.4g} bpm"
                raise GenerateError(f"sampling.length={s.length:g} {s.unit} is {beats:g} beats ({at}), more than "
                                    f"limits.max_beats={self.limits.max_beats:g}")
            notes, end = None, p.end + round(beats * self.codec.grid)
        max_new = s.max_new_tokens or int(min(8 * (notes or 4 * beats) + 64, self.limits.max_new_tokens))
        return Goal(notes, end, max_new, prompt_notes)

    def _sample(self, prompt_ids: list[int], rows: list[RowState], cons: Constraints, s: SamplingSettings,
                goal: Goal) -> torch.Tensor:
        """The model's tokens for every row, each step masked by the row's constraints; a row may end (EOS)
        only once it has reached the goal."""
        seen = [len(prompt_ids)] * len(rows)
        sampling = {"temperature": s.temperature, "top_k": s.top_k, "top_p": s.top_p, "min_p": s.min_p}

        def hook(idx: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
            out = logits.clone()
            for b, row in enumerate(rows):
                for t in idx[b, seen[b]:].tolist():
                    cons.advance(row, t)
                seen[b] = idx.size(1)
                out[b] = cons.apply(row, logits[b], goal.reached(row), sampling)
            return out

        def stop(idx: torch.Tensor) -> bool:
            return all(rows[b].done or idx[b, -1].item() == self.tok.eos_id for b in range(len(rows)))

        gen = torch.Generator(device=next(self.model.parameters()).device).manual_seed(int(s.seed))
        idx = torch.tensor([prompt_ids] * len(rows), dtype=torch.long, device=gen.device)
        out = self.model.generate(idx, goal.max_new, temperature=s.temperature, top_k=s.top_k, top_p=s.top_p,
                                  min_p=s.min_p, generator=gen, logits_hook=hook, stop_fn=stop)
        short = [b + 1 for b, row in enumerate(rows) if not (row.done or goal.reached(row))]
        if short and s.add_part is None:  # add_part rolls beat by beat: a beat may end on its token cap
            log.warning("variation(s) %s stopped at %d tokens before reaching sampling.length=%s %s",
                        ", ".join(map(str, short)), goal.max_new, s.length, s.unit)
        return out

    def _variation(self, b: int, new: list[int], prompt_ids: list[int], p: Prompt, goal: Goal,
                   prompt_keys: frozenset) -> Variation:
        """Row ``b``'s new tokens as a variation: up to EOS, repaired, cut to the goal, with the prompt."""
        if self.tok.eos_id in new:
            new = new[: new.index(self.tok.eos_id)]
        # decoded after the prompt: a relative tokenizer's intervals count from the prompt's last notes
        both = self.tok.decode(prompt_ids[1:] + new, errors="ignore")
        if not both.startswith(p.text):  # the prompt's tokens are the tokenizer's own encoding: a bug if not
            raise RuntimeError("the prompt does not decode back from its tokens")
        cont = self.codec.repair(both[len(p.text):])  # a no-op unless max_new_tokens hit
        # overlapping notes of one pitch in a part end where the next starts (what a MIDI channel plays, and
        # what the DAW file holds): the text, its figures and the files agree
        end = p.end * self.codec.ticks_per_beat // self.codec.grid
        piece = trim_overlaps(self.codec.decode(self._trim(p.text, cont, goal.notes, goal.end)),
                              lambda n: (n.start, n.pitch) in prompt_keys and n.start < max(end, 1))
        piece.parts = named(piece.parts, p.parts)
        full = self.codec.encode(piece)
        piece.time_signatures = [(0, *p.time_signature)]
        k = self.codec.ticks_per_beat // self.codec.grid
        n_prompt = self.codec.count_notes(p.text)
        return Variation(b, full, piece, p.end * k, self.codec.count_notes(full) - n_prompt, prompt_notes=prompt_keys)

    def _trim(self, prompt: str, cont: str, target_notes: int | None, end_pos: int | None) -> str:
        """Prompt + continuation cut to exactly the asked length (tokens can overshoot by a few notes), as
        canonical text."""
        full = prompt + cont
        notes, tempos, parts = self.codec.decode_parts(full)
        n_prompt = self.codec.count_notes(prompt)
        if target_notes is not None:  # the first target_notes distinct new (onset, pitch, part) of the continuation
            seen = {(n[0], n[2], n[4]) for n in notes[:n_prompt]}
            new = 0
            keep = notes[:n_prompt]
            for n in notes[n_prompt:]:
                if (n[0], n[2], n[4]) not in seen:
                    if new == target_notes:
                        break
                    new += 1
                    seen.add((n[0], n[2], n[4]))
                keep.append(n)
        else:
            keep = notes[:n_prompt] + [n for n in notes[n_prompt:] if n[0] < end_pos]
        used = sorted({n[4] for n in keep} | set(range(len(self.prompt_parts(prompt)))))
        renumber = {old: new for new, old in enumerate(used)}  # a part the model opened and left empty goes
        keep = [(*n[:4], renumber[n[4]]) for n in keep]
        # canonical text: a pitch sampled twice on one onset sounds once
        return self._grid_text(keep, tempos, [parts[i] for i in used])

    def prompt_parts(self, prompt_text: str) -> list[Part]:
        """The parts a prompt text declares (its header; one piano part without one)."""
        return self.codec.decode_parts(prompt_text)[2]

    # ---- outputs ----------------------------------------------------------------------------------------
    def write(self, result: RollResult, out_dir: Path, s: SamplingSettings, render: dict) -> None:
        """Per variation: ``variation_NN.mid`` (prompt and continuation, a DAW track per instrument, the prompt's
        on their own tracks named "prompt: <name>"), ``variation_NN_new.mid`` (only the new notes, from bar 1,
        with the prompt's tempo, meter and instruments), + WAV and PNG per ``render``. The MIDI carries its
        provenance and its number of prompt notes as markers (:data:`PROMPT_NOTES_MARKER`), so
        theremin-evaluate scores the generated part alone."""
        out_dir.mkdir(parents=True, exist_ok=True)
        meta = {"theremin checkpoint": Path(self.checkpoint).name, "sampling": repr(asdict(s)),
                PROMPT_NOTES_MARKER: str(result.prompt_notes)}
        for v in result.variations:
            stem = out_dir / f"variation_{v.index + 1:02d}"
            v.files["mid"] = write_midi(daw_piece(v), stem.with_suffix(".mid"), overlaps="trim",
                                        meta={**meta, "variation": str(v.index + 1)})
            v.files["mid_new"] = write_midi(new_notes_piece(v), out_dir / f"{stem.name}{CLIP_SUFFIX}", overlaps="trim",
                                            meta={"theremin checkpoint": meta["theremin checkpoint"],
                                                  "variation": str(v.index + 1), "new notes only": "yes"})
            if render.get("png", True):
                v.files["png"] = piano_roll_png(v.piece, stem.with_suffix(".png"), prompt_end_tick=v.prompt_end_tick,
                                                prompt_notes=v.prompt_notes,
                                                title=f"variation {v.index + 1} (seed {s.seed})")
            if render.get("wav", True):
                v.files["wav"] = render_wav(v.piece, stem.with_suffix(".wav"), soundfont=render.get("soundfont"))


def _is_prompt_note(v: Variation, n: Note) -> bool:
    return (n.start, n.pitch) in v.prompt_notes and n.start < max(v.prompt_end_tick, 1)


def daw_piece(v: Variation) -> Piece:
    """The variation as a DAW wants it: the prompt's notes on their own parts, named "prompt: <name>", then a
    part per instrument of the continuation (empty parts make no track)."""
    p = v.piece
    n_parts = len(p.parts)
    named = [Part(x.program, x.is_drum, x.name or default_name(x.program, x.is_drum)) for x in p.parts]
    parts = [Part(x.program, x.is_drum, f"{PROMPT_TRACK}{x.name}") for x in named] + named
    notes = [Note(n.start, n.end, n.pitch, n.velocity, n.part if _is_prompt_note(v, n) else n_parts + n.part)
             for n in p.notes]
    used = sorted({n.part for n in notes})
    renumber = {old: new for new, old in enumerate(used)}
    return Piece([Note(n.start, n.end, n.pitch, n.velocity, renumber[n.part]) for n in notes], p.ticks_per_beat,
                 list(p.tempos), list(p.time_signatures), [parts[i] for i in used] or [named[0]])


def new_notes_piece(v: Variation) -> Piece:
    """Only the variation's new notes, moved by whole bars (so the meter holds) to start at bar 1, with the
    tempo in force there, the meter and the instruments of the whole variation. A continuation's bar 1 is the
    bar of the roll point, the same for every variation, so its clip drops in the DAW right after the prompt's
    bars; a note the model added to the prompt's last chord sounds before it and stays in the whole variation."""
    p = v.piece
    num, den = (p.time_signatures[0][1:] if p.time_signatures else (4, 4))
    bar = round(num * 4 / den * p.ticks_per_beat)
    shift = v.clip_from if v.clip_from is not None else v.prompt_end_tick // bar * bar
    new = [n for n in p.notes if not _is_prompt_note(v, n) and n.start >= shift]
    in_force = [(0, us) for t, us in p.tempos if t <= shift][-1:]
    tempos = in_force + [(t - shift, us) for t, us in p.tempos if t > shift]
    notes = [Note(n.start - shift, n.end - shift, n.pitch, n.velocity, n.part) for n in new]
    return Piece(notes, p.ticks_per_beat, tempos, [(0, num, den)], list(p.parts))


def _render_options(render: dict | None, out_dir) -> dict:
    render = {"wav": True, "png": True, "soundfont": None, **(render or {})}
    sf = render["soundfont"]
    if out_dir is not None and render["wav"] and sf and not Path(sf).is_file():
        raise GenerateError(f"soundfont {sf} does not exist")
    return render


def unnamed(parts) -> tuple[Part, ...]:
    """The parts as the model reads them: sounds, no names."""
    return tuple(Part(p.program, p.is_drum, "") for p in parts)


def named(parts, prompt_parts) -> list[Part]:
    """Decoded parts with the prompt's names back (the prompt's parts come first, in order)."""
    return [Part(x.program, x.is_drum, prompt_parts[i].name) if i < len(prompt_parts) else x
            for i, x in enumerate(parts)]


def register_window(prompt_pitches: list[int], s: SamplingSettings) -> tuple[int, int] | None:
    """The soft pitch window of a roll (see SamplingSettings.register_margin): none with a pitch_range."""
    if s.pitch_range is not None or s.register_margin is None:
        return None
    if not prompt_pitches:
        return PIANO_KEYS
    return max(0, min(prompt_pitches) - s.register_margin), min(127, max(prompt_pitches) + s.register_margin)


def _read_prompt(path: str | os.PathLike) -> Piece:
    path = Path(path)
    if path.is_dir():
        midi = sorted(f for f in os.listdir(path) if is_midi_path(f))
        hint = f"e.g. prompt={path / midi[0]}" if midi else "it holds no .mid file"
        raise GenerateError(f"prompt={path} is a folder: pass one MIDI file ({hint})")
    if not path.exists():
        raise GenerateError(f"prompt={path} does not exist")
    try:
        return read_midi(path)
    except MidiError as e:
        raise GenerateError(f"prompt {e}") from e


def _silent_keep_message(prompt, keep_bars: int, first_bar: int) -> str:
    name = "the prompt" if isinstance(prompt, Piece) else f"prompt {prompt}"
    silent = "bar 1 is" if first_bar == 2 else f"bars 1-{first_bar - 1} are"
    return (f"sampling.keep_bars={keep_bars} keeps no notes: {name} starts with silence ({silent} empty, its first "
            f"note is in bar {first_bar}). Use sampling.keep_bars={first_bar} (or more) to keep notes, "
            "sampling.keep_bars=0 to roll from nothing on purpose, or leave it unset to continue the whole prompt")


def _first_fitting(cuts: list[int], fits) -> int:
    """The earliest cut in ``cuts`` (rising, ``fits(cuts[-1])`` true, ``fits(cuts[0])`` false) that fits:
    gallop back from the end (steps 1, 2, 4, ...), then bisect the last gap."""
    lo, hi, step = 0, len(cuts) - 1, 1
    while hi - step > lo:
        if not fits(cuts[hi - step]):
            lo = hi - step
            break
        hi -= step
        step *= 2
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if fits(cuts[mid]) else (mid, hi)
    return cuts[hi]
