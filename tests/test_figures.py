"""The server's per-variation figures (theremin.serve.figures): a figure the new notes cannot measure is left out."""

from __future__ import annotations

import random

import midi_factory as mf

from theremin.codec.midichar import MidiChar
from theremin.music.midi import Part, Piece
from theremin.serve.figures import Figures


def test_a_drums_only_roll_has_no_pitch_figures_rather_than_zeros():
    codec = MidiChar()
    band = mf.band_piece(random.Random(0), [Part(0, name="Keys"), Part(33, name="Bass"), Part(0, True, "Drums")])
    text = codec.encode(band)
    figures = Figures([text], codec)
    of_itself = figures.of(text, 0)
    assert set(of_itself) == {"style/pitch_class_overlap", "style/interval_oa", "memo/longest_copied_notes"}
    assert of_itself["style/pitch_class_overlap"] > 0.9  # the corpus itself

    drums = Piece([n for n in band.notes if n.part == 2], band.ticks_per_beat, parts=band.parts)
    assert set(figures.of(codec.encode(drums), 0)) == {"memo/longest_copied_notes"}
