"""OmegaConf resolvers used by conf/ (registered on import, once), and :func:`plain` for config values."""

from __future__ import annotations

import hashlib
import os
import re

from omegaconf import OmegaConf


def plain(x):
    """A config value as plain Python (dict/list/scalars, interpolations resolved): what checkpoints, caches
    and JSON need. Hydra hands values over as DictConfig/ListConfig, even when given plain dicts."""
    return OmegaConf.to_container(x, resolve=True) if OmegaConf.is_config(x) else x


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


for _name, _fn in (("run_name", run_name), ("wandb_mode", wandb_mode)):
    if not OmegaConf.has_resolver(_name):
        OmegaConf.register_new_resolver(_name, _fn)
