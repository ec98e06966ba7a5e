"""The flat modules of theremin ≤ 0.1 (``theremin.sample``, ``theremin.midichar``, ...) now live in sub-packages.

Users' scripts, notebooks and saved Hydra configs (``_target_: theremin.lit.LitGPT``) still import them by their
old names: this finder answers such an import with a module that forwards every attribute to where it lives now,
and says once where that is (a DeprecationWarning). ``theremin.data`` and ``theremin.model`` are packages now;
their ``__init__`` forwards the old modules' names the same way. The table is the rename table of docs/layout.md.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
import types
import warnings

# old module (under theremin.) -> the modules its names live in now, in lookup order
MOVED: dict[str, tuple[str, ...]] = {
    "cli": ("apps.cli", "errors"),
    "resolvers": ("config",),
    "paths": ("config",),
    "midi": ("music.midi", "fsio"),
    "score_to_midi": ("music.scores",),
    "humanize": ("music.humanize",),
    "render": ("music.render",),
    "midichar": ("codec.midichar",),
    "tokenizer": ("codec.tokenizer",),
    "remi": ("codec.remi",),
    "tokenizer_kinds": ("codec.kinds",),
    "corpus": ("data.corpus", "procs"),
    "demo_data": ("data.demo", "apps.demo_data"),
    "base_data": ("data.base", "apps.base_data"),
    "evaluate": ("metrics.style", "metrics.copies", "metrics.notes", "apps.evaluate"),
    "sweeps": ("metrics.sweeps",),
    "lit": ("model.lit",),
    "checkpoint": ("model.checkpoint",),
    "callbacks": ("model.callbacks", "roll.callbacks"),
    "loggers": ("model.loggers",),
    "finetune": ("model.finetune", "metrics.copies", "codec.tokenizer"),
    "score": ("model.scoring", "apps.score"),
    "sample": ("roll.roller",),
    "constraints": ("roll.constraints",),
    "prep": ("apps.prep",),
    "tokenize_app": ("apps.tokenize",),
    "demo": ("apps.demo",),
    "train": ("apps.train",),
    "generate": ("apps.generate",),
    "serve.cli": ("apps.serve",),
}
# the two old modules whose names became packages: their package __init__ forwards these
PACKAGES = {"data": ("data.datamodule",), "model": ("model.gpt",)}


def forward(old: str, homes: tuple[str, ...], name: str):
    """``name`` of the old module ``theremin.<old>``, from the first of its new homes that has it."""
    for home in homes:
        module = importlib.import_module(f"theremin.{home}")
        if hasattr(module, name):
            return getattr(module, name)
    raise AttributeError(f"module 'theremin.{old}' has no attribute {name!r} (it moved to "
                         f"{', '.join('theremin.' + h for h in homes)})")


class _Forwarder(types.ModuleType):
    def __init__(self, old: str, homes: tuple[str, ...]):
        super().__init__(f"theremin.{old}", f"moved to {', '.join('theremin.' + h for h in homes)}")
        self._homes = homes

    def __getattr__(self, name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        return forward(self.__name__.removeprefix("theremin."), self._homes, name)

    def __dir__(self):
        return sorted({n for h in self._homes for n in dir(importlib.import_module(f"theremin.{h}"))})


class _Loader(importlib.abc.Loader):
    def __init__(self, old: str):
        self.old = old

    def create_module(self, spec):
        return _Forwarder(self.old, MOVED[self.old])

    def exec_module(self, module) -> None:
        warnings.warn(_message(self.old), DeprecationWarning, stacklevel=3)

    def get_code(self, fullname: str):
        """``python -m theremin.<old app>`` (a k8s manifest, a script): runs the module it moved to."""
        warnings.warn(_message(self.old), DeprecationWarning, stacklevel=2)
        home = f"theremin.{MOVED[self.old][0]}"
        return importlib.util.find_spec(home).loader.get_code(home)


def _message(old: str) -> str:
    return f"theremin.{old} moved to {', '.join('theremin.' + h for h in MOVED[old])}; the old name will go away"


class MovedFinder(importlib.abc.MetaPathFinder):
    """Finds ``theremin.<old>`` for the names in :data:`MOVED` (only those: everything else is left alone)."""

    def find_spec(self, fullname: str, path=None, target=None):
        old = fullname.removeprefix("theremin.")
        if not fullname.startswith("theremin.") or old not in MOVED:
            return None
        home = importlib.util.find_spec(f"theremin.{MOVED[old][0]}")  # its file: what `python -m` runs
        return importlib.machinery.ModuleSpec(fullname, _Loader(old), origin=home.origin if home else None)


def install() -> None:
    if not any(isinstance(f, MovedFinder) for f in sys.meta_path):
        sys.meta_path.append(MovedFinder())  # last: a real module of that name (there is none) would win
