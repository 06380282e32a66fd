"""Image metrics for 2-D stages: the comparisons simulator people use for detector images.

A detector image (axes ``("slow", "fast")``, or any 2-D stage opted in by ``[images]`` or by a
``correlation_min`` tolerance) gets, besides the element-wise metrics:

* **Pearson correlation** of the two images (1 for images equal up to brightness and offset);
* **peak matching**: local maxima (3×3 neighbourhood) above a threshold on each side, matched
  one-to-one within ``radius`` pixels, nearest first; counts matched / missing (in the reference
  only) / extra (in the candidate only), and the mean offset candidate − reference of matched peaks.

The threshold is the same for both images, so a brightness bug shows as missing or extra peaks:
by default ``median + 0.1 × (max − median)`` of the reference. At most ``max_peaks`` of the
brightest peaks per side are kept.

Example:
    >>> import numpy as np
    >>> ref = np.zeros((32, 32)); ref[5, 7] = ref[20, 12] = 10.0
    >>> cand = np.zeros((32, 32)); cand[6, 7] = cand[20, 12] = 10.0; cand[28, 28] = 9.0
    >>> m = image_metrics(ref, cand)
    >>> m.matched, m.missing, m.extra, m.mean_offset
    (2, 0, 1, (0.5, 0.0))
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from .batch import extra_value
from ..errors import UsageError

__all__ = ["ImageMetrics", "image_metrics", "find_peaks", "is_image_stage", "image_of", "IMAGE_AXES", "DEFAULT_RADIUS"]

#: Axis names that make a 2-D stage an image without any configuration.
IMAGE_AXES = (("slow", "fast"), ("fast", "slow"), ("y", "x"), ("row", "col"), ("rows", "cols"))
DEFAULT_RADIUS = 2.0
DEFAULT_MAX_PEAKS = 2000


@dataclass(frozen=True)
class ImageMetrics:
    """Image comparison of one 2-D stage (see the module docstring).

    Attributes:
        pearson: Pearson correlation of the two images (NaN when either is constant).
        threshold: the peak threshold used on both sides.
        radius: the matching radius in pixels.
        ref_peaks, cand_peaks: peaks found on each side (after the ``max_peaks`` cap).
        matched, missing, extra: matched pairs, reference-only peaks, candidate-only peaks.
        mean_offset: mean (slow, fast) offset candidate − reference of matched peaks, in pixels.
        mean_distance: mean distance of matched pairs, in pixels.
        examples: up to 5 ``[row, col]`` of missing and of extra peaks (to look at).

    >>> ref = np.zeros((32, 32)); ref[5, 7] = ref[20, 12] = 10.0
    >>> cand = ref.copy(); cand[28, 28] = 9.0
    >>> m = image_metrics(ref, cand)
    >>> print(m.summary()); m.extra_examples
    pearson 0.843316 · peaks 2/2 matched within 2 px, 0 missing, 1 extra, mean offset (0, 0) px
    ((28, 28),)
    """

    pearson: float
    threshold: float
    radius: float
    ref_peaks: int
    cand_peaks: int
    matched: int
    missing: int
    extra: int
    mean_offset: tuple[float, float] | None
    mean_distance: float | None
    missing_examples: tuple[tuple[int, int], ...] = ()
    extra_examples: tuple[tuple[int, int], ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"pearson": _num(self.pearson), "threshold": _num(self.threshold), "radius": self.radius,
                "ref_peaks": self.ref_peaks, "cand_peaks": self.cand_peaks, "matched": self.matched,
                "missing": self.missing, "extra": self.extra,
                "mean_offset": list(self.mean_offset) if self.mean_offset is not None else None,
                "mean_distance": self.mean_distance,
                "missing_examples": [list(p) for p in self.missing_examples],
                "extra_examples": [list(p) for p in self.extra_examples]}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ImageMetrics:
        off = d.get("mean_offset")
        return cls(_unnum(d["pearson"]), _unnum(d["threshold"]), float(d["radius"]), int(d["ref_peaks"]),
                   int(d["cand_peaks"]), int(d["matched"]), int(d["missing"]), int(d["extra"]),
                   (float(off[0]), float(off[1])) if off else None,
                   float(d["mean_distance"]) if d.get("mean_distance") is not None else None,
                   tuple((int(a), int(b)) for a, b in d.get("missing_examples", ())),
                   tuple((int(a), int(b)) for a, b in d.get("extra_examples", ())))

    def summary(self) -> str:
        """``pearson 0.99987 · peaks 118/120 matched within 2 px, 2 missing, 0 extra, mean offset (0.5, 0)``."""
        text = f"pearson {self.pearson:.6g} · peaks {self.matched}/{self.ref_peaks} matched within {self.radius:g} px"
        text += f", {self.missing} missing, {self.extra} extra"
        if self.mean_offset is not None:
            text += f", mean offset ({self.mean_offset[0]:.3g}, {self.mean_offset[1]:.3g}) px"
        return text


def _num(x: float) -> float | str:
    return x if math.isfinite(x) else ("nan" if math.isnan(x) else ("inf" if x > 0 else "-inf"))


def _unnum(x: Any) -> float:
    return float(x)  # float("nan") / float("inf") read the spelled-out forms too


def is_image_stage(shape: tuple[int, ...], axes: tuple[str, ...] | None) -> bool:
    """A 2-D stage whose axes name an image (``("slow", "fast")``...).

    >>> is_image_stage((32, 32), ("slow", "fast")), is_image_stage((32, 32), ("seq", "hidden"))
    (True, False)
    """
    return len(shape) == 2 and axes is not None and tuple(a.lower() for a in axes) in IMAGE_AXES


def find_peaks(img: np.ndarray, threshold: float, max_peaks: int = DEFAULT_MAX_PEAKS) -> np.ndarray:
    """``(n, 2)`` integer [row, col] of local maxima (>= their 8 neighbours, > ``threshold``),
    brightest first, at most ``max_peaks``; plateaus give their first pixel in row-major order.

    >>> img = np.zeros((8, 8)); img[2, 3] = 5.0; img[6, 6] = img[6, 7] = 7.0  # a peak and a plateau
    >>> find_peaks(img, threshold=1.0).tolist()
    [[6, 6], [2, 3]]
    """
    a = np.asarray(img, dtype=np.float64)
    if a.ndim != 2 or a.size == 0:
        return np.zeros((0, 2), dtype=np.int64)
    p = np.pad(a, 1, mode="constant", constant_values=-np.inf)
    c = p[1:-1, 1:-1]
    is_max = np.isfinite(c) & (c > threshold)
    rows, cols = a.shape
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            if dy == 0 and dx == 0:
                continue
            nb = p[1 + dy:1 + dy + rows, 1 + dx:1 + dx + cols]
            # strictly greater than earlier neighbours (plateau: first pixel wins), >= later ones
            is_max &= (c > nb) if (dy, dx) < (0, 0) else (c >= nb)
    idx = np.argwhere(is_max)
    if len(idx) > max_peaks:
        vals = a[idx[:, 0], idx[:, 1]]
        idx = idx[np.argsort(-vals, kind="stable")[:max_peaks]]
    elif len(idx):
        vals = a[idx[:, 0], idx[:, 1]]
        idx = idx[np.argsort(-vals, kind="stable")]
    return idx.astype(np.int64)


def _match(rp: np.ndarray, cp: np.ndarray, radius: float) -> list[tuple[int, int, float]]:
    """One-to-one matches (i, j, distance) within ``radius``, nearest pairs first."""
    if len(rp) == 0 or len(cp) == 0:
        return []
    r = int(math.ceil(radius))
    grid: dict[tuple[int, int], list[int]] = {}
    cell = max(r, 1)
    for j, (y, x) in enumerate(cp):
        grid.setdefault((int(y) // cell, int(x) // cell), []).append(j)
    pairs = []
    for i, (y, x) in enumerate(rp):
        gy, gx = int(y) // cell, int(x) // cell
        for oy in (-1, 0, 1):
            for ox in (-1, 0, 1):
                for j in grid.get((gy + oy, gx + ox), ()):
                    d = math.hypot(float(cp[j][0] - y), float(cp[j][1] - x))
                    if d <= radius:
                        pairs.append((d, i, j))
    pairs.sort()
    used_r, used_c, out = set(), set(), []
    for d, i, j in pairs:
        if i not in used_r and j not in used_c:
            used_r.add(i)
            used_c.add(j)
            out.append((i, j, d))
    return out


def image_metrics(ref: np.ndarray, cand: np.ndarray, *, threshold: float | None = None,
                  radius: float = DEFAULT_RADIUS, max_peaks: int = DEFAULT_MAX_PEAKS) -> ImageMetrics:
    """Pearson correlation and peak matching of two images of the same shape (float64 math).

    Args:
        ref, cand: 2-D arrays of the same shape.
        threshold: peak threshold for both sides (default from the reference, see the module docstring).
        radius: matching radius in pixels.
        max_peaks: brightest peaks kept per side.

    >>> img = np.zeros((16, 16)); img[4, 4] = 1.0
    >>> m = image_metrics(img, 2 * img)  # twice as bright: same peaks, correlation 1
    >>> m.pearson, m.matched, m.missing, m.extra
    (1.0, 1, 0, 0)
    """
    r = np.asarray(ref, dtype=np.float64)
    c = np.asarray(cand, dtype=np.float64)
    if r.shape != c.shape or r.ndim != 2:
        raise UsageError(f"image metrics need two 2-D arrays of one shape, got {r.shape} and {c.shape}")
    finite = np.isfinite(r) & np.isfinite(c)
    rf, cf = r[finite], c[finite]
    pearson = float("nan")
    if rf.size > 1:
        rd, cd = rf - rf.mean(), cf - cf.mean()
        denom = math.sqrt(float(np.dot(rd, rd)) * float(np.dot(cd, cd)))
        if denom > 0:
            pearson = max(-1.0, min(1.0, float(np.dot(rd, cd)) / denom))
    if threshold is None:
        vals = r[np.isfinite(r)]
        if vals.size:
            med, top = float(np.median(vals)), float(vals.max())
            threshold = med + 0.1 * (top - med)
        else:
            threshold = 0.0
    rp, cp = find_peaks(r, threshold, max_peaks), find_peaks(c, threshold, max_peaks)
    matches = _match(rp, cp, radius)
    off = dist = None
    if matches:
        d = np.array([cp[j] - rp[i] for i, j, _ in matches], dtype=np.float64)
        off = (float(d[:, 0].mean()), float(d[:, 1].mean()))
        dist = float(np.mean([m[2] for m in matches]))
    mi, mj = {m[0] for m in matches}, {m[1] for m in matches}
    missing = [tuple(int(v) for v in rp[i]) for i in range(len(rp)) if i not in mi]
    extra = [tuple(int(v) for v in cp[j]) for j in range(len(cp)) if j not in mj]
    return ImageMetrics(pearson, float(threshold), float(radius), len(rp), len(cp), len(matches), len(missing),
                        len(extra), off, dist, tuple(missing[:5]), tuple(extra[:5]))


def image_of(sd: Any) -> ImageMetrics | None:
    """The :class:`ImageMetrics` a :class:`~parity.StageDiff` carries (``extra["image"]``), if any.

    >>> img = np.zeros((16, 16)); img[4, 4] = 1.0
    >>> sd = parity.StageDiff("detector", "ok", extra={"image": image_metrics(img, img).to_dict()})
    >>> image_of(sd).matched, image_of(parity.StageDiff("logits", "ok"))
    (1, None)
    """
    d = extra_value(sd, "image")
    return ImageMetrics.from_dict(d) if isinstance(d, dict) else None
