"""Reading (symusic), cleaning and writing (miditoolkit) MIDI files.

A :class:`Piece` is what the rest of theremin sees of a MIDI file: one merged, drum-free list of notes in
ticks, plus the tempo map and time signatures. Every reason a file cannot be used is a :class:`MidiError`
whose message names the file and the reason, so a corpus build can report it and go on.

Cleaning rules (applied by :func:`read_midi`):
- drum tracks (channel 10, ``is_drum``) are dropped; all other instruments merge onto one track;
- notes of one pitch that start on the same tick sound as one: the longest is kept;
- a zero-length note (note-on then its note-off on the same tick) keeps its onset and lasts zero ticks here;
  the codec gives it the shortest duration on its grid. A note-off with no sounding note is ignored, and a
  note-on never closed before the end of its track is dropped (as every MIDI player does);
- MIDI type 0 and 1 are read the same way (one shared timeline); type 2 (independent sequences, each with
  its own timeline) has no single timeline to merge, so it is refused with that reason;
- only regular files are read (a FIFO or a device is refused unopened: reading never blocks); a file with
  more than ``max_notes`` notes or times beyond 2**31 ticks is refused.
"""

from __future__ import annotations

import bisect
import itertools
import os
import stat
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from theremin.errors import ThereminError
from theremin.fsio import atomic_write, file_kind

DEFAULT_TEMPO_US = 500_000  # MIDI's default: 120 quarter notes per minute
MIDI_SUFFIXES = (".mid", ".midi", ".kar")
# a file with more notes is refused before any per-note work (memory and time stay bounded); the longest piano
# performances hold a few 10^4. conf/data/*.yaml (max_notes) overrides it for a corpus. Absurd note lengths and
# silences are the codec's to refuse (codec.max_note_beats, codec.max_gap_beats).
PROMPT_NOTES_MARKER = "prompt notes"  # marker of a rolled variation: how many of its notes are the prompt's
MAX_NOTES = 200_000


class MidiError(ThereminError):
    """A MIDI file theremin cannot use; the message names the file and the reason."""

    def __init__(self, path: str | os.PathLike | None, reason: str):
        self.path = None if path is None else str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}" if self.path else reason)


@dataclass(frozen=True, order=True)
class Note:
    start: int  # ticks
    end: int  # ticks (== start for a zero-length note)
    pitch: int  # 0..127
    velocity: int  # 1..127


@dataclass
class Piece:
    notes: list[Note]  # sorted by (start, pitch)
    ticks_per_beat: int
    tempos: list[tuple[int, int]] = field(default_factory=list)  # (tick, microseconds per quarter note)
    time_signatures: list[tuple[int, int, int]] = field(default_factory=list)  # (tick, numerator, denominator)

    def seconds(self, tick: int) -> float:
        """Time in seconds of a tick, with the tempo map applied."""
        return self.clock()(tick)

    def clock(self) -> Callable[[int], float]:
        """``seconds`` for many ticks: the tempo map is summed once, each tick then costs a bisection (a file
        with a tempo change on every note stays linear)."""
        tpb, t, last_tick, us = self.ticks_per_beat, 0.0, 0, DEFAULT_TEMPO_US
        starts, segments = [0], [(0, DEFAULT_TEMPO_US, 0.0)]  # (tick, us from there, seconds at tick)
        for at, tempo in self.tempos:
            t += (at - last_tick) * us / 1e6 / tpb
            last_tick, us = at, tempo
            starts.append(at)
            segments.append((at, tempo, t))

        def seconds(tick: int) -> float:
            at, us, sec = segments[bisect.bisect_right(starts, tick) - 1]
            return sec + (tick - at) * us / 1e6 / tpb

        return seconds


def is_midi_path(path: str | os.PathLike) -> bool:
    return str(path).lower().endswith(MIDI_SUFFIXES)


def read_midi(path: str | os.PathLike, min_notes: int = 1, *, max_notes: int | None = MAX_NOTES) -> Piece:
    """Read and clean one MIDI file; raise :class:`MidiError` with the reason when it cannot be used.

    ``max_notes`` (None: no cap) refuses a file before any per-note work: memory and time stay bounded.
    Parsing uses symusic (C++): measured on 429 Bach chorales it makes corpus prep ~4x faster than
    miditoolkit (whose pure-Python mido parsing was 64 % of prep time, scripts/bench_prep.py), and it reads
    the tempo map of type 1 files correctly (miditoolkit restarts its tempo list at every track's tick-0
    tempo). miditoolkit still writes files (:func:`write_midi`).
    """
    return parse_midi(read_regular_file(path), path, min_notes=min_notes, max_notes=max_notes)






def parse_midi(
    data: bytes,
    path: str | os.PathLike | None = None,
    *,
    min_notes: int = 1,
    max_notes: int | None = MAX_NOTES,
) -> Piece:
    """:func:`read_midi` on bytes already read; ``path`` only names the file in errors."""
    from symusic import Score  # imported here: worker processes import this module

    if not data:
        raise MidiError(path, "empty file (0 bytes)")
    if len(data) < 14 or data[:4] != b"MThd":
        raise MidiError(path, "not a MIDI file (no MThd header)")
    if int.from_bytes(data[8:10], "big") == 2:
        raise MidiError(path, "MIDI type 2 (independent sequences without a shared timeline) is not supported")
    try:
        score = Score.from_midi(data)  # from bytes: symusic picks a parser by suffix, and .kar is MIDI too
    except Exception as e:  # symusic raises RuntimeError/ValueError/... on truncated or corrupt files
        raise MidiError(path, f"unreadable MIDI ({type(e).__name__}: {e})"[:300]) from e
    tpb = score.ticks_per_quarter
    if tpb <= 0:
        raise MidiError(path, f"unsupported time division (ticks_per_beat={tpb}, SMPTE?)")
    tracks = score.tracks
    if not any(len(t.notes) for t in tracks):
        raise MidiError(path, "no notes")
    pitched = [t for t in tracks if not t.is_drum and len(t.notes)]
    if not pitched:
        raise MidiError(path, "drums only (all notes are on drum tracks)")
    count = sum(len(t.notes) for t in pitched)
    if max_notes is not None and count > max_notes:  # checked before any per-note work
        raise MidiError(path, f"too many notes ({count:,} > max_notes={max_notes:,})")
    arrays = [t.notes.numpy() for t in pitched]
    start = np.concatenate([a["time"] for a in arrays]).astype(np.int64)
    end = start + np.concatenate([a["duration"] for a in arrays]).astype(np.int64)
    if start.min() < 0 or end.max() >= 2**31:  # symusic keeps ticks in 32 bits: later ones wrap around
        raise MidiError(path, "event times beyond 2**31 ticks (a delta-time overflow)")
    pitch = np.concatenate([a["pitch"] for a in arrays]).astype(np.int64)
    velocity = np.concatenate([a["velocity"] for a in arrays]).astype(np.int64)
    notes = merge_notes(start, end, pitch, velocity)
    if len(notes) < min_notes:
        raise MidiError(path, f"too few notes ({len(notes)} < min_notes={min_notes})")
    tempos = clean_tempos((tc.time, tc.mspq) for tc in score.tempos)
    sigs = sorted({(ts.time, ts.numerator, ts.denominator) for ts in score.time_signatures})
    return Piece(notes=notes, ticks_per_beat=tpb, tempos=tempos, time_signatures=sigs)


def merge_notes(start, end, pitch, velocity) -> list[Note]:
    """Raw notes (numpy arrays, ticks) merged onto one track: notes of one pitch that start on one tick sound
    as one, the longest wins (of equal ones, the loudest); sorted by (start, pitch). Vectorised: no Python
    object per raw note."""

    keep = (pitch >= 0) & (pitch <= 127)
    start, end, pitch = np.maximum(start[keep], 0), end[keep], pitch[keep]
    end, velocity = np.maximum(end, start), np.clip(velocity[keep], 1, 127)
    order = np.lexsort((velocity, end, pitch, start))  # by (start, pitch), then the longest, then the loudest
    start, end, pitch, velocity = start[order], end[order], pitch[order], velocity[order]
    last = np.ones(len(start), dtype=bool)  # the last of each (start, pitch) run wins
    last[:-1] = (start[1:] != start[:-1]) | (pitch[1:] != pitch[:-1])
    cols = (a[last].tolist() for a in (start, end, pitch, velocity))
    return [Note(s, e, p, v) for s, e, p, v in zip(*cols)]


def clean_tempos(tempos: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    """One tempo per tick (the last written wins), redundant repeats removed."""
    by_tick: dict[int, int] = {}
    for tick, us in tempos:
        by_tick[max(0, int(tick))] = us
    out: list[tuple[int, int]] = []
    current = DEFAULT_TEMPO_US
    for tick in sorted(by_tick):
        if by_tick[tick] != current:
            out.append((tick, by_tick[tick]))
            current = by_tick[tick]
    return out


MAX_DELTA_TICKS = 0x0FFFFFFF  # the largest delta time a MIDI file can store (a 4-byte variable-length quantity)


def write_midi(
    piece: Piece,
    path: str | os.PathLike,
    program: int = 0,
    meta: dict[str, str] | None = None,
) -> Path:
    """Write a piece as a MIDI file, atomically (a temp file in the same folder, then rename).

    One track, plus an extra track (own channel) for each layer of notes that overlap a note of the same
    pitch: within one track a reader pairs a note-off with the earliest sounding note of its pitch, which
    would swap such durations. ``meta`` entries are stored as text markers at tick 0 ("key: value"), e.g.
    the provenance of a generation.
    """
    import miditoolkit
    from miditoolkit.midi.containers import Instrument, Marker, TempoChange, TimeSignature
    from miditoolkit.midi.containers import Note as MtkNote

    path = Path(path)
    midi = miditoolkit.MidiFile(ticks_per_beat=piece.ticks_per_beat)
    layers: list[list[MtkNote]] = []
    free_at: list[dict[int, int]] = []  # per layer: pitch → tick its last note ends
    for n in sorted(piece.notes):
        layer = next((i for i, f in enumerate(free_at) if f.get(n.pitch, -1) <= n.start), None)
        if layer is None:
            layer = len(layers)
            layers.append([])
            free_at.append({})
        layers[layer].append(MtkNote(velocity=n.velocity, pitch=n.pitch, start=n.start, end=n.end))
        free_at[layer][n.pitch] = n.end
    midi.instruments = []
    for i, notes in enumerate(layers or [[]]):
        ins = Instrument(program=program, is_drum=False, name="theremin" if i == 0 else f"theremin overlap {i}")
        ins.notes = notes
        midi.instruments.append(ins)
    midi.tempo_changes = [TempoChange(tempo=60_000_000 / us, time=t) for t, us in piece.tempos] or [
        TempoChange(tempo=60_000_000 / DEFAULT_TEMPO_US, time=0)
    ]
    midi.time_signature_changes = [TimeSignature(n, d, t) for t, n, d in piece.time_signatures]
    midi.markers = [Marker(text=f"{k}: {v}", time=0) for k, v in (meta or {}).items()]
    meta_times = [0] + [t for t, _ in piece.tempos] + [t for t, _, _ in piece.time_signatures]
    for times in [meta_times, *([0, *(t for n in notes for t in (n.start, n.end))] for notes in layers)]:
        times = sorted(times)
        gap = max((b - a for a, b in itertools.pairwise(times)), default=0)
        if gap > MAX_DELTA_TICKS:  # a longer delta cannot be stored: the file would read back as garbage
            raise MidiError(path, f"cannot write a gap of {gap} ticks between two events (a MIDI file stores at "
                            f"most {MAX_DELTA_TICKS}); shorten the silence or lower ticks_per_beat")
    atomic_write(path, lambda tmp: midi.dump(str(tmp)))
    return path


def read_regular_file(path: str | os.PathLike) -> bytes:
    """The bytes of a regular file, or :class:`MidiError`. Never blocks or has side effects on a FIFO or a
    device: the type is checked before opening, and again on the open descriptor (opened non-blocking, as
    the path may be swapped in between)."""
    try:
        st = os.stat(path)
        if not stat.S_ISREG(st.st_mode):
            raise MidiError(path, f"not a regular file ({file_kind(st.st_mode)}): not read")
        flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_CLOEXEC", 0)
        fd = os.open(path, flags)
        with open(fd, "rb", closefd=True) as f:
            mode = os.fstat(fd).st_mode
            if not stat.S_ISREG(mode):
                raise MidiError(path, f"not a regular file ({file_kind(mode)}): not read")
            return f.read()
    except OSError as e:
        raise MidiError(path, f"unreadable: {e.strerror or e}") from e
