"""A CSV logger whose ``metrics.csv`` keeps the history of every segment of a resumed run.

Lightning's CSVLogger deletes ``metrics.csv`` when it starts, so a resumed run kept only its last segment. Here
:meth:`CSVLogger.resume_at` keeps the rows the checkpoint's run had written up to its step, drops the rows of
the steps after it (the resumed run writes them again), and later rows are appended. A row the resumed run
writes again at the checkpoint's own step (Lightning logs training, validation and samples at neighbouring
step numbers) replaces the old value of that metric, so no (step, metric) is ever written twice.
"""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path

from lightning_fabric.utilities.rank_zero import rank_zero_only
from pytorch_lightning.loggers import CSVLogger as _LightningCSVLogger
from pytorch_lightning.loggers.csv_logs import ExperimentWriter

from theremin.fsio import atomic_write


def _step(row: dict) -> int:
    try:
        return int(float(row.get("step") or -1))
    except ValueError:
        return -1


class _Writer(ExperimentWriter):
    def __init__(self, log_dir: str) -> None:
        # not super().__init__: Lightning's writer deletes metrics.csv here; resume_at decides what stays
        self.metrics, self.metrics_keys, self.hparams = [], [], {}
        self.log_dir = log_dir
        self.metrics_file_path = os.path.join(log_dir, self.NAME_METRICS_FILE)
        Path(log_dir).mkdir(parents=True, exist_ok=True)
        self._open_step: int | None = None  # old rows at this step may still be rewritten (see module docstring)

    def _read(self) -> list[dict]:
        path = Path(self.metrics_file_path)
        if not path.is_file():
            return []
        with open(path, newline="") as f:
            return [{k: v for k, v in row.items() if k is not None and v not in (None, "")}
                    for row in csv.DictReader(f)]

    def _write(self, rows: list[dict]) -> None:
        keys = sorted(set(self.metrics_keys).union(*rows))
        self.metrics_keys = keys
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=keys)
        w.writeheader()
        w.writerows(rows)
        atomic_write(Path(self.metrics_file_path), lambda tmp: tmp.write_text(buf.getvalue()))

    def resume_at(self, step: int | None) -> None:
        """Keep the rows up to ``step`` (a resumed run's checkpoint step); None: a fresh start keeps none."""
        self.metrics = []
        if step is None:
            Path(self.metrics_file_path).unlink(missing_ok=True)
            self.metrics_keys, self._open_step = [], None
            return
        rows = [r for r in self._read() if _step(r) <= step]
        self._write(rows)
        self._open_step = step

    def save(self) -> None:
        if not self.metrics:
            return
        new, self.metrics = self.metrics, []
        path = Path(self.metrics_file_path)
        if self._open_step is None and path.is_file() and set().union(*new) <= set(self.metrics_keys):
            with open(path, "a", newline="") as f:  # the common case: same columns, append
                csv.DictWriter(f, fieldnames=self.metrics_keys).writerows(new)
            return
        rows = self._read()
        if self._open_step is not None:
            written = {(_step(r), k) for r in new for k in r if k not in ("step", "epoch")}
            kept = []
            for r in rows:
                if _step(r) == self._open_step:
                    r = {k: v for k, v in r.items() if (self._open_step, k) not in written}
                if set(r) - {"step", "epoch"}:
                    kept.append(r)
            rows = kept
            if any(_step(r) > self._open_step for r in new):
                self._open_step = None  # past the checkpoint's step: nothing old can be written again
        self._write(rows + new)


class CSVLogger(_LightningCSVLogger):
    """Lightning's CSVLogger with a history that survives resuming (see the module docstring)."""

    @property
    def experiment(self) -> _Writer:
        if self._experiment is None:

            if rank_zero_only.rank > 0:  # only rank zero writes (Lightning's rank_zero_experiment does the same)
                return super().experiment
            self._experiment = _Writer(log_dir=self.log_dir)
        return self._experiment

    def resume_at(self, step: int | None) -> None:

        if rank_zero_only.rank == 0:
            self.experiment.resume_at(step)
