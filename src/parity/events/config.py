"""The ``[events]`` table of a parity TOML config (read here from the file's raw TOML).

    [events]
    preset = "ccpa"              # normalization preset (default: the one recorded at import)
    min_score = 0.9              # pass when the similarity score reaches this (default: no divergent event)
    max_detail = 100             # divergent events given a field-level diff

    [events.normalize]           # see parity.events.normalize
    ignore = ["hook_event:duration_ms"]

    [events.tolerance]
    "session_end:elapsed_ms" = { factor = 2.0 }

Other tables of the file (``[tolerance]``, ``[aliases]``...) belong to tensor diffs and are not read here.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import ConfigError
from .normalize import RuleSet

__all__ = ["EventsConfig", "load_events_config"]

_KEYS = {"preset", "min_score", "max_detail", "normalize", "tolerance"}


@dataclass(frozen=True)
class EventsConfig:
    """Settings of an event comparison.

    >>> c = EventsConfig.from_dict({"events": {"preset": "ccpa", "min_score": 0.9}})
    >>> c.preset, c.min_score
    ('ccpa', 0.9)
    """

    preset: str | None = None
    min_score: float | None = None
    max_detail: int = 100
    rules: RuleSet = field(default_factory=RuleSet)
    source: str | None = None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, source: str | None = None) -> EventsConfig:
        """From a whole parsed TOML document (its ``events`` table), or from the ``events`` table itself.

        Raises:
            ConfigError: unknown keys or wrong types in ``[events]``.
        """
        where = f"{source}: " if source else ""
        events = data.get("events", data if set(data) <= _KEYS else {})
        if not isinstance(events, Mapping):
            raise ConfigError(f"{where}[events] must be a table.")
        unknown = set(events) - _KEYS
        if unknown:
            raise ConfigError(f"{where}[events] has unknown key(s) {sorted(unknown)}; expected some of {sorted(_KEYS)}.")
        preset = events.get("preset")
        if preset is not None and not isinstance(preset, str):
            raise ConfigError(f'{where}[events] preset must be a name such as "ccpa".')
        if preset is not None:
            from .presets import PRESETS

            if preset not in PRESETS:
                raise ConfigError(f"{where}[events] unknown preset {preset!r}; known: {', '.join(sorted(PRESETS))}.")
        min_score = events.get("min_score")
        if min_score is not None and (isinstance(min_score, bool) or not isinstance(min_score, (int, float))
                                      or not 0 <= min_score <= 1):
            raise ConfigError(f"{where}[events] min_score must be a number from 0 to 1, got {min_score!r}.")
        max_detail = events.get("max_detail", 100)
        if isinstance(max_detail, bool) or not isinstance(max_detail, int) or max_detail < 0:
            raise ConfigError(f"{where}[events] max_detail must be a non-negative integer, got {max_detail!r}.")
        rules = RuleSet.from_config(events, origin=os.path.basename(source) if source else "config", where=where)
        return cls(preset, float(min_score) if min_score is not None else None, max_detail, rules, source)


def load_events_config(config: str | os.PathLike[str] | Mapping[str, Any] | EventsConfig | None) -> EventsConfig:
    """An :class:`EventsConfig` from a TOML path, a dict shaped like the file, or ``None`` (defaults).

    Raises:
        ConfigError: the file is missing or not TOML, or ``[events]`` is wrong.

    >>> _ = open("events.toml", "w").write('[events]\\npreset = "ccpa"\\nmin_score = 0.8\\n')
    >>> c = load_events_config("events.toml")
    >>> c.preset, c.min_score, c.source
    ('ccpa', 0.8, 'events.toml')
    >>> load_events_config(None).min_score is None  # defaults: no score gate
    True
    """
    if config is None:
        return EventsConfig()
    if isinstance(config, EventsConfig):
        return config
    if isinstance(config, Mapping):
        return EventsConfig.from_dict(config)
    path = os.fspath(config)
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError("config file not found.", path=path) from None
    except IsADirectoryError:
        raise ConfigError("is a directory, not a TOML config file.", path=path) from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError, RecursionError) as e:
        raise ConfigError(f"is not valid TOML ({e}).", path=path) from None
    return EventsConfig.from_dict(data, source=path)
