"""The sections of a comparison config, checked one by one with messages that name the entry.

:meth:`parity.compare.config.CompareConfig.from_dict` and :meth:`~CompareConfig.merged` call these
for every section and keyword override: each returns the parsed value or raises
:class:`~parity.errors.ConfigError` naming the file (``source``), the section and key, and what
was expected.

>>> check_aliases({"attn_weights": "attn_probs"}, None)
{'attn_weights': 'attn_probs'}
>>> describe([1, 2]), describe(True), show_key("layers.0")
('an array', 'true (a boolean)', '"layers.0"')
"""

from __future__ import annotations

import math
import re
import warnings
from collections.abc import Mapping
from typing import Any

from ..errors import ConfigError
from ..limits import MAX_NESTING
from ..trace.keys import NAME_RE
from .align import StageTransform, parse_renames, parse_transforms
from .tolerance import _FIELDS as _TOLERANCE_FIELDS
from .tolerance import ToleranceRules

__all__ = ["parse_ignore", "parse_images", "describe", "show_key", "check_number", "build_tolerance", "check_aliases",
           "group_depth", "check_rename", "check_renames", "check_transforms"]


def parse_ignore(ignore: Any, source: str | None) -> list[str]:
    """``[ignore] stages = [...]`` (or a bare list) checked: glob patterns.

    >>> parse_ignore({"stages": ["timing.*"]}, None), parse_ignore(["timing.*"], None)
    (['timing.*'], ['timing.*'])
    >>> try:
    ...     parse_ignore("timing.*", "parity.toml")
    ... except parity.ConfigError as e:
    ...     print(e)
    parity.toml: [ignore] stages must be a list of glob patterns, e.g. stages = ["timing.*"],
    not 'timing.*' (a string).
    """
    if isinstance(ignore, Mapping):
        extra = set(ignore) - {"stages"}
        if extra:
            raise ConfigError(f"[ignore] has unknown key(s) {sorted(map(str, extra))}; expected stages = [...].",
                              path=source)
        patterns = ignore.get("stages", [])
    else:
        patterns = ignore
    if not isinstance(patterns, list) or not all(isinstance(p, str) for p in patterns):
        raise ConfigError('[ignore] stages must be a list of glob patterns, e.g. stages = ["timing.*"], '
                          f"not {describe(patterns)}.", path=source)
    return patterns


def parse_images(data: Any, source: str | None) -> tuple[tuple[str, ...], dict[str, float]]:
    """``[images] stages = ["detector*"], radius = 2, threshold = 50``: 2-D stages compared as images.

    >>> parse_images({"stages": ["detector*"], "radius": 2}, None)
    (('detector*',), {'radius': 2.0})
    """
    if not isinstance(data, Mapping):
        raise ConfigError(f'[images] must be a table like {{ stages = ["detector*"] }}, not {describe(data)}.', path=source)
    extra = set(data) - {"stages", "radius", "threshold"}
    if extra:
        raise ConfigError(f"[images] has unknown key(s) {sorted(map(str, extra))}; expected stages, radius, threshold.",
                          path=source)
    stages = data.get("stages", [])
    if not isinstance(stages, list) or not all(isinstance(p, str) for p in stages):
        raise ConfigError(f"[images] stages must be a list of glob patterns, not {describe(stages)}.", path=source)
    settings: dict[str, float] = {}
    for k in ("radius", "threshold"):
        if k in data:
            v = data[k]
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or (k == "radius" and v < 0):
                raise ConfigError(f"[images] {k} must be a finite{' non-negative' if k == 'radius' else ''} number, "
                                  f"not {describe(v)}.", path=source)
            settings[k] = float(v)
    return tuple(stages), settings


def describe(value: object) -> str:
    """A short description of a TOML value for error messages (never a recursive repr).

    >>> describe("x"), describe(1e-3), describe({"a": 1})
    ("'x' (a string)", '0.001 (a number)', 'a table')
    """
    if isinstance(value, bool):
        return f"{str(value).lower()} (a boolean)"
    if isinstance(value, str):
        text = value if len(value) <= 60 else value[:57] + "..."
        return f"{text!r} (a string)"
    if isinstance(value, (int, float)):
        text = repr(value) if not isinstance(value, int) or value.bit_length() < 200 else "a huge integer"
        return f"{text} (a number)"
    if isinstance(value, Mapping):
        return "a table"
    if isinstance(value, (list, tuple)):
        return "an array"
    return f"a {type(value).__name__}"


def show_key(key: object) -> str:
    """A config key in double quotes for error messages, cut to 80 characters.

    >>> show_key("layers.0.q_proj"), len(show_key("x" * 200))
    ('"layers.0.q_proj"', 82)
    """
    text = str(key)
    return '"' + (text if len(text) <= 80 else text[:77] + "...") + '"'


def check_number(where: str, key: str, value: object, source: str | None) -> float:
    """``value`` as a float when it is a finite number (non-negative for ``rtol`` and ``atol``).

    >>> check_number("[tolerance]", "rtol", 1, None)
    1.0
    >>> try:
    ...     check_number("[tolerance]", "rtol", -1, "parity.toml")
    ... except parity.ConfigError as e:
    ...     print(e)
    parity.toml: [tolerance]: rtol must be a finite non-negative number, not -1.
    """
    nonneg = key in ("rtol", "atol")
    wanted = "a finite non-negative number" if nonneg else "a finite number"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{where}: {key} must be a number ({wanted}, e.g. {key} = 1e-5), not {describe(value)}.",
                          path=source)
    if isinstance(value, int) and value.bit_length() > 1000:
        raise ConfigError(f"{where}: {key} must be {wanted}; this integer is too large.", path=source)
    f = float(value)
    if not math.isfinite(f) or (nonneg and f < 0):
        raise ConfigError(f"{where}: {key} must be {wanted}, not {value!r}.", path=source)
    return f


def build_tolerance(overrides: Mapping[str, object], stages: object, source: str | None) -> ToleranceRules:
    """Check every tolerance field (type, finiteness, sign), then build the rules.

    >>> build_tolerance({"rtol": 1e-4}, {"logits": {"rtol": 1e-2}}, None)
    ToleranceRules(overrides={'rtol': 0.0001}, stages=(('logits', {'rtol': 0.01}),))
    """
    for k, v in overrides.items():
        if k in _TOLERANCE_FIELDS:
            check_number("[tolerance]", k, v, source)
    if not isinstance(stages, Mapping):
        raise ConfigError(f'[tolerance.stages] maps stage patterns to tables like "logits" = {{ rtol = 1e-3 }}, '
                          f"not {describe(stages)}.", path=source)
    for pattern, entries in stages.items():
        where = f"[tolerance.stages] {show_key(pattern)}"
        if not isinstance(pattern, str):
            raise ConfigError(f"{where}: a stage pattern must be a string.", path=source)
        if not isinstance(entries, Mapping):
            raise ConfigError(f"{where} must be a table like {{ rtol = 1e-3 }}, not {describe(entries)}.", path=source)
        for k, v in entries.items():
            if k in _TOLERANCE_FIELDS:
                check_number(where, k, v, source)
    try:
        return ToleranceRules.build(overrides, stages)
    except ConfigError as e:
        raise ConfigError(e.message, path=source) from None


def check_aliases(aliases: object, source: str | None) -> dict[str, str]:
    """``[aliases]`` checked: stage names (dotted segments) on both sides.

    >>> try:
    ...     check_aliases({"attn weights": "attn_probs"}, "parity.toml")
    ... except parity.ConfigError as e:
    ...     print(e)
    parity.toml: [aliases] "attn weights": the candidate name "attn weights" is not a stage name
    (dot-separated segments of letters, digits and _+-:@).
    """
    if not isinstance(aliases, Mapping):
        raise ConfigError('[aliases] maps candidate names to reference names, e.g. attn_weights = "attn_probs", '
                          f"not {describe(aliases)}.", path=source)
    for name, target in aliases.items():
        if not isinstance(target, str):
            raise ConfigError(f"[aliases] {show_key(name)}: expected a reference stage name (a string), got "
                              f"{describe(target)}.", path=source)
        for what, text in (("candidate name", name), ("reference name", target)):
            if not isinstance(text, str) or not NAME_RE.match(text):
                raise ConfigError(f"[aliases] {show_key(name)}: the {what} {show_key(text)} is not a stage name "
                                  "(dot-separated segments of letters, digits and _+-:@).", path=source)
    return dict(aliases)


def group_depth(pattern: str) -> int:
    """The deepest nesting of groups in a regular expression (escapes and [classes] skipped).

    >>> group_depth("(a(b|c))[(]"), group_depth(r"\\(x\\)")
    (2, 0)
    """
    depth = deepest = 0
    i, n, in_class = 0, len(pattern), False
    while i < n:
        c = pattern[i]
        if c == "\\":
            i += 2
            continue
        if in_class:
            if c == "]":
                in_class = False
        elif c == "[":
            in_class = True
            if pattern.startswith("]", i + 1) or pattern.startswith("^]", i + 1):
                i += 2 if pattern[i + 1] == "]" else 3
                continue
        elif c == "(":
            depth += 1
            deepest = max(deepest, depth)
        elif c == ")":
            depth = max(depth - 1, 0)
        i += 1
    return deepest


def check_rename(pattern: str, repl: str, source: str | None) -> None:
    """Compile a ``[rename]`` pattern and expand its replacement once on a synthetic match, so
    that a bad group reference (``\\2`` for a pattern with one group, ``\\g<nope>``) or a bad
    escape fails when the config is loaded, not in the middle of a comparison.

    >>> check_rename(r"^model\\.(.*)$", r"\\1", None)  # valid: returns nothing
    >>> try:
    ...     check_rename(r"^model\\.(.*)$", r"\\2", "parity.toml")
    ... except parity.ConfigError as e:
    ...     print(e)
    parity.toml: [rename] "^model\\.(.*)$" = "\\2": the replacement is not valid for this pattern
    (invalid group reference 2 at position 1); it may refer to \\1 to \\1.
    """
    entry = f"[rename] {show_key(pattern)}"
    if group_depth(pattern) > MAX_NESTING:
        raise ConfigError(f"{entry} is not a valid regular expression (groups nest deeper than {MAX_NESTING} levels).",
                          path=source)
    try:
        with warnings.catch_warnings():  # FutureWarning "possible nested set": a valid pattern, compiled (and cached) once
            warnings.simplefilter("ignore", FutureWarning)
            rx = re.compile(pattern)
    except (re.error, OverflowError) as e:
        raise ConfigError(f"{entry} is not a valid regular expression ({e}).", path=source) from e
    names = {index: name for name, index in rx.groupindex.items()}
    dummy = re.compile("".join(f"(?P<{names[i]}>)" if i in names else "()" for i in range(1, rx.groups + 1)))
    match = dummy.match("")
    assert match is not None
    try:
        match.expand(repl)
    except (re.error, IndexError) as e:
        refs = (f"\\1 to \\{rx.groups}" if rx.groups else "no groups") + (
            ", " + ", ".join(f"\\g<{n}>" for n in rx.groupindex) if rx.groupindex else "")
        raise ConfigError(f"{entry} = {show_key(repl)}: the replacement is not valid for this pattern ({e}); "
                          f"it may refer to {refs}.", path=source) from e


def check_renames(data: object, source: str | None) -> tuple[tuple[str, str], ...]:
    """``[rename]`` checked entry by entry (see :func:`check_rename`), then parsed.

    >>> check_renames({r"^model\\.(.*)$": r"\\1"}, None)
    (('^model\\\\.(.*)$', '\\\\1'),)
    """
    if isinstance(data, Mapping):
        for pattern, repl in data.items():
            if isinstance(pattern, str) and isinstance(repl, str):
                check_rename(pattern, repl, source)
    try:
        return parse_renames(data)
    except ConfigError as e:
        raise ConfigError(e.message, path=source) from None


def check_transforms(data: object, source: str | None) -> tuple[StageTransform, ...]:
    """``[transforms]`` parsed entry by entry, so that an error names its entry.

    >>> [(t.pattern, t.side) for t in check_transforms({"logits": {"slice": {"seq": -1}}}, None)]
    [('logits', 'candidate')]
    >>> try:
    ...     check_transforms({"logits": {"squash": 1}}, "parity.toml")
    ... except parity.ConfigError as e:
    ...     print(e)
    parity.toml: [transforms] "logits": unknown step(s) ['squash'];
    expected some of axes, reshape, permute, slice, scale, cast, units, side.
    """
    if not isinstance(data, Mapping):
        try:
            return parse_transforms(data)  # type: ignore[arg-type]  # raises the shape message
        except ConfigError as e:
            raise ConfigError(e.message, path=source) from None
    out: list[StageTransform] = []
    for pattern, spec in data.items():
        try:
            out.extend(parse_transforms({pattern: spec}))
        except ConfigError as e:
            raise ConfigError(e.message, path=source) from None
        except (TypeError, ValueError, OverflowError) as e:  # a value parse_transforms does not expect
            raise ConfigError(f"[transforms] {show_key(pattern)}: a step has a value of the wrong type or size ({e}).",
                              path=source) from e
    return tuple(out)
