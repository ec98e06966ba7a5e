"""Rolling ideas with a tiny trained model: validity, constraints, determinism, outputs, bad input."""

from __future__ import annotations

import subprocess
import sys
import wave
from pathlib import Path

import numpy as np
import pytest

from theremin.music.midi import Note, Piece, read_midi, write_midi
from theremin.music.render import roll_layout
from theremin.roll.constraints import ConstraintError, parse_key
from theremin.roll.roller import GenerateError, Roller, SamplingLimits, SamplingSettings

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.fixture(scope="session")
def roller(trained):
    return Roller.load(trained[0])


@pytest.fixture(scope="session")
def prompt(trained):
    return sorted(Path(trained[2]).glob("*.mid"))[3]


def generated_notes(v):
    notes = sorted(v.piece.notes, key=lambda n: (n.start, n.pitch))
    return [n for n in notes if n.start >= v.prompt_end_tick]


@pytest.mark.parametrize("preset", [
    {}, {"temperature": 2.0, "top_p": None}, {"temperature": 0.0}, {"top_k": 5}, {"min_p": 0.1, "top_p": None},
])
def test_every_variation_decodes_strictly(roller, prompt, preset):
    res = roller.roll(prompt, SamplingSettings(n=4, length=24, seed=3, **preset))
    for v in res.variations:
        roller.codec.decode(v.text)  # strict: raises on any invalid char
        assert v.generated_notes == 24
    res = roller.roll(None, SamplingSettings(n=2, length=16, seed=1, temperature=1.5, top_p=None))
    for v in res.variations:
        roller.codec.decode(v.text)


def test_same_seed_same_notes_other_seed_other_notes(roller, prompt):
    s = SamplingSettings(n=3, length=20, seed=7)
    a, b = roller.roll(prompt, s), roller.roll(prompt, s)
    assert [v.text for v in a.variations] == [v.text for v in b.variations]
    c = roller.roll(prompt, SamplingSettings(n=3, length=20, seed=8))
    assert [v.text for v in a.variations] != [v.text for v in c.variations]


def test_pitch_range_and_key(roller, prompt):
    s = SamplingSettings(n=4, length=32, seed=2, temperature=1.5, top_p=None, pitch_range=(55, 72), key="D dorian")
    allowed = parse_key("D dorian")
    for v in roller.roll(prompt, s).variations:
        new = generated_notes(v)
        assert new
        assert all(55 <= n.pitch <= 72 and n.pitch % 12 in allowed for n in new)


def test_max_polyphony(roller, prompt):
    s = SamplingSettings(n=4, length=40, seed=5, temperature=1.5, top_p=None, max_polyphony=2, keep_bars=1)
    for v in roller.roll(prompt, s).variations:
        notes = v.piece.notes
        for n in generated_notes(v):
            sounding = sum(1 for m in notes if m.start <= n.start < m.end)
            assert sounding <= 2, (n, sounding)


def test_keep_bars_rerolls_after_bar_k(roller, prompt):
    orig = read_midi(prompt)
    bar = roller.codec.ticks_per_beat * 4 * orig.time_signatures[0][1] // orig.time_signatures[0][2]
    s = SamplingSettings(n=2, length=2, unit="bars", seed=4, keep_bars=1)
    res = roller.roll(prompt, s)
    kept = roller.codec.decode(roller.prompt_text(prompt, 1)[0]).notes
    for v in res.variations:
        assert v.piece.notes[: len(kept)] == kept
        assert all(n.start < bar for n in kept)
        assert all(n.start < bar * 3 for n in v.piece.notes)  # kept bar + 2 rolled bars


def test_length_in_seconds(roller, prompt):
    res = roller.roll(prompt, SamplingSettings(n=2, length=3.0, unit="seconds", seed=1, keep_bars=1))
    for v in res.variations:
        end = max(n.start for n in v.piece.notes)
        assert v.piece.seconds(end) <= v.piece.seconds(v.prompt_end_tick) + 3.0 + 1e-6


def test_long_prompt_keeps_the_recent_part_and_says_so(roller, tmp_path):
    notes = [Note(i * 240, i * 240 + 200, 60 + (i * 5) % 12, 90) for i in range(600)]
    path = write_midi(Piece(notes, 480, tempos=[(0, 600_000)]), tmp_path / "long.mid")
    res = roller.roll(path, SamplingSettings(n=1, length=8))
    assert res.prompt_truncated
    assert res.variations[0].generated_notes == 8
    assert res.variations[0].piece.tempos[:1] == [(0, 600_000)]  # the tempo in force is carried over


@pytest.mark.timeout(60, func_only=True)
def test_a_dense_chord_prompt_is_trimmed_in_bounded_time(roller, make_midi):
    """Issue 8.1: 60 quarter-note chords of 8 random pitches; the first chord holds more notes than the old
    cut step (an eighth of the notes), which then removed nothing and looped forever."""
    import random

    rng = random.Random(0)
    notes = [(i * 480, (i + 1) * 480, p, 80) for i in range(60) for p in rng.sample(range(36, 96), 8)]
    path = make_midi("chords.mid", notes)
    text, _, truncated = roller.prompt_text(path, None)
    assert truncated
    assert len(roller.tok.encode(text)) + 1 <= int(roller.model.block_size * SamplingSettings.prompt_share)
    kept = roller.codec.decode(text).notes
    assert kept and len(kept) < 480
    res = roller.roll(path, SamplingSettings(n=1, length=4))
    assert res.prompt_truncated and res.variations[0].generated_notes == 4


def test_a_prompt_whose_one_chord_overflows_the_context_keeps_its_top_notes(roller, make_midi):
    """A single onset too long for the context: its highest notes are kept (the cut cannot fall between
    onsets), not everything dropped nor a loop."""
    notes = [(0, 480, p, 80) for p in range(21, 109)]  # 88 keys at once
    text, _, truncated = roller.prompt_text(make_midi("cluster.mid", notes), None)
    kept = roller.codec.decode(text).notes
    assert truncated and kept
    assert len(roller.tok.encode(text)) + 1 <= int(roller.model.block_size * SamplingSettings.prompt_share)
    assert [n.pitch for n in kept] == list(range(109 - len(kept), 109))


def test_keep_bars_on_a_silent_start_says_which_bar_keeps_notes(roller, make_midi):
    """Issue 11.5: a song that starts with two bars of rest; keep_bars=2 kept nothing and rolled from nothing
    without a word. It is refused with the bar to use instead; keep_bars=0 still rolls from nothing on purpose."""
    bar = 4 * 480
    path = make_midi("late.mid", [(2 * bar + i * 480, 2 * bar + (i + 1) * 480, 60 + 2 * i, 80) for i in range(8)])
    with pytest.raises(GenerateError, match=r"keep_bars=2 keeps no notes.*first note is in bar 3.*keep_bars=3"):
        roller.roll(path, SamplingSettings(n=1, length=4, keep_bars=2))
    kept = roller.roll(path, SamplingSettings(n=1, length=4, keep_bars=3)).variations[0]
    assert [n.pitch for n in kept.piece.notes if (n.start, n.pitch) in kept.prompt_notes] == [60, 62, 64, 66]
    assert roller.roll(path, SamplingSettings(n=1, length=4, keep_bars=0)).prompt_notes == 0


def test_piano_roll_data_splits_by_origin_and_ends_at_the_kept_bars(roller, prompt):
    """Issue 11.6: the roll is drawn from roll_layout: prompt notes are exactly the kept ones (a note the model
    adds on the last kept onset is generated), and the dashed line sits at the end of the kept bars."""
    orig = read_midi(prompt)
    num, den = orig.time_signatures[0][1:]
    bar = roller.codec.ticks_per_beat * 4 * num // den
    kept = {(n.start, n.pitch) for n in roller.codec.decode(roller.prompt_text(prompt, 2)[0]).notes}
    res = roller.roll(prompt, SamplingSettings(n=4, length=1, unit="bars", seed=11, temperature=1.5, keep_bars=2))
    for v in res.variations:
        layout = roll_layout(v.piece, v.prompt_end_tick, v.prompt_notes)
        assert v.prompt_end_tick == 2 * bar and layout.prompt_end_beat == 2 * bar / v.piece.ticks_per_beat
        assert {(n.start, n.pitch) for n in layout.prompt} == kept
        assert len(layout.generated) == v.generated_notes > 0
        assert all(n.start < 3 * bar for n in layout.generated)  # one bar after the kept two
    whole = roller.roll(prompt, SamplingSettings(n=1, length=4)).variations[0]
    last_onset = max(s for s, _ in whole.prompt_notes)
    assert whole.prompt_end_tick == (last_onset // bar + 1) * bar  # the end of the prompt's last bar


def test_the_png_is_drawn_from_the_roll_layout(roller, prompt, tmp_path, monkeypatch):
    import theremin.music.render as render

    seen = []
    real = render.roll_layout
    monkeypatch.setattr(render, "roll_layout", lambda *a: seen.append(real(*a)) or seen[-1])
    res = roller.roll(prompt, SamplingSettings(n=1, length=8, keep_bars=1), out_dir=tmp_path, render={"wav": False})
    v = res.variations[0]
    assert len(seen) == 1 and seen[0] == roll_layout(v.piece, v.prompt_end_tick, v.prompt_notes)


@pytest.mark.parametrize(("field", "value", "message"), [
    ("length", 1e9, r"sampling.length=1000000000.0: must be <= 4096 notes \(limits.max_notes\)"),
    ("n", 10_000, r"sampling.n=10000: must be <= 64 \(limits.max_n\)"),
    ("max_new_tokens", 10**9, r"limits.max_new_tokens"),
    ("length", float("inf"), "finite"), ("temperature", float("nan"), "finite"), ("n", 2.5, "integer"),
    ("n", "4", "integer"), ("seed", -1, ">= 0"), ("top_p", 0.0, "> 0"), ("top_k", 0, ">= 1"),
    ("min_p", 1.5, "<= 1"), ("keep_bars", -1, ">= 0"), ("pitch_range", (60,), "two MIDI pitches"),
    ("max_polyphony", 0, ">= 1"), ("register_margin", -1, ">= 0"), ("register_margin", 200, "<= 127"),
])
def test_settings_are_bounded_and_typed(field, value, message):
    """Issue 8.9: every field is checked, with a message naming it, before anything is allocated."""
    with pytest.raises(GenerateError, match=message):
        SamplingSettings(**{field: value}).check()


@pytest.mark.timeout(60, func_only=True)
def test_unbounded_requests_are_refused_before_allocating(roller, prompt, monkeypatch):
    """Issue 8.9: length=1e9 allocated 256 GB, n=10000 grew without limit; a roller's limits are its own."""
    with pytest.raises(GenerateError, match=r"limits\.max_notes"):
        roller.roll(prompt, SamplingSettings(length=1e9))
    with pytest.raises(GenerateError, match=r"limits\.max_n\)"):
        roller.roll(prompt, SamplingSettings(n=10_000, length=4))
    monkeypatch.setattr(roller, "limits", SamplingLimits(max_n=2, max_bars=4))
    with pytest.raises(GenerateError, match=r"sampling.n=3: must be <= 2"):
        roller.roll(prompt, SamplingSettings(n=3, length=4))
    with pytest.raises(GenerateError, match=r"<= 4 bars \(limits.max_bars\)"):
        roller.roll(prompt, SamplingSettings(n=1, length=5, unit="bars"))
    with pytest.raises(GenerateError, match=r"limits\.max_n=0: must be >= 1"):
        SamplingLimits(max_n=0)


def test_the_token_budget_cuts_a_roll_short_and_says_so(roller, prompt, monkeypatch, caplog):
    monkeypatch.setattr(roller, "limits", SamplingLimits(max_new_tokens=8))
    with caplog.at_level("WARNING", logger="theremin.roll.roller"):
        res = roller.roll(prompt, SamplingSettings(n=2, length=64, keep_bars=1))
    assert all(v.generated_notes < 64 for v in res.variations)
    assert "stopped at 8 tokens before reaching sampling.length=64 notes" in caplog.text


def test_a_folder_as_prompt_says_it_is_a_folder(roller, tmp_path, prompt):
    """Issue 8.10: prompt=<folder> said "does not exist"."""

    import re
    import shutil

    shutil.copy(prompt, tmp_path / "bars.mid")
    (tmp_path / "nothing").mkdir()
    with pytest.raises(GenerateError, match=re.escape(f"prompt={tmp_path} is a folder: pass one MIDI file (e.g. "
                                                      f"prompt={tmp_path / 'bars.mid'})")):
        roller.roll(tmp_path, SamplingSettings(n=1, length=4))
    with pytest.raises(GenerateError, match=r"nothing is a folder.*holds no \.mid file"):
        roller.roll(tmp_path / "nothing", SamplingSettings(n=1, length=4))


def test_outputs_follow_the_umask_and_leave_no_temp_files(roller, prompt, tmp_path):
    """Issue 8.10: files written through mkstemp were 0600; outputs read like any other file the user makes."""
    import os
    import stat

    for umask in (0o022, 0o077):
        old = os.umask(umask)
        try:
            out = tmp_path / f"u{umask:o}"
            roller.roll(prompt, SamplingSettings(n=1, length=4, keep_bars=1), out_dir=out)
        finally:
            os.umask(old)
        files = sorted(out.iterdir())
        assert [f.name for f in files] == ["variation_01.mid", "variation_01.png", "variation_01.wav",
                                           "variation_01_new.mid"]  # no .tmp left behind
        assert {stat.S_IMODE(f.stat().st_mode) for f in files} == {0o666 & ~umask}


def test_a_prompt_with_chars_the_tokenizer_never_saw(roller, make_midi):
    """Issue 10.5: "the prompt does not end on a complete event (internal error)" on pop songs (Mr. Blue Sky
    from miditok's test files): a tempo (175 bpm) or rest the training corpus never had is spelled in byte
    tokens, which the constraint automaton skipped, so it stopped inside the tempo's two chars. Here: the same
    in code, a 175 bpm prompt with a rest of an odd length."""
    from theremin.roll.constraints import RowState

    gap = 437 * 40  # 437 grid steps: more than the longest step, so a REST char carries the remainder
    notes = [(i * 480, (i + 1) * 480, 60 + i % 5, 80) for i in range(8)] + [(8 * 480 + gap, 9 * 480 + gap, 67, 80)]
    path = make_midi("pop.mid", notes, tempos=[(0, 175.0)])
    text = roller.prompt_text(path, None)[0]
    ids = roller.tok.encode(text)
    assert sum(roller.tok.sp.is_byte(t) for t in ids) >= 8, "the case needs chars outside the vocabulary"
    cons = roller.constraints(SamplingSettings())
    row = RowState()
    for t in ids:
        cons.advance(row, t)
    assert cons.complete(row) and row.notes == 9
    assert row.cursor == (8 * 480 + gap) // 40  # the rest spelled in bytes moves the cursor too
    res = roller.roll(path, SamplingSettings(n=2, length=1, unit="bars", seed=1))
    for v in res.variations:
        assert v.piece.tempos[:1] == [(0, 342857)]
        assert v.generated_notes > 0
        assert all(n.start < v.prompt_end_tick + 4 * 480 for n in v.piece.notes)


def test_outputs_midi_wav_png(roller, prompt, tmp_path):
    res = roller.roll(prompt, SamplingSettings(n=2, length=16, seed=9, keep_bars=2), out_dir=tmp_path)
    orig = read_midi(prompt)
    for v in res.variations:
        assert set(v.files) == {"mid", "mid_new", "wav", "png"}
        mid = read_midi(v.files["mid"])
        # a DAW's view: the prompt on its own track, the continuation on another, no stray tracks
        import symusic

        names = [t.name for t in symusic.Score(str(v.files["mid"])).tracks]
        assert names == ["prompt: Acoustic Grand Piano", "Acoustic Grand Piano"]
        assert len(mid.notes) == len(v.piece.notes)
        new = read_midi(v.files["mid_new"])
        # every new note from the roll point's bar on (one added to the prompt's last chord sounds before it)
        assert v.prompt_end_tick == 2 * 4 * 480
        after = sorted((n.start - v.prompt_end_tick, n.pitch) for n in mid.notes if n.start >= v.prompt_end_tick)
        assert sorted((n.start, n.pitch) for n in new.notes) == after and after
        assert v.generated_notes >= len(new.notes)
        assert new.time_signatures[0][1:] == orig.time_signatures[0][1:]
        assert mid.time_signatures[0][1:] == orig.time_signatures[0][1:]
        assert mid.tempos[:1] == orig.tempos[:1] or (not orig.tempos and not mid.tempos)
        import miditoolkit

        markers = " ".join(m.text for m in miditoolkit.MidiFile(str(v.files["mid"])).markers)
        assert "checkpoint" in markers and "seed" in markers
        assert_audible(v.files["wav"], mid)
        assert v.files["png"].stat().st_size > 5000


def assert_audible(wav_path: Path, piece: Piece) -> None:
    """Not silent, as long as the notes (+ release tail), loud where notes sound."""
    with wave.open(str(wav_path)) as w:
        rate, frames = w.getframerate(), w.readframes(w.getnframes())
    x = np.frombuffer(frames, dtype=np.int16).reshape(-1, 2).astype(np.float64).mean(axis=1)
    end = max(piece.seconds(n.end) for n in piece.notes)
    assert end < len(x) / rate < end + 3.0
    hop = rate // 20
    rms = np.sqrt(np.mean(x[: len(x) // hop * hop].reshape(-1, hop) ** 2, axis=1))
    assert rms.max() > 100, "silent audio"
    sounding = np.zeros(len(rms), dtype=bool)
    for n in piece.notes:
        a, b = int(piece.seconds(n.start) * 20), int(piece.seconds(n.end) * 20)
        sounding[a + 1 : b] = True
    assert np.mean(rms[sounding[: len(rms)]] > 10) > 0.95, "quiet while notes sound"
    tail = rms[int((end + 2.0) * 20):]
    assert tail.size == 0 or tail.max() < rms.max() / 10, "sound after the notes have ended and released"


# ---- bad input ------------------------------------------------------------------------------------------
def test_bad_prompts_name_the_input(roller, tmp_path):
    (tmp_path / "x.mid").write_text("not midi")
    (tmp_path / "empty.mid").write_bytes(b"")
    import midi_factory as mf

    mf.write_smf(tmp_path / "type2.mid", [mf.notes_to_events(mf.scale())], fmt=2)
    for name, reason in (("x.mid", "not a MIDI file"), ("empty.mid", "empty"), ("type2.mid", "type 2")):
        with pytest.raises(GenerateError, match=reason) as e:
            roller.roll(tmp_path / name, SamplingSettings(n=1, length=4), out_dir=tmp_path / "out")
        assert name in str(e.value)
    assert not (tmp_path / "out").exists()


def test_bad_settings(roller, prompt, tmp_path):
    with pytest.raises(ConstraintError, match="not a key"):
        roller.roll(prompt, SamplingSettings(n=1, key="H major"))
    with pytest.raises(GenerateError, match="soundfont"):
        roller.roll(prompt, SamplingSettings(n=1, length=4), out_dir=tmp_path / "o",
                    render={"soundfont": str(tmp_path / "missing.sf2")})
    assert not (tmp_path / "o").exists()
    with pytest.raises(GenerateError, match="unit"):
        roller.roll(prompt, SamplingSettings(unit="beats"))


def test_checkpoint_of_another_tokenizer_is_refused(trained, tmp_path):
    import torch

    ckpt = torch.load(trained[0], map_location="cpu", weights_only=True)
    ckpt["hyper_parameters"]["model"]["vocab_size"] += 64
    torch.save(ckpt, tmp_path / "other.ckpt")
    with pytest.raises(GenerateError, match="do not belong together"):
        Roller.load(tmp_path / "other.ckpt")
    with pytest.raises(GenerateError, match="does not exist"):
        Roller.load(tmp_path / "nope.ckpt")


def test_generate_and_evaluate_give_the_same_figures(trained, prompt, tmp_path):
    """Issue 11.8: theremin-evaluate on a generation folder (README's command, no --prompt-notes) printed
    another pitch-class overlap than theremin-generate: it counted the prompt. Each MIDI now carries its
    number of prompt notes, which evaluate reads."""
    import json

    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from theremin.apps.evaluate import main as evaluate_main
    from theremin.apps.generate import generate
    from theremin.config import conf_dir

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        cfg = compose("generate", overrides=[f"ckpt_path={trained[0]}", f"prompt={prompt}", f"out_dir={tmp_path}",
                                             "sampling.n=3", "sampling.length=24", "render.wav=false",
                                             "render.png=false"])
    result, printed = generate(cfg)
    assert result.prompt_notes > 0 and printed
    assert evaluate_main(["--corpus", str(trained[1]), str(tmp_path), "--json", str(tmp_path / "m.json")]) == 0
    figures = json.loads((tmp_path / "m.json").read_text())["samples"]
    assert {k: printed[k] for k in figures} == pytest.approx(figures, rel=1e-12, abs=1e-12)
    assert "style/pitch_class_overlap" in figures and "memo/longest_copied_notes_max" in figures


def test_generate_cli(trained, prompt, tmp_path):
    cmd = [sys.executable, "-m", "theremin.apps.generate", f"ckpt_path={trained[0]}", f"prompt={prompt}",
           "sampling=conservative", "sampling.n=2", "sampling.length=8", f"hydra.run.dir={tmp_path}",
           "render.wav=false"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "2 variations" in out.stdout and "style/pitch_class_overlap" in out.stdout
    assert len(list(tmp_path.glob("variation_??.mid"))) == 2
    for i, (override, message) in enumerate([
            (f"prompt={tmp_path / 'missing.mid'}", "missing.mid does not exist"),
            (f"prompt={tmp_path}", f"prompt={tmp_path} is a folder: pass one MIDI file"),
            ("sampling.length=1e9", "sampling.length=1000000000.0: must be <= 4096 notes (limits.max_notes)"),
            ("limits.max_n=1", "sampling.n=2: must be <= 1 (limits.max_n)")]):
        key = override.split("=")[0]
        args = [a for a in cmd if not a.startswith((f"{key}=", "hydra.run.dir="))]
        bad = subprocess.run([*args, override, f"hydra.run.dir={tmp_path / f'bad{i}'}"], capture_output=True,
                             text=True, timeout=300)
        assert bad.returncode == 2, bad.stderr[-2000:]
        assert bad.stderr.startswith("theremin-generate: error: ") and message in bad.stderr
        assert "Traceback" not in bad.stderr
        assert not list((tmp_path / f"bad{i}").glob("variation_*"))


def test_a_prompt_whose_parts_alone_fill_the_context_is_refused_with_the_reason(roller, tmp_path):
    """130 tracks (every program, drums): their header leaves no room for a note; said, not crashed."""
    import midi_factory as mf

    extra = [{"notes": [(i * 120, i * 120 + 100, 40 + i % 40, 80)], "program": i, "name": f"t{i}"} for i in range(128)]
    path = mf.make_midi(tmp_path / "many.mid", mf.scale(60), drums=mf.drum_pattern(1), extra_tracks=extra)
    with pytest.raises(GenerateError, match="130 parts alone fill the model's context"):
        roller.roll(path, SamplingSettings(n=1, length=4))
    res = roller.roll(path, SamplingSettings(n=1, length=4, mute=[f"t{i}" for i in range(128)]))
    assert res.prompt_notes > 0


def test_every_sampling_setting_can_be_set_on_the_command_line():
    """conf/sampling/default.yaml names every SamplingSettings field: Hydra refuses a key it does not hold (the
    README's `sampling.prompt_bars=9-16` failed with "Key 'prompt_bars' is not in struct")."""
    import dataclasses

    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from theremin.apps.generate import settings_from

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(Path(__file__).resolve().parent.parent / "conf"), version_base="1.3"):
        cfg = compose("generate", overrides=["sampling.prompt_bars=9-16", "sampling=wild"])
        assert {f.name for f in dataclasses.fields(SamplingSettings)} <= set(cfg.sampling)
        cfg = compose("generate", overrides=["sampling.prompt_bars=9-16", "sampling.add_part=bass"])
    s = settings_from(cfg.sampling)
    assert s.prompt_bars == "9-16" and s.add_part == "bass"


def test_prompt_share_sets_the_prompts_room(roller, make_midi):
    """sampling.prompt_share: the prompt fills at most that share of the context; a larger share keeps more bars
    of a long song, and a share outside 0.1-0.95 is refused by name."""
    notes = [(i * 240, i * 240 + 200, 60 + (i * 5) % 17, 80) for i in range(600)]
    path = make_midi("long.mid", notes)
    kept = {}
    for share in (0.3, 0.5, 0.9):
        p = roller.prompt(path, share=share)
        assert p.truncated and len(roller.tok.encode(p.text)) + 1 <= int(roller.model.block_size * share)
        kept[share] = roller.codec.count_notes(p.text)
    assert kept[0.3] < kept[0.5] < kept[0.9]
    res = roller.roll(path, SamplingSettings(n=1, length=4, prompt_share=0.3))
    assert res.prompt_notes == kept[0.3]
    with pytest.raises(GenerateError, match=r"sampling\.prompt_share"):
        SamplingSettings(prompt_share=1.0).check()
