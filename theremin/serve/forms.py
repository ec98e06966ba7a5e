"""Request fields → :class:`SamplingSettings`: every field parsed and bounded before anything is allocated.

A field is a form field (POST /api/rolls) or a query parameter (POST /api/continue) named like the
SamplingSettings field it sets, plus ``preset`` (a file of conf/sampling/). An empty value means "not set":
the preset's value stands. Each refusal is a :class:`FieldError` that names the field, its value and the
accepted range; bounds come from conf/serve.yaml (``limits``).
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path

from omegaconf import OmegaConf

from theremin.config import conf_dir, known_settings
from theremin.errors import ThereminError
from theremin.roll.constraints import ConstraintError, parse_key
from theremin.roll.roller import GenerateError, SamplingLimits, SamplingSettings, parse_bars

SETTINGS_FIELDS = tuple(f.name for f in fields(SamplingSettings))
NONE_WORDS = {"none", "null", "off"}  # an explicit "no filter" for top_k/top_p/min_p/... over a preset's value
MAX_SEED = 2**63 - 1


class FieldError(ThereminError):
    """A request field that cannot be used; the message names it."""


class UnknownFieldError(FieldError):
    pass


@dataclass(frozen=True)
class Limits(SamplingLimits):
    """What one request may ask for (conf/serve.yaml ``limits``): the Roller's limits (the server rolls with
    these, max_new_tokens included when a request leaves it unset) with the server's defaults, plus bounds on
    the fields only the server takes."""

    max_n: int = 16
    max_notes: int = 512
    max_bars: float = 32
    max_seconds: float = 60
    max_new_tokens: int = 4096
    max_beats: float = 256
    max_temperature: float = 5.0
    max_keep_bars: int = 256
    max_polyphony: int = 32
    max_key_chars: int = 40
    max_prompt_notes: int = 50_000  # a whole song is trimmed to its last bars that fit; this bounds the reading


def load_presets(folder: Path | None = None) -> dict[str, dict]:
    """Every preset of conf/sampling/ as a plain dict, its ``defaults`` chain merged in."""
    folder = folder or conf_dir() / "sampling"
    raw = {p.stem: OmegaConf.load(p) for p in sorted(folder.glob("*.yaml"))}

    def resolve(name: str, seen: tuple[str, ...] = ()) -> dict:
        if name in seen:
            raise ValueError(f"conf/sampling/{name}.yaml: its defaults loop ({' -> '.join(seen)})")
        cfg = raw[name].copy()
        parents = [d for d in cfg.pop("defaults", []) if d != "_self_"]
        merged = OmegaConf.merge(*(resolve(p, (*seen, name)) for p in parents), cfg) if parents else cfg
        return OmegaConf.to_container(merged, resolve=True)

    return {name: resolve(name) for name in raw}


def _int(name: str, value: str, lo: int, hi: int) -> int:
    try:
        v = int(value.strip())
    except ValueError:
        raise FieldError(f"{name}={value!r}: not a whole number") from None
    if not lo <= v <= hi:
        raise FieldError(f"{name}={v}: must be between {lo} and {hi}")
    return v


def _float(name: str, value: str, lo: float, hi: float, lo_open: bool = False) -> float:
    try:
        v = float(value.strip())
    except ValueError:
        raise FieldError(f"{name}={value!r}: not a number") from None
    if not math.isfinite(v) or v < lo or v > hi or (lo_open and v == lo):
        raise FieldError(f"{name}={value.strip()}: must be {'>' if lo_open else '>='} {lo} and <= {hi}")
    return v


def _pitch_range(value: str) -> tuple[int, int]:
    parts = [p.strip() for p in value.strip().strip("[]()").split(",")]
    if len(parts) != 2:
        raise FieldError(f"pitch_range={value!r}: write two MIDI pitches as lo,hi (e.g. 48,84)")
    lo, hi = (_int("pitch_range", p, 0, 127) for p in parts)
    if lo > hi:
        raise FieldError(f"pitch_range={lo},{hi}: reversed (lo must be <= hi)")
    return lo, hi


def _key(value: str, limits: Limits) -> str:
    key = value.strip()
    if len(key) > limits.max_key_chars:
        raise FieldError(f"key: {len(key)} characters; a key name is at most {limits.max_key_chars}")
    try:
        parse_key(key)
    except ConstraintError as e:
        raise FieldError(str(e)) from None
    return key


def _instruments(value: str, limits: Limits, field: str = "instruments") -> list[str] | str:
    """A comma-separated list of the prompt's parts (checked against the prompt when it is read), or "all"."""
    if len(value) > limits.max_key_chars * 8:
        raise FieldError(f"{field}: {len(value)} characters; name at most a few parts")
    if field == "instruments" and value.strip().lower() == "all":
        return "all"
    specs = [s.strip() for s in value.split(",") if s.strip()]
    if not specs:
        raise FieldError(f"{field}={value!r}: name parts, e.g. bass,drums")
    return specs


def _add_part(value: str, limits: Limits) -> str:
    if len(value) > limits.max_key_chars:
        raise FieldError(f"add_part: {len(value)} characters; an instrument name is at most {limits.max_key_chars}")
    return value.strip()  # a prompt's track (re-rolled) or a new part: resolved against the prompt


def _prompt_bars(value: str) -> str:
    try:
        a, b = parse_bars(value)
    except GenerateError as e:
        raise FieldError(str(e).removeprefix("sampling.")) from None
    return f"{a}-{b}"


def parse_settings(form: Mapping[str, str], presets: dict[str, dict], limits: Limits, vocab_size: int,
                   extra: tuple[str, ...] = ()) -> SamplingSettings:
    """SamplingSettings from request fields (strings). ``extra``: other field names the route accepts."""
    known = {*SETTINGS_FIELDS, "preset", *extra}
    known_settings(known, dict(form), "", "a field of this request", UnknownFieldError)
    values = {k: v.strip() for k, v in form.items() if k in known and isinstance(v, str) and v.strip()}
    preset = values.pop("preset", "default")
    if preset not in presets:
        raise FieldError(f"preset={preset!r}: not a preset; use one of {', '.join(sorted(presets))}")
    s = {**presets[preset]}
    unit = values.get("unit", s.get("unit", "notes"))
    if unit not in ("notes", "bars", "seconds"):
        raise FieldError(f"unit={unit!r}: use notes, bars or seconds")
    parse = {
        "n": lambda v: _int("n", v, 1, limits.max_n),
        "seed": lambda v: _int("seed", v, 0, MAX_SEED),
        "temperature": lambda v: _float("temperature", v, 0.0, limits.max_temperature),
        "top_k": lambda v: _int("top_k", v, 1, vocab_size),
        "top_p": lambda v: _float("top_p", v, 0.0, 1.0, lo_open=True),
        "min_p": lambda v: _float("min_p", v, 0.0, 1.0),
        "length": lambda v: _float("length", v, 0.0, limits.max_length(unit), lo_open=True),
        "unit": lambda v: v,
        "max_new_tokens": lambda v: _int("max_new_tokens", v, 1, limits.max_new_tokens),
        "keep_bars": lambda v: _int("keep_bars", v, 0, limits.max_keep_bars),
        "pitch_range": _pitch_range,
        "key": lambda v: _key(v, limits),
        "max_polyphony": lambda v: _int("max_polyphony", v, 1, limits.max_polyphony),
        "register_margin": lambda v: _int("register_margin", v, 0, 127),
        "instruments": lambda v: _instruments(v, limits),
        "mute": lambda v: _instruments(v, limits, "mute"),
        "add_part": lambda v: _add_part(v, limits),
        "prompt_bars": lambda v: _prompt_bars(v),
        "prompt_share": lambda v: _float("prompt_share", v, 0.1, 0.95),
    }
    for name, value in values.items():
        if name not in parse:
            continue  # a route's own field (prompt, demo_prompt)
        if value.lower() in NONE_WORDS and name in ("top_k", "top_p", "min_p", "keep_bars", "pitch_range", "key",
                                                    "max_polyphony", "max_new_tokens", "register_margin",
                                                    "instruments", "add_part", "mute", "prompt_bars"):
            s[name] = None
        else:
            s[name] = parse[name](value)
    if "seed" not in values:
        s["seed"] = secrets.randbelow(2**31)  # a fresh roll each time unless the request pins the seed
    if s.get("pitch_range") is not None:
        s["pitch_range"] = tuple(s["pitch_range"])
    if unit == "notes" and int(s["length"]) < 1:
        raise FieldError(f"length={s['length']}: at least 1 note")
    for name, hi in (("n", limits.max_n), ("length", limits.max_length(unit))):  # a preset may not exceed them
        if s[name] > hi:
            raise FieldError(f"{name}={s[name]} (preset {preset}): must be <= {hi}")
    settings = SamplingSettings(**s)
    try:
        settings.check()
    except ThereminError as e:
        raise FieldError(str(e).removeprefix("sampling.")) from None
    return settings
