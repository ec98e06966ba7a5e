"""Benchmark: generation speed with and without the KV cache (not a test).

Builds a randomly initialised GPT of the given shape, generates from the same prompt with the same seed
with ``use_cache=True`` and ``use_cache=False``, and prints tokens/s for both and the speedup. Each mode
gets a short warm-up, then ``--repeats`` timed runs; the median is reported.

    .venv/bin/python scripts/bench_generate.py                  # ~small model on CPU
    .venv/bin/python scripts/bench_generate.py --device cuda --new-tokens 1024 --block-size 1024
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from theremin.model.gpt import GPT, GPTConfig


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n-layer", type=int, default=6)
    p.add_argument("--n-head", type=int, default=6)
    p.add_argument("--n-embd", type=int, default=384)
    p.add_argument("--block-size", type=int, default=1024)
    p.add_argument("--vocab-size", type=int, default=8192)
    p.add_argument("--new-tokens", type=int, default=512)
    p.add_argument("--prompt-len", type=int, default=16)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--repeats", type=int, default=3, help="timed runs per mode; the median is reported")
    p.add_argument("--warmup-tokens", type=int, default=16)
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--top-k", type=int, default=None)
    p.add_argument("--seed", type=int, default=1337)
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default="float32")
    return p.parse_args(argv)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_generate(model: GPT, idx: torch.Tensor, args: argparse.Namespace, use_cache: bool, n: int):
    """Seconds for one generate call of ``n`` tokens, and its output."""
    gen = torch.Generator(device=idx.device).manual_seed(args.seed)
    sync(idx.device)
    t0 = time.perf_counter()
    out = model.generate(
        idx, n, temperature=args.temperature, top_k=args.top_k, use_cache=use_cache, generator=gen
    )
    sync(idx.device)
    return time.perf_counter() - t0, out


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    device = torch.device(args.device)
    torch.manual_seed(args.seed)
    cfg = GPTConfig(
        vocab_size=args.vocab_size,
        block_size=args.block_size,
        n_layer=args.n_layer,
        n_head=args.n_head,
        n_embd=args.n_embd,
    )
    model = GPT(cfg).to(device=device, dtype=getattr(torch, args.dtype)).eval()
    idx = torch.randint(
        0, cfg.vocab_size, (args.batch, args.prompt_len), generator=torch.Generator().manual_seed(args.seed)
    ).to(device)

    print(
        f"model: n_layer={cfg.n_layer} n_head={cfg.n_head} n_embd={cfg.n_embd} block_size={cfg.block_size} "
        f"vocab_size={cfg.vocab_size} ({model.num_params(non_embedding=False) / 1e6:.2f}M params)"
    )
    print(
        f"run: device={device} dtype={args.dtype} threads={torch.get_num_threads()} batch={args.batch} "
        f"prompt={args.prompt_len} new_tokens={args.new_tokens} repeats={args.repeats} (median)"
    )
    total = args.prompt_len + args.new_tokens
    if total > cfg.block_size:
        print(f"note: {total} tokens > block_size {cfg.block_size}: the context window restarts on the way")

    results: dict[bool, float] = {}
    outputs: dict[bool, torch.Tensor] = {}
    for use_cache in (True, False):
        time_generate(model, idx, args, use_cache, args.warmup_tokens)
        times = []
        for _ in range(args.repeats):
            dt, outputs[use_cache] = time_generate(model, idx, args, use_cache, args.new_tokens)
            times.append(dt)
        results[use_cache] = statistics.median(times)
        tok_s = args.batch * args.new_tokens / results[use_cache]
        label = "use_cache=True " if use_cache else "use_cache=False"
        runs = " ".join(f"{t:.2f}" for t in times)
        print(f"{label}: {tok_s:9.1f} tokens/s  (median {results[use_cache]:.3f} s; runs: {runs} s)")

    same = torch.equal(outputs[True], outputs[False])
    print(f"same tokens with and without cache: {same}")
    print(f"kv_cache_speedup = {results[False] / results[True]:.2f}x (target >= 5x)")


if __name__ == "__main__":
    main()
