"""A loaded model serving rolls: the work behind the routes, in plain (thread-safe) Python.

Every roll runs in a worker thread (never on the event loop): prompt → ``Roller.roll`` (whose model is the
shared :class:`~theremin.serve.engine.BatchEngine`) → MIDI files and figures in the roll's folder. At most
``queue_size`` requests are in the server at once (running or waiting for a worker); one more is refused at
once with :class:`Busy` (HTTP 429 + Retry-After), so a burst never makes requests hang or memory grow.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import re
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from theremin.config import known_settings
from theremin.errors import ThereminError
from theremin.music.midi import MidiError, Piece, default_name, read_midi, write_midi
from theremin.music.render import RenderError, RenderTimeout, RenderTooLarge, piano_roll_png, render_wav, wav_size
from theremin.roll.parts import family
from theremin.roll.roller import (
    GenerateError,
    Roller,
    RollResult,
    SamplingSettings,
    Variation,
    check_meter,
    new_notes_piece,
)
from theremin.serve.engine import BatchedModel, BatchEngine, RollTimeout, set_deadline
from theremin.serve.figures import Figures
from theremin.serve.forms import FieldError, Limits, load_presets, parse_settings
from theremin.serve.prompts import from_corpus, made_in_code
from theremin.serve.store import NotFound, RollStore, StoreLimits

log = logging.getLogger("theremin.serve")


class Busy(ThereminError):
    """The server holds as many requests as it may; try again after ``retry_after`` seconds."""

    def __init__(self, message: str, retry_after: int):
        super().__init__(message)
        self.retry_after = retry_after


class PromptError(FieldError):
    """The prompt cannot be used (not MIDI, empty, drums only, longer than the context, ...)."""


@dataclass
class ServeSettings:
    """conf/serve.yaml, minus the checkpoint, host and port (see there for what each means)."""

    rolls_dir: str = "outputs/serve/rolls"
    device: str = "cpu"
    max_upload_bytes: int = 1 << 20
    timeout_s: float = 60.0
    retry_after_s: int = 2
    queue_size: int = 64
    workers: int = 16
    max_batch_rows: int = 64
    max_constraint_sets: int = 32
    prune_every_s: float = 1.0
    threads: int | None = None
    limits: Limits | None = None
    store: StoreLimits | None = None
    render: dict | None = None


class _LRU(collections.OrderedDict):
    """A dict that forgets its least recently used entries beyond ``size`` (Roller's constraint cache would
    otherwise keep one entry per pitch_range x key x polyphony ever asked for)."""

    def __init__(self, size: int):
        super().__init__()
        self.size = size

    def __getitem__(self, key):
        self.move_to_end(key)
        return super().__getitem__(key)

    def __setitem__(self, key, value):
        super().__setitem__(key, value)
        while len(self) > self.size:
            self.popitem(last=False)


class RollService:
    def __init__(self, checkpoint: str | Path, cfg: ServeSettings):
        self.cfg = cfg
        self.limits = cfg.limits or Limits()
        if cfg.threads:
            torch.set_num_threads(int(cfg.threads))
        self.checkpoint = Path(checkpoint)
        self.roller = Roller.load(self.checkpoint, device=cfg.device, limits=self.limits)  # one set: the server's
        self.model = self.roller.model
        self.engine = BatchEngine(self.model, max_rows=max(cfg.max_batch_rows, self.limits.max_n))
        self.roller.model = BatchedModel(self.model, self.engine)
        self.roller._constraints = _LRU(cfg.max_constraint_sets)
        self.presets = load_presets()
        self.figures = Figures.for_corpus(self.roller.corpus_dir, self.roller.codec)
        self.prompts: dict[str, Piece] = {**made_in_code(), **from_corpus(self.roller.corpus_dir, self.roller.codec)}
        # render (conf/serve.yaml): a WAV over max_seconds of audio or max_mb is refused before rendering, one
        # past timeout_s is stopped; WAVs and PNGs are made by `workers` threads of their own (not the rolls')
        defaults = {"soundfont": None, "sample_rate": 44100, "max_seconds": 600, "max_mb": 64, "timeout_s": 60,
                    "workers": 2}
        self.render = {**defaults, **known_settings(defaults, cfg.render, "render", "a render setting")}
        if self.render["soundfont"] and not Path(self.render["soundfont"]).is_file():
            raise ThereminError(f"render.soundfont={self.render['soundfont']}: no such file")
        self.store = RollStore(cfg.rolls_dir, cfg.store or StoreLimits(), self._make_file)
        self._prompt_bytes: dict[str, bytes] = {}
        self.pool = ThreadPoolExecutor(cfg.workers, thread_name_prefix="theremin-roll")
        self.render_pool = ThreadPoolExecutor(max(1, int(self.render["workers"])), thread_name_prefix="theremin-render")
        self._closing = threading.Event()  # set by close(): renders stop within a chunk
        self._render_deadline = threading.local()  # per render thread: when its render must give up
        self._lock = threading.Lock()
        self.in_flight = 0
        self._clients: collections.Counter[str] = collections.Counter()  # queue places held per client
        self.info = self._model_info()

    def close(self) -> None:
        """Stop at once: the engine, queued rolls and renders cancelled, running renders stopped (no waiting)."""
        self._closing.set()
        self.engine.close()
        self.pool.shutdown(wait=False, cancel_futures=True)
        self.render_pool.shutdown(wait=False, cancel_futures=True)

    def healthy(self) -> bool:
        return self.engine.alive() and not self._closing.is_set()

    # ---- admission --------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def admit(self, client: str | None = None, max_per_client: int | None = None):
        """A place in the queue for one request (:class:`Busy` when none is left, or when ``client``, an
        address, holds ``max_per_client`` places already)."""
        retry = self.cfg.retry_after_s
        with self._lock:
            if self.in_flight >= self.cfg.queue_size:
                raise Busy(f"the server is busy ({self.in_flight} rolls in progress, the queue holds "
                           f"{self.cfg.queue_size}): try again in {retry} s", retry)
            if client is not None and max_per_client and self._clients[client] >= max_per_client:
                raise Busy(f"the server is busy with {self._clients[client]} requests from {client}, as many as one "
                           f"client may have at once (max_per_client={max_per_client}): try again in {retry} s "
                           "when one has ended", retry)
            self.in_flight += 1
            if client is not None:
                self._clients[client] += 1
        try:
            yield
        finally:
            with self._lock:
                self.in_flight -= 1
                if client is not None:
                    self._clients[client] -= 1
                    if self._clients[client] <= 0:
                        del self._clients[client]

    def settings(self, fields: dict[str, str], extra: tuple[str, ...] = ()) -> SamplingSettings:
        return parse_settings(fields, self.presets, self.limits, self.roller.tok.vocab_size, extra)

    # ---- prompts ----------------------------------------------------------------------------------------
    def _read_prompt(self, path: Path, name: str) -> Piece:
        try:
            piece = read_midi(path)
            check_meter(piece, self.limits, repr(name))  # before its bars or seconds mean anything
        except MidiError as e:
            raise PromptError(f"prompt {name!r}: {e.reason}") from None
        except GenerateError as e:
            raise PromptError(str(e)) from None
        # a whole song is welcome (its last bars that fit the context are the prompt); this bounds the work
        if len(piece.notes) > self.limits.max_prompt_notes:
            raise PromptError(f"prompt {name!r}: {len(piece.notes):,} notes, more than a prompt may have "
                              f"(limits.max_prompt_notes={self.limits.max_prompt_notes:,}); send a part of the song")
        return piece

    def demo_prompt(self, name: str) -> Piece:
        if name not in self.prompts:
            raise FieldError(f"demo_prompt={name!r}: not a built-in prompt; use one of {', '.join(self.prompts)}")
        return self.prompts[name]

    # ---- rolls (worker threads) ---------------------------------------------------------------------------
    def submit(self, fn, *args):
        """Run fn(*args) on a worker thread with this request's deadline; an awaitable future."""
        deadline = time.monotonic() + self.cfg.timeout_s

        def call():
            if time.monotonic() > deadline:
                raise RollTimeout("the roll waited past its time limit")
            set_deadline(deadline)
            try:
                return fn(*args)
            finally:
                set_deadline(None)

        return asyncio.get_running_loop().run_in_executor(self.pool, call)

    def roll(self, settings: SamplingSettings, prompt: bytes | None = None, prompt_name: str = "prompt.mid",
             demo_prompt: str | None = None) -> dict:
        """Roll, write the MIDI files and roll.json; the roll's metadata (see :meth:`present`)."""
        roll_id, folder = self.store.new()
        try:
            piece = None
            if prompt is not None:
                (folder / "prompt.mid").write_bytes(prompt)
                piece = self._read_prompt(folder / "prompt.mid", prompt_name)
            elif demo_prompt is not None:
                piece = self.demo_prompt(demo_prompt)
                (folder / "prompt.mid").write_bytes(self.prompt_midi(demo_prompt))
                prompt_name = demo_prompt
            result = self.roller.roll(piece, settings)  # files are made on their first GET (_make_file)
            variations = []
            for v in result.variations:
                figures = self.figures.of(v.text, result.prompt_notes) if self.figures else {}
                # clip_notes: the clip's (from the roll point's bar; a note added to the prompt's last chord is not)
                variations.append({"index": v.index + 1, "notes": v.generated_notes, "text": v.text,
                                   "clip_notes": len(new_notes_piece(v).notes), "clip_from": v.clip_from,
                                   "prompt_end_tick": v.prompt_end_tick, "figures": figures,
                                   "prompt_notes": sorted(map(list, v.prompt_notes))})
            ts = result.variations[0].piece.time_signatures[0][1:] if result.variations else (4, 4)
            meta = {"id": roll_id, "settings": _settings_dict(settings), "seed": settings.seed,
                    "time_signature": list(ts),
                    "prompt": {"name": prompt_name if piece is not None else None, "notes": result.prompt_notes,
                               "bars": list(result.prompt_bars) if result.prompt_bars else None,
                               "trimmed": result.prompt_truncated, "parts": _parts(piece)},
                    "seconds": round(result.seconds, 3), "variations": variations}
            self.store.save_meta(folder, meta)
        except BaseException:
            self.store.discard(roll_id)  # removed and forgotten (the store accounts every roll)
            raise
        self.store.prune(keep=roll_id, every_s=self.cfg.prune_every_s)
        return meta

    def continuation(self, settings: SamplingSettings, body: bytes, name: str = "body",
                     new_only: bool = False) -> bytes:
        """POST /api/continue: one continuation of a raw MIDI body (``name``: its file name, for messages), as MIDI
        bytes: the prompt and its continuation, or (``new_only``) only the new notes from bar 1."""
        with tempfile.TemporaryDirectory(prefix="theremin-continue-") as tmp:
            path = Path(tmp) / "prompt.mid"
            path.write_bytes(body)
            piece = self._read_prompt(path, name)
            result = self.roller.roll(piece, settings)
            self.roller.write(result, Path(tmp), settings, {"wav": False, "png": False})
            return result.variations[0].files["mid_new" if new_only else "mid"].read_bytes()

    def file(self, roll_id: str, name: str, deadline: float | None = None, make: bool = True) -> Path | None:
        """A roll's file, made first if it is a variation file not made yet (by ``deadline``, a
        time.monotonic() time; default: render.timeout_s from now). ``make=False``: None instead of making it
        (a file not there yet; the caller then makes it on the render pool)."""
        if not make and not (self.store.folder(roll_id) / name).is_file():
            return None
        self._render_deadline.at = deadline
        try:
            return self.store.file(roll_id, name)
        finally:
            self._render_deadline.at = None

    def _make_file(self, folder: Path, path: Path) -> None:
        """A variation's MIDI (Roller.write: markers with checkpoint, seed, settings), WAV or PNG, from roll.json.
        A WAV is bounded: refused before rendering when over render.max_seconds or render.max_mb, or when the
        store has no room for it (store.reserve), and stopped at its deadline or at close()."""
        if self._closing.is_set():
            raise RenderTimeout(f"cannot render {path.name}: the server is shutting down; try again")
        deadline = getattr(self._render_deadline, "at", None)
        if deadline is None:
            deadline = time.monotonic() + float(self.render["timeout_s"])
        if time.monotonic() > deadline:
            raise RenderTimeout(f"cannot render {path.name}: it waited past its time limit (render.timeout_s="
                                f"{float(self.render['timeout_s']):g} s): the server is busy, try again")
        meta = json.loads((folder / "roll.json").read_text())
        index = int(path.name.split("_")[1].split(".")[0])
        v = meta["variations"][index - 1]
        piece = self.roller.codec.decode(v["text"])
        piece.time_signatures = [(0, *meta["time_signature"])]
        if path.suffix == ".mid":  # the variation and its new notes alone: both written together
            settings = SamplingSettings(**{**meta["settings"], "pitch_range": _tuple(meta["settings"]["pitch_range"])})
            variation = Variation(index - 1, v["text"], piece, v["prompt_end_tick"], v["notes"],
                                  prompt_notes=frozenset(map(tuple, v.get("prompt_notes", []))),
                                  clip_from=v.get("clip_from"))  # add_part's clip starts at the prompt's bar 1
            self.roller.write(RollResult([variation], meta["prompt"]["notes"], False, 0.0), folder, settings,
                              {"wav": False, "png": False})
        elif path.suffix == ".wav":
            r = self.render
            max_seconds = float(r["max_seconds"]) if r["max_seconds"] is not None else None
            max_bytes = int(float(r["max_mb"]) * 2**20) if r["max_mb"] is not None else None
            seconds, nbytes = wav_size(piece, r["sample_rate"])
            what = f"cannot render {path.name}: the variation lasts {seconds:,.0f} s, {nbytes / 2**20:,.1f} MB as a WAV"
            if max_seconds is not None and seconds > max_seconds:
                raise RenderTooLarge(f"{what}, over render.max_seconds={max_seconds:g} s (its MIDI and piano roll "
                                     "are still there)")
            if max_bytes is not None and nbytes > max_bytes:
                raise RenderTooLarge(f"{what}, over render.max_mb={float(r['max_mb']):g} MB (its MIDI and piano roll "
                                     "are still there)")
            self.store.reserve(path, nbytes)  # NoRoom when the store cannot hold it
            try:
                render_wav(piece, path, soundfont=r["soundfont"], sample_rate=r["sample_rate"], max_seconds=max_seconds,
                           max_bytes=max_bytes, deadline=deadline, cancel=self._closing)
            except RenderTimeout:
                if self._closing.is_set():
                    raise RenderTimeout(f"cannot render {path.name}: the server is shutting down; try again") from None
                raise RenderTimeout(f"cannot render {path.name}: past its time limit (render.timeout_s="
                                    f"{float(r['timeout_s']):g} s): the server is busy, try again") from None
            except RenderError as e:  # its message may name the roll's folder: only the file's name leaves here
                raise type(e)(str(e).replace(f"{path.parent}/", "")) from None
        else:
            piano_roll_png(piece, path, prompt_end_tick=v["prompt_end_tick"],
                           prompt_notes=[tuple(k) for k in v["prompt_notes"]] if "prompt_notes" in v else None,
                           title=f"variation {index} (seed {meta['seed']})")

    def prompt_midi(self, name: str) -> bytes:
        name = name.removesuffix(".mid")
        if name not in self._prompt_bytes:
            piece = self.demo_prompt(name)
            with tempfile.TemporaryDirectory(prefix="theremin-prompt-") as tmp:
                self._prompt_bytes[name] = write_midi(piece, Path(tmp) / "p.mid").read_bytes()
        return self._prompt_bytes[name]

    def present(self, meta: dict) -> dict:
        """The API's answer for a roll: its metadata with the URLs of its files."""
        base = f"/api/rolls/{meta['id']}"
        out = {k: meta[k] for k in ("id", "settings", "seed", "seconds")}
        out["prompt"] = {**meta["prompt"], "midi": f"{base}/prompt.mid" if meta["prompt"]["name"] else None}
        out["variations"] = [{"index": v["index"], "notes": v["notes"], "clip_notes": v.get("clip_notes", v["notes"]),
                              **{ext: f"{base}/variation_{v['index']:02d}.{ext}" for ext in ("mid", "wav", "png")},
                              "midi_new": f"{base}/variation_{v['index']:02d}_new.mid",
                              "figures": v["figures"]} for v in meta["variations"]]
        for v in out["variations"]:
            v["midi"] = v.pop("mid")
        return out

    def roll_meta(self, roll_id: str) -> dict:
        try:
            return self.store.meta(roll_id)
        except FileNotFoundError:
            raise NotFound(f"roll {roll_id}: no such roll") from None

    # ---- model ------------------------------------------------------------------------------------------
    def _model_info(self) -> dict:
        ckpt = torch.load(self.checkpoint, map_location="cpu", weights_only=True)
        val = None
        for key, state in (ckpt.get("callbacks") or {}).items():
            if "val/bits_per_note" in str(key) and isinstance(state, dict):
                score = state.get("current_score") or state.get("best_model_score")
                val = float(score) if score is not None else val
        if val is None:  # last.ckpt can predate the run's last validation: the best checkpoint's name has it
            named = sorted(self.checkpoint.parent.glob("best-*-bpn*.ckpt"))
            m = re.search(r"bpn(\d+(?:\.\d+)?)\.ckpt$", named[-1].name) if named else None
            val = float(m.group(1)) if m else None
        c = self.model.config
        corpus = {"dir": str(self.roller.corpus_dir) if self.roller.corpus_dir else None}
        if self.figures is not None:
            corpus.update(pieces=self.figures.pieces, notes=self.figures.notes)
        return {"checkpoint": self.checkpoint.name, "step": ckpt.get("global_step"),  # its name: no server path
                "params": self.model.num_params(), "vocab": self.roller.tok.vocab_size,
                "block_size": c.block_size, "n_layer": c.n_layer, "n_embd": c.n_embd,
                "val_bits_per_note": val, "corpus": corpus, "presets": self.presets,
                "demo_prompts": list(self.prompts), "limits": asdict(self.limits),
                "max_upload_bytes": self.cfg.max_upload_bytes}


def _parts(piece: Piece | None) -> list[dict]:
    """The prompt's parts as the page shows them (a control per track): name, program, drums, family, notes."""
    if piece is None:
        return []
    counts = [0] * len(piece.parts)
    for n in piece.notes:
        counts[n.part] += 1
    return [{"name": p.name or default_name(p.program, p.is_drum), "program": p.program, "drum": p.is_drum,
             "family": family(p), "notes": c} for p, c in zip(piece.parts, counts)]


def _tuple(x):
    return tuple(x) if x is not None else None


def _settings_dict(s: SamplingSettings) -> dict:
    d = asdict(s)
    d["pitch_range"] = list(s.pitch_range) if s.pitch_range else None
    return d
