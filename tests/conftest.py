"""Shared fixtures: MIDI files built in code (see tests/midi_factory.py for the plain functions)."""

from __future__ import annotations

import os
from pathlib import Path

import midi_factory as mf
import pytest

from theremin.music.midi import read_midi, write_midi


@pytest.fixture
def midi_factory():
    """The tests/midi_factory module (note-list helpers, raw SMF writer, truncate)."""
    return mf


def _under(tmp_path: Path, path: str | os.PathLike) -> Path:
    path = Path(path)
    return path if path.is_absolute() else tmp_path / path


@pytest.fixture
def make_midi(tmp_path):
    """``make_midi(path, notes, tpb=, tempos=[(tick, bpm)], drums=, extra_tracks=, ...)``; relative paths
    land under the test's tmp_path."""

    def make(path, notes=(), **kwargs) -> Path:
        return mf.make_midi(_under(tmp_path, path), notes, **kwargs)

    return make


@pytest.fixture
def write_smf(tmp_path):
    """``write_smf(path, tracks=[[(delta, bytes), ...]], tpb=, fmt=)`` for raw, possibly malformed files."""

    def write(path, tracks, **kwargs) -> Path:
        return mf.write_smf(_under(tmp_path, path), tracks, **kwargs)

    return write


@pytest.fixture
def midi_dir(tmp_path) -> Path:
    """A folder of four small valid pieces (midi_factory.build_good_set: scale, chords, band, tempo)."""
    folder = tmp_path / "midi"
    mf.build_good_set(folder)
    return folder


@pytest.fixture(scope="session")
def bach_midi(tmp_path_factory) -> Path:
    """30 Bach chorales from music21's corpus, written to MIDI once per test session (real, score-like MIDI)."""
    from theremin.data.demo import build_demo_midi

    return build_demo_midi(tmp_path_factory.mktemp("bach_midi") / "bach", limit=30, progress=False)


@pytest.fixture(scope="session")
def trained(tmp_path_factory, bach_midi):
    """A nano model trained for 60 steps on 30 chorales (a few seconds): (checkpoint, corpus_dir, midi_dir).
    Shared by the sampling and serving tests."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import open_dict

    from theremin import config as resolvers  # noqa: F401
    from theremin.apps.train import train
    from theremin.config import conf_dir

    midi = bach_midi
    root = tmp_path_factory.mktemp("sdata")
    out = tmp_path_factory.mktemp("srun")
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        cfg = compose("train", overrides=[
            "model=nano", "tokenizer=1k", "data.block_size=128", "data.batch_size=16", "logger=csv",
            "callbacks.sample_midi.new_notes=12", "trainer.max_steps=60",
            "trainer.val_check_interval=60", "trainer.enable_progress_bar=false", f"paths.data_dir={root}",
            f"data.input_dir={midi}"], return_hydra_config=True)
    with open_dict(cfg):
        cfg.paths.output_dir = str(out)
        cfg.run_name = "sample-test"
        del cfg["hydra"]
    train(cfg)
    return out / "checkpoints" / "last.ckpt", root / "corpus" / "bach", midi


# ---- theremin-serve: one service per test module (tests/test_serve*.py), on the `trained` model -------------
def make_service(ckpt, rolls_dir, **kw):
    from theremin.serve.forms import Limits
    from theremin.serve.service import RollService, ServeSettings
    from theremin.serve.store import StoreLimits

    limits = kw.pop("limits", Limits(max_n=8, max_notes=128))
    return RollService(ckpt, ServeSettings(rolls_dir=str(rolls_dir), max_upload_bytes=64 * 1024, timeout_s=30,
                                           workers=8, max_batch_rows=32, limits=limits,
                                           store=kw.pop("store", StoreLimits()), **kw))


@pytest.fixture(scope="module")
def service(trained, tmp_path_factory):
    svc = make_service(trained[0], tmp_path_factory.mktemp("rolls"))
    yield svc
    svc.close()


@pytest.fixture(scope="module")
def client(service):
    from fastapi.testclient import TestClient

    from theremin.serve.app import create_app

    with TestClient(create_app(service)) as c:
        yield c


@pytest.fixture(scope="module")
def prompt_bytes(trained, tmp_path_factory) -> bytes:
    """The first two bars of a chorale (the whole piece is longer than the tiny model's context)."""
    piece = read_midi(sorted(Path(trained[2]).glob("*.mid"))[3])
    piece.notes = [n for n in piece.notes if n.start < 8 * piece.ticks_per_beat]
    return write_midi(piece, tmp_path_factory.mktemp("prompt") / "bars.mid").read_bytes()
