"""The roll store (theremin/serve/store.py) on its own: issue 21 items 2 and 7.

Item 2: only the exact file names the API hands out are served (ASCII digits, ``{index:02d}``); any other
spelling is NotFound before anything is written. Item 7: the caps (count, bytes) hold right after a roll.json
is saved and right after a file is made, the oldest rolls going first and no roll being written or rendered;
``reserve``/``room`` check the byte budget before a render.

The store is built directly, its ``make`` callback writing files of known sizes; nothing here times anything.
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
from pathlib import Path

import pytest

import theremin.serve.store as st
from theremin.errors import ThereminError

KB10 = 0.01  # max_mb: 10,485 bytes
WAIT_S = 60  # a blocked render waits at most this long (each wait returns as soon as it is released)


def make_store(root: Path, size: int = 3000, reserve: int | None = None, gate=None, **limits):
    """A store whose make() writes ``size`` bytes (after ``reserve(path, reserve)`` when given, after waiting on
    ``gate`` (entered, release) events when given); ``made`` lists the paths it was asked for."""
    made: list[Path] = []
    holder: list[st.RollStore] = []

    def make(folder: Path, path: Path) -> None:
        made.append(path)
        if gate is not None:
            gate[0].set()
            assert gate[1].wait(WAIT_S)
        if reserve is not None:
            holder[0].reserve(path, reserve)
        path.write_bytes(b"x" * size)

    store = st.RollStore(root, st.StoreLimits(**limits), make)
    holder.append(store)
    return store, made


def save_roll(store, variations: int = 2, prompt: int = 0, prune: bool = True) -> str:
    """What RollService.roll does: new(), prompt.mid, roll.json (save_meta), then prune(keep=...)."""
    rid, folder = store.new()
    if prompt:
        (folder / "prompt.mid").write_bytes(b"p" * prompt)
    store.save_meta(folder, {"id": rid, "variations": [{"index": i + 1} for i in range(variations)]})
    if prune:
        store.prune(keep=rid, every_s=60)  # as the service does: a full prune at most every so often
    return rid


def on_disk(root: Path) -> dict[str, int]:
    """The roll folders under root and their bytes."""
    return {d.name: sum(f.stat().st_size for f in d.iterdir()) for d in root.iterdir()
            if d.is_dir() and re.fullmatch(r"[0-9a-f]{32}", d.name)}


def disk_bytes(root: Path) -> int:
    return sum(f.stat().st_size for f in root.rglob("*") if f.is_file())


# ---- item 2: file names and roll ids, ASCII-exact -----------------------------------------------------------
BAD_NAMES = ["variation_٠١.wav", "variation_۰۱.wav", "variation_𝟎𝟏.wav", "variation_０１.wav", "variation_0١.mid",
             "variation_߀߁.png", "variation_1.wav", "variation_001.wav", "variation_00.wav", "variation_03.wav",
             "variation_99.mid", "VARIATION_01.WAV", "variation_01.WAV", "Variation_01.wav", "variation_01.wav\n",
             "variation_01.ogg", "variation_01", "prompt.MID", "roll.json", "variation_01.wav/", " variation_01.wav"]


@pytest.mark.parametrize("name", BAD_NAMES)
def test_only_the_names_the_api_hands_out_are_served(tmp_path, name):
    store, made = make_store(tmp_path / "rolls")
    rid = save_roll(store, variations=2, prompt=10)
    before = sorted(p.name for p in (tmp_path / "rolls" / rid).iterdir())
    with pytest.raises(st.NotFound):
        store.file(rid, name)
    assert made == [] and sorted(p.name for p in (tmp_path / "rolls" / rid).iterdir()) == before


def test_the_names_the_api_hands_out_are_served(tmp_path):
    store, made = make_store(tmp_path / "rolls")
    rid = save_roll(store, variations=2, prompt=10)
    for name in ["prompt.mid", "variation_01.wav", "variation_02.mid", "variation_02.png", "variation_02.png"]:
        assert store.file(rid, name) == tmp_path / "rolls" / rid / name
    assert [p.name for p in made] == ["variation_01.wav", "variation_02.mid", "variation_02.png"]  # once each


@pytest.mark.parametrize("roll_id", ["٠" * 32, "０" * 32, "𝟎" * 32, "A" * 32, "0" * 31, "0" * 33, "0" * 32 + "\n",
                                     "../" + "0" * 29, ""])
def test_roll_ids_are_ascii_exact(tmp_path, roll_id):
    store, made = make_store(tmp_path / "rolls")
    with pytest.raises(st.NotFound):
        store.file(roll_id, "variation_01.mid")
    assert made == []


# ---- item 7: caps enforced when files are written --------------------------------------------------------------
def test_the_count_cap_holds_right_after_each_save(tmp_path):
    root = tmp_path / "rolls"
    store, _ = make_store(root, max_rolls=3)
    ids = []
    for i in range(6):
        ids.append(save_roll(store, prune=False))  # save_meta alone, no prune
        assert sorted(on_disk(root)) == sorted(ids[-3:]), i  # the oldest went first, one at a time


def test_the_size_cap_holds_right_after_a_file_is_made_evicting_only_what_is_needed(tmp_path):
    root = tmp_path / "rolls"
    store, _ = make_store(root, size=3000, max_mb=KB10, max_rolls=100)
    a, b, c = (save_roll(store) for _ in range(3))
    for rid in (a, b, c):
        store.file(rid, "variation_01.wav")  # 3 x (3000 + roll.json) fits 10,485 bytes
    assert sorted(on_disk(root)) == sorted([a, b, c])
    store.file(c, "variation_02.wav")  # 3000 more: over the cap by less than one roll
    assert sorted(on_disk(root)) == sorted([b, c]) and disk_bytes(root) <= KB10 * 2**20
    d = save_roll(store)  # a small roll fits: nothing more goes
    assert sorted(on_disk(root)) == sorted([b, c, d])
    assert store.usage() == (3, disk_bytes(root))


@pytest.mark.parametrize("max_rolls, prompt", [(3, 500), (10, 3000)])  # the count binds / the bytes bind
def test_a_burst_of_writers_leaves_the_store_within_its_caps(tmp_path, max_rolls, prompt):
    root = tmp_path / "rolls"
    store, _ = make_store(root, max_mb=KB10, max_rolls=max_rolls)
    old = [save_roll(store, prompt=prompt) for _ in range(3)]
    rolls = [store.new() for _ in range(20)]  # creation order: the list's
    start, errors = threading.Barrier(20), []

    def write(rid, folder):
        try:
            start.wait(WAIT_S)
            (folder / "prompt.mid").write_bytes(b"p" * prompt)
            store.save_meta(folder, {"id": rid, "variations": [{"index": 1}]})
            store.prune(keep=rid, every_s=60)
        except BaseException as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=write, args=r) for r in rolls]
    for t in threads:
        t.start()
    for t in threads:
        t.join(WAIT_S)
    assert not errors, errors
    left = on_disk(root)
    assert len(left) == 3  # at or under both caps, and no fewer rolls than they allow
    assert sum(left.values()) <= KB10 * 2**20 and disk_bytes(root) == sum(left.values())  # no trash left
    assert not set(old) & set(left) and rolls[-1][0] in left  # the oldest went, the newest stayed
    assert [p.name for p in root.iterdir() if p.name not in left] == []
    assert store.usage() == (3, sum(left.values()))  # the running account is the disk's
    for rid in left:
        assert store.meta(rid)["id"] == rid


def test_a_roll_being_rendered_is_never_evicted(tmp_path):
    root = tmp_path / "rolls"
    gate = (threading.Event(), threading.Event())
    store, _ = make_store(root, size=100, gate=gate, max_rolls=2)
    a = save_roll(store)
    got = []
    render = threading.Thread(target=lambda: got.append(store.file(a, "variation_01.wav")))
    render.start()
    try:
        assert gate[0].wait(WAIT_S)  # a's render is under way
        *_, d = (save_roll(store) for _ in range(3))
        assert sorted(on_disk(root)) == sorted([a, d])  # a is the oldest, yet kept while it renders
    finally:
        gate[1].set()
        render.join(WAIT_S)
    assert got == [root / a / "variation_01.wav"] and got[0].read_bytes() == b"x" * 100
    assert sorted(on_disk(root)) == sorted([a, d])
    e = save_roll(store)
    assert sorted(on_disk(root)) == sorted([d, e])  # rendered, a is the oldest again and goes first


def test_reserve_refuses_a_file_bigger_than_the_whole_store_before_writing_it(tmp_path):
    root = tmp_path / "rolls"
    store, made = make_store(root, size=20_000, reserve=20_000, max_mb=KB10)
    a, b = save_roll(store), save_roll(store)
    assert not store.room(20_000) and store.room(5000)
    with pytest.raises(st.NoRoom) as err:
        store.file(b, "variation_01.wav")
    assert isinstance(err.value, ThereminError) and not isinstance(err.value, st.NotFound) and err.value.never
    assert "variation_01.wav" in str(err.value) and "store.max_mb=0.01" in str(err.value)
    assert len(made) == 1 and not (root / b / "variation_01.wav").exists()  # refused before a byte was written
    assert sorted(on_disk(root)) == sorted([a, b])  # and nothing was evicted for it


def test_reserve_evicts_the_oldest_rolls_before_the_write(tmp_path):
    root = tmp_path / "rolls"
    sizes = {"variation_01.wav": 3000, "variation_02.wav": 6000, "variation_03.wav": 3000,
             "variation_01.png": 3000, "variation_01.mid": 3000}
    seen = []
    store = st.RollStore(root, st.StoreLimits(max_mb=KB10, max_rolls=100), make=None)

    def make(folder, path):
        store.reserve(path, sizes[path.name])
        seen.append(sorted(on_disk(root)))  # what is left just before the write
        path.write_bytes(b"x" * sizes[path.name])

    store.make = make
    a, b, c = (save_roll(store, variations=3) for _ in range(3))
    for rid in (a, b, c):
        store.file(rid, "variation_01.wav")
    assert store.room(6000) and not store.room(11_000) and sorted(on_disk(root)) == sorted([a, b, c])  # room: a look
    store.file(c, "variation_02.wav")  # 6000 more: a and b must go, before the write
    assert seen[-1] == [c] and sorted(on_disk(root)) == [c] and disk_bytes(root) <= KB10 * 2**20
    with pytest.raises(st.NoRoom) as err:  # c alone holds 9000 + roll.json: 3000 more never fits beside it
        store.file(c, "variation_03.wav")
    assert not err.value.never and "variation_03.wav" in str(err.value) and "try again" in str(err.value)
    assert not (root / c / "variation_03.wav").exists() and sorted(on_disk(root)) == [c]


def test_a_reservation_holds_its_bytes_while_the_file_renders(tmp_path):
    root = tmp_path / "rolls"
    gate = (threading.Event(), threading.Event())
    store, _ = make_store(root, size=6000, reserve=6000, max_mb=KB10, max_rolls=100)
    holding = threading.Event()
    real = store.make

    def make(folder, path):  # reserve first, then wait: the render holds 6000 bytes it has not written yet
        store.reserve(path, 6000)
        holding.set()
        assert gate[1].wait(WAIT_S)
        real(folder, path)

    store.make = make
    a = save_roll(store)
    render = threading.Thread(target=store.file, args=(a, "variation_01.wav"))
    render.start()
    try:
        assert holding.wait(WAIT_S)
        b = save_roll(store, prompt=3000)  # a + 6000 held + b fits
        assert sorted(on_disk(root)) == sorted([a, b])
        c = save_roll(store, prompt=3000)  # with the 6000 held, c only fits once b goes
        assert sorted(on_disk(root)) == sorted([a, c])
    finally:
        gate[1].set()
        render.join(WAIT_S)
    assert sorted(on_disk(root)) == sorted([a, c]) and disk_bytes(root) <= KB10 * 2**20
    assert store.usage() == (2, disk_bytes(root))


def test_a_store_opened_on_old_rolls_accounts_and_caps_them_at_once(tmp_path):
    root = tmp_path / "rolls"
    first, _ = make_store(root, size=100)
    ids = [save_roll(first, prompt=100) for _ in range(5)]
    for i, rid in enumerate(ids):  # roll.json's mtime gives their order
        os.utime(root / rid / "roll.json", (1_000_000 + i, 1_000_000 + i))
    (root / ("f" * 32)).mkdir()  # a roll a crash left unsaved
    (root / ("f" * 32) / "prompt.mid").write_bytes(b"p")
    (root / f"{st.TRASH}{'e' * 32}").mkdir()  # an eviction a crash left half done
    store, _ = make_store(root, size=100, max_rolls=3, max_age_hours=1e9)
    assert sorted(on_disk(root)) == sorted(ids[-3:]) and sorted(p.name for p in root.iterdir()) == sorted(ids[-3:])
    assert store.usage() == (3, disk_bytes(root))
    assert json.loads((root / ids[-1] / "roll.json").read_text())["id"] == ids[-1]


def test_rolls_past_the_age_cap_go(tmp_path):
    root = tmp_path / "rolls"
    first, _ = make_store(root)
    a, b = save_roll(first), save_roll(first)
    hours_ago = time.time() - 2 * 3600
    os.utime(root / a / "roll.json", (hours_ago, hours_ago))
    store, _ = make_store(root, max_age_hours=1)  # opened on them: a is two hours old
    assert sorted(on_disk(root)) == [b]
    c = save_roll(store)
    assert sorted(on_disk(root)) == sorted([b, c])


# ---- over HTTP --------------------------------------------------------------------------------------------------
@pytest.mark.filterwarnings("ignore::UserWarning")
def test_unicode_digit_file_names_answer_404_over_http_and_write_nothing(trained, tmp_path):
    pytest.importorskip("fastapi", reason="pip install -e .[dev]")
    from fastapi.testclient import TestClient
    from test_serve import make_service, roll

    from theremin.serve.app import create_app

    svc = make_service(trained[0], tmp_path / "rolls")
    try:
        with TestClient(create_app(svc)) as c:
            rid = roll(c, demo_prompt="c-major-scale", n=1, length=4).json()["id"]
            folder = tmp_path / "rolls" / rid
            before = sorted(p.name for p in folder.iterdir())
            for name in ["variation_٠١.wav", "variation_۰۱.wav", "variation_𝟎𝟏.wav", "variation_1.wav",
                         "variation_001.wav", "variation_00.wav", "VARIATION_01.WAV"]:
                r = c.get(f"/api/rolls/{rid}/{name}")
                assert r.status_code == 404, (name, r.status_code, r.text)
            assert sorted(p.name for p in folder.iterdir()) == before
            assert c.get(f"/api/rolls/{rid}/variation_01.mid").status_code == 200
    finally:
        svc.close()
