"""The demo/base corpus writer (theremin.music.scores): what it writes reads back exactly as music21's own
``score.write("midi")`` does (notes, tempos, time signatures, in ticks), and what it does not model goes to
music21. Scores come from music21's corpus at run time or are built here."""

from __future__ import annotations

import pytest
from music21 import (
    articulations,
    bar,
    chord,
    converter,
    corpus,
    dynamics,
    instrument,
    meter,
    note,
    repeat,
    spanner,
    stream,
    tempo,
    tie,
)

from theremin.data.demo import _convert
from theremin.music.midi import read_midi
from theremin.music.scores import write_score_midi


def both_ways(make, tmp_path):
    """(fallback reason, fast Piece, music21 Piece) for two copies of a score from ``make()``. The fast path
    merges the parts onto one piano part (the demo corpus is single-instrument): music21's file, a track per
    part, is read the same way (``instruments=False``)."""
    fast, m21 = tmp_path / "fast.mid", tmp_path / "music21.mid"
    reason = write_score_midi(make(), fast)
    make().write("midi", fp=str(m21))
    return reason, read_midi(fast), read_midi(m21, instruments=False)


def test_a_score_music21_writes_is_merged_onto_one_part_too(tmp_path):
    from music21 import corpus

    score = corpus.parse("bach/bwv66.6")
    score.insert(0, __import__("music21").repeat.DaCapo())  # the fast path leaves D.C. to music21
    assert write_score_midi(score, tmp_path / "dc.mid") is not None
    piece = read_midi(tmp_path / "dc.mid")
    assert len(piece.parts) == 1 and len(piece.notes) > 100


def assert_same(a, b):
    assert a.ticks_per_beat == b.ticks_per_beat
    assert a.time_signatures == b.time_signatures
    assert a.tempos == b.tempos
    assert a.notes == b.notes


def chorale(name: str):
    return lambda: converter.parse(str(corpus.getWork(f"bach/{name}")))


def _has(score, klass) -> bool:
    return bool(score.recurse().getElementsByClass(klass))


def _tie_across_barline(score) -> bool:
    return any(ms.notes and ms.notes[-1].tie is not None and ms.notes[-1].tie.type != "stop"
               for ms in score.recurse().getElementsByClass(stream.Measure))


@pytest.mark.parametrize(("name", "feature"), [
    ("bwv8.6", lambda s: _has(s, spanner.RepeatBracket) and _tie_across_barline(s)),  # 1st/2nd endings
    ("bwv299", lambda s: any(n.duration.isGrace for n in s.recurse().notes) and _has(s, bar.Repeat)),
    ("bwv317", lambda s: any(isinstance(m.leftBarline, bar.Repeat) for m in s.recurse().getElementsByClass(
        stream.Measure))),  # start and end repeat barlines
    ("bwv846", lambda s: _has(s, stream.Voice) and _has(s, chord.Chord) and _has(s, tempo.MetronomeMark)),
])
def test_chorales_read_back_as_music21_writes_them(name, feature, tmp_path):
    assert feature(chorale(name)())  # the score still has what it was chosen for
    reason, fast, m21 = both_ways(chorale(name), tmp_path)
    assert reason is None
    assert_same(fast, m21)


def built_score():
    """Two parts: repeat barlines (an end repeat with music21's default times) with 1st/2nd endings, a tie into
    the repeat and one back across it, a grace note, a chord, an accent (louder), tempo marks in both parts
    and a meter change."""
    s = stream.Score()
    for k in range(2):
        p = stream.Part()
        p.insert(0, instrument.Violin() if k == 0 else instrument.Violoncello())
        ms = [stream.Measure(number=i + 1) for i in range(5)]
        ms[0].append(meter.TimeSignature("3/4"))
        ms[4].append(meter.TimeSignature("2/4"))
        if k == 0:
            ms[0].insert(0, tempo.MetronomeMark(number=100))
            accented, held = note.Note("C4"), note.Note("E4")
            accented.articulations.append(articulations.Accent())
            held.tie = tie.Tie("start")
            ms[0].append([accented, note.Note("D4"), held])
            held_end, back = note.Note("E4"), note.Note("A4")
            held_end.tie, back.tie = tie.Tie("stop"), tie.Tie("start")
            ms[1].append([held_end, note.Note("G4").getGrace(), note.Note("F4"), chord.Chord(["C4", "E4", "G4"])])
            ms[2].append([note.Note("G4", type="half"), back])
            ms[3].insert(0, tempo.MetronomeMark(number=60))
            ms[3].append(note.Note("B4", quarterLength=3))
            ms[4].append(note.Note("C5", type="half"))
        else:
            ms[0].append(note.Note("C3", quarterLength=3))
            ms[1].append([note.Note("G2"), note.Note("G2"), note.Note("G2")])
            ms[2].append(note.Note("C3", quarterLength=3))
            ms[3].append(note.Note("G2", quarterLength=3))
            ms[4].insert(0, tempo.MetronomeMark(number=72))
            ms[4].append(note.Note("C3", type="half"))
        ms[1].leftBarline = bar.Repeat(direction="start")
        ms[2].rightBarline = bar.Repeat(direction="end")
        for m in ms:
            p.append(m)
        p.insert(0, spanner.RepeatBracket(ms[2], number=1))
        p.insert(0, spanner.RepeatBracket(ms[3], number=2))
        s.insert(0, p)
    return s


def test_built_score_with_repeats_ties_grace_chord_tempos_reads_back_as_music21_writes_it(tmp_path):
    reason, fast, m21 = both_ways(built_score, tmp_path)
    assert reason is None
    assert_same(fast, m21)
    tpq = fast.ticks_per_beat
    assert fast.notes[-1].end == 17 * tpq  # 3/4 bars 1, 2, 3, 2, 3(2nd ending: 4), then a 2/4 bar: expanded
    assert len(fast.tempos) == 3 and len(fast.time_signatures) == 2
    assert len({n.velocity for n in fast.notes}) == 2  # the accent


def da_capo_al_fine():
    p = stream.Part()
    for i, pitch in enumerate(["C4", "D4", "E4", "F4"]):
        m = stream.Measure(number=i + 1)
        m.append(note.Note(pitch, type="whole"))
        p.append(m)
    p.getElementsByClass(stream.Measure)[1].append(repeat.Fine())
    p.getElementsByClass(stream.Measure)[3].append(repeat.DaCapoAlFine())
    s = stream.Score()
    s.insert(0, p)
    return s


def with_dynamics():
    s = built_score()
    s.parts[0].getElementsByClass(stream.Measure)[1].insert(0, dynamics.Dynamic("pp"))
    return s


@pytest.mark.parametrize(("make", "why"), [(da_capo_al_fine, "Fine"), (with_dynamics, "Dynamic")])
def test_what_it_does_not_model_is_written_by_music21(make, why, tmp_path):
    reason, fast, m21 = both_ways(make, tmp_path)
    assert why in reason
    assert_same(fast, m21)
    if make is da_capo_al_fine:
        assert [n.pitch for n in fast.notes] == [60, 62, 64, 65, 60, 62]  # music21 expanded the D.C.


def test_another_music21_release_is_left_to_music21(tmp_path, monkeypatch):
    import music21

    monkeypatch.setattr(music21, "__version__", "11.0.0")
    reason, fast, m21 = both_ways(built_score, tmp_path)
    assert "music21 11.0.0" in reason
    assert_same(fast, m21)


def test_a_score_music21_cannot_write_is_reported_and_leaves_no_file(tmp_path):
    src = corpus.getWork("bach/bwv277.krn")  # incoherent repeat barlines: music21's Expander refuses them
    dst = tmp_path / "bwv277.mid"
    err = _convert((str(src), str(dst)))
    assert err.startswith("bwv277.krn: ExpanderException")
    assert list(tmp_path.iterdir()) == []
