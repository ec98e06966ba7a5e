"""Read a multirun directory into plain run records, for notebooks/sweeps.ipynb and scripts.

A run is a Hydra job folder (``.hydra/config.yaml``, ``.hydra/overrides.yaml``) with its logs under it: the
CSV logger's ``metrics.csv`` (+ ``hparams.yaml``) and/or a wandb offline run (``wandb/offline-run-*/run-*.wandb``,
read here without network or a wandb login). A wandb offline run folder outside any Hydra job is a run too
(its config comes from the wandb file). What is read of each: the composed config (codec = tokenizer kind, vocab
size, model shape), ``n_params``, and the ``val/bits_per_note`` curve. A run whose logs hold no validation (it
failed, or stopped before its first one) stays in the list with ``error`` saying so: one failed trial does not
hide the others.
"""

from __future__ import annotations

import csv
import json
import math
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import OmegaConf

from theremin.errors import ThereminError

METRIC = "val/bits_per_note"


class SweepError(ThereminError):
    """A folder that holds no runs to read; the message names it."""


@dataclass
class Run:
    path: Path
    name: str  # the job's overrides (what distinguishes it in the sweep), else its folder name
    config: dict = field(default_factory=dict)
    history: list[tuple[int, float]] = field(default_factory=list)  # (step, val/bits_per_note), by step
    n_params: int | None = None
    source: str = ""  # "csv", "wandb" or "" (no logs)
    error: str | None = None

    @property
    def final(self) -> float:
        return self.history[-1][1] if self.history else math.nan

    @property
    def best(self) -> float:
        return min((v for _, v in self.history), default=math.nan)

    @property
    def steps(self) -> int:
        return self.history[-1][0] if self.history else 0

    @property
    def codec(self) -> str:
        return (self.config.get("tokenizer") or {}).get("kind") or "midichar"

    @property
    def vocab_size(self) -> int | None:
        v = (self.config.get("tokenizer") or {}).get("vocab_size")
        return int(v) if v is not None else None

    @property
    def model(self) -> str:
        m = (self.config.get("model") or {}).get("model") or {}
        return f"{m['n_layer']}x{m['n_embd']}" if "n_layer" in m and "n_embd" in m else "?"


def load_sweep(path: str | os.PathLike) -> list[Run]:
    """Every run under ``path`` (a multirun folder, a single run folder, or a folder of wandb offline runs)."""
    root = Path(os.path.expanduser(str(path)))
    if not root.exists():
        raise SweepError(f"{root}: no such folder (give the multirun folder, e.g. "
                         "outputs/<task>/multiruns/<date>, or a run folder)")
    if not root.is_dir():
        raise SweepError(f"{root}: not a folder (give the multirun folder, not a file in it)")
    jobs = sorted({p.parent.parent for p in root.rglob(".hydra/config.yaml")})
    runs = [_hydra_run(j) for j in jobs]
    inside = [j.resolve() for j in jobs]
    for wb in sorted(root.rglob("offline-run-*")):
        if wb.is_dir() and not any(_under(wb.resolve(), j) for j in inside):
            runs.append(_wandb_run(wb))
    if not runs:
        raise SweepError(f"{root}: no runs in it (a run is a Hydra job folder with .hydra/config.yaml, or a wandb "
                         "offline-run-* folder); is it the folder a `theremin-train -m ...` printed?")
    return runs


def _under(p: Path, parent: Path) -> bool:
    return p == parent or parent in p.parents


def _hydra_run(job: Path) -> Run:

    overrides = OmegaConf.to_container(OmegaConf.load(job / ".hydra" / "overrides.yaml")) \
        if (job / ".hydra" / "overrides.yaml").is_file() else []
    cfg = OmegaConf.load(job / ".hydra" / "config.yaml")
    run = Run(job, ",".join(overrides) or job.name, OmegaConf.to_container(cfg, resolve=False))
    for metrics in sorted(job.rglob("metrics.csv")):
        run.history += _csv_history(metrics)
        run.source = "csv"
        hp = metrics.parent / "hparams.yaml"
        if hp.is_file() and run.n_params is None:
            run.n_params = (OmegaConf.to_container(OmegaConf.load(hp)) or {}).get("n_params")
    if not run.history:
        for wb in sorted(job.rglob("offline-run-*/run-*.wandb")):
            config, history = read_wandb(wb)
            run.history += history
            run.source = "wandb"
            run.n_params = run.n_params or config.get("n_params")
    run.history = _by_step(run.history)
    if not run.history:
        logs = sorted(job.glob("*.log"))
        run.error = (f"no {METRIC} in its logs: the run failed or stopped before its first validation"
                     + (f" (see {logs[0]})" if logs else ""))
    return run


def _wandb_run(folder: Path) -> Run:
    run = Run(folder, folder.name, source="wandb")
    for wb in sorted(folder.glob("run-*.wandb")):
        config, history = read_wandb(wb)
        run.config = config.get("config") or config
        run.n_params = config.get("n_params")
        run.history = _by_step(history)
    if not run.history:
        run.error = f"no {METRIC} in its wandb file"
    return run


def _by_step(history: list[tuple[int, float]]) -> list[tuple[int, float]]:
    """One value per step (the last logged: a resumed run may log a step twice), sorted by step."""
    return sorted(dict(history).items())


def _csv_history(path: Path) -> list[tuple[int, float]]:
    out = []
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            value, step = row.get(METRIC), row.get("step")
            if value not in (None, "") and step not in (None, ""):
                out.append((int(float(step)), float(value)))
    return out


# ---- wandb offline runs ----------------------------------------------------------------------------------------
# A run-*.wandb file is a LevelDB-style log of protobuf Records (wandb.proto.wandb_internal_pb2): a 7-byte file
# header (":W&B", magic 0xBEE1, version), then 32 KiB blocks of chunks, each with a 7-byte header (crc32c,
# length, type: 1 full, 2 first, 3 middle, 4 last); a block's tail shorter than a header is padding.
_BLOCK, _HEADER = 32768, 7


def _records(path: Path):
    data = path.read_bytes()
    if len(data) < _HEADER or struct.unpack("<4sHB", data[:_HEADER])[:2] != (b":W&B", 0xBEE1):
        raise SweepError(f"{path}: not a wandb run file")
    pos, pending = _HEADER, b""
    while pos + _HEADER <= len(data):
        left = _BLOCK - pos % _BLOCK
        if left < _HEADER:
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + _HEADER])
        chunk = data[pos + _HEADER:pos + _HEADER + length]
        pos += _HEADER + length
        if kind == 1:
            yield chunk
        elif kind in (2, 3):
            pending = (b"" if kind == 2 else pending) + chunk
        elif kind == 4:
            yield pending + chunk
            pending = b""
        else:  # zeroed tail of a run that was killed mid-write
            return


def read_wandb(path: str | os.PathLike) -> tuple[dict, list[tuple[int, float]]]:
    """(config, [(step, val/bits_per_note)]) of a wandb offline run file."""
    from wandb.proto import wandb_internal_pb2 as pb

    def key(item) -> str:
        return item.key or "/".join(item.nested_key)

    config: dict = {}
    history = []
    for raw in _records(Path(path)):
        rec = pb.Record()
        try:
            rec.ParseFromString(raw)
        except Exception:  # a torn record at the end of a killed run
            break
        kind = rec.WhichOneof("record_type")
        updates = rec.run.config.update if kind == "run" else rec.config.update if kind == "config" else ()
        for u in updates:
            if key(u) != "_wandb":
                config[key(u)] = json.loads(u.value_json)
        if kind == "history":
            row = {key(i): json.loads(i.value_json) for i in rec.history.item}
            if METRIC in row:
                step = row.get("trainer/global_step", row.get("_step", 0))
                history.append((int(step), float(row[METRIC])))
    return config, history


def best_runs(runs: list[Run], n: int = 10) -> list[Run]:
    """The runs with a result, lowest final val bits/note first."""
    return sorted((r for r in runs if r.history), key=lambda r: r.final)[:n]


def table(runs: list[Run]) -> str:
    """A markdown table of the runs (failed ones last, with why)."""
    lines = ["| run | codec | vocab | model | params | steps | final bits/note | best bits/note |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in [*best_runs(runs, len(runs)), *(r for r in runs if not r.history)]:
        params = f"{r.n_params / 1e6:.2f}M" if r.n_params else "?"
        result = f"{r.final:.3f} | {r.best:.3f}" if r.history else f"failed: {r.error} | "
        lines.append(f"| {r.name} | {r.codec} | {r.vocab_size} | {r.model} | {params} | {r.steps} | {result} |")
    return "\n".join(lines)
