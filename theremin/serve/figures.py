"""Per-variation style and memorisation figures against the model's training corpus (theremin.metrics.style).

The corpus side (histograms, the copy index) is built once when the server starts, so a roll pays only for its
own notes: milliseconds. The same definitions as ``theremin-evaluate``, on each variation's generated notes.
"""

from __future__ import annotations

import logging
from pathlib import Path

from theremin.codec.midichar import MidiChar
from theremin.metrics.copies import CopyIndex
from theremin.metrics.notes import _generated, decode_notes, load_corpus
from theremin.metrics.style import histogram_overlap, interval_histogram, pitch_class_histogram

log = logging.getLogger("theremin.serve")


class Figures:
    """style/pitch_class_overlap, style/interval_oa and memo/longest_copied_notes of one sample. The copy search
    is the costly one (~10 ms a variation on the demo corpus, on the request path): exact runs only, no
    transposed ones (theremin-evaluate reports those)."""

    def __init__(self, corpus: list[str], codec: MidiChar):
        self.codec = codec
        ref = [decode_notes(t, codec) for t in corpus]
        self.pieces, self.notes = len(ref), int(sum(len(n) for n in ref))
        self._pc, self._iv = pitch_class_histogram(ref), interval_histogram(ref)
        self._index = CopyIndex.from_notes(ref, codec)

    @classmethod
    def for_corpus(cls, corpus_dir: Path | None, codec: MidiChar) -> Figures | None:
        """None (figures left out, said once in the log) when the checkpoint's corpus is not on this disk."""
        if corpus_dir is None or not (Path(corpus_dir) / "train.txt").is_file():
            log.warning("the checkpoint's corpus %s is not here: rolls come without style/memorisation figures",
                        corpus_dir)
            return None
        return cls(load_corpus(corpus_dir), codec)

    def of(self, text: str, prompt_notes: int) -> dict[str, float]:
        notes = decode_notes(text, self.codec)
        gen = _generated(notes, prompt_notes)
        # a figure is left out when the new notes give it nothing to measure (a drums-only roll has no pitch
        # classes; one pitched onset, no interval): 0 would read as "nothing like the corpus"
        pcs, ivs = pitch_class_histogram([gen]), interval_histogram([gen])
        out = {}
        if pcs.sum():
            out["style/pitch_class_overlap"] = histogram_overlap(pcs, self._pc)
        if ivs.sum():
            out["style/interval_oa"] = histogram_overlap(ivs, self._iv)
        out["memo/longest_copied_notes"] = float(self._index.find(notes, prompt_notes).length)
        return {k: round(v, 4) for k, v in out.items()}
