"""Benchmark: Lightning training step vs a bare PyTorch loop on the same model and batches (not a test).

Both loops train the same GPT (same seed, so the same initial weights) on the same micro-batches (synthetic
uint16 tokens served by ``theremin.data.datamodule.RandomWindows`` through ``DataLoader(batch_size=None)``, same seed),
with the same AdamW (``model.param_groups(0.1)``, lr 1e-3, betas 0.9/0.95), the same warm-up + cosine
``LambdaLR`` (``theremin.model.lit.warmup_cosine``), gradient clipping at 1.0, and bf16 autocast around the forward
when ``--precision bf16-mixed``. The bare loop is

    loss.backward(); clip_grad_norm_(1.0); opt.step(); sched.step(); opt.zero_grad(set_to_none=True)

and the Lightning run is ``theremin.model.lit.LitGPT`` under ``pl.Trainer`` (no logger, no checkpointing, no
progress bar, no validation). A third variant, ``nolog``, is LitGPT with its per-step ``self.log`` calls
(loss, bits/token, lr, tokens/s) removed, to price that logging.

Timing: ``--warmup`` steps first (compilation, allocator, Lightning's set-up), then ``--steps`` timed steps:
the wall time from the end of the last warm-up step to the end of the last step (data fetch, every hook and
the optimizer step included; on CUDA synchronised at those two points only, so neither loop is forced into
a per-step sync it would not do on its own). Variants run interleaved, their order rotated each round, for
``--repeats`` rounds; the median tokens/s of each is reported, with ``lightning / bare`` (target >= 0.95)
and, on CUDA, the model-FLOPs utilisation (``GPT.estimate_mfu``; target >= 40 % in bf16 for small/medium).

    .venv/bin/python scripts/bench_train.py                        # micro preset on CPU (1 thread)
    # per-step framework overhead in ms (a step small enough that the overhead shows):
    .venv/bin/python scripts/bench_train.py --preset nano --batch-size 2 --block-size 64 --steps 200 --warmup 20
    python scripts/bench_train.py --preset small --device cuda --precision bf16-mixed \\
        --batch-size 32 --block-size 1024 --steps 40 --compile
"""

from __future__ import annotations

import argparse
import functools
import gc
import logging
import statistics
import time
import warnings
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from theremin.data.datamodule import RandomWindows
from theremin.model.gpt import GPT, GPTConfig
from theremin.model.lit import LitGPT, warmup_cosine

ROOT = Path(__file__).resolve().parent.parent


LR, BETAS, WEIGHT_DECAY, CLIP = 1e-3, (0.9, 0.95), 0.1, 1.0
VARIANTS = ("bare", "lightning", "nolog")
LABELS = {"bare": "bare PyTorch", "lightning": "Lightning (LitGPT)", "nolog": "Lightning, no self.log"}

# bf16 dense tensor-core peaks (FLOP/s), matched against torch.cuda.get_device_name(); first match wins.
PEAK_BF16 = (
    ("GH200", 989e12),
    ("H200", 989e12),
    ("H100 PCIe", 756e12),
    ("H100 NVL", 835e12),
    ("H100", 989e12),  # SXM / "H100 80GB HBM3"
    ("H800", 989e12),
    ("A100", 312e12),
    ("A800", 312e12),
    ("L40S", 362e12),
    ("L4", 121e12),
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="micro", help="conf/model/<preset>.yaml: nano, micro, mini, small, medium")
    p.add_argument("--vocab-size", type=int, default=4096)
    p.add_argument("--block-size", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--steps", type=int, default=20, help="timed steps per run")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps before them (>= 1; more with --compile)")
    p.add_argument("--repeats", type=int, default=3, help="rounds; each runs every variant once")
    p.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated subset of {','.join(VARIANTS)}")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    p.add_argument("--precision", choices=["32-true", "bf16-mixed"], default=None,
                   help="default: bf16-mixed on cuda, 32-true on cpu")
    p.add_argument("--compile", action="store_true", help="torch.compile the model (GPT.compile, as LitGPT does)")
    p.add_argument("--peak-flops", type=float, default=None, help="peak FLOP/s for MFU (default: by GPU name)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (default: 1 on cpu, steadier on cores that other jobs share)")
    p.add_argument("--tokens", type=int, default=2_000_000, help="synthetic corpus size")
    p.add_argument("--seed", type=int, default=1337)
    args = p.parse_args(argv)
    args.variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    bad = [v for v in args.variants if v not in VARIANTS]
    if bad or not args.variants:
        p.error(f"--variants: unknown {bad}; choose from {', '.join(VARIANTS)}")
    if args.warmup < 1 or args.steps < 1 or args.repeats < 1:
        p.error("--warmup, --steps and --repeats must be >= 1")
    if args.device is None:
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.threads is None and not args.device.startswith("cuda"):
        args.threads = 1
    if args.precision is None:
        args.precision = "bf16-mixed" if args.device.startswith("cuda") else "32-true"
    return args


def model_config(args: argparse.Namespace) -> GPTConfig:
    from omegaconf import OmegaConf

    path = ROOT / "conf" / "model" / f"{args.preset}.yaml"
    if not path.exists():
        presets = sorted(q.stem for q in path.parent.glob("*.yaml"))
        raise SystemExit(f"--preset {args.preset}: no {path} (presets: {', '.join(presets)})")
    m = OmegaConf.load(path).model  # block_size there is ${data.block_size}: never resolved, --block-size wins
    return GPTConfig(vocab_size=args.vocab_size, block_size=args.block_size, n_layer=int(m.n_layer),
                     n_head=int(m.n_head), n_embd=int(m.n_embd), dropout=float(m.get("dropout", 0.0)),
                     bias=bool(m.get("bias", False)))


def peak_flops(args: argparse.Namespace, device: torch.device) -> tuple[float | None, str]:
    if args.peak_flops:
        return args.peak_flops, "--peak-flops"
    if device.type != "cuda":
        return None, "cpu"
    name = torch.cuda.get_device_name(device)
    for key, flops in PEAK_BF16:
        if key in name:
            return flops, f"{name}, bf16 dense"
    return None, name


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass
class Run:
    """One variant's run: host timestamps of each step's start (batch in hand) and end (optimizer stepped)."""

    starts: list[float] = field(default_factory=list)
    ends: list[float] = field(default_factory=list)
    last_loss: torch.Tensor | None = None

    def seconds(self, warmup: int) -> float:
        return self.ends[-1] - self.ends[warmup - 1]

    def step_medians(self, warmup: int) -> tuple[float, float, float]:
        """Median per timed step of: the whole step (end to end), inside the step, between steps."""
        ends, starts = self.ends, self.starts
        whole = [ends[i] - ends[i - 1] for i in range(warmup, len(ends))]
        inside = [ends[i] - starts[i] for i in range(warmup, len(ends))]
        between = [starts[i] - ends[i - 1] for i in range(warmup, len(ends))]
        return statistics.median(whole), statistics.median(inside), statistics.median(between)


def schedule(total: int, warmup: int) -> dict:
    return {"warmup_steps": warmup, "max_steps": total, "min_lr_ratio": 0.1}


def loader(tokens: np.ndarray, args: argparse.Namespace) -> DataLoader:
    return DataLoader(RandomWindows(tokens, args.block_size, args.batch_size, args.seed), batch_size=None)


def run_bare(cfg: GPTConfig, tokens: np.ndarray, args: argparse.Namespace, device: torch.device) -> Run:
    total, warmup = args.warmup + args.steps, args.warmup
    torch.manual_seed(args.seed)
    model = GPT(cfg).to(device)
    if args.compile:
        model.compile()
    model.train()
    opt = torch.optim.AdamW(model.param_groups(WEIGHT_DECAY), lr=LR, betas=BETAS)
    s = schedule(total, warmup)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda step: warmup_cosine(step, s["warmup_steps"], s["max_steps"], s["min_lr_ratio"])
    )
    bf16 = args.precision == "bf16-mixed"
    run = Run()
    batches = iter(loader(tokens, args))
    for step in range(total):
        x, y = next(batches)
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        run.starts.append(time.perf_counter())
        with torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else nullcontext():
            _, loss = model(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), CLIP)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        if step in (warmup - 1, total - 1):
            sync(device)
        run.ends.append(time.perf_counter())
    run.last_loss = loss.detach()
    return run


class StepTimer(pl.Callback):
    def __init__(self, device: torch.device, warmup: int, total: int):
        self.device, self.warmup, self.total = device, warmup, total
        self.run = Run()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.run.starts.append(time.perf_counter())

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if batch_idx in (self.warmup - 1, self.total - 1):
            sync(self.device)
        self.run.ends.append(time.perf_counter())
        if batch_idx == self.total - 1:
            self.run.last_loss = outputs["loss"].detach()


class QuietLitGPT(LitGPT):
    """LitGPT without its per-step ``self.log`` calls and tokens/s timing: what that logging costs."""

    def training_step(self, batch, batch_idx):
        x, y = batch
        return self.model(x, y)[1]

    def on_train_batch_start(self, batch, batch_idx):
        pass


def run_lightning(cfg: GPTConfig, tokens: np.ndarray, args: argparse.Namespace, device: torch.device,
                  log: bool = True) -> Run:
    total, warmup = args.warmup + args.steps, args.warmup
    torch.manual_seed(args.seed)
    cls = LitGPT if log else QuietLitGPT
    lit = cls(
        model={k: getattr(cfg, k) for k in ("vocab_size", "block_size", "n_layer", "n_head", "n_embd", "dropout",
                                            "bias")},
        optimizer=functools.partial(torch.optim.AdamW, lr=LR, betas=BETAS),
        lr_schedule=schedule(total, warmup),
        weight_decay=WEIGHT_DECAY,
        compile=args.compile,
    )
    timer = StepTimer(device, warmup, total)
    trainer = pl.Trainer(
        max_steps=total,
        accelerator="gpu" if device.type == "cuda" else "cpu",
        devices=1,
        precision=args.precision,
        gradient_clip_val=CLIP,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        callbacks=[timer],
    )
    trainer.fit(lit, train_dataloaders=loader(tokens, args))
    if len(timer.run.ends) != total:
        raise RuntimeError(f"Lightning ran {len(timer.run.ends)} steps, expected {total}")
    return timer.run


def quiet_lightning() -> None:
    for name in ("pytorch_lightning", "lightning", "lightning_fabric", "lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*`max_epochs` was not set.*")
    warnings.filterwarnings("ignore", message=".*no `val_dataloader`.*")
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)` is deprecated.*")


def fmt_rate(x: float) -> str:
    return f"{x:,.0f}"


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    quiet_lightning()
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    if device.type == "cuda":
        torch.set_float32_matmul_precision("high")
    cfg = model_config(args)
    with torch.device("meta"):
        ref = GPT(cfg)  # for parameter counts and FLOPs only
    tokens = np.random.default_rng(args.seed).integers(0, cfg.vocab_size, size=args.tokens, dtype=np.uint16)
    tokens_per_step = args.batch_size * args.block_size
    flops_per_step = ref.estimate_mfu(args.batch_size, 1.0, peak_flops=1.0)  # FLOPs of one step

    threads = f"cpu, {torch.get_num_threads()} threads"
    dev_name = torch.cuda.get_device_name(device) if device.type == "cuda" else threads
    print(f"model: preset={args.preset} n_layer={cfg.n_layer} n_head={cfg.n_head} n_embd={cfg.n_embd} "
          f"vocab_size={cfg.vocab_size} block_size={cfg.block_size} "
          f"({ref.num_params(non_embedding=False) / 1e6:.2f}M params, {flops_per_step / 1e9:.1f} GFLOP/step)")
    print(f"run: device={device} ({dev_name}) precision={args.precision} compile={args.compile} "
          f"batch={args.batch_size}x{args.block_size} = {tokens_per_step} tokens/step, steps={args.steps} "
          f"(+{args.warmup} warm-up), repeats={args.repeats}, torch {torch.__version__}, lightning {pl.__version__}")

    rates: dict[str, list[float]] = {v: [] for v in args.variants}
    steps_med: dict[str, list[tuple[float, float, float]]] = {v: [] for v in args.variants}
    losses: dict[str, float] = {}
    for r in range(args.repeats):
        order = args.variants[r % len(args.variants):] + args.variants[: r % len(args.variants)]
        line = []
        for v in order:
            if v == "bare":
                run = run_bare(cfg, tokens, args, device)
            else:
                run = run_lightning(cfg, tokens, args, device, log=(v == "lightning"))
            rate = args.steps * tokens_per_step / run.seconds(args.warmup)
            rates[v].append(rate)
            steps_med[v].append(run.step_medians(args.warmup))
            if r == 0 and run.last_loss is not None:
                losses[v] = float(run.last_loss.float())
            line.append(f"{v} {fmt_rate(rate)}")
            del run
            gc.collect()
            if device.type == "cuda":
                torch.cuda.empty_cache()
        print(f"round {r + 1}/{args.repeats}: " + " | ".join(line) + " tokens/s", flush=True)

    print()
    med = {v: statistics.median(rates[v]) for v in args.variants}
    width = max(len(LABELS[v]) for v in args.variants)
    step_ms = {}
    for v in args.variants:
        whole, inside, between = (statistics.median(s[i] for s in steps_med[v]) * 1e3 for i in range(3))
        step_ms[v] = whole
        runs = " ".join(fmt_rate(x) for x in rates[v])
        print(f"{LABELS[v]:<{width}}: {fmt_rate(med[v]):>12} tokens/s median  (runs: {runs}; per step "
              f"{whole:.2f} ms = {inside:.2f} in step + {between:.2f} between steps, host clock)")
    if losses:
        print("last-step loss, round 1 (same init, same batches): "
              + ", ".join(f"{v} {x:.6f}" for v, x in losses.items()))

    if "bare" in med and "lightning" in med:
        paired = [lt / b for lt, b in zip(rates["lightning"], rates["bare"])]
        print(f"lightning / bare = {med['lightning'] / med['bare']:.2f}x (target >= 0.95)   "
              f"[per round: {' '.join(f'{x:.3f}' for x in paired)}; by median step time: "
              f"{step_ms['bare'] / step_ms['lightning']:.3f}]")
    if "nolog" in med and "bare" in med:
        print(f"lightning(no self.log) / bare = {med['nolog'] / med['bare']:.2f}x")
    if "bare" in med:
        extra = ", ".join(f"{v} {(tokens_per_step / med[v] - tokens_per_step / med['bare']) * 1e3:+.2f} ms "
                          f"(median step {step_ms[v] - step_ms['bare']:+.2f} ms)" for v in args.variants if v != "bare")
        if extra:
            print(f"time per step over bare: {extra}")
    if "nolog" in med and "lightning" in med:
        dt_log, dt_nolog = tokens_per_step / med["lightning"], tokens_per_step / med["nolog"]
        print(f"LitGPT per-step logging costs {(dt_log - dt_nolog) * 1e3:+.2f} ms/step "
              f"({(dt_log / dt_nolog - 1) * 100:+.1f}% of the step without it)")

    peak, source = peak_flops(args, device)
    if peak is None:
        achieved = ", ".join(f"{v} {flops_per_step * med[v] / tokens_per_step / 1e9:.1f}" for v in args.variants)
        note = "" if device.type == "cpu" else f"; no known peak for {source}: pass --peak-flops for MFU"
        print(f"achieved model GFLOP/s: {achieved}{note}")
    else:
        mfu = {v: ref.estimate_mfu(args.batch_size, tokens_per_step / med[v], peak_flops=peak) for v in args.variants}
        print(f"MFU ({source}, peak {peak / 1e12:.4g} TFLOP/s): "
              + ", ".join(f"{v} {m * 100:.1f}%" for v, m in mfu.items()) + " (target >= 40%)")


if __name__ == "__main__":
    main()
