"""theremin-serve under load: 1, 8 and 50 concurrent clients rolling 4 variations x 64 notes, on loopback.

    python scripts/bench_serve.py                          # the demo model (make demo)
    python scripts/bench_serve.py --ckpt path.ckpt --clients 1,8,50 --requests 40
    python scripts/bench_serve.py --clients 1 --length 4 --unit bars --song '~/midi/songs/*.mid'

Starts the real server (`theremin-serve`, its own process, so its peak RSS is its own), warms it up, then for
each client count runs `--requests` rolls in total, spread over that many concurrent clients (each a thread
with its own HTTP connection, sending its next roll as soon as the last is answered). Each roll is
POST /api/rolls with a built-in prompt (the first held-out piece of the model's corpus when there is one).
Prints p50/p95 latency, rolls/s, the server's peak RSS (VmHWM) and the count of 5xx answers (must be 0).
With ``--song`` (a file or glob, repeatable), each level runs a second time with whole songs uploaded as the
prompt (each roll the next song, round robin): the server trims each to its last bars that fit the context,
so this row is the cost of reading, trimming and encoding a whole multi-track file on top of the roll.

Targets (issue 9): rolls/s with 8 clients >= 3x rolls/s with 1 client (cross-request batching), p95 at 8
clients <= 2 s on 2 CPU cores. Issue 20: 4 x 4 bars (``--length 4 --unit bars``) with one client,
p95 <= 0.5 s on 2 cores with the default model, for whole-song prompts too. A roll answers with its MIDI
files; WAV and PNG are rendered on first GET and are not part of this figure (see theremin/serve/store.py).
"""

from __future__ import annotations

import argparse
import glob
import itertools
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def start_server(ckpt: str, port: int, run_dir: Path, extra: list[str]) -> subprocess.Popen:
    exe = Path(sys.executable).with_name("theremin-serve")
    cmd = [str(exe), f"ckpt_path={ckpt}", f"port={port}", f"hydra.run.dir={run_dir}", "log_level=warning", *extra]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for _ in range(600):
        if proc.poll() is not None:
            raise SystemExit(f"theremin-serve exited:\n{proc.stdout.read()}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=1).status_code == 200:
                return proc
        except httpx.TransportError:
            time.sleep(0.2)
    proc.kill()
    raise SystemExit("theremin-serve did not become healthy in 120 s")


def run_level(url: str, clients: int, requests: int, fields: dict, songs: list[Path] = ()) -> dict:
    """`requests` rolls over `clients` concurrent clients: latencies, statuses, wall time. With ``songs``, each
    roll uploads the next of them as its prompt (read before the clock starts)."""
    todo = list(range(requests))
    lock = threading.Lock()
    latencies, statuses = [], []
    uploads = itertools.cycle([(f.name, f.read_bytes()) for f in songs]) if songs else None

    def client():
        with httpx.Client(timeout=120) as http:
            while True:
                with lock:
                    if not todo:
                        return
                    todo.pop()
                    files = {"prompt": next(uploads)} if uploads else None
                t = time.perf_counter()
                try:
                    status = http.post(f"{url}/api/rolls", data=fields, files=files).status_code
                except httpx.HTTPError:
                    status = 599  # no answer: counts as a server failure
                with lock:
                    latencies.append(time.perf_counter() - t)
                    statuses.append(status)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    t0 = time.perf_counter()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    wall = time.perf_counter() - t0
    ok = [lat for lat, s in zip(latencies, statuses) if s == 200]
    q = statistics.quantiles(ok, n=20, method="inclusive") if len(ok) > 1 else [float("nan")] * 19
    return {"clients": clients, "rolls": len(ok), "p50": statistics.median(ok) if ok else float("nan"),
            "p95": q[18], "rolls_per_s": len(ok) / wall, "5xx": sum(s >= 500 for s in statuses),
            "429": sum(s == 429 for s in statuses), "other": sum(s not in (200, 429) and s < 500 for s in statuses)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ckpt", default="outputs/demo/train/checkpoints/last.ckpt")
    ap.add_argument("--clients", default="1,8,50")
    ap.add_argument("--requests", type=int, default=0, help="rolls per level (default: max(12, 3 x clients))")
    ap.add_argument("--n", type=int, default=4)
    ap.add_argument("--notes", type=int, default=64, help="the length in notes (same as --length N --unit notes)")
    ap.add_argument("--length", type=float, default=None, help="the length of each variation, in --unit")
    ap.add_argument("--unit", default="notes", choices=["notes", "bars", "seconds"])
    ap.add_argument("--song", action="append", default=[], help="a whole-song prompt file or glob (repeatable)")
    ap.add_argument("--server-arg", action="append", default=[], help="a theremin-serve override, e.g. workers=8")
    ap.add_argument("--field", action="append", default=[],
                    help="NAME=VALUE: one more form field of every roll, e.g. prompt_share=0.5 (repeatable)")
    args = ap.parse_args()
    extra = dict(f.split("=", 1) for f in args.field)
    if not Path(args.ckpt).is_file():
        raise SystemExit(f"{args.ckpt} does not exist: run `make demo` (or theremin-train) first, or pass --ckpt")
    songs = sorted({Path(f) for pattern in args.song for f in (glob.glob(os.path.expanduser(pattern)) or [pattern])})
    missing = [str(f) for f in songs if not f.is_file()]
    if missing:
        raise SystemExit(f"--song {missing[0]}: no such file")
    length = args.length if args.length is not None else args.notes
    length_text = f"{length:g} {args.unit}"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory(prefix="bench-serve-") as tmp:
        proc = start_server(args.ckpt, port, Path(tmp), args.server_arg)
        try:
            info = httpx.get(f"{url}/api/model").json()
            prompts = [p["name"] for p in httpx.get(f"{url}/api/prompts").json()["prompts"]]
            prompt = next((p for p in prompts if p not in ("c-major-scale", "pop-progression")), prompts[0])
            fields = {"n": str(args.n), "length": f"{length:g}", "unit": args.unit, **extra}
            demo = {"demo_prompt": prompt, **fields}
            run_level(url, 2, 6, demo)  # warm-up: constraint masks, allocator, the first PNG-free rolls
            if songs:
                run_level(url, 1, 2, fields, songs)
            print(f"model {info['checkpoint']}: {info['params'] / 1e6:.2f}M params, vocab {info['vocab']}, "
                  f"block {info['block_size']}; {args.n} variations x {length_text}; {os.cpu_count()} CPUs"
                  + "".join(f"; {k}={v}" for k, v in extra.items()))
            print(f"prompts: built-in {prompt!r}" + (f"; whole songs: {len(songs)} files "
                                                     f"({', '.join(f.name for f in songs[:4])}"
                                                     f"{', ...' if len(songs) > 4 else ''})" if songs else ""))
            print(f"{'prompt':>10} {'clients':>7} {'rolls':>6} {'p50 s':>7} {'p95 s':>7} {'rolls/s':>8} {'5xx':>4} "
                  f"{'429':>4} {'4xx':>4} {'peak RSS MB':>12}")
            rates = {}
            for clients in (int(c) for c in args.clients.split(",")):
                for kind, kind_fields, kind_songs in (("built-in", demo, []), ("whole song", fields, songs)):
                    if kind == "whole song" and not songs:
                        continue
                    r = run_level(url, clients, args.requests or max(12, 3 * clients), kind_fields, kind_songs)
                    if kind == "built-in":
                        rates[clients] = r["rolls_per_s"]
                    print(f"{kind:>10} {clients:>7} {r['rolls']:>6} {r['p50']:>7.2f} {r['p95']:>7.2f} "
                          f"{r['rolls_per_s']:>8.2f} {r['5xx']:>4} {r['429']:>4} {r['other']:>4} "
                          f"{peak_rss_mb(proc.pid):>12.0f}")
            health = httpx.get(f"{url}/api/health").json()
            print(f"batching: {health['steps']} shared forward passes, {health['mean_rows_per_step']:.1f} rows each "
                  "on average")
            if 1 in rates and 8 in rates:
                print(f"rolls/s at 8 clients / at 1 client: {rates[8] / rates[1]:.1f}x (target >= 3x)")
        finally:
            proc.terminate()
            proc.wait(timeout=30)


if __name__ == "__main__":
    main()
