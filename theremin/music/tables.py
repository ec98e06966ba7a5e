"""Note tables (CSV rows ``pitch, onset_s, duration_s``) as MIDI: the Weimar Jazz Database's solos.

A table holds performed timing in seconds and no tempo, meter or velocity. It becomes a :class:`Piece` at
120 bpm with ``ticks_per_beat=480`` (960 ticks per second), every note at one fixed velocity. Nothing is
quantised beyond the tick: each onset and each end is rounded to its nearest tick on its own (absolute times, not
deltas, so errors never accumulate), i.e. within 0.52 ms of the table, except that a note shorter than half a tick
(5 of the Weimar solos' 127,747) lasts one tick: a zero-length note does not survive a MIDI file
(:func:`theremin.music.midi.write_midi` loses it), and a lost note is worse than 1 ms of length.

A row that is not three finite numbers, a pitch that is not a whole number in 0..127, a negative onset or duration,
a time past 2**31 ticks: a :class:`NoteTableError` naming the file and line. Blank lines are skipped; no
header.
"""

from __future__ import annotations

import csv
import math
import os
from pathlib import Path

import numpy as np

from theremin.errors import ThereminError
from theremin.music.midi import Piece, merge_notes, write_midi

TICKS_PER_BEAT = 480
BPM = 120
TICKS_PER_SECOND = TICKS_PER_BEAT * BPM // 60  # 960
VELOCITY = 80


class NoteTableError(ThereminError):
    """A note table theremin cannot read; the message names the file (and line) and the reason."""


def _row(path, line: int, row: list[str]) -> tuple[int, int, int]:
    where = f"{path}: line {line}"
    if len(row) != 3:
        raise NoteTableError(f"{where}: {len(row)} fields, expected 3 (pitch, onset_s, duration_s)")
    try:
        pitch, onset, duration = (float(x) for x in row)
    except ValueError as e:
        raise NoteTableError(f"{where}: not a number ({e})") from e
    if not all(math.isfinite(x) for x in (pitch, onset, duration)):
        raise NoteTableError(f"{where}: not a finite number ({', '.join(row)})")
    if pitch != int(pitch) or not 0 <= pitch <= 127:
        raise NoteTableError(f"{where}: pitch {row[0]} is not a MIDI pitch (a whole number in 0..127)")
    if onset < 0 or duration < 0:
        raise NoteTableError(f"{where}: negative onset or duration ({row[1]}, {row[2]})")
    start = round(onset * TICKS_PER_SECOND)
    end = max(start + 1, round((onset + duration) * TICKS_PER_SECOND))
    if end >= 2**31:
        raise NoteTableError(f"{where}: time {onset + duration:.1f} s is past 2**31 ticks")
    return start, end, int(pitch)


def read_note_table(path: str | os.PathLike, velocity: int = VELOCITY) -> Piece:
    """One note table as a Piece (120 bpm, 480 ticks per beat, 4/4, every note at ``velocity``)."""
    if not 1 <= velocity <= 127:
        raise NoteTableError(f"{path}: velocity {velocity} is not in 1..127")
    rows = []
    with open(path, newline="", encoding="utf-8") as f:
        for line, row in enumerate(csv.reader(f), start=1):
            if row and any(x.strip() for x in row):
                rows.append(_row(path, line, row))
    if not rows:
        raise NoteTableError(f"{path}: no notes")
    start, end, pitch = (np.asarray(c, dtype=np.int64) for c in zip(*rows))
    notes = merge_notes(start, end, pitch, np.full(len(rows), velocity, dtype=np.int64))
    return Piece(notes=notes, ticks_per_beat=TICKS_PER_BEAT, tempos=[], time_signatures=[(0, 4, 4)])


def write_note_table_midi(src: str | os.PathLike, dst: str | os.PathLike, velocity: int = VELOCITY) -> Path:
    """Convert one note table to a MIDI file (written atomically)."""
    return write_midi(read_note_table(src, velocity), dst)
