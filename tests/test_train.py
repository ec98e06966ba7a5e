"""Training: real configs composed with hydra.compose, the real entrypoint, on CPU with tiny limits."""

from __future__ import annotations

import csv
import logging
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import open_dict

from theremin import config as resolvers  # noqa: F401
from theremin.config import conf_dir

TINY = [
    "model=nano",
    "tokenizer=1k",
    "data.block_size=64",
    "data.batch_size=8",
    "logger=csv",
    "trainer.enable_progress_bar=false",
]


@pytest.fixture(scope="session")
def demo_midi(bach_midi):
    return bach_midi


@pytest.fixture
def data_root(tmp_path_factory, demo_midi):
    # one corpus + tokenizer cache shared by the tests (what a user's data dir is); runs go to tmp dirs
    root = tmp_path_factory.getbasetemp() / "data"
    root.mkdir(exist_ok=True)
    return root


def make_cfg(data_root, demo_midi, out_dir, *overrides):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        cfg = compose("train", overrides=[*TINY, f"paths.data_dir={data_root}", f"data.input_dir={demo_midi}",
                                          *overrides], return_hydra_config=True)
    with open_dict(cfg):
        cfg.paths.output_dir = str(out_dir)
        cfg.run_name = "test"
        del cfg["hydra"]
    return cfg


def cli(data_root, demo_midi, *args, **kw):
    multirun = ["-m"] if "-m" in args else []  # Hydra's flags come before the overrides
    cmd = [sys.executable, "-m", "theremin.apps.train", *multirun, *TINY, f"paths.data_dir={data_root}",
           f"data.input_dir={demo_midi}", *(a for a in args if a != "-m")]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=kw.get("timeout", 600),
                          cwd=kw.get("cwd"))


def metrics_rows(run_dir: Path) -> list[dict]:
    files = sorted(run_dir.rglob("metrics.csv"))
    assert files, f"no metrics.csv under {run_dir}"
    with open(files[0]) as f:
        return list(csv.DictReader(f))


# tokens/s needs a previous logged step in the same process, so a resumed run starts it one log later
_TIMING = ("train/tokens_per_sec",)


def logged_cells(run_dir: Path) -> Counter:
    """How often each (step, metric) was written to the run's metrics.csv (timing metrics left out)."""
    return Counter((int(r["step"]), k) for r in metrics_rows(run_dir) for k, v in r.items()
                   if v and k not in ("step", "epoch", *_TIMING))


# ---- configs ----------------------------------------------------------------------------------------------
def group_options(group: str) -> list[str]:
    return sorted(p.stem for p in (conf_dir() / group).glob("*.yaml"))


@pytest.mark.parametrize("model", group_options("model"))
def test_model_presets_instantiate(data_root, demo_midi, tmp_path, model):
    from hydra.utils import instantiate

    cfg = make_cfg(data_root, demo_midi, tmp_path, f"model={model}")
    lit = instantiate(cfg.model, model={**cfg.model.model, "vocab_size": 1000}, _recursive_=False)
    assert lit.model.config.n_layer == cfg.model.model.n_layer


@pytest.mark.parametrize("trainer", group_options("trainer"))
def test_trainer_presets_compose(data_root, demo_midi, tmp_path, trainer):
    from hydra.utils import get_class

    cfg = make_cfg(data_root, demo_midi, tmp_path, f"trainer={trainer}")
    assert get_class(cfg.trainer._target_)
    if cfg.trainer.accelerator == "cpu":
        from hydra.utils import instantiate

        instantiate(cfg.trainer, logger=False)


@pytest.mark.parametrize("logger", group_options("logger"))
def test_logger_presets_instantiate(data_root, demo_midi, tmp_path, logger, monkeypatch):
    from hydra.utils import instantiate

    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    cfg = make_cfg(data_root, demo_midi, tmp_path, f"logger={logger}")
    for name, c in (cfg.get("logger") or {}).items():
        if name == "wandb":
            assert c.mode == "offline"  # no key, no mode: never online by surprise
            continue
        instantiate(c)


def test_callbacks_instantiate(data_root, demo_midi, tmp_path):
    from hydra.utils import instantiate

    cfg = make_cfg(data_root, demo_midi, tmp_path)
    assert {type(instantiate(c)).__name__ for c in cfg.callbacks.values()} >= {"ModelCheckpoint", "SampleMidi"}


# ---- training ---------------------------------------------------------------------------------------------
def test_fast_dev_run(data_root, demo_midi, tmp_path):
    from theremin.apps.train import train

    train(make_cfg(data_root, demo_midi, tmp_path, "debug=fdr"))


def test_limit_run_reports_bits_per_note_and_writes_checkpoints_and_samples(data_root, demo_midi, tmp_path):
    from theremin.apps.train import train

    metrics = train(make_cfg(data_root, demo_midi, tmp_path, "debug=limit"))
    assert 0 < metrics["val/bits_per_note"] < 40
    assert (tmp_path / "checkpoints" / "last.ckpt").exists()
    assert list((tmp_path / "samples").glob("*.mid")) and list((tmp_path / "samples").glob("*.png"))
    ckpt = torch.load(tmp_path / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    hp = ckpt["hyper_parameters"]
    assert hp["model"]["vocab_size"] == hp["tokenizer"]["vocab_size"]
    assert hp["codec"]["grid"] == 12 and Path(hp["tokenizer"]["dir"]).is_dir()
    rows = metrics_rows(tmp_path)
    for key in ("train/loss", "train/lr", "train/tokens_per_sec", "val/loss", "val/bits_per_note",
                "samples/style/pitch_class_overlap", "samples/memo/longest_copied_notes_max"):
        assert any(r.get(key) for r in rows), key


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["data.batch_size=7", "trainer=ddp_sim"], "data.batch_size=7 does not divide"),
        (["data.block_size=64", "model.model.block_size=32"], "exceeds the model's block size"),
        (["data.block_size=100000"], "fewer than one window"),
        (["data.corpus_dir=/nonexistent/corpus", "data.input_dir=null"], "no corpus"),
        (["ckpt_path=/nonexistent.ckpt"], "does not exist"),
        ([f"ckpt_path={Path(__file__).resolve().parent.parent / 'pyproject.toml'}"], "is not a checkpoint"),
    ],
)
def test_bad_settings_stop_before_training_with_one_clear_sentence(data_root, demo_midi, tmp_path, overrides,
                                                                      message, monkeypatch):
    from theremin.apps.train import train

    if "trainer=ddp_sim" in overrides:
        monkeypatch.setenv("WORLD_SIZE", "2")  # what the DDP launcher sets, checked before any process starts
    with pytest.raises(ValueError, match=message):
        train(make_cfg(data_root, demo_midi, tmp_path, *overrides))


def test_checkpoint_from_another_tokenizer_is_refused(data_root, demo_midi, tmp_path):
    from theremin.apps.train import train

    train(make_cfg(data_root, demo_midi, tmp_path / "a", "debug=limit", "trainer.max_steps=2"))
    ckpt = tmp_path / "a" / "checkpoints" / "last.ckpt"
    with pytest.raises(ValueError, match="trained with tokenizer"):
        train(make_cfg(data_root, demo_midi, tmp_path / "b", "tokenizer.vocab_size=900", f"ckpt_path={ckpt}"))


def test_a_run_killed_during_a_validation_resumes_with_that_validation(data_root, demo_midi, tmp_path):
    """A kill while the validation of step 10 runs: the same command resumes and the run's metrics.csv holds
    the same (step, metric) cells as an uninterrupted run's, that validation's included. (last.ckpt was saved
    at step 10 before its validation, and Lightning does not run the validation of a checkpoint's own step
    again: its figures were lost, and the sigkill test below failed when its kill landed in one.)"""
    args = ["trainer.max_steps=15", "trainer.val_check_interval=10", "callbacks.last_checkpoint.every_n_train_steps=5",
            "logger=csv", "trainer.log_every_n_steps=1", "callbacks=default"]
    ref = cli(data_root, demo_midi, *args, f"hydra.run.dir={tmp_path / 'ref'}")
    assert ref.returncode == 0, ref.stderr[-3000:]
    run = [*args, f"hydra.run.dir={tmp_path / 'run'}"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")])}
    killed = subprocess.run([sys.executable, "-m", "theremin.apps.train", *TINY, f"paths.data_dir={data_root}",
                             f"data.input_dir={demo_midi}", *run, "+callbacks.die._target_=die_in_validation."
                             "DieInValidation", "+callbacks.die.step=10"], capture_output=True, text=True, env=env,
                            timeout=600)
    assert killed.returncode == 9, killed.stderr[-3000:]
    again = cli(data_root, demo_midi, *run)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "resuming from" in again.stderr + again.stdout
    ref_cells, run_cells = logged_cells(tmp_path / "ref"), logged_cells(tmp_path / "run")
    assert max(run_cells.values()) == 1
    assert set(run_cells) == set(ref_cells), sorted(set(ref_cells) ^ set(run_cells))


def test_resume_after_sigkill_continues_step_and_loss_curve(data_root, demo_midi, tmp_path):
    args = ["trainer.max_steps=40", "trainer.val_check_interval=20", "callbacks.last_checkpoint.every_n_train_steps=5",
            "logger=csv", "trainer.log_every_n_steps=1", "callbacks=default"]
    # reference: uninterrupted
    ref = cli(data_root, demo_midi, *args, f"hydra.run.dir={tmp_path / 'ref'}")
    assert ref.returncode == 0, ref.stderr[-3000:]
    # killed mid-run, then the same command again
    run_dir = tmp_path / "run"
    cmd = [sys.executable, "-m", "theremin.apps.train", *TINY, f"paths.data_dir={data_root}",
           f"data.input_dir={demo_midi}", *args, f"hydra.run.dir={run_dir}"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    last = run_dir / "checkpoints" / "last.ckpt"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if last.exists() and torch.load(last, map_location="cpu", weights_only=True)["global_step"] >= 10:
            break
        time.sleep(0.2)
    assert proc.poll() is None, "the run ended before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    killed_at = torch.load(last, map_location="cpu", weights_only=True)["global_step"]
    assert killed_at < 40
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "resuming from" in again.stderr + again.stdout
    assert torch.load(last, map_location="cpu", weights_only=True)["global_step"] == 40

    def losses(d):
        out = {}
        for r in metrics_rows(d):
            if r.get("train/loss"):
                out[int(r["step"])] = float(r["train/loss"])
        return out

    ref_loss, run_loss = losses(tmp_path / "ref"), losses(run_dir)
    resumed = {s: v for s, v in run_loss.items() if s >= killed_at}
    assert resumed and max(resumed) >= 38
    for s, v in resumed.items():
        assert v == pytest.approx(ref_loss[s], rel=1e-4, abs=1e-4), s
    # metrics.csv holds every segment: the same (step, metric) cells as the uninterrupted run, none twice
    ref_cells, run_cells = logged_cells(tmp_path / "ref"), logged_cells(run_dir)
    assert max(run_cells.values()) == 1
    assert set(run_cells) == set(ref_cells)
    assert sorted(s for s, k in run_cells if k == "train/loss") == list(range(40))


def test_ddp_sim_two_processes_match_one(data_root, demo_midi, tmp_path):
    """2 CPU processes (gloo) see the same global batches as one: the same val bits/note after 6 steps."""
    results = {}
    for trainer in ("cpu", "ddp_sim"):
        out = cli(data_root, demo_midi, f"trainer={trainer}", "trainer.max_steps=6", "trainer.val_check_interval=6",
                  "callbacks=none", f"hydra.run.dir={tmp_path / trainer}")
        assert out.returncode == 0, out.stderr[-3000:]
        line = [ln for ln in (out.stdout + out.stderr).splitlines() if "val/bits_per_note =" in ln][-1]
        results[trainer] = float(line.rsplit("=", 1)[1])
    assert results["ddp_sim"] == pytest.approx(results["cpu"], abs=2e-3)


def test_multirun_model_by_vocab_trains_each_tokenizer_once(tmp_path, demo_midi):
    data_root = tmp_path / "data"  # a fresh tokenizer cache: this multirun must train each vocab exactly once
    out = cli(data_root, demo_midi, "-m", "model=nano,micro", "tokenizer=1k,4k", "debug=limit",
              "trainer.max_steps=4", "trainer.val_check_interval=4", "callbacks=none",
              f"hydra.sweep.dir={tmp_path / 'multi'}")
    assert out.returncode == 0, out.stderr[-3000:]
    log = out.stdout + out.stderr
    assert log.count("val/bits_per_note =") == 4
    tokenizers = [p for p in (data_root / "corpus" / "bach" / "tokenizers").iterdir() if p.is_dir()]
    assert len(tokenizers) == 2
    assert log.count("training tokenizer") == 2, log[-3000:]


def test_optuna_sweep_of_two_trials(data_root, demo_midi, tmp_path):
    out = cli(data_root, demo_midi, "-m", "hparams_search=optuna", "hydra.sweeper.n_trials=2",
              "~hydra.sweeper.params.tokenizer", "~hydra.sweeper.params.model",
              "debug=limit", "trainer.max_steps=4", "trainer.val_check_interval=4", "callbacks=none",
              f"hydra.sweep.dir={tmp_path / 'optuna'}")
    assert out.returncode == 0, out.stderr[-3000:]
    result = (tmp_path / "optuna" / "optimization_results.yaml").read_text()
    assert "best_value" in result


@pytest.mark.slow
def test_demo_search_runs_trials_within_a_wall_clock_budget(data_root, demo_midi, tmp_path):
    """hparams_search=demo (issue 7.3): Optuna over the demo's shape/lr/batch/vocab/steps, each trial cut at
    trainer.max_time and validated once; here 2 trials of a 3-second budget (~1 min)."""
    out = cli(data_root, demo_midi, "-m", "experiment=demo", "hparams_search=demo", "hydra.sweeper.n_trials=2",
              "hydra.sweeper.sampler.n_startup_trials=2", "trainer.max_time=00:00:00:03", "debug=limit",
              "~hydra.sweeper.params.tokenizer", f"hydra.sweep.dir={tmp_path / 'search'}")
    assert out.returncode == 0, out.stderr[-3000:]
    result = (tmp_path / "search" / "optimization_results.yaml").read_text()
    assert "best_value" in result and "model.model.n_layer" in result
    assert (out.stdout + out.stderr).count("val/bits_per_note =") == 2


# the base experiments convert music21's folk tune books first (~10 min once on 2 cores): slow. experiment=finetune
# needs a base checkpoint (init_from): tests/test_finetune.py runs it end to end.
# The band experiments read POP909 and Groove from the dataset mirror (../shared/datasets or $THEREMIN_DATASETS):
# slow too (a 300 k-note corpus and its tokenizer). experiment=base_sweep is experiment=base with the five datasets
# on (a 2.3 M-note corpus: too slow for a test); test_base_sweep_composes checks what it sets.
MIRROR = Path(os.environ.get("THEREMIN_DATASETS") or Path(__file__).resolve().parents[2] / "shared" / "datasets")


@pytest.mark.parametrize("experiment", [
    pytest.param(e, marks=pytest.mark.slow) if e.startswith("base") or "band" in e else e
    for e in group_options("experiment") if e not in ("finetune", "base_sweep")])
def test_every_experiment_runs(data_root, demo_midi, tmp_path, experiment, monkeypatch):
    from theremin.apps.train import train

    if "band" in experiment:
        if not (MIRROR / "SHA256SUMS").is_file():
            pytest.skip(f"no dataset mirror at {MIRROR}")
        monkeypatch.setenv("THEREMIN_DATASETS", str(MIRROR))

    # a GPU preset on a machine without one: everything but the accelerator still runs
    cpu = ["trainer=cpu"] if experiment.endswith("_gpu") and not torch.cuda.is_available() else []
    train(make_cfg(data_root, demo_midi, tmp_path, f"experiment={experiment}", "debug=fdr", *cpu))


def test_base_sweep_composes():
    """experiment=base_sweep is experiment=base on the real-music corpus, swept over model x lr."""
    from train_run import compose_train

    sweep, base = compose_train(["experiment=base_sweep"]), compose_train(["experiment=base"])
    assert list(sweep.data.datasets) == ["pop909", "groove", "pianolatron", "openewld", "wjazzd"]
    assert dict(sweep.hydra.sweeper.params) == {"model": "micro,mini", "optimizer.lr": "1.5e-3,3.0e-3"}
    assert sweep.data.block_size == base.data.block_size and sweep.tokenizer == base.tokenizer
    assert sweep.trainer.max_steps == 600 and base.trainer.max_steps == 6000


# ---- one run directory, one process (issue 8.6) -------------------------------------------------------------
def test_a_run_directory_is_locked_by_the_launching_process_only(tmp_path, monkeypatch):
    from theremin.apps.train import TrainConfigError, run_lock

    with run_lock(tmp_path):
        assert (tmp_path / ".lock").read_text().strip() == str(os.getpid())
        busy = rf"run directory {tmp_path} is in use by another process \(PID {os.getpid()}\)"
        with pytest.raises(TrainConfigError, match=busy), run_lock(tmp_path):
            pass
        for var, value in (("LOCAL_RANK", "1"), ("RANK", "3"), ("NODE_RANK", "1")):  # DDP / torchrun / kubeflow
            with monkeypatch.context() as m:
                m.setenv(var, value)
                with run_lock(tmp_path):  # ranks other than the launching one share the run: no lock, no wait
                    pass
    with run_lock(tmp_path):  # released when the holder ends
        pass


def _signal_then_sleep(started) -> None:
    started.set()
    time.sleep(60)


def test_a_worker_forked_by_the_run_does_not_keep_its_lock(tmp_path):
    import multiprocessing

    from theremin.apps.train import run_lock

    ctx = multiprocessing.get_context("fork")  # how corpus and DataLoader workers start on Linux
    started = ctx.Event()
    with run_lock(tmp_path):
        worker = ctx.Process(target=_signal_then_sleep, args=(started,))
        worker.start()
        assert started.wait(60)  # the worker runs (its fork hooks have run): it outlives the run below
    try:
        with run_lock(tmp_path):  # the run ended; its worker lives on and must not hold the run directory
            pass
    finally:
        worker.kill()
        worker.join()


@pytest.mark.slow
def test_the_same_command_twice_stops_the_second_with_the_pid(data_root, demo_midi, tmp_path):
    """Two processes, one run directory, end to end (about 1-2 minutes on 2 cores)."""
    from theremin.apps.train import run_lock

    run_dir = tmp_path / "run"
    args = ["trainer.max_steps=100000", "callbacks=none", f"hydra.run.dir={run_dir}"]
    cmd = [sys.executable, "-m", "theremin.apps.train", *TINY, f"paths.data_dir={data_root}",
           f"data.input_dir={demo_midi}", *args]
    first = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 300
        while time.time() < deadline and first.poll() is None:
            lock = run_dir / ".lock"
            if lock.exists() and lock.read_text().strip() == str(first.pid):
                break
            time.sleep(0.2)
        assert first.poll() is None
        second = cli(data_root, demo_midi, *args)
        assert second.returncode == 2, second.stderr[-2000:]
        assert f"run directory {run_dir} is in use by another process (PID {first.pid})" in second.stderr
        assert "Traceback" not in second.stderr
    finally:
        first.kill()
        first.wait()
    with run_lock(run_dir):  # SIGKILL left no stale lock
        pass


# ---- what a run reports (issue 11.3) ------------------------------------------------------------------------
def test_the_final_figure_is_the_validation_of_the_final_weights(data_root, demo_midi, tmp_path):
    from theremin.apps.train import build, train

    args = ["trainer.max_steps=6", "trainer.val_check_interval=4", "callbacks.last_checkpoint.every_n_train_steps=4",
            "~callbacks.sample_midi", "trainer.log_every_n_steps=1"]
    first = train(make_cfg(data_root, demo_midi, tmp_path / "run", *args))["val/bits_per_note"]
    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    ck = torch.load(last, map_location="cpu", weights_only=True)
    assert ck["global_step"] == 6 and ck["theremin"]["last_val"]["step"] == 6  # validated after step 6, not 4
    rows = metrics_rows(tmp_path / "run")
    # the figure is that of the weights in last.ckpt: validate them independently
    dm, lit, trainer = build(make_cfg(data_root, demo_midi, tmp_path / "check", "logger=none", "callbacks=none"))
    trainer.validate(lit, datamodule=dm, ckpt_path=str(last), verbose=False)
    assert lit.last_val["metrics"]["val/bits_per_note"] == pytest.approx(first, abs=1e-6)
    # the same finished command again: trains nothing, validates nothing, prints the same number
    again = train(make_cfg(data_root, demo_midi, tmp_path / "run", *args))["val/bits_per_note"]
    assert again == first and metrics_rows(tmp_path / "run") == rows


# ---- run folders (issue 11.2) --------------------------------------------------------------------------------
def test_run_folder_names_paste_back_into_an_override():
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from theremin.config import run_name

    overrides = ["", "model=mini,tokenizer=8k", "model=mini_tokenizer=8k", "model=mini,tokenizer=8k,seed=1",
                 "data.input_dir=/tmp/my songs (live),data.name=mine", "data.transpose=[-5,6]", "x=" + "y" * 300]
    names = [run_name(o) for o in overrides]
    assert len(set(names)) == len(names)  # unique per command line
    assert names[1].startswith("model-mini_tokenizer-8k-")  # readable
    parser = OverridesParser.create()
    for name in names:
        assert re.fullmatch(r"[A-Za-z0-9._-]{1,80}", name) and not name.startswith((".", "-")), name
        path = f"outputs/train/runs/{name}/checkpoints/last.ckpt"
        [parsed] = parser.parse_overrides([f"ckpt_path={path}"])
        assert parsed.value() == path


@pytest.mark.slow
def test_a_printed_run_folder_resumes_when_pasted(data_root, demo_midi, tmp_path):
    """The run directory theremin-train prints, pasted unquoted into ckpt_path=, resumes (about 1 minute)."""
    args = ["data.transpose=[-1,1]", "trainer.max_steps=2", "trainer.val_check_interval=2", "~callbacks.sample_midi"]
    out = cli(data_root, demo_midi, *args, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    run_dir = re.findall(r"run directory: (\S+)", out.stdout + out.stderr)[-1]
    assert "=" not in Path(run_dir).name and "," not in Path(run_dir).name
    again = cli(data_root, demo_midi, *args, "trainer.max_steps=4", f"ckpt_path={run_dir}/checkpoints/last.ckpt",
                cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "resuming from" in again.stdout + again.stderr


# ---- bad settings and missing loggers (issues 11.4, 8.10) ---------------------------------------------------------
def test_a_bad_setting_is_one_line_without_traceback(data_root, demo_midi, tmp_path):
    out = cli(data_root, demo_midi, "tokenizer.vocab_size=10", f"hydra.run.dir={tmp_path}")
    assert out.returncode == 2, out.stderr[-3000:]
    assert "theremin-train: error: vocab_size 10 is too small" in out.stderr and "use vocab_size >=" in out.stderr
    assert "Traceback" not in out.stderr + out.stdout


def test_no_logger_with_the_default_callbacks(data_root, demo_midi, tmp_path):
    from theremin.apps.train import train

    metrics = train(make_cfg(data_root, demo_midi, tmp_path, "logger=none", "callbacks=default",
                             "trainer.max_steps=2", "trainer.val_check_interval=2"))
    assert metrics["val/bits_per_note"] > 0


# ---- progress (issue 11.7) -----------------------------------------------------------------------------------------
def test_progress_counts_steps_to_max_steps_also_after_a_resume(data_root, demo_midi, tmp_path, capfd, caplog):
    from theremin.apps.train import train

    def run(max_steps):
        cfg = make_cfg(data_root, demo_midi, tmp_path, "trainer.enable_progress_bar=true",
                       f"trainer.max_steps={max_steps}", "trainer.val_check_interval=4", "~callbacks.sample_midi",
                       "callbacks.last_checkpoint.every_n_train_steps=2")
        with open_dict(cfg):
            cfg.callbacks.progress_log = {"_target_": "theremin.model.callbacks.ProgressLog", "every_n_steps": 2}
        with caplog.at_level(logging.INFO, logger="theremin.apps.train"):
            train(cfg)
        out = capfd.readouterr()
        return out.out + out.err, caplog.text

    bar, lines = run(4)
    assert "step" in bar and "4/4" in bar and "/-" not in bar and "Epoch" not in bar
    assert "step 2/4" in lines and "step 4/4" in lines and "left" in lines and "validation:" in lines
    caplog.clear()
    bar, lines = run(6)  # resumes at step 4 of 6: the bar starts at 4/6, not 0 or beyond the total
    assert "4/6" in bar and "6/6" in bar and "/4" not in bar.split("4/6", 1)[1]
    assert "step 6/6" in lines and "step 2/" not in lines


def test_the_demo_prints_its_progress():
    from theremin.apps.demo import demo_config

    cfg = demo_config([])
    assert cfg.callbacks.progress_log._target_ == "theremin.model.callbacks.ProgressLog"
    # the demo's own run, and another one for other settings (a shorter demo never resumes into the real one)
    other = demo_config(["trainer.max_steps=40"]).paths.output_dir
    assert Path(cfg.paths.output_dir).parts[-2:] == ("demo", "train") and other != cfg.paths.output_dir
    assert "=" not in other and "," not in other


def test_the_demo_answers_a_bad_setting_in_one_line(capsys):
    from theremin.apps.demo import main

    with pytest.raises(SystemExit) as e:
        main(["model=nope"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.startswith("theremin-demo: error: ") and "model/nope" in err
    assert "Traceback" not in err and "Config search path" not in err
