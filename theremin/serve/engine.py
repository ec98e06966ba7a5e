"""Cross-request batching: the variations of concurrent rolls share the model's forward passes.

``Roller.roll`` stays the one sampling path (prompt, constraints, trimming, files). The server hands each
Roller a :class:`BatchedModel`, whose ``generate`` gives the rows to one :class:`BatchEngine` thread instead of
running a loop of its own. The engine keeps one KV cache for every active row (each row with its own length
and context window), admits new requests between steps (continuous batching: nobody waits for a running batch
to end), runs ONE forward pass per step for all active rows, then samples each request's rows with that
request's own logits hook, filters and ``torch.Generator``. A request thus draws exactly the random numbers it
would draw alone: same seed, same notes (up to float rounding of the batched matrix products).

The context window follows :func:`theremin.model.gpt.window_start` per request, as ``GPT.generate`` does: when a
request's window jumps, its rows' cache is refilled from the new window before the shared step.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor

from theremin.model.gpt import GPT, KVCache, filter_logits, window_start

log = logging.getLogger("theremin.serve")

_deadline = threading.local()  # per worker thread: when the request it serves must give up (monotonic s)


class RollTimeout(TimeoutError):
    """A request ran past its deadline; its rows were dropped from the batch."""


def set_deadline(at: float | None) -> None:
    """The deadline (time.monotonic()) of the request this thread serves; its generate() gives up then."""
    _deadline.at = at


@dataclass(eq=False)
class _Job:
    out: Tensor  # (n, t0 + max_new_tokens): prompt, then sampled tokens
    t: int  # tokens filled so far
    end: int
    sampling: dict  # temperature, top_k, top_p, min_p
    generator: torch.Generator | None
    hook: object
    stop: object
    deadline: float | None
    future: Future = field(default_factory=Future)
    start: int = 0  # context window start (theremin.model.gpt.window_start)
    pos: int = 0  # window position of the token fed next (= cached tokens of the window)

    @property
    def n(self) -> int:
        return self.out.size(0)


def decode_step(model: GPT, tokens: Tensor, pos: Tensor, ks: list[Tensor], vs: list[Tensor]) -> Tensor:
    """Logits (R, vocab_size) after one new token per row.

    Row r feeds ``tokens[r]`` at window position ``pos[r]``, after ``pos[r]`` keys/values already cached in
    ``ks[layer][r, :, :pos[r]]`` (and ``vs``), which it extends. The same arithmetic as the model's own blocks
    (theremin.model.gpt.Block, eval mode), with a per-row key mask so rows of different lengths share the pass.
    """
    r = tokens.size(0)
    rows = torch.arange(r, device=tokens.device)
    lmax = int(pos.max()) + 1
    mask = (torch.arange(lmax, device=tokens.device)[None, :] <= pos[:, None])[:, None, None, :]
    x = (model.wte(tokens) + model.wpe(pos))[:, None, :]
    for block, kc, vc in zip(model.h, ks, vs):
        a = block.attn
        hd = a.n_embd // a.n_head
        q, k, v = (z.view(r, 1, a.n_head, hd).transpose(1, 2)
                   for z in a.c_attn(block.ln_1(x)).split(a.n_embd, dim=2))
        kc[rows, :, pos] = k[:, :, 0]
        vc[rows, :, pos] = v[:, :, 0]
        y = F.scaled_dot_product_attention(q, kc[:r, :, :lmax], vc[:r, :, :lmax], attn_mask=mask)
        x = x + a.c_proj(y.transpose(1, 2).reshape(r, 1, a.n_embd))
        x = x + block.mlp(block.ln_2(x))
    return model._logits(model.ln_f(x[:, 0]))


class BatchEngine:
    """One thread that runs every pending ``generate`` call on the model in shared steps.

    ``max_rows`` bounds the rows (variations) decoded at once, and so the KV cache: (max_rows, heads,
    block_size, head_dim) per layer, allocated once. A call whose rows do not fit waits for rows to free up.
    """

    def __init__(self, model: GPT, max_rows: int = 64, start: bool = True):
        if max_rows < 1:
            raise ValueError(f"max_rows must be >= 1, got {max_rows}")
        self.model, self.max_rows = model.eval(), max_rows
        self._pending: collections.deque[_Job] = collections.deque()
        self._active: list[_Job] = []
        self._cv = threading.Condition()
        self._closed = False
        self._ks: list[Tensor] = []
        self._vs: list[Tensor] = []
        self.steps = 0  # shared forward passes run
        self.rows_stepped = 0  # rows they covered (rows_stepped / steps = mean batch)
        self._thread = threading.Thread(target=self._run, name="theremin-batch-engine", daemon=True)
        if start:
            self.start()

    def start(self) -> None:
        """Start stepping (``start=False`` lets a caller queue requests first, e.g. to batch them all at once)."""
        self._thread.start()

    # ---- the caller's side (any thread) -----------------------------------------------------------------
    def generate(self, idx: Tensor, max_new_tokens: int, temperature: float = 1.0, top_k: int | None = None,
                 top_p: float | None = None, min_p: float | None = None, use_cache: bool = True,
                 generator: torch.Generator | None = None, logits_hook=None, stop_fn=None) -> Tensor:
        """``GPT.generate``'s contract (always with the KV cache), run in the engine's shared steps."""
        if idx.dim() != 2 or idx.size(1) < 1:
            raise ValueError(f"idx must be a (B, T) tensor with T >= 1, got shape {tuple(idx.shape)}")
        if idx.size(0) > self.max_rows:
            raise ValueError(f"{idx.size(0)} rows do not fit the engine's max_rows={self.max_rows}")
        if temperature < 0 or (top_k is not None and top_k < 1) or (top_p is not None and not 0 < top_p <= 1) or (
                min_p is not None and not 0 <= min_p <= 1):
            raise ValueError(f"bad sampling settings: temperature={temperature}, top_k={top_k}, top_p={top_p}, "
                             f"min_p={min_p}")
        b, t0 = idx.shape
        out = torch.empty(b, t0 + max(0, max_new_tokens), dtype=torch.long, device=idx.device)
        out[:, :t0] = idx
        if max_new_tokens <= 0:
            return out
        job = _Job(out, t0, t0 + max_new_tokens, {"temperature": temperature, "top_k": top_k, "top_p": top_p,
                                                  "min_p": min_p}, generator, logits_hook, stop_fn,
                   getattr(_deadline, "at", None))
        with self._cv:
            if self._closed:
                raise RuntimeError("the batch engine is closed")
            self._pending.append(job)
            self._cv.notify()
        return job.future.result()

    def close(self) -> None:
        with self._cv:
            self._closed = True
            self._cv.notify()
        if self._thread.is_alive():
            self._thread.join(timeout=10)

    def alive(self) -> bool:
        return self._thread.is_alive()

    def stats(self) -> dict:
        # a finished job (answered, e.g. past its time limit) leaves the batch at the end of the engine's step: its
        # caller may ask before then, and its rows are no longer anyone's
        active = [j for j in list(self._active) if not j.future.done()]
        return {"steps": self.steps, "mean_rows_per_step": self.rows_stepped / self.steps if self.steps else 0.0,
                "active_rows": sum(j.n for j in active), "pending": len(self._pending)}

    # ---- the engine thread --------------------------------------------------------------------------------
    def _run(self) -> None:
        with torch.inference_mode():
            while True:
                with self._cv:
                    while not self._closed and not self._pending and not self._active:
                        self._cv.wait()
                    if self._closed:
                        break
                    admitted = self._admit()
                try:
                    for job in admitted:
                        self._guard(job, self._refill, job)
                    self._step()
                except Exception as e:  # a bug in the shared step: fail every request in it, keep serving
                    log.exception("batch step failed")
                    for job in self._active:
                        self._finish(job, error=e)
                    self._active = []
        for job in [*self._active, *self._pending]:
            self._finish(job, error=RuntimeError("the server is shutting down"))

    def _admit(self) -> list[_Job]:
        """Move pending jobs into the batch while their rows fit (first come, first served)."""
        now = time.monotonic()
        for job in [j for j in self._pending if j.deadline is not None and now > j.deadline]:
            self._pending.remove(job)
            self._finish(job, error=RollTimeout("the roll waited past its time limit"))
        admitted = []
        rows = sum(j.n for j in self._active)
        while self._pending and rows + self._pending[0].n <= self.max_rows:
            job = self._pending.popleft()
            self._active.append(job)
            admitted.append(job)
            rows += job.n
        return admitted

    def _offset(self, job: _Job) -> int:
        off = 0
        for j in self._active:
            if j is job:
                return off
            off += j.n
        raise KeyError("job not active")

    def _cache(self) -> tuple[list[Tensor], list[Tensor]]:
        if not self._ks:
            c, p = self.model.config, next(self.model.parameters())
            shape = (self.max_rows, c.n_head, c.block_size, c.n_embd // c.n_head)
            # zeros, not empty: masked-out keys still enter the attention product, and must not be NaN
            self._ks = [torch.zeros(shape, dtype=p.dtype, device=p.device) for _ in range(c.n_layer)]
            self._vs = [torch.zeros(shape, dtype=p.dtype, device=p.device) for _ in range(c.n_layer)]
        return self._ks, self._vs

    def _refill(self, job: _Job) -> None:
        """Fill the job's rows of the cache with its window up to (not including) the token fed next."""
        start = window_start(job.t, job.start, self.model.config.block_size)
        job.start, job.pos = start, job.t - 1 - start
        if job.pos == 0:
            return
        cache = KVCache(self.model.config.n_layer, self.model.config.block_size)
        self.model._hidden(job.out[:, start : job.t - 1], cache)
        off = self._offset(job)
        ks, vs = self._cache()
        for layer, kc, vc in zip(cache.layers, ks, vs):
            kc[off : off + job.n, :, : job.pos] = layer.k[:, :, : job.pos]
            vc[off : off + job.n, :, : job.pos] = layer.v[:, :, : job.pos]

    def _guard(self, job: _Job, fn, *args) -> bool:
        """Run fn; on an error, fail this job alone (it leaves the batch at the end of the step)."""
        try:
            fn(*args)
            return True
        except Exception as e:
            self._finish(job, error=e)
            return False

    def _step(self) -> None:
        now = time.monotonic()
        for job in self._active:
            if job.future.done():
                continue
            if job.deadline is not None and now > job.deadline:
                self._finish(job, error=RollTimeout("the roll ran past its time limit"))
            elif window_start(job.t, job.start, self.model.config.block_size) != job.start:
                self._guard(job, self._refill, job)
        self._compact()
        if not self._active:
            return
        ks, vs = self._cache()
        tokens = torch.cat([j.out[:, j.t - 1] for j in self._active])
        pos = torch.cat([torch.full((j.n,), j.pos, dtype=torch.long) for j in self._active]).to(tokens.device)
        logits = decode_step(self.model, tokens, pos, ks, vs)
        self.steps += 1
        self.rows_stepped += tokens.size(0)
        hooked, off = [], 0
        for job in self._active:
            rows = logits[off : off + job.n]
            off += job.n
            try:
                hooked.append((job, self._hook(job, rows)))
            except Exception as e:  # this job alone fails (it leaves the batch at the end of the step)
                self._finish(job, error=e)
        # the sampling filters work row by row: jobs with the same filters run them as one batch, then each job
        # draws its tokens with its own generator (the very draws GPT.generate would make for it alone)
        groups: dict[tuple, list] = {}
        for job, rows in hooked:
            groups.setdefault(tuple(job.sampling.values()), []).append((job, rows))
        for items in groups.values():
            sampling = items[0][0].sampling
            batch = torch.cat([rows for _, rows in items])
            greedy = sampling["temperature"] == 0
            try:
                probs = batch.argmax(dim=-1) if greedy else filter_logits(batch, **sampling).softmax(dim=-1)
            except Exception as e:
                for job, _ in items:
                    self._finish(job, error=e)
                continue
            off = 0
            for job, _ in items:
                p = probs[off : off + job.n]
                off += job.n
                self._guard(job, self._draw, job, p, greedy)
        self._compact()

    @staticmethod
    def _hook(job: _Job, logits: Tensor) -> Tensor:
        """The job's logits hook (constraints), as GPT.generate calls it."""
        if job.hook is None:
            return logits
        logits = job.hook(job.out[:, : job.t], logits)
        dead = torch.isneginf(logits).all(dim=-1)
        if dead.any():
            rows = dead.nonzero().flatten().tolist()
            raise RuntimeError(f"logits_hook masked every token in row(s) {rows} at position {job.t}: nothing can "
                               "be sampled")
        return logits

    def _draw(self, job: _Job, probs: Tensor, greedy: bool) -> None:
        """Append the job's next tokens (argmax, or drawn from ``probs``) and see whether it is done."""
        t = job.t
        job.out[:, t] = probs if greedy else torch.multinomial(probs, 1, generator=job.generator).squeeze(-1)
        job.t, job.pos = t + 1, job.pos + 1
        if job.t == job.end:
            self._finish(job, result=job.out)
        elif job.stop is not None and job.stop(job.out[:, : job.t]):
            self._finish(job, result=job.out[:, : job.t])

    def _finish(self, job: _Job, result: Tensor | None = None, error: BaseException | None = None) -> None:
        if job.future.done():
            return
        if error is not None:
            job.future.set_exception(error)
        else:
            job.future.set_result(result)

    def _compact(self) -> None:
        """Drop finished jobs from the batch; the rows after them move up in the cache."""
        if all(not j.future.done() for j in self._active):
            return
        keep, off = [], 0
        for j in self._active:
            if not j.future.done():
                keep.extend(range(off, off + j.n))
            off += j.n
        self._active = [j for j in self._active if not j.future.done()]
        moved = [i for i, row in enumerate(keep) if row != i]
        if moved and self._ks:  # move only the rows that change place, only as far as they hold keys
            used = max(j.pos for j in self._active)
            dst = torch.tensor(moved, device=self._ks[0].device)
            src = torch.tensor([keep[i] for i in moved], device=dst.device)
            for kc, vc in zip(self._ks, self._vs):
                kc[dst, :, :used] = kc[src, :, :used]
                vc[dst, :, :used] = vc[src, :, :used]


class BatchedModel:
    """What a Roller sees as its model: the real GPT, except that ``generate`` runs on the shared engine."""

    def __init__(self, model: GPT, engine: BatchEngine):
        self._model, self._engine = model, engine

    def generate(self, *args, **kwargs) -> Tensor:
        return self._engine.generate(*args, **kwargs)

    def __getattr__(self, name: str):
        return getattr(self._model, name)
