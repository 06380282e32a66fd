"""The JSON text of a trace's manifest and journal, byte for byte what ``json.dumps`` would write.

The manifest is ``json.dumps(manifest, indent=1, sort_keys=True, ensure_ascii=False)`` (see
:func:`_dump`); the writer renders it with its own emitter (:func:`_dump_fast`, :func:`_emit`), which
gives the same bytes several times faster, renders each stage's entry once, field by field, with
the texts of repeated fields remembered (:func:`_entry_text`), and copies the entries of a million
stages from a file (:class:`_StageTexts`) instead of holding them in memory. Nothing here is public:
the writer (``parity.trace.writer``, ``packed``, ``_batch``) is the only user.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Mapping
from typing import Any, NamedTuple

from ..errors import UsageError
from .datafiles import _open_scratch

__all__: list[str] = []

def _dump(obj: object) -> bytes:
    return (json.dumps(obj, indent=1, sort_keys=True, ensure_ascii=False, allow_nan=False) + "\n").encode("utf-8")


_encode_str = json.encoder.encode_basestring  # the C encoder json.dumps(ensure_ascii=False) uses


def _dump_fast(obj: object) -> bytes:
    """Byte-identical to :func:`_dump`, several times faster on large manifests.

    ``json.dumps(indent=...)`` runs the pure-Python encoder; a manifest of a million stages (an
    imported log) spent most of its writing time there. Types outside plain JSON go through
    ``json.dumps`` itself, so errors (NaN, objects) are the same.
    """
    out: list[str] = []
    _emit(obj, 0, out)
    out.append("\n")
    return "".join(out).encode("utf-8")


def _emit(o: object, level: int, out: list[str]) -> None:
    t = type(o)
    if t is str:
        out.append(_encode_str(o))
    elif t is dict or t is list or t is tuple:
        _emit_container(o, t is dict, level, out)  # type: ignore[arg-type]
    elif t is _StageTexts:  # the manifest's stages: rendered as they were journaled, kept in a file
        if not o.count:
            out.append("[]")
            return
        assert level == 1, "stage entries are rendered for the manifest's top level"
        out.append("[\n  ")
        out.append(o)  # type: ignore[arg-type]  # the writer copies the file here
        out.append("\n ]")
    elif t is int:
        out.append(int.__repr__(o))
    elif o is True:
        out.append("true")
    elif o is False:
        out.append("false")
    elif o is None:
        out.append("null")
    else:  # floats (NaN is refused here as by json.dumps), subclasses, foreign objects
        out.append(json.dumps(o, ensure_ascii=False, allow_nan=False))


def _emit_container(o: dict | list | tuple, is_dict: bool, level: int, out: list[str]) -> None:
    """A dict (by sorted key) or a list at ``level``: one item a line, indented one level more."""
    if not o:
        out.append("{}" if is_dict else "[]")
        return
    inner = "\n" + " " * (level + 1)
    sep = "," + inner
    out.append("{" if is_dict else "[")
    first = True
    for item in (sorted(o.items()) if is_dict else o):  # type: ignore[union-attr]
        out.append(sep if not first else inner)
        first = False
        if is_dict:
            _emit_item(item[0], item[1], level, out)
            continue
        text = _leaf_text(item)
        if text is None:
            _emit(item, level + 1, out)
        else:
            out.append(text)
    out.append("\n" + " " * level + ("}" if is_dict else "]"))


def _leaf_text(v: object) -> str | None:
    """The JSON text of an int or a str (not a bool: an int subclass); ``None`` for anything else."""
    tv = type(v)
    if tv is int:
        return int.__repr__(v)
    if tv is str:
        return _encode_str(v)
    return None


def _emit_item(k: object, v: object, level: int, out: list[str]) -> None:
    """One ``key: value`` of a dict at ``level`` (see :func:`_emit`)."""
    if type(k) is str:
        out.append(_encode_str(k))
    else:
        out.append(json.dumps({k: 0}, ensure_ascii=False)[1:-4])  # json's own key conversion
    # Leaves inline: a manifest is mostly small dicts of strings and ints.
    tv = type(v)
    if tv is str:
        out.append(": " + _encode_str(v))
    elif tv is int:
        out.append(": " + int.__repr__(v))
    elif (tv is list or tv is dict) and v and _flat_leaves(v):
        # shape lists and provenance/indices dicts: one level of str/int leaves, rendered here
        pad = "\n" + " " * (level + 2)
        if tv is list:
            body = ",".join(pad + (int.__repr__(x) if type(x) is int else _encode_str(x)) for x in v)
            out.append(": [" + body + "\n" + " " * (level + 1) + "]")
        else:
            body = ",".join(pad + _encode_str(a) + ": " + (int.__repr__(x) if type(x) is int else _encode_str(x))
                            for a, x in sorted(v.items()))
            out.append(": {" + body + "\n" + " " * (level + 1) + "}")
    else:
        out.append(": ")
        _emit(v, level + 1, out)


_ITEM_TEXTS: dict[tuple[Any, ...], str] = {}  # (level, key, value) -> text of _emit_item, for entries


def _field_text(k: str, v: object, level: int = 2) -> str:
    """The text of one ``key: value`` field of a manifest entry at ``level`` (as :func:`_emit_item`
    renders it), remembered by value, since a capture repeats the same dtypes, axes, provenance and
    shapes stage after stage."""
    tv = type(v)
    if tv is str or tv is int:
        ck: tuple[Any, ...] | None = (level, k, tv, v)
    elif tv is list and all(type(x) is str or type(x) is int for x in v):
        ck = (level, k, tv, *((type(x), x) for x in v))
    elif tv is dict and _plain(v):
        ck = (level, k, tv, *((a, type(x), x) for a, x in sorted(v.items())))
    else:
        ck = None
    cache = _ITEM_TEXTS
    text = cache.get(ck) if ck is not None else None
    if text is None:
        out: list[str] = []
        _emit_item(k, v, level, out)
        text = "".join(out)
        if ck is not None:
            if len(cache) >= 1 << 16:
                cache.clear()
            cache[ck] = text
    return text


def _join_fields(parts: list[str], level: int = 2) -> str:
    """An entry's text from the texts of its fields, in key order (see :func:`_entry_text`)."""
    if not parts:
        return "{}"
    inner = "\n" + " " * (level + 1)
    return "{" + inner + ("," + inner).join(parts) + "\n" + " " * level + "}"


def _entry_text(entry: Mapping[str, Any], level: int = 2) -> str:
    """``_emit(entry, level)`` as one string, field by field (see :func:`_field_text`)."""
    return _join_fields([_field_text(k, v, level) for k, v in sorted(entry.items())], level)


def _keyed(entry: dict[str, Any], final: str, occurrence: int) -> dict[str, Any]:
    """``entry`` completed with its key (and occurrence, from the second recording on)."""
    if occurrence:
        entry["occurrence"] = occurrence
    entry["key"] = final
    return entry


def _indices_entry(merged: Mapping[str, object]) -> dict[str, Any]:
    """A stage's indices as its manifest entry holds them (sorted; other types as text)."""
    return {k: (v if isinstance(v, (int, float, str, bool)) else str(v)) for k, v in sorted(merged.items())}


def _journal_text(entry_text: str) -> str:
    """The journal line (without its newline) of a stage whose manifest text is ``entry_text``: the
    same JSON on one line (JSON strings hold no raw newline, so only layout is removed)."""
    return '{"stage": ' + entry_text.replace("\n", "") + "}"


def _flat_leaves(v: list | dict) -> bool:
    """A list of str/int, or a dict of str keys to str/int values (bools excluded: int subclass)."""
    if type(v) is list:
        return all(type(x) is int or type(x) is str for x in v)
    return all(type(k) is str and (type(x) is int or type(x) is str) for k, x in v.items())


def _plain(d: Mapping[str, Any]) -> bool:
    """Whether a small mapping holds only str keys and str/int/bool values (JSON as it is)."""
    for k, v in d.items():
        if type(k) is not str or type(v) not in (str, int, bool):
            return False
    return True


def _jsonable(value: Any, what: str) -> Any:
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise UsageError(f"{what} must be JSON-serialisable (no NaN, no objects): {e}.") from e
    return value


class _Spilled(NamedTuple):
    """Rendered entries waiting in the spill file: where, how long, how many stages (and their rows
    for the stage index, ``parity.trace.index.Rows``, or None)."""

    offset: int
    manifest_bytes: int
    journal_bytes: int
    count: int
    rows: Any = None


class _StageTexts:
    """The manifest text of every journaled stage, in order, joined by ",\n  ": spilled to a file in
    the trace directory (a log of millions of stages makes gigabytes of it), copied into the final
    manifest on close. ``count`` entries written so far."""

    def __init__(self, path: str):
        self.file, self.path = _open_scratch(path)
        self.count = 0

    def append(self, text: str | bytes, entries: int = 1) -> None:
        if self.count:
            self.file.write(b",\n  ")
        self.file.write(text if type(text) is bytes else text.encode("utf-8"))  # type: ignore[union-attr]
        self.count += entries

    def copy_to(self, f: Any) -> None:
        self.file.flush()
        self.file.seek(0)
        shutil.copyfileobj(self.file, f, 16 << 20)
        self.file.seek(0, os.SEEK_END)

    def close(self) -> None:
        self.file.close()
        os.remove(self.path)


_FLAT_SPECS: dict[tuple[Any, ...], tuple[list[int], list[str], list[str], str, str] | None] = {}


def _flat_texts(label: str, d: Mapping[str, Any]) -> tuple[str, str] | None:
    """The field ``label`` holding a dict of str keys to str/int values, as an entry's line(s) in the
    manifest (what :func:`_emit` writes at level 2) and in the journal (what the journal encoder
    writes, with its separator); ``None`` for other dicts (the general encoder writes those).

    Log provenance is ``{"line": N}`` a million times over: the sorted, encoded keys are cached by
    the dict's key tuple, leaving only the values to render.
    """
    spec_key = (label, *d)
    spec = _FLAT_SPECS.get(spec_key)
    if spec is None:
        if spec_key in _FLAT_SPECS:
            return None
        spec = _flat_spec(label, spec_key[1:])
        if len(_FLAT_SPECS) < 1000:
            _FLAT_SPECS[spec_key] = spec
        if spec is None:
            return None
    order, keys_m, keys_j, end_m, end_j = spec
    if len(order) == 1:  # the common case, without a loop
        for v in d.values():
            tv = type(v)
            if tv is int:
                text = int.__repr__(v)
            elif tv is str:
                text = _encode_str(v)
            else:
                return None
            return keys_m[0] + text + end_m, keys_j[0] + text + end_j
    values = list(d.values())
    texts = [_leaf_text(values[i]) for i in order]
    if None in texts:
        return None
    return ("".join([km + t for km, t in zip(keys_m, texts)]) + end_m,
            "".join([kj + t for kj, t in zip(keys_j, texts)]) + end_j)


def _flat_spec(label: str, names: tuple[Any, ...]) -> tuple[list[int], list[str], list[str], str, str] | None:
    if not names or not all(type(k) is str for k in names):
        return None
    order = sorted(range(len(names)), key=names.__getitem__)
    enc = [_encode_str(names[i]) + ": " for i in order]
    keys_m = [(f'   "{label}": {{' if n == 0 else ",") + "\n    " + ek for n, ek in enumerate(enc)]
    keys_j = [(f'"{label}": {{' if n == 0 else ", ") + ek for n, ek in enumerate(enc)]
    return order, keys_m, keys_j, "\n   },\n", "}, "

