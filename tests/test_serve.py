"""theremin-serve against the real app (a tiny trained model, no mocks): the contract, batching, bad input."""

from __future__ import annotations

import io
import json
import socket
import subprocess
import sys
import threading
import time
import wave
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import make_service  # the serve fixtures live in conftest.py

from theremin.music.midi import Note, Piece, read_midi, write_midi
from theremin.roll.roller import Roller, SamplingSettings

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")
fastapi = pytest.importorskip("fastapi", reason="pip install -e .[dev]")


def roll(client, prompt: bytes | None = None, name="bars.mid", **fields):
    files = {"prompt": (name, prompt, "audio/midi")} if prompt is not None else None
    return client.post("/api/rolls", data={k: str(v) for k, v in fields.items()}, files=files)


def midi_bytes(tmp_path, notes, **kw) -> bytes:
    return write_midi(Piece([Note(*n) for n in notes], 480, **kw), tmp_path / "p.mid").read_bytes()


def assert_sounds(wav: bytes) -> None:
    with wave.open(io.BytesIO(wav)) as w:
        x = np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16)
    assert np.abs(x.astype(np.int32)).max() > 1000, "silent audio"


# ---- the contract -------------------------------------------------------------------------------------------
def test_health_model_prompts_docs_and_page(client, service, trained):
    assert client.get("/api/health").json()["status"] == "ok"
    info = client.get("/api/model").json()
    assert info["checkpoint"] == Path(trained[0]).name and info["step"] in (50, 60)  # its name, not its path
    assert info["vocab"] == service.roller.tok.vocab_size and info["params"] > 0
    assert info["val_bits_per_note"] > 0
    assert info["corpus"]["dir"] == str(trained[1]) and info["corpus"]["pieces"] > 0
    names = [p["name"] for p in client.get("/api/prompts").json()["prompts"]]
    assert {"c-major-scale", "pop-progression"} <= set(names) and len(names) > 2  # + val pieces of the corpus
    assert client.get(f"/api/prompts/{names[-1]}.mid").headers["content-type"] == "audio/midi"
    assert client.get("/docs").status_code == 200
    assert "/api/rolls" in client.get("/openapi.json").json()["paths"]
    page = client.get("/")
    assert page.status_code == 200 and "<title>theremin" in page.text


def test_roll_answers_settings_seed_and_files(client, prompt_bytes, tmp_path):
    r = roll(client, prompt_bytes, n=3, length=12, seed=11, temperature=0.9, key="C major", pitch_range="48,84",
             max_polyphony=4, keep_bars=2)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["seed"] == 11 and body["settings"]["n"] == 3 and body["settings"]["pitch_range"] == [48, 84]
    assert body["settings"]["key"] == "C major" and body["prompt"]["notes"] > 0
    assert [v["index"] for v in body["variations"]] == [1, 2, 3]
    for v in body["variations"]:
        assert v["notes"] == 12
        assert set(v["figures"]) >= {"style/pitch_class_overlap", "memo/longest_copied_notes"}
        mid = client.get(v["midi"])
        assert mid.headers["content-type"] == "audio/midi"
        (tmp_path / "v.mid").write_bytes(mid.content)
        piece = read_midi(tmp_path / "v.mid")
        assert len(piece.notes) == body["prompt"]["notes"] + 12
        assert_sounds(client.get(v["wav"]).content)
        png = client.get(v["png"])
        assert png.headers["content-type"] == "image/png" and png.content[:8] == b"\x89PNG\r\n\x1a\n"
    again = client.get(f"/api/rolls/{body['id']}").json()
    assert again["variations"] == body["variations"]
    assert client.get(body["prompt"]["midi"]).content == prompt_bytes


def test_same_seed_same_notes_and_no_seed_a_fresh_roll(client, prompt_bytes):
    def notes(**kw):
        body = roll(client, prompt_bytes, n=2, length=10, **kw).json()
        return body["seed"], [client.get(v["midi"]).content for v in body["variations"]]

    s1, a = notes(seed=5)
    s2, b = notes(seed=5)
    assert s1 == s2 == 5 and [read_notes(x) for x in a] == [read_notes(x) for x in b]
    seeds = {notes()[0] for _ in range(3)}
    assert len(seeds) == 3


def read_notes(midi: bytes):
    import symusic

    return sorted((n.time, n.pitch) for t in symusic.Score.from_midi(midi).tracks for n in t.notes)


def test_demo_prompt_and_presets(client, service):
    r = roll(client, demo_prompt="c-major-scale", preset="greedy", length=8)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["settings"]["temperature"] == 0.0 and body["settings"]["n"] == 1  # greedy: one variation
    assert body["prompt"]["name"] == "c-major-scale" and body["prompt"]["notes"] == 8
    r = roll(client, preset="wild", n=2, length=2, unit="bars")
    assert r.status_code == 200 and r.json()["settings"]["min_p"] == 0.05 and r.json()["prompt"]["midi"] is None


def test_continue_returns_one_midi_continuation(client, prompt_bytes, tmp_path):
    r = client.post("/api/continue?length=16&seed=3&keep_bars=2", content=prompt_bytes,
                    headers={"content-type": "audio/midi"})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "audio/midi"
    (tmp_path / "c.mid").write_bytes(r.content)
    out = read_midi(tmp_path / "c.mid")
    (tmp_path / "p.mid").write_bytes(prompt_bytes)
    assert len(out.notes) > 0 and out.notes[-1].start > 0


# ---- batching -----------------------------------------------------------------------------------------------
def test_concurrent_rolls_share_forward_passes_and_match_a_roll_alone(service, trained, prompt_bytes, tmp_path):
    """Six requests at once: their rows are decoded in shared steps, and each gets the very notes the same
    settings give with a Roller of its own (the batch does not change anyone's dice)."""
    (tmp_path / "p.mid").write_bytes(prompt_bytes)
    settings = [SamplingSettings(n=2, length=8 + 2 * i, seed=i, temperature=0.7 + 0.1 * i, keep_bars=1 + i % 2,
                                 key="G major" if i % 3 == 0 else None) for i in range(6)]
    first = service.engine.stats()["steps"]
    results = [None] * 6
    barrier = threading.Barrier(6)

    def go(i):
        barrier.wait()
        results[i] = service.roll(settings[i], prompt_bytes, "p.mid")

    threads = [threading.Thread(target=go, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    steps = service.engine.stats()["steps"] - first
    alone = Roller.load(trained[0])
    steps_one_by_one = 0
    for s, meta in zip(settings, results):
        ref = alone.roll(tmp_path / "p.mid", SamplingSettings(**s.__dict__))
        got = [read_notes(service.file(meta["id"], f"variation_{k:02d}.mid").read_bytes()) for k in (1, 2)]
        assert got == [sorted((n.start, n.pitch) for n in v.piece.notes) for v in ref.variations]
        before = service.engine.stats()["steps"]
        service.roll(SamplingSettings(**s.__dict__), prompt_bytes, "p.mid")  # alone: its own steps
        steps_one_by_one += service.engine.stats()["steps"] - before
    assert steps < 0.6 * steps_one_by_one, f"{steps} shared steps, {steps_one_by_one} one request at a time"


def test_engine_batches_rows_of_different_lengths_exactly_like_generate():
    """float64, so the batched and the model's own generate agree exactly; some windows jump (block_size 32)."""
    from theremin.model.gpt import GPT, GPTConfig
    from theremin.serve.engine import BatchEngine

    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=50, block_size=32, n_layer=2, n_head=2, n_embd=16)).double().eval()
    with torch.no_grad():  # large weights: sharp attention, so a wrong cached key changes what is sampled
        for p in model.parameters():
            if p.dim() > 1:
                p.normal_(0, 0.5)
    engine = BatchEngine(model, max_rows=15, start=False)
    prompts = [torch.randint(0, 50, (3, n)) for n in (1, 5, 9, 2, 4)]
    # the last two share their filters: they are filtered as one batch, then draw with their own generators
    kws = [{"temperature": 0.0}, {"top_k": 5}, {"min_p": 0.1, "temperature": 1.5}, {"top_p": 0.9}, {"top_p": 0.9}]
    out = [None] * 5

    new = [30, 12, 25, 30, 18]  # jobs that end early leave the batch; the rows after them move up in the cache

    def go(i):
        out[i] = engine.generate(prompts[i], new[i], generator=torch.Generator().manual_seed(i), **kws[i])

    threads = [threading.Thread(target=go, args=(i,)) for i in range(5)]
    for t in threads:
        t.start()
    while engine.stats()["pending"] < 5:
        time.sleep(0.01)
    engine.start()
    for t in threads:
        t.join()
    for i in range(5):
        ref = model.generate(prompts[i], new[i], generator=torch.Generator().manual_seed(i), **kws[i])
        assert torch.equal(out[i], ref), i
    assert engine.steps == 30 and engine.rows_stepped == 3 * sum(new)  # one pass per step for every active row
    engine.close()


# ---- limits ---------------------------------------------------------------------------------------------------
def test_queue_full_answers_429_with_retry_after(client, service, prompt_bytes):
    held = []
    try:
        while service.in_flight < service.cfg.queue_size:
            cm = service.admit()
            cm.__enter__()
            held.append(cm)
        r = roll(client, prompt_bytes, n=1, length=4)
        assert r.status_code == 429 and int(r.headers["retry-after"]) > 0 and "busy" in r.json()["detail"]
    finally:
        for cm in held:
            cm.__exit__(None, None, None)
    assert roll(client, prompt_bytes, n=1, length=4).status_code == 200


def test_a_roll_past_its_time_limit_answers_503_and_frees_its_rows(client, service, prompt_bytes):
    old = service.cfg.timeout_s
    service.cfg.timeout_s = 0.3
    try:
        t = time.perf_counter()
        r = roll(client, prompt_bytes, n=8, length=128, max_new_tokens=4000, temperature=1.5)
        assert r.status_code == 503 and r.headers["retry-after"] and "time limit" in r.json()["detail"]
        assert time.perf_counter() - t < 10
    finally:
        service.cfg.timeout_s = old
    assert service.engine.stats()["active_rows"] == 0


def test_the_store_forgets_the_oldest_rolls_beyond_its_cap(trained, tmp_path):
    from fastapi.testclient import TestClient

    from theremin.serve.app import create_app
    from theremin.serve.store import StoreLimits

    svc = make_service(trained[0], tmp_path / "rolls", store=StoreLimits(max_rolls=2), prune_every_s=0.0)
    try:
        with TestClient(create_app(svc)) as c:
            ids = [roll(c, demo_prompt="c-major-scale", n=1, length=4).json()["id"] for _ in range(3)]
            assert c.get(f"/api/rolls/{ids[0]}").status_code == 404
            assert all(c.get(f"/api/rolls/{i}").status_code == 200 for i in ids[1:])
            assert len(list((tmp_path / "rolls").iterdir())) == 2
    finally:
        svc.close()


def test_constraint_sets_are_bounded(client, service):
    for lo in range(40, 40 + service.cfg.max_constraint_sets + 5):
        assert roll(client, n=1, length=2, pitch_range=f"{lo},{lo + 24}").status_code == 200
    assert len(service.roller._constraints) <= service.cfg.max_constraint_sets


# ---- bad input: 4xx naming the field or file, never 5xx --------------------------------------------------------
def bad_prompts(tmp_path) -> dict[str, tuple[bytes, str]]:
    import midi_factory as mf

    type2 = mf.write_smf(tmp_path / "type2.mid", [mf.notes_to_events(mf.scale())], fmt=2).read_bytes()
    huge = midi_bytes(tmp_path, [(i * 60, i * 60 + 50, 60 + i % 3, 80) for i in range(1001)])
    return {"not midi": (b"hello, I am text", "not a MIDI file"), "type 2": (type2, "type 2"),
            "past max_prompt_notes": (huge, "more than a prompt may have")}  # (max_prompt_notes=1000 here)


def test_a_whole_song_is_trimmed_to_its_last_bars_not_refused(client, tmp_path):
    """Issue 20.2: a prompt longer than the context rolls on from its last bars that fit; the answer says which."""
    song = midi_bytes(tmp_path, [(i * 120, i * 120 + 100, 60 + i % 12, 80) for i in range(4000)])  # 125 bars
    r = roll(client, song, name="song.mid", n=1, length=4)
    assert r.status_code == 200, r.text
    p = r.json()["prompt"]
    assert p["trimmed"] is True and p["bars"][1] == 250 and 1 < p["bars"][0] <= 250 and p["notes"] > 0
    # prompt_bars picks the bars; they are trimmed too when they do not fit
    r = roll(client, song, name="song.mid", n=1, length=4, prompt_bars="3-4")
    assert r.status_code == 200, r.text
    p = r.json()["prompt"]
    # bars 3-4 hold 32 notes; trimmed: some of them did not fit (the kept notes start in bar p["bars"][0])
    assert p["bars"][1] == 4 and p["bars"][0] in (3, 4) and p["trimmed"] is (p["notes"] < 32), p
    r = roll(client, song, name="song.mid", n=1, length=4, prompt_bars="300-310")
    assert r.status_code == 422 and "the prompt has 250 bars" in r.json()["detail"]
    r = roll(client, song, name="song.mid", n=1, length=4, prompt_bars="4-3")
    assert r.status_code == 422 and "prompt_bars" in r.json()["detail"]


@pytest.mark.parametrize("case", ["not midi", "type 2", "past max_prompt_notes"])
def test_bad_prompt_files(client, service, tmp_path, case, monkeypatch):
    import dataclasses

    monkeypatch.setattr(service, "limits", dataclasses.replace(service.limits, max_prompt_notes=1000))
    data, reason = bad_prompts(tmp_path)[case]
    r = roll(client, data, name="mine.mid", n=1, length=4)
    assert r.status_code == 422, r.text
    assert "'mine.mid'" in r.json()["detail"] and reason in r.json()["detail"]


@pytest.mark.parametrize("fields, status, words", [
    ({"n": 10**6}, 422, ["n=1000000", "between 1 and 8"]),
    ({"n": "many"}, 422, ["n='many'", "whole number"]),
    ({"length": 10**9}, 422, ["length=1000000000"]),
    ({"length": 0}, 422, ["length=0"]),
    ({"length": "nan"}, 422, ["length=nan"]),
    ({"length": 40, "unit": "bars"}, 422, ["length=40", "32"]),
    ({"unit": "beats"}, 422, ["unit='beats'"]),
    ({"temperature": -1}, 422, ["temperature=-1"]),
    ({"top_p": 0}, 422, ["top_p=0"]),
    ({"top_k": 10**9}, 422, ["top_k=1000000000"]),
    ({"seed": -3}, 422, ["seed=-3"]),
    ({"pitch_range": "84,48"}, 422, ["pitch_range=84,48", "reversed"]),
    ({"pitch_range": "60"}, 422, ["pitch_range='60'"]),
    ({"pitch_range": "0,200"}, 422, ["pitch_range=200"]),
    ({"key": "H major"}, 422, ["key 'H major'"]),
    ({"key": "C " + "x" * 100}, 422, ["key:", "characters"]),
    ({"max_polyphony": 0}, 422, ["max_polyphony=0"]),
    ({"keep_bars": -1}, 422, ["keep_bars=-1"]),
    ({"max_new_tokens": 10**9}, 422, ["max_new_tokens=1000000000"]),
    ({"preset": "loud"}, 422, ["preset='loud'", "greedy"]),
    ({"demo_prompt": "nope"}, 422, ["demo_prompt='nope'", "c-major-scale"]),
    ({"colour": "red"}, 400, ["'colour' is not a field of this request (known: "]),
])
def test_bad_fields(client, fields, status, words):
    r = roll(client, None, **fields)
    assert r.status_code == status, r.text
    detail = r.json()["detail"]
    assert all(w in detail for w in words), detail


def test_bad_requests(client, service, prompt_bytes):
    cases = [
        (roll(client, b"", name="empty.mid"), 422, "'empty.mid': empty"),
        (roll(client, prompt_bytes, demo_prompt="c-major-scale"), 422, "not both"),
        (client.post("/api/rolls", files={"prompt": ("a.mid", prompt_bytes), "other": ("b.mid", b"x")}), 400, None),
        (client.post("/api/rolls", data={"prompt": "a.mid"}), 422, "file field"),
        (client.post("/api/rolls", files=[("n", (None, "2")), ("n", (None, "3"))]), 422, "'n' is given 2 times"),
        (client.post("/api/rolls", json={"n": 2}), 415, "multipart/form-data"),
        (client.post("/api/rolls", files={"prompt": ("big.mid", b"M" * 200_000)}), 413, "over the limit"),
        (client.post("/api/rolls", content=iter([b"x" * 50_000] * 4),
                     headers={"content-type": "multipart/form-data; boundary=b"}), 413, "over the limit"),
        (client.post("/api/continue", content=b""), 422, "body: empty"),
        (client.post("/api/continue?n=2", content=prompt_bytes), 422, "n=2"),
        (client.post("/api/continue?temperature=-2", content=prompt_bytes), 422, "temperature=-2"),
        (client.post("/api/continue?color=red", content=prompt_bytes), 400, "'color' is not a field of this request"),
        (client.post("/api/continue", content=b"not midi"), 422, "prompt 'body': not a MIDI file"),
        (client.get("/api/prompts/nope.mid"), 422, "demo_prompt='nope'"),
    ]
    for r, status, words in cases:
        assert r.status_code == status, (r.status_code, r.text)
        if words:
            assert words in r.json()["detail"], r.json()


def test_roll_ids_and_file_names_cannot_leave_the_roll_folder(client, service, prompt_bytes):
    rid = roll(client, prompt_bytes, n=1, length=4).json()["id"]
    secret = service.store.root.parent / "secret.txt"
    secret.write_text("nope")
    for url in [f"/api/rolls/{'0' * 32}", f"/api/rolls/{'0' * 32}/variation_01.mid", "/api/rolls/..%2Fsecret.txt",
                "/api/rolls/../secret.txt", f"/api/rolls/{rid}/..%2F..%2Fsecret.txt", f"/api/rolls/{rid}/roll.json",
                f"/api/rolls/{rid}/variation_09.mid", f"/api/rolls/{rid}/variation_01.txt", "/api/rolls/%2e%2e",
                f"/api/rolls/{rid}/%2e%2e%2fsecret.txt", "/..%2f..%2fsecret.txt", "/api/rolls/ABC"]:
        r = client.get(url)
        assert r.status_code in (404, 405), (url, r.status_code)
        assert b"nope" not in r.content
        if r.headers.get("content-type") == "application/json" and r.status_code == 404 and "rolls" in url:
            assert "roll" in r.json()["detail"] or "Not Found" in r.json()["detail"]


def test_no_bad_input_reaches_a_5xx(client, prompt_bytes):
    """A sweep of odd values through every field: all refused or rolled, none a server error."""
    odd = ["", " ", "-0", "1e308", "inf", "-inf", "0x10", "1,2,3", "[1]", "null", "None", "é", "\x00", "9" * 400]
    for field in ["n", "length", "unit", "temperature", "top_k", "top_p", "min_p", "seed", "keep_bars", "key",
                  "pitch_range", "max_polyphony", "preset", "max_new_tokens", "demo_prompt"]:
        for value in odd:
            r = roll(client, prompt_bytes if field != "demo_prompt" else None, **{"n": 1, "length": 2, field: value})
            assert r.status_code < 500, (field, value, r.text)


# ---- the console script ---------------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_theremin_serve_runs_on_loopback_and_refuses_a_bad_checkpoint(trained, tmp_path):
    exe = Path(sys.executable).with_name("theremin-serve")
    bad = subprocess.run([str(exe), f"ckpt_path={tmp_path / 'none.ckpt'}", f"hydra.run.dir={tmp_path / 'bad'}"],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "theremin-serve: error:" in bad.stderr and "none.ckpt" in bad.stderr
    port = free_port()
    proc = subprocess.Popen([str(exe), f"ckpt_path={trained[0]}", f"port={port}", f"hydra.run.dir={tmp_path / 'run'}",
                             "log_level=warning"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        import httpx

        for _ in range(300):
            try:
                if httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        else:
            pytest.fail("theremin-serve did not become healthy")
        r = httpx.post(f"http://127.0.0.1:{port}/api/rolls", data={"demo_prompt": "c-major-scale", "n": "2",
                                                                   "length": "6"}, timeout=60)
        assert r.status_code == 200, r.text
        rid = r.json()["id"]
        assert (tmp_path / "run" / "rolls" / rid / "roll.json").is_file()  # rolls live in the run's folder
        with socket.socket() as s:  # loopback only by default
            addrs = {a[4][0] for a in socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET)}
            outside = sorted(a for a in addrs if not a.startswith("127."))
            if outside:
                assert s.connect_ex((outside[0], port)) != 0
    finally:
        proc.terminate()
        out = proc.communicate(timeout=30)[0]
    assert "Traceback" not in out, out
    assert json.loads(json.dumps(r.json()))["variations"]
