"""Realistic ccpa-style agent sessions for the event-trace tests (a dozen records each)."""

from __future__ import annotations

import copy
import hashlib
import json
import os
from typing import Any


def session(seed: str = "a", *, ts0: int = 1_717_000_000_000, elapsed_ms: int = 48_210, tokens_in: int = 18_420,
            tokens_out: int = 2_311) -> list[dict[str, Any]]:
    """A coding-agent session: prompt, tool calls (read a file, run tests, edit), results, a hook, a skill."""
    sid = hashlib.sha1(seed.encode()).hexdigest()[:12]
    t = lambda i: f"toolu_{hashlib.sha1((seed + str(i)).encode()).hexdigest()[:16]}"  # noqa: E731
    cwd = hashlib.sha256(f"/home/{seed}/work/repo".encode()).hexdigest()
    ts = lambda k: ts0 + 137 * k + (len(seed) * 11)  # noqa: E731
    return [
        {"v": 1, "kind": "session_start", "session_id": f"sess-{sid}", "ts": ts(0), "cwd_sha256": cwd,
         "model": "agent-1", "tools": ["Read", "Bash", "Edit"]},
        {"v": 1, "kind": "user_prompt", "turn": 1, "ts": ts(1),
         "text": "The test test_parse_dates fails on leap years.\nFind the bug in dates.py and fix it."},
        {"v": 1, "kind": "assistant_turn", "turn": 1, "ts": ts(2), "content": [
            {"type": "text", "text": "I'll start by reading the module."},
            {"type": "tool_use", "id": t(1), "name": "Read", "input": {"file_path": "src/dates.py"}}]},
        {"v": 1, "kind": "tool_result", "turn": 1, "ts": ts(3), "tool_use_id": t(1), "is_error": False,
         "content": "def is_leap(y):\n    return y % 4 == 0 and y % 100 != 0\n"},
        {"v": 1, "kind": "hook_event", "turn": 1, "ts": ts(4), "hook": "PostToolUse", "tool": "Read", "decision": "allow"},
        {"v": 1, "kind": "assistant_turn", "turn": 1, "ts": ts(5), "content": [
            {"type": "tool_use", "id": t(2), "name": "Bash",
             "input": {"command": "python -m pytest tests/test_dates.py -q", "timeout": 120000}}]},
        {"v": 1, "kind": "tool_result", "turn": 1, "ts": ts(6), "tool_use_id": t(2), "is_error": True,
         "content": "F.\nFAILED tests/test_dates.py::test_parse_dates - assert is_leap(2000)\n1 failed, 1 passed"},
        {"v": 1, "kind": "assistant_turn", "turn": 1, "ts": ts(7), "content": [
            {"type": "text", "text": "Years divisible by 400 are leap years too; is_leap misses that."},
            {"type": "tool_use", "id": t(3), "name": "Edit",
             "input": {"file_path": "src/dates.py", "old_string": "y % 4 == 0 and y % 100 != 0",
                       "new_string": "y % 4 == 0 and (y % 100 != 0 or y % 400 == 0)"}}]},
        {"v": 1, "kind": "tool_result", "turn": 1, "ts": ts(8), "tool_use_id": t(3), "is_error": False,
         "content": "The file src/dates.py has been updated."},
        {"v": 1, "kind": "skill_invocation", "turn": 1, "ts": ts(9), "skill": "run-tests",
         "args": {"paths": ["tests/test_dates.py"]}},
        {"v": 1, "kind": "assistant_turn", "turn": 1, "ts": ts(10), "content": [
            {"type": "tool_use", "id": t(4), "name": "Bash", "input": {"command": "python -m pytest tests/test_dates.py -q"}}]},
        {"v": 1, "kind": "tool_result", "turn": 1, "ts": ts(11), "tool_use_id": t(4), "is_error": False,
         "content": "..\n2 passed"},
        {"v": 1, "kind": "assistant_turn", "turn": 1, "ts": ts(12), "content": [
            {"type": "text", "text": "Fixed: is_leap now accepts years divisible by 400 (2000 is a leap year)."}]},
        {"v": 1, "kind": "session_end", "ts": ts(13), "stop_reason": "end_turn", "elapsed_ms": elapsed_ms,
         "tokens_in": tokens_in, "tokens_out": tokens_out},
    ]


def lines(records: list[dict[str, Any]], *, spaced: bool = False) -> str:
    sep = (", ", ": ") if spaced else (",", ":")
    return "".join(json.dumps(r, separators=sep) + "\n" for r in records)


def write(path: str | os.PathLike[str], records: list[dict[str, Any]] | str, **kw: Any) -> str:
    text = records if isinstance(records, str) else lines(records, **kw)
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    return os.fspath(path)


def edited(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return copy.deepcopy(records)
