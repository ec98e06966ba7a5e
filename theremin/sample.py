"""Rolling ideas: a checkpoint + a prompt MIDI (or none) → N variations as MIDI, WAV and piano roll PNG.

    from theremin.sample import Roller, SamplingSettings
    roller = Roller.load("outputs/train/runs/default/checkpoints/last.ckpt")
    result = roller.roll("prompt.mid", SamplingSettings(n=4, length=32, unit="notes"), out_dir="rolls/")

Same checkpoint + prompt + settings + seed = the same notes. Every variation decodes to valid MIDI (see
theremin.constraints). "Continue" extends the whole prompt; ``keep_bars=K`` keeps the prompt's first K bars
and re-rolls from bar K+1 (the dice-game move: keep what you like, roll the rest).
"""

from __future__ import annotations

import logging
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from theremin.cli import ThereminError
from theremin.constraints import Constraints, RowState
from theremin.midi import MidiError, Piece, read_midi, write_midi
from theremin.midichar import MidiChar
from theremin.model import GPT, GPTConfig

log = logging.getLogger("theremin.sample")


class GenerateError(ThereminError):
    """Bad input to generation (checkpoint, prompt, settings); the message names the input."""


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
    key: str | None = None
    max_polyphony: int | None = None

    def check(self) -> None:
        if self.n < 1:
            raise GenerateError(f"sampling.n={self.n}: need at least one variation")
        if self.unit not in ("notes", "bars", "seconds"):
            raise GenerateError(f"sampling.unit={self.unit!r}: use notes, bars or seconds")
        if not self.length > 0 or (self.unit == "notes" and int(self.length) < 1):
            raise GenerateError(f"sampling.length={self.length}: must be > 0 (at least 1 note)")
        if self.temperature < 0:
            raise GenerateError(f"sampling.temperature={self.temperature}: must be >= 0")
        if self.keep_bars is not None and self.keep_bars < 0:
            raise GenerateError(f"sampling.keep_bars={self.keep_bars}: must be >= 0")


@dataclass
class Variation:
    index: int
    text: str  # prompt + continuation (midichar)
    piece: Piece
    prompt_end_tick: int
    generated_notes: int
    files: dict[str, Path] = field(default_factory=dict)


@dataclass
class RollResult:
    variations: list[Variation]
    prompt_notes: int
    prompt_truncated: bool
    seconds: float


def load_checkpoint(path: str | os.PathLike, device: str = "cpu"):
    """(GPT, MidiTokenizer, MidiChar, hparams) from a theremin checkpoint, with compatibility checks."""
    from theremin.tokenizer import MidiTokenizer

    path = Path(path)
    if not path.is_file():
        raise GenerateError(f"checkpoint {path} does not exist")
    try:
        ckpt = torch.load(path, map_location=device, weights_only=True)
    except Exception as e:
        raise GenerateError(f"checkpoint {path} is not a readable theremin checkpoint ({type(e).__name__})") from e
    hp = ckpt.get("hyper_parameters") or {}
    if not {"model", "tokenizer", "codec"} <= set(hp):
        raise GenerateError(f"checkpoint {path} lacks model/tokenizer/codec settings: not a theremin checkpoint")
    tdir = Path(hp["tokenizer"]["dir"])
    if not tdir.is_dir():
        raise GenerateError(f"checkpoint {path} needs its tokenizer at {tdir}, which does not exist")
    codec = MidiChar(**hp["codec"])
    tok = MidiTokenizer.load(tdir)
    if tok.codec.config != codec.config:
        raise GenerateError(f"checkpoint {path}: its tokenizer {tdir} was made with another codec config")
    if tok.vocab_size != hp["model"]["vocab_size"]:
        raise GenerateError(f"checkpoint {path} was trained with a vocab of {hp['model']['vocab_size']} but the "
                            f"tokenizer at {tdir} has {tok.vocab_size}: they do not belong together")
    model = GPT(GPTConfig(**hp["model"]))
    state = {k.removeprefix("model."): v for k, v in ckpt["state_dict"].items() if k.startswith("model.")}
    model.load_state_dict(state)
    model.to(device).eval()
    return model, tok, codec, hp


class Roller:
    """A loaded model + tokenizer, ready to roll variations (keeps constraint masks cached)."""

    def __init__(self, model: GPT, tokenizer, codec: MidiChar, checkpoint: str = "",
                 corpus_dir: str | os.PathLike | None = None):
        self.model, self.tok, self.codec, self.checkpoint = model, tokenizer, codec, checkpoint
        self.corpus_dir = Path(corpus_dir) if corpus_dir else None  # the training corpus, for evaluation
        self._constraints: dict[tuple, Constraints] = {}

    @classmethod
    def load(cls, checkpoint: str | os.PathLike, device: str = "cpu", max_params: int | None = None) -> Roller:
        """A Roller from one checkpoint file, opened safely by :func:`theremin.checkpoint.open_checkpoint` (it
        carries its tokenizer; a model over ``max_params`` parameters, default ``DEFAULT_MAX_PARAMS``, is refused
        before allocation). Any problem is a GenerateError naming the file. The training corpus is used for the
        memorisation figures when it is on this machine; its absence is said, not fatal."""
        from theremin.checkpoint import DEFAULT_MAX_PARAMS, CheckpointError, open_checkpoint

        try:
            ck = open_checkpoint(checkpoint, max_params=DEFAULT_MAX_PARAMS if max_params is None else max_params)
        except CheckpointError as e:
            raise GenerateError(str(e)) from None
        if ck.corpus_dir is None:
            log.warning("the training corpus of %s is not on this machine (%s): rolling works, the memorisation "
                        "figures are skipped", checkpoint, ck.hparams["tokenizer"].get("corpus_dir"))
        return cls(ck.build_model(device), ck.tokenizer, ck.codec, str(checkpoint), ck.corpus_dir)

    def constraints(self, s: SamplingSettings) -> Constraints:
        key = (tuple(s.pitch_range) if s.pitch_range else None, s.key, s.max_polyphony)
        if key not in self._constraints:
            self._constraints[key] = Constraints(self.tok, s.pitch_range, s.key, s.max_polyphony)
        return self._constraints[key]

    # ---- prompt -----------------------------------------------------------------------------------------
    def prompt_text(self, prompt: str | os.PathLike | Piece | None, keep_bars: int | None):
        """(text, time_signature, truncated) of the prompt, cut to ``keep_bars`` bars and to the context."""
        if prompt is None:
            return "", (4, 4), False
        try:
            piece = prompt if isinstance(prompt, Piece) else read_midi(prompt)
        except MidiError as e:
            raise GenerateError(f"prompt {e}") from e
        ts = piece.time_signatures[0][1:] if piece.time_signatures else (4, 4)
        notes, tempos = self.codec.quantize(piece)
        if keep_bars is not None:
            end = int(keep_bars * self.bar_steps(ts))
            notes = [n for n in notes if n[0] < end]
            tempos = [t for t in tempos if t[0] < end]
        notes, tempos, truncated = self._keep_recent(notes, tempos)
        return self._grid_text(notes, tempos), ts, truncated

    def _keep_recent(self, notes, tempos):
        """(notes, tempos, truncated): the most recent notes that fit half the context (the rest is left for
        the continuation), cut at an onset, with the tempo in force there moved to the start. When the last
        onset alone does not fit, its highest notes are kept. The cut is found by galloping back from the end,
        then bisecting: O(log n) encodings of texts at most about twice as long as what is kept, so any
        prompt, however long or dense, is trimmed in bounded time."""
        room = self.model.block_size // 2

        def suffix(i: int):
            if i == 0:
                return notes, tempos
            if i >= len(notes):
                return [], []
            cut = notes[i][0]
            in_force = [(0, us) for p, us in tempos if p <= cut][-1:]
            return ([(p - cut, d, pi, v) for p, d, pi, v in notes[i:]],
                    in_force + [(p - cut, us) for p, us in tempos if p > cut])

        def fits(i: int) -> bool:
            return len(self.tok.encode(self._grid_text(*suffix(i)))) + 1 <= room

        if not notes or fits(0):
            return notes, tempos, False
        onsets = [i for i in range(len(notes)) if i == 0 or notes[i][0] != notes[i - 1][0]]
        i = _first_fitting([*onsets, len(notes)], fits)
        if i == len(notes):  # one chord longer than the room: keep its top notes (notes rise in pitch)
            i = _first_fitting(list(range(onsets[-1], len(notes) + 1)), fits)
        return *suffix(i), True

    def _grid_text(self, notes, tempos) -> str:
        k = self.codec.ticks_per_beat // self.codec.grid
        from theremin.midi import Note

        piece = Piece([Note(p * k, (p + d) * k, pi, self.codec.velocities[v]) for p, d, pi, v in notes],
                      self.codec.ticks_per_beat, [(p * k, us) for p, us in tempos])
        return self.codec.encode(piece)

    def bar_steps(self, ts: tuple[int, int]) -> float:
        return ts[0] * 4 / ts[1] * self.codec.grid

    # ---- roll -------------------------------------------------------------------------------------------
    def roll(self, prompt=None, settings: SamplingSettings | None = None, out_dir: str | os.PathLike | None = None,
             render: dict | None = None) -> RollResult:
        """Generate ``settings.n`` variations; with ``out_dir``, write MIDI (+ WAV, PNG per ``render``)."""
        import time

        s = settings or SamplingSettings()
        s.check()
        render = {"wav": True, "png": True, "soundfont": None, **(render or {})}
        sf = render["soundfont"]
        if out_dir is not None and render["wav"] and sf and not Path(sf).is_file():
            raise GenerateError(f"soundfont {sf} does not exist")
        cons = self.constraints(s)
        t0 = time.perf_counter()
        text, ts, truncated = self.prompt_text(prompt, s.keep_bars)
        if truncated:
            log.warning("the prompt is longer than the model's context: kept its most recent part")
        prompt_ids = [self.tok.bos_id, *self.tok.encode(text)]
        base = RowState()
        for t in prompt_ids[1:]:
            cons.advance(base, t)
        if not cons.complete(base):
            raise GenerateError("the prompt does not end on a complete event (internal error)")
        prompt_notes = base.notes
        tempo_us = ([us for _, us in self.codec.decode_grid(text)[1]] or [500_000])[-1]
        if s.unit == "notes":
            target_notes, end_pos = int(s.length), None
        else:
            beats = s.length * self.bar_steps(ts) / self.codec.grid if s.unit == "bars" else s.length * 1e6 / tempo_us
            target_notes, end_pos = None, base.cursor + round(beats * self.codec.grid)
        max_new = s.max_new_tokens or int(8 * (target_notes or 4 * beats) + 64)
        rows = [base.copy() for _ in range(s.n)]
        seen = [len(prompt_ids)] * s.n
        sampling = {"temperature": s.temperature, "top_k": s.top_k, "top_p": s.top_p, "min_p": s.min_p}

        def reached(row: RowState) -> bool:
            if target_notes is not None:
                return row.notes - prompt_notes >= target_notes
            return row.cursor >= end_pos

        def hook(idx: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
            out = logits.clone()
            for b, row in enumerate(rows):
                for t in idx[b, seen[b]:].tolist():
                    cons.advance(row, t)
                seen[b] = idx.size(1)
                out[b] = cons.apply(row, logits[b], reached(row), sampling)
            return out

        def stop(idx: torch.Tensor) -> bool:  # EOS is only sampled once a row has reached its length
            return all(rows[b].done or idx[b, -1].item() == self.tok.eos_id for b in range(len(rows)))

        gen = torch.Generator(device=next(self.model.parameters()).device).manual_seed(int(s.seed))
        idx = torch.tensor([prompt_ids] * s.n, dtype=torch.long, device=gen.device)
        out = self.model.generate(idx, max_new, temperature=s.temperature, top_k=s.top_k, top_p=s.top_p,
                                  min_p=s.min_p, generator=gen, logits_hook=hook, stop_fn=stop)
        variations = []
        for b in range(s.n):
            new = out[b, len(prompt_ids):].tolist()
            if self.tok.eos_id in new:
                new = new[: new.index(self.tok.eos_id)]
            cont = self.codec.repair(self.tok.decode(new, errors="ignore"))  # a no-op unless max_new_tokens hit
            full = self._trim(text, cont, target_notes, end_pos)
            piece = self.codec.decode(full)
            piece.time_signatures = [(0, *ts)]
            notes_prompt = self.codec.count_notes(text)
            prompt_end = _prompt_end_tick(self.codec, text)
            variations.append(Variation(b, full, piece, prompt_end, self.codec.count_notes(full) - notes_prompt))
        seconds = time.perf_counter() - t0
        result = RollResult(variations, self.codec.count_notes(text), truncated, seconds)
        if out_dir is not None:
            self.write(result, Path(out_dir), s, render)
        return result

    def _trim(self, prompt: str, cont: str, target_notes: int | None, end_pos: int | None) -> str:
        """Prompt + continuation cut to exactly the asked length (tokens can overshoot by a few notes), as
        canonical text."""
        full = prompt + cont
        notes, tempos = self.codec.decode_grid(full)
        n_prompt = self.codec.count_notes(prompt)
        if target_notes is not None:  # the first target_notes distinct new (onset, pitch) of the continuation
            seen = {(n[0], n[2]) for n in notes[:n_prompt]}
            new = 0
            keep = notes[:n_prompt]
            for n in notes[n_prompt:]:
                if (n[0], n[2]) not in seen:
                    if new == target_notes:
                        break
                    new += 1
                    seen.add((n[0], n[2]))
                keep.append(n)
        else:
            keep = notes[:n_prompt] + [n for n in notes[n_prompt:] if n[0] < end_pos]
        return self._grid_text(keep, tempos)  # canonical text: a pitch sampled twice on one onset sounds once

    # ---- outputs ----------------------------------------------------------------------------------------
    def write(self, result: RollResult, out_dir: Path, s: SamplingSettings, render: dict) -> None:
        from theremin.render import piano_roll_png, render_wav

        out_dir.mkdir(parents=True, exist_ok=True)
        meta = {"theremin checkpoint": self.checkpoint, "sampling": repr(asdict(s))}
        for v in result.variations:
            stem = out_dir / f"variation_{v.index + 1:02d}"
            v.files["mid"] = write_midi(v.piece, stem.with_suffix(".mid"), meta={**meta, "variation": str(v.index)})
            if render.get("png", True):
                v.files["png"] = piano_roll_png(v.piece, stem.with_suffix(".png"), prompt_end_tick=v.prompt_end_tick,
                                                title=f"variation {v.index + 1} (seed {s.seed})")
            if render.get("wav", True):
                v.files["wav"] = render_wav(v.piece, stem.with_suffix(".wav"), soundfont=render.get("soundfont"))


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


def _prompt_end_tick(codec: MidiChar, prompt_text: str) -> int:
    """First tick after the prompt's last onset (notes before it are drawn as prompt)."""
    notes, _ = codec.decode_grid(prompt_text)
    if not notes:
        return 0
    return max(p for p, *_ in notes) * (codec.ticks_per_beat // codec.grid) + 1
