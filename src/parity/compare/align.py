"""Line two traces up: regex renames and per-stage transforms declared in the config.

Names: ``[rename]`` rewrites candidate keys with regular expressions, in order, before the
``[aliases]`` are applied (see :class:`~parity.compare.config.CompareConfig`).

Values: ``[transforms]`` maps a stage glob (matched against the *reference* key, the name both
sides share after renaming) to the steps that make one side comparable with the other::

    [transforms]
    "logits"              = { slice = { seq = -1 } }                      # last token
    "layers.*.attn_probs" = { axes = ["seq", "heads", "key"], permute = ["heads", "seq", "key"] }
    "rot_angle"           = { scale = "pi/180", units = "rad" }          # degrees → radians
    "energy"              = { side = "reference", scale = 1e-3 }         # the reference printed meV
    "q_proj"              = [ { reshape = { shape = [4, 8, 16], axes = ["seq", "heads", "head_dim"] } },
                              { permute = ["heads", "seq", "head_dim"] } ]

A table's steps run in this order: ``axes`` (declare the names of the stored axes), ``reshape``,
``permute``, ``slice``, ``scale``, ``cast``, ``units``; a list of tables runs its tables in order.
``side`` is ``"candidate"`` (default), ``"reference"`` or ``"both"``.

- ``reshape``: a shape (one ``-1`` allowed), or ``{ shape = [...], axes = [...] }`` to name the
  new axes. The element count must not change.
- ``permute``: the new axis order, by name (needs axes on the stage or declared with ``axes``)
  or by position.
- ``slice``: ``{ AXIS = INDEX }`` (an integer drops the axis: ``{ seq = -1 }`` is the last token)
  or ``{ AXIS = "START:STOP:STEP" }`` (keeps it); AXIS is a name or a position; or a NumPy-like
  string such as ``"[..., -1, :]"``.
- ``scale``: a number or a product/quotient of numbers and ``pi`` (``"pi/180"``, ``"1e-10"``).
  Computed in float64, then rounded to the stored float dtype (integers become float64).
- ``cast``: a dtype (``"F32"``, ``"float32"``, ``"bf16"``...): values are rounded to it, and it
  sets the default tolerance.
- ``units``: the units the values are in afterwards (silences the "units differ" note).

A transform may materialise the one stage it applies to; nothing else is loaded. A shape or
layout that still differs after the transforms is an error of the stage, never flattened.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from ..errors import ConfigError
from ..trace.dtypes import DTYPES, storage_dtype, to_float64
from ..trace.reader import Stage
from .tolerance import glob_to_regex

__all__ = ["Step", "StageTransform", "parse_transforms", "apply_transforms", "parse_scale", "parse_renames",
           "apply_renames", "SIDES"]

SIDES = ("candidate", "reference", "both")
_STEP_ORDER = ("axes", "reshape", "permute", "slice", "scale", "cast", "units")
_DTYPE_ALIASES = {"f64": "F64", "float64": "F64", "double": "F64", "f32": "F32", "float32": "F32", "float": "F32",
                  "f16": "F16", "float16": "F16", "half": "F16", "bf16": "BF16", "bfloat16": "BF16",
                  "i64": "I64", "int64": "I64", "i32": "I32", "int32": "I32", "i16": "I16", "int16": "I16",
                  "i8": "I8", "int8": "I8", "u8": "U8", "uint8": "U8", "bool": "BOOL",
                  "f8_e4m3": "F8_E4M3", "float8_e4m3fn": "F8_E4M3", "f8_e5m2": "F8_E5M2", "float8_e5m2": "F8_E5M2"}


@dataclass(frozen=True)
class Step:
    """One transform step: ``op`` in axes/reshape/permute/slice/scale/cast/units, and its argument.

    >>> parse_transforms({"logits": {"scale": 2}})[0].steps[0].op
    'scale'
    """

    op: str
    arg: Any

    def describe(self) -> str:
        if self.op == "scale":
            return f"scale×{self.arg[1]}"
        if self.op == "reshape":
            return f"reshape{tuple(self.arg[0])}"
        if self.op == "slice":
            return "slice" + _describe_slice(self.arg)
        return f"{self.op}({self.arg if not isinstance(self.arg, (list, tuple)) else ','.join(map(str, self.arg))})"


@dataclass(frozen=True)
class StageTransform:
    """The transform of the stages matching ``pattern`` on ``side``.

    Attributes:
        pattern: a stage glob matched against the reference key.
        side: ``"candidate"``, ``"reference"`` or ``"both"``.
        steps: the steps, in order.

    >>> t = parse_transforms({"rot": {"permute": [1, 0], "side": "candidate"}})[0]
    >>> t.pattern, t.side, [s.op for s in t.steps]
    ('rot', 'candidate', ['permute'])
    """

    pattern: str
    side: str
    steps: tuple[Step, ...]

    def applies(self, key: str, side: str) -> bool:
        return (self.side == side or self.side == "both") and bool(glob_to_regex(self.pattern).match(key))

    def to_dict(self) -> dict[str, Any]:
        return {"pattern": self.pattern, "side": self.side, "steps": [s.describe() for s in self.steps]}


# -- parsing ---------------------------------------------------------------------------------------
_SCALE_TOKEN = re.compile(r"\s*(pi|π|[0-9.]+(?:[eE][+-]?[0-9]+)?|[*/])\s*")


def parse_scale(value: object, where: str = "scale") -> float:
    """A number, or a product/quotient of numbers and ``pi``: ``"pi/180"``, ``"180/pi"``, ``"1e-10"``.

    Raises:
        ConfigError: anything else (no expression is evaluated).

    >>> parse_scale("pi/180") == math.pi / 180, parse_scale(1e-3), parse_scale("-2")
    (True, 0.001, -2.0)
    """
    if isinstance(value, bool):
        raise ConfigError(f"{where} must be a number or an expression like \"pi/180\", not {value!r}.")
    if isinstance(value, (int, float)):
        if not math.isfinite(value) or value == 0:
            raise ConfigError(f"{where} must be a finite non-zero number, not {value!r}.")
        return float(value)
    if not isinstance(value, str):
        raise ConfigError(f"{where} must be a number or an expression like \"pi/180\", not {value!r}.")
    text = value.strip()
    sign = 1.0
    if text.startswith("-"):
        sign, text = -1.0, text[1:]
    pos, tokens = 0, []
    while pos < len(text):
        m = _SCALE_TOKEN.match(text, pos)
        if not m:
            raise ConfigError(f'{where} "{value}" is not a product or quotient of numbers and pi.')
        tokens.append(m.group(1))
        pos = m.end()
    if not tokens or len(tokens) % 2 == 0 or any((t in "*/") != (i % 2 == 1) for i, t in enumerate(tokens)):
        raise ConfigError(f'{where} "{value}" is not a product or quotient of numbers and pi.')

    def num(t: str) -> float:
        try:
            return math.pi if t in ("pi", "π") else float(t)
        except ValueError:
            raise ConfigError(f'{where} "{value}": {t!r} is not a number.') from None

    result = num(tokens[0])
    for op, t in zip(tokens[1::2], tokens[2::2]):
        d = num(t)
        if op == "/" and d == 0:
            raise ConfigError(f'{where} "{value}" divides by zero.')
        result = result * d if op == "*" else result / d
    if not math.isfinite(result) or result == 0:
        raise ConfigError(f'{where} "{value}" must be finite and non-zero.')
    return sign * result


def _dtype_code(value: object, where: str) -> str:
    if isinstance(value, str):
        code = value if value in DTYPES else _DTYPE_ALIASES.get(value.lower())
        if code:
            return code
    raise ConfigError(f"{where} cast must name a dtype ({', '.join(DTYPES)} or float32, bf16...), not {value!r}.")


def _parse_slice_text(text: str, where: str) -> list[Any]:
    body = text.strip()
    if body.startswith("[") and body.endswith("]"):
        body = body[1:-1]
    out: list[Any] = []
    for part in body.split(","):
        p = part.strip()
        if p in ("...", "…"):
            out.append(Ellipsis)
        elif ":" in p:
            out.append(_slice_of(p, where))
        else:
            try:
                out.append(int(p))
            except ValueError:
                raise ConfigError(f'{where} slice "{text}": {p!r} is not an integer, a START:STOP:STEP or "...".') from None
    if sum(1 for x in out if x is Ellipsis) > 1:
        raise ConfigError(f'{where} slice "{text}" has more than one "...".')
    return out


def _slice_of(text: str, where: str) -> slice:
    parts = text.split(":")
    if len(parts) > 3:
        raise ConfigError(f'{where} slice "{text}" has more than START:STOP:STEP.')
    try:
        nums = [int(p) if p.strip() else None for p in parts]
    except ValueError:
        raise ConfigError(f'{where} slice "{text}" must hold integers, e.g. "-1:" or "0:8:2".') from None
    if len(nums) == 3 and nums[2] == 0:
        raise ConfigError(f'{where} slice "{text}" has a zero step.')
    return slice(*nums)


def _describe_slice(arg: Any) -> str:
    if isinstance(arg, list):
        return "[" + ", ".join("..." if x is Ellipsis else _fmt_slice(x) for x in arg) + "]"
    return "{" + ", ".join(f"{k}={_fmt_slice(v)}" for k, v in arg.items()) + "}"


def _fmt_slice(x: Any) -> str:
    if isinstance(x, slice):
        s = f"{'' if x.start is None else x.start}:{'' if x.stop is None else x.stop}"
        return s + (f":{x.step}" if x.step is not None else "")
    return str(x)


def _parse_step(op: str, value: Any, where: str) -> Step:
    if op == "axes":
        if not isinstance(value, list) or not all(isinstance(a, str) and a for a in value) or len(set(value)) != len(value):
            raise ConfigError(f"{where} axes must be a list of distinct names, e.g. [\"seq\", \"hidden\"].")
        return Step("axes", tuple(value))
    if op == "reshape":
        axes = None
        if isinstance(value, Mapping):
            unknown = set(value) - {"shape", "axes"}
            if unknown or "shape" not in value:
                raise ConfigError(f"{where} reshape is a shape or {{ shape = [...], axes = [...] }}.")
            axes = value.get("axes")
            value = value["shape"]
        if not isinstance(value, list) or not all(isinstance(n, int) and not isinstance(n, bool) and (n >= 0 or n == -1)
                                                  for n in value) or sum(1 for n in value if n == -1) > 1:
            raise ConfigError(f"{where} reshape must be a list of sizes with at most one -1, e.g. [4, -1].")
        if axes is not None and (not isinstance(axes, list) or len(axes) != len(value)
                                 or not all(isinstance(a, str) for a in axes)):
            raise ConfigError(f"{where} reshape axes must name each of the {len(value)} new dimensions.")
        return Step("reshape", (tuple(value), tuple(axes) if axes is not None else None))
    if op == "permute":
        if not isinstance(value, list) or not value or not (all(isinstance(a, str) for a in value)
                                                             or all(isinstance(a, int) and not isinstance(a, bool) for a in value)):
            raise ConfigError(f"{where} permute is the new axis order, by name or position, e.g. [\"heads\", \"seq\"].")
        if len(set(value)) != len(value):
            raise ConfigError(f"{where} permute lists an axis twice: {value}.")
        return Step("permute", tuple(value))
    if op == "slice":
        if isinstance(value, str):
            return Step("slice", _parse_slice_text(value, where))
        if isinstance(value, Mapping) and value:
            spec: dict[str | int, Any] = {}
            for axis, sel in value.items():
                ax: str | int = int(axis) if re.fullmatch(r"-?[0-9]+", str(axis)) else str(axis)
                if isinstance(sel, int) and not isinstance(sel, bool):
                    spec[ax] = sel
                elif isinstance(sel, str):
                    spec[ax] = _slice_of(sel, where) if ":" in sel else int(sel) if re.fullmatch(r"-?[0-9]+", sel.strip()) else None
                    if spec[ax] is None:
                        raise ConfigError(f'{where} slice {axis} = "{sel}" must be an integer or "START:STOP:STEP".')
                else:
                    raise ConfigError(f"{where} slice {axis} must be an integer index or a \"START:STOP:STEP\" string.")
            return Step("slice", spec)
        raise ConfigError(f"{where} slice is {{ AXIS = INDEX }}, {{ AXIS = \"START:STOP\" }} or a string like \"[..., -1, :]\".")
    if op == "scale":
        factor = parse_scale(value, f"{where} scale")
        return Step("scale", (factor, value))
    if op == "cast":
        return Step("cast", _dtype_code(value, where))
    if op == "units":
        if not isinstance(value, str):
            raise ConfigError(f"{where} units must be a string, e.g. \"rad\".")
        return Step("units", value)
    raise ConfigError(f"{where} has unknown step {op!r}; expected some of {', '.join(_STEP_ORDER)}, side.")


def parse_transforms(data: Mapping[str, Any], where: str = "") -> tuple[StageTransform, ...]:
    """Parse the ``[transforms]`` table.

    Raises:
        ConfigError: an unknown step, a bad argument, or a bad ``side``.

    >>> [(t.pattern, t.side) for t in parse_transforms({"logits": {"slice": {"seq": -1}}})]
    [('logits', 'candidate')]
    """
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where}[transforms] maps stage patterns to transforms, e.g. \"logits\" = {{ slice = {{ seq = -1 }} }}.")
    out = []
    for pattern, spec in data.items():
        w = f'{where}[transforms] "{pattern}":'
        tables = spec if isinstance(spec, list) else [spec]
        if not tables or not all(isinstance(t, Mapping) for t in tables):
            raise ConfigError(f"{w} a transform is a table of steps or a list of such tables.")
        sides = {t.get("side", "candidate") for t in tables}
        if len(sides) != 1:
            raise ConfigError(f"{w} every table of one transform must have the same side.")
        side = sides.pop()
        if side not in SIDES:
            raise ConfigError(f"{w} side must be one of {', '.join(SIDES)}, not {side!r}.")
        steps: list[Step] = []
        for t in tables:
            unknown = set(t) - set(_STEP_ORDER) - {"side"}
            if unknown:
                raise ConfigError(f"{w} unknown step(s) {sorted(unknown)}; expected some of {', '.join(_STEP_ORDER)}, side.")
            steps.extend(_parse_step(op, t[op], w) for op in _STEP_ORDER if op in t)
        if not steps:
            raise ConfigError(f"{w} has no step.")
        out.append(StageTransform(str(pattern), side, tuple(steps)))
    return tuple(out)


def parse_renames(data: Any, where: str = "") -> tuple[tuple[str, str], ...]:
    """Parse ``[rename]``: regex → replacement (``\\1`` or ``\\g<name>`` refer to groups), in order.

    Raises:
        ConfigError: a pattern is not a valid regular expression or a replacement not a string.

    >>> parse_renames({"^model[.]": "", "attn_weights$": "attn_probs"})
    (('^model[.]', ''), ('attn_weights$', 'attn_probs'))
    """
    if not isinstance(data, Mapping) or not all(isinstance(v, str) for v in data.values()):
        raise ConfigError(f'{where}[rename] maps regular expressions to replacements, e.g. "^model\\\\.layers\\\\." = "layers.".')
    out = []
    for pattern, repl in data.items():
        try:
            re.compile(pattern)
        except re.error as e:
            raise ConfigError(f'{where}[rename] "{pattern}" is not a valid regular expression ({e}).') from None
        out.append((str(pattern), repl))
    return tuple(out)


def apply_renames(key: str, renames: Sequence[tuple[str, str]]) -> str:
    """``key`` after every regex rename, in order.

    >>> apply_renames("model.layers.3.mlp", [(r"^model\\.layers\\.(\\d+)\\.mlp$", r"layers.\\1.ffn_out")])
    'layers.3.ffn_out'
    """
    for pattern, repl in renames:
        key = re.sub(pattern, repl, key)
    return key


# -- application -----------------------------------------------------------------------------------
def _axis_index(axis: str | int, axes: Sequence[str] | None, ndim: int, what: str, key: str, side: str) -> int:
    if isinstance(axis, int):
        if not -ndim <= axis < ndim:
            raise ConfigError(f'{what} axis {axis} is out of range for the {side} of "{key}" ({ndim} dimensions).')
        return axis % ndim
    if axes is None:
        raise ConfigError(f'{what} names axis "{axis}" but the {side} of "{key}" has no axis names; '
                          "declare them with axes = [...] in the transform.")
    if axis not in axes:
        raise ConfigError(f'{what} names axis "{axis}" but the {side} of "{key}" has axes {list(axes)}.')
    return list(axes).index(axis)


def apply_transforms(transforms: Sequence[StageTransform], key: str, side: str, stage: Stage,
                     array: np.ndarray) -> tuple[Stage, np.ndarray, list[str]]:
    """Apply every transform matching ``key`` on ``side`` to one stage.

    Args:
        transforms: the parsed ``[transforms]``.
        key: the reference key the stage is compared under.
        side: ``"candidate"`` or ``"reference"``.
        stage: the stored stage.
        array: its stored values.

    Returns:
        ``(stage, array, applied)``: the stage with its shape, axes, dtype and units as they are
        after the transforms, the transformed values, and a description of each step applied.

    Raises:
        ConfigError: a step cannot apply (unknown axis name, element count changes...).

    >>> t = parse_transforms({"embedding": {"scale": 2, "side": "candidate"}})
    >>> ref = parity.load_trace("ref.trace"); st = ref.stage("embedding")
    >>> _, arr, steps = apply_transforms(t, "embedding", "candidate", st, ref.array(st))
    >>> steps, bool((arr == 2 * ref.array(st)).all())
    (['scale×2'], True)
    """
    steps = [s for t in transforms if t.applies(key, side) for s in t.steps]
    if not steps or stage.kind != "tensor":
        return stage, array, []
    arr = array
    axes = stage.axes
    dtype = stage.dtype
    units = stage.units
    applied = []
    where = f'[transforms] for the {side} of "{key}":'
    for step in steps:
        if step.op == "axes":
            if len(step.arg) != arr.ndim:
                raise ConfigError(f"{where} axes {list(step.arg)} name {len(step.arg)} dimensions but the stage has shape {arr.shape}.")
            axes = step.arg
            continue
        if step.op == "units":
            units = step.arg
            continue
        applied.append(step.describe())
        if step.op == "reshape":
            shape, new_axes = step.arg
            try:
                arr = arr.reshape(shape)
            except ValueError:
                raise ConfigError(f"{where} cannot reshape {arr.shape} ({arr.size} elements) to {list(shape)}.") from None
            axes = new_axes
        elif step.op == "permute":
            order = [_axis_index(a, axes, arr.ndim, f"{where} permute", key, side) for a in step.arg]
            if sorted(order) != list(range(arr.ndim)):
                raise ConfigError(f"{where} permute {list(step.arg)} must list each of the {arr.ndim} axes exactly once.")
            arr = np.transpose(arr, order)
            axes = tuple(axes[i] for i in order) if axes is not None else None
        elif step.op == "slice":
            arr, axes = _slice(arr, axes, step.arg, where, key, side)
        elif step.op == "scale":
            factor = step.arg[0]
            info = DTYPES[dtype]
            wide = to_float64(np.asarray(arr), info) * factor
            if info.kind == "f":
                arr = _to_dtype(wide, dtype, where)
            else:
                arr, dtype = wide, "F64"
        elif step.op == "cast":
            target = step.arg
            if DTYPES[target].kind == "f":
                arr = _to_dtype(to_float64(np.asarray(arr), DTYPES[dtype]), target, where)
            else:
                arr = np.asarray(arr).astype(storage_dtype(DTYPES[target]))
            dtype = target
    new = replace(stage, shape=tuple(arr.shape), axes=tuple(axes) if axes is not None else None, dtype=dtype, units=units)
    return new, arr, applied


def _to_dtype(wide: np.ndarray, code: str, where: str) -> np.ndarray:
    info = DTYPES[code]
    dt = storage_dtype(info)
    if info.numpy is None and dt.name != info.name:
        raise ConfigError(f"{where} rounding to {code} needs the ml_dtypes package (pip install ml_dtypes).")
    return wide.astype(dt)


def _slice(arr: np.ndarray, axes: tuple[str, ...] | None, spec: Any, where: str, key: str,
           side: str) -> tuple[np.ndarray, tuple[str, ...] | None]:
    if isinstance(spec, list):
        index = list(spec)
        n_explicit = sum(1 for x in index if x is not Ellipsis)
        if n_explicit > arr.ndim:
            raise ConfigError(f"{where} slice indexes {n_explicit} axes but the stage has {arr.ndim}.")
        if Ellipsis in index:
            i = index.index(Ellipsis)
            index[i:i + 1] = [slice(None)] * (arr.ndim - n_explicit)
        index += [slice(None)] * (arr.ndim - len(index))
    else:
        index = [slice(None)] * arr.ndim
        for axis, sel in spec.items():
            index[_axis_index(axis, axes, arr.ndim, f"{where} slice", key, side)] = sel
    for dim, sel in enumerate(index):
        if isinstance(sel, int) and not -arr.shape[dim] <= sel < arr.shape[dim]:
            raise ConfigError(f"{where} slice index {sel} is out of range for axis {dim} of size {arr.shape[dim]}.")
    kept = [i for i, sel in enumerate(index) if not isinstance(sel, int)]
    out = arr[tuple(index)]
    return out, (tuple(axes[i] for i in kept) if axes is not None else None)
