"""``parity.compare_traces``: the front door that composes the layers into one comparison.

The per-stage comparison is :func:`parity.compare.diff.compare_stages` (it judges every stage and
knows nothing of diagnoses); this module hands it :data:`~parity.localize.diagnose.DIAGNOSER`, so
that every failing stage carries its likely explanations and the trace-level ones (the first stage
where NaN appears, ...) are added; sends two event traces to :func:`parity.events.compare_events`;
and with ``local=`` returns the local-versus-propagated map of :func:`parity.localize.local.localize`.
The first divergence of the result is :attr:`parity.results.TraceDiff.first_divergence`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from ..compare.config import OVERRIDES, CompareConfig
from ..compare.diff import Progress, compare_stages
from ..compare.floor import NoiseFloor
from ..errors import UsageError
from ..events import EventDiff, compare_events, is_event_trace
from ..results import TraceDiff
from ..trace.reader import Trace, load_trace
from .diagnose import DIAGNOSER
from .local import Localization, localize

__all__ = ["compare_traces"]

TracePath = str | os.PathLike[str]


def compare_traces(ref: TracePath | Trace, cand: TracePath | Trace,
                   config: TracePath | CompareConfig | Mapping[str, Any] | None = None, *,
                   local: TracePath | None = None, diagnose: bool = True, progress: Progress | None = None,
                   noise_floor: NoiseFloor | TracePath | None = None, scheduler: Any = None,
                   **overrides: Any) -> TraceDiff | EventDiff | Localization:
    """Compare a candidate trace against a reference trace, stage by stage.

    Args:
        ref: the reference trace (path or loaded :class:`~parity.Trace`).
        cand: the candidate trace.
        config: a TOML path, a :class:`~parity.CompareConfig`, or a dict shaped like the TOML file.
        local: the candidate captured under ``parity.replay(ref, ...)`` (every stage fed the
            reference's inputs): return the :class:`~parity.localize.local.Localization` of
            :func:`parity.localize.local.localize` instead, which names the stage whose *own*
            computation diverges (the culprit) and labels later failures "propagated".
        diagnose: attach diagnoses to divergent stages (per stage, and trace-level ones such as
            the first stage where NaN appears).
        progress: called as ``progress(done, total, key)`` after each stage.
        noise_floor: per-stage noise floors (a :class:`~parity.compare.floor.NoiseFloor` or the
            file ``parity calibrate`` wrote): a stage with a floor passes when its relative RMS
            error is within the floor's margin, instead of the element-wise rtol/atol.
        scheduler: compare on a Dask cluster: ``"local"`` / ``"local:N"`` (N worker processes
            started for this call), a scheduler address (``"tcp://host:8786"``) or a
            ``distributed.Client``; see :mod:`parity.compare.executor`. The result is the same,
            bit for bit. Needs ``parity[dask]``; not with ``local`` or event traces.
        **overrides: keyword overrides of the config's fields, applied on top of ``config``:
            {overrides}. The schema, with what each one means, is :class:`~parity.CompareConfig`.

    Returns:
        A :class:`~parity.TraceDiff`; a numeric mismatch is a result, never an exception. For two
        event traces (``parity import --format events``), a :class:`parity.events.EventDiff`
        instead: events are aligned by edit distance (see docs/events.md). With ``local``, a
        :class:`~parity.localize.local.Localization`.

    Raises:
        TraceFormatError: a trace cannot be read.
        ConfigError: the config is wrong, e.g. (under ``strict``) a pattern matches no stage.
        UsageError: an unknown override (the message lists the valid ones), ``local`` with
            event traces, or a ``scheduler`` that is malformed or cannot be reached.

    Example:
        >>> diff = parity.compare_traces("ref.trace", "cand.trace", rtol=1e-4, atol=1e-6)
        >>> bool(diff), diff.first_divergence.key, diff.first_divergence.diagnoses[0].kind
        (False, 'layers.0.attn_scores', 'scale')
        >>> parity.compare_traces("ref.trace", "cand.trace", rtoll=1e-4)
        Traceback (most recent call last):
        parity.errors.UsageError: unknown comparison option 'rtoll'; the options are: rtol, atol, cosine_min, sqnr_min_db, correlation_min, stages, aliases, ignore, expected, strict, rename, transforms.
    """
    rt = ref if isinstance(ref, Trace) else load_trace(ref)
    ct = cand if isinstance(cand, Trace) else load_trace(cand)
    if scheduler is not None and (local is not None or (is_event_trace(rt) and is_event_trace(ct))):
        raise UsageError("scheduler= compares the stages of two traces on Dask; it does not apply to "
                         + ("local=." if local is not None else "event traces."), path=ct.path)
    if is_event_trace(rt) and is_event_trace(ct):
        if local is not None:
            raise UsageError("local= localizes a divergence between traces of stages; these are event traces.",
                             path=ct.path)
        # event logs are aligned by edit distance, not by key (see parity.events): an EventDiff,
        # with the same passed / first_divergence / to_dict() surface
        return compare_events(rt, ct, config if isinstance(config, (str, os.PathLike)) else None)
    if local is not None:
        return localize(rt, ct, local, config=config, diagnose=diagnose, noise_floor=noise_floor, **overrides)
    if scheduler is None:
        return compare_stages(rt, ct, config, diagnoser=DIAGNOSER if diagnose else None, progress=progress,
                              noise_floor=noise_floor, **overrides)
    from ..compare.executor import dask_executor

    with dask_executor(scheduler) as executor:
        return compare_stages(rt, ct, config, diagnoser=DIAGNOSER if diagnose else None, progress=progress,
                              noise_floor=noise_floor, executor=executor, **overrides)


compare_traces.__doc__ = (compare_traces.__doc__ or "").replace("{overrides}", ", ".join(f"``{k}``" for k in OVERRIDES))
