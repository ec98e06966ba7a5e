"""Midichar text as note arrays (position, duration, pitch, velocity index) in grid units, for the figures."""

from __future__ import annotations

import numpy as np

from theremin.codec.midichar import MidiChar


def decode_notes(text: str, codec: MidiChar) -> np.ndarray:
    """(n, 4) int64 array of (position, duration, pitch, velocity_index) in text order, grid units.

    Invalid characters (an unconstrained model sample) are skipped rather than failing the evaluation.
    """
    notes, _ = codec.decode_grid(text, errors="skip")
    return np.asarray(notes, dtype=np.int64).reshape(-1, 4)

def _generated(notes: np.ndarray, skip: int) -> np.ndarray:
    return notes[max(0, int(skip)):]

def _gaps(notes: np.ndarray) -> np.ndarray:
    """Grid steps from the previous note's onset (from position 0 for the first note)."""
    pos = notes[:, 0]
    return np.diff(pos, prepend=0) if len(pos) else pos
