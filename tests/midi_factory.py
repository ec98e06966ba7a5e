"""Build MIDI files in code for tests (nothing binary is committed).

Two levels:
- :func:`make_midi` writes a well-formed file through miditoolkit from note tuples ``(start, end, pitch,
  velocity)`` in ticks, with optional tempo map, time signatures, drum notes and more tracks;
- :func:`write_smf` writes raw Standard MIDI File bytes from ``(delta, event_bytes)`` lists, for what a
  well-behaved writer cannot produce (note-offs without note-ons, type 2, odd delta times, ...).

Import the plain functions (``from midi_factory import make_midi``) or use the fixtures of the same names
from tests/conftest.py.
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterable, Sequence
from pathlib import Path

NoteT = tuple[int, int, int, int]  # (start tick, end tick, pitch, velocity)

MAJOR = (0, 2, 4, 5, 7, 9, 11, 12)
MINOR = (0, 2, 3, 5, 7, 8, 10, 12)


# ---------------------------------------------------------------------------------------- note lists


def scale(root: int = 60, *, start: int = 0, step: int = 480, length: int | None = None, velocity: int = 80,
          intervals: Sequence[int] = MAJOR) -> list[NoteT]:
    """One note per interval, ``step`` ticks apart, each ``length`` ticks long (default: legato)."""
    length = step if length is None else length
    return [(start + i * step, start + i * step + length, root + iv, velocity) for i, iv in enumerate(intervals)]


def chords(progression: Sequence[Sequence[int]] = ((60, 64, 67), (65, 69, 72), (67, 71, 74), (60, 64, 67)),
           *, start: int = 0, length: int = 960, velocity: int = 70) -> list[NoteT]:
    """Block chords, one after the other, each ``length`` ticks long."""
    return [(start + i * length, start + (i + 1) * length, p, velocity)
            for i, chord in enumerate(progression) for p in chord]


def random_notes(seed: int, n: int = 32, *, tpb: int = 480, low: int = 48, high: int = 84) -> list[NoteT]:
    """A deterministic pseudo-random melody on a 16th-note grid (different seeds → different files)."""
    rng = random.Random(seed)
    sixteenth = tpb // 4
    t, out = 0, []
    for _ in range(n):
        dur = sixteenth * rng.choice((1, 2, 2, 4, 4, 8))
        out.append((t, t + dur, rng.randint(low, high), rng.choice((40, 64, 90, 110))))
        t += dur if rng.random() < 0.85 else 0  # some notes stack into chords
    return out


def drum_pattern(bars: int = 2, *, tpb: int = 480, velocity: int = 100) -> list[NoteT]:
    """Kick on 1 and 3, snare on 2 and 4, closed hi-hat on 8ths (GM drum map)."""
    out = []
    for beat in range(4 * bars):
        t = beat * tpb
        out.append((t, t + tpb // 4, 36 if beat % 2 == 0 else 38, velocity))
        out += [(t + h, t + h + tpb // 8, 42, velocity - 30) for h in (0, tpb // 2)]
    return out


# ---------------------------------------------------------------------------------------- miditoolkit files


def make_midi(
    path: str | os.PathLike,
    notes: Iterable[NoteT] = (),
    *,
    tpb: int = 480,
    tempos: Sequence[tuple[int, float]] = ((0, 120.0),),
    time_signatures: Sequence[tuple[int, int, int]] = ((0, 4, 4),),
    drums: Iterable[NoteT] = (),
    extra_tracks: Sequence[Iterable[NoteT] | dict] = (),
    program: int = 0,
) -> Path:
    """Write a MIDI file (type 1) and return its path.

    ``tempos`` are ``(tick, bpm)``; ``time_signatures`` are ``(tick, numerator, denominator)``; ``drums``
    go on a drum track (channel 10); each ``extra_tracks`` entry is a note list or a dict with ``notes``
    and optionally ``program``, ``is_drum``, ``name``. An instrument with no notes is not written.
    """
    import miditoolkit
    from miditoolkit.midi.containers import Instrument, Note, TempoChange, TimeSignature

    def instrument(notes: Iterable[NoteT], program: int = 0, is_drum: bool = False, name: str = "") -> Instrument:
        ins = Instrument(program=program, is_drum=is_drum, name=name)
        ins.notes = [Note(velocity=v, pitch=p, start=s, end=e) for s, e, p, v in notes]
        return ins

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    midi = miditoolkit.MidiFile(ticks_per_beat=tpb)
    tracks = [instrument(notes, program, name="melody"), instrument(drums, 0, True, "drums")]
    for extra in extra_tracks:
        tracks.append(instrument(**extra) if isinstance(extra, dict) else instrument(extra))
    midi.instruments = [t for t in tracks if t.notes]
    midi.tempo_changes = [TempoChange(tempo=float(bpm), time=t) for t, bpm in tempos]
    midi.time_signature_changes = [TimeSignature(n, d, t) for t, n, d in time_signatures]
    midi.dump(str(path))
    return path


def build_good_set(folder: str | os.PathLike) -> dict[str, Path]:
    """Four small, different, valid pieces: a scale, chords in 3/4, a band (melody, bass, drums), and a piece
    with tempo changes. Returns name → path."""
    folder = Path(folder)
    return {
        "scale": make_midi(folder / "scale.mid", scale(60)),
        "chords": make_midi(folder / "chords.mid", chords(), time_signatures=[(0, 3, 4)]),
        "band": make_midi(
            folder / "band.mid", random_notes(1, 24), drums=drum_pattern(2),
            extra_tracks=[{"notes": chords(start=0, length=1920), "program": 33, "name": "bass"}],
        ),
        "tempo": make_midi(
            folder / "tempo.mid", scale(62, step=240) + scale(50, start=1920, intervals=MINOR),
            tempos=[(0, 90.0), (960, 140.0), (1920, 60.0)],
        ),
    }


# ---------------------------------------------------------------------------------------- raw bytes


def varlen(n: int) -> bytes:
    """MIDI variable-length quantity (7 bits per byte, high bit = more follows); n < 2**28."""
    if not 0 <= n < 1 << 28:
        raise ValueError(f"delta {n} does not fit a MIDI variable-length quantity")
    out = [n & 0x7F]
    n >>= 7
    while n:
        out.append(0x80 | (n & 0x7F))
        n >>= 7
    return bytes(reversed(out))


def note_on(pitch: int, velocity: int = 80, channel: int = 0) -> bytes:
    return bytes([0x90 | channel, pitch, velocity])


def note_off(pitch: int, velocity: int = 0, channel: int = 0) -> bytes:
    return bytes([0x80 | channel, pitch, velocity])


def set_tempo(bpm: float) -> bytes:
    return b"\xff\x51\x03" + round(60_000_000 / bpm).to_bytes(3, "big")


def program_change(program: int, channel: int = 0) -> bytes:
    return bytes([0xC0 | channel, program])


END_OF_TRACK = b"\xff\x2f\x00"


def notes_to_events(notes: Iterable[NoteT], channel: int = 0) -> list[tuple[int, bytes]]:
    """Note tuples → ``(delta, bytes)`` events, ending with end-of-track.

    At one tick: note-offs of notes that end there, then note-ons, then the offs of zero-length notes
    (so each of those is an on right before its own off, as a file with zero-length notes holds them).
    """
    timed = []
    for s, e, p, v in notes:
        timed.append((s, 1, note_on(p, v, channel)))
        timed.append((e, 2 if e == s else 0, note_off(p, 0, channel)))
    timed.sort(key=lambda x: (x[0], x[1]))
    out, now = [], 0
    for t, _, ev in timed:
        out.append((t - now, ev))
        now = t
    return [*out, (0, END_OF_TRACK)]


def smf_bytes(tracks: Sequence[Sequence[tuple[int, bytes]]], *, tpb: int = 480, fmt: int = 1) -> bytes:
    """A Standard MIDI File from tracks of ``(delta ticks, event bytes)``; end-of-track is added if missing."""
    chunks = [b"MThd" + (6).to_bytes(4, "big") + fmt.to_bytes(2, "big") + len(tracks).to_bytes(2, "big")
              + tpb.to_bytes(2, "big")]
    for events in tracks:
        events = list(events)
        if not events or events[-1][1] != END_OF_TRACK:
            events.append((0, END_OF_TRACK))
        body = b"".join(varlen(d) + ev for d, ev in events)
        chunks.append(b"MTrk" + len(body).to_bytes(4, "big") + body)
    return b"".join(chunks)


def write_smf(path: str | os.PathLike, tracks: Sequence[Sequence[tuple[int, bytes]]], *, tpb: int = 480,
              fmt: int = 1) -> Path:
    """Write :func:`smf_bytes` to ``path`` and return it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(smf_bytes(tracks, tpb=tpb, fmt=fmt))
    return path


def truncate(path: str | os.PathLike, keep: float = 0.5) -> Path:
    """Cut a file to the first ``keep`` fraction of its bytes (a download that stopped half way)."""
    path = Path(path)
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return path
