"""Reading (symusic), cleaning and writing (miditoolkit) MIDI files.

A :class:`Piece` is what the rest of theremin sees of a MIDI file: its parts (:class:`Part`: General MIDI
program, drum flag, track name), one list of notes in ticks (each names its part), the tempo map and time
signatures. Every reason a file cannot be used is a :class:`MidiError` whose message names the file and the
reason, so a corpus build can report it and go on.

Cleaning rules (applied by :func:`read_midi`):
- every track with notes is a part, drums (channel 10, ``is_drum``) included; a program change inside a track
  starts a new part of the same name (the note's program is the one in force: symusic splits tracks so);
  ``instruments=False`` reads the old way: drums dropped, every other note merged onto one piano part;
- notes of one pitch that start on the same tick in one part sound as one: the longest is kept;
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
    pitch: int  # 0..127 (on a drum part: the General MIDI drum sound)
    velocity: int  # 1..127
    part: int = 0  # index into Piece.parts


@dataclass(frozen=True)
class Part:
    """One instrument part of a piece: what a DAW shows as a track."""

    program: int = 0  # General MIDI program 0..127 (0: Acoustic Grand Piano)
    is_drum: bool = False  # channel 10: pitch is a drum sound
    name: str = ""  # the track's name ("" when it had none, or General MIDI's name for its program)


PIANO = Part()


@dataclass
class Piece:
    notes: list[Note]  # sorted by (start, pitch, ...)
    ticks_per_beat: int
    tempos: list[tuple[int, int]] = field(default_factory=list)  # (tick, microseconds per quarter note)
    time_signatures: list[tuple[int, int, int]] = field(default_factory=list)  # (tick, numerator, denominator)
    parts: list[Part] = field(default_factory=lambda: [PIANO])  # every Note.part indexes this list

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


def read_midi(path: str | os.PathLike, min_notes: int = 1, *, max_notes: int | None = MAX_NOTES,
              instruments: bool = True) -> Piece:
    """Read and clean one MIDI file; raise :class:`MidiError` with the reason when it cannot be used.

    ``max_notes`` (None: no cap) refuses a file before any per-note work: memory and time stay bounded.
    Parsing uses symusic (C++): measured on 429 Bach chorales it makes corpus prep ~4x faster than
    miditoolkit (whose pure-Python mido parsing was 64 % of prep time, scripts/bench_prep.py), and it reads
    the tempo map of type 1 files correctly (miditoolkit restarts its tempo list at every track's tick-0
    tempo). miditoolkit still writes files (:func:`write_midi`).
    """
    return parse_midi(read_regular_file(path), path, min_notes=min_notes, max_notes=max_notes,
                      instruments=instruments)


def parse_midi(
    data: bytes,
    path: str | os.PathLike | None = None,
    *,
    min_notes: int = 1,
    max_notes: int | None = MAX_NOTES,
    instruments: bool = True,
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
    if instruments:
        used = [t for t in tracks if len(t.notes)]
        parts, track_part = _parts_of(used)
    else:
        used = [t for t in tracks if not t.is_drum and len(t.notes)]
        if not used:
            raise MidiError(path, "drums only (all notes are on drum tracks)")
        parts = [PIANO]
    count = sum(len(t.notes) for t in used)
    if max_notes is not None and count > max_notes:  # checked before any per-note work
        raise MidiError(path, f"too many notes ({count:,} > max_notes={max_notes:,})")
    arrays = [t.notes.numpy() for t in used]
    start = np.concatenate([a["time"] for a in arrays]).astype(np.int64)
    end = start + np.concatenate([a["duration"] for a in arrays]).astype(np.int64)
    if start.min() < 0 or end.max() >= 2**31:  # symusic keeps ticks in 32 bits: later ones wrap around
        raise MidiError(path, "event times beyond 2**31 ticks (a delta-time overflow)")
    pitch = np.concatenate([a["pitch"] for a in arrays]).astype(np.int64)
    velocity = np.concatenate([a["velocity"] for a in arrays]).astype(np.int64)
    part = (np.concatenate([np.full(len(a["time"]), track_part[i], dtype=np.int64) for i, a in enumerate(arrays)])
            if instruments else None)
    notes = merge_notes(start, end, pitch, velocity, part)
    if len(notes) < min_notes:
        raise MidiError(path, f"too few notes ({len(notes)} < min_notes={min_notes})")
    tempos = clean_tempos((tc.time, tc.mspq) for tc in score.tempos)
    sigs = sorted({(ts.time, ts.numerator, ts.denominator) for ts in score.time_signatures})
    return Piece(notes=notes, ticks_per_beat=tpb, tempos=tempos, time_signatures=sigs, parts=parts)


def _parts_of(tracks) -> tuple[list[Part], list[int]]:
    """The parts of symusic tracks, and each track's part. Two of theremin's own conventions fold back: a track
    :func:`write_midi` wrote for notes that overlap a note of their pitch ("<name> overlap k", same sound, after
    its part) joins that part, and a rolled variation's "prompt: <name>" track and the later track of that name
    and sound (the prompt's instrument played on) are one part, as they were rolled."""
    parts: list[Part] = []
    track_part: list[int] = []
    from_prompt: set[int] = set()
    for t in tracks:
        program, drum, raw = int(t.program), bool(t.is_drum), t.name
        prompt = raw.startswith(PROMPT_TRACK)
        name = track_name(raw[len(PROMPT_TRACK):] if prompt else raw, program, drum)
        base, _, k = raw.rpartition(" overlap ")
        same = [i for i, p in enumerate(parts) if (p.program, p.is_drum) == (program, drum)]
        home = next((i for i in same if k.isdigit() and parts[i].name == track_name(
            base.removeprefix(PROMPT_TRACK), program, drum)), None)
        if home is None and not prompt:
            home = next((i for i in same if i in from_prompt and parts[i].name == name), None)
            from_prompt.discard(home)
        if home is None:
            home = len(parts)
            parts.append(Part(program, drum, name))
            if prompt:
                from_prompt.add(home)
        track_part.append(home)
    return parts, track_part


PROMPT_TRACK = "prompt: "  # a rolled variation's file names the prompt's tracks so (theremin.roll.roller.daw_piece)
CLIP_SUFFIX = "_new.mid"  # a rolled variation's new notes alone (variation_NN_new.mid)


def track_name(name: str, program: int, is_drum: bool) -> str:
    """A track's name as a Part keeps it: "" for none, or for General MIDI's own name of its sound (what
    :func:`write_midi` writes for an unnamed part), so that an unnamed part reads back unnamed; also "" for
    "theremin", the name theremin gave every track before it kept instruments (cached corpora, old rolls)."""
    name = name.strip("\x00")
    unnamed = {default_name(program, is_drum)} | (set() if is_drum else {"theremin"})
    return "" if name in unnamed else name


def default_name(program: int, is_drum: bool) -> str:
    """General MIDI's name of a program ("Drums" on channel 10), from pretty_midi's table."""
    from theremin.music.gm import program_name

    return "Drums" if is_drum else program_name(program)


def merge_notes(start, end, pitch, velocity, part=None) -> list[Note]:
    """Raw notes (numpy arrays, ticks) cleaned: notes of one pitch that start on one tick in one part sound as
    one, the longest wins (of equal ones, the loudest); sorted by (start, pitch, part). ``part`` None: all on
    part 0. Vectorised: no Python object per raw note."""

    if part is None:
        part = np.zeros(len(start), dtype=np.int64)
    keep = (pitch >= 0) & (pitch <= 127)
    start, end, pitch, part = np.maximum(start[keep], 0), end[keep], pitch[keep], part[keep]
    end, velocity = np.maximum(end, start), np.clip(velocity[keep], 1, 127)
    # by (start, pitch, part), then the longest, then the loudest
    order = np.lexsort((velocity, end, part, pitch, start))
    start, end, pitch, velocity, part = start[order], end[order], pitch[order], velocity[order], part[order]
    last = np.ones(len(start), dtype=bool)  # the last of each (start, pitch, part) run wins
    last[:-1] = (start[1:] != start[:-1]) | (pitch[1:] != pitch[:-1]) | (part[1:] != part[:-1])
    cols = (a[last].tolist() for a in (start, end, pitch, velocity, part))
    return [Note(s, e, p, v, k) for s, e, p, v, k in zip(*cols)]


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
    program: int | None = None,
    meta: dict[str, str] | None = None,
    *,
    overlaps: str = "layer",
    track_prefix: str = "",
) -> Path:
    """Write a piece as a MIDI file, atomically (a temp file in the same folder, then rename).

    One track per part, with its program and name (General MIDI's name when it has none), drums on channel
    10. Within one track a reader pairs a note-off with the earliest sounding note of its pitch, so two notes
    of one pitch that overlap in a part cannot both keep their length there: ``overlaps="layer"`` writes the
    later one on an extra track of the same part (exact round trips), ``"trim"`` ends the earlier note where
    the later one starts (what one MIDI channel plays anyway; no extra tracks, what a DAW wants).
    ``program`` (None: each part's own) overrides the program of every pitched part. ``meta`` entries are
    stored as text markers at tick 0 ("key: value"), e.g. the provenance of a generation; ``track_prefix``
    goes before every track name (e.g. "prompt: ").
    """
    import miditoolkit
    from miditoolkit.midi.containers import Instrument, Marker, TempoChange, TimeSignature

    if overlaps not in ("layer", "trim"):
        raise ValueError(f"overlaps must be 'layer' or 'trim', got {overlaps!r}")
    path = Path(path)
    midi = miditoolkit.MidiFile(ticks_per_beat=piece.ticks_per_beat)
    midi.instruments = []
    tracks_notes = []
    parts = piece.parts or [PIANO]
    for k, layers in enumerate(_part_layers(piece, len(parts), overlaps)):
        part = parts[k]
        prog = part.program if program is None or part.is_drum else program
        name = track_prefix + (part.name or default_name(part.program, part.is_drum))
        if not layers and (k > 0 or len(parts) > 1):
            continue  # a part with no notes makes no track (a one-part piece keeps its empty track)
        for i, notes in enumerate(layers or [[]]):
            ins = Instrument(program=prog, is_drum=part.is_drum, name=name if i == 0 else f"{name} overlap {i}")
            ins.notes = notes
            midi.instruments.append(ins)
            tracks_notes.append(notes)
    midi.tempo_changes = [TempoChange(tempo=60_000_000 / us, time=t) for t, us in piece.tempos] or [
        TempoChange(tempo=60_000_000 / DEFAULT_TEMPO_US, time=0)
    ]
    midi.time_signature_changes = [TimeSignature(n, d, t) for t, n, d in piece.time_signatures]
    midi.markers = [Marker(text=f"{k}: {v}", time=0) for k, v in (meta or {}).items()]
    meta_times = [0] + [t for t, _ in piece.tempos] + [t for t, _, _ in piece.time_signatures]
    for times in [meta_times, *([0, *(t for n in notes for t in (n.start, n.end))] for notes in tracks_notes)]:
        times = sorted(times)
        gap = max((b - a for a, b in itertools.pairwise(times)), default=0)
        if gap > MAX_DELTA_TICKS:  # a longer delta cannot be stored: the file would read back as garbage
            raise MidiError(path, f"cannot write a gap of {gap} ticks between two events (a MIDI file stores at "
                            f"most {MAX_DELTA_TICKS}); shorten the silence or lower ticks_per_beat")
    atomic_write(path, lambda tmp: midi.dump(str(tmp)))
    return path


def trim_overlaps(piece: Piece, track: Callable[[Note], object] | None = None) -> Piece:
    """The piece with each note that still sounds when the next note of its pitch in its part starts ended
    there (what one MIDI channel plays: write_midi's ``overlaps="trim"``). ``track(note)``: notes it tells apart
    go to different tracks of the part, and do not cut each other (a roll's prompt and its continuation)."""
    last: dict[tuple, int] = {}
    notes = sorted(piece.notes)
    ends = [n.end for n in notes]
    for i, n in enumerate(notes):
        key = (n.part, n.pitch, track(n) if track is not None else None)
        j = last.get(key)
        if j is not None and ends[j] > n.start:
            ends[j] = n.start
        last[key] = i
    out = [Note(n.start, e, n.pitch, n.velocity, n.part) for n, e in zip(notes, ends)]
    return Piece(out, piece.ticks_per_beat, list(piece.tempos), list(piece.time_signatures), list(piece.parts))


def _part_layers(piece: Piece, n_parts: int, overlaps: str) -> list[list[list]]:
    """Per part, its notes as miditoolkit notes in layers: no two notes of one pitch overlap in one layer."""
    from miditoolkit.midi.containers import Note as MtkNote

    out: list[list[list]] = [[] for _ in range(n_parts)]
    free_at: list[list[dict[int, int]]] = [[] for _ in range(n_parts)]  # per part, per layer: pitch → end
    for n in piece.notes:
        if not 0 <= n.part < n_parts:
            raise MidiError(None, f"note at tick {n.start} names part {n.part}, the piece has {n_parts}")
    if overlaps == "trim":
        piece = trim_overlaps(piece)
    for n in sorted(piece.notes):
        layers, free = out[n.part], free_at[n.part]
        layer = next((i for i, f in enumerate(free) if f.get(n.pitch, -1) <= n.start), None)
        if layer is None:
            layer = len(layers)
            layers.append([])
            free.append({})
        layers[layer].append(MtkNote(velocity=n.velocity, pitch=n.pitch, start=n.start, end=n.end))
        free[layer][n.pitch] = n.end
    return out


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
