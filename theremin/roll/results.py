"""What a roll makes: the prompt as the model reads it, the variations, and when a variation is long enough."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from theremin.music.midi import PIANO, Part, Piece
from theremin.roll.constraints import RowState


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
    # the tick where the new-notes clip's bar 1 starts (add_part: 0, the prompt's own bar 1); None: the bar of
    # the first new note (a continuation)
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
