"""Reading multirun folders (theremin/metrics/sweeps.py, used by notebooks/sweeps.ipynb): CSV logs, wandb offline runs,
failed runs, and folders with nothing to read."""

from __future__ import annotations

import math

import pytest

from theremin.errors import ThereminError
from theremin.metrics.sweeps import best_runs, load_sweep, read_wandb, table


def _job(root, name, config: str, overrides=("model=nano",), metrics: str | None = None, params: int | None = None):
    job = root / name
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "config.yaml").write_text(config)
    (job / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    if metrics is not None:
        (job / "csv").mkdir()
        (job / "csv" / "metrics.csv").write_text(metrics)
        if params:
            (job / "csv" / "hparams.yaml").write_text(f"n_params: {params}\n")
    return job


CONFIG = "tokenizer: {kind: remi, vocab_size: 4096}\nmodel: {model: {n_layer: 2, n_embd: 64}}\n"
# Lightning's CSV logger: train and val rows interleave, a resumed run may repeat a step
METRICS = ("step,train/loss,val/bits_per_note\n0,8.1,\n99,6.0,\n99,,6.50\n199,5.5,\n199,,6.25\n199,,6.20\n"
           "299,,6.30\n")


def test_csv_runs_failed_runs_and_the_best_table(tmp_path):
    _job(tmp_path, "0", CONFIG, ["tokenizer=remi_bpe"], METRICS, params=620_000)
    _job(tmp_path, "1", "tokenizer: {vocab_size: 4096}\nmodel: {model: {n_layer: 4, n_embd: 128}}\n",
         ["tokenizer=4k"], "step,val/bits_per_note\n99,6.0\n299,5.1\n")
    failed = _job(tmp_path, "2", CONFIG, ["tokenizer.vocab_size=9"])
    (failed / "train.log").write_text("theremin-train: error: tokenizer.vocab_size=9 is too small\n")
    runs = {r.name: r for r in load_sweep(tmp_path)}
    remi = runs["tokenizer=remi_bpe"]
    assert remi.history == [(99, 6.5), (199, 6.2), (299, 6.3)]  # the last value logged at a step wins
    assert (remi.final, remi.best, remi.steps, remi.n_params) == (6.3, 6.2, 299, 620_000)
    assert (remi.codec, remi.vocab_size, remi.model) == ("remi", 4096, "2x64")
    assert runs["tokenizer=4k"].codec == "midichar" and runs["tokenizer=4k"].final == 5.1
    bad = runs["tokenizer.vocab_size=9"]
    assert math.isnan(bad.final) and "failed or stopped" in bad.error and "train.log" in bad.error
    assert [r.name for r in best_runs(list(runs.values()))] == ["tokenizer=4k", "tokenizer=remi_bpe"]
    text = table(list(runs.values()))
    assert text.index("tokenizer=4k") < text.index("tokenizer=remi_bpe") < text.index("failed:")


def test_a_missing_or_empty_folder_is_named(tmp_path):
    with pytest.raises(ThereminError, match=f"{tmp_path / 'nope'}: no such folder"):
        load_sweep(tmp_path / "nope")
    with pytest.raises(ThereminError, match=f"{tmp_path}: no runs in it"):
        load_sweep(tmp_path)
    (tmp_path / "f.csv").write_text("x")
    with pytest.raises(ThereminError, match="not a folder"):
        load_sweep(tmp_path / "f.csv")


def test_wandb_offline_runs_are_read_without_network(tmp_path, monkeypatch):
    wandb = pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    # as theremin-train logs: Lightning's WandbLogger puts n_params and the config into wandb's config
    run = wandb.init(dir=str(tmp_path), project="theremin", config={
        "n_params": 1234, "config": {"tokenizer": {"kind": "remi", "vocab_size": 1000},
                                     "model": {"model": {"n_layer": 2, "n_embd": 64}}}})
    for step, value in ((50, 7.0), (100, 6.5)):
        run.log({"val/bits_per_note": value, "trainer/global_step": step})
        run.log({"train/loss": 5.0, "trainer/global_step": step})
    run.finish()
    wandb.teardown()  # the wandb-core service writes the file; in a long-lived process only its teardown flushes it
    (wb,) = tmp_path.rglob("run-*.wandb")
    config, history = read_wandb(wb)
    assert config["n_params"] == 1234 and history == [(50, 7.0), (100, 6.5)]
    (r,) = load_sweep(tmp_path)
    assert (r.source, r.codec, r.vocab_size, r.model, r.n_params, r.final) == ("wandb", "remi", 1000, "2x64", 1234, 6.5)


def test_a_file_that_is_not_a_wandb_run_is_named(tmp_path):
    bad = tmp_path / "run-x.wandb"
    bad.write_bytes(b"not wandb")
    with pytest.raises(ThereminError, match="not a wandb run file"):
        read_wandb(bad)
