"""theremin-prep: a folder of MIDI files → a text corpus (train.txt, val.txt, manifest.json).

A thin Hydra app (conf/prep.yaml) over :func:`theremin.data.corpus.build_configured`; :func:`prep` is the plain
function behind it, for code and tests that compose a config themselves. The corpus is the one ``data`` config
theremin-train uses (conf/corpus/default.yaml): the same overrides build the same corpus in both.

    theremin-prep                                  # demo: Bach chorales (built from music21 on first use)
    theremin-prep data=folder data.input_dir=~/midi data.name=mine workers=8
    theremin-prep input_dir=~/midi name=mine transpose=null   # the short forms: the same corpus
"""

from __future__ import annotations

import os
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

from theremin import config as resolvers  # noqa: F401  (the resolvers conf/ uses)
from theremin.apps.cli import hydra_app
from theremin.config import plain
from theremin.data.corpus import CorpusReport, build_configured, printable
from theremin.model.finetune import corpus_advice


def apply_short_forms(cfg: DictConfig) -> None:
    """The short forms theremin-prep had before the shared corpus definition (input_dir=, name=, out_dir=,
    transpose=) written into ``cfg.data``, so both spellings build the same corpus."""
    with open_dict(cfg):
        if cfg.get("input_dir"):
            input_dir = Path(os.path.expanduser(str(cfg.input_dir)))
            cfg.data.input_dir, cfg.data.demo = str(input_dir), None
            cfg.data.name = cfg.get("name") or input_dir.resolve().name
        elif cfg.get("name"):
            cfg.data.name = cfg.name
        if cfg.get("out_dir"):
            cfg.data.corpus_dir = os.path.expanduser(str(cfg.out_dir))
        if "transpose" in cfg:
            cfg.data.transpose = cfg.transpose


def prep(cfg: DictConfig) -> CorpusReport:
    """Build the corpus a prep config describes; print its summary and where the files are."""
    apply_short_forms(cfg)
    # _convert_="all": the codec keeps plain lists, so its config is JSON (manifest) and pickle (workers) clean
    codec = hydra.utils.instantiate(cfg.codec, _convert_="all")
    data = cfg.data
    report = build_configured(
        data.input_dir, data.corpus_dir, codec, demo=plain(data.demo), workers=cfg.workers,
        progress=bool(cfg.progress), val_fraction=float(data.val_fraction), transpose=plain(data.transpose),
        min_notes=int(data.min_notes), max_notes=int(data.max_notes), humanize=plain(data.get("humanize")),
    )
    print(report.summary())
    advice = corpus_advice(report.notes, input_dir=printable(str(report.input_dir)))
    if advice:
        print(advice)
    print(f"train:    {printable(str(report.train_path))}\nval:      {printable(str(report.val_path))}\n"
          f"manifest: {printable(str(report.manifest_path))}")
    return report


@hydra_app("prep")
def main(cfg: DictConfig) -> None:

    prep(cfg)
    print(f"run log:  {HydraConfig.get().runtime.output_dir}")


if __name__ == "__main__":
    main()
