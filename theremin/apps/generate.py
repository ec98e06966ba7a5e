"""theremin-generate: a thin Hydra entrypoint over :func:`generate` (see theremin.roll.roller for the Python API)."""

from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import DictConfig

from theremin import config as resolvers  # noqa: F401
from theremin.apps.cli import hydra_app
from theremin.config import known_settings, plain
from theremin.metrics.copies import copy_warnings
from theremin.metrics.notes import load_corpus
from theremin.metrics.style import evaluate
from theremin.roll.roller import GenerateError, Roller, RollResult, SamplingLimits, SamplingSettings


def latest_checkpoint(root: str | Path) -> Path:
    ckpts = sorted(Path(root).rglob("last.ckpt"), key=lambda p: p.stat().st_mtime)
    if not ckpts:
        raise GenerateError(f"ckpt_path=latest: no last.ckpt under {root}; train first (theremin-train) or set "
                            "ckpt_path")
    return ckpts[-1]


def settings_from(cfg: DictConfig) -> SamplingSettings:
    s = known_settings(SamplingSettings, cfg, "sampling", "a sampling setting", GenerateError,
                       "see theremin/conf/sampling/default.yaml")
    if isinstance(s.get("pitch_range"), list):
        s["pitch_range"] = tuple(s["pitch_range"])
    return SamplingSettings(**s)


def generate(cfg: DictConfig) -> tuple[RollResult, dict[str, float]]:
    """Roll variations, write them, and (optionally) score them against the training corpus."""
    ckpt = latest_checkpoint(cfg.paths.log_dir) if cfg.ckpt_path == "latest" else Path(cfg.ckpt_path)
    settings = settings_from(cfg.sampling)
    limits = SamplingLimits(**known_settings(SamplingLimits, cfg.get("limits"), "limits", "a sampling limit",
                                             GenerateError))
    settings.check(limits)  # before the model is loaded
    roller = Roller.load(ckpt, device=cfg.device)
    roller.limits = limits
    out_dir = Path(cfg.out_dir)
    result = roller.roll(cfg.prompt, settings, out_dir=out_dir, render=plain(cfg.render))
    metrics: dict[str, float] = {}
    corpus_dir = roller.corpus_dir
    if cfg.evaluate and corpus_dir is not None and (corpus_dir / "train.txt").exists():

        metrics = evaluate([v.text for v in result.variations], load_corpus(corpus_dir), roller.codec,
                           prompt_notes=[result.prompt_notes] * len(result.variations))
        metrics.update(copied_figures(result, corpus_dir, roller.codec, float(cfg.get("warn_copied_bars", 2.0))))
    return result, metrics


def copied_figures(result: RollResult, corpus_dir: Path, codec, warn_bars: float) -> dict[str, float]:
    """Each variation's longest run copied from the training corpus (notes, bars); a warning is logged for each
    that copies more than ``warn_bars`` bars (theremin.metrics.copies.copy_warnings)."""


    v0 = result.variations[0].piece if result.variations else None
    ts = tuple(v0.time_signatures[0][1:3]) if v0 is not None and v0.time_signatures else (4, 4)
    runs, warnings = copy_warnings([v.text for v in result.variations], result.prompt_notes, corpus_dir, codec,
                                   ts, warn_bars)
    for w in warnings:
        logging.getLogger("theremin.apps.generate").warning("%s", w)
    out = {}
    for v, c in zip(result.variations, runs):
        out[f"copied/{v.index + 1}/notes"], out[f"copied/{v.index + 1}/bars"] = float(c.notes), c.bars
    return out


def report(result: RollResult, metrics: dict[str, float]) -> str:
    lines = [f"{len(result.variations)} variations in {result.seconds:.2f} s"]
    if result.prompt_bars:
        a, b = result.prompt_bars
        lines.append(f"  prompt: bars {a}-{b}, {result.prompt_notes} notes"
                     + (" (trimmed: the last bars that fit the model's context)" if result.prompt_truncated else ""))
    for v in result.variations:
        lines.append(f"  {v.index + 1}: {v.generated_notes} new notes  " + "  ".join(str(p) for p in v.files.values()))
        key = f"copied/{v.index + 1}"
        if f"{key}/notes" in metrics:
            lines.append(f"     longest run copied from the training corpus: {metrics[f'{key}/notes']:.0f} notes "
                         f"({metrics[f'{key}/bars']:.1f} bars)")
    for k in ("style/pitch_class_overlap", "style/interval_oa", "style/note_density_oa",
              "memo/longest_copied_notes_max", "memo/longest_copied_notes_mean"):
        if k in metrics:
            lines.append(f"  {k} = {metrics[k]:.3f}")
    return "\n".join(lines)


@hydra_app("generate")
def main(cfg: DictConfig) -> None:
    result, metrics = generate(cfg)
    print(report(result, metrics))


if __name__ == "__main__":
    main()
