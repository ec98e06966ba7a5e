"""A checkpoint's held-out figure on a folder of your choice (the library behind theremin-score).

    theremin-score ckpt_path=outputs/.../checkpoints/best.ckpt input_dir=~/midi/test
    → bits/note = 3.2145   (notes, files, tokens; per-file figures with per_file=true)

The folder is prepared exactly as a corpus is (:func:`theremin.data.corpus.build_corpus` with no val split and no
augmentation: the same cleaning, refusals and de-duplication, one piece per usable file, in path order), each
piece framed as the DataModule frames it (``BOS ids EOS``) and the stream scored in the consecutive windows of
:class:`theremin.data.datamodule.ValWindows`. So on the files of a run's val split it gives that run's
``val/bits_per_note`` (tests/test_score.py checks it): the total NLL in bits over every note, counted by the tokenizer's
``note_counts`` (a note spelled over several tokens counts where it completes). Per instrument family too
(General MIDI's 16 families, e.g. Piano, Bass, Guitar, and Drums): a token's bits go to the notes it completes,
evenly, and the bits of tokens that complete no note (rests, part switches, EOS) to the next note completed
(the last piece's last note for what trails it), so the families' bits add up to the total.
"""

from __future__ import annotations

import logging
import math
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from theremin import config as resolvers  # noqa: F401
from theremin.codec.kinds import Tokenizer
from theremin.codec.tokenizer import unknown_note_share
from theremin.data.corpus import build_corpus, load_manifest
from theremin.data.datamodule import ValWindows
from theremin.errors import ThereminError
from theremin.model.checkpoint import open_checkpoint

log = logging.getLogger("theremin.model.scoring")


class ScoreError(ThereminError):
    """A folder or checkpoint that cannot be scored; the message names it and the reason."""


@dataclass
class ScoreReport:
    bits_per_note: float
    notes: int
    files: int
    tokens: int
    input_dir: str
    checkpoint: str
    failed: dict[str, str] = field(default_factory=dict)  # files refused by the corpus rules → reason
    duplicates: int = 0
    per_file: dict[str, dict] = field(default_factory=dict)  # path → {notes, tokens, bits_per_note}
    factored_share: float = 0.0  # notes spelled by the factored fallback (unknown to the tokenizer)
    per_family: dict[str, dict] = field(default_factory=dict)  # family → {notes, bits_per_note}

    def summary(self, per_file: bool = False) -> str:
        lines = [f"bits/note = {self.bits_per_note:.4f}",
                 f"  notes = {self.notes:,}  files = {self.files:,}  tokens = {self.tokens:,}  "
                 f"({self.notes / max(self.tokens, 1):.2f} notes/token; {self.factored_share:.0%} of the notes "
                 f"spelled by the factored fallback)",
                 f"  checkpoint {self.checkpoint}", f"  folder {self.input_dir}"]
        if self.failed or self.duplicates:
            lines.append(f"  left out: {len(self.failed)} unusable files, {self.duplicates} duplicates")
            lines += [f"    {p}: {why}" for p, why in list(self.failed.items())[:5]]
        if len(self.per_family) > 1:
            lines.append("  per instrument family: " + ", ".join(
                f"{fam} {f['bits_per_note']:.4f} ({f['notes']:,} notes)"
                for fam, f in sorted(self.per_family.items(), key=lambda kv: -kv[1]["notes"])))
        if per_file:
            for p, f in sorted(self.per_file.items(), key=lambda kv: kv[1]["bits_per_note"]):
                lines.append(f"  {f['bits_per_note']:8.4f}  {f['notes']:7,} notes  {p}")
        return "\n".join(lines)


def frame(tok: Tokenizer, lines: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(ids, notes completed per id, piece index per id) of pieces framed as the DataModule frames them."""
    ids: list[int] = []
    notes: list[int] = []
    owner: list[int] = []
    for k, line in enumerate(lines):
        piece = tok.encode(line)
        ids += [tok.bos_id, *piece, tok.eos_id]
        notes += [0, *tok.note_counts(piece), 0]
        owner += [k] * (len(piece) + 2)
    return np.asarray(ids, dtype=np.int64), np.asarray(notes, dtype=np.int64), np.asarray(owner, dtype=np.int64)


@torch.no_grad()
def token_nll(model, ids: np.ndarray, block_size: int, batch_size: int = 16, device: str = "cpu") -> np.ndarray:
    """NLL in nats of every token after the first, in the consecutive windows validation uses
    (:class:`theremin.data.datamodule.ValWindows`: each token predicted once, context from its window's start)."""

    zeros = np.zeros(len(ids), dtype=np.uint8)
    windows = ValWindows(ids, zeros, block_size)
    out = np.zeros(len(ids), dtype=np.float64)
    model.eval()
    for lo in range(0, len(windows), batch_size):
        batch = [windows[i] for i in range(lo, min(lo + batch_size, len(windows)))]
        x = torch.stack([b[0] for b in batch]).to(device)
        y = torch.stack([b[1] for b in batch]).to(device)
        _, nll = model(x, y, reduction="none")
        nll = nll.double().cpu().numpy()
        for j, i in enumerate(range(lo, lo + len(batch))):
            start = windows.windows[i] * block_size  # window i predicts tokens start+1 .. start+block_size
            n = int((y[j] >= 0).sum())
            out[start + 1: start + 1 + n] = nll[j, :n]
    return out


def score_texts(model, tok: Tokenizer, lines: list[str], names: list[str], block_size: int | None = None,
                batch_size: int = 16, device: str = "cpu") -> dict:
    """Bits per note of pieces (midichar texts) under a model; totals and per piece."""
    block_size = int(block_size or model.config.block_size)
    ids, notes, owner = frame(tok, lines)
    if len(ids) < 2:
        raise ScoreError("nothing to score: no tokens")
    nll = token_nll(model, ids, block_size, batch_size, device)
    bits = nll / math.log(2)
    per = {}
    for k, name in enumerate(names):
        m = owner == k
        n = int(notes[m].sum())
        per[name] = {"notes": n, "tokens": int(m.sum()), "bits_per_note": float(bits[m].sum() / max(n, 1))}
    total_notes = int(notes.sum())
    return {"bits_per_note": float(bits.sum() / max(total_notes, 1)), "notes": total_notes,
            "tokens": int(len(ids) - 1), "per_file": per,
            "per_family": per_family(bits, notes, [note_families(tok.codec, ln) for ln in lines])}


def note_families(codec, text: str) -> list[str]:
    """The instrument family of each note of a midichar text, in text order ("Drums" for a drum part)."""
    from theremin.music.gm import family_name

    _, _, parts = codec.decode_parts(text)
    fam = ["Drums" if p.is_drum else family_name(p.program) for p in parts]
    return [fam[n[4]] for n in codec.decode_grid(text)[0]]


def per_family(bits: np.ndarray, notes: np.ndarray, families: list[list[str]]) -> dict[str, dict]:
    """Bits/note per family (see the module docstring): ``bits`` and ``notes`` per token of the framed
    stream, ``families`` the notes' families piece by piece, in the stream's order."""
    order = [f for piece in families for f in piece]
    if len(order) != int(notes.sum()):  # a tokenizer whose note counts differ from the codec's: no breakdown
        return {}
    total: dict[str, list[float]] = {}
    pending, k = 0.0, 0
    for b, c in zip(bits.tolist(), notes.tolist()):
        pending += b
        if c:
            for f in order[k:k + c]:
                acc = total.setdefault(f, [0.0, 0])
                acc[0] += pending / c
                acc[1] += 1
            pending, k = 0.0, k + c
    if pending and order:
        total[order[-1]][0] += pending
    return {f: {"notes": n, "bits_per_note": b / n} for f, (b, n) in total.items()}


def prepare_folder(input_dir: str | os.PathLike, codec, workdir: Path, *, min_notes: int = 8,
                   max_notes: int | None = None, workers: int | None = None, progress: bool = False):
    """The folder's pieces as a corpus prepares them: (lines, relative paths, corpus report)."""

    kw = {} if max_notes is None else {"max_notes": int(max_notes)}
    report = build_corpus(input_dir, workdir, codec, workers, val_fraction=0.0, transpose=None,
                          min_notes=int(min_notes), progress=progress, **kw)
    lines = [ln for ln in report.train_path.read_text(encoding="utf-8").split("\n") if ln]
    rows = [r for r in load_manifest(workdir)["files"] if r["split"] == "train"]
    if len(rows) != len(lines):  # one line per file without augmentation: anything else is a corpus change
        raise RuntimeError(f"{report.train_path}: {len(lines)} lines for {len(rows)} files")
    return lines, [r["path"] for r in rows], report


def load(ckpt_path: str | os.PathLike, device: str = "cpu"):
    """(model, tokenizer) of a checkpoint, opened with every check of theremin.model.checkpoint.open_checkpoint."""

    try:
        ck = open_checkpoint(Path(os.path.expanduser(str(ckpt_path))))
    except ThereminError as e:
        raise ScoreError(f"ckpt_path: {e}") from None
    if getattr(ck.tokenizer, "kind", "midichar") != "midichar":
        raise ScoreError(f"ckpt_path={ckpt_path}: scoring needs a midichar tokenizer (per-token note counts)")
    return ck.build_model(device), ck.tokenizer


def score_folder(ckpt_path: str | os.PathLike, input_dir: str | os.PathLike, *, device: str = "cpu",
                 block_size: int | None = None, batch_size: int = 16, min_notes: int = 8,
                 max_notes: int | None = None, workers: int | None = None, progress: bool = False,
                 loaded=None) -> ScoreReport:
    """Score every usable MIDI file under ``input_dir`` with the checkpoint (``loaded``: (model, tokenizer)
    already loaded from it)."""

    input_dir = Path(os.path.expanduser(str(input_dir)))
    model, tok = loaded if loaded is not None else load(ckpt_path, device)
    if not input_dir.is_dir():
        raise ScoreError(f"input_dir={input_dir} is not a folder")
    with tempfile.TemporaryDirectory(prefix="theremin-score-") as tmp:
        try:
            lines, names, report = prepare_folder(input_dir, tok.codec, Path(tmp), min_notes=min_notes,
                                                  max_notes=max_notes, workers=workers, progress=progress)
        except ThereminError as e:
            raise ScoreError(f"input_dir={input_dir}: {e}") from None
    if block_size is not None and block_size > model.config.block_size:
        raise ScoreError(f"block_size={block_size} exceeds the checkpoint's context of {model.config.block_size}")
    s = score_texts(model, tok, lines, names, block_size, batch_size, device)
    return ScoreReport(bits_per_note=s["bits_per_note"], notes=s["notes"], files=len(lines), tokens=s["tokens"],
                       input_dir=str(input_dir), checkpoint=str(ckpt_path), failed=dict(report.failed),
                       duplicates=len(report.duplicates), per_file=s["per_file"],
                       factored_share=unknown_note_share(tok, lines), per_family=s["per_family"])
