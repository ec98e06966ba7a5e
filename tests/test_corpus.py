"""theremin.data.corpus / theremin-prep: walking, de-duplication, split by file, reuse, augmentation, and a folder
of broken files next to good ones (every good file kept, every bad one used correctly or reported)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import midi_factory as mf
import pytest

from theremin.codec.midichar import MidiChar
from theremin.data.corpus import (
    MANIFEST_FILE,
    TRAIN_FILE,
    VAL_FILE,
    CorpusError,
    build_corpus,
    find_midi_files,
    hash_fraction,
)

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def codec() -> MidiChar:
    return MidiChar()


def build(src: Path, out: Path, codec=None, workers: int = 1, **kw):
    return build_corpus(src, out, codec, workers, progress=False, **kw)


def lines(path: Path) -> list[str]:
    text = path.read_text(encoding="utf-8")
    assert text == "" or text.endswith("\n")
    return text.splitlines()


def manifest(out: Path) -> dict:
    return json.loads((out / MANIFEST_FILE).read_text(encoding="utf-8"))


def outputs_state(out: Path) -> dict[str, tuple[int, bytes]]:
    return {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in sorted(out.iterdir())}


def distinct_files(folder: Path, seeds) -> list[Path]:
    return [mf.make_midi(folder / f"piece{s:03d}.mid", mf.random_notes(s, 24)) for s in seeds]


# ------------------------------------------------------------------------------------ the folder of bad input

GRID_TICKS = 480 // 12  # one grid step of the default codec at 480 ticks per beat


def build_bad_set(folder: Path) -> dict[str, str | int]:
    """Bad or odd files next to each other; value: the failure reason's key phrase, or the notes expected."""
    folder.mkdir(parents=True, exist_ok=True)
    expect: dict[str, str | int] = {}

    (folder / "not_midi.mid").write_text("MIDI? no, a shopping list\n")
    expect["not_midi.mid"] = "not a MIDI file"

    mf.truncate(mf.make_midi(folder / "truncated.mid", mf.random_notes(7, 64)))
    expect["truncated.mid"] = "unreadable MIDI"

    (folder / "empty.mid").write_bytes(b"")
    expect["empty.mid"] = "empty file"

    # zero-length notes: each note-on right before its own note-off on the same tick
    mf.write_smf(folder / "zero_length.mid", [mf.notes_to_events([(i * 480, i * 480, 60 + i, 80) for i in range(10)])])
    expect["zero_length.mid"] = 10

    # three overlapping notes of one pitch (starts 0, 240, 480) plus a scale
    mf.make_midi(folder / "overlap.mid", [(0, 960, 60, 80), (480, 1440, 60, 80), (240, 2000, 60, 50), *mf.scale(70)])
    expect["overlap.mid"] = 11

    # note-offs without note-ons before a real scale: ignored; a file of only those has no notes
    orphans = [(0, mf.note_off(50)), (10, mf.note_off(51)), (0, mf.note_off(52, 64))]
    mf.write_smf(folder / "orphan_offs.mid", [orphans + mf.notes_to_events(mf.scale())])
    expect["orphan_offs.mid"] = 8
    mf.write_smf(folder / "only_offs.mid", [[(5, mf.note_off(p)) for p in range(60, 72)]])
    expect["only_offs.mid"] = "no notes"

    # a note 2**27 ticks (1.4 million beats) after the others: refused as an absurd silence
    scale96 = mf.notes_to_events(mf.scale(step=96))[:-1]
    mf.write_smf(folder / "absurd_gap.mid", [[*scale96, (2**27, mf.note_on(60)), (96, mf.note_off(60))]], tpb=96)
    expect["absurd_gap.mid"] = "absurd silence"
    # the same delta on the end-of-track only: no silence between notes, the file is fine
    mf.write_smf(folder / "absurd_tail.mid", [[*scale96, (2**27, mf.END_OF_TRACK)]], tpb=96)
    expect["absurd_tail.mid"] = 8

    # 2000 tracks of one note each (distinct onsets): all of them must arrive
    mf.make_midi(folder / "many_tracks.mid", [],
                 extra_tracks=[[(i * 120, i * 120 + 120, 40 + i % 50, 80)] for i in range(2000)])
    expect["many_tracks.mid"] = 2000

    mf.make_midi(folder / "drums_only.mid", [], drums=mf.drum_pattern(4))
    expect["drums_only.mid"] = 48  # a drum part is a part (issue 18): 4 bars of kick/snare and hi-hat

    mf.make_midi(folder / "too_few.mid", mf.scale()[:3])
    expect["too_few.mid"] = "too few notes"

    mf.write_smf(folder / "type2.mid", [mf.notes_to_events(mf.scale()), mf.notes_to_events(mf.scale(48))], fmt=2)
    expect["type2.mid"] = "MIDI type 2"
    return expect


@pytest.fixture(scope="module")
def mixed(tmp_path_factory, codec):
    """One folder of good and bad files, built once with workers=1: (folder, out, report, expectations)."""
    src = tmp_path_factory.mktemp("mixed")
    good = mf.build_good_set(src / "good")
    expect = {f"good/{p.name}": -1 for p in good.values()}  # -1: any note count
    expect.update({f"bad/{k}": v for k, v in build_bad_set(src / "bad").items()})
    out = tmp_path_factory.mktemp("mixed_out")
    return src, out, build(src, out, codec, workers=1), expect


def test_bad_files_next_to_good_ones(mixed):
    _, out, report, expect = mixed
    m = manifest(out)
    ok = {row["path"]: row for row in m["files"]}
    for path, want in expect.items():
        if isinstance(want, str):
            assert path in report.failed, f"{path} should fail with {want!r}"
            assert want in report.failed[path], (path, report.failed[path])
        else:
            assert path in ok, f"{path} should be used, failed with {report.failed.get(path)!r}"
            if want >= 0:
                assert ok[path]["notes"] == want, path
    assert report.ok == sum(not isinstance(v, str) for v in expect.values())
    assert set(report.failed) == {p for p, v in expect.items() if isinstance(v, str)}
    assert report.notes == sum(r["notes"] for r in m["files"])
    assert "failed bad/" in report.summary()


def test_bad_files_are_encoded_correctly(mixed, codec):
    src, *_ = mixed
    bad = src / "bad"
    # zero-length notes keep their onset and get the shortest duration (one grid step)
    zero = codec.decode(codec.encode_file(bad / "zero_length.mid"))
    want = [(i * 480, GRID_TICKS, 60 + i) for i in range(10)]
    assert [(n.start, n.end - n.start, n.pitch) for n in zero.notes] == want
    # orphan note-offs add nothing
    orphans = codec.decode(codec.encode_file(bad / "orphan_offs.mid"))
    assert [n.pitch for n in orphans.notes] == [60 + i for i in mf.MAJOR]
    # overlapping notes of one pitch: each onset kept
    overlap = codec.decode(codec.encode_file(bad / "overlap.mid"))
    assert sorted(n.start for n in overlap.notes if n.pitch == 60) == [0, 240, 480]
    # 2000 tracks: every note at its place, on the grid
    many = codec.decode(codec.encode_file(bad / "many_tracks.mid"))
    want = [(i * 120, i * 120 + 120, 40 + i % 50) for i in range(2000)]
    assert [(n.start, n.end, n.pitch) for n in many.notes] == want


def test_lines_round_trip_through_the_codec(mixed, codec, tmp_path):
    _, out, report, _ = mixed
    corpus = lines(out / TRAIN_FILE) + lines(out / VAL_FILE)
    assert len(corpus) == report.ok
    for i, line in enumerate(corpus):
        assert codec.encode(codec.decode(line)) == line
        # and through a MIDI file on disk, as a generated piece would go
        assert codec.encode_file(codec.decode_to_file(line, tmp_path / f"{i}.mid")) == line


def test_parallel_equals_serial(mixed, tmp_path):
    src, out, _, _ = mixed
    par = build(src, tmp_path / "par", workers=2)
    assert not par.reused
    for name in (TRAIN_FILE, VAL_FILE):
        assert (tmp_path / "par" / name).read_bytes() == (out / name).read_bytes(), name
    par_m, m = manifest(tmp_path / "par"), manifest(out)
    assert par_m.pop("input_dir_relative") != m.pop("input_dir_relative")  # the one field that names out_dir
    assert par_m == m


def test_shared_fixtures_write_what_they_say(make_midi, write_smf, midi_dir):
    from theremin.music.midi import read_midi

    p = make_midi("t/tempo.mid", mf.scale(48), tempos=[(0, 100.0), (960, 150.0)], drums=mf.drum_pattern(1),
                  extra_tracks=[{"notes": mf.chords(), "program": 40}])
    piece = read_midi(p)
    assert piece.tempos == [(0, 600_000), (960, 400_000)]
    assert len(piece.notes) == 8 + 12 + 12  # every part: melody, drums, the extra track
    assert [(p.program, p.is_drum) for p in piece.parts] == [(0, False), (0, True), (40, False)]
    assert len(read_midi(p, instruments=False).notes) == 8 + 12  # the old reading: drums dropped, parts merged
    raw = write_smf("t/raw.mid", [mf.notes_to_events(mf.scale(48))], tpb=96, fmt=0)
    assert raw.read_bytes()[8:14] == b"\x00\x00\x00\x01\x00\x60" and len(read_midi(raw).notes) == 8
    assert sorted(f.name for f in midi_dir.iterdir()) == ["band.mid", "chords.mid", "scale.mid", "tempo.mid"]


# ------------------------------------------------------------------------------------ walking and de-duplication


def test_walks_subfolders_with_any_case_suffix(tmp_path, codec):
    src = tmp_path / "in"
    mf.make_midi(src / "Top.MID", mf.scale(60))
    mf.make_midi(src / "sub" / "b.Midi", mf.scale(62))
    mf.make_midi(src / "sub" / "deeper" / "c.kar", mf.scale(64))
    mf.make_midi(src / "z.midi", mf.scale(65))
    (src / "notes.txt").write_text("not music")
    (src / "sub" / "song.mp3").write_bytes(b"ID3")
    shutil.copy(src / "Top.MID", src / "sub" / "Top.MID.bak")  # a MIDI file by content, not by name
    (src / "sub" / "folder.mid").mkdir()  # a folder named like a MIDI file is walked, not read

    entries, _ = find_midi_files(src)
    assert [e.rel for e in entries] == ["Top.MID", "sub/b.Midi", "sub/deeper/c.kar", "z.midi"]
    report = build(src, tmp_path / "out", codec)
    assert report.ok == 4 and not report.failed
    assert [r["path"] for r in manifest(tmp_path / "out")["files"]] == [e.rel for e in entries]


def test_identical_content_counts_once(tmp_path, codec):
    src = tmp_path / "in"
    first = mf.make_midi(src / "a" / "x.mid", mf.random_notes(1))
    (src / "b").mkdir()
    shutil.copy(first, src / "b" / "x.mid")
    shutil.copy(first, src / "c.MID")
    mf.make_midi(src / "d.mid", mf.random_notes(2))
    (src / "e.mid").write_text("junk")
    (src / "f.mid").write_text("junk")  # a duplicate of a failed file points at it
    report = build(src, tmp_path / "out", codec)
    assert report.ok == 2
    assert report.duplicates == {"b/x.mid": "a/x.mid", "c.MID": "a/x.mid", "f.mid": "e.mid"}
    assert list(report.failed) == ["e.mid"]
    m = manifest(tmp_path / "out")
    assert m["totals"]["files"] == {"found": 6, "ok": 2, "failed": 1, "duplicates": 3}
    assert len(lines(tmp_path / "out" / TRAIN_FILE)) + len(lines(tmp_path / "out" / VAL_FILE)) == 2


# ------------------------------------------------------------------------------------ split


def test_split_is_by_file_hash_and_stable(tmp_path, codec):
    src = tmp_path / "in"
    files = distinct_files(src, range(30))
    r1 = build(src, tmp_path / "o1", codec, val_fraction=0.3)
    m1 = manifest(tmp_path / "o1")
    split1 = {row["path"]: row["split"] for row in m1["files"]}
    for f in files:  # the rule, from the bytes alone
        sha = hashlib.sha256(f.read_bytes()).hexdigest()
        assert split1[f.name] == ("val" if hash_fraction(sha) < 0.3 else "train")
    assert 0 < r1.val_pieces < 30 and r1.train_pieces + r1.val_pieces == 30
    # each val line is exactly one val file's text, in path order
    val_texts = [codec.encode_file(src / p, min_notes=8) for p, s in split1.items() if s == "val"]
    assert lines(tmp_path / "o1" / VAL_FILE) == val_texts

    # same input elsewhere: same split; more files: the old ones stay where they were
    build(src, tmp_path / "o2", codec, val_fraction=0.3)
    assert (tmp_path / "o2" / VAL_FILE).read_bytes() == (tmp_path / "o1" / VAL_FILE).read_bytes()
    distinct_files(src, range(100, 120))
    build(src, tmp_path / "o3", codec, val_fraction=0.3)
    split3 = {row["path"]: row["split"] for row in manifest(tmp_path / "o3")["files"]}
    assert len(split3) == 50
    assert {p: split3[p] for p in split1} == split1


def test_val_never_empty_with_two_files(tmp_path, codec):
    src = tmp_path / "in"
    files = distinct_files(src, range(2))
    report = build(src, tmp_path / "out", codec, val_fraction=1e-12, transpose=(-1, 1))
    shas = {f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in files}
    smallest = min(shas, key=lambda p: int(shas[p], 16))
    assert (report.train_pieces, report.val_pieces, report.train_lines) == (1, 1, 3)
    assert [m["path"] for m in report.split_moves] == [smallest] and report.split_moves[0]["to"] == "val"
    assert lines(tmp_path / "out" / VAL_FILE) == [codec.encode_file(src / smallest)]
    other = next(p for p in shas if p != smallest)
    text = codec.encode_file(src / other)
    assert lines(tmp_path / "out" / TRAIN_FILE) == [text, codec.transpose(text, -1), codec.transpose(text, 1)]
    assert "moved" in report.summary()
    m = manifest(tmp_path / "out")
    assert m["split_moves"] == report.split_moves
    assert m["totals"]["train"]["lines"] == 3 and m["totals"]["val"]["lines"] == 1


def test_train_never_empty(tmp_path, codec):
    src = tmp_path / "in"
    distinct_files(src, range(2))
    report = build(src, tmp_path / "out", codec, val_fraction=0.999999999, transpose=(1, 2))
    assert (report.train_pieces, report.val_pieces, report.train_lines) == (1, 1, 3)
    assert report.split_moves[0]["to"] == "train"
    assert len(lines(tmp_path / "out" / TRAIN_FILE)) == 3 and len(lines(tmp_path / "out" / VAL_FILE)) == 1
    # one file: train, whatever val_fraction says
    one = tmp_path / "one"
    distinct_files(one, [5])
    r1 = build(one, tmp_path / "out1", codec, val_fraction=0.999999999)
    assert (r1.train_pieces, r1.val_pieces) == (1, 0)
    assert lines(tmp_path / "out1" / VAL_FILE) == []


# ------------------------------------------------------------------------------------ writes and reuse


def test_rerun_is_a_noop_and_changes_rebuild(tmp_path, codec):
    src, out = tmp_path / "in", tmp_path / "out"
    distinct_files(src, range(6))
    first = build(src, out, codec)
    before = outputs_state(out)
    assert set(before) == {TRAIN_FILE, VAL_FILE, MANIFEST_FILE}  # no temp files left behind
    again = build(src, out, codec, workers=2)  # workers don't change the result, so they don't count
    assert again.reused and not first.reused
    assert outputs_state(out) == before
    assert again.summary().splitlines()[0] == first.summary().splitlines()[0]
    assert "reused" in again.summary() and "reused" not in first.summary()
    for attr in ("ok", "notes", "chars", "distinct_chars", "train_pieces", "val_pieces", "failed"):
        assert getattr(again, attr) == getattr(first, attr), attr

    assert not build(src, out, codec, min_notes=9).reused  # settings changed
    assert not build(src, out, MidiChar(grid=24)).reused  # codec changed
    build(src, out, codec)
    os.utime(src / "piece000.mid", ns=(1, 1))  # a file touched
    assert not build(src, out, codec).reused
    (out / VAL_FILE).write_text("edited by hand\n")  # an output that no longer matches the manifest
    assert not build(src, out, codec).reused
    (out / MANIFEST_FILE).write_text("{broken")
    assert not build(src, out, codec).reused
    assert build(src, out, codec).reused


class _Interrupting(MidiChar):
    """Stops the build at the encoding of a piece marked by a note of pitch 3, as Ctrl-C would."""

    def encode(self, piece):
        if any(n.pitch == 3 for n in piece.notes):
            raise KeyboardInterrupt
        return super().encode(piece)


def test_interrupted_build_leaves_previous_outputs(tmp_path, codec):
    src, out = tmp_path / "in", tmp_path / "out"
    distinct_files(src, range(6))
    build(src, out, codec)
    before = outputs_state(out)
    mf.make_midi(src / "piece999.mid", [*mf.random_notes(999), (0, 480, 3, 80)])
    with pytest.raises(KeyboardInterrupt):
        build(src, out, _Interrupting())
    assert outputs_state(out) == before


class _Buggy(MidiChar):
    """A codec that crashes on a piece marked by a note of pitch 1 (an exception) and kills its process on one
    marked by pitch 2."""

    def encode(self, piece):
        pitches = {n.pitch for n in piece.notes}
        if 1 in pitches:
            raise RuntimeError("boom")
        if 2 in pitches:
            os._exit(3)  # a hard crash: the worker process dies
        return super().encode(piece)


@pytest.mark.parametrize("n_files", [8, 40])  # one file per call, and several (a crash amid a chunk)
def test_any_exception_or_worker_death_is_reported_per_file(tmp_path, n_files, codec):
    src = tmp_path / "in"
    distinct_files(src, range(n_files))
    mf.make_midi(src / "piece001.mid", [*mf.random_notes(1, 24), (0, 480, 1, 80)])
    mf.make_midi(src / "piece004.mid", [*mf.random_notes(4, 24), (0, 480, 2, 80)])
    report = build(src, tmp_path / "out", _Buggy(), workers=2)
    assert report.failed.keys() == {"piece001.mid", "piece004.mid"}
    assert report.failed["piece001.mid"] == "unexpected RuntimeError: boom"
    assert "worker process died" in report.failed["piece004.mid"]
    assert report.ok == n_files - 2
    # every other file is in the corpus, as a build without the bad ones makes it
    for bad in ("piece001.mid", "piece004.mid"):
        (src / bad).unlink()
    build(src, tmp_path / "clean", codec)
    for name in (TRAIN_FILE, VAL_FILE):
        assert (tmp_path / "out" / name).read_bytes() == (tmp_path / "clean" / name).read_bytes()


# ------------------------------------------------------------------------------------ augmentation


def test_transposition_only_in_train(tmp_path, codec):
    src = tmp_path / "in"
    distinct_files(src, range(20))
    report = build(src, tmp_path / "out", codec, val_fraction=0.3, transpose=(-2, 2))
    m = manifest(tmp_path / "out")
    train, val = lines(tmp_path / "out" / TRAIN_FILE), lines(tmp_path / "out" / VAL_FILE)
    assert len(val) == report.val_pieces == sum(r["split"] == "val" for r in m["files"]) > 0
    assert len(train) == report.train_lines == sum(r["lines"] for r in m["files"] if r["split"] == "train")
    i = 0
    for row in m["files"]:
        text = codec.encode_file(src / row["path"], min_notes=8)
        if row["split"] == "val":
            assert text in val and row["lines"] == 1
            continue
        want = [text] + [t for t in (codec.transpose(text, k) for k in (-2, -1, 1, 2)) if t is not None]
        assert train[i: i + len(want)] == want and row["lines"] == len(want)
        i += len(want)
    assert i == len(train)
    assert report.train_notes == sum(r["notes"] * r["lines"] for r in m["files"] if r["split"] == "train")
    assert report.notes == sum(r["notes"] for r in m["files"])  # before augmentation


def test_transposition_skips_keys_that_leave_the_midi_range(tmp_path, codec):
    src = tmp_path / "in"
    distinct_files(src, range(3))
    mf.make_midi(src / "high.mid", mf.scale(115))  # reaches 127: no transposition up is possible
    report = build(src, tmp_path / "out", codec, val_fraction=0.0, transpose=(-1, 2))
    row = next(r for r in manifest(tmp_path / "out")["files"] if r["path"] == "high.mid")
    assert row["lines"] == 2 and row["transpose_skipped"] == 2
    assert report.transpose_skipped == 2 and report.train_lines == 3 * 4 + 2


# ------------------------------------------------------------------------------------ nothing usable


def test_no_midi_files_raises_with_a_manifest(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    (src / "readme.txt").write_text("no music here")
    with pytest.raises(ValueError, match=r"no MIDI files found") as e:
        build(src, tmp_path / "out")
    assert str(src) in str(e.value)
    assert manifest(tmp_path / "out")["totals"]["files"]["found"] == 0


def test_nothing_usable_raises_and_clears_an_old_corpus(tmp_path, codec):
    src, out = tmp_path / "in", tmp_path / "out"
    distinct_files(src, range(3))
    build(src, out, codec)
    for f in src.iterdir():
        f.unlink()
    (src / "a.mid").write_bytes(b"")
    (src / "b.mid").write_text("nope")
    with pytest.raises(ValueError, match="none of the 2 MIDI files is usable") as e:
        build(src, out, codec)
    assert "a.mid: empty file" in str(e.value)
    assert not (out / TRAIN_FILE).exists() and not (out / VAL_FILE).exists()
    assert manifest(out)["failed"].keys() == {"a.mid", "b.mid"}


def test_missing_input_folder(tmp_path):
    with pytest.raises(CorpusError, match=r"data.input_dir: .*nope is not a folder"):
        build(tmp_path / "nope", tmp_path / "out")


# ------------------------------------------------------------------------------------ theremin-prep


def compose_prep(overrides: list[str], app: str = "prep"):
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose(config_name=app, overrides=overrides)


def test_prep_builds_from_config(midi_dir, tmp_path):
    from theremin.apps.prep import prep

    cfg = compose_prep(["data=folder", f"data.input_dir={midi_dir}", f"paths.data_dir={tmp_path / 'data'}",
                        "workers=1", "progress=false", "data.transpose=[-1,1]", "data.val_fraction=0.0"])
    report = prep(cfg)
    assert report.out_dir == (tmp_path / "data" / "corpus" / "mine").resolve()
    assert report.ok == 4 and report.train_lines == 12
    assert manifest(report.out_dir)["codec"]["config"]["grid"] == 12


def test_prep_builds_the_demo_folder_only_when_missing(tmp_path, monkeypatch):
    import theremin.data.corpus
    from theremin.apps.prep import prep

    calls = []

    def fake_demo(out_dir, composer="bach", **kw):
        calls.append(composer)
        mf.build_good_set(Path(out_dir))
        return Path(out_dir)

    monkeypatch.setattr(theremin.data.corpus, "build_demo_midi", fake_demo)
    cfg = compose_prep([f"paths.data_dir={tmp_path}", "workers=1", "progress=false"])
    assert prep(cfg).out_dir == (tmp_path / "corpus" / "bach").resolve()
    assert prep(cfg).reused and calls == ["bach"]
    for other in ([f"data.input_dir={tmp_path / 'missing'}"], ["data=folder", f"data.input_dir={tmp_path / 'gone'}"]):
        with pytest.raises(CorpusError, match="is not a folder"):
            prep(compose_prep([f"paths.data_dir={tmp_path}", "data.name=other", *other]))
    assert calls == ["bach"]


def test_one_corpus_definition_for_prep_tokenize_and_train(midi_dir, tmp_path):
    """Issue 13: the three apps compose the same corpus (folder, settings, codec, tokenizer) from the same
    overrides, and a corpus prep built is what training reuses (nothing rebuilt)."""
    from theremin.apps.prep import prep
    from theremin.config import plain
    from theremin.data.datamodule import MidiDataModule

    base = ["data=folder", f"data.input_dir={midi_dir}", f"paths.data_dir={tmp_path}"]
    cfgs = {app: compose_prep(base, app) for app in ("prep", "tokenize", "train")}
    keys = ("name", "input_dir", "corpus_dir", "tokenizer_cache", "val_fraction", "transpose", "min_notes",
            "max_notes", "demo")
    want = {k: plain(cfgs["train"].data[k]) for k in keys}
    assert want["transpose"] == [-5, 6]
    for app, cfg in cfgs.items():
        assert {k: plain(cfg.data[k]) for k in keys} == want, app
        assert plain(cfg.tokenizer) == plain(cfgs["train"].tokenizer), app
        assert plain(cfg.codec) == plain(cfgs["train"].codec), app
    assert cfgs["tokenize"].tokenizer.vocab_size == 4096

    built = prep(compose_prep([*base, "workers=1", "progress=false"]))
    assert not built.reused and built.train_lines > built.train_pieces  # augmented, as training wants
    before = outputs_state(built.out_dir)
    dm_cfg = {k: v for k, v in plain(cfgs["train"].data).items() if k not in ("_target_", "seed")}
    dm = MidiDataModule(**dm_cfg, tokenizer=plain(cfgs["train"].tokenizer), codec=plain(cfgs["train"].codec))
    dm._build_corpus(MidiChar(**{k: v for k, v in plain(cfgs["train"].codec).items() if k != "_target_"}))
    assert outputs_state(built.out_dir) == before  # reused, not rebuilt


def test_prep_command_line(midi_dir, tmp_path):
    exe = Path(sys.executable).parent / "theremin-prep"  # the console script, as installed
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "theremin.apps.prep"]
    base = [*cmd, f"paths.log_dir={tmp_path / 'logs'}", f"data.corpus_dir={tmp_path / 'corpus'}", "workers=1",
            "data=folder"]
    ok = subprocess.run([*base, f"data.input_dir={midi_dir}"], capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0, ok.stderr
    assert "4 files used" in ok.stdout and (tmp_path / "corpus" / TRAIN_FILE).exists()
    assert list((tmp_path / "logs" / "prep" / "runs").iterdir())  # Hydra's run folder, under paths.log_dir
    bad = subprocess.run([*base, f"data.input_dir={tmp_path / 'nope'}"], capture_output=True, text=True,
                         timeout=120)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert bad.stderr.strip().splitlines() == [f"theremin-prep: error: data.input_dir: {tmp_path / 'nope'} is not "
                                               "a folder (not found)"]
    unset = subprocess.run(base, capture_output=True, text=True, timeout=120)  # data=folder needs data.input_dir
    assert unset.returncode == 2 and "Traceback" not in unset.stderr
    assert "data.input_dir is required" in unset.stderr


def test_prep_short_forms_build_the_same_corpus(midi_dir, tmp_path):
    """theremin-prep's first spelling (input_dir=, name=, transpose=) keeps working: the same corpus as data.*."""
    cmd = [sys.executable, "-m", "theremin.apps.prep", f"paths.data_dir={tmp_path / 'data'}", "workers=1",
           "progress=false", "hydra.output_subdir=null", f"paths.log_dir={tmp_path / 'logs'}"]
    short = subprocess.run([*cmd, f"input_dir={midi_dir}", "name=mine", "transpose=null"], capture_output=True,
                           text=True, timeout=120)
    assert short.returncode == 0, short.stderr
    corpus = tmp_path / "data" / "corpus" / "mine"
    first = (corpus / TRAIN_FILE).read_bytes()
    assert first and "4 files used" in short.stdout
    long = subprocess.run([*cmd, "data=folder", f"data.input_dir={midi_dir}", "data.name=mine",
                           "data.transpose=null"], capture_output=True, text=True, timeout=120)
    assert long.returncode == 0, long.stderr
    assert (corpus / TRAIN_FILE).read_bytes() == first


# ------------------------------------------------------------------------------------ hostile input (issue 8)


@pytest.mark.timeout(60)  # a read that blocks would hang here: fail instead
def test_reading_never_blocks_on_a_fifo_or_a_device(tmp_path):
    from theremin.music.midi import MidiError, read_midi

    os.mkfifo(tmp_path / "fifo.mid")  # nobody writes to it: an open() for reading would wait forever
    os.symlink("/dev/zero", tmp_path / "zero.mid")  # a read would never end
    for name, kind in (("fifo.mid", "FIFO"), ("zero.mid", "character device")):
        with pytest.raises(MidiError, match=f"not a regular file \\({kind}"):
            read_midi(tmp_path / name)
    mf.make_midi(tmp_path / "ok.mid", mf.scale())
    report = build(tmp_path, tmp_path / "out", workers=1)  # in this process, as well as in workers (hostile)
    assert report.ok == 1 and set(report.failed) == {"fifo.mid", "zero.mid"}


KILLED_BUILD = """
import os, sys, time
from pathlib import Path
from theremin.data.corpus import build_corpus
from theremin.codec.midichar import MidiChar

class Slow(MidiChar):  # each worker says it is busy, then takes its time
    def encode(self, piece):
        Path(sys.argv[3], str(os.getpid())).touch()
        time.sleep(60)
        return super().encode(piece)

build_corpus(sys.argv[1], sys.argv[2], Slow(), workers=2, progress=False)
"""


def _alive(pid: int) -> bool:
    """A process that runs (a zombie waiting for a reaper has ended)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def _wait(predicate, seconds: float) -> bool:
    import time

    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.1)
    return predicate()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.parametrize("sig", ["SIGKILL", "SIGTERM"])
def test_a_killed_build_takes_its_workers_along_and_the_next_cleans_up(tmp_path, sig, codec):
    import signal

    src, out, busy = tmp_path / "in", tmp_path / "out", tmp_path / "busy"
    busy.mkdir()
    distinct_files(src, range(8))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-c", KILLED_BUILD, str(src), str(out), str(busy)], env=env)
    try:
        assert _wait(lambda: len(list(busy.iterdir())) == 2, 60), "the workers never started"
        workers = [int(p.name) for p in busy.iterdir()]
        proc.send_signal(getattr(signal, sig))
        proc.wait(timeout=30)
        assert _wait(lambda: not any(map(_alive, workers)), 10), f"orphan workers after {sig}: {workers}"
    finally:
        proc.kill()
        proc.wait()
    left = [p.name for p in out.iterdir()]
    assert left and all(n.startswith(".") and n.endswith(".tmp") for n in left)  # the killed build's temp files
    report = build(src, out, codec)
    assert report.ok == 8
    assert sorted(p.name for p in out.iterdir()) == [MANIFEST_FILE, TRAIN_FILE, VAL_FILE]


def test_a_full_disk_is_one_clear_message_and_changes_nothing(tmp_path, codec, monkeypatch):
    import errno

    import theremin.data.corpus

    src, out = tmp_path / "in", tmp_path / "out"
    distinct_files(src, range(12))
    build(src, out, codec)
    before = outputs_state(out)
    mf.make_midi(src / "new.mid", mf.random_notes(99))

    class FillsUp:  # a file on a disk that fills after 1000 characters
        def __init__(self, f):
            self.f, self.n = f, 0

        def write(self, text):
            self.n += len(text)
            if self.n > 1000:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return self.f.write(text)

        def close(self):
            self.f.close()

    monkeypatch.setattr(theremin.data.corpus, "open", lambda *a, **k: FillsUp(open(*a, **k)), raising=False)  # noqa: SIM115
    with pytest.raises(CorpusError) as e:
        build(src, out, codec, transpose=(-5, 6))
    assert str(e.value).startswith(f"{out / TRAIN_FILE}: cannot write the corpus: No space left on device")
    assert "is as it was" in str(e.value)
    assert outputs_state(out) == before  # the old corpus whole, no temp file left


def test_prep_command_line_on_a_full_disk(tmp_path):
    """The console script, when a write fails for real (a file-size limit: EFBIG, as ENOSPC would): one line, exit 2,
    no traceback, no temp files, the previous corpus kept."""
    import resource
    import signal

    src, out = tmp_path / "in", tmp_path / "corpus"
    distinct_files(src, range(30))
    base = [sys.executable, "-m", "theremin.apps.prep", "data=folder", f"data.input_dir={src}",
            f"data.corpus_dir={out}", "workers=1", "progress=false", "hydra.output_subdir=null",
            f"paths.log_dir={tmp_path / 'logs'}"]
    first = subprocess.run([*base, "data.transpose=null"], capture_output=True, text=True, timeout=120)
    assert first.returncode == 0, first.stderr
    before = outputs_state(out)

    def limit():  # child only: files may not grow past 16 kB; the signal becomes an EFBIG error
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (16_000, 16_000))

    full = subprocess.run(base, capture_output=True, text=True, timeout=120, preexec_fn=limit)  # with transpositions
    assert full.returncode == 2 and "Traceback" not in full.stderr, full.stderr
    (line,) = full.stderr.strip().splitlines()
    assert line.startswith(f"theremin-prep: error: {out / TRAIN_FILE}: cannot write the corpus: File too large"), line
    assert outputs_state(out) == before


def test_outputs_follow_the_umask(tmp_path, codec):
    src = tmp_path / "in"
    distinct_files(src, range(2))
    old = os.umask(0o027)
    try:  # val_fraction ~0 moves a file into val: the rewritten train.txt too
        report = build(src, tmp_path / "out", codec, val_fraction=1e-12)
    finally:
        os.umask(old)
    assert report.split_moves
    for name in (TRAIN_FILE, VAL_FILE, MANIFEST_FILE):
        assert (tmp_path / "out" / name).stat().st_mode & 0o777 == 0o640, name


# ------------------------------------------------------------------------------------ nothing a user built is lost


def test_a_corpus_of_another_input_folder_is_never_overwritten(tmp_path, codec):
    a, b, out = tmp_path / "a", tmp_path / "b", tmp_path / "corpus" / "mine"
    distinct_files(a, range(4))
    distinct_files(b, range(10, 13))
    build(a, out, codec)
    before = outputs_state(out)
    with pytest.raises(CorpusError) as e:
        build(b, out, codec)
    msg = str(e.value)
    assert str(out) in msg and str(a) in msg and str(b) in msg and "data.name=" in msg
    assert outputs_state(out) == before
    # the same folder with a file changed is the same corpus, rebuilt
    mf.make_midi(a / "piece000.mid", mf.random_notes(77))
    assert build(a, out, codec).ok == 4
    # the data folder moved as a whole (input and corpus together): still the same input
    moved = tmp_path.parent / f"{tmp_path.name}-moved"
    shutil.move(tmp_path, moved)
    try:
        assert build(moved / "a", moved / "corpus" / "mine", codec).ok == 4
    finally:
        shutil.move(moved, tmp_path)


def test_a_corpus_theremin_did_not_build_is_never_overwritten(tmp_path, codec):
    src, out = tmp_path / "in", tmp_path / "hand_made"
    distinct_files(src, range(3))
    out.mkdir()
    (out / TRAIN_FILE).write_text("my own corpus\n")
    with pytest.raises(CorpusError, match=r"without manifest\.json"):
        build(src, out, codec)
    assert (out / TRAIN_FILE).read_text() == "my own corpus\n"


def test_train_with_data_folder_requires_data_input_dir(tmp_path):
    """Issue 11: `theremin-train data=folder` without data.input_dir trained on Bach and replaced the user's corpus."""
    from hydra.utils import instantiate
    from omegaconf.errors import MissingMandatoryValue

    from theremin.errors import user_error

    cfg = compose_prep(["data=folder", f"paths.data_dir={tmp_path}"], "train")
    with pytest.raises(MissingMandatoryValue) as e:
        instantiate(cfg.data, tokenizer={}, codec={}, _recursive_=False)
    assert str(user_error(e.value)).startswith("data.input_dir is required")
    assert not list(tmp_path.iterdir())  # nothing built, nothing generated


def test_one_build_of_a_corpus_folder_at_a_time(tmp_path, codec, capfd):
    """The build that removes stale temp files holds the folder's lock: a second build waits for the first."""
    import fcntl
    import threading

    src, out = tmp_path / "in", tmp_path / "out"
    distinct_files(src, range(3))
    out.mkdir()
    fd = os.open(out, os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX)  # another build, running
    done = []
    t = threading.Thread(target=lambda: done.append(build(src, out, codec)))
    t.start()
    t.join(timeout=2)
    assert t.is_alive() and not (out / MANIFEST_FILE).exists()
    os.close(fd)  # the other build ends
    t.join(timeout=60)
    assert done and done[0].ok == 3
    assert "waiting for another build of" in capfd.readouterr().err


def test_tokenize_command_line_without_a_corpus(tmp_path):
    r = subprocess.run([sys.executable, "-m", "theremin.apps.tokenize", f"data.corpus_dir={tmp_path}",
                        "hydra.output_subdir=null", f"paths.log_dir={tmp_path / 'logs'}"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    (line,) = r.stderr.strip().splitlines()
    assert line.startswith(f"theremin-tokenize: error: {tmp_path / 'train.txt'} is missing or empty") and \
        "theremin-prep" in line


def test_demo_data_command_line_answers_a_bad_setting_in_one_line(tmp_path):
    r = subprocess.run([sys.executable, "-c", "from theremin.apps.demo_data import main; main()",
                        "--composer", "nobody", "--out", str(tmp_path / "x")],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    assert r.stderr.strip() == "theremin-demo-data: error: music21's corpus has no works for composer 'nobody'"


def test_write_midi_refuses_a_gap_a_midi_file_cannot_store(tmp_path):
    """A delta time over 2^28 - 1 ticks used to be written anyway and read back as a corrupt file."""
    from theremin.music.midi import MAX_DELTA_TICKS, MidiError, Note, Piece, read_midi, write_midi

    ok = Piece(notes=[Note(0, 10, 60, 80), Note(MAX_DELTA_TICKS, MAX_DELTA_TICKS + 10, 62, 80)], ticks_per_beat=1)
    assert [n.pitch for n in read_midi(write_midi(ok, tmp_path / "ok.mid")).notes] == [60, 62]
    far = Piece(notes=[Note(0, 10, 60, 80), Note(MAX_DELTA_TICKS + 11, MAX_DELTA_TICKS + 20, 62, 80)],
                ticks_per_beat=1)
    with pytest.raises(MidiError, match="cannot write a gap"):
        write_midi(far, tmp_path / "far.mid")
    assert not (tmp_path / "far.mid").exists()


def test_the_umask_is_read_without_changing_it(monkeypatch):
    """Reading the umask must not set it, even briefly: a server thread could create a world-writable file."""
    from theremin.fsio import current_umask

    old = os.umask(0o027)
    try:
        calls = []
        real = os.umask
        monkeypatch.setattr(os, "umask", lambda m: calls.append(m) or real(m))
        assert current_umask() == 0o027
        assert calls == [] or 0 not in calls  # /proc where there is one; never a looser mask elsewhere
    finally:
        os.umask(old)


def test_each_codec_config_has_its_own_corpus_folder():
    """A multirun over codec.instruments rebuilt one folder per switch, and each checkpoint's corpus_dir then held
    the other codec's corpus (bench_remi scored run 0 on run 1's val lines): the codec names the folder."""
    default = compose_prep(["data=bach"], app="train").data.corpus_dir
    plain = compose_prep(["data=bach", "codec.instruments=false"], app="train").data.corpus_dir
    fine = compose_prep(["data=bach", "codec.grid=24", "codec.instruments=false"], app="prep").data.corpus_dir
    assert Path(default).name == "bach" and Path(plain).name == "bach-instruments_false"
    assert Path(fine).name == "bach-grid24-instruments_false"
