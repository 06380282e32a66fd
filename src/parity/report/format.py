"""Text shared by every renderer: numbers, shapes and dtypes, the verdict, the summary counts,
and the plain-text explanations of the first divergence and of an empty comparison."""

from __future__ import annotations

import math

from collections.abc import Iterator

from ..compare.diff import StageDiff, Status, TraceDiff, Verdict
from ..compare.image import image_of

__all__ = ["format_float", "metrics_line", "shape_text", "dtype_text", "verdict_text", "result_counts",
           "describe_nothing_compared", "describe_first_divergence", "table_rows", "TABLE_PASSING"]

#: Passing stages a Markdown or HTML table lists at most (the first and last half of them; every
#: stage that does not pass is listed): a table of a million stages is no report.
TABLE_PASSING = 2000


def format_float(x: float | None, digits: int = 3) -> str:
    """Compact number formatting used by every renderer (``nan``, ``inf`` spelled out).

    Example:
        >>> format_float(0.000123456), format_float(3.14159), format_float(float("inf")), format_float(None)
        ('1.23e-04', '3.142', 'inf', '-')
    """
    if x is None:
        return "-"
    if math.isnan(x):
        return "nan"
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    if x == 0:
        return "0"
    if 1e-3 <= abs(x) < 1e4:
        return f"{x:.{digits + 1}g}"
    return f"{x:.{digits - 1}e}"


def metrics_line(m) -> str:
    """``max rel … · rms … · cosine … · SQNR … dB · max ULP …`` (Markdown and HTML reports).

    Example:
        >>> d = parity.compare_traces("ref.trace", "cand.trace")
        >>> metrics_line(d.first_divergence.metrics).split(" · ")[0]
        'max rel 0.5'
    """
    return (f"max rel {format_float(m.max_rel_err)} · rms {format_float(m.rms_err)} · cosine "
            f"{format_float(m.cosine, 6)} · SQNR {format_float(m.sqnr_db)} dB · max ULP {format_float(m.max_ulp)}")


def shape_text(sd: StageDiff) -> str:
    """``2×3``, ``scalar``, or ``2×3 vs 3×2`` when the sides differ (shared by every renderer).

    Example:
        >>> shape_text(parity.compare_traces("ref.trace", "cand.trace").first_divergence)
        '4×8×8'
    """
    def one(shape: tuple[int, ...]) -> str:
        return "×".join(str(d) for d in shape) or "scalar"

    if sd.ref and sd.cand and sd.ref.shape != sd.cand.shape:
        return f"{one(sd.ref.shape)} vs {one(sd.cand.shape)}"
    side = sd.ref or sd.cand
    return one(side.shape) if side else "-"


def dtype_text(sd: StageDiff) -> str:
    """``F32``, or ``F32/BF16`` when the sides differ (shared by every renderer).

    Example:
        >>> dtype_text(parity.compare_traces("ref.trace", "cand.trace").first_divergence)
        'F64/F32'
    """
    if sd.ref and sd.cand and sd.ref.dtype != sd.cand.dtype:
        return f"{sd.ref.dtype}/{sd.cand.dtype}"
    side = sd.ref or sd.cand
    return (side.dtype or "-") if side else "-"


_VERDICT_TEXT = {Verdict.PARITY: "PARITY HOLDS", Verdict.DIVERGENCE: "DIVERGENCE FOUND",
                 Verdict.NOTHING_COMPARED: "NOTHING COMPARED"}


def verdict_text(diff: TraceDiff) -> str:
    """``PARITY HOLDS``, ``DIVERGENCE FOUND`` or ``NOTHING COMPARED`` (shared by every renderer).

    Example:
        >>> verdict_text(parity.compare_traces("ref.trace", "cand.trace"))
        'DIVERGENCE FOUND'
    """
    return _VERDICT_TEXT[diff.verdict]


def result_counts(diff: TraceDiff) -> str:
    """The stage counts of the Markdown and HTML summaries, ``·``-separated.

    Example:
        >>> result_counts(parity.compare_traces("ref.trace", "cand.trace", config="parity.toml"))
        '5 pass · 26 fail · 0 expected · 0 only in reference · 0 only in candidate'
    """
    c = diff.summary()
    return (f"{c['pass']} pass · {c['fail']} fail · {c['expected']} expected · {c['missing']} only in reference · "
            f"{c['extra']} only in candidate" + (f" · {c['ignored']} ignored" if c["ignored"] else "")
            + (" · strict" if diff.strict else ""))


def describe_nothing_compared(diff: TraceDiff) -> list[str]:
    """Plain-text lines explaining a comparison in which no stage was present on both sides.

    Empty unless :attr:`TraceDiff.nothing_compared`. Shared by the text and Markdown reports.

    Example:
        >>> import numpy as np, tempfile, os, parity
        >>> d = tempfile.mkdtemp(); r, c = os.path.join(d, "r.trace"), os.path.join(d, "c.trace")
        >>> with parity.record(r):
        ...     _ = parity.tap("pix0_vector", np.ones(3))
        >>> with parity.record(c):
        ...     _ = parity.tap("pix0_vector_meters", np.ones(3))
        >>> describe_nothing_compared(parity.compare_traces(r, c))[0]
        'Nothing was compared: no stage is present in both traces (1 only in the reference, 1 only in the candidate).'
    """
    if not diff.nothing_compared:
        return []
    n_ref, n_cand = len(diff.missing), len(diff.extra)
    if n_ref == 0 and n_cand == 0:
        return ["Nothing was compared: both traces are empty" + (" (or every stage is ignored)." if diff.ignored else "."),
                "  An empty comparison is not parity."]
    return [f"Nothing was compared: no stage is present in both traces ({n_ref} only in the reference, "
            f"{n_cand} only in the candidate).",
            "  An empty comparison is not parity. If the two sides name the same quantities differently, "
            "`parity align REF CAND` suggests pairs and can write them as [aliases]."]


def describe_first_divergence(diff: TraceDiff) -> list[str]:
    """Plain-text lines explaining the first divergence (shared by text and Markdown reports).

    Example:
        >>> describe_first_divergence(parity.compare_traces("ref.trace", "cand.trace"))[0]
        'First divergence: layers.0.attn_scores (stage 6 of the reference)'
    """
    first = diff.first_divergence
    if first is None:
        return []
    lines = [f"First divergence: {first.key} (stage {first.ref.position + 1 if first.ref else '?'} of the reference)"]
    if first.message:
        lines.append(f"  {first.message}")
    m = first.metrics
    if m is not None and m.max_abs_index is not None:
        lines.append(f"  worst element {m.max_abs_index}: reference {format_float(m.max_abs_ref, 6)}, "
                     f"candidate {format_float(m.max_abs_cand, 6)}")
        lines.append(f"  max rel {format_float(m.max_rel_err)} · rms {format_float(m.rms_err)} · cosine "
                     f"{format_float(m.cosine, 6)} · SQNR {format_float(m.sqnr_db)} dB")
    image = image_of(first)
    if image is not None:
        lines.append(f"  image: {image.summary()}")
    for d in first.diagnoses:
        lines.append(f"  likely: {d.summary}")
    later = len(diff.divergent) - 1
    if later > 0:
        lines.append(f"  {later} later stage(s) also diverge; fix this one first, later errors may be propagated.")
    return lines




def table_rows(diff: TraceDiff, max_passing: int | None) -> Iterator[StageDiff | int]:
    """The stages a report table lists, in order: every stage when ``max_passing`` is ``None`` or
    at most that many pass; else every stage that does not pass and the first and last
    ``max_passing // 2`` passing ones, an ``int`` (how many) standing for each run of passing
    stages left out.

    >>> d = parity.compare_traces("ref.trace", "cand.trace")
    >>> [r if isinstance(r, int) else r.status for r in table_rows(d, 2)][:4]
    ['pass', 3, 'pass', 'fail']
    """
    n_pass = diff.summary()[Status.PASS]
    head, tail = ((n_pass, n_pass) if max_passing is None or n_pass <= max_passing
                  else (max_passing // 2, n_pass - max_passing // 2))
    hidden, ordinal = 0, -1
    for sd in diff.stages:
        if sd.status == Status.PASS:
            ordinal += 1
            if head <= ordinal < tail:
                hidden += 1
                continue
        if hidden:
            yield hidden
            hidden = 0
        yield sd
    if hidden:
        yield hidden
