"""Humanized copies (theremin.music.humanize) and the corpus's data.humanize: played and sequenced versions of
score-like pieces keep their notes, spread timing and velocity the way such files do, and stay reproducible."""

from __future__ import annotations

import itertools
import json
import random
from collections import Counter

import midi_factory as mf
import pytest

from theremin.codec.midichar import MidiChar
from theremin.data.corpus import CorpusError, build_corpus
from theremin.music.humanize import NOMINAL_TPB, HumanizeConfig, HumanizeError, humanize
from theremin.music.midi import Note, Piece


def chorale(bars: int = 8, tpb: int = 480) -> Piece:
    """Four voices in quarter notes (a chord on every beat), one velocity, at 90 bpm: what a score gives."""
    rng = random.Random(3)
    notes = []
    for beat in range(bars * 4):
        root = 48 + rng.choice([0, 2, 4, 5, 7, 9])
        for p in (root, root + 7, root + 12 + rng.choice([3, 4]), root + 19 + rng.choice([0, 2])):
            notes.append(Note(beat * tpb, (beat + 1) * tpb, p, 90))
    notes.sort(key=lambda n: (n.start, n.pitch))
    return Piece(notes=notes, ticks_per_beat=tpb, tempos=[(0, 666_667)])


def grid_stats(piece: Piece, codec: MidiChar) -> tuple[Counter, Counter, Counter]:
    notes, _ = codec.quantize(piece)
    steps = Counter(b[0] - a[0] for a, b in itertools.pairwise(notes))
    return steps, Counter(n[1] for n in notes), Counter(n[3] for n in notes)


@pytest.mark.parametrize("style", ["performed", "sequenced"])
def test_humanize_keeps_the_notes_and_is_reproducible(style):
    piece = chorale()
    a = humanize(piece, random.Random(7), style=style)
    assert sorted(n.pitch for n in a.notes) == sorted(n.pitch for n in piece.notes)
    assert all(n.end > n.start >= 0 and 1 <= n.velocity <= 127 for n in a.notes)
    assert a == humanize(piece, random.Random(7), style=style)
    assert a != humanize(piece, random.Random(8), style=style)


def test_a_performance_leaves_the_grid_and_spreads_velocities():
    codec, piece = MidiChar(), chorale()
    steps0, durs0, vels0 = grid_stats(piece, codec)
    assert set(steps0) == {0, 12} and len(vels0) == 1 and set(durs0) == {12}
    played = humanize(piece, random.Random(1), style="performed")
    assert played.ticks_per_beat == NOMINAL_TPB and played.tempos == [(0, 500_000)]  # recorded at 120 bpm
    steps, durs, vels = grid_stats(played, codec)
    assert len(vels) >= 2  # dynamics within a piece; across pieces (levels drawn per piece) most of the 4 levels
    assert len({v for seed in range(6) for v in grid_stats(humanize(piece, random.Random(seed), style="performed"),
                                                             codec)[2]}) >= 3
    assert sum(c for s, c in steps.items() if s not in (0, 12)) > 0.3 * sum(steps.values())  # off the score grid
    assert len(durs) >= 8 and max(durs) <= 30  # articulation: lengths vary, none longer than a few beats
    # the played length stays near the score's: 32 beats at 90 bpm is 21.3 s; tempo 0.8-1.6x, a little rubato
    seconds = max(n.end for n in played.notes) / (2 * NOMINAL_TPB)
    assert 21.3 / 1.6 / 1.3 < seconds < 21.3 / 0.8 * 1.3


def test_a_sequenced_part_stays_on_the_grid_with_gated_lengths():
    codec, piece = MidiChar(), chorale()
    seq = humanize(piece, random.Random(2), style="sequenced")
    assert seq.tempos == piece.tempos and [n.start for n in seq.notes] == [n.start for n in piece.notes]
    steps, durs, vels = grid_stats(seq, codec)
    assert set(steps) == {0, 12} and len(vels) >= 3
    assert all(d <= 12 for d in durs) and sum(durs.values()) == len(piece.notes)


def test_settings_are_checked_by_name():
    with pytest.raises(HumanizeError, match=r"data\.humanize.share"):
        HumanizeConfig(share=1.5)
    with pytest.raises(HumanizeError, match=r"data\.humanize.styles"):
        HumanizeConfig(styles=("swung",))
    with pytest.raises(HumanizeError, match=r"data\.humanize.tempo_range"):
        HumanizeConfig(tempo_range=(2.0, 1.0))
    with pytest.raises(HumanizeError, match=r"data\.humanize.bogus is not a humanize setting"):
        HumanizeConfig.from_config({"bogus": 1})
    assert HumanizeConfig.from_config({"share": 0.5, "styles": ["performed"]}).styles == ("performed",)
    assert HumanizeConfig.from_config(None) is None


def test_the_corpus_humanizes_a_share_of_train_copies_only(tmp_path):
    src = tmp_path / "in"
    for s in range(12):
        mf.make_midi(src / f"p{s:02d}.mid", [(n[0] * 2, n[1] * 2, n[2], 80) for n in mf.random_notes(s, 40)])
    kw = dict(val_fraction=0.3, transpose=(-5, 6), progress=False)
    plain = build_corpus(src, tmp_path / "plain", None, 1, **kw)
    hum = build_corpus(src, tmp_path / "hum", None, 2, humanize={"share": 0.5}, **kw)
    build_corpus(src, tmp_path / "again", None, 1, humanize={"share": 0.5}, **kw)
    read = lambda d, f: (d / f).read_text(encoding="utf-8").splitlines()  # noqa: E731
    assert read(tmp_path / "hum", "val.txt") == read(tmp_path / "plain", "val.txt")  # val is left as it is
    train_p, train_h = read(tmp_path / "plain", "train.txt"), read(tmp_path / "hum", "train.txt")
    assert train_h == read(tmp_path / "again", "train.txt")  # seeded by the files: the same corpus again
    assert len(train_h) == len(train_p) and hum.train_pieces == plain.train_pieces
    changed = sum(a != b for a, b in zip(train_p, train_h))
    copies = len(train_p) - plain.train_pieces
    assert 0.3 * copies < changed < 0.7 * copies  # about half the copies, never the originals
    codec = MidiChar()
    vel_levels = {codec.split_note(c)[2] for line in train_h for c in line if codec.is_note(c)}
    assert len(vel_levels) >= 3  # the source files have one velocity
    m = json.loads((tmp_path / "hum" / "manifest.json").read_text())
    # the totals count the copies as written (a humanized copy may merge two notes and needs other rest chars)
    assert m["totals"]["train"]["notes"] == sum(map(codec.count_notes, train_h)) == hum.train_notes
    assert m["totals"]["train"]["chars"] == sum(map(len, train_h))
    assert m["settings"]["humanize"]["share"] == 0.5 and "humanize" not in json.loads(
        (tmp_path / "plain" / "manifest.json").read_text())["settings"]
    with pytest.raises(CorpusError, match=r"data\.humanize .* needs data.transpose"):
        build_corpus(src, tmp_path / "x", None, 1, val_fraction=0.3, humanize={"share": 0.5}, progress=False)


@pytest.mark.parametrize("style", ["performed", "sequenced"])
def test_long_rests_and_many_tempos_cost_no_time(style):
    """A hostile file (a rest of a million beats, a tempo change on every note) is humanized in bounded time and
    memory: the random walks step beat by beat only near notes; the rest is played at the score's tempo."""

    class Counting(random.Random):
        draws = 0

        def gauss(self, mu=0.0, sigma=1.0):
            Counting.draws += 1
            return super().gauss(mu, sigma)

    tpb, gap = 480, 1_000_000
    notes = [Note(i * tpb, (i + 1) * tpb, 60 + i % 12, 80) for i in range(2000)]
    notes += [Note((gap + i) * tpb, (gap + i + 1) * tpb, 60, 80) for i in range(8)]
    piece = Piece(notes=notes, ticks_per_beat=tpb, tempos=[(i * tpb, 400_000 + 50 * i) for i in range(2000)])
    out = humanize(piece, Counting(0), style=style)
    assert Counting.draws < 10 * len(notes)  # stepping the walks over the rest would draw a million times
    assert len(out.notes) == len(notes)
    if style == "performed":  # the rest lasts what the score says, over the played tempo (0.8-1.6x)
        seconds = (out.notes[-8].start - out.notes[1999].start) / (2 * NOMINAL_TPB)
        score = piece.seconds(gap * tpb) - piece.seconds(1999 * tpb)
        assert score / 1.6 / 1.05 < seconds < score / 0.8 * 1.05
