"""Built-in prompts a musician can roll from without a file of their own (the ``demo_prompt`` field).

Two made in code (any model), plus the opening bars of the first pieces of the checkpoint's validation split
(pieces it never trained on) when its corpus is on this disk.
"""

from __future__ import annotations

import re
from pathlib import Path

from theremin.codec.midichar import MidiChar
from theremin.data.corpus import load_manifest
from theremin.music.midi import Note, Piece

TPB = 480
BARS = 2  # bars of a corpus piece kept as its prompt


def _piece(notes: list[tuple[float, float, int]], bpm: int = 100) -> Piece:
    """(start beat, beats, pitch) → Piece in 4/4."""
    ns = [Note(round(s * TPB), round((s + d) * TPB), p, 80) for s, d, p in notes]
    ns.sort(key=lambda n: (n.start, n.pitch))
    return Piece(ns, TPB, [(0, round(60e6 / bpm))], [(0, 4, 4)])


def made_in_code() -> dict[str, Piece]:
    scale = [(i * 0.5, 0.5, p) for i, p in enumerate((60, 62, 64, 65, 67, 69, 71, 72))]
    chords = [(bar * 2.0, 2.0, p + root) for bar, root in enumerate((0, 7, 9, 5)) for p in (48, 64, 67, 72)]
    return {"c-major-scale": _piece(scale), "pop-progression": _piece(chords)}


def from_corpus(corpus_dir: Path | None, codec: MidiChar, count: int = 4) -> dict[str, Piece]:
    """The first ``count`` validation pieces, cut to their first BARS bars, named after their files."""
    if corpus_dir is None or not (Path(corpus_dir) / "val.txt").is_file():
        return {}
    lines = [ln for ln in (Path(corpus_dir) / "val.txt").read_text(encoding="utf-8").split("\n") if ln]
    manifest = load_manifest(corpus_dir) or {}
    names = [Path(f["path"]).stem for f in manifest.get("files", []) if f.get("split") == "val"]
    if len(names) != len(lines):
        names = [f"val-{i + 1}" for i in range(len(lines))]
    out = {}
    for name, text in list(zip(names, lines))[:count]:
        piece = codec.decode(text)
        num, den = piece.time_signatures[0][1:] if piece.time_signatures else (4, 4)
        end = BARS * piece.ticks_per_beat * num * 4 // den
        piece.notes = [n for n in piece.notes if n.start < end]
        if piece.notes:
            out[re.sub(r"[^A-Za-z0-9_.-]+", "-", name)[:60]] = piece
    return out
