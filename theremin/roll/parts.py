"""Which instruments a roll may play: ``sampling.instruments`` and ``sampling.add_part`` as parts of a prompt.

A spec names instruments the way a musician does, tried in this order:
- a track name of the prompt ("MELODY", "Bass", case and spaces ignored);
- ``drums`` (every drum part);
- a General MIDI family ("piano", "bass", "guitar", "strings", "synth lead", ...: pretty_midi's 16 classes);
- a General MIDI program number (0..127) or name ("Electric Bass (finger)").
"""

from __future__ import annotations

from theremin.errors import ThereminError
from theremin.music.midi import Part

FAMILIES = ("Piano", "Chromatic Percussion", "Organ", "Guitar", "Bass", "Strings", "Ensemble", "Brass", "Reed",
            "Pipe", "Synth Lead", "Synth Pad", "Synth Effects", "Ethnic", "Percussive", "Sound Effects")
# the program a new part of a family gets (add_part=bass): the family's most common sound in pop MIDI (strings: GM
# program 48, String Ensemble 1, which General MIDI files under "ensemble": what a musician means by strings)
FAMILY_PROGRAM = {"piano": 0, "chromatic percussion": 11, "organ": 16, "guitar": 25, "bass": 33, "strings": 48,
                  "ensemble": 48, "brass": 61, "reed": 65, "pipe": 73, "synth lead": 80, "synth pad": 88,
                  "synth effects": 96, "ethnic": 104, "percussive": 112, "sound effects": 120}
MAX_SPEC_CHARS = 64


class PartSpecError(ThereminError):
    """An instrument spec that names nothing usable; the message says what the prompt has."""


def _norm(s: str) -> str:
    return " ".join(str(s).lower().replace("_", " ").replace("-", " ").split())


def family(part: Part) -> str:
    """"drums" or the General MIDI family of the part's program, lower case ("bass", "synth lead")."""
    return "drums" if part.is_drum else FAMILIES[part.program // 8].lower()


def _program(spec: str) -> int | None:
    """A GM program from a number or a GM instrument name, else None."""
    from theremin.music.gm import program_of

    if spec.isdigit():
        p = int(spec)
        if not 0 <= p <= 127:
            raise PartSpecError(f"program {p}: General MIDI programs are 0..127")
        return p
    try:
        return program_of(spec.title() if spec.islower() else spec)
    except ValueError:
        return None


def describe(parts: list[Part]) -> str:
    from theremin.music.midi import default_name

    return ", ".join(f"{p.name or default_name(p.program, p.is_drum)} ({family(p)})" for p in parts) or "none"


def select_parts(specs, parts: list[Part]) -> set[int]:
    """Indices of ``parts`` that ``specs`` (a list of specs, or one comma-separated string) name."""
    if isinstance(specs, str):
        specs = [s for s in specs.split(",") if s.strip()]
    chosen: set[int] = set()
    for raw in specs:
        spec = _norm(raw)
        if not spec or len(spec) > MAX_SPEC_CHARS:
            raise PartSpecError(f"sampling.instruments: {str(raw)[:MAX_SPEC_CHARS]!r} is not an instrument name")
        hit = {i for i, p in enumerate(parts) if p.name and _norm(p.name) == spec}
        if not hit and spec in ("drums", "drum", "percussion kit"):
            hit = {i for i, p in enumerate(parts) if p.is_drum}
        if not hit and spec in FAMILY_PROGRAM:
            hit = {i for i, p in enumerate(parts) if family(p) == spec}
        if not hit:
            prog = _program(str(raw).strip())
            hit = {i for i, p in enumerate(parts) if prog is not None and not p.is_drum and p.program == prog}
        if not hit:
            raise PartSpecError(f"sampling.instruments: {str(raw).strip()!r} names none of the prompt's parts: "
                                f"{describe(parts)} (use a track name, a family such as bass, drums, or a program)")
        chosen |= hit
    return chosen


def new_part(spec) -> Part:
    """The part ``add_part`` asks for: drums, a family (its usual program) or a program (number or name)."""
    s = _norm(spec)
    if not s or len(s) > MAX_SPEC_CHARS:
        raise PartSpecError(f"sampling.add_part={str(spec)[:MAX_SPEC_CHARS]!r}: not an instrument name")
    if s in ("drums", "drum", "percussion kit"):
        return Part(0, True, "")
    if s in FAMILY_PROGRAM:
        return Part(FAMILY_PROGRAM[s], False, "")
    prog = _program(str(spec).strip())
    if prog is None:
        raise PartSpecError(f"sampling.add_part={str(spec).strip()!r}: not drums, a General MIDI family "
                            f"({', '.join(f.lower() for f in FAMILIES)}) or a program (0..127 or its name)")
    return Part(prog, False, "")
