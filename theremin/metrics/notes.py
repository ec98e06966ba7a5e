"""Corpora and midichar text as the figures read them: a corpus split's pieces (:func:`load_corpus`), its codec,
and a text as a note array (position, duration, pitch, velocity index) in grid units."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from theremin.codec.midichar import MidiChar
from theremin.data.corpus import load_manifest
from theremin.errors import ThereminError


def decode_notes(text: str, codec: MidiChar) -> np.ndarray:
    """(n, 6) int64 array of (position, duration, pitch, velocity_index, part, is_drum) in text order, grid
    units (columns 0-3 as before instruments; a drum note's pitch is a drum sound: see :func:`pitched`).

    Invalid characters (an unconstrained model sample) are skipped rather than failing the evaluation.
    """
    notes, _, parts = codec.decode_parts(text, errors="skip")
    drum = [int(p.is_drum) for p in parts]
    return np.asarray([(*n, drum[n[4]]) for n in notes], dtype=np.int64).reshape(-1, 6)


def pitched(notes: np.ndarray) -> np.ndarray:
    """The rows of :func:`decode_notes` that are not drum notes."""
    return notes[notes[:, 5] == 0] if notes.shape[1] > 5 else notes


def _generated(notes: np.ndarray, skip: int) -> np.ndarray:
    return notes[max(0, int(skip)):]

def _gaps(notes: np.ndarray) -> np.ndarray:
    """Grid steps from the previous note's onset (from position 0 for the first note)."""
    pos = notes[:, 0]
    return np.diff(pos, prepend=0) if len(pos) else pos


def corpus_codec(corpus_dir: str | Path) -> MidiChar:
    """The codec a corpus was built with (from its manifest), else the default codec."""
    m = load_manifest(Path(corpus_dir))
    cfg = ((m or {}).get("codec") or {}).get("config")
    return MidiChar.from_recorded(cfg) if cfg else MidiChar()

def load_corpus(
    corpus_dir: str | Path, split: str = "train", limit: int | None = None, augmented: bool = False
) -> list[str]:
    """The pieces of ``split`` (one midichar text per line of ``<split>.txt``), at most ``limit``.

    Without ``augmented``, transposed copies made by the corpus build are left out when the manifest says
    which lines they are (the first line of each file's block is the original): a style reference with all
    twelve keys would flatten the pitch-class histogram, and the copy index would be 12x larger.
    """
    corpus_dir = Path(corpus_dir)
    path = corpus_dir / f"{split}.txt"
    if not path.exists():
        raise ThereminError(f"{path}: no such corpus split (expected {split}.txt in {corpus_dir})")
    lines = [ln for ln in path.read_text(encoding="utf-8").split("\n") if ln]
    m = load_manifest(corpus_dir)
    if not augmented and m and (m.get("settings") or {}).get("transpose"):
        blocks = [int(r.get("lines", 1)) for r in m.get("files", []) if r.get("split") == split]
        if sum(blocks) == len(lines):  # otherwise the manifest is not about this file: keep every line
            starts = np.cumsum([0, *blocks[:-1]])
            lines = [lines[s] for s in starts]
    return lines[:limit] if limit is not None else lines

def _split_paths(corpus_dir: Path, split: str) -> list[str] | None:
    m = load_manifest(corpus_dir)
    return [r["path"] for r in m.get("files", []) if r.get("split") == split] if m else None
