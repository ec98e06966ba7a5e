"""theremin-score: held-out bits per note of a checkpoint on a folder of MIDI files (conf/score.yaml)."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import torch
from omegaconf import DictConfig

from theremin import config as resolvers  # noqa: F401
from theremin.apps.cli import hydra_app
from theremin.model.scoring import ScoreError, ScoreReport, score_folder


def score(cfg: DictConfig) -> ScoreReport:
    if not cfg.get("ckpt_path"):
        raise ScoreError("ckpt_path is required: theremin-score ckpt_path=<checkpoint> input_dir=<folder>")
    device = cfg.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    report = score_folder(cfg.ckpt_path, cfg.input_dir, device=device, block_size=cfg.block_size,
                          batch_size=int(cfg.batch_size), min_notes=int(cfg.min_notes), max_notes=cfg.max_notes,
                          workers=cfg.workers, progress=bool(cfg.progress))
    if cfg.get("out_json"):
        out = Path(cfg.out_json)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(asdict(report), indent=1) + "\n")
    return report

@hydra_app("score", app="theremin-score")
def main(cfg: DictConfig) -> float:
    report = score(cfg)
    print(report.summary(per_file=bool(cfg.per_file)), flush=True)
    return report.bits_per_note

if __name__ == "__main__":
    main()
