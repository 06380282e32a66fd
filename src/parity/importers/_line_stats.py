"""What a trace-line import read: :class:`LineStats`, and the bookkeeping of renamed names.

A printed name that a stage key cannot hold (``rot[1]``, ``../x``) is stored under a cleaned name
(``rot_1``, ``_x``); :class:`RenameLog` lists the first of them and finds the stage names that
several printed names became (``../x`` and ``./x`` both give ``_x``), into the statistics.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["LineStats", "RenameLog"]

_MAX_RENAMES = 100  # renamed printed names (and colliding stage names) listed in LineStats
_MAX_SPELLINGS = 20  # printed names listed per colliding stage name
_MAX_TRACKED_NAMES = 200_000  # stage names remembered (as printed; under a changed name) for collisions


@dataclass
class LineStats:
    """What an import read.

    Attributes:
        lines: lines read in total.
        trace_lines: lines that carried the prefix and were parsed.
        skipped: lines without the prefix (progress output, banners...), skipped.
        malformed: lines with the prefix that could not be parsed, skipped.
        examples: up to five ``(line number, reason)`` of malformed lines.
        fields: values read (one stage each).
        digits: the most significant digits seen in a printed number (the log's precision).
        renamed: values stored under a stage name other than the printed one (the printed name
            had characters a stage key cannot hold, e.g. ``rot[1]`` → ``rot_1``, ``../x`` → ``_x``).
        renames: for the first 100 distinct printed names that were changed, ``(line, printed
            name, stored key)`` of their first value.
        collisions: stage names that more than one distinct printed name became (e.g. ``_x`` from
            ``../x``, ``．．/x`` and ``.\\x``), each with up to 20 of those printed names, in the
            order first stored; their values are stored as occurrences ``_x``, ``_x#1``... and keep
            the printed name in their provenance. At most 100 listed; ``collided`` counts them all.

    Example:
        >>> from parity.importers.lines import import_log
        >>> _ = open("run.log", "w").write("banner\\nTRACE_C: rot[1]=2\\nTRACE_C: [\\n")
        >>> st = import_log("run.log", "run.trace", prefixes="TRACE_C")
        >>> st.lines, st.trace_lines, st.skipped, st.malformed, st.fields, st.renamed
        (3, 2, 1, 1, 1, 1)
        >>> st.rename_lines()[1:]
        ["line 2: renamed 'rot[1]' -> 'rot_1'"]
    """

    lines: int = 0
    trace_lines: int = 0
    skipped: int = 0
    malformed: int = 0
    examples: list[tuple[int, str]] = field(default_factory=list)
    fields: int = 0
    digits: int = 0
    renamed: int = 0
    renames: list[tuple[int, str, str]] = field(default_factory=list)
    collisions: dict[str, list[str]] = field(default_factory=dict)
    collided: int = 0

    def to_dict(self, *, renames: bool = False) -> dict[str, Any]:
        """The statistics as plain JSON values (what the trace's ``meta["import"]`` stores).

        Args:
            renames: add :meth:`rename_dict` (for an import summary; the trace's own metadata
                leaves it out: each renamed stage keeps its printed name in its provenance).
        """
        out: dict[str, Any] = {"lines": self.lines, "trace_lines": self.trace_lines, "skipped": self.skipped,
                               "malformed": self.malformed, "fields": self.fields,
                               "malformed_examples": [f"line {n}: {why}" for n, why in self.examples]}
        if renames:
            out.update(self.rename_dict())
        return out

    def rename_dict(self) -> dict[str, Any]:
        """The renamed printed names and the collisions as JSON values; ``{}`` when no name changed.

        Keys: ``renamed`` (values stored under a changed name), ``renames`` (``{"line", "printed",
        "stored"}`` per listed printed name), ``collided`` and ``collisions`` (``{"stage",
        "printed": [...]}`` per listed stage name), the last two only when names collided.
        """
        out: dict[str, Any] = {}
        if self.renamed:
            out["renamed"] = self.renamed
            out["renames"] = [{"line": n, "printed": printed, "stored": stored} for n, printed, stored in self.renames]
        if self.collided:
            out["collided"] = self.collided
            out["collisions"] = [{"stage": name, "printed": list(printed)} for name, printed in self.collisions.items()]
        return out

    def rename_lines(self) -> list[str]:
        """One human-readable line per listed rename and collision (for an import summary)."""
        out = []
        if self.renamed:
            out.append(f"{self.renamed} values stored under a name other than the printed one "
                       f"({len(self.renames)} printed names listed):")
        out += [f"line {n}: renamed {printed!r} -> {stored!r}" for n, printed, stored in self.renames]
        for name, printed in self.collisions.items():
            out.append(f"collision: {', '.join(repr(p) for p in printed)} all became {name!r} "
                       f"(stored as occurrences {name!r}, {name + '#1'!r}...)")
        if self.collided > len(self.collisions):
            out.append(f"... {self.collided} colliding stage names in all")
        return out


class RenameLog:
    """Fills ``stats.renamed``, ``renames``, ``collided`` and ``collisions`` from the fields stored.

    Example:
        >>> st = LineStats(); log = RenameLog(st)
        >>> log.note(["_x", "_x", "e"], ["../x", "./x", None], [1, 2, 3], ["_x", "_x#1", "e"])
        >>> st.renamed, st.renames[0], st.collisions
        (2, (1, '../x', '_x'), {'_x': ['../x', './x']})
    """

    def __init__(self, stats: LineStats) -> None:
        self.stats = stats
        self.listed: set[str] = set()  # the printed names listed in stats.renames
        self.as_is: set[str] = set()  # the stage names stored only as printed
        self.spellings: dict[str, list[str]] = {}  # per name stored under a changed name: its printed names

    def note(self, names: list[str], originals: list[str | None], lines: list[int],
             stored: Sequence[str]) -> None:
        """Count and list the fields of a chunk stored under a changed name (``stored``: the keys
        they were stored under), and the stage names that several printed names became."""
        renamed = len(originals) - originals.count(None)
        spellings = self.spellings
        as_is = self.as_is
        if not renamed and (not spellings or set(names).isdisjoint(spellings)):
            # the common case: every name as printed, none ever stored under a changed name
            if len(as_is) < _MAX_TRACKED_NAMES:
                as_is.update(names)
            return
        st = self.stats
        st.renamed += renamed
        seen = self.listed
        track = len(as_is) < _MAX_TRACKED_NAMES
        for i, (name, o) in enumerate(zip(names, originals)):
            known = spellings.get(name)
            if o is None:
                if known is None:
                    if track:
                        as_is.add(name)
                    continue
                printed = name
            else:
                printed = o
                if o not in seen and len(st.renames) < _MAX_RENAMES:
                    seen.add(o)
                    st.renames.append((lines[i], o, stored[i]))
                if known is None:
                    if len(spellings) >= _MAX_TRACKED_NAMES:
                        continue
                    known = spellings[name] = [name] if name in as_is else []
            if printed in known or len(known) > _MAX_SPELLINGS:
                continue
            known.append(printed)
            if len(known) == 2:
                st.collided += 1
            if len(known) >= 2 and (name in st.collisions or len(st.collisions) < _MAX_RENAMES):
                st.collisions[name] = known[:_MAX_SPELLINGS]
