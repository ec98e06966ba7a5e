"""The one way every console script answers a user error: one line naming the setting or file, exit 2."""

from __future__ import annotations

import errno
import subprocess
import sys

import pytest

from theremin.apps.cli import EXIT_USER_ERROR, report_and_exit
from theremin.errors import ThereminError, user_error


def test_user_errors_are_recognised_and_bugs_are_not():
    from omegaconf import OmegaConf

    assert isinstance(user_error(ThereminError("x")), ThereminError)
    cfg = OmegaConf.create({"data": {"input_dir": "???"}})
    with pytest.raises(Exception) as missing:
        _ = cfg.data.input_dir
    assert "data.input_dir is required" in str(user_error(missing.value))
    full = user_error(OSError(errno.ENOSPC, "No space left on device", "/x/train.txt"))
    assert str(full) == "/x/train.txt: no space left on the device"
    assert user_error(KeyError("bug")) is None and user_error(OSError(errno.EIO, "io")) is None


def test_an_error_raised_inside_hydra_instantiate_is_answered_by_its_cause():
    import hydra

    with pytest.raises(Exception) as wrapped:
        hydra.utils.instantiate({"_target_": "theremin.codec.midichar.MidiChar", "gird": 12})
    ue = user_error(wrapped.value)
    assert ue is not None and "codec.gird" in str(ue)


def test_report_prints_one_line_and_exits_2(capsys, monkeypatch):
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    with pytest.raises(SystemExit) as e:
        report_and_exit("theremin-x", ThereminError("data.input_dir: no such folder"))
    assert e.value.code == EXIT_USER_ERROR
    assert capsys.readouterr().err == "theremin-x: error: data.input_dir: no such folder\n"
    with pytest.raises(KeyError):  # a bug keeps its traceback
        report_and_exit("theremin-x", KeyError("bug"))


def test_console_script_answers_a_bad_setting_without_traceback(tmp_path):
    r = subprocess.run([sys.executable, "-m", "theremin.apps.prep", "+codec.gird=12", f"paths.data_dir={tmp_path}"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == EXIT_USER_ERROR
    assert r.stderr.strip().splitlines()[-1].startswith("theremin-prep: error: codec.gird is not a codec setting")
    assert "Traceback" not in r.stderr
