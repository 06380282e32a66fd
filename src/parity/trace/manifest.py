"""The manifest of a trace: its top-level fields checked (:func:`parse_manifest`), the entries
of its data files and stage index, and the journal an interrupted capture leaves, folded into it
(:func:`replay_journal_lines`). Local and remote readers share these checks and messages."""

from __future__ import annotations

import re
from typing import Any

from ..errors import TraceFormatError
from .entries import short_repr as _short
from .jsonsafe import BadNumber, holds_bad_number, load_json
from .layout import FORMAT_NAME, INDEX, INDEXED_SCHEMA_VERSION
from .safetensors_header import is_index

__all__ = ["parse_manifest", "replay_journal_lines"]

_FILE_RE = re.compile(r"data/[0-9]{6}\.safetensors")


def parse_manifest(raw: bytes, mpath: str) -> tuple[dict[str, Any], list[BadNumber]]:
    """The manifest in ``raw`` (named ``mpath`` in messages), its top-level fields checked; and
    the non-finite numbers it holds."""
    manifest, bad = load_json(raw, path=mpath, what="manifest")
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT_NAME:
        raise TraceFormatError(f'is not a parity trace manifest (expected "format": "{FORMAT_NAME}").', path=mpath)
    version = manifest.get("schema_version")
    if type(version) is not int or version > INDEXED_SCHEMA_VERSION or version < 1:
        raise TraceFormatError(
            f"has schema_version {_short(version)}; this parity reads versions 1 to {INDEXED_SCHEMA_VERSION} "
            "(upgrade parity).",
            path=mpath,
        )
    for name, types, expected in _TOP_FIELDS:
        if name in manifest and type(manifest[name]) not in types:
            raise TraceFormatError(f'"{name}" must be {expected}, got {_short(manifest[name])}.', path=mpath)
    if version == INDEXED_SCHEMA_VERSION or "index" in manifest:
        _check_index_info(manifest, version, mpath)
    return manifest, bad


def _check_index_info(manifest: dict[str, Any], version: int, mpath: str) -> None:
    """A manifest of schema version 2 names its stage index (and lists no stages); version 1 has none."""
    info = manifest.get("index")
    if version != INDEXED_SCHEMA_VERSION:
        raise TraceFormatError(f'has a stage index ("index") but schema_version {version}; a stage index needs '
                               f"schema_version {INDEXED_SCHEMA_VERSION}.", path=mpath)
    if info is None:
        raise TraceFormatError(f'has schema_version {version} but no "index" (the stage index of its stages).',
                               path=mpath)
    if "stages" in manifest:
        raise TraceFormatError('lists "stages" and has a stage index ("index"); a manifest has one or the other.',
                               path=mpath)
    if info.get("file") != INDEX or not is_index(info.get("stages")):
        raise TraceFormatError(f'"index" must name the stage index ("file": "{INDEX}") and its stage count '
                               f'("stages"), got {_short(info)}.', path=mpath)
    _check_file_info(info, '"index"', mpath)
    if "crc32" not in info or "bytes" not in info:
        raise TraceFormatError(f'"index" must give the size ("bytes") and "crc32" of {INDEX}, got {_short(info)}.',
                               path=mpath)


_TOP_FIELDS = [
    ("complete", (bool,), "true or false"),
    ("stages", (list,), "a list of stage entries"),
    ("files", (dict,), "an object of data files"),
    ("index", (dict,), "an object naming the stage index"),
    ("meta", (dict,), "an object"),
    ("incomplete_reason", (str,), "a string"),
    ("producer", (str,), "a string"),
    ("tool_version", (str,), "a string"),
    ("environment", (dict,), "an object"),
    ("command", (list,), "a list of strings"),
]


def _refuse_bad_numbers(doc: dict[str, Any], path: str, bad: list[BadNumber]) -> None:
    """Raise naming the first place ``doc`` holds a non-finite number (NaN, Infinity, 1e999)."""
    for pos, entry in enumerate(doc.get("stages") or ()):
        if holds_bad_number(entry):
            raise TraceFormatError(f"{_stage_name(entry, pos)} holds the number {bad[0]!r}; a trace holds only finite "
                                   "numbers (the manifest is corrupt).", path=path)
    for name, value in doc.items():
        if name != "stages" and holds_bad_number(value):
            raise TraceFormatError(f'"{name}" holds the number {bad[0]!r}; a trace holds only finite numbers '
                                   "(the manifest is corrupt).", path=path)
    raise TraceFormatError(f"holds the number {bad[0]!r}; a trace holds only finite numbers (the manifest is corrupt).",
                           path=path)


def _stage_name(entry: object, pos: int) -> str:
    key = entry.get("key") if type(entry) is dict else None
    return f"stage {key!r}" if type(key) is str and len(key) <= 200 else f"stage #{pos}"


def _check_file_info(info: object, where: str, path: str) -> dict[str, Any]:
    """A data file's entry: ``{"bytes": N, "crc32": "8 hex digits"}`` (or an older ``"sha256"``)."""
    if type(info) is not dict:
        raise TraceFormatError(f"{where}: expected an object with bytes and crc32, got {_short(info)}.", path=path)
    if "bytes" in info and not is_index(info["bytes"]):
        raise TraceFormatError(f"{where}: bytes must be a non-negative integer, got {_short(info['bytes'])}.", path=path)
    if "crc32" in info and not (type(info["crc32"]) is str and _CRC_RE.fullmatch(info["crc32"])):
        raise TraceFormatError(f"{where}: crc32 must be 8 lowercase hex digits, got {_short(info['crc32'])}.", path=path)
    if "sha256" in info and not (type(info["sha256"]) is str and _SHA_RE.fullmatch(info["sha256"])):
        raise TraceFormatError(f"{where}: sha256 must be 64 lowercase hex digits, got {_short(info['sha256'])}.",
                               path=path)
    return info


_CRC_RE = re.compile(r"[0-9a-f]{8}")
_SHA_RE = re.compile(r"[0-9a-f]{64}")


def _check_file_name(rel: object, where: str, path: str) -> str:
    """A data file's name: ``data/NNNNNN.safetensors`` exactly (so never absolute, never ``..``)."""
    if type(rel) is not str or not _FILE_RE.fullmatch(rel):
        raise TraceFormatError(f"{where} data file {_short(rel)}; data files must be named data/NNNNNN.safetensors "
                               "(a plain name inside the trace's data/ folder).", path=path)
    return rel


def replay_journal_lines(f: Any, jpath: str, manifest: dict[str, Any], origins: list[tuple[str, int]],
                  deferred: list[tuple[int, BadNumber]]) -> None:
    """Fold the lines of the open journal ``f`` (named ``jpath``) into ``manifest``; append the
    origin of each replayed stage entry to ``origins`` and its non-finite numbers to ``deferred``."""
    stages, files = list(manifest.get("stages", [])), dict(manifest.get("files", {}))
    known = {s.get("key") for s in stages if type(s) is dict}
    for number, line in enumerate(f, 1):
        if not line.endswith(b"\n"):
            break  # the line a killed writer left unfinished
        where = f"line {number}"
        rec, bad = load_json(line, path=jpath, what=f"journal's {where}")
        if type(rec) is not dict:
            raise TraceFormatError(f"{where}: expected a JSON object (a file or a stage record), got {_short(rec)}.",
                                   path=jpath)
        if bad and "stage" not in rec:
            raise TraceFormatError(f"{where}: holds the number {bad[0]!r}; a trace holds only finite numbers.",
                                   path=jpath)
        if "stage" in rec:
            entry = rec["stage"]
            if type(entry) is not dict:
                raise TraceFormatError(f"{where}: \"stage\" must be a stage entry (an object), got {_short(entry)}.",
                                       path=jpath)
            key = entry.get("key")
            if type(key) is not str:
                raise TraceFormatError(f"{where}: the stage entry has no key (a string), got {_short(key)}.",
                                       path=jpath)
            if key not in known:
                stages.append(entry)
                origins.append((jpath, number))
                known.add(key)
                if bad:  # refused once the entry's fields are checked (naming the field, if it is one)
                    deferred.append((number, bad[0]))
        elif "file" in rec:
            rel = _check_file_name(rec["file"], f"{where} lists", jpath)
            files[rel] = _check_file_info({k: v for k, v in rec.items() if k != "file"}, f"{where} ({rel})", jpath)
        else:
            raise TraceFormatError(f'{where}: expected a "file" or a "stage" record, got keys {_short(sorted(rec))}.',
                                   path=jpath)
    manifest["stages"], manifest["files"] = stages, files
    manifest.setdefault("incomplete_reason", "capture was interrupted")
