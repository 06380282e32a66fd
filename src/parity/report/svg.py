"""SVG and PNG primitives of the HTML reports: coordinates, axis scales, markers, colour maps.

Shared by every plot parity draws (:mod:`.plots` for a diff, :mod:`.localize` for a localization).
Output is plain text; nothing here reads a trace.
"""

from __future__ import annotations

import base64
import html
import math
import struct
import zlib
from collections.abc import Sequence

import numpy as np

__all__ = ["esc", "coord", "LogScale", "LinScale", "nice_step", "marker", "VIRIDIS", "colormap", "diverging", "png", "png_uri"]

#: HTML/SVG text escaping (quotes too: safe inside attribute values).
esc = html.escape


def coord(x: float) -> str:
    """Compact SVG coordinate: one decimal at most, NaN as ``0``.

    Example:
        >>> coord(12.0), coord(3.14159), coord(float("nan"))
        ('12', '3.1', '0')
    """
    return f"{x:.1f}".rstrip("0").rstrip(".") if x == x else "0"


class LogScale:
    """A base-10 log axis from ``y_bottom`` (smallest decade) up to ``y_top``, fitted to ``values``.

    Example:
        >>> s = LogScale([1e-6, 3e-3], y_top=0, y_bottom=100)
        >>> (s.lo, s.hi), s.y(1e-6), s.clip(0.0), s.ticks()[0]
        ((-6, -2), 100.0, (100, 'low'), (100.0, '1e-6'))
    """

    def __init__(self, values: Sequence[float | None], y_top: float, y_bottom: float):
        pos = [v for v in values if v is not None and math.isfinite(v) and v > 0]
        if pos:
            lo, hi = math.floor(math.log10(min(pos))), math.ceil(math.log10(max(pos)))
        else:
            lo, hi = -16, 0
        if hi <= lo:
            lo, hi = lo - 1, hi + 1
        self.lo, self.hi, self.y_top, self.y_bottom = lo, hi, y_top, y_bottom

    def y(self, v: float) -> float:
        t = (math.log10(v) - self.lo) / (self.hi - self.lo)
        return self.y_bottom - t * (self.y_bottom - self.y_top)

    def clip(self, v: float) -> tuple[float, str | None]:
        """y of ``v`` and ``"high"``/``"low"`` when it lies off the axis (0, inf)."""
        if math.isinf(v) and v > 0:
            return self.y_top, "high"
        if v <= 0 or math.log10(v) < self.lo:
            return self.y_bottom, "low"
        if math.log10(v) > self.hi:
            return self.y_top, "high"
        return self.y(v), None

    def ticks(self) -> list[tuple[float, str]]:
        step = max(1, math.ceil((self.hi - self.lo) / 6))
        return [(self.y(10.0 ** e), f"1e{e}") for e in range(self.lo, self.hi + 1, step)]


def nice_step(span: float, count: int = 5) -> float:
    """A 1, 2 or 5 × 10^k step that cuts ``span`` into about ``count`` parts.

    Example:
        >>> nice_step(37.0), nice_step(0.8)
        (10, 0.2)
    """
    raw = span / max(count, 1)
    mag = 10 ** math.floor(math.log10(raw))
    for m in (1, 2, 5, 10):
        if raw <= m * mag:
            return m * mag
    return 10 * mag


class LinScale:
    """A linear axis fitted to ``values``, its ends rounded to a :func:`nice_step`.

    Example:
        >>> s = LinScale([3.0, 41.0], y_top=0, y_bottom=100)
        >>> (s.lo, s.hi, s.step), s.clip(50.0)
        ((0, 50, 10), (0.0, None))
    """

    def __init__(self, values: Sequence[float | None], y_top: float, y_bottom: float):
        fin = [v for v in values if v is not None and math.isfinite(v)]
        lo, hi = (min(fin), max(fin)) if fin else (0.0, 1.0)
        if hi - lo < 1e-9:
            lo, hi = lo - 1, hi + 1
        step = nice_step(hi - lo)
        self.lo, self.hi = math.floor(lo / step) * step, math.ceil(hi / step) * step
        self.step, self.y_top, self.y_bottom = step, y_top, y_bottom

    def y(self, v: float) -> float:
        return self.y_bottom - (v - self.lo) / (self.hi - self.lo) * (self.y_bottom - self.y_top)

    def clip(self, v: float) -> tuple[float, str | None]:
        if v > self.hi:
            return self.y_top, "high"
        if v < self.lo:
            return self.y_bottom, "low"
        return self.y(v), None

    def ticks(self) -> list[tuple[float, str]]:
        out, v = [], self.lo
        while v <= self.hi + self.step / 2:
            out.append((self.y(v), f"{v:g}"))
            v += self.step
        return out


def marker(x: float, y: float, cls: str, r: float, clip: str | None, tip: str) -> str:
    """A point of a series: a circle, or a triangle pointing off the axis when ``clip`` is set.

    Example:
        >>> marker(10, 20, "pt-fail", 3, None, "a<b")
        '<circle class="pt pt-fail" cx="10" cy="20" r="3"><title>a&lt;b</title></circle>'
    """
    title = f"<title>{esc(tip)}</title>"
    if clip == "high":
        return (f'<path class="pt {cls} pt-clip" d="M{coord(x)},{coord(y - r)} l{coord(r)},{coord(2 * r)} h{coord(-2 * r)}z">'
                f"{title}</path>")
    if clip == "low":
        return (f'<path class="pt {cls} pt-clip" d="M{coord(x)},{coord(y + r)} l{coord(r)},{coord(-2 * r)} h{coord(-2 * r)}z">'
                f"{title}</path>")
    return f'<circle class="pt {cls}" cx="{coord(x)}" cy="{coord(y)}" r="{coord(r)}">{title}</circle>'


#: viridis anchor colours (matplotlib's perceptually uniform map), interpolated linearly.
VIRIDIS = np.array([[68, 1, 84], [72, 40, 120], [62, 74, 137], [49, 104, 142], [38, 130, 142], [31, 158, 137],
                    [53, 183, 121], [110, 206, 88], [181, 222, 43], [253, 231, 37]], dtype=np.float64)


def colormap(t: np.ndarray) -> np.ndarray:
    """Viridis RGB (uint8, one more axis of 3) of ``t`` clipped to [0, 1].

    Example:
        >>> colormap(np.array([0.0, 1.0])).tolist()
        [[68, 1, 84], [253, 231, 37]]
    """
    pos = np.clip(t, 0, 1) * (len(VIRIDIS) - 1)
    i = np.minimum(pos.astype(np.int64), len(VIRIDIS) - 2)
    f = (pos - i)[..., None]
    return (VIRIDIS[i] * (1 - f) + VIRIDIS[i + 1] * f).round().astype(np.uint8)


def diverging(t: np.ndarray) -> np.ndarray:
    """-1 → blue, 0 → white, +1 → red (uint8 RGB).

    Example:
        >>> diverging(np.array([-1.0, 0.0, 1.0])).tolist()
        [[33, 102, 172], [247, 247, 247], [178, 24, 43]]
    """
    t = np.clip(np.nan_to_num(t), -1, 1)[..., None]
    blue, white, red = np.array([33, 102, 172.0]), np.array([247, 247, 247.0]), np.array([178, 24, 43.0])
    return np.where(t < 0, white + (blue - white) * -t, white + (red - white) * t).round().astype(np.uint8)


def png(rgb: np.ndarray) -> bytes:
    """Encode an ``(h, w, 3)`` uint8 image as PNG (filter 0 on every row).

    Example:
        >>> data = png(np.zeros((2, 3, 3), dtype=np.uint8))
        >>> data[:8], data[16:24]
        (b'\\x89PNG\\r\\n\\x1a\\n', b'\\x00\\x00\\x00\\x03\\x00\\x00\\x00\\x02')
    """
    h, w, _ = rgb.shape
    raw = b"".join(b"\x00" + rgb[row].tobytes() for row in range(h))

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))


def png_uri(rgb: np.ndarray) -> str:
    """:func:`png` as a ``data:`` URI, for an ``<image href>`` inside an SVG.

    Example:
        >>> png_uri(np.zeros((1, 1, 3), dtype=np.uint8))[:30]
        'data:image/png;base64,iVBORw0K'
    """
    return "data:image/png;base64," + base64.b64encode(png(rgb)).decode("ascii")
