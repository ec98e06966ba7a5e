"""Rolls and scoring make every tensor on the model's device (issue 19.4: `theremin-generate device=cuda`
crashed, the grammar mask built `torch.tensor([eos])` on the CPU).

No GPU is needed to catch that: the model stays on the CPU while the default device for new tensors is "meta",
so any tensor the sampling path makes without naming a device lands on another device than the model's
and fails, as it would on a GPU."""

from __future__ import annotations

from pathlib import Path

import midi_factory as mf
import pytest
import torch

from theremin import Roller, SamplingSettings

OLD = Path(__file__).parent / "data" / "checkpoint-0.1-ce441f1.ckpt"  # a tiny model of our own


@pytest.fixture(scope="module")
def roller():
    return Roller.load(OLD)


@pytest.mark.parametrize("settings", [
    {}, {"max_polyphony": 3}, {"key": "D dorian", "pitch_range": (48, 84)}, {"register_margin": None},
    {"unit": "bars", "length": 2, "top_k": 20, "min_p": 0.05},
], ids=["plain", "polyphony", "key-range", "no-register", "bars-topk-minp"])
def test_a_roll_makes_no_tensor_off_the_models_device(roller, tmp_path, settings):
    prompt = mf.make_midi(tmp_path / "p.mid", mf.chords())
    s = {"n": 2, "length": 8, "seed": 3, **settings}
    expected = roller.roll(prompt, SamplingSettings(**s))
    with torch.device("meta"):  # a tensor made without a device goes here, away from the model's
        got = roller.roll(prompt, SamplingSettings(**s))
    assert [v.text for v in got.variations] == [v.text for v in expected.variations]


def test_scoring_makes_no_tensor_off_the_models_device(roller, tmp_path):
    from theremin.model.scoring import score_texts

    lines = [roller.codec.encode(roller.codec.decode(roller.prompt(mf.make_midi(tmp_path / f"{i}.mid",
                                                                               mf.scale(60 + i))).text))
             for i in range(3)]
    expected = score_texts(roller.model, roller.tok, lines, ["a", "b", "c"])
    with torch.device("meta"):
        got = score_texts(roller.model, roller.tok, lines, ["a", "b", "c"])
    assert got == expected
