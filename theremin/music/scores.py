"""A parsed music21 Score as a theremin :class:`~theremin.music.midi.Piece`, without music21's MIDI writer.

``score.write("midi")`` spends most of its time deep-copying the score (``expandRepeats``, once per repeat
pass), which is what made building the demo and base corpora slow. :func:`score_to_piece` gives the notes,
tempos and time signatures that :func:`theremin.music.midi.read_midi` reads from music21's own MIDI file, tick for
tick, by walking each part's measures in playback order instead of copying them:

- playback order: music21's own ``repeat.Expander`` runs on a skeleton of the part (empty measures that carry
  only the repeat barlines and first/second-ending brackets), so repeats expand exactly as music21 expands them;
- ties are merged the way ``Stream.stripTies(matchByPitch=True)`` merges them (ported below: same pairing rules
  on the same flattened order of notes and rests);
- velocities are music21's realized volumes (its default, or a note's own velocity and articulations);
- note events are paired per part and pitch as symusic pairs those of music21's file (first on, first off; a
  note-off sorts before a note-on at the same tick, so a grace note sounds until the next note-off of its
  pitch, or is dropped as an unclosed note), then merged like :func:`theremin.music.midi.parse_midi`;
- tempos and time signatures: music21's conductor-track rules (the first part's marks, another part's only
  where their offset moves past the last one seen; 120 bpm and 4/4 when there are none).

What it does not model raises :class:`Unsupported`; :func:`write_score_midi` then writes the file with music21
itself. Unsupported: D.C./D.S./coda/fine, dynamics, transposing scores (not at sounding pitch), percussion
(channel 10), microtones, chord symbols, notes outside measures, voices beside direct notes or offset voices,
tempo or meter marks outside measures, chords whose notes have their own volumes, and anything music21 itself
would refuse (incoherent repeats). ``scripts/bench_demo_data.py`` checks every Bach chorale both ways.
"""

from __future__ import annotations

import os
import tempfile
from collections import deque
from pathlib import Path

from theremin.music.midi import Piece, clean_tempos, merge_notes, read_midi, write_midi

# The music21 release whose MIDI writer this reproduces (checked on every Bach chorale and ~1,200 folk tunes with
# scripts/bench_demo_data.py); with another one, music21 writes every file until the bench is run again.
CHECKED_MUSIC21 = "10.5"


class Unsupported(Exception):
    """The score has something the fast path does not model; music21 writes that file."""


def write_score_midi(score, path: str | os.PathLike) -> str | None:
    """Write a parsed music21 Score as MIDI (atomically). Returns None when the fast path wrote it, else the
    reason it fell back to ``score.write("midi")`` (whose exceptions propagate)."""
    try:
        piece = score_to_piece(score)
    except Unsupported as e:
        reason = str(e)
    except Exception as e:  # never a wrong file: anything unexpected is music21's to write
        reason = f"unexpected {type(e).__name__}: {e}"[:200]
    else:
        write_midi(piece, path)
        return None
    # music21's own file has a track per part; the corpora of scores are one piano part (as the fast path writes
    # them), so its notes are merged the same way before the file takes its place
    with tempfile.TemporaryDirectory(prefix="theremin-m21-") as tmp:
        m21 = Path(tmp) / "music21.mid"
        score.write("midi", fp=str(m21))
        write_midi(read_midi(m21, max_notes=None, instruments=False), path)
    return reason


def score_to_piece(score) -> Piece:
    """The Piece that ``read_midi`` would read from ``score.write("midi")``; :class:`Unsupported` if the score
    has something this does not model. Reads the score only (music21 may cache volumes and sort streams)."""
    import music21
    from music21 import defaults, stream

    if ".".join(music21.__version__.split(".")[:2]) != CHECKED_MUSIC21:
        raise Unsupported(f"music21 {music21.__version__} (this reproduces {CHECKED_MUSIC21})")
    if not isinstance(score, stream.Score):
        raise Unsupported(f"not a Score ({type(score).__name__})")
    if score.atSoundingPitch is False:
        raise Unsupported("not at sounding pitch (music21 transposes first)")
    parts = []
    for el in score:
        if isinstance(el, stream.Part):
            parts.append(el)
        else:
            _check_outside_measures(el, "score")
    if not parts:
        raise Unsupported("no parts")
    walked = [_walk_part(p) for p in parts]
    tpq = defaults.ticksPerQuarter
    starts, ends, pitches, velocities = [], [], [], []
    for w in walked:
        for note in _part_notes(w):
            starts.append(note[0])
            ends.append(note[1])
            pitches.append(note[2])
            velocities.append(note[3])
    if not starts:
        raise Unsupported("no notes")
    import numpy as np

    notes = merge_notes(*(np.asarray(a, dtype=np.int64) for a in (starts, ends, pitches, velocities)))
    tempos, sigs = _conductor(walked)
    return Piece(notes=notes, ticks_per_beat=tpq, tempos=clean_tempos(tempos), time_signatures=sigs)


# ---- walking a part -----------------------------------------------------------------------------------------


class _Part:
    """One part, read once: per source measure its notes/rests and conductor marks, and the playback order."""

    def __init__(self):
        self.measures = []  # per source measure: [(offset in measure, element)] notes and rests, flatten order
        self.marks = []  # per source measure: {"MetronomeMark": [(offset, el)], "TimeSignature": [...]}
        self.playback = []  # [(source measure index, offset of this pass in the part)]


def _check_outside_measures(el, where: str) -> None:
    from music21 import dynamics, meter, note, repeat, stream, tempo

    if isinstance(el, (note.GeneralNote, stream.Stream, dynamics.Dynamic, repeat.RepeatExpression,
                       tempo.MetronomeMark, meter.TimeSignature)):
        raise Unsupported(f"{type(el).__name__} outside measures ({where})")
    _check_instrument(el)


def _check_instrument(el) -> None:
    from music21 import instrument

    if isinstance(el, instrument.Instrument) and (
            isinstance(el, instrument.UnpitchedPercussion) or el.midiChannel == 9):
        raise Unsupported(f"percussion instrument {el.classes[0]} (MIDI channel 10)")


def _walk_part(part) -> _Part:
    from music21 import spanner, stream

    w = _Part()
    brackets = False
    measures = []
    for el in part:
        if isinstance(el, stream.Measure):
            measures.append(el)
        elif isinstance(el, spanner.RepeatBracket):
            brackets = True
        else:
            _check_outside_measures(el, "part")
    if not measures:
        raise Unsupported("a part without measures")
    for m in measures:
        found, marks, has_bracket = _walk_measure(m)
        brackets = brackets or has_bracket
        w.measures.append(found)
        w.marks.append(marks)
    order = _playback_order(part, measures, brackets)
    if order is None:  # nothing to expand: music21 keeps the measures where they are
        w.playback = [(i, part.elementOffset(m)) for i, m in enumerate(measures)]
    else:  # expanded: music21 appends the passes one after the other
        from music21.common import opFrac

        offset = 0.0
        for i in order:
            w.playback.append((i, offset))
            offset = opFrac(offset + measures[i].duration.quarterLength)
    return w


def _walk_measure(m):
    """A measure's notes and rests in sorted order (voices in turn), its tempo and meter marks; checks what
    the fast path cannot model."""
    from music21 import bar, chord, dynamics, harmony, meter, note, percussion, repeat, spanner, stream, tempo

    found, marks, brackets = [], {"MetronomeMark": [], "TimeSignature": []}, False
    direct_notes, voices = False, False
    for el in m:
        if isinstance(el, stream.Voice):
            voices = True
            if m.elementOffset(el) != 0:
                raise Unsupported(f"measure {m.number}: a voice not at the measure's start")
            items = [(el.elementOffset(e), e) for e in el]
        else:
            items = [(m.elementOffset(el), el)]
        for off, e in items:
            direct_notes = direct_notes or (e is el and isinstance(e, note.GeneralNote))
            if isinstance(e, (note.Unpitched, percussion.PercussionChord, harmony.Harmony)):
                raise Unsupported(f"measure {m.number}: {type(e).__name__}")
            if isinstance(e, (note.Note, note.Rest, chord.Chord)):
                found.append((off, e))
            elif isinstance(e, note.GeneralNote):
                raise Unsupported(f"measure {m.number}: {type(e).__name__}")
            elif isinstance(e, stream.Stream):
                raise Unsupported(f"measure {m.number}: a {type(e).__name__} inside a measure or voice")
            elif isinstance(e, (dynamics.Dynamic, repeat.RepeatExpression)):
                raise Unsupported(f"measure {m.number}: {type(e).__name__}")
            elif isinstance(e, tempo.MetronomeMark):
                marks["MetronomeMark"].append((off, e))
            elif isinstance(e, meter.TimeSignature):
                marks["TimeSignature"].append((off, e))
            elif isinstance(e, spanner.RepeatBracket):
                brackets = True
            elif not isinstance(e, bar.Barline):
                _check_instrument(e)
    if voices and direct_notes:
        raise Unsupported(f"measure {m.number}: notes both in voices and outside them")
    return found, marks, brackets


def _playback_order(part, measures, brackets: bool) -> list[int] | None:
    """Source measure indices in playback order, as music21's Expander expands the part; None when it would
    leave the part as it is (no repeat barlines). The Expander runs on a skeleton (empty measures with the
    repeat barlines and brackets), so nothing of the score is copied; parts of one layout share the result."""
    from music21 import bar, spanner

    bars = []
    for m in measures:
        lb, rb = m.leftBarline, m.rightBarline
        left = (lb.direction, lb.times) if isinstance(lb, bar.Repeat) else None
        right = None
        if isinstance(rb, bar.Repeat):
            if rb.direction != "end":
                raise Unsupported(f"measure {m.number}: a right repeat barline facing {rb.direction!r}")
            right = ("end", rb.times)
        bars.append((left, right))
    if all(b == (None, None) for b in bars):
        return None
    spans = []
    if brackets:  # in the order the Expander sees them (the flattened part)
        index = {id(m): i for i, m in enumerate(measures)}
        for rb in part.flatten().getElementsByClass(spanner.RepeatBracket):
            spanned = rb.getSpannedElements()
            if not spanned or any(id(m) not in index for m in spanned):
                raise Unsupported("a repeat bracket spans something other than this part's measures")
            spans.append((tuple(index[id(m)] for m in spanned), rb.number, tuple(rb.numberRange)))
    key = (tuple(bars), tuple(spans))
    if key not in _ORDERS:
        if len(_ORDERS) > 4096:
            _ORDERS.clear()
        _ORDERS[key] = _expand_skeleton(bars, spans)
    return _ORDERS[key]


_ORDERS: dict = {}  # repeat layout -> playback order (the Expander is the slow part of a small score)


def _expand_skeleton(bars, spans) -> list[int]:
    from music21 import bar, note, repeat, spanner, stream

    skeleton = stream.Part()
    measures = []
    for i, (left, right) in enumerate(bars):
        sm = stream.Measure(number=i)
        sm.append(note.Rest(quarterLength=1))
        if left is not None:
            sm.leftBarline = bar.Repeat(direction=left[0], times=left[1])
        if right is not None:
            sm.rightBarline = bar.Repeat(direction="end", times=right[1])
        skeleton.insert(i, sm)
        measures.append(sm)
    for indices, number, number_range in spans:
        copy = spanner.RepeatBracket([measures[i] for i in indices], number=number)
        if tuple(copy.numberRange) != number_range:
            raise Unsupported(f"repeat bracket numbers {number!r}")
        skeleton.insert(0, copy)
    try:
        expander = repeat.Expander(skeleton)
        if expander.isExpandable() is False:
            raise Unsupported("repeats music21 cannot expand")
        return [m.number for m in expander.process().getElementsByClass(stream.Measure)]
    except repeat.ExpanderException as e:
        raise Unsupported(f"repeats music21 cannot expand ({e})") from e


# ---- notes -------------------------------------------------------------------------------------------------


def _flattened(w: _Part) -> list[tuple[object, object]]:
    """(offset in the part, element) of every note and rest of the expanded part, in ``flatten()`` order."""
    from music21.common import opFrac

    keyed = []
    for i, start in w.playback:
        for off, e in w.measures[i]:
            grace = 0 if e.duration.isGrace else 1
            offset = opFrac(start + off)
            keyed.append(((offset, e.priority, e.classSortOrder, grace, len(keyed)), offset, e))
    keyed.sort(key=lambda k: k[0])
    return [(offset, e) for _key, offset, e in keyed]


def _part_notes(w: _Part) -> list[tuple[int, int, int, int]]:
    """(start, end, pitch, velocity) in ticks, as symusic reads them from music21's track for this part."""
    from music21 import chord, defaults
    from music21.midi.translate import offsetToMidiTicks

    flat = _flattened(w)
    merged, deleted = _strip_ties([(k, e) for k, (_off, e) in enumerate(flat) if e.quarterLength > 0])
    tpq = defaults.ticksPerQuarter
    events = []  # (tick, sort order: note-off -20 < note-on 0, pitch, velocity); stable-sorted below
    velocity_of: dict[int, int] = {}
    for k, (offset, e) in enumerate(flat):
        if k in deleted or e.isRest:
            continue
        if isinstance(e, chord.Chord):
            if e.hasComponentVolumes():
                raise Unsupported("a chord whose notes have their own volumes")
            pitches = [n.pitch for n in e]
        else:
            pitches = [e.pitch]
        vel = velocity_of.get(id(e))
        if vel is None:
            realized = e.volume.getRealized(useDynamicContext=False, useVelocity=True, useArticulations=True)
            vel = velocity_of[id(e)] = round(realized * 127)
            if not 1 <= vel <= 127:
                raise Unsupported(f"velocity {vel}")
        midi = []
        for p in pitches:
            if not p.isTwelveTone():
                raise Unsupported(f"microtone {p}")
            if not 0 <= p.midi <= 127:
                raise Unsupported(f"pitch {p} outside MIDI")
            midi.append(p.midi)
        ql = merged.get(k, e.quarterLength)
        on = offsetToMidiTicks(offset)
        off = on + round(ql * tpq)  # music21's durationToMidiTicks
        events.extend((on, 0, m, vel) for m in midi)
        events.extend((off, -20, m, 0) for m in midi)
    events.sort(key=lambda ev: (ev[0], ev[1]))
    sounding: dict[int, deque] = {}
    notes = []
    for tick, kind, pitch, vel in events:
        if kind == 0:
            sounding.setdefault(pitch, deque()).append((tick, vel))
        elif sounding.get(pitch):  # a note-off with no sounding note is ignored; unclosed notes are dropped
            start, v = sounding[pitch].popleft()
            notes.append((start, tick, pitch, v))
    return notes


def _strip_ties(items):
    """music21's ``Stream.stripTies(matchByPitch=True)`` on the expanded part's notes and rests of nonzero
    length (``items``: (index, element) in flatten order), without changing them: returns the new length of
    each chain's first note (by index) and the indices its later notes had (removed)."""
    from music21 import chord, note
    from music21.common import opFrac

    merged: dict[int, object] = {}
    deleted: set[int] = set()
    connected: list[int] = []  # positions in items

    def end_match(i: int) -> bool:
        n = items[i][1]
        last = items[i - 1][1] if i > 0 else None
        if (hasattr(n, "tie") and not isinstance(n, chord.Chord) and n.tie is not None
                and n.tie.type == "stop"):
            return True
        if (last is not None and (i - 1) in connected and hasattr(last, "pitch") and hasattr(n, "pitch")
                and not isinstance(last, chord.Chord) and not isinstance(n, chord.Chord)
                and last.pitch == n.pitch):
            return True
        if (last is not None and not isinstance(n, note.Note) and (i - 1) in connected
                and hasattr(last, "pitches") and hasattr(n, "pitches")):
            if len(last.pitches) != len(n.pitches):
                return False
            return all(a.step == b.step and a.isEnharmonic(b) for a, b in zip(last.pitches, n.pitches))
        return False

    for i, (_k, n) in enumerate(items):
        match = None
        tie = n.tie if hasattr(n, "tie") else None
        if tie is not None and tie.type == "start":
            if i == 0 or (i - 1) not in connected:
                connected = [i]
            else:
                connected.append(i)
            match = False
        elif tie is not None and tie.type == "continue":
            if not connected or end_match(i):
                connected.append(i)
            else:
                connected = [i]
            match = False
        if match is None:
            match = end_match(i)
        if match:
            connected.append(i)
            if len(connected) < 2:
                connected = []
                continue
            total = 0
            for q in connected[1:]:
                total += items[q][1].quarterLength
                deleted.add(items[q][0])
            if total == 0:
                raise Unsupported("tied notes of zero total length (music21 refuses them)")
            first_k, first = items[connected[0]]
            merged[first_k] = opFrac(first.quarterLength + total)
            connected = []
    return merged, deleted


# ---- tempo and meter ---------------------------------------------------------------------------------------


def _conductor(walked: list[_Part]) -> tuple[list[tuple[int, int]], list[tuple[int, int, int]]]:
    """Tempo changes and time signatures as music21's conductor track has them."""
    import math

    from music21.common import opFrac
    from music21.midi.translate import offsetToMidiTicks

    chosen = {}
    for klass in ("MetronomeMark", "TimeSignature"):
        last, picked, seen = -1, [], {}
        for w in walked:
            for i, start in w.playback:
                for off, el in w.marks[i][klass]:
                    if seen.setdefault(id(el), i) != i:
                        raise Unsupported(f"one {klass} object in two measures (music21 refuses it)")
                    offset = opFrac(start + off)
                    if offset > last:
                        picked.append(((offset, el.priority, len(picked)), el))
                    last = offset
        picked.sort(key=lambda p: p[0])
        chosen[klass] = [(offsetToMidiTicks(key[0]), el) for key, el in picked]
    tempos = []
    for tick, mm in chosen["MetronomeMark"]:
        if mm.number is None and mm.numberSounding is None:
            continue  # music21 writes no event for it (and no default either)
        mspq = round(60_000_000 / mm.getSoundingMetronomeMark().getQuarterBPM())
        if not 0 < mspq < 2**24:
            raise Unsupported(f"tempo {mm}")
        tempos.append((tick, mspq))
    sigs = {(0, 4, 4)} if not chosen["TimeSignature"] else set()
    for tick, ts in chosen["TimeSignature"]:
        if ts.numerator <= 255:  # music21 skips larger ones (with a warning)
            sigs.add((tick, ts.numerator, 2 ** int(math.log2(ts.denominator))))
    return tempos, sorted(sigs)

