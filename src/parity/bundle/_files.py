"""The bundle's file rules: create exclusively (never overwrite, never follow a planted link),
replace atomically, checksum, list without following links, and read JSON without trusting it."""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any

from ..errors import UsageError
from ..trace.jsonsafe import load_json

__all__ = ["write_new", "replace", "json_bytes", "sha256", "walk", "read_json", "dig", "short_value", "MAX_JSON_BYTES"]

def write_new(path: str, data: bytes) -> None:
    """Create ``path`` exclusively: never overwrite, never follow a planted symbolic link."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o644)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def replace(path: str, data: bytes) -> None:
    """Atomically (re)write a bundle's own file: a temporary name, then a rename over it."""
    tmp = f"{path}.tmp-{os.getpid()}"
    write_new(tmp, data)
    os.replace(tmp, path)


def json_bytes(obj: Any) -> bytes:
    return (json.dumps(obj, indent=2, ensure_ascii=False) + "\n").encode("utf-8")


def sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def walk(root: str) -> tuple[list[str], list[str]]:
    """Relative paths of the regular files under ``root`` and of anything else (links, sockets).

    Iterative (``os.walk`` recurses in Python 3.11, so a hostile tree of thousands of nested
    folders would raise RecursionError); links are never followed.
    """
    files, odd = [], []
    todo = [root]
    while todo:
        dirpath = todo.pop()
        try:
            entries = sorted(os.scandir(dirpath), key=lambda e: e.name)
        except OSError:  # as os.walk: an unreadable folder's files show up as missing
            continue
        for entry in entries:
            rel = os.path.relpath(entry.path, root).replace(os.sep, "/")
            if entry.is_symlink():
                odd.append(rel)
            elif entry.is_dir(follow_symlinks=False):
                todo.append(entry.path)
            elif entry.is_file(follow_symlinks=False):
                files.append(rel)
            else:
                odd.append(rel)
    return sorted(files), sorted(odd)


MAX_JSON_BYTES = 64 * 2**20  # bundle.json, env.json and diff outputs are small


def short_value(value: object) -> str:
    """A JSON value for an error message: a scalar's repr cut to 60 characters, else its type."""
    text = repr(value) if isinstance(value, (str, int, float, bool, type(None))) else f"a {type(value).__name__}"
    return text if len(text) <= 60 else text[:57] + "..."


def read_json(path: str, what: str) -> Any:
    """Parse the JSON file ``path`` of a bundle without trusting it (bounded size and nesting, UTF-8,
    finite numbers only); a file that cannot be read or parsed is a :class:`UsageError` naming it.

    Raises:
        FileNotFoundError: there is no such file (the caller decides what that means).
    """
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_JSON_BYTES + 1)
    except FileNotFoundError:
        raise
    except OSError as e:
        raise UsageError(f"cannot be read ({e.strerror or e}).", path=path) from e
    if len(raw) > MAX_JSON_BYTES:
        raise UsageError(f"is larger than {MAX_JSON_BYTES} bytes; the {what} is corrupt.", path=path)
    doc, bad = load_json(raw, path=path, what=what, error=UsageError)
    if bad:
        raise UsageError(f"holds a non-finite number ({bad[0]}); the {what} is corrupt.", path=path)
    return doc


def dig(doc: Any, *keys: str) -> Any:
    """``doc[k1][k2]...`` where every level is a dict, else None (env.json and outputs are data)."""
    for k in keys:
        if not isinstance(doc, dict):
            return None
        doc = doc.get(k)
    return doc

