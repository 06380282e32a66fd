"""Many inputs: compare (or localize) one trace per input, and aggregate per stage.

One lucky input can hide a bug: a divergence that shows on 7 inputs of 8 is real even if the one
you tried passes. :func:`compare_sets` pairs the traces of two directories by name (or takes an
explicit list of pairs), diffs every pair, and reports per stage the fraction of inputs on which
it diverges and the worst input, plus the first divergence of each input. Parity holds only if it
holds on every input. :func:`localize_sets` does the same for ``parity localize REF_DIR CAND_DIR
CAND_LOCAL_DIR``: per stage, the fraction of inputs in which it is the culprit, fails locally, or
only propagates an upstream error, and the input with the worst local error.

Example:
    >>> import numpy as np, tempfile, os, parity
    >>> d = tempfile.mkdtemp()
    >>> for side, bug in (("ref", 0.0), ("cand", 1e-3)):
    ...     for i in range(3):
    ...         with parity.record(os.path.join(d, side, f"input{i}.trace")):
    ...             _ = parity.tap("y", np.ones(4) + (bug if i == 2 else 0.0))
    >>> s = compare_sets(os.path.join(d, "ref"), os.path.join(d, "cand"))
    >>> s.passed, s.stage("y").failed, s.stage("y").worst_input
    (False, 1, 'input2.trace')
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..results import TraceDiff, by_key
from .divergence import compare_traces
from .local import DEFAULT_OUTLIER, Localization, localize
from ..errors import UsageError

__all__ = ["StageAcross", "SetDiff", "compare_sets", "trace_pairs", "matched_traces", "is_trace_dir", "StageLocalityAcross",
           "LocalizationSet", "localize_sets"]


def is_trace_dir(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a trace directory (holds ``manifest.json``).

    >>> is_trace_dir("ref.trace"), is_trace_dir(".")
    (True, False)
    """
    return os.path.isfile(os.path.join(path, "manifest.json"))


def trace_pairs(ref_dir: str, cand_dir: str, pairs_file: str | None = None) -> list[tuple[str, str, str]]:
    """``(name, ref trace, cand trace)`` for the inputs to compare.

    Without ``pairs_file``: every trace directory in ``ref_dir`` whose name also exists in
    ``cand_dir``. With it: lines ``REF CAND`` (relative to the file's folder; ``#`` comments).

    Raises:
        UsageError: a directory is missing, no name matches, or a pairs line is malformed.

    >>> import os, shutil; os.mkdir("r"); os.mkdir("c")
    >>> _ = shutil.copytree("ref.trace", "r/x.trace"); _ = shutil.copytree("cand.trace", "c/x.trace")
    >>> trace_pairs("r", "c")
    [('x.trace', 'r/x.trace', 'c/x.trace')]
    """
    if pairs_file is not None:
        base = os.path.dirname(os.path.abspath(pairs_file))
        try:
            with open(pairs_file, encoding="utf-8") as f:
                lines = f.read().splitlines()
        except (OSError, UnicodeDecodeError) as e:
            raise UsageError(f"cannot read the pairs file ({e}).", path=pairs_file) from None
        out = []
        for n, line in enumerate(lines, 1):
            line = line.split("#", 1)[0].strip()
            if not line:
                continue
            parts = line.split()
            if len(parts) != 2:
                raise UsageError(f"line {n}: expected two trace paths REF CAND, got {line!r}.", path=pairs_file)
            r, c = (p if os.path.isabs(p) else os.path.join(base, p) for p in parts)
            out.append((os.path.basename(os.path.normpath(parts[0])), r, c))
        if not out:
            raise UsageError("lists no pair of traces.", path=pairs_file)
        return out
    return [(n, *paths) for n, *paths in matched_traces(ref_dir, cand_dir)]  # type: ignore[misc]


def matched_traces(*dirs: str) -> list[tuple[str, ...]]:
    """``(name, trace in dirs[0], trace in dirs[1], ...)`` for every trace name present in every
    directory, in name order (how ``parity diff REF_DIR CAND_DIR`` and ``parity localize REF_DIR
    CAND_DIR LOCAL_DIR`` pair their inputs).

    Raises:
        UsageError: a directory is missing, or no name is in all of them.

    >>> import os, shutil; os.mkdir("r"); os.mkdir("c")
    >>> _ = shutil.copytree("ref.trace", "r/a"); _ = shutil.copytree("cand.trace", "c/a")
    >>> matched_traces("r", "c")
    [('a', 'r/a', 'c/a')]
    """
    for d in dirs:
        if not os.path.isdir(d):
            raise UsageError("no such directory of traces.", path=d)
    names = [{n for n in os.listdir(d) if is_trace_dir(os.path.join(d, n))} for d in dirs]
    common = sorted(set.intersection(*names))
    if not common:
        sides = ("the reference", "the candidate", "the replayed candidate")
        counts = ", ".join(f"{len(n)} in {side}" for n, side in zip(names, sides))
        raise UsageError(f"no trace name is in {'both' if len(dirs) == 2 else 'all'} directories ({counts}); name them "
                         "alike" + (" or give --pairs FILE." if len(dirs) == 2 else "."), path=dirs[-1])
    return [(n, *(os.path.join(d, n) for d in dirs)) for n in common]


@dataclass(frozen=True)
class StageAcross:
    """One stage over every input.

    Attributes:
        key: the stage; position: its position in the first input's reference.
        inputs: inputs where the stage was compared; failed: inputs where it diverged.
        worst_input: the input with the largest error at this stage (max rel error), and that error.
        first_on: inputs whose first divergence is this stage.

    >>> StageAcross("y", 0, inputs=4, failed=1, worst_input="in2", worst_rel=0.5).fraction
    0.25
    """

    key: str
    position: int
    inputs: int
    failed: int
    worst_input: str | None
    worst_rel: float | None
    first_on: int = 0

    @property
    def fraction(self) -> float:
        return self.failed / self.inputs if self.inputs else 0.0

    def to_dict(self) -> dict[str, Any]:
        wr = self.worst_rel
        return {"key": self.key, "position": self.position, "inputs": self.inputs, "failed": self.failed,
                "fraction": self.fraction, "worst_input": self.worst_input,
                "worst_rel": (wr if wr is None or math.isfinite(wr) else str(wr)), "first_on": self.first_on}


@dataclass(frozen=True)
class SetDiff:
    """Diffs of many inputs, aggregated per stage (see :func:`compare_sets`).

    >>> import os, shutil; os.mkdir("r"); os.mkdir("c")
    >>> for n in ("a", "b"):
    ...     _ = shutil.copytree("ref.trace", f"r/{n}"); _ = shutil.copytree("ref.trace" if n == "a" else "cand.trace", f"c/{n}")
    >>> s = compare_sets("r", "c")
    >>> s.passed, s.failing_inputs, s.first_divergence.key
    (False, ['b'], 'layers.0.attn_scores')
    """

    names: tuple[str, ...]
    diffs: tuple[TraceDiff, ...]
    stages: tuple[StageAcross, ...] = field(default_factory=tuple)

    @property
    def passed(self) -> bool:
        """Parity holds on every input."""
        return all(d.passed for d in self.diffs)

    @property
    def failing_inputs(self) -> list[str]:
        return [n for n, d in zip(self.names, self.diffs) if not d.passed]

    def stage(self, key: str) -> StageAcross:
        """The stage ``key`` (``KeyError`` if no input has it)."""
        return by_key(self.stages, key)

    @property
    def first_divergence(self) -> StageAcross | None:
        """The earliest stage (pipeline order) that diverges on any input."""
        failing = [s for s in self.stages if s.failed]
        return min(failing, key=lambda s: s.position) if failing else None

    def to_dict(self) -> dict[str, Any]:
        first = self.first_divergence
        return {"schema": "parity.diffset", "schema_version": 1, "passed": self.passed, "inputs": len(self.names),
                "failing_inputs": self.failing_inputs, "first_divergence": first.key if first else None,
                "stages": [s.to_dict() for s in self.stages],
                "per_input": [{"name": n, "passed": d.passed, "verdict": d.verdict,
                               "first_divergence": d.first_divergence.key if d.first_divergence else None,
                               "ref": d.ref_path, "cand": d.cand_path} for n, d in zip(self.names, self.diffs)]}


def compare_sets(ref_dir: str | os.PathLike[str], cand_dir: str | os.PathLike[str], *, pairs_file: str | None = None,
                 on_input: Callable[[int, int, str], None] | None = None, **compare_kwargs: Any) -> SetDiff:
    """Diff one trace per input and aggregate per stage (options as :func:`parity.compare_traces`).

    >>> import os, shutil; os.mkdir("r"); os.mkdir("c")
    >>> _ = shutil.copytree("ref.trace", "r/in0"); _ = shutil.copytree("cand.trace", "c/in0")
    >>> s = compare_sets("r", "c", config="parity.toml")
    >>> s.names, s.stage("layers.0.attn_scores").failed
    (('in0',), 1)
    """
    pairs = trace_pairs(os.fspath(ref_dir), os.fspath(cand_dir), pairs_file)
    diffs: list[TraceDiff] = []
    for i, (name, r, c) in enumerate(pairs):
        diffs.append(compare_traces(r, c, **compare_kwargs))
        if on_input is not None:
            on_input(i + 1, len(pairs), name)
    names = tuple(n for n, _, _ in pairs)
    return SetDiff(names, tuple(diffs), _aggregate(names, diffs))


def _aggregate(names: Sequence[str], diffs: Sequence[TraceDiff]) -> tuple[StageAcross, ...]:
    acc: dict[str, dict[str, Any]] = {}
    order: list[str] = []
    for name, d in zip(names, diffs):
        first = d.first_divergence
        for sd in d.compared:
            a = acc.get(sd.key)
            if a is None:
                a = acc[sd.key] = {"position": sd.ref.position if sd.ref else 0, "inputs": 0, "failed": 0,
                                   "worst": None, "worst_rel": None, "first_on": 0}
                order.append(sd.key)
            a["inputs"] += 1
            if sd.diverged:
                a["failed"] += 1
            rel = sd.metrics.max_rel_err if sd.metrics is not None else (math.inf if sd.diverged else 0.0)
            rel = math.inf if rel is not None and math.isnan(rel) else rel
            if rel is not None and (a["worst_rel"] is None or rel > a["worst_rel"]):
                a["worst"], a["worst_rel"] = name, rel
            if first is not None and first.key == sd.key:
                a["first_on"] += 1
    return tuple(StageAcross(k, acc[k]["position"], acc[k]["inputs"], acc[k]["failed"], acc[k]["worst"],
                             acc[k]["worst_rel"], acc[k]["first_on"]) for k in sorted(order, key=lambda k: acc[k]["position"]))


# -- localization over many inputs --------------------------------------------------------------------
@dataclass(frozen=True)
class StageLocalityAcross:
    """One stage of :func:`localize_sets` over every input.

    Attributes:
        key: the stage; position: its position in the first input's reference.
        inputs: inputs where the stage was compared on both sides.
        culprit: inputs where it is the culprit (the first stage whose own computation diverges).
        local: inputs where it fails locally (the culprit or "also local").
        propagated: inputs where it fails only in the plain diff (its error comes from upstream).
        worst_input: the input with the largest local relative RMS error at this stage (``None`` when
            no input has any), and that error.

    >>> s = StageLocalityAcross("b", 1, inputs=4, culprit=3, local=3, propagated=1, worst_input="x", worst_local_rel=0.1)
    >>> s.culprit_fraction, s.propagated_fraction
    (0.75, 0.25)
    """

    key: str
    position: int
    inputs: int
    culprit: int
    local: int
    propagated: int
    worst_input: str | None
    worst_local_rel: float | None

    def _share(self, n: int) -> float:
        return n / self.inputs if self.inputs else 0.0

    @property
    def culprit_fraction(self) -> float:
        return self._share(self.culprit)

    @property
    def local_fraction(self) -> float:
        return self._share(self.local)

    @property
    def propagated_fraction(self) -> float:
        return self._share(self.propagated)

    def to_dict(self) -> dict[str, Any]:
        wr = self.worst_local_rel
        return {"key": self.key, "position": self.position, "inputs": self.inputs,
                "culprit": self.culprit, "culprit_fraction": self.culprit_fraction,
                "local": self.local, "local_fraction": self.local_fraction,
                "propagated": self.propagated, "propagated_fraction": self.propagated_fraction,
                "worst_input": self.worst_input,
                "worst_local_rel_rms": wr if wr is None or math.isfinite(wr) else str(wr)}


@dataclass(frozen=True)
class LocalizationSet:
    """:func:`localize_sets`: one :class:`~parity.localize.local.Localization` per input, and per
    stage how often it is the culprit, fails locally, or only propagates. Truthy when parity holds
    on every input.

    >>> import os, shutil
    >>> for d, src in (("r", "ref.trace"), ("c", "cand.trace"), ("l", "cand.trace")):
    ...     os.mkdir(d); _ = shutil.copytree(src, f"{d}/in0")
    >>> s = localize_sets("r", "c", "l", "parity.toml")
    >>> bool(s), s.names, s.failing_inputs, s.to_dict()["culprit"]
    (False, ('in0',), ['in0'], 'layers.0.attn_scores')
    """

    names: tuple[str, ...]
    results: tuple[Localization, ...]
    stages: tuple[StageLocalityAcross, ...] = ()

    @property
    def passed(self) -> bool:
        """Every input passes (plain diff, and no stage's own computation diverges)."""
        return all(r.passed for r in self.results)

    def __bool__(self) -> bool:
        return self.passed

    @property
    def failing_inputs(self) -> list[str]:
        return [n for n, r in zip(self.names, self.results) if not r.passed]

    @property
    def culprit(self) -> StageLocalityAcross | None:
        """The stage that is the culprit on the most inputs (the earliest on a tie), or ``None``."""
        blamed = [s for s in self.stages if s.culprit]
        return min(blamed, key=lambda s: (-s.culprit, s.position)) if blamed else None

    def stage(self, key: str) -> StageLocalityAcross:
        """The stage ``key`` (``KeyError`` if no input has it)."""
        return by_key(self.stages, key)

    def to_dict(self) -> dict[str, Any]:
        top = self.culprit
        return {"schema": "parity.localize-set", "schema_version": 1, "passed": self.passed, "inputs": len(self.names),
                "failing_inputs": self.failing_inputs, "culprit": top.key if top else None,
                "passes": sum(r.passes for r in self.results), "stages": [s.to_dict() for s in self.stages],
                "per_input": [{"name": n, "passed": r.passed, "culprit": r.culprit,
                               "plain_first_divergence": r.plain_first, "ref": r.plain.ref_path, "cand": r.plain.cand_path,
                               "cand_local": r.local.cand_path} for n, r in zip(self.names, self.results)]}


def localize_sets(ref_dir: str | os.PathLike[str], cand_dir: str | os.PathLike[str], local_dir: str | os.PathLike[str],
                  config: Any = None, *, outlier: float = DEFAULT_OUTLIER,
                  on_input: Callable[[int, int, str], None] | None = None, **compare_kwargs: Any) -> LocalizationSet:
    """:func:`~parity.localize.local.localize` on one (reference, plain, replayed) trace triple per
    input, matched by name across the three directories, aggregated per stage.

    Args:
        ref_dir, cand_dir, local_dir: directories holding one trace per input, alike named.
        config, outlier, **compare_kwargs: as for :func:`~parity.localize.local.localize`.
        on_input: called as ``on_input(done, total, name)`` after each input.

    Raises:
        UsageError: a directory is missing, no name is in all three, or an unknown option.

    >>> import os, shutil
    >>> for d, src in (("r", "ref.trace"), ("c", "cand.trace"), ("l", "cand.trace")):
    ...     os.mkdir(d); _ = shutil.copytree(src, f"{d}/in0"); _ = shutil.copytree("ref.trace", f"{d}/in1")
    >>> s = localize_sets("r", "c", "l", "parity.toml")
    >>> s.failing_inputs, s.culprit.key, s.stage("layers.0.attn_scores").culprit_fraction
    (['in0'], 'layers.0.attn_scores', 0.5)
    """
    triples = matched_traces(os.fspath(ref_dir), os.fspath(cand_dir), os.fspath(local_dir))
    results: list[Localization] = []
    for i, (name, r, c, lc) in enumerate(triples):
        results.append(localize(r, c, lc, config, outlier=outlier, **compare_kwargs))
        if on_input is not None:
            on_input(i + 1, len(triples), name)
    names = tuple(t[0] for t in triples)
    return LocalizationSet(names, tuple(results), _aggregate_localities(names, results))


def _aggregate_localities(names: Sequence[str], results: Sequence[Localization]) -> tuple[StageLocalityAcross, ...]:
    acc: dict[str, dict[str, Any]] = {}
    for name, loc in zip(names, results):
        for s in loc.stages:
            if s.label == "missing":
                continue
            a = acc.setdefault(s.key, {"position": s.position, "inputs": 0, "culprit": 0, "local": 0, "propagated": 0,
                                       "worst": None, "worst_rel": None})
            a["inputs"] += 1
            a["culprit"] += s.label == "culprit"
            a["local"] += s.label in ("culprit", "also local")
            a["propagated"] += s.label == "propagated"
            rel = s.local_rel
            rel = math.inf if rel is not None and math.isnan(rel) else rel
            if rel is not None and (a["worst_rel"] is None or rel > a["worst_rel"]):
                a["worst"], a["worst_rel"] = name, rel
    return tuple(StageLocalityAcross(k, a["position"], a["inputs"], a["culprit"], a["local"], a["propagated"],
                                     a["worst"] if a["worst_rel"] else None,  # no local error anywhere: no worst input
                                     a["worst_rel"]) for k, a in sorted(acc.items(), key=lambda kv: kv[1]["position"]))
