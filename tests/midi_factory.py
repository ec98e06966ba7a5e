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


def band_piece(rng: random.Random, parts, bars: int = 4):
    """A theremin Piece: chords on the pitched parts, a bass line on a program-33 part, kick/snare/hats on a drum
    part (a part index per Note), on an 8th-note grid."""
    from theremin.music.midi import Note, Piece

    notes = []
    for k, part in enumerate(parts):
        for beat in range(4 * bars):
            t = beat * 480
            if part.is_drum:
                notes += [Note(t + s, t + s + 60, 42, 90, k) for s in (0, 240)]
                notes.append(Note(t, t + 60, 36 if beat % 2 == 0 else 38, 110, k))
            elif part.program == 33:
                notes.append(Note(t, t + 480, rng.choice([28, 31, 33, 36, 40, 43]), 90, k))
            else:
                notes += [Note(t, t + rng.choice([240, 480]), p, 80, k)
                          for p in sorted(rng.sample(range(55, 76), rng.randint(1, 3)))]
    return Piece(sorted(notes, key=lambda n: (n.start, n.pitch)), 480, parts=list(parts))


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


# ---------------------------------------------------------------------------------------- a hostile folder

BIG_DELTA = (1 << 28) - 1  # the largest MIDI variable-length quantity
KEPT, ANY = "kept", "any"  # expectations: must be used / must only be accounted for; else a reason's phrase


def _smf(tracks_bodies: Sequence[bytes], *, tpb: int = 480, fmt: int = 1, ntracks: int | None = None) -> bytes:
    """An SMF from raw track bodies (no end-of-track added): for files a writer would never make."""
    head = b"MThd" + (6).to_bytes(4, "big") + fmt.to_bytes(2, "big") + \
        (len(tracks_bodies) if ntracks is None else ntracks).to_bytes(2, "big") + tpb.to_bytes(2, "big", signed=tpb < 0)
    return head + b"".join(b"MTrk" + len(b).to_bytes(4, "big") + b for b in tracks_bodies)


def many_notes_bytes(n: int, *, tpb: int = 480) -> bytes:
    """A type 0 file of ``n`` notes (12-note chromatic runs repeated: built by byte repetition, instantly)."""
    run = b"".join(varlen(0) + note_on(48 + k) + varlen(120) + note_off(48 + k) for k in range(12))
    body = run * (n // 12) + b"".join(varlen(0) + note_on(60) + varlen(120) + note_off(60) for _ in range(n % 12))
    return _smf([body + b"\x00" + END_OF_TRACK], tpb=tpb, fmt=0)


def many_tracks_bytes(n_tracks: int = 65535, every: int = 100) -> bytes:
    """``n_tracks`` tracks (the most a header can declare); one in ``every`` holds a note, the others are empty."""
    empty = b"\x00" + END_OF_TRACK
    bodies = [b"".join(varlen(d) + ev for d, ev in notes_to_events([(i * 60, i * 60 + 60, 40 + i % 48, 80)]))
              if i % every == 0 else empty for i in range(n_tracks)]
    return _smf(bodies)


def note_bomb_bytes(notes: int = 40, *, tpb: int = 1) -> bytes:
    """Issue 8's expansion bomb: ``notes`` notes held together for 2**28 - 1 ticks, at 1 tick per beat (~300 bytes;
    encoded without a cap: ~10**8 characters)."""
    ons = [(0, note_on(40 + i)) for i in range(notes)]
    offs = [(BIG_DELTA if i == 0 else 0, note_off(40 + i)) for i in range(notes)]
    return smf_bytes([ons + offs], tpb=tpb)


def _flip(data: bytes, rng: random.Random, n: int) -> bytes:
    b = bytearray(data)
    for _ in range(n):
        i = rng.randrange(len(b))
        b[i] ^= 1 << rng.randrange(8)
    return bytes(b)


def _lie(data: bytes, rng: random.Random) -> bytes:
    """One chunk length (the header's, or a track's) replaced by a wrong one."""
    b = bytearray(data)
    starts = [i for i in range(len(b) - 8) if b[i: i + 4] in (b"MThd", b"MTrk")]
    at = rng.choice(starts) + 4
    wrong = rng.choice([0, 1, 5, 0x7FFFFFFF, 0xFFFFFFFF, int.from_bytes(b[at: at + 4], "big") + rng.randint(1, 40)])
    b[at: at + 4] = wrong.to_bytes(4, "big")
    return bytes(b)


def build_hostile_corpus(folder: str | os.PathLike, seed: int = 8, n_mutants: int = 240) -> dict[str, str]:
    """A seeded folder of hostile MIDI-named entries next to good files; returns relative path → what a build
    must do with it: :data:`KEPT` (used), :data:`ANY` (used or refused, but accounted for), or a phrase the
    refusal's reason must contain. Names that are not UTF-8 appear as ``os.fsdecode`` gives them.

    Good files (kept, some under non-UTF-8 and non-ASCII names), byte flips, truncations, chunk-length lies, huge
    deltas, 65,535 tracks, 10^6 notes, expansion bombs, a FIFO, dangling and looping links, a link to a device,
    a link to a folder, duplicates, and the usual broken files."""
    root = Path(folder)
    rng = random.Random(seed)
    expect: dict[str, str] = {}

    def put(rel: str | bytes, data: bytes, want: str) -> None:
        path = root / os.fsdecode(rel)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        expect[Path(os.fsdecode(rel)).as_posix()] = want

    good: list[bytes] = []
    for i in range(40):
        notes = random_notes(seed * 1000 + i, rng.randint(16, 60))
        data = smf_bytes([notes_to_events(notes)], tpb=rng.choice((96, 480)))
        good.append(data)
        put(f"good/piece{i:02d}.mid", data, KEPT)
    names = [b"latin1/caf\xe9.mid", b"latin1/\xff\xfe.MID", b"mixed/\xc3\xa9t\xe9.midi", "unicode/Für Elise.mid",
             "unicode/\u6625\u6c5f.kar", "unicode/🎹 song.mid"]
    for i, name in enumerate(names):
        put(name, smf_bytes([notes_to_events(random_notes(seed * 2000 + i, 30))]), KEPT)
    put(b"latin1/bad\xe9.mid", b"not MIDI at all", "not a MIDI file")
    put("zz_dupes/copy_of_piece00.mid", good[0], ANY)  # duplicates (sorted after good/): listed as such
    put("zz_dupes/copy_of_piece01.MID", good[1], ANY)

    for i in range(n_mutants):  # byte flips, truncations, chunk-length lies of the good files
        src = good[rng.randrange(len(good))]
        kind = ("flip", "cut", "lie")[i % 3]
        if kind == "flip":
            data = _flip(src, rng, rng.choice((1, 2, 4, 16)))
        elif kind == "cut":
            data = src[: rng.randrange(len(src))]
        else:
            data = _lie(src, rng)
        put(f"mutants/{kind}{i:03d}.mid", data, ANY)

    # time: a delta-time overflow past 2**31 ticks, an absurd silence, a huge delta on the end-of-track only
    overflow = [ev for k in range(12) for ev in ((BIG_DELTA, note_on(50 + k)), (10, note_off(50 + k)))]
    put("time/overflow.mid", smf_bytes([overflow], tpb=96), "2**31 ticks")
    scale96 = notes_to_events(scale(step=96))[:-1]
    put("time/absurd_gap.mid", smf_bytes([[*scale96, (BIG_DELTA, note_on(60)), (96, note_off(60))]], tpb=96),
        "absurd silence")
    put("time/huge_tail.mid", smf_bytes([[*scale96, (BIG_DELTA, END_OF_TRACK)]], tpb=96), KEPT)
    put("time/smpte.mid", smf_bytes([notes_to_events(scale())], tpb=-(25 << 8 | 40) & 0xFFFF), ANY)

    # size: the most tracks a header can declare; 10^6 notes; expansion bombs
    put("size/65535_tracks.mid", many_tracks_bytes(), KEPT)
    put("size/million_notes.mid", many_notes_bytes(10**6), "too many notes")
    put("size/note_bomb.mid", note_bomb_bytes(), "absurd note")
    put("size/note_bomb_480.mid", note_bomb_bytes(tpb=480), "absurd note")  # 559,241 beats
    # just inside the caps: notes held 4000 beats, 4000 beats apart (the most a file may expand)
    put("size/near_limits.mid", smf_bytes([notes_to_events([(i * 4000, i * 4000 + 4000, 60 + i, 80)
                                                            for i in range(16)])], tpb=1), KEPT)

    # the usual broken files
    put("broken/empty.mid", b"", "empty file")
    put("broken/text.mid", b"MIDI? no, a shopping list\n", "not a MIDI file")
    put("broken/type2.mid", smf_bytes([notes_to_events(scale())], fmt=2), "MIDI type 2")
    put("broken/header_only.mid", _smf([]), "no notes")
    put("broken/tracks_lie.mid", _smf([b"".join(varlen(d) + e for d, e in notes_to_events(scale()))], ntracks=9), ANY)

    # entries that are no regular file: must be refused without ever being opened
    special = root / "special"
    special.mkdir(parents=True, exist_ok=True)
    os.mkfifo(special / "fifo.mid")
    expect["special/fifo.mid"] = "FIFO"
    os.symlink(special / "missing-target.mid", special / "dangling.mid")
    expect["special/dangling.mid"] = "dangling"
    os.symlink("loop_b.mid", special / "loop_a.mid")
    os.symlink("loop_a.mid", special / "loop_b.mid")
    os.symlink("self.mid", special / "self.mid")
    expect.update({"special/loop_a.mid": "loop", "special/loop_b.mid": "loop", "special/self.mid": "loop"})
    os.symlink("/dev/zero", special / "zero.mid")  # read, it would never end
    expect["special/zero.mid"] = "character device"
    (root / "a_folder").mkdir(exist_ok=True)
    os.symlink(root / "a_folder", special / "folder_link.mid")
    expect["special/folder_link.mid"] = "link to a folder"
    os.symlink(root / "good" / "piece02.mid", special / "link_to_piece02.mid")  # a good link: a duplicate
    expect["special/link_to_piece02.mid"] = ANY
    put("zz_dir.mid/inside.mid", good[3], ANY)  # a folder named like a MIDI file is walked; a duplicate inside
    return expect
