"""theremin-generate: a thin Hydra entrypoint over :func:`generate` (see theremin.sample for the Python API)."""

from __future__ import annotations

import logging
from pathlib import Path

import hydra
from omegaconf import DictConfig

from theremin import resolvers  # noqa: F401
from theremin.paths import conf_dir
from theremin.resolvers import plain
from theremin.sample import GenerateError, Roller, RollResult, SamplingSettings

log = logging.getLogger("theremin.generate")


def latest_checkpoint(root: str | Path) -> Path:
    ckpts = sorted(Path(root).rglob("last.ckpt"), key=lambda p: p.stat().st_mtime)
    if not ckpts:
        raise GenerateError(f"ckpt_path=latest: no last.ckpt under {root}; train first (theremin-train) or set "
                            "ckpt_path")
    return ckpts[-1]


def settings_from(cfg: DictConfig) -> SamplingSettings:
    s = plain(cfg)
    if s.get("pitch_range") is not None:
        s["pitch_range"] = tuple(s["pitch_range"])
    return SamplingSettings(**s)


def generate(cfg: DictConfig) -> tuple[RollResult, dict[str, float]]:
    """Roll variations, write them, and (optionally) score them against the training corpus."""
    ckpt = latest_checkpoint(cfg.paths.log_dir) if cfg.ckpt_path == "latest" else Path(cfg.ckpt_path)
    settings = settings_from(cfg.sampling)
    roller = Roller.load(ckpt, device=cfg.device)
    if cfg.prompt is not None and not Path(cfg.prompt).is_file():
        raise GenerateError(f"prompt {cfg.prompt} does not exist")
    out_dir = Path(cfg.out_dir)
    result = roller.roll(cfg.prompt, settings, out_dir=out_dir, render=plain(cfg.render))
    metrics: dict[str, float] = {}
    corpus_dir = roller.corpus_dir
    if cfg.evaluate and corpus_dir is not None and (corpus_dir / "train.txt").exists():
        from theremin.evaluate import evaluate, load_corpus

        metrics = evaluate([v.text for v in result.variations], load_corpus(corpus_dir), roller.codec,
                           prompt_notes=[result.prompt_notes] * len(result.variations))
    return result, metrics


def report(result: RollResult, metrics: dict[str, float]) -> str:
    lines = [f"{len(result.variations)} variations in {result.seconds:.2f} s"
             + (" (prompt cut to the model's context)" if result.prompt_truncated else "")]
    for v in result.variations:
        lines.append(f"  {v.index + 1}: {v.generated_notes} new notes  " + "  ".join(str(p) for p in v.files.values()))
    for k in ("style/pitch_class_overlap", "style/interval_oa", "style/note_density_oa",
              "memo/longest_copied_notes_max", "memo/longest_copied_notes_mean"):
        if k in metrics:
            lines.append(f"  {k} = {metrics[k]:.3f}")
    return "\n".join(lines)


@hydra.main(version_base="1.3", config_path=str(conf_dir()), config_name="generate")
def main(cfg: DictConfig) -> None:
    try:
        result, metrics = generate(cfg)
    except (GenerateError, ValueError) as e:
        log.error("%s", e)
        raise SystemExit(2) from None
    print(report(result, metrics))


if __name__ == "__main__":
    main()
