"""theremin-demo's figures and report: the variations' texture next to the held-out val pieces' (issue 7.3)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from theremin.apps.demo import report, variation_figures
from theremin.codec.midichar import MidiChar
from theremin.data.corpus import build_corpus

CODEC = MidiChar()
TPB = 480


def beat_chords(beats: int, root: int, start: int = 0):
    """(start, end, pitch, velocity) ticks: a four-voice chord on every beat, each a beat long."""
    return [(start + b * TPB, start + (b + 1) * TPB, root + b % 3 + iv, 80)
            for b in range(beats) for iv in (0, 4, 7, 12)]


@pytest.fixture(scope="module")
def chorale_corpus(tmp_path_factory):
    """A corpus of pieces that are all four-voice chords on the beat (distinct pitches: no duplicates)."""
    from midi_factory import make_midi

    src = tmp_path_factory.mktemp("midi")
    for i in range(10):
        make_midi(src / f"c{i:02d}.mid", beat_chords(8 + i, 48 + i), tpb=TPB)
    out = tmp_path_factory.mktemp("corpus")
    build_corpus(src, out, CODEC, workers=1, progress=False, val_fraction=0.2)
    return out


def test_variations_are_measured_after_their_prompt_against_the_val_pieces(chorale_corpus):
    from midi_factory import make_midi

    tmp = chorale_corpus.parent
    prompt = beat_chords(2, 60)
    offbeat = [(2 * TPB + b * TPB + TPB // 2, 3 * TPB + b * TPB, 62 + b % 4, 80) for b in range(6)]
    text = CODEC.encode_file(make_midi(tmp / "variation.mid", prompt + offbeat, tpb=TPB))
    style, val = variation_figures([text, text], len(prompt), chorale_corpus, CODEC)
    assert (style["texture/on_beat"], style["texture/simultaneous"]) == (0.0, 1.0)  # the prompt is left out
    assert val == {"texture/on_beat": 1.0, "texture/simultaneous": 4.0}
    assert style["samples/notes_mean"] == len(offbeat) and "style/pitch_class_overlap" in style


def test_report_prints_texture_next_to_the_val_pieces():
    wav = SimpleNamespace(name="variation_01.wav")
    out = {
        "result": SimpleNamespace(variations=[SimpleNamespace(files={"wav": wav}, generated_notes=12)], seconds=1.0),
        "metrics": {"val/bits_per_note": 4.4}, "checkpoint": Path("last.ckpt"), "prompt": Path("p.mid"),
        "out_dir": Path("outputs/demo/variations"), "seconds": 100.0, "train_seconds": 90.0,
        "style": {"style/pitch_class_overlap": 0.9, "style/interval_oa": 0.8, "style/note_density_oa": 0.7,
                  "memo/longest_copied_notes_max": 5.0, "texture/on_beat": 0.25, "texture/simultaneous": 1.5},
        "val_texture": {"texture/on_beat": 0.875, "texture/simultaneous": 3.75},
    }
    lines = report(out).splitlines()
    assert "  texture           on-beat 25% (val pieces 88%), simultaneous notes 1.50 (val 3.75)" in lines
    assert ("  style vs corpus   pitch-class overlap 0.90, interval overlap 0.80, note-density overlap 0.70"
            in lines)
