"""Noise floors: per-stage tolerances derived from the error that rounding alone produces.

A noise floor (written by ``parity calibrate``, see :mod:`parity.localize.calibrate`) records, per
stage, the error of a low-precision capture against a high-precision one of the same computation:
its relative RMS error (RMS of the error divided by the RMS of the high-precision values) and its
absolute RMS error. Compared against a floor, a stage passes when

    relative RMS error of the candidate  <=  margin × the floor's relative RMS error

(the absolute RMS error is used instead for a stage whose values are all zero), as PyTorch's
accuracy minifier judges a low-precision run against a float64 reference. NaN or Inf where the
reference is finite always fails. The element-wise rtol/atol do not apply to a stage with a
floor; other stages keep them. Reports give the ratio (how many times the floor) per stage.

File format (TOML)::

    [noise_floor]
    margin = 3.0
    pairs = 2                         # calibration pairs measured
    [noise_floor.stages]
    "layers.0.attn_out" = { rel_rms = 2.1e-3, rms = 4.4e-4, max_abs = 3.1e-3 }

Example:
    >>> floor = NoiseFloor({"y": StageFloor(rel_rms=1e-3, rms=1e-3, max_abs=4e-3)}, margin=3.0)
    >>> floor.judge("y", rel_rms=2e-3, rms=2e-3)
    (True, 2.0)
    >>> floor.judge("y", rel_rms=5e-3, rms=5e-3)
    (False, 5.0)
"""

from __future__ import annotations

import math
import os
import tomllib
from dataclasses import dataclass, field
from typing import Any

from ..errors import ConfigError
from .batch import extra_value

__all__ = ["StageFloor", "NoiseFloor", "load_noise_floor", "relative_rms", "floor_ratio", "DEFAULT_MARGIN"]

#: Margin over the measured floor (PyTorch's minifier uses 2-3).
DEFAULT_MARGIN = 3.0


def relative_rms(sqnr_db: float) -> float | None:
    """RMS error ÷ RMS of the reference, from the SQNR; ``None`` when the reference is all zeros.

    >>> relative_rms(40.0), relative_rms(float("inf")), relative_rms(float("-inf"))
    (0.01, 0.0, None)
    """
    if math.isnan(sqnr_db) or sqnr_db == -math.inf:
        return None
    return 0.0 if sqnr_db == math.inf else 10.0 ** (-sqnr_db / 20.0)


@dataclass(frozen=True)
class StageFloor:
    """The rounding-only error of one stage: relative RMS, absolute RMS and max abs error.

    >>> StageFloor(rel_rms=1e-3, rms=2e-4, max_abs=5e-4).to_dict()
    {'rel_rms': 0.001, 'rms': 0.0002, 'max_abs': 0.0005}
    >>> StageFloor(rel_rms=None, rms=0.0, max_abs=0.0).to_dict()  # an all-zero stage: no relative RMS
    {'rms': 0.0, 'max_abs': 0.0}
    """

    rel_rms: float | None
    rms: float
    max_abs: float

    def to_dict(self) -> dict[str, float]:
        d = {"rms": self.rms, "max_abs": self.max_abs}
        if self.rel_rms is not None:
            d = {"rel_rms": self.rel_rms, **d}
        return d


@dataclass(frozen=True)
class NoiseFloor:
    """Per-stage floors and the margin allowed over them (see the module docstring).

    >>> floor = NoiseFloor({"logits": StageFloor(rel_rms=1e-2, rms=1e-3, max_abs=4e-3)}, pairs=2)
    >>> print(floor.to_toml())
    [noise_floor]
    margin = 3.0
    pairs = 2
    <BLANKLINE>
    [noise_floor.stages]
    "logits" = { rel_rms = 0.01, rms = 0.001, max_abs = 0.004 }
    <BLANKLINE>
    """

    stages: dict[str, StageFloor] = field(default_factory=dict)
    margin: float = DEFAULT_MARGIN
    pairs: int = 0
    source: str | None = None

    def get(self, key: str) -> StageFloor | None:
        return self.stages.get(key)

    def judge(self, key: str, *, rel_rms: float | None, rms: float) -> tuple[bool, float]:
        """``(passes, ratio)`` of a stage's error against its floor (ratio: error ÷ floor)."""
        f = self.stages[key]
        if f.rel_rms is not None and rel_rms is not None and math.isfinite(rel_rms):
            observed, floor = rel_rms, f.rel_rms
        else:
            observed, floor = rms, f.rms
        if not math.isfinite(observed):
            return False, math.inf
        if floor == 0.0:
            return observed == 0.0, (0.0 if observed == 0.0 else math.inf)
        ratio = observed / floor
        return ratio <= self.margin, ratio

    def to_toml(self, header: str | None = None) -> str:
        """The TOML text :func:`load_noise_floor` reads."""
        import json

        lines = [header] if header else []
        lines += ["[noise_floor]", f"margin = {self.margin!r}", f"pairs = {self.pairs}", "", "[noise_floor.stages]"]
        for key, f in self.stages.items():
            fields = ", ".join(f"{k} = {_toml_float(v)}" for k, v in f.to_dict().items())
            lines.append(f"{json.dumps(key)} = {{ {fields} }}")
        return "\n".join(lines) + "\n"


def _toml_float(v: float) -> str:
    if math.isinf(v):
        return "inf" if v > 0 else "-inf"
    if math.isnan(v):
        return "nan"
    return repr(float(v))


def _number(v: Any, where: str, path: str) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or math.isnan(v) or v < 0:
        raise ConfigError(f"{where} must be a non-negative number, not {v!r}.", path=path)
    return float(v)


def load_noise_floor(path: str | os.PathLike[str]) -> NoiseFloor:
    """Read a noise-floor file written by ``parity calibrate``.

    Raises:
        ConfigError: the file is missing, not TOML, or a field is wrong (named).

    >>> with open("floor.toml", "w") as f:
    ...     _ = f.write('[noise_floor]\\nmargin = 2.0\\n[noise_floor.stages]\\n'
    ...                 '"logits" = { rel_rms = 0.01, rms = 0.001, max_abs = 0.004 }\\n')
    >>> floor = load_noise_floor("floor.toml")
    >>> floor.margin, floor.get("logits")
    (2.0, StageFloor(rel_rms=0.01, rms=0.001, max_abs=0.004))
    """
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            raw = f.read()
        data = tomllib.loads(raw.decode("utf-8"))
    except FileNotFoundError:
        raise ConfigError("noise-floor file not found.", path=path) from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"is not UTF-8 text (invalid byte at offset {e.start}).", path=path) from None
    except (tomllib.TOMLDecodeError, RecursionError) as e:
        raise ConfigError(f"is not valid TOML ({e}).", path=path) from None
    table = data.get("noise_floor")
    if not isinstance(table, dict):
        raise ConfigError("has no [noise_floor] table; write one with parity calibrate HI.trace LO.trace --out FILE.",
                          path=path)
    unknown = set(table) - {"margin", "pairs", "stages"}
    if unknown:
        raise ConfigError(f"[noise_floor] has unknown field(s) {sorted(unknown)}.", path=path)
    margin = _number(table.get("margin", DEFAULT_MARGIN), "[noise_floor] margin", path)
    if margin <= 0:
        raise ConfigError("[noise_floor] margin must be positive.", path=path)
    pairs = table.get("pairs", 0)
    if isinstance(pairs, bool) or not isinstance(pairs, int) or pairs < 0:
        raise ConfigError(f"[noise_floor] pairs must be a non-negative integer, not {pairs!r}.", path=path)
    stages = table.get("stages", {})
    if not isinstance(stages, dict):
        raise ConfigError("[noise_floor.stages] must be a table of stage = { rel_rms, rms, max_abs }.", path=path)
    out: dict[str, StageFloor] = {}
    for key, f in stages.items():
        where = f'[noise_floor.stages] "{key}"'
        if not isinstance(f, dict) or not {"rms", "max_abs"} <= set(f) or set(f) - {"rel_rms", "rms", "max_abs"}:
            raise ConfigError(f"{where} must be {{ rel_rms = ..., rms = ..., max_abs = ... }}.", path=path)
        out[key] = StageFloor(_number(f["rel_rms"], where + " rel_rms", path) if "rel_rms" in f else None,
                              _number(f["rms"], where + " rms", path), _number(f["max_abs"], where + " max_abs", path))
    return NoiseFloor(out, margin, pairs, path)


def floor_ratio(sd: Any) -> float | None:
    """How many times its noise floor a :class:`~parity.StageDiff`'s error is (``None``: no floor).

    >>> floor = NoiseFloor({"logits": StageFloor(rel_rms=1e-2, rms=1e-3, max_abs=4e-3)})
    >>> diff = parity.compare_traces("ref.trace", "cand.trace", noise_floor=floor)
    >>> round(floor_ratio(diff["logits"]), 2), diff["logits"].status, floor_ratio(diff["embedding"])
    (13.26, 'fail', None)
    """
    info = extra_value(sd, "noise_floor")
    if not isinstance(info, dict):
        return None
    return float(info["ratio"])  # "inf" reads back as float("inf")
