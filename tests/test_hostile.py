"""Issue 8's hostile corpus through build_corpus: a seeded folder of 300+ entries (byte flips, truncations,
chunk-length lies, huge deltas, 65,535 tracks, 10^6 notes, non-UTF-8 names, a FIFO, dangling and looping links,
a device, expansion bombs) next to good files. Built once (about 2 s with 2 workers): no exception, every entry
accounted for exactly once, every good file kept, every refusal with its reason, no file expanded far beyond its
size. scripts/bench_hostile.py prints the figures (time, peak memory) for bigger folders."""

from __future__ import annotations

import json
import os
from pathlib import Path

import midi_factory as mf
import pytest

from theremin.codec.midichar import MidiChar
from theremin.data.corpus import MANIFEST_FILE, CorpusReport, build_corpus, printable
from theremin.music.midi import is_midi_path

# a FIFO or a device that blocked the build would hang it: fail instead
pytestmark = pytest.mark.timeout(180)

MAX_CHARS_PER_BYTE = 8  # at the codec's caps a file reaches ~4.5 (size/near_limits.mid); the 349-byte bomb: 10^8


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    root = tmp_path_factory.mktemp("hostile")
    src, out = root / "in", root / "out"
    expect = mf.build_hostile_corpus(src, seed=8)
    report = build_corpus(src, out, MidiChar(), workers=2, progress=False)
    m = json.loads((out / MANIFEST_FILE).read_text(encoding="utf-8"))
    return src, out, report, m, expect


def midi_named_entries(root: Path) -> set[str]:
    """Every MIDI-named entry that is not a real folder: an independent walk (links to folders not followed)."""
    found = set()
    for folder, dirs, files in os.walk(root):
        # os.walk lists a link to a folder among dirs: it is an entry to account for, not a folder to walk
        links = [d for d in dirs if os.path.islink(os.path.join(folder, d))]
        for name in files + links:
            if is_midi_path(name):
                found.add(Path(os.path.relpath(os.path.join(folder, name), root)).as_posix())
    return found


def test_the_folder_is_as_hostile_as_promised(hostile):
    src, _, _, _, expect = hostile
    assert len(expect) >= 300
    assert midi_named_entries(src) == set(expect)
    kinds = {p.split("/")[0] for p in expect}
    assert {"good", "mutants", "time", "size", "broken", "special", "latin1", "unicode"} <= kinds


def test_every_entry_is_accounted_for_exactly_once(hostile):
    src, _, report, m, expect = hostile
    files = [r["path"] for r in m["files"]]
    groups = [set(files), set(m["failed"]), set(m["duplicates"])]
    assert len(files) == len(groups[0])
    assert sum(map(len, groups)) == len(set().union(*groups))  # no entry in two places
    assert set().union(*groups) == midi_named_entries(src)  # nothing lost, nothing invented
    t = m["totals"]["files"]
    assert t["found"] == len(expect) == t["ok"] + t["failed"] + t["duplicates"]
    assert (report.ok, len(report.failed), len(report.duplicates)) == (t["ok"], t["failed"], t["duplicates"])


def test_every_good_file_is_kept(hostile):
    *_, m, expect = hostile
    used = {r["path"] for r in m["files"]}
    good = {p for p, want in expect.items() if want == mf.KEPT}
    assert len(good) >= 45 and good <= used, sorted(good - used)
    for dup, kept in m["duplicates"].items():  # duplicates point at a file that is used or refused
        assert kept in used or kept in m["failed"], dup


def test_refusals_say_why(hostile):
    *_, m, expect = hostile
    for path, want in expect.items():
        if want not in (mf.KEPT, mf.ANY):
            assert path in m["failed"], f"{path} should be refused ({want})"
            assert want in m["failed"][path], (path, m["failed"][path])
    assert all(reason.strip() for reason in m["failed"].values())


def test_names_that_are_not_utf8_are_kept_losslessly_and_printed_readably(hostile):
    src, out, report, m, _ = hostile
    odd = [p for p in [r["path"] for r in m["files"]] + list(m["failed"]) if "\udce9" in p or "\udcff" in p]
    assert {"latin1/caf\udce9.mid", "latin1/\udcff\udcfe.MID", "mixed/\xe9t\udce9.midi",
            "latin1/bad\udce9.mid"} <= set(odd)
    for p in odd:  # the manifest's name leads back to the very file
        assert os.path.exists(os.fsencode(src) + b"/" + os.fsencode(p)), p
    (out / MANIFEST_FILE).read_bytes().decode("utf-8")  # the manifest itself is valid UTF-8
    assert CorpusReport.from_manifest(m, out).failed == report.failed
    text = report.summary(max_failures=10_000)
    text.encode("utf-8")  # printable on any UTF-8 terminal: no lone surrogates
    assert "failed latin1/bad\\xe9.mid: not a MIDI file" in text
    assert printable("caf\udce9.mid") == "caf\\xe9.mid"


def test_no_file_expands_far_beyond_its_size(hostile):
    src, _, _, m, _ = hostile
    ratios = {r["path"]: r["chars"] / (src / r["path"]).stat().st_size for r in m["files"]}
    worst = max(ratios, key=ratios.get)
    assert ratios[worst] <= MAX_CHARS_PER_BYTE, (worst, ratios[worst])
    assert "size/near_limits.mid" in ratios  # the caps refuse the absurd, not the long
    assert "absurd note" in m["failed"]["size/note_bomb.mid"]  # 349 bytes that would be 10^8 chars


def test_a_rerun_over_the_hostile_folder_is_reused(hostile):
    src, out, report, *_ = hostile
    again = build_corpus(src, out, MidiChar(), workers=2, progress=False)
    assert again.reused and again.failed == report.failed and again.ok == report.ok
