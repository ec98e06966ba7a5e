"""Issue 21 items 1, 4, 5, 8: theremin-serve under abuse, over HTTP. Renders are bounded (seconds, bytes, a
deadline) and run in a pool of their own; slow uploads take no queue place; one client cannot take the whole
queue; /api/health says when the queue is full; Host and Origin are checked; every answer is nosniff; no error
echoes a huge value; the prompt file itself is held to max_upload_bytes; /api/model names no server path.

Nothing here times the server: what takes time is waited for with generous bounds, or counted.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
from pathlib import Path

import pytest
from test_serve import make_service, midi_bytes, roll

from theremin.music.midi import Note, Piece

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")
fastapi = pytest.importorskip("fastapi", reason="pip install -e .[dev]")
WAIT_S = 60  # the most any wait below lasts on a loaded 2-core machine; each returns as soon as its state holds


def http(**kw):
    from theremin.serve.app import HttpSettings

    return HttpSettings(**kw)


def client_for(service, settings=None, **kw):
    from fastapi.testclient import TestClient

    from theremin.serve.app import create_app

    return TestClient(create_app(service, settings) if settings is not None else create_app(service), **kw)


@pytest.fixture(scope="module")
def service(trained, tmp_path_factory):
    svc = make_service(trained[0], tmp_path_factory.mktemp("rolls"), queue_size=6,
                       render={"max_seconds": 30, "max_mb": 1, "timeout_s": 60, "workers": 2})
    yield svc
    svc.close()


@pytest.fixture(scope="module")
def client(service):
    with client_for(service) as c:
        yield c


@contextlib.contextmanager
def held(service, count: int, client: str = "someone"):
    """``count`` queue places taken (as requests in the server would hold them)."""
    with contextlib.ExitStack() as stack:
        for _ in range(count):
            stack.enter_context(service.admit(client))
        yield


@contextlib.contextmanager
def serving(app):
    """The app in uvicorn on a loopback port (as theremin-serve runs it); its base URL and the uvicorn.Server."""
    import uvicorn

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    until(lambda: server.started)
    try:
        yield f"http://127.0.0.1:{port}", server
    finally:
        server.should_exit = True
        thread.join(timeout=WAIT_S)


def until(check, timeout: float = WAIT_S) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if check():
            return True
        time.sleep(0.05)
    return False


def slow_prompt(tmp_path, us_per_beat: int, beats: int = 8) -> bytes:
    """A scale of quarter notes at a slow tempo: a small file, a long piece."""
    return midi_bytes(tmp_path, [(i * 480, (i + 1) * 480, 60 + i % 12, 80) for i in range(beats)],
                      tempos=[(0, us_per_beat)])


def wav_files(service, roll_id: str) -> list[str]:
    return sorted(p.name for p in (service.store.root / roll_id).iterdir() if ".wav" in p.name)


# ---- 1: renders are bounded -----------------------------------------------------------------------------------
def test_render_wav_refuses_a_piece_over_its_caps_before_rendering(tmp_path, monkeypatch):
    from theremin.music import render
    from theremin.music.render import RenderError, RenderTooLarge, render_wav, wav_size

    # the issue's 177-byte disk filler: 16,777,215 µs a beat, ~189,466 s of audio, ~32 GB of WAV
    piece = Piece([Note(0, 480, 60, 80), Note(11_292 * 480, 11_293 * 480, 64, 80)], 480, tempos=[(0, 16_777_215)])
    seconds, nbytes = wav_size(piece)
    assert seconds > 150_000 and nbytes > 30 * 10**9
    monkeypatch.setattr(render, "_render_events", lambda *a: pytest.fail("rendered a piece over the cap"))
    with pytest.raises(RenderTooLarge, match=r"big\.wav.*600 s") as e:
        render_wav(piece, tmp_path / "big.wav", max_seconds=600, max_bytes=64 << 20)
    assert isinstance(e.value, RenderError)
    with pytest.raises(RenderTooLarge, match=r"big\.wav.*1048576 bytes"):
        render_wav(piece, tmp_path / "big.wav", max_seconds=10**9, max_bytes=1 << 20)
    assert list(tmp_path.iterdir()) == []


def test_render_wav_past_its_deadline_or_cancelled_leaves_no_file(tmp_path):
    from theremin.music.render import RenderTimeout, render_wav

    piece = Piece([Note(i * 480, (i + 1) * 480, 60 + i, 80) for i in range(8)], 480)
    with pytest.raises(RenderTimeout, match=r"late\.wav"):
        render_wav(piece, tmp_path / "late.wav", sample_rate=22050, deadline=time.monotonic() - 1)
    stop = threading.Event()
    stop.set()
    with pytest.raises(RenderTimeout, match=r"stopped\.wav"):
        render_wav(piece, tmp_path / "stopped.wav", sample_rate=22050, cancel=stop)
    assert list(tmp_path.iterdir()) == []  # no WAV, no temp file
    assert render_wav(piece, tmp_path / "ok.wav", sample_rate=22050, max_seconds=60, max_bytes=1 << 20,
                      deadline=time.monotonic() + WAIT_S).stat().st_size > 0


def test_a_wav_over_the_caps_is_a_422_with_the_reason_and_no_file(client, service, tmp_path):
    # 8 beats at 4 s a beat: ~33 s of audio, ~5.8 MB of WAV, over this service's render.max_mb=1
    r = roll(client, slow_prompt(tmp_path, 4_000_000), name="slow.mid", n=1, length=4)
    assert r.status_code == 200, r.text
    body = r.json()
    wav = client.get(body["variations"][0]["wav"])
    assert wav.status_code == 422, (wav.status_code, wav.text[:200])
    detail = wav.json()["detail"]
    assert "variation_01.wav" in detail and ("render.max_mb" in detail or "render.max_seconds" in detail)
    assert wav_files(service, body["id"]) == []
    assert client.get(body["variations"][0]["png"]).status_code == 200  # the piano roll still draws
    old = dict(service.render)
    service.render.update(max_mb=64, max_seconds=10)  # now the length cap is the one that refuses
    try:
        wav = client.get(body["variations"][0]["wav"])
        assert wav.status_code == 422 and "render.max_seconds" in wav.json()["detail"]
        assert "10 s" in wav.json()["detail"]
    finally:
        service.render.clear()
        service.render.update(old)
    assert wav_files(service, body["id"]) == []


def test_a_render_past_its_deadline_is_a_503_and_no_file(client, service, prompt_bytes):
    body = roll(client, prompt_bytes, n=1, length=4).json()
    old = dict(service.render)
    service.render.update(max_mb=64, max_seconds=600)  # whatever the variation's length: no cap refuses it
    try:
        service.render["timeout_s"] = 0  # every render is past its deadline at its first chunk
        r = client.get(body["variations"][0]["wav"])
        assert r.status_code == 503 and r.headers["retry-after"], r.text
        assert "render.timeout_s" in r.json()["detail"]
        assert wav_files(service, body["id"]) == []
        service.render["timeout_s"] = WAIT_S
        assert client.get(body["variations"][0]["wav"]).status_code == 200  # in time, it renders
    finally:
        service.render.clear()
        service.render.update(old)


def test_the_default_caps_bound_the_issues_disk_filler(trained, tmp_path):
    """conf/serve.yaml's render caps, through theremin-serve's build_service: the 16,777,215 µs/beat prompt
    (if the prompt check lets one through) gets a reasoned refusal, not a 32 GB file."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from theremin import config as resolvers  # noqa: F401
    from theremin.apps.serve import build_service, http_settings
    from theremin.config import conf_dir

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        cfg = compose("serve", overrides=[f"ckpt_path={trained[0]}", f"paths.output_dir={tmp_path}"])
    assert cfg.render.max_seconds == 600 and cfg.render.max_mb == 64 and cfg.render.timeout_s > 0
    settings = http_settings(cfg)
    assert settings.body_timeout_s == cfg.body_timeout_s and settings.max_per_client == cfg.max_per_client
    svc = build_service(cfg)
    try:
        assert svc.render["max_mb"] == 64 and svc.render_pool._max_workers == cfg.render.workers
        with client_for(svc, settings, base_url="http://127.0.0.1:8000") as c:
            r = roll(c, slow_prompt(tmp_path, 16_777_215, beats=2), name="filler.mid", n=1, length=2)
            if r.status_code == 200:  # the prompt passed: its WAV is refused before rendering
                wav = c.get(r.json()["variations"][0]["wav"])
                assert wav.status_code == 422 and "variation_01.wav" in wav.json()["detail"], wav.text
                assert wav_files(svc, r.json()["id"]) == []
            else:  # refused at the prompt (its tempo)
                assert r.status_code == 422 and "filler.mid" in r.json()["detail"], r.text
            # a tempo the prompt check allows (10 bpm), two notes 120 beats apart: 12 minutes of audio
            far = midi_bytes(tmp_path, [(0, 480, 60, 80), (120 * 480, 121 * 480, 64, 80)], tempos=[(0, 6_000_000)])
            r = roll(c, far, name="far.mid", n=1, length=2)
            assert r.status_code == 200, r.text
            wav = c.get(r.json()["variations"][0]["wav"])
            assert wav.status_code == 422 and "render.max_seconds=600 s" in wav.json()["detail"], wav.text
            assert wav_files(svc, r.json()["id"]) == []
    finally:
        svc.close()


# ---- 4: slow uploads, one client, health ----------------------------------------------------------------------
def slow_client(base: str) -> socket.socket:
    """A POST /api/rolls that announces 4000 bytes of body and sends 6 (then nothing)."""
    host, port = base.removeprefix("http://").split(":")
    s = socket.create_connection((host, int(port)))
    s.sendall(f"POST /api/rolls HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: multipart/form-data; boundary=b\r\n"
              f"Content-Length: 4000\r\n\r\n--b\r\n".encode())
    return s


def test_slow_uploads_take_no_queue_place_and_are_answered_408(trained, tmp_path):
    import httpx

    from theremin.serve.app import create_app

    svc = make_service(trained[0], tmp_path / "rolls", queue_size=4)
    slow = []
    try:
        with serving(create_app(svc, http(body_timeout_s=3))) as (base, server):
            slow = [slow_client(base) for _ in range(8)]  # twice the queue's places
            until(lambda: server.server_state.total_requests >= 8)  # their handlers run (and wait for bodies)
            time.sleep(0.5)  # the old server took its queue places here, before reading a byte of the body
            r = httpx.post(f"{base}/api/rolls", data={"demo_prompt": "c-major-scale", "n": "1", "length": "4"},
                           timeout=WAIT_S)
            assert r.status_code == 200, r.text
            health = httpx.get(f"{base}/api/health", timeout=WAIT_S)
            assert health.status_code == 200 and health.json()["queue"]["in_flight"] == 0, health.text
            assert httpx.get(base + r.json()["variations"][0]["midi"], timeout=WAIT_S).status_code == 200
            for s in slow:  # each is told why, once its body_timeout_s has passed
                s.settimeout(WAIT_S)
                answer = s.recv(65536).decode(errors="replace")
                assert answer.startswith("HTTP/1.1 408"), answer[:300]
                assert "body_timeout_s" in answer and "3 s" in answer
            assert svc.in_flight == 0
    finally:
        for s in slow:
            s.close()
        svc.close()


def test_one_client_gets_at_most_max_per_client_places(service):
    a = client_for(service, http(max_per_client=2))
    b = client_for(service, http(max_per_client=2), client=("10.1.2.3", 4321))
    with a, b, held(service, 2, client="testclient"):  # TestClient's requests come from "testclient"
        r = roll(a, demo_prompt="c-major-scale", n=1, length=4)
        assert r.status_code == 429 and int(r.headers["retry-after"]) > 0, r.text
        assert "max_per_client" in r.json()["detail"] and "2" in r.json()["detail"]
        assert roll(b, demo_prompt="c-major-scale", n=1, length=4).status_code == 200  # someone else rolls
        assert a.get("/api/health").status_code == 200  # the queue is not full
    assert roll(a, demo_prompt="c-major-scale", n=1, length=4).status_code == 200  # places given back


def test_health_reports_the_queue_and_is_503_when_it_is_full(client, service):
    ok = client.get("/api/health")
    assert ok.status_code == 200, ok.text
    assert ok.json()["status"] == "ok" and ok.json()["queue"] == {
        "in_flight": 0, "capacity": service.cfg.queue_size, "max_per_client": 8}
    with held(service, service.cfg.queue_size):
        full = client.get("/api/health")
        assert full.status_code == 503, full.text
        body = full.json()
        assert body["status"] == "busy" and "queue is full" in body["detail"]
        assert body["queue"]["in_flight"] == body["queue"]["capacity"] == service.cfg.queue_size
        assert client.get("/api/health/live").status_code == 200  # alive, only busy
        assert roll(client, demo_prompt="c-major-scale", n=1, length=4).status_code == 429
    assert client.get("/api/health").status_code == 200


# ---- 5: renders in a pool of their own ------------------------------------------------------------------------
def test_renders_run_in_their_own_bounded_pool_and_close_does_not_wait(trained, tmp_path, monkeypatch):
    from theremin.serve import service as service_module

    svc = make_service(trained[0], tmp_path / "rolls", render={"workers": 2, "timeout_s": 3600})
    release, threads, started = threading.Event(), [], threading.Semaphore(0)

    def stuck_render(piece, path, cancel=None, **kw):  # a render that ends only when told (or cancelled)
        threads.append(threading.current_thread().name)
        started.release()
        while not release.is_set() and not (cancel and cancel.is_set()):
            time.sleep(0.02)
        raise service_module.RenderTimeout(f"cannot render {Path(path).name}: stopped")

    monkeypatch.setattr(service_module, "render_wav", stuck_render)
    closer = None
    try:
        assert svc.render_pool._max_workers == 2
        with client_for(svc) as c:
            body = roll(c, demo_prompt="c-major-scale", n=3, length=4).json()
            answers = []

            def get(url):
                with contextlib.suppress(BaseException):  # the one cancelled at close() may end any way
                    answers.append(c.get(url).status_code)

            gets = [threading.Thread(target=get, args=(v["wav"],), daemon=True) for v in body["variations"]]
            for t in gets:
                t.start()
            assert started.acquire(timeout=WAIT_S) and started.acquire(timeout=WAIT_S)
            assert not started.acquire(timeout=1)  # the third waits for a render worker
            assert all(name.startswith("theremin-render") for name in threads)
            r = roll(c, demo_prompt="c-major-scale", n=1, length=4)  # rolls do not wait for renders
            assert r.status_code == 200, r.text
            closer = threading.Thread(target=svc.close)
            closer.start()
            closer.join(timeout=WAIT_S)
            assert not closer.is_alive(), "close() waited for the renders"
            assert len(threads) == 2  # the queued render never started
            for t in gets:
                t.join(timeout=WAIT_S)
            assert all(a == 503 for a in answers), answers  # stopped renders: "try again", never a 500
    finally:
        release.set()
        if closer is None:
            svc.close()


# ---- 8: Host, Origin, exposure warning, nosniff, clipped details, the prompt's own size, no server paths ------
@pytest.mark.parametrize(("bind", "allowed", "host", "ok"), [
    ("127.0.0.1", None, "127.0.0.1:8000", True),
    ("127.0.0.1", None, "localhost:8000", True),
    ("127.0.0.1", None, "localhost", True),
    ("127.0.0.1", None, "[::1]:8000", True),
    ("localhost", None, "LOCALHOST:8000", True),
    ("127.0.0.1", None, "evil.example:8000", False),  # DNS rebinding: evil.example resolved to 127.0.0.1
    ("127.0.0.1", None, "127.0.0.1.evil.example", False),
    ("::1", None, "evil.example", False),
    ("127.0.0.1", ["*"], "evil.example", True),
    ("127.0.0.1", ["music.example"], "music.example:8000", True),
    ("127.0.0.1", ["music.example"], "localhost:8000", False),
    ("0.0.0.0", None, "anything.example", True),
])
def test_host_header_is_checked_when_bound_to_loopback(service, bind, allowed, host, ok):
    with client_for(service, http(host=bind, allowed_hosts=allowed)) as c:
        r = c.get("/api/model", headers={"host": host})
    if ok:
        assert r.status_code == 200, r.text
    else:
        assert r.status_code == 400 and "Host" in r.json()["detail"] and "allowed_hosts" in r.json()["detail"]
        assert r.headers["x-content-type-options"] == "nosniff"


@pytest.mark.parametrize(("origin", "ok"), [
    (None, True),  # no Origin: not a browser (curl, httpx): allowed
    ("http://testserver", True),
    ("http://testserver:80", True),
    ("http://evil.example", False),
    ("https://testserver", False),
    ("http://testserver:8080", False),
    ("null", False),
])
def test_a_cross_origin_post_is_refused(client, origin, ok):
    headers = {"origin": origin} if origin else {}
    r = client.post("/api/rolls", data={"demo_prompt": "c-major-scale", "n": "1", "length": "4"}, headers=headers)
    c = client.post("/api/continue", content=b"MThd", headers=headers)
    if ok:
        assert r.status_code == 200 and c.status_code == 422, (r.text, c.text)
    else:
        for x in (r, c):
            assert x.status_code == 403, x.text
            assert "Origin" in x.json()["detail"]
    assert client.get("/api/model", headers=headers).status_code == 200  # a GET changes nothing


@pytest.mark.parametrize(("host", "warned"), [
    ("0.0.0.0", True), ("::", True), ("192.168.1.5", True), ("example.org", True),
    ("127.0.0.1", False), ("localhost", False), ("::1", False), ("127.0.0.2", False),
])
def test_theremin_serve_warns_when_bound_beyond_loopback(caplog, host, warned):
    from theremin.apps.serve import warn_if_exposed

    with caplog.at_level(logging.WARNING, logger="theremin.serve"):
        warn_if_exposed(host, 8000)
    text = " ".join(r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING)
    assert bool(text) == warned, text
    if warned:
        assert host in text and "no authentication" in text and "anyone" in text


def test_every_answer_is_nosniff(client, prompt_bytes):
    rid = roll(client, prompt_bytes, n=1, length=4).json()["id"]
    answers = [client.get("/"), client.get("/app.js"), client.get("/api/model"), client.get("/api/health"),
               client.get(f"/api/rolls/{rid}"), client.get(f"/api/rolls/{rid}/variation_01.mid"),
               client.get(f"/api/rolls/{rid}/nope.txt"), client.get("/no/such/page"),
               client.post("/api/rolls", files={"prompt": ("big.mid", b"M" * 300_000)}),
               client.post("/api/rolls", json={}), roll(client, None, n="many")]
    for r in answers:
        assert r.headers.get("x-content-type-options") == "nosniff", (r.request.url, r.status_code)


@pytest.mark.parametrize("field", ["key", "n", "pitch_range", "preset", "demo_prompt", "c" * 40_000])
def test_a_huge_value_is_not_echoed_whole(client, field):
    value = "x" * 20_000 + " " + "9" * 20_000  # within the body limit; two long runs
    r = roll(client, None, **{field: value})
    assert 400 <= r.status_code < 500, r.text[:300]
    detail = r.json()["detail"]
    assert len(detail) < 1200, detail[:300]
    assert field[:150] in detail[:250] and "characters" in detail, detail


def test_huge_names_in_the_url_and_query_are_clipped(client):
    r = client.get(f"/api/prompts/{'p' * 5000}.mid")
    assert r.status_code == 422 and len(r.json()["detail"]) < 1200 and "demo_prompt" in r.json()["detail"]
    r = client.post(f"/api/continue?{'q' * 5000}=1", content=b"MThd")
    assert r.status_code == 400 and len(r.json()["detail"]) < 1200, r.text[:300]


def test_the_prompt_file_itself_is_held_to_max_upload_bytes(client, service, prompt_bytes):
    limit = service.cfg.max_upload_bytes
    over = prompt_bytes + b"\0" * (limit + 1 - len(prompt_bytes))  # one byte over; the body is within its limit
    r = roll(client, over, name="padded.mid", n=1, length=4)
    assert r.status_code == 413, r.text[:300]
    assert "padded.mid" in r.json()["detail"] and str(limit) in r.json()["detail"]
    c = client.post("/api/continue", content=over)
    assert c.status_code == 413 and str(limit) in c.json()["detail"], c.text[:300]
    exact = prompt_bytes + b"\0" * (limit - len(prompt_bytes))  # at the limit: the file's bytes are allowed
    assert roll(client, exact, name="exact.mid", n=1, length=4).status_code != 413


def test_model_info_names_the_checkpoint_file_not_its_path(client, trained):
    info = client.get("/api/model").json()
    assert info["checkpoint"] == Path(trained[0]).name and "/" not in info["checkpoint"]
    assert info["step"] and info["params"] > 0 and info["limits"]["max_n"] == 8  # the rest is still there



def test_continue_names_the_upload_by_its_file_name(client):
    """Issue 20.6: an error about /api/continue's body called it 'body'; `?name=` gives it the user's file name."""
    r = client.post("/api/continue?length=8&name=my_song.mid", content=b"these are not notes")
    assert r.status_code == 422 and "'my_song.mid'" in r.json()["detail"], r.text
    r = client.post("/api/continue?length=8", content=b"these are not notes")
    assert r.status_code == 422 and "'body'" in r.json()["detail"], r.text
