"""Built-in normalization presets for known event-log conventions.

``ccpa`` is the ``ccpa-trace.jsonl`` convention of coding-agent sessions: one JSON record per
line with the envelope ``{"v": 1, "kind": ...}``; kinds ``session_start`` (``session_id``,
``ts``, ``cwd_sha256``), ``user_prompt`` (``turn``, ``text``), ``assistant_turn`` (``turn``,
``content`` blocks: ``text``, ``tool_use`` with ``id``, ``name``, ``input``), ``tool_result``
(``tool_use_id``, ``content``, ``is_error``), ``hook_event``, ``skill_invocation`` and
``session_end`` (``stop_reason``, ``elapsed_ms``, ``tokens_in``, ``tokens_out``).

>>> sorted(PRESETS)
['ccpa']
>>> [r.describe() for r in preset_rules("ccpa").rules][:2]
['placeholder **.session_id -> <SESSION> (preset:ccpa)', 'placeholder **.ts -> <TS> (preset:ccpa)']
"""

from __future__ import annotations

from typing import Any

from ..errors import ConfigError
from .normalize import RuleSet

__all__ = ["PRESETS", "preset_rules", "KNOWN_KINDS"]

#: the ``[events]`` table each preset stands for (the same shape as the config file's)
PRESETS: dict[str, dict[str, Any]] = {
    "ccpa": {
        "normalize": {
            "placeholders": {
                "**.session_id": "<SESSION>",       # a fresh id per session
                "**.ts": "<TS>",                    # wall-clock timestamps
            },
            "numbered": {
                # tool-call ids, numbered in order of appearance; a result must refer to the call
                # aligned with its counterpart's call (checked pair by pair, see docs/events.md)
                "assistant_turn:content[*].id": "TOOL",
                "**.tool_use_id": "TOOL",
                # hashes of paths (the working directory differs from machine to machine)
                "**.*_sha256": "PATH-HASH",
            },
        },
        "tolerance": {
            "session_end:elapsed_ms": {"factor": 3.0},
            "session_end:tokens_in": {"rtol": 0.1},
            "session_end:tokens_out": {"rtol": 0.1},
        },
    },
}

#: record kinds each preset knows (others are compared all the same, and counted)
KNOWN_KINDS: dict[str, tuple[str, ...]] = {
    "ccpa": ("session_start", "user_prompt", "assistant_turn", "tool_result", "hook_event", "skill_invocation",
             "session_end"),
}


def preset_rules(name: str | None) -> RuleSet:
    """The :class:`~parity.events.normalize.RuleSet` of preset ``name`` (empty for ``None``).

    Raises:
        ConfigError: no such preset.

    >>> len(preset_rules("ccpa").rules), preset_rules(None).rules
    (8, [])
    >>> preset_rules("nope")
    Traceback (most recent call last):
    ...
    parity.errors.ConfigError: unknown events preset 'nope'; known: ccpa.
    """
    if name is None:
        return RuleSet()
    if name not in PRESETS:
        raise ConfigError(f"unknown events preset {name!r}; known: {', '.join(sorted(PRESETS))}.")
    return RuleSet.from_config(PRESETS[name], origin=f"preset:{name}")
