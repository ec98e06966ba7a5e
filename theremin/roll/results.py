"""What a roll makes: the prompt as the model reads it, the variations, and when a variation is long enough."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from theremin.errors import ThereminError
from theremin.music.midi import PIANO, Part, Piece
from theremin.roll.constraints import RowState


class GenerateError(ThereminError):
    """Bad input to generation (checkpoint, prompt, settings); the message names the input."""


class Prompt(NamedTuple):
    text: str  # midichar: the kept bars, cut to the model's context
    time_signature: tuple[int, int]
    truncated: bool  # its oldest part was cut to fit the context
    end: int  # grid position where the prompt ends: the end of the kept bars (``keep_bars``), else the end of
    # the bar that holds its last onset. A length in bars or seconds is counted from here.
    parts: tuple[Part, ...] = (PIANO,)  # the prompt's instruments (the header of ``text``)
    bars: tuple[int, int] | None = None  # the bars of the prompt file it holds, first and last (1-based)


@dataclass
class Variation:
    index: int
    text: str  # prompt + continuation (midichar)
    piece: Piece
    prompt_end_tick: int  # the prompt's end (see Prompt.end), in ticks of ``piece``
    generated_notes: int
    files: dict[str, Path] = field(default_factory=dict)
    # (start tick, pitch) of the notes that came from the prompt: a note the model adds on the prompt's last
    # onset starts before the prompt's end yet is generated
    prompt_notes: frozenset[tuple[int, int]] = frozenset()
    # the tick where the new-notes clip's bar 1 starts (add_part: 0, the prompt's own bar 1); None: the bar that
    # holds the prompt's end, the roll point (a continuation)
    clip_from: int | None = None


@dataclass
class RollResult:
    variations: list[Variation]
    prompt_notes: int
    prompt_truncated: bool
    seconds: float
    prompt_bars: tuple[int, int] | None = None  # the prompt file's bars the model read (Prompt.bars)


class Goal(NamedTuple):
    """How long a variation is to be: ``notes`` new notes, or up to grid position ``end``; ``max_new`` tokens."""

    notes: int | None
    end: int | None
    max_new: int
    prompt_notes: int

    def reached(self, row: RowState) -> bool:
        return row.notes - self.prompt_notes >= self.notes if self.notes is not None else row.cursor >= self.end


def parse_bars(spec) -> tuple[int, int]:
    """"A-B" (or "A..B", "A:B", a [A, B] list, or "B" for 1-B) → (A, B), 1 <= A <= B; GenerateError otherwise."""
    import re

    if isinstance(spec, (list, tuple)) and len(spec) == 2:
        spec = f"{spec[0]}-{spec[1]}"
    m = re.fullmatch(r"\s*(\d{1,6})\s*(?:(?:-|\.\.|:)\s*(\d{1,6})\s*)?", str(spec))
    if not m:
        raise GenerateError(f"sampling.prompt_bars={str(spec)[:40]!r}: write the first and last bar, e.g. 9-16")
    a, b = (int(m[1]), int(m[2])) if m[2] else (1, int(m[1]))
    if not 1 <= a <= b:
        raise GenerateError(f"sampling.prompt_bars={str(spec)[:40]!r}: bars count from 1 and the first comes first")
    return a, b
