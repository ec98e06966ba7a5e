"""LightningDataModule over the tokenized midichar corpus.

corpus (train.txt / val.txt, built from MIDI if missing) → tokenizer (trained once per corpus + settings) →
token files ``train.bin`` / ``val.bin`` (memmap, uint16 while the vocab fits) with each piece framed as
``BOS ids EOS``, so the model learns where pieces start and end.

Training batches are random windows drawn from a stream that is a pure function of (seed, micro-batch index,
rank): a resumed run continues with exactly the batches the uninterrupted run would have seen, and the
global batch is the same whatever the world size. Validation is one deterministic pass over the whole val
split in consecutive windows (each token predicted once), sharded across ranks without padding, so
bits per note sums exactly.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
from filelock import FileLock
from torch.utils.data import DataLoader, Dataset, IterableDataset

from theremin.codec.kinds import Tokenizer, get_or_train_configured, load_configured
from theremin.codec.midichar import MidiChar
from theremin.config import plain
from theremin.data.corpus import build_configured, load_manifest
from theremin.errors import ThereminError
from theremin.fsio import atomic_write
from theremin.music.midi import MAX_NOTES

TOKENS_FORMAT = 1


class DataConfigError(ThereminError):
    """A data setting that cannot work; the message names the setting to change."""


def world() -> tuple[int, int]:
    """(rank, world size) of this process, also before the process group exists (read from the env)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", 0))), int(os.environ.get("WORLD_SIZE", 1))


class RandomWindows(IterableDataset):
    """Endless (x, y) micro-batches of random windows; global micro-batch m is fixed by (seed, m)."""

    def __init__(self, tokens: np.ndarray, block_size: int, batch_size: int, seed: int, rank: int = 0,
                 world_size: int = 1, start: int = 0):
        self.tokens, self.block_size, self.batch_size = tokens, block_size, batch_size
        self.seed, self.rank, self.world_size, self.start = seed, rank, world_size, start

    def batch(self, m: int) -> tuple[torch.Tensor, torch.Tensor]:
        # draw the whole global micro-batch, keep this rank's slice: the same data at any world size
        rng = np.random.default_rng([self.seed, m])
        offsets = rng.integers(0, len(self.tokens) - self.block_size - 1, size=self.batch_size * self.world_size,
                               endpoint=True)[self.rank * self.batch_size : (self.rank + 1) * self.batch_size]
        w = np.stack([self.tokens[o : o + self.block_size + 1] for o in offsets]).astype(np.int64)
        w = torch.from_numpy(w)
        return w[:, :-1], w[:, 1:]

    def __iter__(self):
        # DataLoader workers take turns (round-robin), so worker w makes micro-batches start+w, start+w+n, ...
        info = torch.utils.data.get_worker_info()
        m, stride = (self.start + info.id, info.num_workers) if info else (self.start, 1)
        while True:
            yield self.batch(m)
            m += stride


class ValWindows(Dataset):
    """Consecutive windows over the val stream; targets never repeat, the last window is padded with -1."""

    def __init__(self, tokens: np.ndarray, notes: np.ndarray, block_size: int, rank: int = 0, world_size: int = 1):
        self.tokens, self.notes, self.block_size = tokens, notes, block_size
        n_windows = -(-(len(tokens) - 1) // block_size)
        self.windows = list(range(n_windows))[rank::world_size]

    def __len__(self) -> int:
        return len(self.windows)

    def __getitem__(self, i: int):
        start = self.windows[i] * self.block_size
        w = torch.from_numpy(self.tokens[start : start + self.block_size + 1].astype(np.int64))
        notes = int(self.notes[start + 1 : start + self.block_size + 1].sum())
        x = torch.zeros(self.block_size, dtype=torch.long, device="cpu")  # batches are made on the CPU, then moved
        y = torch.full((self.block_size,), -1, dtype=torch.long, device="cpu")
        x[: len(w) - 1], y[: len(w) - 1] = w[:-1], w[1:]
        return x, y, notes


class MidiDataModule(pl.LightningDataModule):
    def __init__(
        self,
        corpus_dir: str,
        tokenizer: dict,
        name: str | None = None,
        codec: dict | None = None,
        input_dir: str | None = None,
        tokenizer_cache: str | None = None,
        block_size: int = 256,
        batch_size: int = 32,
        num_workers: int = 0,
        seed: int = 1337,
        val_fraction: float = 0.05,
        transpose: list[int] | None = None,
        min_notes: int = 8,
        max_notes: int = MAX_NOTES,
        humanize: dict | None = None,
        demo: dict | None = None,
        tokenizer_dir: str | None = None,
    ):
        super().__init__()
        self.name = name or Path(corpus_dir).name
        self.corpus_dir = Path(corpus_dir)
        self.input_dir = input_dir
        self.tokenizer_cfg = plain(tokenizer)
        self.codec_cfg = {k: v for k, v in plain(codec or {}).items() if k != "_target_"}
        self.transpose = plain(transpose)
        self.humanize = plain(humanize)
        self.tokenizer_cache = Path(tokenizer_cache) if tokenizer_cache else self.corpus_dir / "tokenizers"
        self.block_size, self.batch_size, self.num_workers = block_size, batch_size, num_workers
        self.seed, self.val_fraction, self.min_notes, self.max_notes = seed, val_fraction, min_notes, max_notes
        self.demo = plain(demo)
        # a trained tokenizer to use as it is (fine-tuning: the base model's) instead of one trained on this corpus
        self.tokenizer_dir = tokenizer_dir
        self.tokenizer: Tokenizer | None = None  # midichar or REMI (theremin.codec.kinds)
        self.token_dir: Path | None = None

    # ---- preparation (idempotent, cached, safe to call from every rank) -------------------------------
    def prepare(self) -> None:
        """Corpus → tokenizer → token files, each reused when already built for the same inputs."""

        self.corpus_dir.mkdir(parents=True, exist_ok=True)
        with FileLock(str(self.corpus_dir / ".prepare.lock")):
            codec = MidiChar(**self.codec_cfg)
            if self.input_dir is not None:
                self._build_corpus(codec)
            train_txt = self.corpus_dir / "train.txt"
            if not train_txt.exists() or train_txt.stat().st_size == 0:
                raise DataConfigError(f"data.corpus_dir: {self.corpus_dir} has no corpus (train.txt missing or "
                                      "empty); set data.input_dir to a folder of MIDI files or run theremin-prep")
            # tokenizer.kind picks the implementation (midichar by default, remi: the baseline)
            if self.tokenizer_dir is not None:
                self.tokenizer = load_configured(self.tokenizer_dir, codec)
            else:
                self.tokenizer = get_or_train_configured(train_txt, self.tokenizer_cfg, self.tokenizer_cache,
                                                         codec=codec)
            self.token_dir = Path(self.tokenizer.dir) / "tokens"
            self._tokenize(codec)

    def _build_corpus(self, codec: MidiChar) -> None:
        # the same call as theremin-prep's: one corpus definition (conf/data), so each reuses the other's build
        build_configured(self.input_dir, self.corpus_dir, codec, demo=self.demo, val_fraction=self.val_fraction,
                         transpose=self.transpose, min_notes=self.min_notes, max_notes=self.max_notes,
                         humanize=self.humanize)

    def _tokenize(self, codec: MidiChar) -> None:
        meta_path = self.token_dir / "tokens.json"
        sources = {s: (self.corpus_dir / f"{s}.txt") for s in ("train", "val")}
        stamp = {s: [p.stat().st_size, p.stat().st_mtime_ns] for s, p in sources.items()}
        if meta_path.exists():
            meta = json.loads(meta_path.read_text())
            if meta.get("format") == TOKENS_FORMAT and meta.get("sources") == stamp:
                return
        tok = self.tokenizer
        dtype = np.uint16 if tok.vocab_size <= 65536 else np.uint32
        meta = {"format": TOKENS_FORMAT, "sources": stamp, "dtype": np.dtype(dtype).name}
        for split, path in sources.items():
            lines = [ln for ln in path.read_text(encoding="utf-8").split("\n") if ln]
            ids, notes = [], []
            for line in lines:
                piece = tok.encode(line)
                ids += [tok.bos_id, *piece, tok.eos_id]
                if split == "val":
                    notes += [0, *tok.note_counts(piece), 0]
            arr = np.asarray(ids, dtype=dtype)
            atomic_write(self.token_dir / f"{split}.bin", lambda tmp, a=arr: a.tofile(tmp))
            meta[split] = {"pieces": len(lines), "tokens": len(ids), "chars": sum(len(ln) for ln in lines),
                           "notes": sum(codec.count_notes(ln) for ln in lines)}
            if split == "val":
                if sum(notes) != meta[split]["notes"]:
                    raise RuntimeError("per-token note counts disagree with the codec's count of the val split")
                counts = np.asarray(notes, dtype=np.uint8)
                atomic_write(self.token_dir / "val_notes.bin", lambda tmp, a=counts: a.tofile(tmp))
        atomic_write(meta_path, lambda tmp: tmp.write_text(json.dumps(meta, indent=2)))

    def prepare_data(self) -> None:
        self.prepare()

    # ---- per-rank setup ------------------------------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        if self.tokenizer is None:
            self.prepare()
        self.meta = json.loads((self.token_dir / "tokens.json").read_text())
        for split in ("train", "val"):  # an empty split cannot be mapped: say why it is empty
            if not self.meta[split]["pieces"]:
                where = f"data.input_dir={self.input_dir}" if self.input_dir else f"data.corpus_dir={self.corpus_dir}"
                files = ((load_manifest(self.corpus_dir) or {}).get("totals") or {}).get("files", {}).get("ok", "?")
                raise DataConfigError(f"{where}: the {split} split is empty ({files} usable MIDI file(s); a split is "
                                      "made of whole files): training needs at least 2, one of them to validate on")
        dtype = np.dtype(self.meta["dtype"])
        self.train_tokens = np.memmap(self.token_dir / "train.bin", dtype=dtype, mode="r")
        self.val_tokens = np.memmap(self.token_dir / "val.bin", dtype=dtype, mode="r")
        self.val_notes = np.memmap(self.token_dir / "val_notes.bin", dtype=np.uint8, mode="r")
        rank, world_size = world()
        self.rank, self.world_size = rank, world_size
        if self.batch_size % world_size:
            raise DataConfigError(f"data.batch_size={self.batch_size} does not divide by the world size "
                                  f"{world_size}: set data.batch_size to a multiple of {world_size}")
        self.per_rank_batch = self.batch_size // world_size
        # training draws whole windows; validation pads its last window, so a val split shorter than one window
        # (a small folder's few val files) still validates
        if len(self.train_tokens) < self.block_size + 1:
            raise DataConfigError(f"the train split has {len(self.train_tokens)} tokens, fewer than one window of "
                                  f"data.block_size={self.block_size} + 1: lower data.block_size or add data")

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.vocab_size

    @property
    def val_note_count(self) -> int:
        return int(self.meta["val"]["notes"])

    def train_dataloader(self) -> DataLoader:
        start = 0
        if self.trainer is not None:  # resume: continue the stream where the checkpointed run stopped
            start = self.trainer.global_step * self.trainer.accumulate_grad_batches
        ds = RandomWindows(self.train_tokens, self.block_size, self.per_rank_batch, self.seed, self.rank,
                           self.world_size, start)
        return DataLoader(ds, batch_size=None, num_workers=self.num_workers)

    def val_dataloader(self) -> DataLoader:
        ds = ValWindows(self.val_tokens, self.val_notes, self.block_size, self.rank, self.world_size)
        return DataLoader(ds, batch_size=self.per_rank_batch, shuffle=False, num_workers=self.num_workers)

    def val_prompt(self, max_tokens: int = 64) -> list[int]:
        """The start of the first val piece (BOS included): the fixed prompt of the sampling callback."""
        toks = self.val_tokens[: max_tokens + 1].astype(np.int64).tolist()
        eos = self.tokenizer.eos_id
        return toks[: toks.index(eos)] if eos in toks else toks[:max_tokens]
