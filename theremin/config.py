"""Configuration: where theremin keeps things on disk, the OmegaConf resolvers conf/ uses (registered on
import, once), :func:`plain` for config values and :func:`known_settings`, the one check of unknown settings."""

from __future__ import annotations

import functools
import hashlib
import os
import re
from dataclasses import fields, is_dataclass
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import OmegaConf

from theremin.errors import ThereminError

PACKAGE = Path(__file__).resolve().parent
# a source checkout (pyproject.toml beside the package): generated data defaults to <checkout>/data there;
# an installed wheel has no checkout, and uses the folder the command runs from
_CHECKOUT = PACKAGE.parent if (PACKAGE.parent / "pyproject.toml").is_file() else None
ROOT = _CHECKOUT or Path.cwd()


def conf_dir() -> Path:
    """The Hydra configs: inside the package, so a wheel installed anywhere finds them (<checkout>/conf is a
    link here for the repository's layout)."""
    return PACKAGE / "conf"


def data_dir() -> Path:
    """Generated data (demo MIDI, corpora, tokenizers): $THEREMIN_DATA, else <checkout>/data (git-ignored),
    else ./data outside a checkout."""
    return Path(os.environ.get("THEREMIN_DATA", ROOT / "data"))


def plain(x):
    """A config value as plain Python (dict/list/scalars, interpolations resolved): what checkpoints, caches
    and JSON need. Hydra hands values over as DictConfig/ListConfig, even when given plain dicts."""
    return OmegaConf.to_container(x, resolve=True) if OmegaConf.is_config(x) else x


def known_settings(known, values, where: str, what: str, error: type[Exception] = ThereminError,
                   hint: str = "") -> dict:
    """``values`` (a config mapping; None: empty) as a plain dict, every key one of ``known`` (a dataclass's fields,
    or names). The one way theremin refuses an unknown setting, by name:
    ``<where>.<key> is not <what> (known: a, b, ...)[; hint]`` (``'<key>'`` when ``where`` is empty)."""
    d = dict(plain(values) or {})
    names = [f.name for f in fields(known)] if is_dataclass(known) else sorted(known)  # in the order they are declared
    unknown = sorted(set(d) - set(names), key=str)
    if unknown:
        name = f"{where}.{unknown[0]}" if where else repr(unknown[0])
        raise error(f"{name} is not {what} (known: {', '.join(names)}){'; ' + hint if hint else ''}")
    return d


def run_name(overrides: str = "") -> str:
    """A folder name for a command line's overrides that can be pasted back into any override: only letters,
    digits, '.', '_' and '-' (no '=' or ','). 'default' for none; else the overrides made readable
    (``model=mini,tokenizer=8k`` -> ``model-mini_tokenizer-8k``), at most 60 chars of them, then 8 hex chars of
    their sha256: two command lines never share a folder, however alike their readable parts."""
    if not overrides:
        return "default"
    readable = re.sub(r"[^A-Za-z0-9._-]+", "_", overrides.replace("=", "-"))[:60].strip("._-")
    digest = hashlib.sha256(overrides.encode()).hexdigest()[:8]
    return f"{readable}-{digest}" if readable else digest


def wandb_mode() -> str:
    """WANDB_MODE when set; online when an API key is configured; offline otherwise (no network needed)."""
    if os.environ.get("WANDB_MODE"):
        return os.environ["WANDB_MODE"]
    return "online" if os.environ.get("WANDB_API_KEY") else "offline"


def _multirun_job():
    """The job's Hydra config inside a multirun; None in a single run or outside Hydra (hydra.compose)."""

    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return None
    return HydraConfig.get()


def wandb_group(task_name: str) -> str:
    """A wandb group per sweep: ``<task_name>-<sweep folder>`` for every job of one multirun (the folder is its
    start time by default), so two sweeps of one experiment are two groups; a single run's group is task_name."""
    job = _multirun_job()
    return f"{task_name}-{Path(job.sweep.dir).name}" if job is not None else task_name


def wandb_tags(codec: str, vocab_size) -> list[str]:
    """Tags for the choices sweeps vary: tokenizer kind and vocab size (from the config, which overrides may
    change), and the model preset and experiment (from Hydra's choices, when run by Hydra)."""

    tags = [f"codec:{codec}", f"vocab:{vocab_size}"]
    if HydraConfig.initialized():
        choices = HydraConfig.get().runtime.choices
        tags += [f"{group}:{choices[group]}" for group in ("model", "experiment") if choices.get(group)]
    return tags


@functools.cache
def _default_codec() -> dict:
    """conf/codec/default.yaml, read once (tests/test_midichar.py keeps it equal to CodecConfig's defaults)."""
    return OmegaConf.to_container(OmegaConf.load(conf_dir() / "codec" / "default.yaml"))


def codec_tag(codec) -> str:
    """The corpus folder's suffix for a codec config: "" for the default midichar, else the settings that differ
    (``-instruments_false``, ``-grid24``; a hash when they do not read short). A corpus is one codec's text: two
    codec configs writing one folder rebuilt it on every switch, and a checkpoint's corpus then held the other's
    (a multirun over codec.instruments scored run 0 on run 1's corpus)."""
    import json

    from omegaconf import DictConfig

    cfg = OmegaConf.to_container(codec, resolve=True) if isinstance(codec, DictConfig) else dict(codec or {})
    defaults = _default_codec()
    diff = {k: v for k, v in sorted(cfg.items()) if defaults.get(k, object()) != v}
    if "_target_" in diff:
        diff["codec"] = diff.pop("_target_").rsplit(".", 1)[-1]
    if not diff:
        return ""
    short = "-" + "-".join(f"{k}{'_' if isinstance(v, bool) else ''}{str(v).lower()}" for k, v in diff.items())
    if len(short) <= 40 and re.fullmatch(r"[-\w.]+", short):
        return short
    return "-codec" + hashlib.sha256(json.dumps(diff, sort_keys=True).encode()).hexdigest()[:8]


for _name, _fn in (("run_name", run_name), ("wandb_mode", wandb_mode), ("wandb_group", wandb_group),
                   ("wandb_tags", wandb_tags), ("codec_tag", codec_tag)):
    if not OmegaConf.has_resolver(_name):
        OmegaConf.register_new_resolver(_name, _fn)
