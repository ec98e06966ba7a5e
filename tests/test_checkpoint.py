"""Checkpoints: atomic writes, safe and clear opening, and checkpoints that carry what they need to roll."""

from __future__ import annotations

import errno
import logging
import os
import shutil
import stat
import time
from pathlib import Path

import pytest
import torch
from test_train import make_cfg

from theremin.codec.tokenizer import MidiTokenizer, TokenizerError
from theremin.errors import ThereminError
from theremin.model.checkpoint import CheckpointError, open_checkpoint, save_atomic

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

SHORT = ["trainer.max_steps=4", "trainer.val_check_interval=4", "+trainer.limit_val_batches=2",
         "callbacks.last_checkpoint.every_n_train_steps=2", "~callbacks.sample_midi"]


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return tmp_path_factory.getbasetemp() / "data"  # the corpus + tokenizer cache test_train uses too


@pytest.fixture(scope="module")
def run(tmp_path_factory, bach_midi, data_root):
    """The folder of a 4-step run (last.ckpt and best-*.ckpt)."""
    from theremin.apps.train import train

    out = tmp_path_factory.mktemp("ckrun")
    train(make_cfg(data_root, bach_midi, out, *SHORT))
    return out


@pytest.fixture
def ckpt(run):
    return run / "checkpoints" / "last.ckpt"


def raw(path):
    return torch.load(path, map_location="cpu", weights_only=True)


def altered(tmp_path, ckpt, change) -> Path:
    d = raw(ckpt)
    change(d)
    out = tmp_path / "altered.ckpt"
    torch.save(d, out)
    return out


def test_a_checkpoint_opens_with_everything_needed_to_roll(ckpt):
    ck = open_checkpoint(ckpt)
    assert ck.global_step == 4 and ck.last_val["step"] == 4
    assert ck.tokenizer.vocab_size == ck.model_config.vocab_size and ck.tokenizer.dir is None  # carried inside
    assert ck.codec.config == ck.tokenizer.codec.config and ck.corpus_dir is not None
    ck.build_model()


# ---- refused, each with a message that names the file and the way out -------------------------------------
def _crafted_10b(d):
    d["hyper_parameters"]["model"].update(n_layer=48, n_head=32, n_embd=4096, block_size=2048, vocab_size=50000)


@pytest.mark.parametrize(("change", "message"), [
    (_crafted_10b, r"9,877,\d{3},\d{3} parameters, more than the limit of 1,000,000,000: refused before allocating"),
    (lambda d: d["state_dict"].update({"model.wpe.weight": torch.zeros(3, 3)}), "weights do not match its model"),
    (lambda d: d["hyper_parameters"]["model"].update(n_head=7), "model settings are not a GPT config"),
    (lambda d: d["hyper_parameters"]["codec"].update(bogus=1), "codec settings do not make a codec.*bogus"),
    (lambda d: d["hyper_parameters"]["model"].update(vocab_size=d["hyper_parameters"]["model"]["vocab_size"] + 64),
     "do not belong together"),
    (lambda d: d["theremin"]["tokenizer"]["files"].update({"spm.model": b"garbage" * 50}),
     "spm.model is not a sentencepiece model"),
    (lambda d: d["theremin"]["tokenizer"]["files"].update({"tokenizer.json": b"{not json"}),
     "tokenizer.json is not a tokenizer description"),
    (lambda d: (d.pop("theremin"), d["hyper_parameters"]["tokenizer"].update(dir="/nowhere/tok")),
     "needs its tokenizer at /nowhere/tok, which does not exist"),
    (lambda d: d.pop("hyper_parameters"), "not a theremin checkpoint"),
])
def test_a_bad_checkpoint_is_refused_with_a_clear_message(ckpt, tmp_path, change, message):
    bad = altered(tmp_path, ckpt, change)
    t0 = time.perf_counter()
    with pytest.raises(CheckpointError, match=message) as e:
        open_checkpoint(bad)
    assert str(bad) in str(e.value) and time.perf_counter() - t0 < 10  # nothing big was allocated


def test_the_size_limit_is_configurable_and_shapes_are_checked_without_allocating(ckpt, tmp_path):
    bad = altered(tmp_path, ckpt, _crafted_10b)
    with pytest.raises(CheckpointError, match="weights do not match"):  # no limit: the shapes still refuse it
        open_checkpoint(bad, max_params=None, with_tokenizer=False)
    with pytest.raises(CheckpointError, match="more than the limit of 1,000"):
        open_checkpoint(ckpt, max_params=1000)


@pytest.mark.parametrize("what", ["missing", "folder", "empty", "midi", "pickle_code", "cut"])
def test_files_that_are_no_checkpoint_are_named(run, ckpt, tmp_path, what, bach_midi):
    path = {"missing": tmp_path / "nope.ckpt", "folder": run, "empty": tmp_path / "empty.ckpt",
            "midi": sorted(Path(bach_midi).glob("*.mid"))[0], "pickle_code": tmp_path / "evil.ckpt",
            "cut": run / "checkpoints" / "cut.ckpt"}[what]
    if what == "empty":
        path.write_bytes(b"")
    if what == "pickle_code":
        torch.save({"x": os.system}, path)  # a callable: what a malicious pickle calls on load
    if what == "cut":
        data = ckpt.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    message = {"missing": "does not exist", "folder": r"is a folder: point at a \.ckpt file, e\.g\. .*last\.ckpt",
               "empty": "is empty", "midi": "is not a checkpoint", "pickle_code": "holds Python objects",
               "cut": "is cut off or damaged"}[what]
    try:
        with pytest.raises(CheckpointError, match=message) as e:
            open_checkpoint(path)
    finally:
        if what == "cut":
            path.unlink()
    assert str(path) in str(e.value)
    if what == "cut":  # the way out: the newest good checkpoint beside it
        assert "The newest good checkpoint beside it is" in str(e.value) and "ckpt_path=" in str(e.value)


def test_a_cut_off_last_ckpt_stops_the_same_command_with_the_way_out(run, bach_midi, data_root, tmp_path):
    from theremin.apps.train import train

    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    last = copy / "checkpoints" / "last.ckpt"
    data = last.read_bytes()
    last.write_bytes(data[: len(data) - 1000])
    (copy / ".lock").unlink(missing_ok=True)
    with pytest.raises(ThereminError, match=r"last\.ckpt is cut off or damaged.*best-step.*ckpt_path="):
        train(make_cfg(data_root, bach_midi, copy, *SHORT))


# ---- atomic writes ------------------------------------------------------------------------------------------
class _FullDisk:
    """A file whose writes fail with ENOSPC after ``room`` bytes (what a full disk does)."""

    def __init__(self, f, room):
        self.f, self.room = f, room

    def write(self, b):
        if self.room < len(b):
            raise OSError(errno.ENOSPC, "No space left on device")
        self.room -= len(b)
        return self.f.write(b)

    def __getattr__(self, name):
        return getattr(self.f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.f.close()


def test_a_full_disk_leaves_the_previous_checkpoint_whole(tmp_path, monkeypatch):
    import theremin.model.checkpoint as ckmod

    target = tmp_path / "last.ckpt"
    save_atomic({"step": 1, "w": torch.zeros(10)}, target)
    real_fdopen = os.fdopen
    monkeypatch.setattr(ckmod.os, "fdopen", lambda fd, mode: _FullDisk(real_fdopen(fd, mode), 500))
    with pytest.raises(CheckpointError, match=r"could not write checkpoint .*last\.ckpt: no space left.*intact"):
        save_atomic({"step": 2, "w": torch.zeros(100_000)}, target)
    assert raw(target)["step"] == 1 and sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]


def test_a_full_disk_during_training_is_one_clear_error(run, bach_midi, data_root, tmp_path, monkeypatch):
    import theremin.model.checkpoint as ckmod
    from theremin.apps.train import train

    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    (copy / "checkpoints" / ".last.ckpt.x1y2.ckpt-tmp").write_bytes(b"half a checkpoint of a killed write")
    real_fdopen = os.fdopen
    monkeypatch.setattr(ckmod.os, "fdopen", lambda fd, mode: _FullDisk(real_fdopen(fd, mode), 10_000))
    with pytest.raises(ThereminError, match="no space left on the device"):
        train(make_cfg(data_root, bach_midi, copy, *SHORT, "trainer.max_steps=6"))
    assert raw(copy / "checkpoints" / "last.ckpt")["global_step"] == 4  # the previous one, whole
    assert not list((copy / "checkpoints").glob(".*"))  # no temp files: the stale one was cleaned too


def test_written_files_follow_the_umask(tmp_path, run):
    old = os.umask(0o027)
    try:
        save_atomic({"a": 1}, tmp_path / "x.ckpt")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "x.ckpt").stat().st_mode) == 0o640  # not mkstemp's 0600
    umask = os.umask(0)
    os.umask(umask)
    for p in (run / "checkpoints" / "last.ckpt", Path(open_checkpoint(run / "checkpoints" / "last.ckpt",
                                                                        with_tokenizer=False).hparams["tokenizer"]["dir"])):
        want = (0o777 if p.is_dir() else 0o666) & ~umask
        assert stat.S_IMODE(p.stat().st_mode) == want, p  # a tokenizer folder is not mkdtemp's 0700 either


# ---- tokenizer loading --------------------------------------------------------------------------------------
def test_a_damaged_tokenizer_folder_is_named(ckpt, tmp_path):
    tdir = Path(open_checkpoint(ckpt, with_tokenizer=False).hparams["tokenizer"]["dir"])
    copy = tmp_path / "tok"
    shutil.copytree(tdir, copy, ignore=shutil.ignore_patterns("tokens"))
    (copy / "spm.model").write_bytes(b"\x00garbage" * 100)
    with pytest.raises(TokenizerError, match=r"tok: spm\.model is not a sentencepiece model"):
        MidiTokenizer.load(copy)
    (copy / "spm.model").unlink()
    with pytest.raises(TokenizerError, match=r"spm\.model does not exist"):
        MidiTokenizer.load(copy)


# ---- checkpoints travel -------------------------------------------------------------------------------------
def test_a_checkpoint_rolls_with_the_data_folder_moved_away(tmp_path, bach_midi, caplog):
    """Train, move the data folder away, roll from the checkpoint alone (issue 11.9)."""
    from theremin.apps.train import train
    from theremin.roll.roller import Roller, SamplingSettings

    data = tmp_path / "data"
    train(make_cfg(data, bach_midi, tmp_path / "run", *SHORT, "trainer.max_steps=2"))
    ckpt = shutil.copy(tmp_path / "run" / "checkpoints" / "last.ckpt", tmp_path / "travelled.ckpt")
    shutil.move(data, tmp_path / "elsewhere")
    shutil.rmtree(tmp_path / "run")
    with caplog.at_level(logging.WARNING, logger="theremin.roll.roller"):
        roller = Roller.load(ckpt)
    assert roller.corpus_dir is None and "training corpus" in caplog.text and "not on this machine" in caplog.text
    result = roller.roll(None, SamplingSettings(n=2, length=8, seed=1))
    assert all(v.generated_notes >= 8 for v in result.variations)
    # older checkpoints (no tokenizer inside) still say what they need
    old = altered(tmp_path, ckpt, lambda d: d.pop("theremin"))
    with pytest.raises(ThereminError, match=r"needs its tokenizer at .*which does not exist"):
        Roller.load(old)


def test_checkpoint_content_is_plain_data(ckpt):
    # what weights_only=True promises: no pickled objects at all (the bytes of the tokenizer included)
    with open(ckpt, "rb") as f:
        assert f.read(4) == b"PK\x03\x04"
    d = raw(ckpt)
    assert isinstance(d["theremin"]["tokenizer"]["files"]["spm.model"], bytes)
    assert "carry" not in d["hyper_parameters"]  # the tokenizer bytes stay out of the loggers' hyperparameters
