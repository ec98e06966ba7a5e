"""Datasets as base sources: the catalogue, fetch from a mirror or a (loopback) download with resume, every refusal of
a bad archive (built in code; nothing unpacked), note tables as MIDI, and a base MIDI folder from mirror datasets."""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import tarfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from theremin.data import base as base_data
from theremin.data import datasets as ds
from theremin.data.datasets import DatasetError, DatasetSpec, Layout, Licence
from theremin.music.midi import read_midi
from theremin.music.tables import NoteTableError, read_note_table, write_note_table_midi

# $THEREMIN_DATASETS when set (a mirror laid out like ../shared/datasets), else ../shared/datasets from the checkout
MIRROR = Path(os.environ.get("THEREMIN_DATASETS") or Path(__file__).resolve().parents[2] / "shared" / "datasets")
needs_mirror = pytest.mark.skipif(not (MIRROR / "SHA256SUMS").is_file(),
                                  reason=f"no dataset mirror at {MIRROR} (../shared/datasets)")
FIVE = ("pop909", "groove", "pianolatron", "openewld", "wjazzd")


# ---- archives built in code ----------------------------------------------------------------------------------
def tar_bytes(members, mode: str = "w:gz") -> bytes:
    """A tar archive of ("dir"|"file"|"sym"|"hard"|"chr"|"fifo", name[, data or link target]) members."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=mode) as tf:
        for kind, name, *rest in members:
            info = tarfile.TarInfo(name)
            data = None
            if kind == "dir":
                info.type, info.mode = tarfile.DIRTYPE, 0o755
            elif kind == "file":
                data = rest[0] if rest else b"x"
                info.size = len(data)
            elif kind in ("sym", "hard"):
                info.type, info.linkname = (tarfile.SYMTYPE if kind == "sym" else tarfile.LNKTYPE), rest[0]
            elif kind == "chr":
                info.type, info.devmajor, info.devminor = tarfile.CHRTYPE, 1, 3
            elif kind == "fifo":
                info.type = tarfile.FIFOTYPE
            tf.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def spec_for(name: str, data: bytes | None = None, **layout) -> DatasetSpec:
    sha = hashlib.sha256(data).hexdigest() if data is not None else None
    return DatasetSpec(name=name, url=None, sha256=sha, licence=Licence("MIT", True), layout=Layout(**layout))


def make_mirror(folder: Path, name: str, data: bytes, listed: bytes | None = None) -> Path:
    """A mirror folder holding ``<name>.tar.gz`` and a SHA256SUMS that lists ``listed`` (default: the archive)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.tar.gz").write_bytes(data)
    sha = hashlib.sha256(data if listed is None else listed).hexdigest()
    (folder / "SHA256SUMS").write_text(f"{sha}  {name}.tar.gz\n")
    return folder


def leftovers(root: Path, name: str) -> list[str]:
    """What a refused fetch left in its root besides its lock and an empty downloads folder."""
    out = sorted(p.name for p in root.iterdir() if p.name not in (f".{name}.lock", ".downloads"))
    return out + sorted(p.name for p in (root / ".downloads").glob("*")) if (root / ".downloads").exists() else out


GOOD = [("dir", "ds"), ("file", "ds/LICENSE", b"MIT"), ("dir", "ds/midi"), ("file", "ds/midi/a.txt", b"hello")]


def test_a_good_archive_unpacks_once_and_is_replaced_by_a_new_version(tmp_path, monkeypatch):
    data = tar_bytes([*GOOD, ("sym", "ds/midi/b.txt", "a.txt"), ("hard", "ds/c.txt", "ds/LICENSE")])
    mirror, root = make_mirror(tmp_path / "mirror", "ds", data), tmp_path / "root"
    folder = ds.fetch("ds", root, mirror, spec=spec_for("ds", data), progress=False)
    assert folder == root / "ds" and (folder / "midi" / "b.txt").read_text() == "hello"
    assert ds.fetched(folder, hashlib.sha256(data).hexdigest())["from"] == str(mirror / "ds.tar.gz")
    assert leftovers(root, "ds") == ["ds"]  # the mirror's copy is gone once unpacked

    def boom(*a, **k):
        raise AssertionError("fetched again")

    monkeypatch.setattr(ds, "obtain", boom)
    assert ds.fetch("ds", root, mirror, spec=spec_for("ds", data), progress=False) == folder  # the marker says done
    monkeypatch.undo()
    newer = tar_bytes(GOOD[:2])
    make_mirror(mirror, "ds", newer)
    ds.fetch("ds", root, mirror, spec=spec_for("ds", newer), progress=False)  # another pinned archive: replaced
    assert not (folder / "midi").exists() and ds.fetched(folder, hashlib.sha256(newer).hexdigest())
    assert leftovers(root, "ds") == ["ds"]


def test_an_interrupted_unpack_never_looks_done(tmp_path, monkeypatch):
    data = tar_bytes(GOOD)
    mirror, root = make_mirror(tmp_path / "mirror", "ds", data), tmp_path / "root"
    real = tarfile.TarFile.extractall

    def killed(self, *args, **kwargs):
        real(self, *args, **kwargs)  # every file written into the temp folder, then the process "dies"
        raise KeyboardInterrupt

    monkeypatch.setattr(tarfile.TarFile, "extractall", killed)
    with pytest.raises(KeyboardInterrupt):
        ds.fetch("ds", root, mirror, spec=spec_for("ds", data), progress=False)
    assert leftovers(root, "ds") == []
    stale = root / ".ds.unpack-killed" / "ds"  # what a SIGKILL would leave: a temp folder, no marker, not in place
    stale.mkdir(parents=True)
    monkeypatch.undo()
    folder = ds.fetch("ds", root, mirror, spec=spec_for("ds", data), progress=False)
    assert ds.fetched(folder) and leftovers(root, "ds") == ["ds"]


def test_a_folder_theremin_did_not_unpack_is_never_replaced(tmp_path):
    data = tar_bytes(GOOD)
    (tmp_path / "root" / "ds").mkdir(parents=True)
    (tmp_path / "root" / "ds" / "mine.txt").write_text("keep")
    with pytest.raises(DatasetError, match=r"was not unpacked by theremin"):
        ds.fetch("ds", tmp_path / "root", make_mirror(tmp_path / "m", "ds", data), spec=spec_for("ds", data),
                 progress=False)
    assert (tmp_path / "root" / "ds" / "mine.txt").read_text() == "keep"


def _truncated(data: bytes) -> bytes:
    return data[: len(data) // 2]


def _corrupt(data: bytes) -> bytes:
    mid = len(data) // 2
    return data[:mid] + bytes([data[mid] ^ 0xFF]) + data[mid + 1 :]


BIG = [*GOOD, ("file", "ds/midi/big.bin", bytes(range(256)) * 400)]
REFUSALS = {  # case: (archive bytes, what the refusal says)
    "dotdot": (tar_bytes([*GOOD, ("file", "ds/../evil.txt")]), r"'\.\.' in its path"),
    "absolute": (tar_bytes([*GOOD, ("file", "/tmp/evil.txt")]), r"absolute path"),
    "outside the folder": (tar_bytes([*GOOD, ("file", "other/x.txt")]), r"outside the archive's folder ds/"),
    "symlink out": (tar_bytes([*GOOD, ("sym", "ds/link", "../../etc/passwd")]), r"points out of the archive"),
    "absolute symlink": (tar_bytes([*GOOD, ("sym", "ds/link", "/etc/passwd")]), r"symbolic link to an absolute"),
    # each link stays inside on paper (normpath('ds/a/..') is 'ds'); followed, b is the folder above ds/
    "symlink chain out": (tar_bytes([*GOOD, ("sym", "ds/a", "."), ("sym", "ds/b", "a/.."), ("file", "ds/b/x")]),
                          r"member 'ds/b' points out of the archive's folder"),
    "hardlink out": (tar_bytes([*GOOD, ("hard", "ds/h", "/etc/passwd")]), r"hard link"),
    "hardlink to a later member": (tar_bytes([("dir", "ds"), ("hard", "ds/h", "ds/z"), ("file", "ds/z")]),
                                   r"hard link"),
    "character device": (tar_bytes([*GOOD, ("chr", "ds/null")]), r"device, FIFO"),
    "fifo": (tar_bytes([*GOOD, ("fifo", "ds/pipe")]), r"device, FIFO"),
    "truncated gzip": (_truncated(tar_bytes(BIG)), r"truncated or corrupt"),
    "corrupt gzip": (_corrupt(tar_bytes(BIG)), r"truncated or corrupt"),
    "truncated tar": (_truncated(tar_bytes(BIG, mode="w")), r"truncated or corrupt"),
    "not an archive": (b"<html>not found</html>", r"truncated or corrupt"),
    "no folder": (tar_bytes([]), r"holds no folder ds/"),
}


@pytest.mark.parametrize("case", list(REFUSALS))
def test_a_bad_archive_is_refused_and_nothing_is_unpacked(tmp_path, case):
    """Each archive's checksum is right (the mirror and the spec vouch for these very bytes): the tar check refuses."""
    data, why = REFUSALS[case]
    root = tmp_path / "root"
    with pytest.raises(DatasetError, match=why) as err:
        ds.fetch("ds", root, make_mirror(tmp_path / "mirror", "ds", data), spec=spec_for("ds", data), progress=False)
    assert "ds.tar.gz" in str(err.value) and "refused, nothing unpacked" in str(err.value)
    assert leftovers(root, "ds") == [] and not (tmp_path / "evil.txt").exists()


def test_checksum_mismatches_are_refused(tmp_path):
    data, other = tar_bytes(GOOD), tar_bytes(GOOD[:2])
    root = tmp_path / "root"
    # the mirror lists another archive than the catalogue pins
    with pytest.raises(DatasetError, match=r"ds\.tar\.gz: the mirror's SHA256SUMS gives .* the catalogue pins"):
        ds.fetch("ds", root, make_mirror(tmp_path / "m1", "ds", data), spec=spec_for("ds", other), progress=False)
    # the mirror's file is not the one its SHA256SUMS lists (and the catalogue pins)
    with pytest.raises(DatasetError, match=r"ds\.tar\.gz: checksum mismatch .*refused, nothing unpacked"):
        ds.fetch("ds", root, make_mirror(tmp_path / "m2", "ds", data, listed=other), spec=spec_for("ds", other),
                 progress=False)
    assert leftovers(root, "ds") == []
    (tmp_path / "m3").mkdir()
    (tmp_path / "m3" / "ds.tar.gz").write_bytes(data)
    (tmp_path / "m3" / "SHA256SUMS").write_text("")
    with pytest.raises(DatasetError, match=r"lists no checksum for it"):
        ds.fetch("ds", root, tmp_path / "m3", spec=spec_for("ds", data), progress=False)


def test_nothing_to_fetch_from(tmp_path, monkeypatch):
    monkeypatch.delenv(ds.ENV, raising=False)
    with pytest.raises(DatasetError, match=r"not fetched yet .* download=False; set THEREMIN_DATASETS"):
        ds.fetch("pop909", tmp_path, download=False, progress=False)
    with pytest.raises(DatasetError, match=r"asap: no sha256 pinned for https://github\.com/fosfrancesco"):
        ds.fetch("asap", tmp_path, progress=False)  # refused before any connection: never unpacked unverified
    with pytest.raises(DatasetError, match=r"'nope' is not in the catalogue"):
        ds.fetch("nope", tmp_path)
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "SHA256SUMS").write_text("")
    with pytest.raises(DatasetError, match=r"the mirror .* has no asap\.tar\.gz and download=False"):
        ds.fetch("asap", tmp_path, tmp_path / "m", download=False)


# ---- downloads (a loopback server: no network) ----------------------------------------------------------------
@pytest.fixture
def server(monkeypatch):
    """An HTTP server on 127.0.0.1 serving ``state["files"]`` with Range support; ``state["drop"]`` makes the next
    answer stop halfway (the connection closes); ``state["ranges"]`` logs each request's Range header."""
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("no_proxy", "*")
    state = {"files": {}, "drop": False, "ranges": []}

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            data = state["files"].get(self.path)
            state["ranges"].append(self.headers.get("Range"))
            if data is None:
                self.send_error(404)
                return
            start = int(self.headers["Range"].split("=")[1].rstrip("-")) if self.headers.get("Range") else 0
            body = data[start:]
            self.send_response(206 if start else 200)
            if start:
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if state["drop"]:
                state["drop"] = False
                body = body[: len(body) // 2]
            self.wfile.write(body)

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    state["url"] = f"http://127.0.0.1:{httpd.server_address[1]}"
    yield state
    httpd.shutdown()
    httpd.server_close()


def test_download_resumes_after_an_interruption(tmp_path, server):
    data = tar_bytes(BIG)
    server["files"]["/ds.tar.gz"] = data
    spec = DatasetSpec("ds", f"{server['url']}/ds.tar.gz", hashlib.sha256(data).hexdigest(), Licence("MIT", True))
    root, server["drop"] = tmp_path / "root", True
    with pytest.raises(DatasetError, match=r"download interrupted after .* run again to resume"):
        ds.fetch("ds", root, mirror="", spec=spec, progress=False)
    part = root / ".downloads" / "ds.tar.gz.part"
    assert 0 < part.stat().st_size < len(data) and not (root / "ds").exists()
    folder = ds.fetch("ds", root, mirror="", spec=spec, progress=False)
    assert server["ranges"] == [None, f"bytes={len(data) // 2}-"]  # only the rest was asked for
    assert (folder / "midi" / "big.bin").read_bytes() == bytes(range(256)) * 400
    assert (root / ".downloads" / "ds.tar.gz").read_bytes() == data and not part.exists()


def test_a_wrong_download_is_deleted_and_refused(tmp_path, server):
    good, bad = tar_bytes(GOOD), tar_bytes(GOOD[:2])
    server["files"]["/ds.tar.gz"] = bad
    spec = DatasetSpec("ds", f"{server['url']}/ds.tar.gz", hashlib.sha256(good).hexdigest(), Licence("MIT", True))
    with pytest.raises(DatasetError, match=r"/ds\.tar\.gz: checksum mismatch .* refused, nothing unpacked"):
        ds.fetch("ds", tmp_path, mirror="", spec=spec, progress=False)
    assert leftovers(tmp_path, "ds") == []  # the bad bytes are not kept to be "resumed"
    spec404 = DatasetSpec("ds", f"{server['url']}/missing.tar.gz", spec.sha256, Licence("MIT", True))
    with pytest.raises(DatasetError, match=r"missing\.tar\.gz: HTTP 404"):
        ds.fetch("ds", tmp_path, mirror="", spec=spec404, progress=False)


def test_an_http_mirror(tmp_path, server):
    data = tar_bytes(GOOD)
    server["files"].update({"/m/ds.tar.gz": data,
                            "/m/SHA256SUMS": f"{hashlib.sha256(data).hexdigest()} *ds.tar.gz\n".encode()})
    folder = ds.fetch("ds", tmp_path, f"{server['url']}/m/", spec=spec_for("ds", data), progress=False)
    assert (folder / "midi" / "a.txt").read_text() == "hello" and leftovers(tmp_path, "ds") == ["ds"]


# ---- the catalogue and the mirror's datasets -------------------------------------------------------------------
def test_catalogue_entries():
    specs = ds.load_catalog()
    assert set(specs) == {*FIVE, "asap"}
    assert all(specs[n].sha256 and specs[n].url and specs[n].licence.commercial for n in FIVE)
    assert (specs["asap"].licence.commercial, specs["asap"].sha256) == (False, None)
    assert {specs[n].layout.converter for n in FIVE} == {"midi", "musicxml", "note_table"}
    with pytest.raises(DatasetError, match=r"data\.catalog\.x\.layout\.convertor is not a layout setting"):
        DatasetSpec.from_config("x", {"licence": {"name": "MIT", "commercial": True}, "layout": {"convertor": "m"}})
    with pytest.raises(DatasetError, match=r"data\.catalog\.x\.licence: give its name and whether commercial"):
        DatasetSpec.from_config("x", {"licence": {"name": "MIT"}})


@needs_mirror
def test_catalogue_pins_the_mirrors_archives():
    sums = ds.read_sums((MIRROR / "SHA256SUMS").read_text())
    assert {n: ds.get_spec(n).sha256 for n in FIVE} == {n: sums[f"{n}.tar.gz"] for n in FIVE}


def test_base_config_lists_the_datasets_off_by_default():
    from hydra import compose, initialize_config_dir

    from theremin.config import conf_dir

    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        cfg = compose("train", overrides=["experiment=base"])
    assert list(cfg.data.datasets) == [] and set(cfg.data.catalog) == {*FIVE, "asap"}
    assert not any("dataset" in s for s in cfg.data.sources.values())
    assert ds.load_catalog(cfg.data.catalog) == ds.load_catalog()  # one catalogue, with or without Hydra


def test_under_cap_is_deterministic_and_spread():
    counts = {f"f{i:03d}.mid": 100 + i for i in range(200)}
    kept = ds.under_cap(counts, 5_000, "x")
    assert kept == ds.under_cap(counts, 5_000, "x") and sum(counts[r] for r in kept) <= 5_000
    assert sum(counts[r] for r in kept) > 5_000 - 300 and max(kept) > "f100"  # not the alphabet's first files
    assert ds.under_cap(counts, None, "x") == sorted(counts)


# ---- note tables -----------------------------------------------------------------------------------------------
def test_note_table_to_midi_keeps_performed_timing(tmp_path):
    src = tmp_path / "solo.csv"
    src.write_text("6.500000000000000000e+01,1.034349206349206263e+01,1.387755102040816313e-01\n"
                   "\n63,10.6376417,0.17124716\n58,0.0005,0\n")
    piece = read_note_table(src)
    assert piece.ticks_per_beat == 480 and piece.tempos == []
    want = [(0, 1, 58),  # shorter than half a tick: one tick, not lost
            (round(10.343492063 * 960), round(10.482267573 * 960), 65),
            (round(10.6376417 * 960), round(10.80888886 * 960), 63)]
    assert [(n.start, n.end, n.pitch) for n in piece.notes] == want and {n.velocity for n in piece.notes} == {80}
    back = read_midi(write_note_table_midi(src, tmp_path / "solo.mid", velocity=64))
    assert [(n.start, n.end, n.pitch, n.velocity) for n in back.notes] == [(*w, 64) for w in want]
    assert back.ticks_per_beat == 480 and back.seconds(960) == pytest.approx(1.0)  # 120 bpm: 960 ticks a second


@pytest.mark.parametrize(("text", "why"), [("60.5,1,1\n", r"line 1: pitch 60\.5 is not a MIDI pitch"),
                                           ("60,1\n", r"line 1: 2 fields"), ("60,1,1\n61,-1,1\n", r"line 2: negative"),
                                           ("pitch,onset,duration\n", r"line 1: not a number"),
                                           ("60,nan,1\n", r"line 1: not a finite number"), ("", r"no notes")])
def test_bad_note_tables_are_refused_by_line(tmp_path, text, why):
    src = tmp_path / "bad.csv"
    src.write_text(text)
    with pytest.raises(NoteTableError, match=rf"bad\.csv: {why}" if why != r"no notes" else r"bad\.csv: no notes"):
        read_note_table(src)


def test_a_score_with_repeats_music21_cannot_expand_is_played_straight_through(tmp_path):
    """78 of OpenEWLD's 502 lead sheets have repeats music21 refuses to expand; they are kept, once through."""
    from music21 import bar, note, stream

    part = stream.Part()
    for i in range(4):
        m = stream.Measure(number=i + 1)
        m.append(note.Note(60 + i, quarterLength=4))
        part.append(m)
    measures = list(part.getElementsByClass(stream.Measure))
    measures[0].leftBarline, measures[1].leftBarline = bar.Repeat(direction="start"), bar.Repeat(direction="start")
    measures[2].rightBarline = bar.Repeat(direction="end")
    score = stream.Score([part])
    (tmp_path / "ds" / "mxl").mkdir(parents=True)
    score.write("musicxml", fp=str(tmp_path / "ds" / "mxl" / "bad.musicxml"))
    spec = spec_for("ds", music="mxl/*.musicxml", converter="musicxml")
    view = ds.midi_view(tmp_path / "ds", spec, ["mxl/bad.musicxml"], workers=1, progress=False)
    assert [n.pitch for n in read_midi(view["mxl/bad.musicxml"]).notes] == [60, 61, 62, 63]
    assert ds.conversion_notes(view, ["mxl/bad.musicxml"]) == {ds.STRAIGHT: 1}


# ---- base sources --------------------------------------------------------------------------------------------
@needs_mirror
def test_base_midi_from_two_mirror_datasets(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(ds.ENV, str(MIRROR))
    root, dsdir = tmp_path / "base_midi", tmp_path / "datasets"
    sources = {"jazz": {"dataset": "wjazzd", "limit": 3}, "pop909": {"dataset": "pop909", "limit": 4}}
    r = base_data.build_base_midi(root, sources, datasets=["pop909"], datasets_dir=dsdir, workers=1, progress=False,
                                  min_notes=8)
    assert list(r) == ["jazz", "pop909", "extra"]  # pop909 is a source already: the list adds nothing
    assert (r["jazz"]["files"], r["pop909"]["files"], r["pop909"]["skipped"]) == (3, 4, 0)
    assert r["pop909"]["notes"] == r["pop909"]["available_notes"] > 1000  # under the default cap (300 k)
    links = sorted((root / "jazz" / "csv").iterdir())
    assert len(links) == 3 and all(p.is_symlink() and p.suffix == ".mid" for p in links)
    assert read_midi(links[0]).ticks_per_beat == 480
    saved = json.loads((root / "sources.json").read_text())
    assert saved["sources"]["jazz"]["licence"] == {"name": "ODbL 1.0", "commercial": True, "file": None}
    assert sum(s["share"] for s in saved["sources"].values()) == pytest.approx(1.0)
    assert saved["total"]["notes"] == sum(s["notes"] for s in r.values())

    # a smaller selection: the links follow it; weight scales the cap
    r2 = base_data.build_base_midi(root, {"pop": {"dataset": "pop909", "include": ["midi/0*.mid"], "limit": 4,
                                                  "weight": 0.01}}, datasets_dir=dsdir, progress=False)
    assert r2["pop"]["cap_notes"] == 3_000 and 0 < r2["pop"]["notes"] <= 3_000
    assert r2["pop"]["available_files"] == 4 and r2["pop"]["files"] < 4
    assert all(p.name.startswith("0") for p in (root / "pop" / "midi").iterdir())
    assert not (root / "jazz").exists()  # a dataset source taken out of the config leaves no links behind
    table = base_data.sources_table(r2)
    assert table.splitlines()[0].split() == ["source", "kind", "files", "notes", "share", "skipped", "licence"]
    assert "pop909" in table and "MIT" in table


@needs_mirror
def test_musicxml_and_drum_datasets(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv(ds.ENV, str(MIRROR))
    caplog.set_level(logging.WARNING, "theremin.data.base")
    src = {"sheets": {"dataset": "openewld", "limit": 2}, "drums": {"dataset": "groove", "limit": 2}}
    r = base_data.build_base_midi(tmp_path / "b", src, datasets_dir=tmp_path / "d", workers=1, progress=False,
                                  balance={"notes_per_weight": None})
    assert r["sheets"]["files"] == 2 and r["sheets"]["notes"] > 50 and r["sheets"]["cap_notes"] is None
    assert (r["drums"]["files"], r["drums"]["skipped"]) == (2, 0)  # drum parts are parts (issue 18)

    assert len(list((tmp_path / "d" / "openewld" / ".converted" / "musicxml").rglob("*.mid"))) == 2  # converted once


def test_a_non_commercial_dataset_says_so(tmp_path, caplog, midi_factory):
    midi = midi_factory.smf_bytes([midi_factory.notes_to_events(midi_factory.scale())])
    data = tar_bytes([("dir", "nc"), ("file", "nc/one.mid", midi), ("file", "nc/two.mid", midi)])
    make_mirror(tmp_path / "m", "nc", data)
    catalog = {"nc": {"url": None, "sha256": hashlib.sha256(data).hexdigest(),
                      "licence": {"name": "CC BY-NC-SA 4.0", "commercial": False}}}
    caplog.set_level(logging.WARNING, "theremin.data.base")
    r = base_data.build_base_midi(tmp_path / "b", {}, datasets=["nc"], catalog=catalog, mirror=str(tmp_path / "m"),
                                  datasets_dir=tmp_path / "d", progress=False)
    assert r["nc"]["files"] == 2 and "inherits the non-commercial licence" in caplog.text
    assert json.loads((tmp_path / "b" / "sources.json").read_text())["non_commercial"] == ["nc"]
    assert "(non-commercial)" in base_data.sources_table(r)


def test_dataset_source_settings_are_checked(tmp_path):
    with pytest.raises(base_data.BaseDataError, match=r"data\.sources\.p\.weigth is not a dataset source setting"):
        base_data.build_base_midi(tmp_path, {"p": {"dataset": "pop909", "weigth": 2}})
    with pytest.raises(base_data.BaseDataError, match=r"data\.sources\.p\.dataset: 'nope' is not in data\.catalog"):
        base_data.build_base_midi(tmp_path, {"p": {"dataset": "nope"}})
    with pytest.raises(base_data.BaseDataError, match=r"data\.datasets: 'bach' is also a source of another kind"):
        base_data.build_base_midi(tmp_path, {"bach": {"composer": "bach"}}, datasets=["bach"])
    with pytest.raises(base_data.BaseDataError, match=r"data\.balance\.cap is not a balance setting"):
        base_data.build_base_midi(tmp_path, {}, balance={"cap": 3})
