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

import os
import re
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import ConfigError, StageKeyError
from ..trace.keys import split_key
from .align import StageTransform, apply_renames, parse_renames, parse_transforms
from .tolerance import ToleranceRules, glob_to_regex

__all__ = ["CompareConfig", "load_config"]

_SECTIONS = {"tolerance", "aliases", "ignore", "expected", "rename", "transforms"}


@dataclass(frozen=True)
class CompareConfig:
    """How to line two traces up and judge them.

    Attributes:
        tolerance: per-dtype defaults, global overrides and per-stage overrides.
        aliases: candidate name → reference name. A name matches a whole key's name or its last
            dotted segments (``attn_weights`` renames ``layers.3.attn_weights`` too); indices and
            ``#occurrence`` are kept.
        ignore: glob patterns of (reference-side) stages to leave out.
        expected: glob pattern → reason, for divergences that are known and accepted.
        strict: stages present on one side only fail the comparison.
        source: the file the config came from, for error messages.
        renames: ``(regex, replacement)`` applied to candidate keys in order, before ``aliases``.
        transforms: per-stage transforms (see :mod:`parity.compare.align`).
    """

    tolerance: ToleranceRules = field(default_factory=ToleranceRules)
    aliases: Mapping[str, str] = field(default_factory=dict)
    ignore: tuple[str, ...] = ()
    expected: Mapping[str, str] = field(default_factory=dict)
    strict: bool = False
    source: str | None = None
    renames: tuple[tuple[str, str], ...] = ()
    transforms: tuple[StageTransform, ...] = ()

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, source: str | None = None) -> CompareConfig:
        """Build a config from a parsed TOML document (or an equivalent dict).

        Raises:
            ConfigError: unknown sections or fields, or values of the wrong type.
        """
        where = f"{source}: " if source else ""
        unknown = set(data) - _SECTIONS - {"strict"}
        if unknown:
            raise ConfigError(f"{where}unknown section(s) {sorted(unknown)}; expected some of {sorted(_SECTIONS)}.")
        tol = dict(data.get("tolerance", {}))
        stages = tol.pop("stages", {})
        try:
            rules = ToleranceRules.build(tol, stages)
        except ConfigError as e:
            raise ConfigError(where + e.message) from None
        aliases = data.get("aliases", {})
        if not isinstance(aliases, Mapping) or not all(isinstance(v, str) for v in aliases.values()):
            raise ConfigError(f'{where}[aliases] maps candidate names to reference names, e.g. attn_weights = "attn_probs".')
        ignore = data.get("ignore", {})
        patterns = ignore.get("stages", []) if isinstance(ignore, Mapping) else ignore
        if not isinstance(patterns, list) or not all(isinstance(p, str) for p in patterns):
            raise ConfigError(f'{where}[ignore] stages must be a list of glob patterns, e.g. stages = ["timing.*"].')
        expected = data.get("expected", {})
        if not isinstance(expected, Mapping) or not all(isinstance(v, str) for v in expected.values()):
            raise ConfigError(f'{where}[expected] maps stage patterns to reasons, e.g. "logits" = "known bf16 drift".')
        strict = data.get("strict", False)
        if not isinstance(strict, bool):
            raise ConfigError(f"{where}strict must be true or false.")
        renames = parse_renames(data.get("rename", {}), where)
        transforms = parse_transforms(data.get("transforms", {}), where)
        return cls(rules, dict(aliases), tuple(patterns), dict(expected), strict, source, renames, transforms)

    def merged(self, **overrides: Any) -> CompareConfig:
        """A copy with keyword overrides (``rtol``, ``atol``, ``stages``, ``aliases``, ``strict``, ``rename``,
        ``transforms``: the last two shaped like their TOML tables)."""
        tol_over = dict(self.tolerance.overrides)
        for k in ("rtol", "atol", "cosine_min", "sqnr_min_db"):
            if overrides.get(k) is not None:
                tol_over[k] = overrides[k]
        stage_rules = dict(self.tolerance.stages)
        stage_rules.update(overrides.get("stages") or {})
        aliases = {**self.aliases, **(overrides.get("aliases") or {})}
        ignore = self.ignore + tuple(overrides.get("ignore") or ())
        expected = {**self.expected, **(overrides.get("expected") or {})}
        strict = self.strict if overrides.get("strict") is None else bool(overrides["strict"])
        renames = self.renames + parse_renames(overrides.get("rename") or {})
        transforms = self.transforms + parse_transforms(overrides.get("transforms") or {})
        return CompareConfig(ToleranceRules.build(tol_over, stage_rules), aliases, ignore, expected, strict, self.source,
                             renames, transforms)

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
                    where = f"{self.source}: " if self.source else ""
                    raise ConfigError(f'{where}[rename] turns candidate stage "{key}" into "{renamed}", '
                                      "which is not a valid stage key.") from None
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

    def is_ignored(self, key: str) -> bool:
        return any(glob_to_regex(p).match(key) for p in self.ignore)

    def expected_reason(self, key: str) -> str | None:
        for pattern, reason in self.expected.items():
            if glob_to_regex(pattern).match(key):
                return reason
        return None

    def check_patterns(self, ref_keys: Iterable[str], cand_keys: Iterable[str]) -> None:
        """Raise :class:`ConfigError` for any pattern or alias that matches no stage."""
        ref_keys, cand_keys = list(ref_keys), list(cand_keys)
        where = f"{self.source}: " if self.source else ""
        try:
            self.tolerance.check_patterns(ref_keys)
        except ConfigError as e:
            raise ConfigError(where + e.message) from None
        for kind, patterns in (("ignore", self.ignore), ("expected", list(self.expected))):
            for p in patterns:
                rx = glob_to_regex(p)
                if not any(rx.match(k) for k in ref_keys + cand_keys):
                    raise ConfigError(f'{where}[{kind}] pattern "{p}" matches no stage.')
        for pattern, _ in self.renames:
            rx = re.compile(pattern)
            if not any(rx.search(k) for k in cand_keys):
                raise ConfigError(f'{where}[rename] "{pattern}" matches no candidate stage.')
        renamed = [apply_renames(k, self.renames) for k in cand_keys] if self.renames else cand_keys
        for alias in self.aliases:
            if not any(split_key(k)[0] == alias or split_key(k)[0].endswith("." + alias) for k in renamed):
                raise ConfigError(f'{where}[aliases] "{alias}" matches no candidate stage.')
        for t in self.transforms:
            rx = glob_to_regex(t.pattern)
            if not any(rx.match(k) for k in ref_keys):
                raise ConfigError(f'{where}[transforms] pattern "{t.pattern}" matches no reference stage.')


def load_config(path: str | os.PathLike[str]) -> CompareConfig:
    """Read a TOML comparison config.

    Raises:
        ConfigError: the file is missing, is not TOML, or has unknown sections or bad values.
    """
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError("config file not found.", path=path) from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"is not valid TOML ({e}).", path=path) from None
    return CompareConfig.from_dict(data, source=path)
