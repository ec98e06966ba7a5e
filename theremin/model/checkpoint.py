"""Checkpoints: written atomically, opened safely, and self-contained.

A theremin checkpoint is Lightning's checkpoint dict with plain-typed ``hyper_parameters`` (model shape, codec
settings, tokenizer identity) plus ``checkpoint["theremin"]``: the tokenizer's own files (spm.model and
tokenizer.json, as bytes) and the last validation (its step and figures). So one ``.ckpt`` file is all it takes
to roll ideas anywhere; the data folder is needed only to train further and for memorisation figures.

- :func:`open_checkpoint` is the one way to read one (training resumes, ``Roller.load``, the server): plain
  data only (``torch.load(weights_only=True)``), the model shape checked against the weights and against a size
  limit before anything is allocated, and a :class:`CheckpointError` naming the file and the way out for
  everything that can be wrong with it.
- :class:`AtomicCheckpointIO` is the one way to write one (a Lightning plugin): a temp file in the same folder,
  fsync, then ``os.replace``, so a crash or a full disk never leaves a cut-off ``last.ckpt`` or ``best-*.ckpt``.
"""

from __future__ import annotations

import errno
import logging
import os
import pickle
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from lightning_fabric.plugins import TorchCheckpointIO

from theremin.codec.midichar import MidiChar
from theremin.codec.tokenizer import META_FILE, MODEL_FILE, MidiTokenizer
from theremin.errors import ThereminError
from theremin.fsio import current_umask
from theremin.model.gpt import GPT, GPTConfig

log = logging.getLogger("theremin.model.checkpoint")

FORMAT = 1  # of checkpoint["theremin"]
# A theremin model is well under this; a crafted checkpoint asking for more is refused before allocation.
DEFAULT_MAX_PARAMS = 1_000_000_000
TMP_SUFFIX = ".ckpt-tmp"  # in-progress writes: .<name>.<random>.ckpt-tmp beside the target
_ZIP_MAGIC = b"PK\x03\x04"  # torch.save's format is a zip archive


class CheckpointError(ThereminError):
    """A checkpoint that cannot be used; the message names the file, the reason and the way out."""


@dataclass
class Checkpoint:
    """What callers need from a checkpoint; see :func:`open_checkpoint`."""

    path: Path
    model_config: GPTConfig
    state_dict: dict[str, torch.Tensor]  # the GPT's own keys (Lightning's "model." prefix removed)
    codec: MidiChar
    tokenizer: Any | None  # a MidiTokenizer, or None when not asked for
    hparams: dict
    global_step: int
    last_val: dict | None  # {"step": int, "metrics": {name: float}}: the last validation before it was saved
    corpus_dir: Path | None  # the training corpus when it is on this machine (for memorisation figures)

    @property
    def tokenizer_key(self) -> str | None:
        return (self.hparams.get("tokenizer") or {}).get("key")

    def build_model(self, device: str | torch.device = "cpu") -> GPT:
        model = GPT(self.model_config)
        model.load_state_dict(self.state_dict)
        return model.to(device).eval()


# ---- reading ----------------------------------------------------------------------------------------------
def open_checkpoint(path: str | os.PathLike, *, max_params: int | None = DEFAULT_MAX_PARAMS,
                    with_tokenizer: bool = True) -> Checkpoint:
    """Open a theremin checkpoint safely, or raise :class:`CheckpointError` saying what is wrong and what to do.

    Checks, in order: the file exists and is a PyTorch archive; it is whole (not cut off); it holds plain data
    only; it is a theremin checkpoint; its model config is valid and has at most ``max_params`` parameters
    (None: no limit), computed before allocating; the codec settings make a codec; the tokenizer (carried
    inside, or at its recorded folder for older checkpoints) loads and belongs to this model (vocab size,
    codec); the weights have exactly the config's shapes (checked on the meta device: nothing allocated)."""
    path = Path(path)
    raw = _load(path)
    hp = raw.get("hyper_parameters") if isinstance(raw, dict) else None
    if not isinstance(hp, dict) or not {"model", "codec", "tokenizer"} <= set(hp) or "state_dict" not in raw:
        raise CheckpointError(f"checkpoint {path} lacks model/tokenizer/codec settings: not a theremin checkpoint")
    config = _model_config(path, hp["model"], max_params)
    try:
        codec = MidiChar.from_recorded(hp["codec"])
    except (TypeError, ThereminError) as e:
        raise CheckpointError(f"checkpoint {path}: its codec settings do not make a codec ({e})") from None
    extra = raw.get("theremin") if isinstance(raw.get("theremin"), dict) else {}
    tok = _tokenizer(path, hp, extra, codec, config) if with_tokenizer else None
    state = {k.removeprefix("model."): v for k, v in raw["state_dict"].items() if k.startswith("model.")}
    _check_shapes(path, config, state)
    return Checkpoint(path=path, model_config=config, state_dict=state, codec=codec, tokenizer=tok, hparams=hp,
                      global_step=int(raw.get("global_step", 0)), last_val=extra.get("last_val"),
                      corpus_dir=_corpus_dir(hp))


def _load(path: Path) -> dict:
    if path.is_dir():
        inside = path / "checkpoints" / "last.ckpt"
        hint = f": point at a .ckpt file, e.g. {inside}" if inside.is_file() else ": point at a .ckpt file"
        raise CheckpointError(f"checkpoint {path} is a folder{hint}")
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    with open(path, "rb") as f:
        head = f.read(4)
    if not head:
        raise CheckpointError(f"checkpoint {path} is empty (cut off while written?){_way_out(path)}")
    if head != _ZIP_MAGIC:
        raise CheckpointError(f"{path} is not a checkpoint: a .ckpt file is a PyTorch archive and this file is not")
    try:
        # mmap: the weights stay on disk until used, so a large file costs no memory to check
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except pickle.UnpicklingError as e:
        raise CheckpointError(f"checkpoint {path} holds Python objects, not only plain data and tensors: theremin "
                              f"does not load those (not written by theremin, or altered): {_first_line(e)}") from None
    except Exception as e:  # zip and storage errors of a cut-off or damaged archive
        raise CheckpointError(f"checkpoint {path} is cut off or damaged ({_first_line(e)}){_way_out(path)}") from None


def _model_config(path: Path, model: Any, max_params: int | None) -> GPTConfig:
    try:
        config = GPTConfig(**model)
        n = config.param_count()
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"checkpoint {path}: its model settings are not a GPT config ({e})") from None
    if max_params is not None and n > max_params:
        raise CheckpointError(f"checkpoint {path} asks for a model of {n:,} parameters, more than the limit of "
                              f"{max_params:,}: refused before allocating it (raise max_params only for a "
                              "checkpoint you trust)")
    return config


def _check_shapes(path: Path, config: GPTConfig, state: dict) -> None:
    with torch.device("meta"):  # shapes only: nothing allocated
        want = {k: tuple(v.shape) for k, v in GPT(config).state_dict().items()}
    have = {k: tuple(v.shape) if isinstance(v, torch.Tensor) else None for k, v in state.items()}
    if want != have:
        bad = sorted(k for k in want.keys() | have.keys() if want.get(k) != have.get(k))
        detail = ", ".join(f"{k}: {have.get(k)} vs {want.get(k)}" for k in bad[:3])
        raise CheckpointError(f"checkpoint {path}: its weights do not match its model settings ({len(bad)} "
                              f"tensors differ, e.g. {detail}): the file is damaged or was altered")


def _tokenizer(path: Path, hp: dict, extra: dict, codec: MidiChar, config: GPTConfig):

    carried = extra.get("tokenizer")
    info = hp["tokenizer"] if isinstance(hp["tokenizer"], dict) else {}
    kind = (carried or {}).get("kind", "midichar")
    if kind != "midichar":  # a baseline's checkpoint (tokenizer=remi_bpe): it trains and validates, nothing more
        raise CheckpointError(f"checkpoint {path} holds a {kind} tokenizer: rolling, scoring and fine-tuning need "
                              "a midichar one (a tokenizer=remi_bpe run is a baseline, see scripts/bench_remi.py)")
    try:
        if carried:
            files = carried["files"]
            tok = MidiTokenizer.from_bytes(files["spm.model"], files["tokenizer.json"], codec,
                                           source=f"the tokenizer inside {path}")
        else:  # written before checkpoints carried their tokenizer: it must be where it was
            tdir = Path(str(info.get("dir")))
            if not (tdir / "tokenizer.json").is_file():
                raise CheckpointError(f"checkpoint {path} needs its tokenizer at {tdir}, which does not exist "
                                      "(it does not carry one inside: it was written by an older theremin); copy "
                                      "that folder there, or train again")
            tok = MidiTokenizer.load(tdir)
    except (KeyError, TypeError):
        raise CheckpointError(f"checkpoint {path}: the tokenizer inside it is incomplete") from None
    except CheckpointError:
        raise
    except ThereminError as e:
        raise CheckpointError(f"checkpoint {path}: {e}") from None
    if tok.codec.config != codec.config:
        raise CheckpointError(f"checkpoint {path}: its tokenizer was made with another codec config than its "
                              "model: they do not belong together")
    if tok.vocab_size != config.vocab_size:
        raise CheckpointError(f"checkpoint {path} was trained with a vocab of {config.vocab_size} but its tokenizer "
                              f"({tok.source}) has {tok.vocab_size}: they do not belong together")
    return tok


def _corpus_dir(hp: dict) -> Path | None:
    d = (hp.get("tokenizer") or {}).get("corpus_dir")
    return Path(d) if d and (Path(d) / "train.txt").is_file() else None


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0][:160]


def good_checkpoints(folder: Path, besides: Path | None = None) -> list[Path]:
    """The checkpoints in ``folder`` that open as whole archives, newest first (``besides`` left out)."""
    out = []
    for p in sorted(folder.glob("*.ckpt"), key=lambda p: p.stat().st_mtime, reverse=True):
        if besides is not None and p.resolve() == besides.resolve():
            continue
        try:
            torch.load(p, map_location="cpu", weights_only=True, mmap=True)
        except Exception:  # a damaged neighbour is just not offered
            continue
        out.append(p)
    return out


def _way_out(path: Path) -> str:
    good = good_checkpoints(path.parent, besides=path)
    if good:
        return (f". The newest good checkpoint beside it is {good[0]}: use ckpt_path={good[0]} (training resumes "
                f"from it, generation rolls from it), or delete {path}")
    return f". No good checkpoint is beside it: delete {path} (a training run then starts afresh)"


# ---- what a checkpoint carries ------------------------------------------------------------------------------
def tokenizer_files(tok) -> dict:
    """The tokenizer as a checkpoint carries it: its kind and the bytes of the files of its folder."""

    kind = getattr(tok, "kind", "midichar")
    if kind == "midichar":
        files = {MODEL_FILE: tok.model_proto, META_FILE: (Path(tok.dir) / META_FILE).read_bytes()}
    else:  # other implementations: every file of their folder (subfolders hold data, not the model)
        files = {p.name: p.read_bytes() for p in Path(tok.dir).iterdir() if p.is_file()}
    return {"kind": kind, "files": files}


# ---- writing ------------------------------------------------------------------------------------------------
def _umask() -> int:
    return current_umask()


def save_atomic(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save`` to a temp file beside ``path``, fsync, then rename over it: ``path`` is always either the
    previous whole file or the new whole file. A full disk is a :class:`CheckpointError` (the previous file
    stays); the permissions follow the umask like any file (mkstemp alone would make it 0600)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TMP_SUFFIX, dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)  # the rename itself survives a power loss
        finally:
            os.close(dir_fd)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        os_error = _os_error(e)
        if os_error is not None:
            reason = ("no space left on the device" if os_error.errno in (errno.ENOSPC, errno.EDQUOT)
                      else os_error.strerror or str(os_error))
            raise CheckpointError(f"could not write checkpoint {path}: {reason}. Nothing was cut off: the previous "
                                  "checkpoint there is intact; fix that, then run the same command again to resume "
                                  "from it") from None
        raise


def _os_error(e: BaseException | None) -> OSError | None:
    """The OSError behind ``e``: torch.save's zip writer answers a failed write with a RuntimeError of its own
    while closing, the OSError is its context."""
    seen = set()
    while e is not None and id(e) not in seen:
        if isinstance(e, OSError):
            return e
        seen.add(id(e))
        e = e.__cause__ or e.__context__
    return None


def remove_stale_temps(folder: Path) -> list[Path]:
    """Remove the temp files of writes that were killed midway (call with the run directory locked)."""
    stale = list(folder.glob(f".*{TMP_SUFFIX}")) if folder.is_dir() else []
    for p in stale:
        p.unlink(missing_ok=True)
    return stale


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint IO with atomic writes (:func:`save_atomic`) and plain-data reads only."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError("AtomicCheckpointIO takes no storage_options")
        save_atomic(checkpoint, path)

    def load_checkpoint(self, path, map_location: Any | None = None, weights_only: bool | None = None) -> dict:
        # resume: the file was opened with open_checkpoint before (same checks), so only plain data here too
        return torch.load(path, map_location=map_location or "cpu", weights_only=True)
