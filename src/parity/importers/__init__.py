"""Importers: foreign files → stages of a trace, and exporters back to those formats.

A small registry. Each :class:`Importer` says whether it can read a file by *refusing* it with
a reason, or accepting it (``refuse(path) -> None``). :func:`import_files` picks, per file, the
first importer that accepts it (binary formats are tried before the text-log importer), or the
one named by ``format``. Every importer writes through one :class:`~parity.trace.TraceWriter`,
so an imported trace is an ordinary trace.

Built in:

============  ===========================================================================
name          reads
============  ===========================================================================
aprt          APRT per-stage binary dumps: one ``.bin`` or a ``layer-N/STAGE.bin`` directory
npy           ``.npy`` / ``.npz`` files and folders of them
safetensors   a plain safetensors file
lines         a text log of trace lines (needs ``prefixes``), plain or gzip
============  ===========================================================================

Example:
    >>> import os, tempfile, numpy as np, parity
    >>> d = tempfile.mkdtemp(); np.save(os.path.join(d, "x.npy"), np.arange(3.0))
    >>> report = import_files([os.path.join(d, "x.npy")], os.path.join(d, "x.trace"))
    >>> report.formats, parity.load_trace(report.path).keys()
    (['npy'], ['x'])
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import ImportFormatError, UsageError
from ..trace.writer import TraceWriter

__all__ = ["Importer", "ImportReport", "register_importer", "unregister_importer", "importers", "get_importer",
           "find_importer", "import_files", "export_trace", "EXPORT_FORMATS"]


@dataclass(frozen=True)
class Importer:
    """One foreign format.

    Attributes:
        name: short name used by ``--format``.
        description: one line for ``parity import --help``.
        refuse: ``refuse(path) -> None`` when the importer can read ``path``, else the reason why not.
        run: ``run(path, writer, **options) -> dict`` adds the stages to ``writer`` and returns
            statistics (at least ``{"stages": n}``). Options it does not know are ignored.

    Example (an importer of comma-separated numbers, tried before the built-in ones):
        >>> def run(path, writer, **options):
        ...     return {"stages": len([writer.add("v", np.loadtxt(path, delimiter=","))])}
        >>> register_importer(Importer("csv", "numbers", lambda p: None if p.endswith(".csv") else "no .csv", run), first=True)
        >>> _ = open("x.csv", "w").write("1,2,3\\n")
        >>> import_files(["x.csv"], "x.trace").formats, parity.load_trace("x.trace")["v"].tolist()
        (['csv'], [1.0, 2.0, 3.0])
        >>> unregister_importer("csv")
    """

    name: str
    description: str
    refuse: Callable[[str], str | None]
    run: Callable[..., dict[str, Any]]


_REGISTRY: dict[str, Importer] = {}


def register_importer(importer: Importer, *, first: bool = False) -> None:
    """Add an importer (``first=True`` tries it before the built-in ones); one of the same name is replaced.

    Example (see :class:`Importer` for one that reads files):
        >>> register_importer(Importer("never", "reads nothing", lambda p: "is never read", lambda p, w: {}))
        >>> [i.name for i in importers()][-2:]
        ['lines', 'never']
        >>> unregister_importer("never")
    """
    global _REGISTRY
    if first:
        _REGISTRY = {importer.name: importer, **{k: v for k, v in _REGISTRY.items() if k != importer.name}}
    else:
        _REGISTRY[importer.name] = importer


def unregister_importer(name: str) -> None:
    """Remove the importer called ``name`` (no error when there is none).

    Example:
        >>> unregister_importer("no such format")
    """
    _REGISTRY.pop(name, None)


def importers() -> list[Importer]:
    """The registered importers, in the order they are tried.

    Example:
        >>> [i.name for i in importers()]
        ['aprt', 'npy', 'safetensors', 'lines']
    """
    return list(_REGISTRY.values())


def get_importer(name: str) -> Importer:
    """The importer called ``name``.

    Raises:
        UsageError: no such importer.

    Example:
        >>> get_importer("npy").description
        '.npy / .npz files and folders of them'
    """
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UsageError(f"unknown import format {name!r}; known: {', '.join(_REGISTRY)}.") from None


def _accepts(fn: Callable[..., Any], name: str) -> bool:
    """Whether ``fn`` takes keyword ``name`` (importers registered by others may not)."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.name == name or p.kind is inspect.Parameter.VAR_KEYWORD for p in params)


def _refusal(imp: Importer, path: str, follow_symlinks: bool) -> str | None:
    if follow_symlinks and _accepts(imp.refuse, "follow_symlinks"):
        return imp.refuse(path, follow_symlinks=True)
    return imp.refuse(path)


def _find(path: str, format: str | None, follow_symlinks: bool) -> tuple[Importer, list[str]]:
    """The importer for ``path`` and the reasons of those that refused it before."""
    if not os.path.lexists(path):
        raise ImportFormatError("no such file or directory.", path=path)
    if not os.path.exists(path):
        raise ImportFormatError(f"is a broken symbolic link (to {os.readlink(path)}).", path=path)
    if not (os.path.isdir(path) or os.path.isfile(path)):
        raise ImportFormatError("is neither a regular file nor a directory (a pipe or a device cannot be "
                                "imported: it could block or never end).", path=path)
    if format is not None:
        imp = get_importer(format)
        why = _refusal(imp, path, follow_symlinks)
        if why is not None:
            raise ImportFormatError(f"cannot be read as {format}: it {why}.", path=path)
        return imp, []
    reasons = []
    for imp in _REGISTRY.values():
        why = _refusal(imp, path, follow_symlinks)
        if why is None:
            return imp, reasons
        reasons.append(f"{imp.name}: {why}")
    raise ImportFormatError("no importer can read it (" + "; ".join(reasons) + ").", path=path)


def find_importer(path: str | os.PathLike[str], format: str | None = None, *,
                  follow_symlinks: bool = False) -> Importer:
    """The importer that accepts ``path`` (or the one named by ``format``, which must accept it).

    ``follow_symlinks=True`` lets a dump directory's files and folders be symbolic links out of it.

    Raises:
        ImportFormatError: no importer accepts the file; the message gives each one's reason.

    Example:
        >>> np.save("x.npy", np.zeros(3)); _ = open("run.log", "w").write("TRACE_C: e=1\\n")
        >>> find_importer("x.npy").name, find_importer("run.log").name
        ('npy', 'lines')
    """
    return _find(os.fspath(path), format, follow_symlinks)[0]


@dataclass(frozen=True)
class ImportReport:
    """What :func:`import_files` wrote.

    Attributes:
        path: the trace written.
        stages: number of stages.
        formats: the importer used for each input, in order.
        stats: per input, the importer's statistics (lines read, skipped, malformed...; for a
            log whose printed names had to be cleaned, ``renamed``/``renames`` and
            ``collided``/``collisions`` as in :meth:`~parity.importers.lines.LineStats.rename_dict`).

    Example:
        >>> np.save("x.npy", np.zeros(3))
        >>> report = import_files(["x.npy"], "x.trace"); report.stages, report.formats, report.stats
        (1, ['npy'], [{'source': 'x.npy', 'format': 'npy', 'stages': 1}])
    """

    path: str
    stages: int
    formats: list[str] = field(default_factory=list)
    stats: list[dict[str, Any]] = field(default_factory=list)


def import_files(
    paths: Sequence[str | os.PathLike[str]],
    out: str | os.PathLike[str],
    *,
    format: str | None = None,
    meta: dict[str, Any] | None = None,
    follow_symlinks: bool = False,
    **options: Any,
) -> ImportReport:
    """Import one or more foreign files into one trace, in the order given.

    Args:
        paths: files or directories to import.
        out: the trace directory to write.
        format: force one importer (``"aprt"``, ``"npy"``, ``"safetensors"``, ``"lines"``).
        meta: extra trace metadata.
        follow_symlinks: read files and folders of a dump directory that are symbolic links out
            of it (refused by default, see docs/format.md); the CLI's ``--follow-symlinks``.
        **options: importer options: ``prefixes``, ``index_fields`` and ``progress`` (a
            ``progress(done, total, name)`` callback, called per chunk) for logs, ``order`` (an
            order file for dump directories).

    Returns:
        An :class:`ImportReport`.

    Raises:
        ImportFormatError: an input cannot be read (the message names it); the trace is then left
            marked incomplete.
        UsageError: bad options (e.g. a log without ``prefixes``).

    Example (a log and an array, in that order, into one trace):
        >>> _ = open("run.log", "w").write("starting\\nTRACE_C: e=1.5\\n"); np.save("w.npy", np.ones(2))
        >>> report = import_files(["run.log", "w.npy"], "both.trace", prefixes=["TRACE_C"])
        >>> report.formats, parity.load_trace(report.path).keys()
        (['lines', 'npy'], ['e', 'w'])
    """
    if not paths:
        raise UsageError("give at least one file to import.")
    found = [(os.fspath(p), *_find(os.fspath(p), format, follow_symlinks)) for p in paths]
    chosen = [(p, imp) for p, imp, _ in found]
    if not options.get("prefixes"):
        for p, imp, reasons in found:
            if imp.name == "lines":
                tried = f" It is no binary dump ({'; '.join(reasons)})." if reasons else ""
                raise UsageError("importing a text log needs its trace-line prefix, e.g. --prefix TRACE_C." + tried,
                                 path=p)
    full_meta: dict[str, Any] = {"sources": [os.path.basename(os.path.normpath(p)) for p, _ in chosen],
                                 "formats": [imp.name for _, imp in chosen]}
    if options.get("prefixes"):
        full_meta["prefixes"] = list(options["prefixes"]) if not isinstance(options["prefixes"], str) else [options["prefixes"]]
    full_meta.update(meta or {})
    producer = "parity import (" + ", ".join(dict.fromkeys(imp.name for _, imp in chosen)) + ")"
    stats = []
    with TraceWriter(out, meta=full_meta, producer=producer) as writer:
        for p, imp in chosen:
            kw = {**options, "follow_symlinks": follow_symlinks} if _accepts(imp.run, "follow_symlinks") else options
            stats.append({"source": p, "format": imp.name, **imp.run(p, writer, **kw)})
        # renamed stages keep their printed names in their provenance: the metadata leaves the lists out
        writer.update_meta(imports=[{k: v for k, v in s.items() if k not in _NOT_IN_META} for s in stats])
        digits = max((s.get("digits", 0) for s in stats), default=0)
        if digits:
            writer.update_meta(printed_digits=digits)
        n = len(writer.keys)
    return ImportReport(os.fspath(out), n, [imp.name for _, imp in chosen], stats)


_NOT_IN_META = frozenset({"source", "renamed", "renames", "collided", "collisions"})


# -- built-in importers ----------------------------------------------------------------------------
def _run_lines(path: str, writer: TraceWriter, *, prefixes=None, index_fields=(), progress=None, **_: Any) -> dict[str, Any]:
    from .lines import import_log

    before = len(writer.keys)
    st = import_log(path, writer, prefixes=prefixes, index_fields=index_fields or (), progress=progress)
    return {"stages": len(writer.keys) - before, **st.to_dict(renames=True), "digits": st.digits}


def _run_aprt(path: str, writer: TraceWriter, *, order=None, follow_symlinks=False, **_: Any) -> dict[str, Any]:
    from .aprt import import_aprt

    return {"stages": len(import_aprt(path, writer, order=order, follow_symlinks=follow_symlinks))}


def _run_numpy(path: str, writer: TraceWriter, *, order=None, follow_symlinks=False, **_: Any) -> dict[str, Any]:
    from .numpy_files import import_numpy

    return {"stages": len(import_numpy(path, writer, order=order, follow_symlinks=follow_symlinks))}


def _run_safetensors(path: str, writer: TraceWriter, **_: Any) -> dict[str, Any]:
    from .safetensors_file import import_safetensors

    return {"stages": len(import_safetensors(path, writer))}


def _refuse_aprt(path: str, *, follow_symlinks: bool = False) -> str | None:
    from .aprt import refuse_aprt

    return refuse_aprt(path, follow_symlinks=follow_symlinks)


def _refuse_numpy(path: str, *, follow_symlinks: bool = False) -> str | None:
    from .numpy_files import refuse_numpy

    return refuse_numpy(path, follow_symlinks=follow_symlinks)


def _refuse_safetensors(path: str) -> str | None:
    from .safetensors_file import refuse_safetensors

    return refuse_safetensors(path)


def _refuse_lines(path: str) -> str | None:
    if os.path.isdir(path):
        if os.path.exists(os.path.join(path, "manifest.json")):
            return "is a parity trace already"
        return "is a directory"
    why = _binary_garbage(path)
    if why is not None:
        return why
    from .lines import sniff_text

    return sniff_text(path)


_TEXT_CONTROLS = frozenset(b"\t\n\r\f\v\b\x1b")


def _binary_garbage(path: str, probe: int = 64 * 1024) -> str | None:
    """Why a plain (not gzip) file is obviously binary, not a text log; ``None`` when it may be text."""
    try:
        with open(path, "rb") as f:
            head = f.read(probe)
    except OSError as e:
        return f"cannot be read ({e.strerror or e})"
    if head[:2] == b"\x1f\x8b":
        return None  # gzip: the log reader looks inside
    if b"\x00" in head:
        return "holds NUL bytes, so it is not a text log"
    controls = sum(head.count(bytes([c])) for c in range(32) if c not in _TEXT_CONTROLS) + head.count(b"\x7f")
    if head and controls * 10 > len(head):
        return f"is binary ({controls} control bytes in its first {len(head)}), so it is not a text log"
    return None


register_importer(Importer("aprt", "APRT per-stage binary dumps (a .bin file or a layer-N/STAGE.bin directory)",
                           _refuse_aprt, _run_aprt))
register_importer(Importer("npy", ".npy / .npz files and folders of them", _refuse_numpy, _run_numpy))
register_importer(Importer("safetensors", "a plain safetensors file", _refuse_safetensors, _run_safetensors))
register_importer(Importer("lines", "a text log of trace lines (needs --prefix), plain or gzip", _refuse_lines, _run_lines))


# -- exporters -------------------------------------------------------------------------------------
def _export_aprt(trace, out, stages):
    from .aprt import export_aprt

    return export_aprt(trace, out, stages)


def _export_npz(trace, out, stages):
    from .numpy_files import export_npz

    return export_npz(trace, out, stages)


def _export_npy(trace, out, stages):
    from .numpy_files import export_npy_dir

    return export_npy_dir(trace, out, stages)


def _export_safetensors(trace, out, stages):
    from .safetensors_file import export_safetensors

    return export_safetensors(trace, out, stages)


#: Export format name → ``export(trace, out, stages) -> notes``.
EXPORT_FORMATS: dict[str, Callable[..., list[str]]] = {
    "aprt": _export_aprt, "npz": _export_npz, "npy": _export_npy, "safetensors": _export_safetensors,
}


def export_trace(trace: Any, out: str | os.PathLike[str], format: str, stages: Sequence[str] | None = None) -> list[str]:
    """Write a trace's tensor stages in a foreign format (``aprt``, ``npz``, ``npy``, ``safetensors``).

    Returns:
        Notes about what could not be kept exactly (text stages, rounding to float32, flattening).

    Raises:
        UsageError: unknown format, or ``out`` already exists (nothing is overwritten).

    Example:
        >>> export_trace("ref.trace", "ref.npz", "npz", stages=["embedding", "logits"])
        []
        >>> sorted(np.load("ref.npz"))
        ['embedding', 'logits']
    """
    try:
        fn = EXPORT_FORMATS[format]
    except KeyError:
        raise UsageError(f"unknown export format {format!r}; known: {', '.join(EXPORT_FORMATS)}.") from None
    return fn(trace, out, stages)
