"""A small GPT (decoder-only transformer) as one plain ``torch.nn.Module``.

Pre-LayerNorm blocks, causal self-attention through ``F.scaled_dot_product_attention``, a 4x GELU MLP,
learned positional embeddings and an output head tied to the token embedding. The embedding table has
``config.padded_vocab_size`` rows (the vocabulary rounded up to a multiple of 64, a friendlier GEMM shape);
the padded rows are never predicted: every logits tensor this module returns or samples from covers the
real vocabulary only (last dimension ``vocab_size``), so a padded id can be neither scored nor sampled.

Generation (:meth:`GPT.generate`) has a KV cache. With or without it the model sees the same context
window, decided by one policy (:func:`window_start`): the window grows with the sequence until it would
exceed ``block_size`` tokens; then it restarts from the most recent ``block_size // 2`` tokens and grows
again. The cached path re-fills its cache from that window; the uncached path feeds exactly that window.
The two paths therefore compute the same function and, given the same generator state, sample the same
tokens (up to floating-point rounding, which in float32 can in principle flip a near-tie; in float64 the
two agree in practice).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

VOCAB_PAD_MULTIPLE = 64

LogitsHook = Callable[[Tensor, Tensor], Tensor]


@dataclass
class GPTConfig:
    """Model shape. Plain ints/floats/bools only: it is stored in checkpoints as ``dataclasses.asdict``."""

    vocab_size: int = 8192
    block_size: int = 256
    n_layer: int = 6
    n_head: int = 6
    n_embd: int = 384
    dropout: float = 0.0
    bias: bool = False

    def __post_init__(self) -> None:
        for name in ("vocab_size", "block_size", "n_layer", "n_head", "n_embd"):
            if getattr(self, name) < 1:
                raise ValueError(f"GPTConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head})")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")

    @property
    def padded_vocab_size(self) -> int:
        """Rows of the embedding table: ``vocab_size`` rounded up to a multiple of 64."""
        return -(-self.vocab_size // VOCAB_PAD_MULTIPLE) * VOCAB_PAD_MULTIPLE

    def param_count(self) -> int:
        """Parameters of :class:`GPT` with this config (tied head counted once), computed without building it:
        a checkpoint's shape is checked against a size limit before anything is allocated."""
        e, bias = self.n_embd, int(self.bias)
        block = 12 * e * e + 2 * e + bias * 11 * e  # qkv 3e², proj e², mlp 8e²; 2 LayerNorm gains; biases
        return (self.padded_vocab_size + self.block_size) * e + self.n_layer * block + e + bias * e


def window_start(length: int, start: int, block_size: int) -> int:
    """Where the context window begins for predicting token ``length`` (the one after ``idx[:, :length]``).

    ``start`` is the previous window start (0 at first). The window ``[start, length)`` is kept while it
    fits in ``block_size``; once it would not, it jumps to keep the most recent ``max(1, block_size // 2)``
    tokens. Jumping (rather than sliding by one) is what lets a KV cache be reused: the cache is refilled
    once per ``block_size // 2`` new tokens instead of recomputed at every step.
    """
    if length - start <= block_size:
        return start
    return length - max(1, block_size // 2)


class _LayerKV:
    """One layer's cached keys/values, allocated on first use with the dtype the layer actually produces
    (so autocast or a half-precision model gets a matching cache)."""

    def __init__(self, block_size: int):
        self.block_size = block_size
        self.k: Tensor | None = None
        self.v: Tensor | None = None

    def update(self, k: Tensor, v: Tensor, pos: int) -> tuple[Tensor, Tensor]:
        b, h, t, d = k.shape
        if self.k is None or self.k.shape[0] != b or self.k.dtype != k.dtype:
            self.k = k.new_empty(b, h, self.block_size, d)
            self.v = v.new_empty(b, h, self.block_size, d)
        assert self.v is not None
        self.k[:, :, pos : pos + t] = k
        self.v[:, :, pos : pos + t] = v
        return self.k[:, :, : pos + t], self.v[:, :, : pos + t]


class KVCache:
    """Per-layer key/value buffers of shape (B, n_head, block_size, head_dim) plus the filled length."""

    def __init__(self, n_layer: int, block_size: int):
        self.layers = [_LayerKV(block_size) for _ in range(n_layer)]
        self.length = 0

    def reset(self) -> None:
        # The buffers are kept; positions >= length are never read, so they need no clearing.
        self.length = 0


class CausalSelfAttention(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.n_head = config.n_head
        self.n_embd = config.n_embd
        self.dropout = config.dropout
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.resid_dropout = nn.Dropout(config.dropout)

    def forward(self, x: Tensor, kv: _LayerKV | None = None, pos: int = 0) -> Tensor:
        b, t, c = x.shape
        q, k, v = self.c_attn(x).split(self.n_embd, dim=2)
        q, k, v = (z.view(b, t, self.n_head, c // self.n_head).transpose(1, 2) for z in (q, k, v))
        dropout_p = self.dropout if self.training else 0.0
        if kv is None:
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, is_causal=True)
        else:
            k, v = kv.update(k, v, pos)
            if pos == 0:  # queries cover the whole sequence: plain causal mask
                y = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, is_causal=True)
            elif t == 1:  # one new token may see every cached key
                y = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, is_causal=False)
            else:  # a chunk after a filled cache: causal mask aligned to the bottom-right corner
                mask = torch.ones(t, pos + t, dtype=torch.bool, device=x.device).tril(diagonal=pos)
                y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p)
        y = y.transpose(1, 2).contiguous().view(b, t, c)
        return self.resid_dropout(self.c_proj(y))


class MLP(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.gelu = nn.GELU()
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.dropout(self.c_proj(self.gelu(self.c_fc(x))))


class Block(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.mlp = MLP(config)

    def forward(self, x: Tensor, kv: _LayerKV | None = None, pos: int = 0) -> Tensor:
        x = x + self.attn(self.ln_1(x), kv, pos)
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = config
        self.wte = nn.Embedding(config.padded_vocab_size, config.n_embd)
        self.wpe = nn.Embedding(config.block_size, config.n_embd)
        self.drop = nn.Dropout(config.dropout)
        self.h = nn.ModuleList(Block(config) for _ in range(config.n_layer))
        self.ln_f = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.lm_head = nn.Linear(config.n_embd, config.padded_vocab_size, bias=False)
        self.lm_head.weight = self.wte.weight  # tied input/output embeddings

        self.apply(self._init_weights)
        # GPT-2: scale the projections that write into the residual stream so its variance does not grow
        # with depth (two such writes per block).
        resid_std = 0.02 / math.sqrt(2 * config.n_layer)
        for block in self.h:
            nn.init.normal_(block.attn.c_proj.weight, mean=0.0, std=resid_std)
            nn.init.normal_(block.mlp.c_proj.weight, mean=0.0, std=resid_std)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    @property
    def block_size(self) -> int:
        return self.config.block_size

    # ------------------------------------------------------------------ forward

    def _hidden(self, idx: Tensor, cache: KVCache | None = None) -> Tensor:
        """Final-LayerNorm hidden states (B, T, n_embd); with a cache, ``idx`` continues its contents."""
        t = idx.size(1)
        pos0 = cache.length if cache is not None else 0
        if pos0 + t > self.config.block_size:
            raise ValueError(
                f"sequence length {pos0 + t} exceeds block_size {self.config.block_size}: "
                "raise model.block_size or shorten data.block_size"
            )
        pos = torch.arange(pos0, pos0 + t, dtype=torch.long, device=idx.device)
        x = self.drop(self.wte(idx) + self.wpe(pos))
        for i, block in enumerate(self.h):
            x = block(x, cache.layers[i] if cache is not None else None, pos0)
        if cache is not None:
            cache.length = pos0 + t
        return self.ln_f(x)

    def _logits(self, h: Tensor) -> Tensor:
        # The GEMM runs over the padded table (its friendly shape is the point of padding); the view then
        # drops the padded columns so no caller can score or sample a padded id.
        return self.lm_head(h)[..., : self.config.vocab_size]

    def forward(
        self, idx: Tensor, targets: Tensor | None = None, reduction: str = "mean"
    ) -> tuple[Tensor, Tensor | None]:
        """Logits for every position, and the loss when ``targets`` are given.

        idx: (B, T) token ids, T <= block_size. targets: (B, T) ids; -1 marks positions left out of the loss.
        Returns ``(logits, loss)``: logits (B, T, vocab_size); loss is None without targets, else the cross
        entropy in nats reduced by ``reduction``: "mean" (over counted positions), "sum", or "none" (a
        (B, T) tensor of per-token NLL, 0 at ignored positions) for bits-per-note style evaluation.
        """
        if reduction not in ("mean", "sum", "none"):
            raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
        logits = self._logits(self._hidden(idx))
        if targets is None:
            return logits, None
        loss = F.cross_entropy(
            _upcast(logits).reshape(-1, logits.size(-1)),
            targets.reshape(-1),
            ignore_index=-1,
            reduction=reduction,
        )
        if reduction == "none":
            loss = loss.view(targets.shape)
        return logits, loss

    # ------------------------------------------------------------------ bookkeeping

    def num_params(self, non_embedding: bool = True) -> int:
        """Parameter count (tied weights once). ``non_embedding`` leaves out the positional table; the token
        table stays in because it is also the output head."""
        n = sum(p.numel() for p in self.parameters())
        if non_embedding:
            n -= self.wpe.weight.numel()
        return n

    def param_groups(self, weight_decay: float) -> list[dict]:
        """AdamW groups: every tensor with dim >= 2 (matmul weights, embeddings) decays; biases and
        LayerNorm gains do not. Each trainable parameter appears exactly once (tied weights included)."""
        params = [p for p in self.parameters() if p.requires_grad]
        decay = [p for p in params if p.dim() >= 2]
        no_decay = [p for p in params if p.dim() < 2]
        return [
            {"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ]

    def estimate_mfu(self, fwdbwd_per_iter: int, dt: float, peak_flops: float = 312e12) -> float:
        """Model FLOPs utilisation: achieved FLOP/s over ``peak_flops`` (default: A100 bf16 dense).

        FLOPs per token follow the PaLM appendix: 6N for the weights plus 12*L*H*Q*T for attention.
        ``dt`` is the seconds one iteration of ``fwdbwd_per_iter`` forward+backward passes took.
        """
        c = self.config
        n = self.num_params()
        flops_per_token = 6 * n + 12 * c.n_layer * c.n_head * (c.n_embd // c.n_head) * c.block_size
        flops_per_iter = flops_per_token * c.block_size * fwdbwd_per_iter
        return flops_per_iter / dt / peak_flops

    # ------------------------------------------------------------------ generation

    @torch.no_grad()
    def generate(
        self,
        idx: Tensor,
        max_new_tokens: int,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        min_p: float | None = None,
        use_cache: bool = True,
        generator: torch.Generator | None = None,
        logits_hook: LogitsHook | None = None,
        stop_fn: Callable[[Tensor], bool] | None = None,
    ) -> Tensor:
        """Continue the prompts ``idx`` (B, T) by ``max_new_tokens``; returns (B, T + max_new_tokens).

        temperature: 0 is greedy (argmax); otherwise logits are divided by it before filtering/sampling.
        top_k: keep the k most likely tokens. top_p: keep the smallest set of most likely tokens whose mass
        reaches p (nucleus). min_p: keep tokens whose probability is >= min_p * the top probability.
        Filters apply in that order, after temperature. generator: a ``torch.Generator`` on the model's
        device for ``torch.multinomial``, so a run can be reproduced.
        logits_hook(idx_so_far (B, t), logits (B, vocab_size)) -> logits: called at every step on the raw
        last-position logits, before temperature and filters; set entries to -inf to forbid tokens. A hook
        that can find no valid continuation for a row must raise itself; if it returns a row that is all
        -inf anyway, generate raises RuntimeError.
        stop_fn(idx_so_far (B, t)) -> bool: checked after every step; True ends generation early (the
        result is then shorter than T + max_new_tokens).
        The context window follows :func:`window_start` on both the cached and uncached paths. Runs in eval
        mode (dropout off) and restores the previous mode afterwards.
        """
        if idx.dim() != 2 or idx.size(1) < 1:
            raise ValueError(f"idx must be a (B, T) tensor with T >= 1, got shape {tuple(idx.shape)}")
        if max_new_tokens < 0:
            raise ValueError(f"max_new_tokens must be >= 0, got {max_new_tokens}")
        if temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {temperature}")
        if top_k is not None and top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {top_k}")
        if top_p is not None and not 0.0 < top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {top_p}")
        if min_p is not None and not 0.0 <= min_p <= 1.0:
            raise ValueError(f"min_p must be in [0, 1], got {min_p}")

        b, t0 = idx.shape
        out = torch.empty(b, t0 + max_new_tokens, dtype=torch.long, device=idx.device)
        out[:, :t0] = idx
        cache = KVCache(self.config.n_layer, self.config.block_size) if use_cache else None
        start = 0
        was_training = self.training
        self.eval()
        try:
            for step in range(max_new_tokens):
                t = t0 + step
                new_start = window_start(t, start, self.config.block_size)
                if cache is None:
                    h = self._hidden(out[:, new_start:t])
                elif step == 0 or new_start != start:  # (re)fill the cache from the whole window
                    cache.reset()
                    h = self._hidden(out[:, new_start:t], cache)
                else:  # the cache already holds [start, t - 1): feed only the newest token
                    h = self._hidden(out[:, t - 1 : t], cache)
                start = new_start
                logits = self._logits(h[:, -1, :])
                if logits_hook is not None:
                    logits = logits_hook(out[:, :t], logits)
                    dead = torch.isneginf(logits).all(dim=-1)
                    if dead.any():
                        rows = dead.nonzero().flatten().tolist()
                        raise RuntimeError(
                            f"logits_hook masked every token in batch row(s) {rows} at position {t}: "
                            "nothing can be sampled"
                        )
                out[:, t] = _sample(logits, temperature, top_k, top_p, min_p, generator)
                if stop_fn is not None and stop_fn(out[:, : t + 1]):
                    return out[:, : t + 1]
        finally:
            self.train(was_training)
        return out


def _upcast(x: Tensor) -> Tensor:
    """Half-precision softmax/cumsum/log loses the tail: compute those in float32 (float64 stays)."""
    return x if x.dtype in (torch.float32, torch.float64) else x.float()


def _sample(
    logits: Tensor,
    temperature: float,
    top_k: int | None,
    top_p: float | None,
    min_p: float | None,
    generator: torch.Generator | None,
) -> Tensor:
    """One token id per row of ``logits`` (B, V)."""
    if temperature == 0:
        return logits.argmax(dim=-1)
    probs = filter_logits(logits, temperature, top_k, top_p, min_p).softmax(dim=-1)
    return torch.multinomial(probs, num_samples=1, generator=generator).squeeze(-1)


def filter_logits(
    logits: Tensor, temperature: float, top_k: int | None, top_p: float | None, min_p: float | None
) -> Tensor:
    """Logits after temperature, top_k, top_p and min_p (in that order); dropped tokens are -inf.
    Temperature 0 (greedy) keeps only the argmax of each row."""
    if temperature == 0:
        keep = torch.zeros_like(logits, dtype=torch.bool).scatter(-1, logits.argmax(dim=-1, keepdim=True), True)
        return logits.masked_fill(~keep, float("-inf"))
    logits = _upcast(logits) / temperature
    neg_inf = float("-inf")
    if top_k is not None and top_k < logits.size(-1):
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, neg_inf)
    if top_p is not None and top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        sorted_probs = sorted_logits.softmax(dim=-1)
        # Drop a token when the mass strictly before it already reaches top_p; the first always stays.
        drop_sorted = (sorted_probs.cumsum(dim=-1) - sorted_probs) >= top_p
        drop = drop_sorted.scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, neg_inf)
    if min_p is not None and min_p > 0.0:
        probs = logits.softmax(dim=-1)
        logits = logits.masked_fill(probs < min_p * probs.max(dim=-1, keepdim=True).values, neg_inf)
    return logits
