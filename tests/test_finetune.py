"""Base corpus sources, fine-tuning rules, init_from checks, small-corpus guidance, and the CI path
base → fine-tune → score on tiny models."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from train_run import train_run

from theremin.codec.tokenizer import unknown_note_share
from theremin.data import base as base_data
from theremin.data.datamodule import DataConfigError
from theremin.errors import ThereminError
from theremin.metrics import copies
from theremin.model import finetune
from theremin.model.finetune import FinetuneError, FinetuneRules, corpus_advice, plan

TUNE_BOOK = """X:1
T: Pickup in four-two
M: 4/2
L: 1/4
K: G
G2 | G2B2d2B2 | c4A4z2
A2 | B2G2A2F2 | G4G4z2

X:2
T: A plain reel
M: 4/4
L: 1/8
K: D
|: DFAF dFAF | GBdB AFED | DFAF dfed | cABc d4 :|
"""


@pytest.fixture
def book(tmp_path) -> Path:
    p = tmp_path / "books" / "mybook.abc"
    p.parent.mkdir()
    p.write_text(TUNE_BOOK)
    return p


# ---- base corpus sources ----------------------------------------------------------------------------------
def test_mixed_meter_tune_converts(book, tmp_path):
    """music21 shares one TimeSignature object between measures of a tune like the first one (a pickup bar in
    4/2, as ~20 % of Essen's) and then refuses to write MIDI; the base corpus must not lose those tunes."""
    from music21 import converter

    score = converter.parse(str(book), format="abc").scores[0]
    with pytest.raises(Exception, match="already found"):
        score.write("midi", fp=str(tmp_path / "raw.mid"))
    r = base_data.convert_book(str(book), str(tmp_path / "out"))
    assert (r["tunes"], r["written"], r["failed"]) == (2, 2, [])
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["mybook-0001.mid", "mybook-0002.mid"]


def test_books_are_converted_once(book, tmp_path, monkeypatch):
    out = tmp_path / "out"
    first = base_data.build_books([book], out, workers=1, progress=False)
    assert (first["books"], first["tunes"], first["written"]) == (1, 2, 2)

    def boom(*a, **k):
        raise AssertionError("converted again")

    monkeypatch.setattr(base_data, "convert_book", boom)  # a second build only reads the markers
    assert base_data.build_books([book], out, workers=1, progress=False) == first


def test_book_selection_and_errors(tmp_path):
    essen = [p.name for p in base_data.book_paths("essenFolksong", exclude=["han*.abc", "test*.abc"])]
    assert essen and not any(n.startswith(("han", "test")) for n in essen)
    assert [p.name for p in base_data.book_paths("essenFolksong", include=["han*.abc"])] == ["han1.abc", "han2.abc"]
    with pytest.raises(base_data.BaseDataError, match="no folder 'nope'"):
        base_data.book_paths("nope")
    with pytest.raises(base_data.BaseDataError, match=r"data\.sources\.x"):
        base_data.build_base_midi(tmp_path / "b", {"x": {"what": 1}})
    with pytest.raises(base_data.BaseDataError, match=r"data\.extra_dirs: .*missing"):
        base_data.build_base_midi(tmp_path / "b", {}, [str(tmp_path / "missing")])


def test_extra_dirs_are_linked_and_relinked(midi_dir, tmp_path):
    root = tmp_path / "base"
    r = base_data.build_base_midi(root, {}, [str(midi_dir)], progress=False)
    n = len(list(midi_dir.rglob("*.mid")))
    assert r["extra"]["written"] == n > 0
    links = list((root / "extra").rglob("*.mid"))
    assert len(links) == n and all(p.is_symlink() for p in links)
    assert base_data.build_base_midi(root, {}, [], progress=False)["extra"]["written"] == 0
    assert not list((root / "extra").rglob("*.mid"))  # a folder taken out of extra_dirs leaves no stale link


# ---- rules ------------------------------------------------------------------------------------------------
def test_plan_from_corpus_size():
    r = FinetuneRules()
    tiny, mid, big = plan(5_000, 4096, r), plan(60_000, 4096, r), plan(50_000_000, 4096, r)
    assert tiny.steps == r.min_steps and big.steps == r.max_steps
    assert r.min_steps < mid.steps == -(-int(r.epochs * 60_000) // 4096) < r.max_steps
    mid_lr = plan(r.ref_tokens // 4, 4096, r).lr  # sqrt scaling: half the full rate
    assert tiny.lr == r.min_lr and big.lr == r.lr and r.min_lr < mid_lr < r.lr and mid_lr == pytest.approx(r.lr / 2)
    assert tiny.lr <= mid.lr <= mid_lr <= big.lr  # a smaller corpus takes smaller steps away from the base
    assert 1 <= mid.warmup_steps < mid.steps and mid.val_check_interval == mid.steps // r.validations
    fixed = plan(200_000, 4096, FinetuneRules(steps=77, fixed_lr=1e-5))
    assert (fixed.steps, fixed.lr) == (77, 1e-5)
    with pytest.raises(FinetuneError, match=r"finetune\.epoch "):
        FinetuneRules.from_config({"epoch": 3})


def test_small_corpus_advice():
    assert corpus_advice(finetune.SMALL_CORPUS_NOTES) is None
    msg = corpus_advice(3_000, input_dir="/m")
    assert "small corpus (/m): 3,000 notes" in msg and "experiment=finetune init_from=" in msg
    assert "early stopping" in corpus_advice(3_000, fine_tuning=True)


# ---- init_from --------------------------------------------------------------------------------------------
def test_init_from_missing_or_corrupt(tmp_path):
    with pytest.raises(FinetuneError, match=r"init_from: checkpoint .*nope.ckpt does not exist"):
        finetune.open_init(tmp_path / "nope.ckpt")
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(FinetuneError, match=r"init_from: checkpoint .*bad.ckpt is cut off or damaged"):
        finetune.open_init(bad)
    txt = tmp_path / "notes.ckpt"
    txt.write_text("hello")
    with pytest.raises(FinetuneError, match=r"init_from: .*notes.ckpt is not a checkpoint"):
        finetune.open_init(txt)


# ---- the CI path: a tiny base → fine-tune → score ------------------------------------------------------------


TINY = ["model=nano", "tokenizer=1k", "data.block_size=64", "data.batch_size=8", "logger=csv",
        "callbacks.sample_midi.new_notes=8", "trainer.enable_progress_bar=false", "~callbacks.progress_log"]


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory):
    """A nano base model on a tiny base corpus (12 chorales + 20 Essen tunes): (checkpoint, data_dir)."""
    root = tmp_path_factory.mktemp("data")
    out = tmp_path_factory.mktemp("base")
    sources = "{bach: {composer: bach, limit: 12}, essen: {folder: essenFolksong, include: [erk5.abc], limit: 20}}"
    train_run(["experiment=base", *TINY, "~data.sources", f"+data.sources={sources}", f"paths.data_dir={root}",
            "trainer.max_steps=30", "trainer.val_check_interval=30"], out)
    return out / "checkpoints" / "last.ckpt", root


def test_base_finetune_score(tiny_base, tmp_path):
    """experiment=base → experiment=finetune init_from=... on a folder the base never saw → theremin-score on the
    fine-tune run's val files gives its val/bits_per_note; the base's tokenizer and codec are kept."""
    import shutil

    import torch

    from theremin.data.corpus import load_manifest
    from theremin.model.checkpoint import open_checkpoint
    from theremin.model.scoring import score_folder

    base_ckpt, root = tiny_base
    base = open_checkpoint(base_ckpt)
    assert len(list((root / "base_midi" / "essen").glob("*.mid"))) == 20
    assert load_manifest(root / "corpus" / "base")["settings"]["humanize"]["styles"] == ["performed", "sequenced"]
    folk = tmp_path / "irish"
    r = base_data.build_heldout_midi(folk, "essenFolksong", ["irl.abc"], limit=14, workers=1, progress=False)
    assert r["written"] == 14
    out = tmp_path / "ft"
    metrics = train_run(["experiment=finetune", *TINY, f"init_from={base_ckpt}", "data=folder",
                      f"data.input_dir={folk}", "data.name=irish", f"paths.data_dir={root}", "finetune.steps=12",
                      "data.val_fraction=0.3"], out)
    ft = open_checkpoint(out / "checkpoints" / "last.ckpt")
    assert ft.tokenizer_key == base.tokenizer_key and ft.tokenizer.model_proto == base.tokenizer.model_proto
    assert ft.codec.config == base.codec.config and ft.model_config == base.model_config
    assert ft.global_step == 12 and list((out / "checkpoints").glob("best-*.ckpt"))
    # it started from the base's weights: the embedding moved a little, not from a fresh init
    delta = (ft.state_dict["wte.weight"] - base.state_dict["wte.weight"]).abs().mean()
    assert 0 < delta < 0.5 * base.state_dict["wte.weight"].abs().mean()

    # held-out scoring on exactly the run's val files = the run's val/bits_per_note
    val = tmp_path / "val"
    rows = [r for r in load_manifest(root / "corpus" / "irish")["files"] if r["split"] == "val"]
    assert rows
    for r in rows:
        (val / r["path"]).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(folk / r["path"], val / r["path"])
    rep = score_folder(out / "checkpoints" / "last.ckpt", val)
    assert rep.files == len(rows) and rep.notes == sum(r["notes"] for r in rows) and rep.tokens > 0
    assert rep.bits_per_note == pytest.approx(metrics["val/bits_per_note"], rel=1e-5)
    assert rep.bits_per_note == pytest.approx(ft.last_val["metrics"]["val/bits_per_note"], rel=1e-5)
    assert torch.isfinite(torch.tensor(rep.bits_per_note))


def test_finetune_refusals(tiny_base, tmp_path, midi_dir):
    """Another codec, a single file, and the bad init_from files name the setting/file; nothing is written."""
    base_ckpt, root = tiny_base
    common = ["experiment=finetune", *TINY, f"init_from={base_ckpt}", "data=folder", f"paths.data_dir={root}"]
    with pytest.raises(FinetuneError, match=r"other codec settings .*codec\.grid"):
        train_run([*common, f"data.input_dir={midi_dir}", "data.name=x1", "codec.grid=24"], tmp_path / "r1")
    assert not (root / "corpus" / "x1").exists()
    one = tmp_path / "one"
    one.mkdir()
    (midi_dir / "scale.mid").rename(one / "scale.mid")
    with pytest.raises(DataConfigError, match=r"data\.input_dir=.*one: the val split is empty \(1 usable MIDI file"):
        train_run([*common, f"data.input_dir={one}", "data.name=x2"], tmp_path / "r2")  # used to crash in np.memmap
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "bad.mid").write_text("not midi")
    with pytest.raises(ThereminError, match=r"junk: none of the 1 MIDI files is usable .*bad\.mid: not a MIDI file"):
        train_run([*common, f"data.input_dir={junk}", "data.name=x3"], tmp_path / "r3")
    with pytest.raises(FinetuneError, match=r"init_from: checkpoint .*missing\.ckpt does not exist"):
        train_run(["experiment=finetune", *TINY, f"init_from={tmp_path / 'missing.ckpt'}", "data=folder",
                f"paths.data_dir={root}", f"data.input_dir={midi_dir}", "data.name=x4"], tmp_path / "r4")
    assert not (root / "corpus" / "x4").exists()  # refused before any data is prepared


# ---- guidance: prep says when a corpus is small, generate reports copying ----------------------------------
def test_prep_says_small_corpus(midi_dir, tmp_path, capsys):
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from theremin.apps.prep import prep
    from theremin.config import conf_dir

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        cfg = compose("prep", overrides=["data=folder", f"data.input_dir={midi_dir}", f"paths.data_dir={tmp_path}",
                                         "workers=1", "progress=false"])
    prep(cfg)
    out = capsys.readouterr().out
    assert "small corpus" in out and "experiment=finetune init_from=" in out


def test_copy_warnings(make_midi, midi_factory, tmp_path):
    """A roll that replays 4 bars of a training piece is reported (notes, bars, which piece) and warned about;
    a roll copying less than warn_bars is reported without a warning."""
    from theremin.codec.midichar import MidiChar
    from theremin.data.corpus import build_corpus

    codec = MidiChar()
    folder = tmp_path / "m"
    # 16 quarter notes (4 bars of 4/4), all different: a run copied from it is easy to measure
    make_midi(folder / "a.mid", midi_factory.scale(48, intervals=range(16)))
    make_midi(folder / "b.mid", midi_factory.random_notes(3, 40))
    build_corpus(folder, tmp_path / "c", codec, 1, val_fraction=0.0, progress=False)
    piece = codec.encode_file(folder / "a.mid")
    runs, warnings = copies.copy_warnings([piece], 0, tmp_path / "c", codec, (4, 4), warn_bars=2.0)
    assert runs[0].notes == 16 and runs[0].bars == pytest.approx(15 / 4 + 1 / 48) and runs[0].piece >= 0
    assert len(warnings) == 1 and "variation 1 copies 3.8 bars (16 notes)" in warnings[0]
    runs, warnings = copies.copy_warnings([piece], 0, tmp_path / "c", codec, (4, 4), warn_bars=4.0)
    assert runs[0].notes == 16 and warnings == []
    # the prompt's notes are not counted: a continuation of the first 12 notes copies only the last 4
    runs, _ = copies.copy_warnings([piece], 12, tmp_path / "c", codec)
    assert runs[0].notes == 4


def test_generate_reports_copied_runs(tiny_base, caplog):
    """theremin-generate's report gives each variation's longest copied run; over warn_copied_bars it warns."""
    from theremin.apps.generate import copied_figures, report
    from theremin.roll.roller import Roller, SamplingSettings

    ckpt, root = tiny_base
    roller = Roller.load(ckpt)
    result = roller.roll(None, SamplingSettings(n=2, length=24, temperature=0.3))
    metrics = copied_figures(result, root / "corpus" / "base", roller.codec, warn_bars=-1.0)
    assert set(metrics) == {"copied/1/notes", "copied/1/bars", "copied/2/notes", "copied/2/bars"}
    assert "longest run copied from the training corpus" in report(result, metrics)
    assert sum("copies" in r.message for r in caplog.records) == 2  # every roll is over -1 bars


def test_unknown_notes_are_measured_and_warned(tiny_base):
    """A folder whose notes the base tokenizer mostly never saw gets a message naming it and the share."""
    from theremin.model.checkpoint import open_checkpoint
    from theremin.music.midi import Note, Piece

    base_ckpt, root = tiny_base
    tok = open_checkpoint(base_ckpt).tokenizer
    from theremin.metrics.notes import load_corpus

    own = load_corpus(root / "corpus" / "base", "train", limit=20)  # the pieces as written, not humanized copies
    assert unknown_note_share(tok, own) < 0.2
    assert finetune.unknown_notes_message(tok, own, "/base") is None
    # soft, very high notes on an odd grid: nothing a chorale or a folk tune holds
    weird = tok.codec.encode(Piece([Note(i * 7, i * 7 + 29, 110 + i % 17, 10) for i in range(200)], 12))
    assert unknown_note_share(tok, [weird]) > 0.9
    msg = finetune.unknown_notes_message(tok, [weird], "/my/folder")
    assert msg.startswith("/my/folder: ") and "% of its notes are unknown to the base tokenizer" in msg


def test_val_split_shorter_than_a_window(tiny_base, tmp_path, make_midi, midi_factory):
    """A small folder's val split (one short file) is shorter than one window: it validates (the window is padded)
    instead of being refused ("the val split has 40 tokens, fewer than one window" before)."""
    import math

    base_ckpt, root = tiny_base
    for root_note in (55, 60, 62, 64, 67):  # five 8-note scales: whichever goes to val is a few tokens long
        make_midi(tmp_path / "scales" / f"s{root_note}.mid", midi_factory.scale(root_note))
    metrics = train_run(["experiment=finetune", *TINY, f"init_from={base_ckpt}", "data=folder",
                         f"paths.data_dir={root}", f"data.input_dir={tmp_path / 'scales'}", "data.name=tinyval",
                         "finetune.steps=4"], tmp_path / "r")
    meta = json.loads(next((root / "corpus" / "tinyval").rglob("tokens.json")).read_text())
    assert 0 < meta["val"]["tokens"] < 64 + 1
    assert math.isfinite(metrics["val/bits_per_note"])


def test_finetune_requires_init_from(tmp_path):
    """experiment=finetune without init_from used to train from scratch silently (an experiment's `???` cannot
    override train.yaml's null); ~finetune is the same recipe from scratch, on purpose."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from theremin.config import conf_dir

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        cfg = compose("train", overrides=["experiment=finetune", f"data.input_dir={tmp_path}"])
        scratch = compose("train", overrides=["experiment=finetune", "~finetune", f"data.input_dir={tmp_path}"])
    with pytest.raises(FinetuneError, match="init_from is required by experiment=finetune"):
        finetune.init_of(cfg)
    assert finetune.init_of(scratch) is None


def test_finetune_that_only_hurts_keeps_the_base(tiny_base, tmp_path, make_midi, midi_factory, caplog):
    """The base is validated at step 0 and kept as the first best checkpoint: a fine-tuning run whose every step
    makes val worse (here a rate of 0.5) hands back the base's weights as its best, and early stopping counts
    from the base's figure. A run whose steps help replaces it (test_base_finetune_score keeps one best-*.ckpt)."""
    import torch

    from theremin.model.checkpoint import open_checkpoint

    base_ckpt, root = tiny_base
    for i, root_note in enumerate((55, 57, 60, 62, 64, 65, 67, 69)):
        make_midi(tmp_path / "scales" / f"s{i}.mid", midi_factory.scale(root_note))
    out = tmp_path / "r"
    with caplog.at_level("INFO", logger="theremin.model.finetune"):
        train_run(["experiment=finetune", *TINY, f"init_from={base_ckpt}", "data=folder", f"paths.data_dir={root}",
                   f"data.input_dir={tmp_path / 'scales'}", "data.name=hurts", "finetune.steps=12",
                   "finetune.fixed_lr=0.5", "finetune.validations=4", "callbacks.early_stopping.patience=2",
                   "data.val_fraction=0.3"], out)
    said = [r.getMessage() for r in caplog.records if "(step 0)" in r.getMessage()]
    assert said and "val/bits_per_note = " in said[0]
    step0 = float(said[0].split("val/bits_per_note = ")[1].split(";")[0])
    best = list((out / "checkpoints").glob("best-*.ckpt"))
    assert [p.name for p in best] == [f"best-step0000000-bpn{step0:.4f}.ckpt"]
    kept, base = open_checkpoint(best[0]), open_checkpoint(base_ckpt)
    assert all(torch.equal(kept.state_dict[k], v) for k, v in base.state_dict.items())
    assert kept.tokenizer_key == base.tokenizer_key
    last = open_checkpoint(out / "checkpoints" / "last.ckpt")
    assert last.last_val["metrics"]["val/bits_per_note"] > step0
    assert last.global_step < 12  # early stopping counted from the base's figure: 2 worse validations, then stop
