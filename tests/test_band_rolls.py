"""Rolls keep the band (issue 18.3-18.4): a model trained on band pieces built in code continues a band prompt on
its instruments, plays only the parts it may, adds or re-rolls a part over the prompt's bars, and writes files a
DAW takes."""

from __future__ import annotations

import pytest
import symusic
from midi_factory import chords, drum_pattern, make_midi, random_notes

from theremin.music.midi import read_midi
from theremin.roll.roller import GenerateError, Roller, SamplingSettings

BAR = 4 * 480


def band_file(path, seed: int, bars: int = 4):
    """Keys (chords), a bass (program 33) and drums, ``bars`` bars of 4/4."""
    roots = [(0, 5, 7, 0), (9, 5, 0, 7), (2, 7, 0, 5)][seed % 3]
    prog = [tuple(48 + r + x for x in (12, 16, 19)) for r in roots] * (bars // 4)
    bass = [(i * 480, i * 480 + 400, 36 + roots[(i // 4) % 4], 100) for i in range(4 * bars)]
    return make_midi(path, random_notes(seed, 4 * bars, low=64, high=84), drums=drum_pattern(bars),
                     extra_tracks=[{"notes": chords(prog, length=BAR), "program": 4, "name": "Keys"},
                                   {"notes": bass, "program": 33, "name": "Bass"}])


@pytest.fixture(scope="module")
def band_ckpt(tmp_path_factory):
    """(checkpoint, a band prompt): a nano model trained 80 steps on 40 band pieces made in code."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import open_dict

    from theremin import config as resolvers  # noqa: F401
    from theremin.apps.train import train
    from theremin.config import conf_dir

    midi = tmp_path_factory.mktemp("band_midi")
    for i in range(40):
        band_file(midi / f"band{i:02d}.mid", i, bars=8)
    root, out = tmp_path_factory.mktemp("bdata"), tmp_path_factory.mktemp("brun")
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        cfg = compose("train", overrides=[
            "model=nano", "tokenizer=1k", "data.block_size=128", "data.batch_size=16", "logger=csv",
            "callbacks.sample_midi=null", "trainer.max_steps=80", "trainer.val_check_interval=80",
            "trainer.enable_progress_bar=false", f"paths.data_dir={root}", f"data.input_dir={midi}"],
            return_hydra_config=True)
    with open_dict(cfg):
        cfg.paths.output_dir = str(out)
        cfg.run_name = "band-test"
        del cfg["hydra"]
    train(cfg)
    prompt = band_file(tmp_path_factory.mktemp("bprompt") / "prompt.mid", 99, bars=4)
    return out / "checkpoints" / "last.ckpt", prompt


@pytest.fixture(scope="module")
def band(band_ckpt):
    """(roller, a band prompt)."""
    return Roller.load(band_ckpt[0]), band_ckpt[1]


def sounds(piece, notes=None):
    notes = piece.notes if notes is None else notes
    return {(piece.parts[n.part].program, piece.parts[n.part].is_drum) for n in notes}


def new_notes(v):
    return [n for n in v.piece.notes if not ((n.start, n.pitch) in v.prompt_notes and n.start < v.prompt_end_tick)]


def test_a_continuation_plays_only_the_prompts_instruments(band):
    roller, prompt = band
    res = roller.roll(prompt, SamplingSettings(n=4, length=48, seed=3))
    theirs = sounds(read_midi(prompt))
    assert theirs == {(0, False), (0, True), (4, False), (33, False)}
    for v in res.variations:
        assert sounds(v.piece, new_notes(v)) <= theirs
    assert any(len(sounds(v.piece, new_notes(v))) > 1 for v in res.variations)  # a band, not one track


def test_instruments_limit_which_parts_play(band):
    roller, prompt = band
    res = roller.roll(prompt, SamplingSettings(n=4, length=32, seed=5, instruments=["bass", "drums"]))
    for v in res.variations:
        assert sounds(v.piece, new_notes(v)) <= {(33, False), (0, True)}
    with pytest.raises(GenerateError, match=r"violin.*names none of the prompt's parts: .*Bass"):
        roller.roll(prompt, SamplingSettings(n=1, length=4, instruments=["violin"]))


def test_key_and_range_never_apply_to_drums(band):
    roller, prompt = band
    res = roller.roll(prompt, SamplingSettings(n=4, length=48, seed=2, key="C major", pitch_range=(40, 80)))
    for v in res.variations:
        for n in new_notes(v):
            if not v.piece.parts[n.part].is_drum:
                assert 40 <= n.pitch <= 80 and n.pitch % 12 in (0, 2, 4, 5, 7, 9, 11)


def test_mute_leaves_a_part_out(band):
    roller, prompt = band
    res = roller.roll(prompt, SamplingSettings(n=2, length=24, seed=1, mute=["drums"]))
    for v in res.variations:
        assert not any(p.is_drum for p in v.piece.parts)


def test_add_part_rolls_a_bass_line_over_the_prompts_bars(band, tmp_path):
    roller, prompt = band
    res = roller.roll(prompt, SamplingSettings(n=3, seed=4, add_part="bass", mute=["Bass"]), out_dir=tmp_path)
    given = read_midi(prompt)
    span = 4 * BAR
    got = 0
    for v in res.variations:
        added = new_notes(v)
        assert sounds(v.piece, added) <= {(33, False)}
        assert all(0 <= n.start < span for n in added)
        got += len(added)
        # the prompt's other parts are as they were (on the grid)
        kept = sorted((n.start, n.pitch) for n in v.piece.notes if v.piece.parts[n.part].program != 33)
        assert kept == sorted((n.start, n.pitch) for n in given.notes if given.parts[n.part].program != 33)
        # the clip holds the new part alone, from the prompt's bar 1
        clip = read_midi(v.files["mid_new"])
        assert sounds(clip) <= {(33, False)} and len(clip.notes) == len(added)
        assert sorted(n.start for n in clip.notes) == sorted(n.start for n in added)
    assert got > 0


def test_the_server_writes_the_same_clips(band, band_ckpt, tmp_path):
    """The server writes a roll's files on their first GET, from roll.json: an added part's clip starts at the
    prompt's bar 1 there too, and each variation's clip_notes is what its clip holds."""
    from conftest import make_service

    roller, prompt = band
    svc = make_service(band_ckpt[0], tmp_path / "rolls")
    try:
        for settings in (SamplingSettings(n=2, seed=4, add_part="bass", mute=["Bass"]),
                         SamplingSettings(n=2, length=32, seed=3)):
            meta = svc.roll(settings, prompt.read_bytes(), "prompt.mid")
            direct = roller.roll(prompt, settings, out_dir=tmp_path / "direct", render={"wav": False, "png": False})
            for v, d in zip(meta["variations"], direct.variations, strict=True):
                served = read_midi(svc.file(meta["id"], f"variation_{v['index']:02d}_new.mid"))
                written = read_midi(d.files["mid_new"])
                assert len(served.notes) == v["clip_notes"] > 0
                assert [(n.start, n.pitch) for n in served.notes] == [(n.start, n.pitch) for n in written.notes]
            assert svc.present(meta)["variations"][0]["clip_notes"] == meta["variations"][0]["clip_notes"]
    finally:
        svc.close()


def test_add_part_named_after_a_track_rerolls_it(band):
    roller, prompt = band
    res = roller.roll(prompt, SamplingSettings(n=2, seed=6, add_part="Keys"))
    for v in res.variations:
        assert [p.name for p in v.piece.parts].count("Keys") == 1
        assert sounds(v.piece, new_notes(v)) <= {(4, False)}


def test_the_daw_file_has_a_track_per_instrument_and_the_prompt_apart(band, tmp_path):
    roller, prompt = band
    res = roller.roll(prompt, SamplingSettings(n=2, length=48, seed=3), out_dir=tmp_path)
    for v in res.variations:
        tracks = symusic.Score(str(v.files["mid"])).tracks
        names = [t.name for t in tracks]
        assert {"prompt: melody", "prompt: drums", "prompt: Keys", "prompt: Bass"} <= set(names)
        assert not any("overlap" in n for n in names)
        assert all(t.is_drum == ("drums" in t.name.lower()) for t in tracks)
        assert {t.program for t in tracks if t.name.endswith("Bass")} == {33}
        clip = symusic.Score(str(v.files["mid_new"]))
        assert not any(t.name.startswith("prompt") for t in clip.tracks)
        # the new notes from the roll point's bar on (a note added to the prompt's last chord sounds before it)
        from_bar = v.prompt_end_tick // BAR * BAR
        assert sum(len(t.notes) for t in clip.tracks) == sum(n.start >= from_bar for n in new_notes(v)) > 0


def test_add_part_takes_prompt_bars_and_refuses_a_part_the_model_cannot_play(band):
    roller, prompt = band
    res = roller.roll(prompt, SamplingSettings(n=1, seed=2, add_part="Keys", prompt_bars="2-3"))
    assert res.prompt_bars == (2, 3)
    v = res.variations[0]
    assert all(0 <= n.start < 2 * BAR for n in v.piece.notes)  # bars 2-3 moved to bars 1-2
    given = read_midi(prompt)
    others = [n for n in given.notes if BAR <= n.start < 3 * BAR and given.parts[n.part].name != "Keys"]
    assert sorted((n.start, n.pitch) for n in v.piece.notes if v.piece.parts[n.part].name != "Keys") == sorted(
        (n.start - BAR, n.pitch) for n in others)
    # the band corpus never had strings: their switch is no token of the model, so it could never play them
    from theremin.roll.parts import PartSpecError

    with pytest.raises(PartSpecError, match=r"no token for a switch to String Ensemble 1"):
        roller.roll(prompt, SamplingSettings(n=1, add_part="strings"))
