"""``record()``, ``tap()`` and ``scope()``: capture named stages from any Python code.

The active recording lives in a :mod:`contextvars` variable, so instrumented code needs no
handle threaded through it, and ``tap()`` outside a recording is a cheap no-op: instrumented code
can ship. (New threads start with an empty context: tap inside them records nothing unless the
thread runs in a copy of the recording context, e.g. ``contextvars.copy_context().run``.)
"""

from __future__ import annotations

import contextvars
import os
import sys
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

from ..errors import StageKeyError, UsageError
from ..redact import redact_args
from ..trace.keys import validate_key
from ..trace.writer import TraceWriter

__all__ = ["record", "tap", "scope", "active_writer", "replay", "ReplaySource"]

T = TypeVar("T")

_WRITER: contextvars.ContextVar[TraceWriter | None] = contextvars.ContextVar("parity_writer", default=None)
_PREFIX: contextvars.ContextVar[str] = contextvars.ContextVar("parity_prefix", default="")
_REPLAY: contextvars.ContextVar[Any] = contextvars.ContextVar("parity_replay", default=None)


def active_writer() -> TraceWriter | None:
    """The :class:`~parity.trace.writer.TraceWriter` of the innermost active :func:`record`, if any.

    >>> with parity.record("a.trace") as w:
    ...     active_writer() is w
    True
    >>> active_writer() is None
    True
    """
    return _WRITER.get()


@contextmanager
def record(
    path: str | os.PathLike[str],
    *,
    meta: Mapping[str, Any] | None = None,
    producer: str = "parity.record",
    command: Sequence[str] | None = None,
    **writer_options: Any,
) -> Iterator[TraceWriter]:
    """Record every :func:`tap` made inside the block into the trace directory ``path``.

    If the block raises, the trace is still closed, readable, and marked incomplete, and the
    exception propagates.

    Args:
        path: the ``NAME.trace`` directory to write (an existing trace there is replaced).
        meta: JSON-serialisable trace metadata, e.g. ``{"impl": "candidate", "dtype": "f32"}``.
        producer: free text naming what produced the trace.
        command: the command line to record (default: ``sys.argv``), stored with secrets redacted
            (:func:`parity.redact.redact_args`).
        **writer_options: passed to :class:`~parity.trace.writer.TraceWriter` (``buffer_bytes``, ``volatile``).

    Yields:
        The :class:`~parity.trace.writer.TraceWriter`, for direct ``add()`` calls.

    Example:
        >>> import numpy as np, tempfile, os, parity
        >>> path = os.path.join(tempfile.mkdtemp(), "ref.trace")
        >>> with parity.record(path, meta={"impl": "reference"}):
        ...     with parity.scope("layers", 0):
        ...         _ = parity.tap("attn_probs", np.full((2, 2), 0.5, np.float32))
        >>> parity.load_trace(path).keys()
        ['layers.0.attn_probs']
    """
    command = redact_args(list(sys.argv) if command is None else command)  # no secrets in the trace
    writer = TraceWriter(path, meta=meta, producer=producer, command=command, **writer_options)
    token_w = _WRITER.set(writer)
    token_p = _PREFIX.set("")
    try:
        yield writer
    except BaseException as e:
        writer.close(complete=False, reason=f"{type(e).__name__} raised during capture")
        raise
    else:
        writer.close()
    finally:
        _PREFIX.reset(token_p)
        _WRITER.reset(token_w)


@contextmanager
def scope(*parts: object) -> Iterator[str]:
    """Prefix the keys of every :func:`tap` inside the block with ``parts`` joined by dots.

    Scopes nest: ``scope("layers", 3)`` inside ``scope("encoder")`` gives ``encoder.layers.3.``.

    Yields:
        The full prefix now in force (without the trailing dot).

    >>> with parity.record("s.trace"), parity.scope("encoder"), parity.scope("layers", 3) as prefix:
    ...     _ = parity.tap("out", 1.0)
    >>> prefix, parity.load_trace("s.trace").keys()
    ('encoder.layers.3', ['encoder.layers.3.out'])
    """
    if not parts:
        raise UsageError("scope() needs at least one name part, e.g. scope('layers', 3).")
    outer = _PREFIX.get()
    joined = ".".join(str(p) for p in parts)
    prefix = f"{outer}.{joined}" if outer else joined
    validate_key(prefix)
    token = _PREFIX.set(prefix)
    try:
        yield prefix
    finally:
        _PREFIX.reset(token)


def _utf8(text: str, what: str, key: str) -> None:
    """Refuse text that cannot be written as UTF-8 (lone surrogates) now, not when the trace closes."""
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as e:
            raise UsageError(f"{what} is not valid Unicode text ({e.reason} at position {e.start}).", stage=key) from e


def _check_tap(key: str, value: object, axes: object, units: object) -> None:
    """Check at call time everything :func:`tap` will write, so that a bad call raises here and
    the recording (the stages before and after it) stays complete and loadable."""
    # The key and its indices are checked by the writer's add() (make_key), at this call too.
    if axes is not None:
        if isinstance(axes, (str, bytes)) or not isinstance(axes, Sequence):
            raise UsageError(f"axes must be a sequence of axis names, e.g. (\"seq\", \"hidden\"), not {type(axes).__name__}.",
                             stage=key)
        for a in axes:
            _utf8(str(a), "an axis name", key)
    if units is not None:
        _utf8(str(units), "units", key)
    if isinstance(value, str):
        _utf8(value, "the text value", key)


def tap(
    name: str,
    value: T,
    *,
    axes: Sequence[str] | None = None,
    units: str | None = None,
    **indices: object,
) -> T:
    """Record ``value`` as stage ``name`` in the active recording, and return ``value`` unchanged.

    Outside :func:`record` this does nothing and costs one context-variable lookup.

    Args:
        name: stage name, prefixed by the active :func:`scope` (e.g. ``"attn_probs"``).
        value: a NumPy array, Python scalar or sequence, torch tensor (any device, any dtype,
            bf16 kept as bf16), JAX array, or a string (stored as a text stage).
        axes: names of the value's axes, e.g. ``("seq", "heads", "head_dim")``; recorded so that
            differently ordered tensors are never compared silently.
        units: physical units of the value, e.g. ``"angstrom"``.
        **indices: indices that distinguish repeated stages, e.g. ``step=3``; they become part
            of the key (``name[step=3]``). Without them, tapping a key again records the next
            occurrence as ``name#1``, ``name#2``...

    Returns:
        ``value`` itself, so ``y = tap("y", f(x))`` works inline.

    Raises:
        StageKeyError: at the call, when ``name`` is not a string or the key with its indices is not
            a valid stage key (an index that is NaN, infinite, an integer of more than 20 digits, or
            text with a separator such as ``,`` ``=`` ``]``). The recording is not affected: the
            stages tapped before and after are kept and the trace still closes complete.
        UsageError: at the call, for axes that are not a sequence, or text that is not valid Unicode.

    >>> parity.tap("x", 2.5)                      # no recording: a no-op returning the value
    2.5
    >>> with parity.record("t.trace"):
    ...     for step in range(2):
    ...         _ = parity.tap("loss", 1.0 / (step + 1), step=step)
    >>> parity.load_trace("t.trace").keys()
    ['loss[step=0]', 'loss[step=1]']
    """
    writer = _WRITER.get()
    if writer is None:
        return value
    if not isinstance(name, str):
        raise StageKeyError(f"a stage name must be a string, not {type(name).__name__}.", stage=repr(name)[:60])
    prefix = _PREFIX.get()
    key = f"{prefix}.{name}" if prefix else name
    _check_tap(key, value, axes, units)
    frame = sys._getframe(1)
    filename = frame.f_code.co_filename
    try:
        rel = os.path.relpath(filename)
        if not rel.startswith(".."):
            filename = rel
    except ValueError:  # another drive on Windows
        pass
    stored = writer.add(key, value, axes=axes, units=units, indices=indices or None,
                        provenance={"source": f"{filename}:{frame.f_lineno}"})
    source = _REPLAY.get()
    if source is not None:
        return source.substitute(stored, value)
    return value


class ReplaySource:
    """The reference trace a replay substitutes values from, with the substitution rules.

    Used by :func:`replay` (for :func:`tap`) and by ``parity.torch.capture(replay=...)`` (for
    module hooks). :meth:`substitute` returns the reference's value for a key, shaped and typed
    like the candidate's value.

    >>> src = ReplaySource("ref.trace")
    >>> x = np.zeros((4, 8, 8), np.float32)
    >>> src.substitute("layers.0.attn_probs", x).dtype, src.substituted
    (dtype('float32'), 1)
    """

    def __init__(self, path: str | os.PathLike[str]):
        from ..trace.reader import load_trace

        self.trace = load_trace(path)
        self.substituted = 0

    def substitute(self, key: str, value: Any) -> Any:
        """The reference's value of stage ``key`` with ``value``'s type, dtype and device.

        Raises:
            UsageError: the reference has no stage ``key``, or its shape differs from ``value``'s
                (the message names the stage).
        """
        from ..errors import StageNotFoundError

        try:
            stage = self.trace.stage(key)
        except StageNotFoundError:
            raise UsageError(f"replay: the reference {self.trace.path} has no stage {key!r}; replay needs the same "
                             "stages in the same order on both sides.", stage=key) from None
        ref = self.trace.array(stage)
        self.substituted += 1
        if isinstance(value, str) or isinstance(ref, str):
            if not (isinstance(value, str) and isinstance(ref, str)):
                raise UsageError("replay: one side is text, the other a tensor.", stage=key)
            return ref
        return _like(ref, value, stage, key)


_ReplaySource = ReplaySource  # the earlier private name


def _like(ref: Any, value: Any, stage: Any, key: str) -> Any:
    """The reference values shaped and typed like the candidate's ``value`` (dtype, device, type)."""
    import numpy as np

    from ..trace.dtypes import to_float64

    wide = to_float64(np.asarray(ref), stage.dtype_info) if stage.dtype_info is not None else np.asarray(ref)
    mod = type(value).__module__
    if mod.startswith("torch") and hasattr(value, "detach"):
        import torch

        if tuple(value.shape) != tuple(wide.shape):
            raise UsageError(f"replay: shape {tuple(value.shape)} here, {tuple(wide.shape)} in the reference.", stage=key)
        return torch.from_numpy(np.ascontiguousarray(wide)).to(dtype=value.dtype, device=value.device)
    if isinstance(value, np.ndarray) or isinstance(value, np.generic):
        if np.shape(value) != wide.shape:
            raise UsageError(f"replay: shape {np.shape(value)} here, {wide.shape} in the reference.", stage=key)
        out = wide.astype(value.dtype) if value.dtype.kind in "fiub" else np.asarray(ref)
        return out if isinstance(value, np.ndarray) else out[()]
    if isinstance(value, bool):
        return bool(wide)
    if isinstance(value, int):
        return int(wide)
    if isinstance(value, float):
        return float(wide)
    if hasattr(value, "shape") and hasattr(value, "dtype"):  # JAX, CuPy...: rebuild with the value's own type
        if tuple(value.shape) != wide.shape:
            raise UsageError(f"replay: shape {tuple(value.shape)} here, {wide.shape} in the reference.", stage=key)
        try:
            import jax.numpy as jnp  # noqa: F401

            if mod.startswith("jax"):
                return jnp.asarray(wide, dtype=value.dtype)
        except ImportError:
            pass
        return wide.astype(np.dtype(str(value.dtype)))
    return wide.tolist() if wide.ndim else wide.item()


@contextmanager
def replay(reference: str | os.PathLike[str], path: str | os.PathLike[str], **record_options: Any) -> Iterator[TraceWriter]:
    """Record into ``path`` like :func:`record`, but every :func:`tap` returns the *reference's*
    value for its key (teacher forcing): each stage then starts from reference inputs, so its
    error in the recorded trace is its own (local), not propagated from earlier stages.

    The candidate's own value is what gets recorded. The returned value has the candidate's
    type, dtype and device (NumPy, Python scalars, torch, JAX). A key the reference lacks, or a
    shape that differs, raises :class:`~parity.errors.UsageError` naming the stage.

    Example:
        >>> import numpy as np, tempfile, os, parity
        >>> d = tempfile.mkdtemp(); ref, local = os.path.join(d, "ref.trace"), os.path.join(d, "local.trace")
        >>> def run(bias):
        ...     h = parity.tap("a", np.ones(3) + bias)      # the bug is here
        ...     return parity.tap("b", h * 2)                # b only doubles its input
        >>> with parity.record(ref):
        ...     _ = run(0.0)
        >>> with parity.replay(ref, local):
        ...     out = run(0.5)
        >>> t = parity.load_trace(local)
        >>> t["a"].tolist(), t["b"].tolist(), out.tolist()      # b was fed the reference's a
        ([1.5, 1.5, 1.5], [2.0, 2.0, 2.0], [2.0, 2.0, 2.0])
    """
    source = ReplaySource(reference)
    meta = dict(record_options.pop("meta", None) or {})
    meta.setdefault("replay", {"reference": os.fspath(reference)})
    with record(path, meta=meta, **record_options) as writer:
        token = _REPLAY.set(source)
        try:
            yield writer
        finally:
            _REPLAY.reset(token)
