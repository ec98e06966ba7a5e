"""theremin-demo: the main job, from nothing to music you can hear, on the embedded demo data.

demo MIDI (Bach chorales from music21's corpus) → corpus → tokenizer → a small GPT trained for a few minutes
on CPU → 4 variations of a demo prompt (a held-out chorale's opening bars) as MIDI + WAV + piano roll PNG.
Every stage is cached: a second run reuses the data, the tokenizer and the finished checkpoint.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.errors import HydraException
from omegaconf import open_dict

from theremin import config as resolvers
from theremin.apps.cli import run_cli
from theremin.apps.train import train
from theremin.config import conf_dir, data_dir
from theremin.data.corpus import load_manifest
from theremin.errors import ThereminError
from theremin.metrics.notes import load_corpus
from theremin.metrics.style import evaluate, texture_figures
from theremin.roll.roller import Roller, SamplingSettings

log = logging.getLogger("theremin.apps.demo")


def demo_config(overrides: list[str]):
    """The training config of the demo: conf/train.yaml with experiment=demo (plus any overrides)."""

    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3", job_name="demo"):
        try:
            cfg = compose("train", overrides=["experiment=demo", *overrides], return_hydra_config=True)
        except HydraException as e:  # a bad override: Hydra's own message, as theremin-train would answer it
            raise ThereminError(" ".join(str(e).split("Config search path")[0].split())) from None
    with open_dict(cfg):
        # the demo's run is outputs/demo/train; with overrides it is another run (the same command resumes it)
        suffix = f"-{resolvers.run_name(','.join(sorted(overrides)))}" if overrides else ""
        cfg.run_name = f"demo{suffix}"
        cfg.paths.output_dir = str(Path(cfg.paths.log_dir) / "demo" / f"train{suffix}")
        del cfg["hydra"]
    return cfg


def demo_prompt(corpus_dir: Path, input_dir: Path) -> Path:
    """The first val piece of the corpus (never trained on): its opening bars are the prompt."""

    manifest = load_manifest(corpus_dir)
    val = [f["path"] for f in manifest["files"] if f["split"] == "val"]
    return input_dir / sorted(val)[0]


def set_aside_stale_run(cfg) -> None:
    """The demo resumes its own run; a run an older theremin made with another codec cannot resume (its tokenizer
    and corpus differ), so it is moved aside, kept, and the demo starts afresh."""
    from theremin.codec.midichar import MidiChar
    from theremin.config import plain
    from theremin.model.checkpoint import open_checkpoint

    run_dir = Path(cfg.paths.output_dir)
    last = run_dir / "checkpoints" / "last.ckpt"
    if not last.exists():
        return
    try:
        same = open_checkpoint(last, with_tokenizer=False).codec.config == MidiChar(
            **{k: v for k, v in plain(cfg.codec).items() if k != "_target_"}).config
    except ThereminError:
        same = False
    if not same:
        aside = run_dir.with_name(f"{run_dir.name}.stale-{time.strftime('%Y%m%d-%H%M%S')}")
        run_dir.rename(aside)
        log.warning("the demo's earlier run (%s) was made with another codec: moved to %s, starting afresh",
                    run_dir, aside)


def run(overrides: list[str], n: int = 4, bars: int = 2, length_bars: int = 4) -> dict:

    t0 = time.perf_counter()
    cfg = demo_config(overrides)
    set_aside_stale_run(cfg)
    metrics = train(cfg)
    t_train = time.perf_counter() - t0
    ckpt = Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"
    roller = Roller.load(ckpt)
    prompt = demo_prompt(Path(cfg.data.corpus_dir), Path(cfg.data.input_dir))
    out_dir = Path(cfg.paths.log_dir) / "demo" / "variations"
    settings = SamplingSettings(n=n, seed=cfg.seed, keep_bars=bars, length=length_bars, unit="bars",
                                temperature=1.0, top_p=0.95)
    result = roller.roll(prompt, settings, out_dir=out_dir)
    style, val_texture = variation_figures([v.text for v in result.variations], result.prompt_notes,
                                           Path(cfg.data.corpus_dir), roller.codec)
    return {"metrics": metrics, "result": result, "prompt": prompt, "out_dir": out_dir, "style": style,
            "val_texture": val_texture, "seconds": time.perf_counter() - t0, "train_seconds": t_train,
            "checkpoint": ckpt}


def variation_figures(texts: list[str], prompt_notes: int, corpus_dir: Path, codec) -> tuple[dict, dict]:
    """The variations' style, texture and memorisation figures against the training pieces (their generated
    notes only), and the same texture figures of the held-out val pieces: what the corpus sounds like."""

    style = evaluate(texts, load_corpus(corpus_dir), codec, prompt_notes=[prompt_notes] * len(texts))
    return style, texture_figures(load_corpus(corpus_dir, "val"), codec)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="theremin's end-to-end demo (cached; re-runs are quick).")
    ap.add_argument("overrides", nargs="*", help="theremin-train overrides, e.g. trainer.max_steps=100")
    ap.add_argument("-n", type=int, default=4, help="variations to roll")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    print(report(run_cli("theremin-demo", run, args.overrides, n=args.n)))


def report(out: dict) -> str:
    r = out["result"]
    lines = [
        "",
        "theremin demo",
        f"  checkpoint        {out['checkpoint']}",
        f"  val bits/note     {out['metrics'].get('val/bits_per_note', float('nan')):.3f}",
        f"  prompt            first 2 bars of {out['prompt'].name} (held out from training)",
        f"  variations        {out['out_dir']}  ({len(r.variations)} × MIDI + WAV + PNG, rolled in {r.seconds:.2f} s)",
    ]
    for v in r.variations:
        lines.append(f"    {v.files['wav'].name:<18} {v.generated_notes:3d} new notes")
    s, val = out["style"], out["val_texture"]
    lines += [
        f"  style vs corpus   pitch-class overlap {s['style/pitch_class_overlap']:.2f}, interval overlap "
        f"{s['style/interval_oa']:.2f}, note-density overlap {s['style/note_density_oa']:.2f}",
        f"  texture           on-beat {s['texture/on_beat']:.0%} (val pieces {val['texture/on_beat']:.0%}), "
        f"simultaneous notes {s['texture/simultaneous']:.2f} (val {val['texture/simultaneous']:.2f})",
        f"  memorisation      longest run copied from the training corpus: {s['memo/longest_copied_notes_max']:.0f} "
        "notes (max over variations)",
        f"  time              {out['seconds']:.0f} s after start-up (data + tokenizer + training "
        f"{out['train_seconds']:.0f} s)",
        f"  everything else   data in {data_dir().resolve()}, runs in {out['out_dir'].parent.parent.resolve()}",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
