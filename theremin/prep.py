"""theremin-prep: a folder of MIDI files → a text corpus (train.txt, val.txt, manifest.json).

A thin Hydra app (conf/prep.yaml) over :func:`theremin.corpus.build_corpus`; :func:`prep` is the plain
function behind it, for code and tests that compose a config themselves.

    theremin-prep                                  # demo: Bach chorales (built from music21 on first use)
    theremin-prep input_dir=~/midi transpose=[-5,6] workers=8
"""

from __future__ import annotations

import os
from pathlib import Path

import hydra
from omegaconf import DictConfig

from theremin.corpus import CorpusReport, build_corpus
from theremin.midi import is_midi_path
from theremin.paths import conf_dir


def corpus_dirs(cfg: DictConfig) -> tuple[Path, Path]:
    """(input_dir, out_dir) of a prep config: ``name`` defaults to the input folder's name and ``out_dir``
    to ``<paths.data_dir>/corpus/<name>``."""
    input_dir = Path(os.path.expanduser(str(cfg.input_dir)))
    name = cfg.get("name") or input_dir.resolve().name
    out_dir = Path(os.path.expanduser(str(cfg.out_dir))) if cfg.get("out_dir") else (
        Path(cfg.paths.data_dir) / "corpus" / name)
    return input_dir, out_dir


def _has_midi(folder: Path) -> bool:
    return folder.is_dir() and any(is_midi_path(p) for p in folder.iterdir())


def prep(cfg: DictConfig) -> CorpusReport:
    """Build the corpus a prep config describes; print its summary and where the files are."""
    # _convert_="all": the codec keeps plain lists, so its config is JSON (manifest) and pickle (workers) clean
    codec = hydra.utils.instantiate(cfg.codec, _convert_="all")
    input_dir, out_dir = corpus_dirs(cfg)
    demo = cfg.get("demo")
    # only the demo folder itself is ever generated: any other missing folder is the user's mistake to see
    if demo is not None and input_dir.resolve() == Path(demo.dir).resolve() and not _has_midi(input_dir):
        from theremin.demo_data import build_demo_midi

        print(f"building the demo MIDI folder {input_dir} from music21's corpus ({demo.composer})")
        build_demo_midi(input_dir, composer=demo.composer, workers=cfg.workers, progress=cfg.progress)
    transpose = None if cfg.transpose is None else tuple(int(k) for k in cfg.transpose)
    report = build_corpus(
        input_dir, out_dir, codec, cfg.workers,
        val_fraction=float(cfg.val_fraction), transpose=transpose, min_notes=int(cfg.min_notes),
        progress=bool(cfg.progress),
    )
    print(report.summary())
    print(f"train:    {report.train_path}\nval:      {report.val_path}\nmanifest: {report.manifest_path}")
    return report


# an absolute config path: a relative one ("../conf") is taken as a Python package path when the app runs
# as a module or console script, and conf/ is not a package
@hydra.main(version_base="1.3", config_path=str(conf_dir()), config_name="prep")
def main(cfg: DictConfig) -> None:
    from hydra.core.hydra_config import HydraConfig

    try:
        prep(cfg)
    except (ValueError, FileNotFoundError) as e:  # bad input or settings: a message, not a traceback
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        raise SystemExit(f"theremin-prep: {e}") from None
    print(f"run log:  {HydraConfig.get().runtime.output_dir}")


if __name__ == "__main__":
    main()
