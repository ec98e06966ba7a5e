"""Issue 21 items 1, 3, 6: tiny prompts that asked for absurd rolls. Absurd tempos and meters are refused with
a reason (never a 500), one set of limits bounds a roll (the server's, also when max_new_tokens is unset), and a
length is bounded in beats whatever the prompt's tempo."""

from __future__ import annotations

import re

import midi_factory as mf
import pytest
from test_serve import roll

from theremin.roll.roller import GenerateError, Roller, SamplingLimits, SamplingSettings

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")
fastapi = pytest.importorskip("fastapi", reason="pip install -e .[dev]")


def time_signature(numerator: int, denominator_exponent: int) -> bytes:
    return bytes([0xFF, 0x58, 0x04, numerator, denominator_exponent, 24, 8])


def tempo_us(us: int) -> bytes:
    return b"\xff\x51\x03" + us.to_bytes(3, "big")


def prompt(meta: list[bytes]) -> bytes:
    """A bar of quarter notes after the given meta events (at tick 0): about a hundred bytes."""
    notes = [(i * 480, (i + 1) * 480, p, 80) for i, p in enumerate((60, 64, 67, 72))]
    return mf.smf_bytes([[(0, m) for m in meta] + mf.notes_to_events(notes)])


@pytest.mark.parametrize(("meta", "reason"), [
    ([time_signature(0, 2)], r"time signature 0/4"),                    # was a 500 ZeroDivisionError
    ([time_signature(4, 8)], r"time signature 4/(0|256) .* is not a meter"),  # exponent 8 (read as 0): a 500 too
    ([time_signature(255, 0)], r"time signature 255/1: a bar of 1020 beats"),
    ([tempo_us(16_777_215), time_signature(4, 2)], r"tempo of 3\.58 bpm"),  # the 185-byte disk filler's tempo
    ([tempo_us(1)], r"tempo of 60000000 bpm"),
])
def test_absurd_meters_and_tempos_are_refused_with_a_reason(client, meta, reason):
    r = roll(client, prompt(meta), name="tiny.mid", n=1, length=4, unit="bars")
    assert r.status_code == 422, r.text
    assert "tiny.mid" in r.json()["detail"]  # the file is named
    assert re.search(reason, r.json()["detail"]), r.json()["detail"]


def test_the_server_bounds_a_roll_by_its_own_limits_also_without_max_new_tokens(service):
    """The Roller used the default 32,768 tokens when a request left max_new_tokens unset; conf/serve.yaml says
    4,096 (make_service: the serve default)."""
    assert service.roller.limits.max_new_tokens == service.limits.max_new_tokens == 4096
    assert service.roller.limits.max_n == service.limits.max_n


def test_a_length_is_bounded_in_beats_whatever_the_tempo(client, service):
    """At the fastest tempo allowed, 60 seconds is 1,000 beats: more than the server's max_beats."""
    r = roll(client, prompt([tempo_us(60_000)]), name="fast.mid", n=1, length=60, unit="seconds")
    assert r.status_code == 422, r.text
    assert "limits.max_beats" in r.json()["detail"] and "fast.mid" not in r.json()["detail"]
    # the same seconds at a normal tempo roll
    ok = roll(client, prompt([tempo_us(500_000)]), name="normal.mid", n=1, length=8, unit="seconds")
    assert ok.status_code == 200, ok.text


def test_the_roller_refuses_the_same_in_python(trained):
    roller = Roller.load(trained[0])
    roller.limits = SamplingLimits(max_beats=64)
    with pytest.raises(GenerateError, match=r"sampling.length=40 bars is 160 beats .* limits.max_beats=64"):
        roller.roll(None, SamplingSettings(n=1, length=40, unit="bars"))
