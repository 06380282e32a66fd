"""The comparison config: the TOML file of ``parity diff --config``, also usable from Python.

Example ``parity.toml``::

    [tolerance]                      # applies to every stage, on top of the dtype defaults
    rtol = 1e-5
    atol = 1e-12

    [tolerance.stages]               # per-stage overrides by glob; a pattern matching nothing is an error
    "layers.*.attn_probs" = { rtol = 1e-3 }
    "logits" = { rtol = 1e-2, cosine_min = 0.999 }

    [rename]                         # regex renames of candidate keys, applied in order, before aliases
    "^model\\.layers\\.(\\d+)\\." = "layers.\\1."

    [aliases]                        # candidate name = reference name
    attn_weights = "attn_probs"

    [transforms]                     # make one side comparable (see parity.compare.align)
    "logits" = { slice = { seq = -1 } }
    "rot_angle" = { scale = "pi/180", units = "rad" }

    [ignore]                         # stages left out of the comparison
    stages = ["timing.*"]

    [expected]                       # known divergences: reported with the reason, not failed
    "layers.*.rope_cache" = "candidate precomputes RoPE in bf16 (issue #12)"
"""

from __future__ import annotations

import difflib
import os
import re
import stat
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from ..errors import ConfigError, StageKeyError, UsageError
from ..limits import MAX_NESTING
from ..trace.keys import split_key
from .align import StageTransform, apply_renames
from .sections import (
    build_tolerance,
    check_aliases,
    check_renames,
    check_transforms,
    describe,
    parse_ignore,
    parse_images,
    show_key,
)
from .tolerance import ToleranceRules, glob_to_regex

__all__ = ["CompareConfig", "load_config", "as_config", "check_overrides", "OVERRIDES"]

def _option(section: str | None, doc: str, **overrides: str) -> dict[str, Any]:
    """Field metadata: the TOML section the field is read from, what it means, and the keyword
    overrides (``compare_traces(..., rtol=1e-5)``, the CLI flags) that change it, each with its doc."""
    return {"section": section, "doc": doc, "overrides": overrides}


_TOLERANCE_DOCS = {
    "rtol": "relative tolerance for every stage (replaces the dtype default)",
    "atol": "absolute tolerance for every stage (replaces the dtype default)",
    "cosine_min": "floor on the cosine similarity of every stage",
    "sqnr_min_db": "floor on the SQNR (dB) of every stage",
    "correlation_min": "floor on the Pearson correlation of every 2-D stage (makes it an image)",
}


@dataclass(frozen=True)
class CompareConfig:
    """How to line two traces up and judge them: the one schema of the TOML config, of the keyword
    overrides of :func:`parity.compare_traces` and of the CLI's comparison flags.

    Each field's metadata names its TOML section, what it means, and the keyword overrides that
    change it (:data:`OVERRIDES` collects those; :meth:`merged` applies them). The list below is
    generated from the fields.

    Example:
        >>> cfg = CompareConfig.from_dict({"tolerance": {"rtol": 1e-3}, "ignore": {"stages": ["timing.*"]}})
        >>> cfg.merged(atol=1e-9, strict=True).tolerance.overrides, cfg.is_ignored("timing.step")
        ({'rtol': 0.001, 'atol': 1e-09}, True)
    """

    tolerance: ToleranceRules = field(default_factory=ToleranceRules, metadata=_option(
        "tolerance", "per-dtype defaults, global overrides and per-stage overrides by glob ([tolerance.stages])",
        **_TOLERANCE_DOCS, stages='per-stage tolerance tables by glob, e.g. {"layers.*.attn_probs": {"rtol": 1e-3}}'))
    aliases: Mapping[str, str] = field(default_factory=dict, metadata=_option(
        "aliases", "candidate name → reference name. A name matches a whole key's name or its last dotted "
        "segments (attn_weights renames layers.3.attn_weights too); indices and #occurrence are kept",
        aliases="candidate name → reference name"))
    ignore: tuple[str, ...] = field(default=(), metadata=_option(
        "ignore", "glob patterns of (reference-side) stages to leave out", ignore="glob patterns of stages to leave out"))
    expected: Mapping[str, str] = field(default_factory=dict, metadata=_option(
        "expected", "glob pattern → reason, for divergences that are known and accepted (reported, not failed)",
        expected="glob pattern → reason of a known divergence"))
    strict: bool = field(default=False, metadata=_option(
        "strict", "stages present on one side only fail the comparison, and so do config entries that match nothing",
        strict="stages present on one side only fail the comparison"))
    source: str | None = field(default=None, metadata=_option(None, "the file the config came from, for error messages"))
    renames: tuple[tuple[str, str], ...] = field(default=(), metadata=_option(
        "rename", "(regex, replacement) applied to candidate keys in order, before aliases",
        rename="regex → replacement for candidate keys, applied in order before aliases"))
    transforms: tuple[StageTransform, ...] = field(default=(), metadata=_option(
        "transforms", "per-stage transforms that make one side comparable (see parity.compare.align)",
        transforms="stage glob → transform table(s), as in the TOML [transforms] section"))
    images: tuple[str, ...] = field(default=(), metadata=_option(
        "images", "glob patterns of 2-D stages compared as images too (see parity.compare.image)"))
    image_settings: Mapping[str, float] = field(default_factory=dict, metadata=_option(
        "images", "radius and threshold of the image metrics of [images]"))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, source: str | None = None) -> CompareConfig:
        """Build a config from a parsed TOML document (or an equivalent dict): one section per field.

        Every field is checked here, when the config is loaded, not when it is used: numbers must
        be finite (tolerances non-negative), names and patterns strings, and every ``[rename]``
        pattern must compile and its replacement refer only to groups the pattern has.

        Raises:
            ConfigError: unknown sections or fields, or values of the wrong type; the message names
                ``source`` (the file), the section and key, and what was expected.

        >>> CompareConfig.from_dict({"aliases": {"attn_weights": "attn_probs"}}).rename_candidate("layers.3.attn_weights")
        'layers.3.attn_probs'
        """
        if not isinstance(data, Mapping):
            raise ConfigError(f"a comparison config is a table of sections, not {describe(data)}.", path=source)
        unknown = set(data) - _SECTIONS - {"strict"}
        if unknown:
            raise ConfigError(f"unknown section(s) {sorted(map(str, unknown))}; expected some of {sorted(_SECTIONS)}.",
                              path=source)
        tol = data.get("tolerance", {})
        if not isinstance(tol, Mapping):
            raise ConfigError(f"[tolerance] must be a table like {{ rtol = 1e-5 }}, not {describe(tol)}.", path=source)
        tol = dict(tol)
        stages = tol.pop("stages", {})
        rules = build_tolerance(tol, stages, source)
        aliases = check_aliases(data.get("aliases", {}), source)
        patterns = parse_ignore(data.get("ignore", {}), source)
        expected = data.get("expected", {})
        if not isinstance(expected, Mapping):
            raise ConfigError('[expected] maps stage patterns to reasons, e.g. "logits" = "known bf16 drift", '
                              f"not {describe(expected)}.", path=source)
        for pattern, reason in expected.items():
            if not isinstance(pattern, str) or not isinstance(reason, str):
                raise ConfigError(f"[expected] {show_key(pattern)}: expected a reason (a string), got {describe(reason)}.",
                                  path=source)
        strict = data.get("strict", False)
        if not isinstance(strict, bool):
            raise ConfigError(f"strict: expected true or false, got {describe(strict)}.", path=source)
        renames = check_renames(data.get("rename", {}), source)
        transforms = check_transforms(data.get("transforms", {}), source)
        images, image_settings = parse_images(data.get("images", {}), source)
        return cls(rules, dict(aliases), tuple(patterns), dict(expected), strict, source, renames, transforms,
                   images, image_settings)

    def merged(self, **overrides: Any) -> CompareConfig:
        """A copy with keyword overrides: any of :data:`OVERRIDES` (``rtol``, ``atol``, ``stages``,
        ``aliases``, ``ignore``, ``expected``, ``strict``, ``rename``, ``transforms``...; the
        tables shaped like their TOML sections). ``None`` leaves a field as it is.

        Raises:
            UsageError: an override that is not one of :data:`OVERRIDES` (the message lists them).
            ConfigError: an override has the wrong type or value (checked as :meth:`from_dict` checks).

        >>> CompareConfig().merged(rtol=1e-3, ignore=["timing.*"]).ignore
        ('timing.*',)
        >>> CompareConfig().merged(rtoll=1e-3)
        Traceback (most recent call last):
        parity.errors.UsageError: unknown comparison option 'rtoll'; the options are: rtol, atol, cosine_min, sqnr_min_db, correlation_min, stages, aliases, ignore, expected, strict, rename, transforms.
        """
        check_overrides(overrides)
        tol_over = dict(self.tolerance.overrides)
        for k in _TOLERANCE_DOCS:
            if overrides.get(k) is not None:
                tol_over[k] = overrides[k]
        stage_rules = dict(self.tolerance.stages)
        extra_stages = overrides.get("stages") or {}
        if not isinstance(extra_stages, Mapping):
            raise ConfigError(f"stages maps stage patterns to tolerance tables, not {describe(extra_stages)}.")
        stage_rules.update(extra_stages)
        aliases = {**self.aliases, **check_aliases(overrides.get("aliases") or {}, None)}
        ignore = self.ignore + tuple(overrides.get("ignore") or ())
        if not all(isinstance(p, str) for p in ignore):
            raise ConfigError("ignore must be a list of glob patterns (strings).")
        expected = {**self.expected, **(overrides.get("expected") or {})}
        if not all(isinstance(p, str) and isinstance(r, str) for p, r in expected.items()):
            raise ConfigError("expected maps stage patterns to reasons (strings).")
        strict = self.strict if overrides.get("strict") is None else bool(overrides["strict"])
        renames = self.renames + check_renames(overrides.get("rename") or {}, None)
        transforms = self.transforms + check_transforms(overrides.get("transforms") or {}, None)
        return CompareConfig(build_tolerance(tol_over, stage_rules, None), aliases, ignore, expected, strict,
                             self.source, renames, transforms, self.images, self.image_settings)

    def image_options(self, key: str) -> dict[str, float] | None:
        """Keyword arguments of :func:`~parity.compare.image.image_metrics` when ``[images]``
        opts stage ``key`` in (a 2-D stage), else ``None``."""
        if any(glob_to_regex(p).match(key) for p in self.images):
            return dict(self.image_settings)
        return None

    # -- application ----------------------------------------------------------------------------
    def rename_candidate(self, key: str) -> str:
        """The reference key a candidate key corresponds to, after regex renames, then aliases.

        Raises:
            ConfigError: a rename turns the key into something that is not a valid stage key.
        """
        if self.renames:
            renamed = apply_renames(key, self.renames)
            if renamed != key:
                try:
                    split_key(renamed)
                except StageKeyError:
                    raise ConfigError(f'[rename] turns candidate stage "{key}" into "{renamed}", '
                                      "which is not a valid stage key.", path=self.source) from None
                key = renamed
        if not self.aliases:
            return key
        name, idx, occ = split_key(key)
        new = self.aliases.get(name)
        if new is None:
            for alias, target in self.aliases.items():
                if name.endswith("." + alias):
                    new = name[: -len(alias)] + target
                    break
        if new is None:
            return key
        return key.replace(name, new, 1)

    def transforms_stage(self, key: str) -> bool:
        """Whether a ``[transforms]`` entry with steps applies to stage ``key`` on either side."""
        return bool(self.transforms) and any(t.applies(key, side) and t.steps for t in self.transforms
                                             for side in ("reference", "candidate"))

    def is_ignored(self, key: str) -> bool:
        return bool(self.ignore) and any(glob_to_regex(p).match(key) for p in self.ignore)

    def expected_reason(self, key: str) -> str | None:
        for pattern, reason in self.expected.items():
            if glob_to_regex(pattern).match(key):
                return reason
        return None

    def unused_entries(self, ref_keys: Iterable[str], cand_keys: Iterable[str]) -> list[str]:
        """One line per config entry that matches nothing in this pair of traces, with the
        closest stage name when one looks like a typo.

        A project config serves several trace pairs, so an unused entry is a warning in every
        report; ``strict`` (or :meth:`check_patterns`) makes it an error.

        >>> cfg = CompareConfig.from_dict({"tolerance": {"stages": {"layer.*.attn": {"rtol": 1e-3}}}})
        >>> cfg.unused_entries(["layers.0.attn"], [])
        ['[tolerance.stages] pattern "layer.*.attn" matches no stage (did you mean "layers.0.attn"?)']
        """
        ref_keys, cand_keys = list(ref_keys), list(cand_keys)
        out: list[str] = []

        def hint(pattern: str, keys: list[str]) -> str:
            close = difflib.get_close_matches(pattern.replace("*", "").replace("?", ""), keys, n=1, cutoff=0.6)
            if not close:
                close = difflib.get_close_matches(pattern, keys, n=1, cutoff=0.6)
            return f' (did you mean "{close[0]}"?)' if close else ""

        for pattern, _ in self.tolerance.stages:
            rx = glob_to_regex(pattern)
            if not any(rx.match(k) for k in ref_keys):
                out.append(f'[tolerance.stages] pattern "{pattern}" matches no stage{hint(pattern, ref_keys)}')
        for kind, patterns in (("ignore", self.ignore), ("expected", list(self.expected))):
            for p in patterns:
                rx = glob_to_regex(p)
                if not any(rx.match(k) for k in ref_keys + cand_keys):
                    out.append(f'[{kind}] pattern "{p}" matches no stage{hint(p, ref_keys + cand_keys)}')
        for pattern, _ in self.renames:
            rx = re.compile(pattern)
            if not any(rx.search(k) for k in cand_keys):
                out.append(f'[rename] "{pattern}" matches no candidate stage')
        renamed = [apply_renames(k, self.renames) for k in cand_keys] if self.renames else cand_keys
        names = sorted({_name_of(k) for k in renamed} - {None}) if self.aliases else []  # (only aliases read them)
        for alias in self.aliases:
            if not any(n == alias or n.endswith("." + alias) for n in names):
                out.append(f'[aliases] "{alias}" matches no candidate stage{hint(alias, names)}')
        for t in self.transforms:
            rx = glob_to_regex(t.pattern)
            if not any(rx.match(k) for k in ref_keys):
                out.append(f'[transforms] pattern "{t.pattern}" matches no reference stage{hint(t.pattern, ref_keys)}')
        for p in self.images:
            rx = glob_to_regex(p)
            if not any(rx.match(k) for k in ref_keys):
                out.append(f'[images] pattern "{p}" matches no reference stage{hint(p, ref_keys)}')
        return out

    def check_patterns(self, ref_keys: Iterable[str], cand_keys: Iterable[str]) -> None:
        """Raise :class:`ConfigError` listing every entry that matches no stage (``--strict``)."""
        unused = self.unused_entries(ref_keys, cand_keys)
        if unused:
            raise ConfigError("config entries match nothing in these traces (an error under strict): "
                              + "; ".join(unused) + ".", path=self.source)


#: Every keyword override of the config (``compare_traces(..., rtol=...)``, ``merged``, the CLI's
#: comparison flags) → what it does; read from the fields of :class:`CompareConfig`.
OVERRIDES: dict[str, str] = {name: doc for f in fields(CompareConfig) for name, doc in f.metadata["overrides"].items()}
# the TOML sections (top-level ``strict`` is a key, [events] is read by parity.events)
_SECTIONS = {f.metadata["section"] for f in fields(CompareConfig) if f.metadata["section"]} - {"strict"} | {"events"}


def _fields_doc() -> str:
    lines = ["", "    Fields (TOML section; keyword overrides):", ""]
    for f in fields(CompareConfig):
        where = f"[{f.metadata['section']}]" if f.metadata["section"] not in (None, "strict") else (
            "strict = true" if f.metadata["section"] else "not in the file")
        over = ", ".join(f.metadata["overrides"])
        lines.append(f"    - ``{f.name}`` ({where}{'; ' + over if over else ''}): {f.metadata['doc']}.")
    return "\n".join(lines) + "\n"


CompareConfig.__doc__ = (CompareConfig.__doc__ or "") + _fields_doc()


def check_overrides(overrides: Mapping[str, Any]) -> None:
    """Raise :class:`UsageError` naming any keyword that is not one of :data:`OVERRIDES`.

    >>> check_overrides({"rtol": 1e-5, "strict": None})
    """
    unknown = [k for k in overrides if k not in OVERRIDES]
    if unknown:
        raise UsageError(f"unknown comparison option{'s' if len(unknown) > 1 else ''} "
                         f"{', '.join(repr(k) for k in unknown)}; the options are: {', '.join(OVERRIDES)}.")


def as_config(config: str | os.PathLike[str] | CompareConfig | Mapping[str, Any] | None = None,
              **overrides: Any) -> CompareConfig:
    """The config a comparison uses: ``config`` (``None``, a :class:`CompareConfig`, a dict shaped
    like the TOML file, or a TOML path) with the keyword overrides (:data:`OVERRIDES`) applied.

    Raises:
        ConfigError: the config file or a value is wrong. UsageError: an unknown override.

    >>> as_config("parity.toml", rtol=1e-3).tolerance.overrides
    {'rtol': 0.001, 'atol': 1e-06}
    """
    if config is None:
        cfg = CompareConfig()
    elif isinstance(config, CompareConfig):
        cfg = config
    elif isinstance(config, Mapping):
        cfg = CompareConfig.from_dict(config)
    else:
        cfg = load_config(config)
    return cfg.merged(**overrides)


def _name_of(key: str) -> str | None:
    """The name part of a key, or None when a rename made it invalid (rename_candidate reports that)."""
    try:
        return split_key(key)[0]
    except StageKeyError:
        return None


_MAX_CONFIG_BYTES = 16 * 2**20  # a comparison config is a few kilobytes; more is not a config
_MAX_NUMBER_CHARS = 256  # longest run of digits outside strings (tomllib's int() refuses > 4300 digits)


def _read_config(path: str) -> bytes:
    """The bytes of the config file (a regular file of at most 16 MiB)."""
    try:
        with open(path, "rb") as f:
            st = os.fstat(f.fileno())
            if not stat.S_ISREG(st.st_mode):
                raise ConfigError("is not a regular file; expected a TOML comparison config.", path=path)
            if st.st_size > _MAX_CONFIG_BYTES:
                raise ConfigError(f"is {st.st_size} bytes; a comparison config is at most {_MAX_CONFIG_BYTES}.",
                                  path=path)
            raw = f.read(_MAX_CONFIG_BYTES + 1)
    except FileNotFoundError:
        raise ConfigError("config file not found.", path=path) from None
    except OSError as e:
        raise ConfigError(f"cannot be read ({e.strerror or e}).", path=path) from e
    if len(raw) > _MAX_CONFIG_BYTES:
        raise ConfigError(f"is larger than {_MAX_CONFIG_BYTES} bytes; a comparison config is a small TOML file.",
                          path=path)
    return raw


def _decode(raw: bytes, path: str) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        raise ConfigError(f"line {line}: is not valid UTF-8 (byte {raw[e.start]:#04x} at offset {e.start}); "
                          "a TOML config is UTF-8 text.", path=path) from e


def _scan_toml(text: str, path: str) -> None:
    """Check, without recursion, that arrays and inline tables nest at most MAX_NESTING deep and
    that no number outside strings has more than _MAX_NUMBER_CHARS digits, before tomllib (which
    recurses, and converts integers with ``int()``) parses the text."""
    depth = 0
    line = 1
    run = 0
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c in "0123456789_":
            run += 1
            if run > _MAX_NUMBER_CHARS:
                raise ConfigError(f"line {line}: a number has more than {_MAX_NUMBER_CHARS} digits.", path=path)
            i += 1
            continue
        run = 0
        if c == "\n":
            line += 1
        elif c in "[{":
            depth += 1
            if depth > MAX_NESTING:
                raise ConfigError(f"line {line}: arrays and inline tables nest deeper than {MAX_NESTING} levels.",
                                  path=path)
        elif c in "]}":
            depth = max(depth - 1, 0)
        elif c == "#":
            end = text.find("\n", i)
            i = n if end < 0 else end
            continue
        elif c in "\"'":
            triple = text.startswith(c * 3, i)
            i += 3 if triple else 1
            while i < n:  # to the end of the string
                d = text[i]
                if d == "\\" and c == '"':
                    if i + 1 < n and text[i + 1] == "\n":
                        line += 1
                    i += 2
                    continue
                if d == "\n":
                    line += 1
                    if not triple:  # an unterminated one-line string: tomllib reports it
                        break
                if d == c and (not triple or text.startswith(c * 3, i)):
                    i += 1 if not triple else 3
                    extra = 0
                    while triple and extra < 2 and i < n and text[i] == c:  # """a"""" ends in a quote
                        i += 1
                        extra += 1
                    break
                i += 1
            else:
                break
            continue
        i += 1


def _check_depth(data: object, path: str) -> None:
    """Check, without recursion, that the parsed document (dotted keys make tables too) nests at
    most MAX_NESTING deep."""
    todo: list[tuple[object, int]] = [(data, 0)]
    while todo:
        value, depth = todo.pop()
        if depth > MAX_NESTING:
            raise ConfigError(f"tables and arrays nest deeper than {MAX_NESTING} levels.", path=path)
        if isinstance(value, dict):
            todo.extend((v, depth + 1) for v in value.values())
        elif isinstance(value, list):
            todo.extend((v, depth + 1) for v in value)


def load_config(path: str | os.PathLike[str]) -> CompareConfig:
    """Read a TOML comparison config and check every field of it.

    Raises:
        ConfigError: the file is missing or unreadable, is not UTF-8 or not TOML, nests deeper
            than :data:`parity.limits.MAX_NESTING`, or has unknown sections, values of the wrong
            type or range, or a ``[rename]`` pattern or replacement that is not valid. The message
            names the file, and the line or the section and key.

    >>> cfg = load_config("parity.toml")
    >>> cfg.tolerance.overrides, cfg.source
    ({'rtol': 0.0001, 'atol': 1e-06}, 'parity.toml')
    """
    path = os.fspath(path)
    text = _decode(_read_config(path), path)
    _scan_toml(text, path)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"is not valid TOML ({e}).", path=path) from e
    except (ValueError, RecursionError) as e:  # tomllib's own int() and recursion, past the checks above
        raise ConfigError(f"is not a TOML file parity can read ({type(e).__name__}: {e}).", path=path) from e
    _check_depth(data, path)
    return CompareConfig.from_dict(data, source=path)
