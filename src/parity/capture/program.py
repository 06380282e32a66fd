"""Run a foreign program (C, C++, Fortran, anything) and turn the trace lines it prints into a trace.

The program's stdout and stderr are read as they arrive (both through pipes, multiplexed with
:mod:`selectors`, so a chatty program never blocks on a full pipe) and parsed line by line with
:class:`parity.importers.lines.LineParser`; stages are written as they are parsed. Each stage
keeps its stream and line number as provenance. The trace records the command line (with secrets
such as ``--password X`` or ``API_KEY=...`` redacted by :func:`parity.redact.redact_args`), the
exit code, line counts and a summary of the environment (the executable's sha256, and the
thread-count variables that change numerical results).

A program that exits non-zero, or is killed by the timeout, still leaves a readable trace of
everything it printed, marked incomplete.
"""

from __future__ import annotations

import hashlib
import os
import selectors
import shutil
import subprocess
import time
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import IO, Any

from ..errors import CaptureError, UsageError
from ..importers.lines import LineParser, LineStats, visible_line as _cr
from ..redact import redact_args
from ..trace.writer import TraceWriter

__all__ = ["ProgramResult", "capture_program", "NUMERIC_ENV_VARS"]

#: Environment variables recorded in the trace because they change numerical results
#: (thread counts change reduction orders). Nothing else from the environment is recorded.
NUMERIC_ENV_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "BLIS_NUM_THREADS",
                    "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS", "MKL_CBWR", "OMP_SCHEDULE", "OMP_PROC_BIND")
_TAIL = 20


@dataclass(frozen=True)
class ProgramResult:
    """What :func:`capture_program` did.

    Attributes:
        path: the trace written.
        argv: the command line run, exactly (the trace stores it redacted; print ``redact_args(argv)``).
        returncode: the program's exit status (negative: killed by that signal); ``None`` on timeout.
        stages: number of stages written.
        stats: the line statistics (trace lines, skipped lines, malformed lines...).
        stderr_tail: the last lines of stderr (for error messages).
        timed_out: the program was killed after ``timeout`` seconds.

    Example (see :func:`capture_program` for one that runs a program):
        >>> from parity.importers.lines import LineStats
        >>> ProgramResult("p.trace", ("./prog",), 0, 0, LineStats()).ok     # exit 0, but no trace line
        False
    """

    path: str
    argv: tuple[str, ...]
    returncode: int | None
    stages: int
    stats: LineStats
    stderr_tail: tuple[str, ...] = ()
    timed_out: bool = False
    complete: bool = field(default=True)

    @property
    def ok(self) -> bool:
        """The program exited 0 and printed at least one trace line."""
        return self.returncode == 0 and self.stats.trace_lines > 0


def _sha256(path: str | None) -> str | None:
    if not path or not os.path.isfile(path):
        return None
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _program_environment(exe: str | None, env: Mapping[str, str]) -> dict[str, Any]:
    summary: dict[str, Any] = {"executable": exe, "executable_sha256": _sha256(exe)}
    numeric = {k: env[k] for k in NUMERIC_ENV_VARS if k in env}
    if numeric:
        summary["numeric_env"] = numeric
    return summary


def _executable(exe: str, cwd: str | None, env: Mapping[str, str]) -> str | None:
    """The file the program's ``argv[0]`` runs (looked up on ``PATH``, or relative to ``cwd``), if it exists."""
    if os.sep not in exe:
        exe = shutil.which(exe, path=env.get("PATH")) or exe
    elif cwd and not os.path.isabs(exe):
        exe = os.path.join(cwd, exe)
    return exe if os.path.isfile(exe) else None


class _Stream:
    """Line assembly for one pipe."""

    __slots__ = ("name", "buf", "lineno", "tail", "log")

    def __init__(self, name: str, log: IO[bytes] | None):
        self.name, self.buf, self.lineno, self.tail, self.log = name, b"", 0, deque(maxlen=_TAIL), log


def capture_program(
    argv: Sequence[str],
    out: str | os.PathLike[str],
    *,
    prefixes: Sequence[str] | str,
    index_fields: Iterable[str] = (),
    cwd: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float | None = None,
    log: str | os.PathLike[str] | None = None,
    meta: Mapping[str, Any] | None = None,
    streams: Sequence[str] = ("stdout", "stderr"),
) -> ProgramResult:
    """Run ``argv`` and write the trace lines it prints (on stdout and stderr) into trace ``out``.

    Args:
        argv: the program and its arguments (no shell is involved).
        out: the trace directory to write.
        prefixes: trace-line prefixes, e.g. ``"TRACE_C"`` (see :class:`~parity.importers.lines.LineParser`).
        index_fields: ``name=value`` fields that are indices wherever they appear.
        cwd: working directory of the program.
        env: its environment (default: this process's).
        timeout: seconds before the program is killed (the trace is kept, marked incomplete).
        log: also save the program's raw output (both streams, as read) to this file.
        meta: extra trace metadata.
        streams: which streams to parse (both by default; the other is still read and logged).

    Returns:
        A :class:`ProgramResult`. A non-zero exit is reported there (and the trace marked
        incomplete), not raised.

    Raises:
        CaptureError: the program cannot be started.
        UsageError: empty ``argv`` or bad ``streams``.

    Example:
        >>> import os, sys, tempfile, parity
        >>> out = os.path.join(tempfile.mkdtemp(), "py.trace")
        >>> code = "print('hello'); print('TRACE_PY: x=1 2 3')"
        >>> r = capture_program([sys.executable, "-c", code], out, prefixes="TRACE_PY")
        >>> r.returncode, r.stats.skipped, parity.load_trace(out)["x"].tolist()
        (0, 1, [1.0, 2.0, 3.0])
    """
    argv = [os.fspath(a) for a in argv]
    if not argv:
        raise UsageError("give the program to run, e.g. parity capture run --prefix TRACE_C --out c.trace -- ./prog.")
    if not set(streams) <= {"stdout", "stderr"} or not streams:
        raise UsageError(f"streams must be stdout and/or stderr, not {list(streams)}.")
    parser = LineParser(prefixes if not isinstance(prefixes, str) else [prefixes], index_fields)
    run_env = dict(os.environ if env is None else env)
    cwd_s = os.fspath(cwd) if cwd is not None else None
    shown = redact_args(argv)  # secrets on the command line never reach the trace (parity.redact)
    full_meta: dict[str, Any] = {"program": {"argv": shown, "cwd": cwd_s or os.getcwd(),
                                             **_program_environment(_executable(argv[0], cwd_s, run_env), run_env)},
                                 "format": "lines", "prefixes": list(parser.prefixes)}
    full_meta.update(meta or {})
    # The writer first: a refused output path must not leave a program running.
    writer = TraceWriter(out, meta=full_meta, producer="parity capture run", command=shown)
    proc = _start(argv, cwd_s, run_env, writer)
    log_f = open(log, "wb") if log is not None else None
    pipes = {"stdout": _Stream("stdout", log_f), "stderr": _Stream("stderr", log_f)}
    try:
        timed_out = _pump(proc, pipes, parser, writer, streams, timeout)
        returncode = proc.wait()
    except BaseException as e:
        proc.kill()
        proc.wait()
        writer.close(complete=False, reason=f"{type(e).__name__} while capturing the program")
        raise
    finally:
        for p in (proc.stdout, proc.stderr):
            if p is not None:
                p.close()
        if log_f is not None:
            log_f.close()
    code = None if timed_out else returncode
    complete = _close(writer, parser.stats, pipes, full_meta["program"], code, timed_out, timeout)
    return ProgramResult(os.fspath(out), tuple(argv), code, len(writer.keys), parser.stats,
                         tuple(x.decode("utf-8", "replace") for x in pipes["stderr"].tail), timed_out, complete)


def _start(argv: list[str], cwd: str | None, env: dict[str, str], writer: TraceWriter) -> subprocess.Popen:
    """Start the program with both output streams piped; if it cannot start, close ``writer`` incomplete."""
    try:
        return subprocess.Popen(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    except OSError as e:
        writer.close(complete=False, reason="the program could not be started")
        raise CaptureError(f"cannot run {argv[0]!r}: {e.strerror or e}.") from e


def _pump(proc: subprocess.Popen, pipes: dict[str, _Stream], parser: LineParser, writer: TraceWriter,
          streams: Sequence[str], timeout: float | None) -> bool:
    """Read both pipes as output arrives and write the trace lines of ``streams`` until the program
    closes them. Returns whether the program was killed by the timeout."""
    sel = selectors.DefaultSelector()
    assert proc.stdout is not None and proc.stderr is not None
    sel.register(proc.stdout, selectors.EVENT_READ, pipes["stdout"])
    sel.register(proc.stderr, selectors.EVENT_READ, pipes["stderr"])
    deadline = time.monotonic() + timeout if timeout is not None else None
    open_pipes = 2
    try:
        while open_pipes:
            wait = None if deadline is None else max(0.0, deadline - time.monotonic())
            events = sel.select(wait)
            if not events and deadline is not None and time.monotonic() >= deadline:
                proc.kill()
                return True
            for key, _ in events:
                s: _Stream = key.data
                chunk = os.read(key.fd, 1 << 16)
                if not chunk:
                    sel.unregister(key.fileobj)
                    open_pipes -= 1
                    if s.buf:
                        _handle(parser, writer, s, [s.buf], s.name in streams)
                        s.buf = b""
                    continue
                if s.log is not None:
                    s.log.write(chunk)
                data = s.buf + chunk
                cut = data.rfind(b"\n")
                if cut < 0:
                    s.buf = data
                    continue
                s.buf = data[cut + 1:]
                _handle(parser, writer, s, data[:cut].split(b"\n"), s.name in streams)
    finally:
        sel.close()
    return False


def _close(writer: TraceWriter, st: LineStats, pipes: dict[str, _Stream], program: dict[str, Any],
           code: int | None, timed_out: bool, timeout: float | None) -> bool:
    """Record the exit and the line counts in the trace and close it; returns whether it is complete."""
    st.lines = pipes["stdout"].lineno + pipes["stderr"].lineno
    writer.update_meta(program={**program, "exit_code": code, "timed_out": timed_out},
                       **{"import": {**st.to_dict(), "stdout_lines": pipes["stdout"].lineno,
                                     "stderr_lines": pipes["stderr"].lineno}},
                       printed_digits=st.digits)
    if timed_out:
        reason = f"the program was killed after {timeout} s"
    elif code != 0:
        reason = f"the program exited with status {code}"
    else:
        reason = None
    writer.close(complete=reason is None, reason=reason)
    return reason is None


def _handle(parser: LineParser, writer: TraceWriter, s: _Stream, lines: list[bytes], parse: bool) -> None:
    st = parser.stats
    for raw in lines:
        s.lineno += 1
        line = _cr(raw)
        if s.name == "stderr":
            s.tail.append(line)
        if not parse:
            st.skipped += 1
            continue
        fields = parser.parse_line(line, s.lineno)
        if fields is None:
            st.skipped += 1
            continue
        st.trace_lines += 1
        for f in fields:
            prov: dict[str, Any] = {"line": f.line, "stream": s.name}
            if f.original is not None:
                prov["name"] = f.original
            writer.add(f.name, f.value, indices=f.indices, provenance=prov)
