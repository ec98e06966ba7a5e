"""theremin-score: held-out bits/note of a checkpoint on a folder (the same figure as val/bits_per_note)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from theremin.data.corpus import load_manifest
from theremin.model.checkpoint import open_checkpoint
from theremin.model.scoring import ScoreError, score_folder

SCORE = str(Path(sys.executable).parent / "theremin-score")


@pytest.fixture(scope="module")
def val_folder(trained, tmp_path_factory) -> Path:
    """The val files of the shared trained model's corpus, copied to a folder of their own."""
    _, corpus_dir, midi = trained
    out = tmp_path_factory.mktemp("val")
    rows = [r for r in load_manifest(corpus_dir)["files"] if r["split"] == "val"]
    assert rows
    for r in rows:
        shutil.copy(midi / r["path"], out / Path(r["path"]).name)
    return out


def test_score_is_val_bits_per_note(trained, val_folder):
    ckpt, corpus_dir, _ = trained
    rep = score_folder(ckpt, val_folder)
    ck = open_checkpoint(ckpt)
    val_rows = [r for r in load_manifest(corpus_dir)["files"] if r["split"] == "val"]
    assert rep.bits_per_note == pytest.approx(ck.last_val["metrics"]["val/bits_per_note"], rel=1e-5)
    assert rep.files == len(val_rows) and rep.notes == sum(r["notes"] for r in val_rows)
    # per-file figures add up to the total: every note counted once, where it completes
    assert sum(f["notes"] for f in rep.per_file.values()) == rep.notes
    total_bits = sum(f["bits_per_note"] * f["notes"] for f in rep.per_file.values())
    assert total_bits / rep.notes == pytest.approx(rep.bits_per_note, rel=1e-9)
    assert 0.0 <= rep.factored_share < 0.5  # Bach chorales: the tokenizer knows most of their notes


def test_score_leaves_out_unusable_files(trained, val_folder, tmp_path):
    ckpt = trained[0]
    folder = tmp_path / "mixed"
    shutil.copytree(val_folder, folder)
    (folder / "broken.mid").write_bytes(b"MThd garbage")
    first = sorted(val_folder.iterdir())[0]
    shutil.copy(first, folder / "copy_of_first.mid")  # a duplicate counts once
    rep = score_folder(ckpt, folder)
    assert rep.bits_per_note == pytest.approx(score_folder(ckpt, val_folder).bits_per_note, rel=1e-9)
    assert list(rep.failed) == ["broken.mid"] and rep.duplicates == 1


def test_score_errors(trained, tmp_path):
    ckpt = trained[0]
    with pytest.raises(ScoreError, match=r"ckpt_path: checkpoint .*nope\.ckpt does not exist"):
        score_folder(tmp_path / "nope.ckpt", tmp_path)
    with pytest.raises(ScoreError, match=r"input_dir=.*missing is not a folder"):
        score_folder(ckpt, tmp_path / "missing")
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "x.mid").write_text("no")
    with pytest.raises(ScoreError, match=r"input_dir=.*empty: .*none of the 1 MIDI files is usable"):
        score_folder(ckpt, empty)


def test_score_cli(trained, val_folder, tmp_path):
    ckpt = trained[0]
    out = tmp_path / "s.json"
    p = subprocess.run([SCORE, f"ckpt_path={ckpt}", f"input_dir={val_folder}", "per_file=true", f"out_json={out}",
                        f"hydra.run.dir={tmp_path / 'run'}"], capture_output=True, text=True,
                       env={**os.environ, "CI": "1"})  # CI set: pyfluidsynth would print its library on stdout
    assert p.returncode == 0, p.stderr
    rep = json.loads(out.read_text())
    assert p.stdout.startswith(f"bits/note = {rep['bits_per_note']:.4f}\n")
    assert f"notes = {rep['notes']:,}  files = {rep['files']:,}  tokens = {rep['tokens']:,}" in p.stdout
    bad = subprocess.run([SCORE, f"ckpt_path={tmp_path / 'gone.ckpt'}", f"input_dir={val_folder}",
                          f"hydra.run.dir={tmp_path / 'run2'}"], capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.strip().startswith("theremin-score: error: ckpt_path: checkpoint ")
    assert "Traceback" not in bad.stderr
    missing = subprocess.run([SCORE, f"hydra.run.dir={tmp_path / 'run3'}"], capture_output=True, text=True)
    assert missing.returncode == 2 and "ckpt_path is required" in missing.stderr
