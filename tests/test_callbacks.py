"""wandb dashboards (issue 7.5): what SampleMidi logs to an offline wandb run at each validation, and how the
jobs of a multirun are grouped and tagged. Runs are read back from their offline files, without network."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from test_render import needs_fluidsynth
from test_train import cli, data_root, demo_midi, make_cfg  # noqa: F401  (fixtures)

wandb = pytest.importorskip("wandb")


@pytest.fixture
def offline_wandb(tmp_path, monkeypatch):
    """wandb offline and quiet, its files (and artifact staging, where table media wait for `wandb sync`) under
    tmp_path; every run flushed by the end of the test."""
    for var, value in (("WANDB_MODE", "offline"), ("WANDB_SILENT", "true"), ("WANDB_DIR", tmp_path / "wandb"),
                       ("WANDB_DATA_DIR", tmp_path / "wandb-data"), ("WANDB_CACHE_DIR", tmp_path / "wandb-cache")):
        monkeypatch.setenv(var, str(value))
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    yield
    wandb.teardown()


def read_run(folder: Path) -> tuple[object, list[dict], list[object]]:
    """(run record, history rows with JSON values, artifact records) of the one offline run under folder."""
    run, rows, artifacts, _ = read_records(folder)
    return run, rows, artifacts


def read_records(folder: Path) -> tuple[object, list[dict], list[object], object]:
    """read_run's records and the run's exit record."""
    from wandb.proto import wandb_internal_pb2 as pb

    from theremin.metrics.sweeps import _records

    wandb.teardown()  # the wandb-core service writes the file; in a long-lived process only its teardown flushes it
    (path,) = folder.rglob("run-*.wandb")
    run, rows, artifacts, exit_ = None, [], [], None
    for raw in _records(path):
        rec = pb.Record()
        rec.ParseFromString(raw)
        kind = rec.WhichOneof("record_type")
        if kind == "run":
            run = rec.run
        elif kind == "history":
            rows.append({i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in rec.history.item})
        elif kind == "artifact":
            artifacts.append(rec.artifact)
        elif kind == "exit":
            exit_ = rec.exit
    return run, rows, artifacts, exit_


def media(rows: list[dict], key: str) -> list[dict]:
    """The logged values of a media key, each as {field: value} (wandb flattens them into key/field)."""
    out = []
    for row in rows:
        fields = {k.removeprefix(f"{key}/"): v for k, v in row.items() if k.startswith(f"{key}/")}
        if fields:
            out.append(fields)
    return out


def train_with_wandb(data_root, demo_midi, out):  # noqa: F811
    from theremin.apps.train import train

    return train(make_cfg(data_root, demo_midi, out, "logger=wandb", "trainer.max_steps=4",
                          "trainer.val_check_interval=2", "+trainer.limit_val_batches=1"))


@needs_fluidsynth
def test_each_validation_logs_audio_piano_roll_and_a_table_row(data_root, demo_midi, tmp_path,  # noqa: F811
                                                               offline_wandb):
    out = tmp_path / "run"
    train_with_wandb(data_root, demo_midi, out)
    run, rows, artifacts = read_run(out)
    files = next(out.rglob("run-*.wandb")).parent / "files"
    assert run.run_group == "train"  # a single run: its task's group

    audio, rolls, tables = media(rows, "samples/audio"), media(rows, "samples/piano_roll"), media(rows, "samples/table")
    assert len(audio) == len(rolls) == len(tables) == 2  # one per validation (steps 2 and 4)
    assert {a["_type"] for a in audio} == {"audio-file"} and {r["_type"] for r in rolls} == {"image-file"}
    for item in audio + rolls + tables:
        assert (files / item["path"]).stat().st_size > 0
    assert [a["caption"] for a in audio] == ["step 2", "step 4"]
    # the figures in the same rows as the media
    assert all("samples/style/pitch_class_overlap" in r for r in rows if "samples/audio/path" in r)
    # the table grows by one row per validation; each increment carries its own audio and piano roll
    assert [t["nrows"] for t in tables] == [1, 2] and tables[-1]["log_mode"] == "INCREMENTAL"
    increment = json.loads((files / tables[-1]["path"]).read_text())
    assert increment["columns"][:4] == ["step", "audio", "piano_roll", "notes"]
    assert "style/pitch_class_overlap" in increment["columns"] and increment["data"][0][0] == 4
    staged = [e.path for a in artifacts for e in a.manifest.contents]
    assert sum(p.endswith(".wav") for p in staged) == sum(p.endswith(".png") for p in staged) == 2
    # the WAV sits beside the sample's MIDI
    assert sorted(p.name for p in (out / "samples").glob("step*.wav")) == ["step0000002.wav", "step0000004.wav"]


def test_without_fluidsynth_the_rest_is_logged_after_one_warning(data_root, demo_midi, tmp_path,  # noqa: F811
                                                                 offline_wandb, monkeypatch, caplog):
    from theremin.music import render

    def missing():
        raise render.RenderError(render._MISSING_LIBRARY)

    monkeypatch.setattr(render, "_import_fluidsynth", missing)
    out = tmp_path / "run"
    with caplog.at_level(logging.WARNING, logger="theremin.apps.train"):
        metrics = train_with_wandb(data_root, demo_midi, out)
    assert metrics["val/bits_per_note"] > 0
    _, rows, _ = read_run(out)
    assert not media(rows, "samples/audio")
    assert len(media(rows, "samples/piano_roll")) == len(media(rows, "samples/table")) == 2
    warnings = [r.getMessage() for r in caplog.records if "no audio" in r.getMessage()]
    assert len(warnings) == 1 and "libfluidsynth" in warnings[0]
    assert not list((out / "samples").glob("*.wav"))


def test_csv_logger_gets_the_figures_and_no_audio(data_root, demo_midi, tmp_path):  # noqa: F811
    from theremin.apps.train import train

    train(make_cfg(data_root, demo_midi, tmp_path, "trainer.max_steps=2", "trainer.val_check_interval=2",
                   "+trainer.limit_val_batches=1"))
    assert list((tmp_path / "samples").glob("*.mid")) and not list((tmp_path / "samples").glob("*.wav"))


def test_a_multirun_is_one_wandb_group_tagged_with_its_choices(data_root, demo_midi, tmp_path,  # noqa: F811
                                                               offline_wandb):
    sweep = tmp_path / "sweep-a"
    out = cli(data_root, demo_midi, "-m", "logger=wandb", "model=nano,micro", "trainer.max_steps=2",
              "trainer.val_check_interval=2", "+trainer.limit_val_batches=1", "callbacks=none",
              f"hydra.sweep.dir={sweep}")
    assert out.returncode == 0, out.stderr[-3000:]
    runs = [read_run(sweep / job)[0] for job in ("0", "1")]
    # one group per sweep (its folder, a start time by default): another sweep of this experiment is another group
    assert {r.run_group for r in runs} == {"train-sweep-a"}
    for r, model in zip(runs, ("nano", "micro")):
        assert {"codec:midichar", "vocab:1024", f"model:{model}"} <= set(r.tags), list(r.tags)


def test_a_failed_job_finishes_its_wandb_run_as_failed(tmp_path, offline_wandb):
    from theremin.apps.train import wandb_run_closed

    with pytest.raises(RuntimeError), wandb_run_closed():
        wandb.init(dir=str(tmp_path), project="theremin")
        raise RuntimeError("a job of the sweep fails")
    assert wandb.run is None  # the next job of the process starts its own run
    assert read_records(tmp_path)[3].exit_code == 1
