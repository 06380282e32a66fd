"""Local versus propagated error: which stage *introduces* the divergence.

Two captures of the candidate are compared against the reference: a plain one (every stage's
error is accumulated from everything before it) and a replayed one (``parity.replay``: every
stage was fed the reference's inputs, so its error is its own). :func:`localize` lines them up
per stage and labels every failing stage:

* ``culprit``: the first stage, in pipeline order, whose *local* error diverges;
* ``also local``: a later stage whose local error diverges too (a second bug);
* ``propagated``: a stage that fails in the plain diff only: its own computation is fine.

A stage's local error *diverges* when it fails its tolerance, or when it stands out from the
rounding noise of the other stages: larger than ``outlier`` (default 10) times the median local
relative RMS error of the replayed stages, or any local error at all where most stages agree
exactly (a bug too small to cross a tolerance at its own stage,
which later stages amplify, is found where it is). Two forward passes of the candidate give the
whole map (one plain, one replayed), never one pass per stage.

Example:
    >>> import numpy as np, tempfile, os, parity
    >>> d = tempfile.mkdtemp(); p = lambda n: os.path.join(d, n)
    >>> def run(bug):
    ...     h = parity.tap("a", np.linspace(1, 2, 8))
    ...     h = parity.tap("b", h * (1 + bug))             # the bug
    ...     return parity.tap("c", np.exp(h * 20))          # amplifies any error in b
    >>> with parity.record(p("ref.trace")):
    ...     _ = run(0.0)
    >>> with parity.record(p("cand.trace")):
    ...     _ = run(1e-8)
    >>> with parity.replay(p("ref.trace"), p("local.trace")):
    ...     _ = run(1e-8)
    >>> loc = localize(p("ref.trace"), p("cand.trace"), p("local.trace"), rtol=1e-7, atol=0)
    >>> loc.plain_first, loc.culprit, loc.stage("c").label
    ('c', 'b', 'propagated')
"""

from __future__ import annotations

import math
import os
import statistics
from dataclasses import dataclass, field
from collections.abc import Mapping
from typing import Any

from ..compare.config import CompareConfig
from ..compare.diff import compare_stages
from ..compare.floor import relative_rms
from ..results import StageDiff, TraceDiff, by_key
from ..trace.reader import Trace, load_trace
from .diagnose import DIAGNOSER

__all__ = ["StageLocality", "Localization", "localize", "replay_notes", "DEFAULT_OUTLIER"]

#: A local error this many times the median local error of the replayed stages stands out as a bug.
DEFAULT_OUTLIER = 10.0


def _rel(sd: StageDiff | None) -> float | None:
    if sd is None or sd.metrics is None:
        return None
    return relative_rms(sd.metrics.sqnr_db)


@dataclass(frozen=True)
class StageLocality:
    """One stage: accumulated (plain) and local (replayed) error, and its label.

    ``plain_rel`` and ``local_rel`` are relative RMS errors (``None`` when the stage has no
    metrics); ``plain_status`` / ``local_status`` the stage's :class:`~parity.results.Status` in
    each diff.

    >>> StageLocality("b", 1, "fail", "fail", 0.2, 0.2, "culprit").to_dict()["local_rel_rms"]
    0.2
    """

    key: str
    position: int
    plain_status: str | None
    local_status: str | None
    plain_rel: float | None
    local_rel: float | None
    label: str  #: "culprit", "also local", "propagated", "ok", or "missing"
    #: why the replayed capture could not feed the reference's value on from this stage
    #: ("not substituted: ..."), so that later stages' local errors include this stage's error
    replay_note: str | None = None

    def to_dict(self) -> dict[str, Any]:
        def num(x: float | None) -> float | str | None:
            return x if x is None or math.isfinite(x) else str(x)

        d = {"key": self.key, "position": self.position, "plain": self.plain_status, "local": self.local_status,
             "plain_rel_rms": num(self.plain_rel), "local_rel_rms": num(self.local_rel), "label": self.label}
        if self.replay_note is not None:
            d["replay"] = self.replay_note
        return d


@dataclass(frozen=True)
class Localization:
    """The result of :func:`localize`: the plain and the replayed diff, and one
    :class:`StageLocality` per stage of the plain diff, in its order.

    ``noise`` is the median local relative RMS error of the replayed stages (``None`` with fewer
    than three), ``outlier`` the factor above it that stands out, ``passes`` the forward passes of
    the candidate that produced the two captures. Truthy when parity holds.

    >>> loc = parity.compare_traces("ref.trace", "cand.trace", local="ref.trace")  # a perfect replay
    >>> bool(loc), loc.culprit, loc.plain_first, loc.to_dict()["schema"]
    (False, None, 'layers.0.attn_scores', 'parity.localize')
    """

    plain: TraceDiff
    local: TraceDiff
    stages: tuple[StageLocality, ...]
    outlier: float
    noise: float | None
    passes: int = 2
    #: stages the replayed capture recorded but could not substitute, with the reason (from the
    #: capture's replay record: ``parity.torch.capture(..., replay=)``, ``parity capture hf --replay``)
    not_substituted: Mapping[str, str] = field(default_factory=dict)

    @property
    def culprit(self) -> str | None:
        """The first stage whose own computation diverges, or None."""
        return next((s.key for s in self.stages if s.label == "culprit"), None)

    @property
    def plain_first(self) -> str | None:
        first = self.plain.first_divergence
        return first.key if first else None

    def stage(self, key: str) -> StageLocality:
        """The stage ``key`` (``KeyError`` if there is none)."""
        return by_key(self.stages, key)

    @property
    def passed(self) -> bool:
        """The plain diff passes and no stage's own computation diverges."""
        return self.plain.passed and self.culprit is None

    def __bool__(self) -> bool:
        return self.passed

    @property
    def local_failing(self) -> list[str]:
        """Stages whose own computation diverges (the culprit, then every "also local" one)."""
        return [s.key for s in self.stages if s.label in ("culprit", "also local")]

    def to_dict(self) -> dict[str, Any]:
        return {"schema": "parity.localize", "schema_version": 1, "passed": self.passed, "culprit": self.culprit,
                "plain_first_divergence": self.plain_first, "passes": self.passes, "outlier": self.outlier,
                "noise_rel_rms": self.noise, "ref": self.plain.ref_path, "cand": self.plain.cand_path,
                "cand_local": self.local.cand_path, "not_substituted": dict(self.not_substituted),
                "stages": [s.to_dict() for s in self.stages]}


def localize(ref: str | os.PathLike[str] | Trace, cand: str | os.PathLike[str] | Trace,
             cand_local: str | os.PathLike[str] | Trace,
             config: str | os.PathLike[str] | CompareConfig | Mapping[str, Any] | None = None, *,
             outlier: float = DEFAULT_OUTLIER, passes: int = 2, diagnose: bool = True,
             noise_floor: Any = None, **overrides: Any) -> Localization:
    """Compare the plain and the replayed candidate captures against ``ref`` and label each stage.

    ``parity.compare_traces(ref, cand, local=cand_local, ...)`` calls this.

    Args:
        ref: the reference trace; cand: the candidate's plain capture; cand_local: the
            candidate captured under ``parity.replay(ref, ...)``.
        config, noise_floor, **overrides: as for :func:`parity.compare_traces` (the same for
            both diffs); diagnose: attach diagnoses to both.
        outlier: a local error this many times the median local error stands out (0 disables).
        passes: forward passes of the candidate that produced the traces (reported).

    >>> loc = localize("ref.trace", "cand.trace", "cand.trace", "parity.toml")  # no replayed capture: every failure looks local
    >>> loc.culprit, loc.stage("layers.0.attn_probs").label, loc.passes
    ('layers.0.attn_scores', 'also local', 2)
    """
    diagnoser = DIAGNOSER if diagnose else None
    if not isinstance(cand_local, Trace):
        cand_local = load_trace(cand_local)
    notes = replay_notes(cand_local)
    plain = compare_stages(ref, cand, config, diagnoser=diagnoser, noise_floor=noise_floor, **overrides)
    local = compare_stages(ref, cand_local, config, diagnoser=diagnoser, noise_floor=noise_floor, **overrides)
    by_key_local = {s.key: s for s in local.stages}
    rels = [r for s in local.compared if (r := _rel(s)) is not None and math.isfinite(r)]
    noise = statistics.median(rels) if len(rels) >= 3 else None  # too few stages: no noise estimate
    out: list[StageLocality] = []
    seen_culprit = False
    for sd in plain.stages:
        lsd = by_key_local.get(sd.key)
        lrel, prel = _rel(lsd), _rel(sd)
        if sd.ref is None or sd.cand is None or lsd is None or lsd.cand is None:
            out.append(StageLocality(sd.key, sd.ref.position if sd.ref else -1, sd.status, lsd.status if lsd else None,
                                     prel, lrel, "missing"))
            continue
        # stands out: above outlier × the median local error (any error at all when most stages are exact)
        local_bad = lsd.diverged or (outlier > 0 and noise is not None and lrel is not None and lrel > 0
                                     and (not math.isfinite(lrel) or lrel > outlier * noise))
        if local_bad:
            label = "also local" if seen_culprit else "culprit"
            seen_culprit = True
        elif sd.diverged:
            label = "propagated"
        else:
            label = "ok"
        out.append(StageLocality(sd.key, sd.ref.position, sd.status, lsd.status, prel, lrel, label, notes.get(sd.key)))
    return Localization(plain, local, tuple(out), outlier, noise, passes, notes)


def replay_notes(trace: Trace) -> dict[str, str]:
    """Stage key -> why a replayed capture did not substitute it: each stage's provenance
    ``replay`` ("not substituted: REASON"), and the trace's ``meta["replay"]["not_substituted"]``
    (which also names reference stages the capture never produced, e.g. inside a fused kernel).
    Empty for a capture that substituted everything, or that is not a replay.

    >>> replay_notes(parity.load_trace("cand.trace"))
    {}
    """
    notes: dict[str, str] = {}
    record = trace.meta.get("replay") if isinstance(trace.meta, dict) else None
    listed = record.get("not_substituted") if isinstance(record, dict) else None
    if isinstance(listed, dict):
        notes.update({str(k): str(v) for k, v in listed.items()})
    for s in trace:
        note = s.provenance.get("replay")
        if isinstance(note, str) and note.startswith("not substituted"):
            notes[s.key] = note
    return notes
