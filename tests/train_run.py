"""One training run from the real configs, in this process (the tests' shortcut for `theremin-train ...`)."""

from __future__ import annotations

from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import open_dict

from theremin.apps.train import train
from theremin.config import conf_dir


def compose_train(overrides: list[str]):
    """The config ``theremin-train <overrides>`` runs with (its hydra node included)."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        return compose("train", overrides=overrides, return_hydra_config=True)


def train_run(overrides: list[str], out: Path) -> dict:
    """``theremin-train <overrides>`` with its run folder at ``out``; returns the final metrics."""
    cfg = compose_train(overrides)
    with open_dict(cfg):
        cfg.paths.output_dir = str(out)
        cfg.run_name = out.name
        del cfg["hydra"]
    return train(cfg)
