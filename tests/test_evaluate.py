"""Style and memorisation metrics: overlaps behave at the extremes, copy runs are found exactly and fast."""

from __future__ import annotations

import math
import random
import time

import numpy as np
import pytest

from theremin.apps.evaluate import main
from theremin.codec.midichar import MidiChar
from theremin.data.corpus import build_corpus
from theremin.errors import ThereminError
from theremin.metrics.copies import CopyIndex, _suffix_array, _SuffixArray, longest_copied_run
from theremin.metrics.notes import decode_notes, load_corpus
from theremin.metrics.style import evaluate, kde_overlap, pitch_class_overlap, texture_figures
from theremin.music.midi import Note, Piece

CODEC = MidiChar()
G = CODEC.grid
LEVELS = CODEC.velocities


def grid_text(notes) -> str:
    """Midichar text of grid-unit notes (pos, dur, pitch, velocity)."""
    k = CODEC.ticks_per_beat // G
    piece = Piece(notes=sorted(Note(p * k, (p + d) * k, pitch, v) for p, d, pitch, v in notes),
                  ticks_per_beat=CODEC.ticks_per_beat)
    return CODEC.encode(piece)


def random_grid_notes(rng: random.Random, n: int, low: int = 40, high: int = 80, start: int = 0):
    """A melody with some chords: onsets 0/3/6/12 steps apart, table durations, every velocity level."""
    out, pos = [], start
    while len(out) < n:
        out.append((pos, rng.choice((3, 6, 12)), rng.randint(low, high), rng.choice(LEVELS)))
        pos += rng.choice((0, 3, 3, 6, 12))
    return out


def canonical(notes):
    """Notes in text order (onset, then pitch), one per (onset, pitch) as the codec keeps them."""
    return sorted({(p, pitch): (p, d, pitch, v) for p, d, pitch, v in notes}.values(), key=lambda n: (n[0], n[2]))


@pytest.fixture(scope="module")
def random_corpus():
    rng = random.Random(1)
    pieces = [canonical(random_grid_notes(rng, rng.randint(60, 140))) for _ in range(30)]
    return pieces, [grid_text(p) for p in pieces]


@pytest.fixture(scope="module")
def random_index(random_corpus):
    return CopyIndex(random_corpus[1], CODEC, any_key=True)


def varied_pieces(seed: int, n: int = 12):
    rng = random.Random(seed)
    return [grid_text(random_grid_notes(rng, rng.randint(20, 80))) for _ in range(n)]


# ---- style --------------------------------------------------------------------------------------------------
def test_identical_sets_overlap_fully_with_zero_kl():
    pieces = varied_pieces(0)
    m = evaluate(pieces, pieces, CODEC)
    for key in ("pitch_class_overlap", "interval_oa", "note_density_oa", "pitch_range_oa", "duration_oa",
                "polyphony_oa"):
        assert m[f"style/{key}"] == pytest.approx(1.0, abs=1e-6), key
    assert m["style/interval_kl"] == pytest.approx(0.0, abs=1e-12)
    assert m["style/pitch_class_kl"] == pytest.approx(0.0, abs=1e-12)


def test_scales_vs_chromatic_clusters():
    major = (0, 2, 4, 5, 7, 9, 11, 12)
    scales = [grid_text([(i * 6, 6, root + iv, 64) for i, iv in enumerate(major)]) for root in (48, 60, 72)]
    clusters = [grid_text([(c * 12, 12, root + k, 64) for c in range(4) for k in range(12)]) for root in (50, 61)]
    assert pitch_class_overlap(scales, scales, CODEC) == pytest.approx(1.0)
    low = pitch_class_overlap(clusters, scales, CODEC)
    assert low < 0.8  # C major holds 7 of 12 pitch classes: uniform clusters overlap by 7/12
    assert low == pytest.approx(7 / 12, abs=1e-9)
    m = evaluate(clusters, scales, CODEC)
    assert m["style/pitch_class_overlap"] == pytest.approx(low)
    assert m["style/polyphony_oa"] < 0.5  # 12-note clusters vs single notes
    assert m["style/interval_kl"] > 0.1


def test_kde_overlap_extremes_and_degenerate_inputs():
    rng = np.random.default_rng(0)
    a = rng.normal(0, 1, 400)
    assert kde_overlap(a, a) == pytest.approx(1.0)
    assert kde_overlap(a, a + 50) < 1e-6
    assert 0.2 < kde_overlap(a, a + 1.5) < 0.7  # two unit normals 1.5 apart overlap by ~0.45
    for x, y in (([3.0], a), ([1, 1, 1], [1, 1]), ([1.0], [2.0]), (a, [0.0, 0.0])):
        v = kde_overlap(x, y)
        assert math.isfinite(v) and 0.0 <= v <= 1.0
    assert kde_overlap([1, 1, 1], [1, 1]) == 1.0
    assert kde_overlap([1.0], [2.0]) == 0.0
    assert kde_overlap([], a) == 0.0


def test_kde_matches_scipy():
    stats = pytest.importorskip("scipy.stats")
    from theremin.metrics.style import _kde

    v = np.random.default_rng(1).gamma(2.0, 1.0, 300)
    x = np.linspace(-2, 15, 200)
    assert np.allclose(_kde(v, x), stats.gaussian_kde(v)(x), rtol=1e-9, atol=1e-12)


def test_no_nan_on_a_single_sample_or_empty_ones(random_corpus):
    _, texts = random_corpus
    for samples in ([texts[0]], [grid_text([(0, 3, 60, 64)])], [""], ["", texts[1]]):
        m = evaluate(samples, texts, CODEC)
        bad = {k: v for k, v in m.items() if not math.isfinite(v)}
        assert not bad, (samples, bad)
    m = evaluate([grid_text([(0, 3, 60, 64)])] * 3, [grid_text([(0, 3, 60, 64)])] * 2, CODEC)
    assert all(math.isfinite(v) for v in m.values())
    assert m["style/note_density_oa"] == 1.0  # zero spread on both sides, same value


def test_keys_are_stable(random_corpus):
    _, texts = random_corpus
    keys = set(evaluate(texts[:2], texts, CODEC))
    assert {"style/pitch_class_overlap", "style/interval_oa", "style/note_density_oa", "style/pitch_range_oa",
            "style/duration_oa", "style/polyphony_oa", "style/interval_kl", "memo/longest_copied_notes_max",
            "memo/longest_copied_notes_mean", "memo/copied_fraction", "texture/on_beat", "texture/simultaneous",
            "corpus/on_beat", "corpus/simultaneous"} <= keys
    assert keys == set(evaluate(texts[3:4], texts, CODEC))


# ---- texture (issue 7.3) ------------------------------------------------------------------------------------
def beat_chords(beats: int, root: int = 60, start: int = 0):
    """Four-voice chords, one on every beat, each a beat long."""
    return [(start + b * G, G, root + b % 3 + iv, LEVELS[1]) for b in range(beats) for iv in (0, 4, 7, 12)]


def offbeat_notes(n: int, start: int = 0):
    """Single 16ths half a beat after each beat: nothing on a beat, nothing sounding together."""
    return [(start + b * G + G // 2, G // 4, 60 + b % 5, LEVELS[1]) for b in range(n)]


def test_texture_of_chords_on_beats_and_of_offbeat_notes():
    chords, scattered = grid_text(beat_chords(8)), grid_text(offbeat_notes(8))
    assert texture_figures([chords], CODEC) == {"texture/on_beat": 1.0, "texture/simultaneous": 4.0}
    assert texture_figures([scattered], CODEC) == {"texture/on_beat": 0.0, "texture/simultaneous": 1.0}
    # pooled over the notes of a set: 32 on-beat notes of 40, (8 x 4 + 8 x 1) sounding at 16 onsets
    both = texture_figures([chords, scattered], CODEC)
    assert both == {"texture/on_beat": 32 / 40, "texture/simultaneous": 40 / 16}
    m = evaluate([scattered], [chords], CODEC)
    assert (m["texture/on_beat"], m["texture/simultaneous"]) == (0.0, 1.0)
    assert (m["corpus/on_beat"], m["corpus/simultaneous"]) == (1.0, 4.0)
    assert texture_figures([], CODEC) == {"texture/on_beat": 0.0, "texture/simultaneous": 0.0}


def test_held_notes_count_at_every_later_onset_they_span():
    # a bass held for 4 beats under a melody note on each beat, then a 16th after the last melody note ends
    notes = [(0, 4 * G, 36, LEVELS[1])] + [(b * G, G, 72 + b, LEVELS[1]) for b in range(4)] + [(4 * G, 3, 70, 1)]
    m = evaluate([grid_text(notes)], [grid_text(notes)], CODEC)
    assert m["texture/simultaneous"] == (2 + 2 + 2 + 2 + 1) / 5  # the bass ends where the last onset starts
    assert m["samples/polyphony_mean"] == 6 / 5  # notes starting per onset: held notes are not in it
    assert m["texture/on_beat"] == 1.0


def test_texture_of_a_midi_file_is_on_the_quarter_note_beat(tmp_path):
    from midi_factory import chords, make_midi

    on = make_midi(tmp_path / "on.mid", chords(length=960), tpb=480)  # triads of 2 beats from beat 0
    off = make_midi(tmp_path / "off.mid", chords(start=240, length=960), tpb=480)  # the same an 8th later
    assert texture_figures([CODEC.encode_file(on)], CODEC) == {"texture/on_beat": 1.0, "texture/simultaneous": 3.0}
    assert texture_figures([CODEC.encode_file(off)], CODEC)["texture/on_beat"] == 0.0


def test_texture_leaves_out_prompt_notes():
    prompt = beat_chords(4)
    sample = grid_text(prompt + offbeat_notes(6, start=4 * G))
    chords = [grid_text(beat_chords(8, root=55))]
    m = evaluate([sample, sample], chords, CODEC, prompt_notes=[len(prompt)] * 2)
    assert (m["texture/on_beat"], m["texture/simultaneous"]) == (0.0, 1.0)
    assert texture_figures([sample], CODEC, prompt_notes=[len(prompt)]) == {"texture/on_beat": 0.0,
                                                                           "texture/simultaneous": 1.0}
    whole = texture_figures([sample], CODEC)  # counted with its prompt, the sample looks half chorale
    assert whole["texture/on_beat"] == 16 / 22 and whole["texture/simultaneous"] == (16 + 6) / 10
    with pytest.raises(ValueError, match="prompt_notes"):
        texture_figures([sample], CODEC, prompt_notes=[1, 2])


# ---- memorisation -------------------------------------------------------------------------------------------
def splice(prefix, copied, suffix, gap):
    """prefix, then ``copied`` entering ``gap`` steps after the prefix's last onset, then suffix after it."""
    out = list(prefix)
    shift = prefix[-1][0] + gap - copied[0][0]
    out += [(p + shift, d, pitch, v) for p, d, pitch, v in copied]
    last = out[-1][0]
    out += [(p + last + 6, d, pitch, v) for p, d, pitch, v in suffix]
    return out


def entry(piece, k):
    """The first index >= k whose note enters after a gap (not the 2nd+ note of a chord)."""
    while piece[k][0] == piece[k - 1][0]:
        k += 1
    return k


def test_copied_run_is_found_exactly(random_corpus, random_index):
    pieces, _ = random_corpus
    rng = random.Random(7)
    for j, k0 in ((4, 15), (17, 30), (29, 1)):
        k = entry(pieces[j], k0)
        copied = pieces[j][k:k + 20]
        gap = pieces[j][k][0] - pieces[j][k - 1][0]
        # the other notes lie above the corpus's range: nothing else can match or extend the run
        prefix = canonical(random_grid_notes(rng, 30, 90, 110))
        suffix = canonical(random_grid_notes(rng, 30, 90, 110))
        sample = grid_text(splice(prefix, copied, suffix, gap))
        assert longest_copied_run(sample, random_index) == (20, j)
        m = random_index.find(sample)
        assert (m.piece_note, m.sample_note, m.transpose) == (k, len(prefix), 0)


def test_transposed_copy_is_found_with_any_key(random_corpus, random_index):
    pieces, _ = random_corpus
    rng = random.Random(8)
    k = entry(pieces[9], 10)
    copied = [(p, d, pitch + 5, v) for p, d, pitch, v in pieces[9][k:k + 20]]
    prefix, suffix = (canonical(random_grid_notes(rng, 20, 100, 120)) for _ in range(2))
    sample = grid_text(splice(prefix, copied, suffix, pieces[9][k][0] - pieces[9][k - 1][0]))
    assert random_index.find(sample).length <= 2
    m = random_index.find(sample, any_key=True)
    assert (m.length, m.piece, m.piece_note, m.transpose) == (20, 9, k, 5)


def test_a_copy_needs_the_same_rhythm_too(random_corpus, random_index):
    pieces, _ = random_corpus
    k = entry(pieces[3], 5)
    copied = pieces[3][k:k + 20]
    slower = [(2 * p, d, pitch, v) for p, d, pitch, v in copied]  # same pitches, doubled gaps
    assert longest_copied_run(grid_text(slower), random_index)[0] <= 3


def test_prompt_notes_are_not_counted_as_copies(random_corpus, random_index):
    pieces, texts = random_corpus
    rng = random.Random(9)
    j = 12
    prompt = pieces[j][:30]
    new = canonical(random_grid_notes(rng, 40, 95, 115, start=prompt[-1][0] + 3))
    sample = grid_text(prompt + new)
    assert longest_copied_run(sample, random_index)[0] >= 30
    assert longest_copied_run(sample, random_index, skip_notes=30) == (0, -1)
    m = evaluate([sample], texts, CODEC, prompt_notes=[30], index=random_index)
    assert m["memo/longest_copied_notes_max"] == 0
    assert m["samples/notes_mean"] == len(new)
    assert evaluate([sample], texts, CODEC, index=random_index)["memo/longest_copied_notes_max"] >= 30

    # a continuation that goes on copying its source is caught from the first generated note
    cont = grid_text(pieces[j][:50])
    m = random_index.find(cont, skip_notes=30)
    assert (m.length, m.piece, m.piece_note, m.sample_note) == (20, j, 30, 0)
    metrics = evaluate([cont], texts, CODEC, prompt_notes=[30], index=random_index)
    assert metrics["memo/longest_copied_notes_max"] == 20
    assert metrics["memo/copied_fraction"] == 1.0


def test_unrelated_sample_shares_little(random_corpus, random_index):
    rng = random.Random(1234)
    for _ in range(5):
        sample = grid_text(random_grid_notes(rng, 100))
        assert longest_copied_run(sample, random_index)[0] <= 2
    assert longest_copied_run("", random_index) == (0, -1)
    assert CopyIndex([], CODEC).find(sample).length == 0


def test_suffix_array_against_brute_force():
    rng = random.Random(5)
    for _ in range(200):
        seq = [rng.randint(0, rng.choice((1, 3, 9))) for _ in range(rng.randint(1, 40))]
        words = np.array(seq, dtype=np.int64)[:, None]
        assert list(_suffix_array(words)) == sorted(range(len(seq)), key=lambda i: seq[i:])
        q = [rng.randint(0, 3) for _ in range(rng.randint(0, 12))]
        best = max((k for i in range(len(q)) for j in range(len(seq)) for k in range(1, len(q) - i + 1)
                    if seq[j:j + k] == q[i:i + k]), default=0)
        n, at_corpus, at_query = _SuffixArray(words).longest(np.array(q, dtype=">u8").tobytes())
        assert n == best
        assert seq[at_corpus:at_corpus + n] == q[at_query:at_query + n]


def test_index_on_a_100k_note_corpus_is_fast():
    rng = np.random.default_rng(0)
    n_pieces, per = 800, 125
    pitch = rng.integers(36, 90, (n_pieces, per))
    step = rng.choice([0, 3, 6, 12], (n_pieces, per))
    dur = rng.choice([3, 6, 12], (n_pieces, per))
    pieces = []
    for i in range(n_pieces):
        pos = np.cumsum(step[i])
        notes = np.stack([pos, dur[i], pitch[i], rng.integers(0, 4, per)], axis=1)
        # canonical order (onset, pitch) and one note per (onset, pitch), as a decoded text would be
        _, first = np.unique(notes[:, 0] * 128 + notes[:, 2], return_index=True)  # sorted by (onset, pitch)
        pieces.append(notes[first])
    total = sum(len(p) for p in pieces)
    assert total > 95_000
    t = time.perf_counter()
    index = CopyIndex.from_notes(pieces, CODEC)
    assert time.perf_counter() - t < 20
    assert index.n_notes == total
    t = time.perf_counter()
    for i in range(0, 400, 4):
        m = index.find(pieces[i][:110], skip_notes=10)  # notes 10..109, entering with their own gap
        assert (m.length, m.piece, m.piece_note) == (100, i, 10)
    assert time.perf_counter() - t < 10


# ---- corpus files and CLI -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def built_corpus(tmp_path_factory):
    from midi_factory import make_midi, random_notes

    src = tmp_path_factory.mktemp("midi")
    for i in range(12):
        make_midi(src / f"p{i:02d}.mid", random_notes(i, 40))
    out = tmp_path_factory.mktemp("corpus")
    build_corpus(src, out, workers=1, progress=False, val_fraction=0.2, transpose=(-1, 1))
    return out


def test_load_corpus_leaves_out_transposed_lines(built_corpus):
    originals = load_corpus(built_corpus)
    everything = load_corpus(built_corpus, augmented=True)
    assert len(everything) == 3 * len(originals)
    assert originals == everything[::3]
    assert load_corpus(built_corpus, limit=2) == originals[:2]
    assert load_corpus(built_corpus, "val")
    with pytest.raises(ThereminError, match=r"test\.txt"):
        load_corpus(built_corpus, "test")


def test_cli_prints_a_table(built_corpus, tmp_path, capsys):
    from midi_factory import make_midi, random_notes

    train = load_corpus(built_corpus)
    txt = tmp_path / "samples.txt"
    txt.write_text("\n".join(train[:2]) + "\n", encoding="utf-8")
    make_midi(tmp_path / "mids" / "s.mid", random_notes(99, 30))
    out_json = tmp_path / "m.json"
    assert main(["--corpus", str(built_corpus), "--samples-txt", str(txt), str(tmp_path / "mids"),
                 "--per-sample", "--json", str(out_json)]) == 0
    text = capsys.readouterr().out
    assert "style/pitch_class_overlap" in text and "memo/longest_copied_notes_max" in text
    assert "texture/on_beat" in text and "texture/simultaneous" in text
    assert "val (ref)" in text
    assert "from p" in text  # copies are traced to the source file
    import json

    metrics = json.loads(out_json.read_text())
    assert metrics["samples"]["samples/count"] == 3
    assert metrics["samples"]["memo/longest_copied_notes_max"] == max(CODEC.count_notes(t) for t in train[:2])


def test_decode_notes_keeps_text_order():
    text = grid_text([(0, 3, 64, 64), (0, 3, 60, 64), (6, 12, 67, 96)])
    assert decode_notes(text, CODEC)[:, :4].tolist() == [[0, 3, 60, 1], [0, 3, 64, 1], [6, 12, 67, 2]]


def test_the_prompt_length_marked_in_a_variation_is_used_by_default(built_corpus, tmp_path):
    """Issue 11.8: theremin-generate marks each variation with its number of prompt notes; theremin-evaluate
    reads it, so its figures are those of the generated part, as theremin-generate prints them."""
    import json

    from theremin.metrics.style import marked_prompt_notes
    from theremin.music.midi import PROMPT_NOTES_MARKER, write_midi

    codec = MidiChar()
    train = load_corpus(built_corpus)
    texts = [train[0], train[1]]
    for i, (t, k) in enumerate(zip(texts, (7, 11))):
        write_midi(codec.decode(t), tmp_path / "gen" / f"v{i}.mid", meta={PROMPT_NOTES_MARKER: str(k)})
    write_midi(codec.decode(train[2]), tmp_path / "plain.mid")
    assert marked_prompt_notes(tmp_path / "gen" / "v1.mid") == 11
    assert marked_prompt_notes(tmp_path / "plain.mid") is None

    def run(*args) -> dict:
        assert main(["--corpus", str(built_corpus), "--json", str(tmp_path / "m.json"), "--no-reference", *args]) == 0
        return json.loads((tmp_path / "m.json").read_text())["samples"]

    expected = evaluate(texts, train, codec, prompt_notes=[7, 11])
    assert run(str(tmp_path / "gen")) == pytest.approx(expected, rel=1e-12)
    assert run(str(tmp_path / "gen"), "--prompt-notes", "0") == pytest.approx(evaluate(texts, train, codec),
                                                                              rel=1e-12)


def test_cli_user_errors_are_one_line(built_corpus, tmp_path, capsys):
    from midi_factory import make_midi, random_notes

    make_midi(tmp_path / "s.mid", random_notes(1, 20))
    for args, message in ((["--corpus", str(built_corpus), str(tmp_path / "nope")], "nope: no such file or folder"),
                          (["--corpus", str(built_corpus)], "no samples"),
                          (["--corpus", str(tmp_path / "nothing"), str(tmp_path)], "train.txt")):
        with pytest.raises(SystemExit) as e:
            main(args)
        err = capsys.readouterr().err
        assert e.value.code == 2 and err.startswith("theremin-evaluate: error: ") and message in err
