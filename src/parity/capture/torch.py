"""Capture stages from a PyTorch model without editing its source: :func:`capture`.

Two ways of naming what is captured:

* **module tree** (``preset=None``, the default): forward hooks on the modules whose qualified
  names match ``stages`` (a ``*``/``?`` glob, a list of globs, or a predicate ``(name, module)``);
  each module's output is stored under its name, e.g. ``encoder.layer.3.output.dense``.
* **canonical stages** (``preset="auto"`` or a preset name): the stage vocabulary of
  :mod:`parity.capture.presets` (``layers.3.attn_probs``, ``logits``...), with named axes, so that
  a Hugging Face model lines up with a re-implementation, an ONNX export or a quantized variant.
  Attention internals that no module returns are taken by interposing, for the duration of the
  capture, on the model's own eager attention function (``attn_scores`` before the mask,
  ``attn_probs``) and rotary-embedding function (``q_rope``, ``k_rope``).

Hooks and interpositions are always removed, also when the forward raises. A requested stage that
the model does not produce is a :class:`~parity.errors.CaptureError` naming the stage, never an
empty or zero-filled file.

Writing: each value is copied at hook time into a reusable, page-aligned staging buffer (the copy
is its snapshot: the model may change its activations later) and checksummed (CRC-32) in the same
pass; a background thread writes each full buffer as one data file with direct I/O, which needs
almost no CPU, so the forward neither waits for the disk nor loses a core to it. Memory is bounded
(``queue_bytes``): when the disk falls behind, the next copy waits. Tensors on CUDA are copied into
pinned host memory with ``non_blocking=True`` and the writer thread waits on a CUDA event, not the
forward. bf16/f16 values are stored as bf16/f16.
"""

from __future__ import annotations

import inspect
import os
import re
import sys
import threading
import warnings
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from torch.overrides import TorchFunctionMode

from ..errors import CaptureError, UsageError
from ..trace.keys import make_key, validate_key
from ..trace.checksum import copy_crc32, copy_crc32_at, crc32
from ..trace.convert import as_array
from ..trace.staging import Arena, ArenaPool
from ..trace.writer import PackedStage, TraceWriter
from .presets import Preset, StageSpec, detect_preset, get_preset

__all__ = ["capture", "Capture", "parse_layers", "parse_steps"]

#: Default bound on the bytes of staging buffers (captured values not yet on disk).
DEFAULT_QUEUE_BYTES = 512 * 1024 * 1024
#: Default size of one staging buffer, and so of the data files a capture writes (a larger value
#: gets a buffer, and a file, of its own).
DEFAULT_BUFFER_BYTES = 16 * 1024 * 1024

_INVALID_KEY_CHARS = re.compile(r"[^A-Za-z0-9_+\-:@.]")


# -- selectors ------------------------------------------------------------------------------------

def parse_layers(layers: object, count: int) -> tuple[int, ...]:
    """Resolve a layer selector against a model with ``count`` layers.

    Args:
        layers: ``None`` (all), an int (negative counts from the end), an iterable of ints, a
            ``range``/``slice``, a predicate ``f(i) -> bool``, or a string such as ``"0,3,5-7"``
            or ``"-1"``.
        count: number of layers of the model.

    Returns:
        Sorted, distinct layer indices.

    Raises:
        UsageError: an index is out of range or the selector is malformed.

    >>> parse_layers("0,2-3,-1", 6)
    (0, 2, 3, 5)
    """
    if layers is None:
        return tuple(range(count))
    if isinstance(layers, slice):
        return tuple(range(count)[layers])
    if callable(layers):
        return tuple(i for i in range(count) if layers(i))
    items: list[int] = []
    if isinstance(layers, str):
        for part in layers.replace(" ", "").split(","):
            if not part:
                continue
            m = re.fullmatch(r"(-?\d+)(?:-(-?\d+))?", part)
            if m is None:
                raise UsageError(f'layer selector "{layers}": "{part}" is not an index or a range like 5-7.')
            lo = int(m.group(1))
            hi = int(m.group(2)) if m.group(2) is not None else lo
            lo, hi = (lo + count if lo < 0 else lo), (hi + count if hi < 0 else hi)
            if hi < lo:
                raise UsageError(f'layer selector "{layers}": the range "{part}" is empty.')
            items.extend(range(lo, hi + 1))
    elif isinstance(layers, int) and not isinstance(layers, bool):
        items = [layers + count if layers < 0 else layers]
    elif isinstance(layers, Iterable):
        for i in layers:
            if isinstance(i, bool) or not isinstance(i, int):
                raise UsageError(f"layer indices must be ints, not {i!r}.")
            items.append(i + count if i < 0 else i)
    else:
        raise UsageError(f"layers must be None, an int, ints, a range, a slice, a predicate or a string, not {layers!r}.")
    bad = [i for i in items if not 0 <= i < count]
    if bad:
        raise UsageError(f"layer index {bad[0]} is out of range: the model has {count} layers (0..{count - 1}).")
    return tuple(sorted(set(items)))


def parse_steps(steps: object) -> Callable[[int], bool] | None:
    """Resolve a decode-step selector.

    Args:
        steps: ``None`` (no step index: one forward pass), ``True`` or ``"all"`` (every forward
            call of the model is a step), an int ``n`` (steps ``0..n-1``), an iterable of step
            indices, or a predicate ``f(step) -> bool``.

    Returns:
        ``None`` when keys carry no step index, else a predicate on the step index.

    Raises:
        UsageError: the selector is malformed.
    """
    if steps is None or steps is False:
        return None
    if steps is True or steps == "all":
        return lambda s: True
    if isinstance(steps, int):
        if steps < 1:
            raise UsageError(f"steps={steps}: give a positive number of decode steps to capture.")
        return lambda s: s < steps
    if callable(steps):
        return steps  # type: ignore[return-value]
    if isinstance(steps, Iterable) and not isinstance(steps, (str, bytes)):
        chosen = set()
        for s in steps:
            if isinstance(s, bool) or not isinstance(s, int) or s < 0:
                raise UsageError(f"step indices must be non-negative ints, not {s!r}.")
            chosen.add(s)
        return chosen.__contains__
    raise UsageError(f"steps must be None, True, an int, step indices or a predicate, not {steps!r}.")


def _glob(pattern: str) -> re.Pattern[str]:
    return re.compile("^" + "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern) + "$")


# -- writing --------------------------------------------------------------------------------------

_TORCH_CODES: dict[torch.dtype, str] = {
    torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
    torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8", torch.uint8: "U8",
    torch.bool: "BOOL",
}
for _name, _code in (("float8_e4m3fn", "F8_E4M3"), ("float8_e5m2", "F8_E5M2"), ("uint16", "U16"),
                     ("uint32", "U32"), ("uint64", "U64")):
    if hasattr(torch, _name):
        _TORCH_CODES[getattr(torch, _name)] = _code


def _bytes_of(t: torch.Tensor) -> np.ndarray:
    """The bytes of a contiguous CPU tensor as a ``uint8`` array (no copy)."""
    return t.reshape(-1).view(torch.uint8).numpy()


class _PackedSink:
    """Pack captured values into staging arenas; write full arenas as data files, in order.

    At hook time a CPU tensor is copied into the current arena and its CRC-32 computed in the same
    pass (the copy is the snapshot: the model may change its tensor in place afterwards). A full
    arena is prepared as a data file on the capturing thread (:meth:`TraceWriter.pack`: keys,
    entries, header; cheap) and handed to the writer thread, which only writes it (direct I/O,
    in one C call with the GIL released); the capturing thread journals it at its next seal. So
    the writer thread hardly ever holds the GIL and the forward, which needs it between torch
    ops, does not wait for it (a writer thread doing Python work made the forward 20-40 %
    slower). A CUDA tensor is copied into pinned host memory with ``non_blocking=True``; its
    arena is then prepared by the writer thread after waiting on a CUDA event, so the forward
    never waits for the device. Other values
    (NumPy arrays, scalars, text from :meth:`Capture.add`) are packed the same way, in order.
    """

    def __init__(self, writer: TraceWriter, *, background: bool, arena_bytes: int, queue_bytes: int):
        self.writer = writer
        self.pool = ArenaPool(arena_bytes, queue_bytes)
        self.arena: Arena | None = None
        self.items: deque = deque()
        self.cv = threading.Condition()
        self.closing = False
        self.deferred = 0  # arenas handed to the writer thread still to be prepared (device copies)
        self.done: deque = deque()  # data files written by the writer thread, to commit in order
        self.error: BaseException | None = None
        self.thread: threading.Thread | None = None
        if background:
            self.thread = threading.Thread(target=self._run, name="parity-capture-writer", daemon=True)
            self.thread.start()

    def _raise(self, key: str | None = None) -> None:
        e = self.error
        if isinstance(e, CaptureError):
            raise e
        raise CaptureError(f"the trace writer failed: {e}", path=self.writer.path, stage=key) from e

    def _claim(self, key: str, nbytes: int, itemsize: int) -> tuple[Arena, int]:
        arena = self.arena
        offset = arena.claim(nbytes, itemsize) if arena is not None else None
        if offset is None:
            self._seal()
            try:
                arena = self.arena = self.pool.get(nbytes)
            except BaseException:
                if self.error is None:
                    raise
                self._raise(key)  # the pool was aborted: the writer failed
            offset = arena.claim(nbytes, itemsize)
            assert offset is not None
        return arena, offset

    def put(self, key: str, value: Any, axes: Sequence[str] | None, provenance: Mapping[str, Any] | None,
            indices: Mapping[str, object] | None = None) -> None:
        if self.error is not None:
            self._raise(key)
        code = _TORCH_CODES.get(value.dtype) if isinstance(value, torch.Tensor) else None
        if code is None:
            self._put_other(key, value, axes, provenance, indices)
            return
        t = value.detach()
        if t.device.type not in ("cpu", "cuda"):
            t = t.to("cpu")
        itemsize = t.element_size()
        nbytes = t.numel() * itemsize
        arena, offset = self._claim(key, nbytes, itemsize)
        crc = 0 if not nbytes else None
        if nbytes and t.device.type == "cpu":
            if t.is_contiguous():  # straight from the tensor's memory (alive for the call)
                crc = copy_crc32_at(arena.array, offset, t.data_ptr(), nbytes)
            else:
                region = arena.array[offset:offset + nbytes]
                torch.from_numpy(region).view(t.dtype).view(t.shape).copy_(t)
                crc = crc32(region)
        elif nbytes:  # CUDA: an asynchronous copy to pinned memory; the writer finishes it
            buf = torch.empty(t.shape, dtype=t.dtype, pin_memory=True)
            buf.copy_(t, non_blocking=True)
            event = torch.cuda.Event()
            event.record(torch.cuda.current_stream(t.device))
            arena.pending.append((len(arena.stages), buf, event))
        arena.stages.append(PackedStage(key, code, tuple(t.shape), offset, nbytes, crc, axes, indices, provenance))

    def _put_other(self, key: str, value: Any, axes, provenance, indices) -> None:
        """A value that is not a tensor of a storable dtype: converted as :meth:`TraceWriter.add` does."""
        converted = as_array(value, stage=key)
        if isinstance(converted, str):
            arena, offset = self._claim(key, 0, 1)
            arena.stages.append(PackedStage(key, "", (), offset, 0, 0, None, indices, provenance, text=converted))
            return
        arr, dtype = converted
        if not arr.flags.c_contiguous:
            arr = arr.copy(order="C")  # (np.ascontiguousarray would make a 0-d array 1-d)
        arena, offset = self._claim(key, arr.nbytes, dtype.itemsize)
        region = arena.array[offset:offset + arr.nbytes]
        crc = copy_crc32(region, arr.reshape(-1).view(np.uint8)) if arr.nbytes else 0
        arena.stages.append(PackedStage(key, dtype.code, tuple(arr.shape), offset, arr.nbytes, crc, axes, indices,
                                        provenance))

    def _commit(self) -> None:
        """Journal the data files the writer thread has written (on this thread: the writer thread
        only writes, with the GIL released)."""
        while self.done:
            self.writer.commit_packed(self.done.popleft())

    def _seal(self) -> None:
        self._commit()
        arena, self.arena = self.arena, None
        if arena is None:
            return
        if not arena.stages:
            self.pool.put(arena)
            return
        with self.cv:
            defer = bool(arena.pending) or self.deferred > 0
            if defer:
                self.deferred += 1
        if defer:  # prepared by the writer thread, after the device copies (and in order)
            self._submit(("arena", arena))
            return
        try:
            shard = self.writer.pack(arena.stages, arena.array, size=arena.used)
        except BaseException:
            self.pool.put(arena)
            raise
        self._submit(("shard", shard, arena))

    def _submit(self, item: Any) -> None:
        if self.thread is None:
            self._do(item)
            self._commit()
            if self.error is not None:
                self._raise()
            return
        with self.cv:
            self.items.append(item)
            self.cv.notify_all()

    def _do(self, item: Any) -> None:
        arena = item[-1]
        try:
            if self.error is None:
                if item[0] == "arena":
                    for i, buf, event in arena.pending:
                        event.synchronize()
                        st = arena.stages[i]
                        crc = copy_crc32(arena.array[st.offset:st.offset + st.nbytes], _bytes_of(buf))
                        arena.stages[i] = st._replace(crc=crc)
                    shard = self.writer.pack(arena.stages, arena.array, size=arena.used)
                    with self.cv:
                        self.deferred -= 1
                else:
                    shard = item[1]
                if shard is not None:
                    self.done.append(self.writer.write_packed_file(shard))
        except BaseException as e:  # noqa: BLE001 - reported to the capturing thread
            self.error = e
            self.pool.abort(e)
        finally:
            self.pool.put(arena)

    def _run(self) -> None:
        while True:
            with self.cv:
                while not self.items and not self.closing:
                    self.cv.wait()
                if not self.items:
                    return
                item = self.items.popleft()
            self._do(item)

    def close(self) -> None:
        try:
            if self.error is None:
                self._seal()
        finally:
            if self.thread is not None:
                with self.cv:
                    self.closing = True
                    self.cv.notify_all()
                self.thread.join()
            if self.arena is not None:
                self.pool.put(self.arena)
                self.arena = None
            self.pool.close()
            self._commit()  # everything written, also before a failure, is in the trace
        if self.error is not None:
            self._raise()


# -- attention interposition ----------------------------------------------------------------------

def _is_view_of(a: object, base: torch.Tensor) -> bool:
    return a is base or (isinstance(a, torch.Tensor) and a._base is not None and a._base is base)


class _AttentionOps(TorchFunctionMode):
    """Watch the ops of one eager-attention call: find the scores before the mask and the softmax.

    The scores are the other operand of the first op that uses the attention mask (``+ mask``,
    ``where(mask, ...)``); without a mask tensor, the operand of an internal ``where``/``masked_fill``,
    else the softmax's input.
    """

    def __init__(self, mask: object):
        super().__init__()
        self.mask = mask if isinstance(mask, torch.Tensor) else None
        self.masked: torch.Tensor | None = None
        self.mask_used = False
        self.softmax_in: torch.Tensor | None = None
        self.softmax_out: torch.Tensor | None = None
        self.done = False  # softmax seen: nothing more to find, the remaining ops only pass through

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if kwargs is None:
            kwargs = {}
        if self.done:
            return func(*args, **kwargs)
        name = getattr(func, "__name__", "")
        if name == "__get__":  # attribute reads (.shape, .dtype...): neither the mask nor the softmax
            return func(*args, **kwargs)
        operand = None
        if self.masked is None:  # (the softmax is not seen yet: self.done would have returned)
            mask = self.mask
            if mask is not None:
                if any(_is_view_of(a, mask) for a in args):
                    self.mask_used = True
                    operand = next((a for a in args if isinstance(a, torch.Tensor) and not _is_view_of(a, mask)
                                    and a.is_floating_point() and a.dim() >= 2), None)
            elif name in ("where", "masked_fill", "masked_fill_"):
                operand = next((a for a in args if isinstance(a, torch.Tensor) and a.is_floating_point()
                                and a.dim() >= 2), None)
            if operand is not None and ((name.endswith("_") and not name.startswith("__")) or name.startswith("__i")):
                operand = operand.clone()  # the op is about to overwrite it (in place) with the masked scores
        out = func(*args, **kwargs)
        if operand is not None:
            self.masked = operand
        if name in ("softmax", "_softmax") and args and isinstance(args[0], torch.Tensor):
            self.softmax_in, self.softmax_out = args[0], out
            self.done = True
        return out

    def scores(self) -> torch.Tensor | None:
        if self.masked is not None:
            return self.masked
        if self.mask is not None:
            return None  # a mask was given but we did not see where it was applied: refuse to guess
        return self.softmax_in


def _function_globals(cls: type) -> dict[str, Any]:
    """The module namespace that ``cls.forward`` looks its helper functions up in."""
    return inspect.unwrap(cls.forward).__globals__


def _version(modname: str) -> str | None:
    mod = sys.modules.get(modname)
    return getattr(mod, "__version__", None) if mod is not None else None


def _tensor_items(out: object, prefix: str) -> Iterator[tuple[str, torch.Tensor]]:
    """Tensors of a module output: the tensor itself, or ``prefix.i`` / ``prefix.field`` for containers."""
    if isinstance(out, torch.Tensor):
        yield prefix, out
    elif isinstance(out, Mapping):
        for k, v in out.items():
            if isinstance(v, torch.Tensor):
                yield f"{prefix}.{_INVALID_KEY_CHARS.sub('_', str(k))}", v
    elif isinstance(out, (tuple, list)):
        for i, v in enumerate(out):
            if isinstance(v, torch.Tensor):
                yield f"{prefix}.{i}", v


def _pick(value: object, index: int) -> torch.Tensor | None:
    if isinstance(value, torch.Tensor):
        return value if index == 0 else None
    if isinstance(value, (tuple, list)) and len(value) > index and isinstance(value[index], torch.Tensor):
        return value[index]
    return None


def _safe_name(name: str) -> str:
    safe = ".".join(seg if seg and seg[0].isalnum() or seg.startswith("_") else "_" + seg
                    for seg in _INVALID_KEY_CHARS.sub("_", name).split(".") if seg)
    return safe or "model"


# -- the capture session --------------------------------------------------------------------------

class Capture:
    """What a :func:`capture` block is recording (yielded by it).

    Attributes:
        path: the trace directory.
        preset: the :class:`~parity.capture.presets.Preset` in use, or ``None`` (module tree).
        stages: canonical stage names being captured (preset mode) or the hooked module names.
        layers: layer indices being captured (``()`` when the model has no recognisable layers).
        omitted: stages of the preset left out of a default selection, with the reason.
        writer: the underlying :class:`~parity.trace.writer.TraceWriter`.
    """

    def __init__(self, session: _Session):
        self._s = session

    @property
    def path(self) -> str:
        return self._s.writer.path

    @property
    def preset(self) -> Preset | None:
        return self._s.preset

    @property
    def stages(self) -> tuple[str, ...]:
        return self._s.stage_names

    @property
    def layers(self) -> tuple[int, ...]:
        return self._s.layer_ids

    @property
    def omitted(self) -> dict[str, str]:
        return dict(self._s.omitted)

    @property
    def writer(self) -> TraceWriter:
        return self._s.writer

    @property
    def step(self) -> int:
        """Index of the current (or last) forward call of the model; ``-1`` before the first."""
        return self._s.step

    def add(self, name: str, value: object, *, axes: Sequence[str] | None = None, **indices: object) -> str:
        """Record an extra stage (e.g. ``input_ids``) in order with the captured ones.

        Args:
            name: the stage name.
            value: a tensor, array, scalar or string.
            axes: names of the value's axes.
            **indices: key indices, e.g. ``step=3``.

        Returns:
            The key the stage is stored under.
        """
        key = make_key(validate_key(name), indices) if indices else validate_key(name)
        self._s.sink.put(name, value, axes, None, indices or None)
        return key


class _Session:
    def __init__(self, model: torch.nn.Module, step_sel: Callable[[int], bool] | None):
        self.model = model
        self.writer: TraceWriter = None  # type: ignore[assignment]  # set once the hooks are installed
        self.sink: _PackedSink = None  # type: ignore[assignment]
        self.step_sel = step_sel
        self.step = -1
        self.active = False
        self.preset: Preset | None = None
        self.stage_names: tuple[str, ...] = ()
        self.layer_ids: tuple[int, ...] = ()
        self.omitted: dict[str, str] = {}
        self.warnings: list[str] = []
        self.handles: list[Any] = []
        self.patches: list[tuple[dict[str, Any], str, Any, Any]] = []
        self.expected: dict[str, str] = {}      # base key -> why it might be missing
        self.produced: set[str] = set()
        self.attn_layers: dict[torch.nn.Module, int] = {}
        self.attn_paths: dict[torch.nn.Module, str] = {}
        self.attn_stack: list[torch.nn.Module] = []
        self.attn_want: set[str] = set()
        self.rope_want: dict[int, tuple[str, tuple[str, ...]]] = {}
        self.attn_axes: dict[str, tuple[str, ...]] = {}
        self.disabled = False

    # - emitting -
    def emit(self, base: str, t: torch.Tensor, axes: tuple[str, ...] | None, provenance: Mapping[str, Any]) -> None:
        if axes is not None and t.dim() != len(axes):
            raise CaptureError(f"expected a value with axes {list(axes)} but the model produced shape {tuple(t.shape)}; "
                               f"the preset does not fit this model (module {provenance.get('module')}).",
                               path=self.writer.path, stage=base)
        self.produced.add(base)
        self.sink.put(base, t, axes, provenance, None if self.step_sel is None else {"step": self.step})

    # - root hooks: steps and completeness -
    def root_pre(self, module, args, kwargs=None):
        self.step += 1
        self.active = not self.disabled and (self.step_sel is None or bool(self.step_sel(self.step)))
        self.produced = set()

    def root_post(self, module, args, output):
        if not self.active:
            return
        self.active = False
        missing = [k for k in self.expected if k not in self.produced]
        if missing:
            k = missing[0]
            more = f" ({len(missing) - 1} more stage(s) missing)" if len(missing) > 1 else ""
            raise CaptureError(f"requested, but the model did not produce it: {self.expected[k]}{more}",
                               path=self.writer.path, stage=k)

    # - hooks -
    def output_hook(self, base: str, spec: StageSpec, prov: dict[str, Any]):
        index, axes = spec.index, spec.axes

        def hook(module, args, output):
            if self.active:
                t = _pick(output, index)
                if t is not None:
                    self.emit(base, t, axes, prov)
        return hook

    def split_hook(self, base: str, spec: StageSpec, prov: dict[str, Any]):
        index, parts, axes = spec.index, spec.parts, spec.axes

        def hook(module, args, output):
            if self.active:
                t = _pick(output, 0)
                if t is not None and t.shape[-1] % parts == 0:
                    self.emit(base, t.split(t.shape[-1] // parts, dim=-1)[index], axes, prov)
        return hook

    def input_hook(self, base: str, spec: StageSpec, prov: dict[str, Any]):
        index, axes = spec.index, spec.axes

        def hook(module, args, kwargs):
            if self.active:
                t = args[index] if len(args) > index else None
                if t is None and index == 0:
                    t = next((v for v in kwargs.values() if isinstance(v, torch.Tensor)), None)
                if isinstance(t, torch.Tensor):
                    self.emit(base, t, axes, prov)
        return hook

    def module_hook(self, name: str, prov: dict[str, Any]):
        def hook(module, args, output):
            if self.active:
                for key, t in _tensor_items(output, name):
                    self.emit(key, t, None, prov)
        return hook

    # - interposition -
    def patch(self, namespace: dict[str, Any], fname: str, make: Callable[[Any], Any]) -> None:
        for ns, n, _, _ in self.patches:
            if ns is namespace and n == fname:
                return
        original = namespace[fname]
        wrapper = make(original)
        namespace[fname] = wrapper
        self.patches.append((namespace, fname, original, wrapper))

    def eager_wrapper(self, original):
        session = self

        def parity_eager_attention_forward(module, query, key, value, attention_mask, *args, **kwargs):
            layer = session.attn_layers.get(module)
            if layer is None or not session.active:
                return original(module, query, key, value, attention_mask, *args, **kwargs)
            ops = _AttentionOps(attention_mask)
            with ops:
                out = original(module, query, key, value, attention_mask, *args, **kwargs)
            prov = {"module": session.attn_paths.get(module), "function": f"{original.__module__}.{original.__qualname__}"}
            if "attn_scores" in session.attn_want:
                scores = ops.scores()
                base = f"layers.{layer}.attn_scores"
                if scores is None:
                    raise CaptureError("the attention mask was passed to the eager attention function but parity could "
                                       "not see where it was applied, so the scores before the mask are unknown.",
                                       path=session.writer.path, stage=base)
                session.emit(base, scores, session.attn_axes["attn_scores"], {**prov, "taken": "pre-mask scores"})
            if "attn_probs" in session.attn_want:
                probs = _pick(out, 1)
                if probs is None or probs.dim() != 4:
                    probs = ops.softmax_out
                if probs is not None:
                    session.emit(f"layers.{layer}.attn_probs", probs, session.attn_axes["attn_probs"],
                                 {**prov, "taken": "attention weights"})
            return out
        return parity_eager_attention_forward

    def rope_wrapper(self, original):
        session = self

        def parity_apply_rotary_pos_emb(q, k, *args, **kwargs):
            out = original(q, k, *args, **kwargs)
            if session.active and session.attn_stack:
                module = session.attn_stack[-1]
                layer = session.attn_layers.get(module)
                if layer is not None:
                    prov = {"module": session.attn_paths.get(module),
                            "function": f"{original.__module__}.{original.__qualname__}"}
                    for idx, (name, axes) in session.rope_want.items():
                        t = _pick(out, idx)
                        if t is not None:
                            session.emit(f"layers.{layer}.{name}", t, axes, {**prov, "taken": f"return[{idx}]"})
            return out
        return parity_apply_rotary_pos_emb

    def attn_pre(self, module, args, kwargs=None):
        self.attn_stack.append(module)

    def attn_post(self, module, args, output):
        if self.attn_stack and self.attn_stack[-1] is module:
            self.attn_stack.pop()

    # - teardown -
    def remove(self) -> None:
        self.active = False
        self.disabled = True
        for h in reversed(self.handles):
            h.remove()
        self.handles.clear()
        for ns, name, original, wrapper in reversed(self.patches):
            if ns.get(name) is wrapper:
                ns[name] = original
            # else another interposer wrapped ours; ours now passes everything through (disabled).
        self.patches.clear()


def _find_layer_list(model: torch.nn.Module, suffix: str | None) -> tuple[str, torch.nn.ModuleList] | None:
    best: tuple[str, torch.nn.ModuleList] | None = None
    for name, mod in model.named_modules():
        if not isinstance(mod, torch.nn.ModuleList) or len(mod) == 0:
            continue
        if suffix is not None:
            if name == suffix or name.endswith("." + suffix):
                if best is None or len(name) < len(best[0]):
                    best = (name, mod)
        elif best is None or len(mod) > len(best[1]):
            best = (name, mod)
    return best


def _find_model_module(model: torch.nn.Module, alternatives: str, exclude: str | None) -> tuple[str, torch.nn.Module] | None:
    found: tuple[str, torch.nn.Module] | None = None
    for alt in alternatives.split("|"):
        for name, mod in model.named_modules():
            if exclude and (name == exclude or name.startswith(exclude + ".")):
                continue
            if name == alt or name.endswith("." + alt):
                if found is None or len(name) < len(found[0]):
                    found = (name, mod)
        if found is not None:
            return found
    return None


def _attn_implementation(model: torch.nn.Module) -> str | None:
    cfg = getattr(model, "config", None)
    return getattr(cfg, "_attn_implementation", None) if cfg is not None else None


def _set_attn_implementation(model: torch.nn.Module, impl: str) -> None:
    setter = getattr(model, "set_attn_implementation", None)
    if callable(setter):
        setter(impl)
    else:  # older transformers: the config attribute is what the attention modules read
        model.config._attn_implementation = impl


def _install_preset(s: _Session, model: torch.nn.Module, preset: Preset, stages: object, layers: object) -> None:
    # Names and globs are requests (a stage the model cannot produce is an error); None and a
    # predicate filter what the model can produce (the rest is listed in Capture.omitted).
    explicit = stages is not None and not callable(stages)
    names = preset.select(stages)
    found = _find_layer_list(model, preset.layers)
    if found is None and any(preset.is_layer_stage(n) for n in names):
        raise CaptureError(f'the {preset.name} preset expects the layers in a ModuleList named "{preset.layers}", '
                           f"but {type(model).__name__} has none; pass preset=None to capture by module names.")
    layer_path, layer_list = found if found is not None else ("", torch.nn.ModuleList())
    s.layer_ids = parse_layers(layers, len(layer_list)) if found is not None else ()
    impl = _attn_implementation(model)
    chosen: list[str] = []

    def unavailable(name: str, reason: str, warn: bool = True) -> None:
        if explicit:
            raise CaptureError(f"cannot be captured from {type(model).__name__}: {reason}", stage=name)
        s.omitted[name] = reason
        if warn:
            s.warnings.append(f"{name}: {reason}")

    for name in names:
        spec = preset.spec(name)
        if not preset.is_layer_stage(name):
            hit = _find_model_module(model, spec.module, layer_path or None)
            if hit is None:
                unavailable(name, f"the model has no module {' or '.join(spec.module.split('|'))} "
                                  f"({type(model).__name__} may lack that head).", warn=False)
                continue
            mpath, mod = hit
            prov = {"module": mpath or type(model).__name__, "taken": f"{spec.source}[{spec.index}]"}
            s.handles.append(mod.register_forward_hook(s.output_hook(name, spec, prov)))
            s.expected[name] = f"module {mpath} did not run."
            chosen.append(name)
            continue
        # per-layer stage: resolve the module in every selected layer first, so nothing is half-installed
        mods: list[tuple[int, str, torch.nn.Module]] = []
        missing = None
        for i in s.layer_ids:
            rel = spec.module
            mpath = f"{layer_path}.{i}" + (f".{rel}" if rel else "")
            try:
                mod = layer_list[i].get_submodule(rel) if rel else layer_list[i]
            except AttributeError:
                missing = f"layer {i} has no submodule {rel} (expected by the {preset.name} preset)."
                break
            mods.append((i, mpath, mod))
        if missing is not None:
            unavailable(name, missing)
            continue
        if spec.source in ("attention", "rope"):
            fname = "eager_attention_forward" if spec.source == "attention" else "apply_rotary_pos_emb"
            if spec.source == "attention" and impl is not None and impl != "eager":
                unavailable(name, f'the model uses attn_implementation="{impl}", which computes attention in one fused '
                                  f'kernel; only the eager implementation exposes {name}. Pass attn_implementation="eager" '
                                  "to capture() (or load the model with it).")
                continue
            namespaces = []
            for _, _, mod in mods:
                ns = _function_globals(type(mod))
                if not callable(ns.get(fname)):
                    namespaces = None
                    why = (f"{type(mod).__module__} defines no {fname}() to interpose on "
                           f"(transformers {_version('transformers') or '?'}).")
                    break
                namespaces.append(ns)
            if namespaces is None:
                unavailable(name, why)
                continue
            for ns in namespaces:
                s.patch(ns, fname, s.eager_wrapper if spec.source == "attention" else s.rope_wrapper)
            for i, mpath, mod in mods:
                s.attn_layers[mod] = i
                s.attn_paths[mod] = mpath
            if spec.source == "attention":
                s.attn_want.add(name)
                s.attn_axes[name] = spec.axes
            else:
                s.rope_want[spec.index] = (name, spec.axes)
            for i, mpath, _ in mods:
                s.expected[f"layers.{i}.{name}"] = (f"{fname}() was not called for {mpath} (the attention code path "
                                                    "bypasses it, e.g. another implementation or a kernel).")
            chosen.append(name)
            continue
        for i, mpath, mod in mods:
            base = f"layers.{i}.{name}"
            prov = {"module": mpath, "taken": f"{spec.source}[{spec.index}]" + (f"/{spec.parts}" if spec.source == "split" else "")}
            if spec.source == "output":
                s.handles.append(mod.register_forward_hook(s.output_hook(base, spec, prov)))
            elif spec.source == "split":
                s.handles.append(mod.register_forward_hook(s.split_hook(base, spec, prov)))
            else:
                s.handles.append(mod.register_forward_pre_hook(s.input_hook(base, spec, prov), with_kwargs=True))
            s.expected[base] = f"module {mpath} did not run."
        chosen.append(name)
    # the attention modules tell the rotary-embedding wrapper which layer is calling it
    if s.rope_want:
        for mod in list(s.attn_layers):
            s.handles.append(mod.register_forward_pre_hook(s.attn_pre))
            s.handles.append(mod.register_forward_hook(s.attn_post, always_call=True))
    s.stage_names = tuple(chosen)
    if s.warnings:
        warnings.warn("parity.torch.capture: left out " + "; ".join(s.warnings), stacklevel=4)


def _install_modules(s: _Session, model: torch.nn.Module, stages: object, layers: object) -> None:
    found = _find_layer_list(model, None)
    layer_path, layer_list = found if found is not None else (None, None)
    s.layer_ids = parse_layers(layers, len(layer_list)) if layer_list is not None else ()
    if stages is None:
        select: Callable[[str, torch.nn.Module], bool] = lambda n, m: True
    elif callable(stages) and not isinstance(stages, str):
        select = stages  # type: ignore[assignment]
    else:
        patterns = [stages] if isinstance(stages, str) else list(stages)  # type: ignore[arg-type]
        regexes = [(p, _glob(p)) for p in patterns]
        names = [n for n, _ in model.named_modules() if n]
        for p, rx in regexes:
            if not any(rx.match(n) for n in names):
                sample = ", ".join(names[:12]) + (" ..." if len(names) > 12 else "")
                raise UsageError(f'the module pattern "{p}" matches no module of {type(model).__name__} '
                                 f"(its modules: {sample}).")
        select = lambda n, m: any(rx.match(n) for _, rx in regexes)  # noqa: E731
    keep = set(s.layer_ids)
    chosen = []
    for name, mod in model.named_modules():
        if not name or not select(name, mod):
            continue
        if layer_path is not None and name.startswith(layer_path + "."):
            idx = name[len(layer_path) + 1:].split(".", 1)[0]
            if idx.isdigit() and int(idx) not in keep:
                continue
        key = _safe_name(name)
        s.handles.append(mod.register_forward_hook(s.module_hook(key, {"module": name})))
        chosen.append(key)
    s.stage_names = tuple(chosen)


@contextmanager
def capture(
    model: torch.nn.Module,
    path: str | os.PathLike[str],
    *,
    stages: str | Sequence[str] | Callable[..., bool] | None = None,
    layers: object = None,
    steps: object = None,
    preset: str | Preset | None = None,
    attn_implementation: str | None = None,
    meta: Mapping[str, Any] | None = None,
    background: bool = True,
    queue_bytes: int = DEFAULT_QUEUE_BYTES,
    buffer_bytes: int = DEFAULT_BUFFER_BYTES,
    producer: str = "parity.torch.capture",
    command: Sequence[str] | None = None,
) -> Iterator[Capture]:
    """Record a PyTorch model's intermediate values into the trace directory ``path``.

    Forward hooks (and, for attention internals, interpositions on the model's own attention and
    rotary-embedding functions) are installed on entry and always removed on exit, also when the
    block raises (the trace is then marked incomplete).

    Args:
        model: the model. Each call of it is one step (``generate()`` calls it once per token).
        path: the ``NAME.trace`` directory to write.
        stages: what to capture. With a preset: canonical stage names or ``*`` globs
            (``"attn_*"``), a list of them (a request: what the model cannot produce is an
            error), or a predicate on the name; ``None`` and a predicate take what the model can
            produce as configured (the others are listed in :attr:`Capture.omitted`). Without a preset: globs on module names
            (``"encoder.layer.*.output.dense"``) or a predicate ``(name, module)``; ``None`` hooks
            every module. Keys are then the module names (``name.0``, ``name.field`` for tuple or
            dict outputs).
        layers: which layers (see :func:`parse_layers`); model-level stages are always captured.
        steps: decode steps (see :func:`parse_steps`); with it, keys carry ``[step=N]``.
        preset: ``None`` (module tree), ``"auto"`` (from ``model.config.model_type``), a preset
            name (``"llama"``, ``"qwen2"``, ``"gpt2"``, ``"bert"``) or a
            :class:`~parity.capture.presets.Preset`.
        attn_implementation: switch the model's attention implementation for the capture (e.g.
            ``"eager"``, needed for ``attn_scores``/``attn_probs``); restored on exit.
        meta: extra JSON-serialisable trace metadata.
        background: write data files on a background thread (``True``, the default) or in the
            forward call that fills a staging buffer (``False``). Either way each captured value
            is copied at hook time into a staging buffer (its snapshot: a model changing its
            activations in place later cannot alter what is written) with its CRC-32 computed in
            the same pass; full buffers are written with direct I/O, which waits for the disk
            without using a core, so the background thread does not compete with torch's threads.
        queue_bytes: bound on the bytes of staging buffers not yet written (the forward waits
            when it is reached).
        buffer_bytes: size of one staging buffer, and so of each data file (a larger value gets
            one of its own).
        producer, command: recorded in the manifest.

    Yields:
        A :class:`Capture` describing what is recorded.

    Raises:
        UsageError: bad selectors, or a stage the architecture does not have (the message lists
            the ones it has).
        CaptureError: a requested stage cannot be captured from this model, or the model did not
            produce it during a forward pass (raised from that forward call).

    Example:
        >>> import tempfile, os, torch, transformers, parity.torch
        >>> cfg = transformers.LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64,
        ...     num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2)
        >>> model = transformers.LlamaForCausalLM(cfg).eval()
        >>> path = os.path.join(tempfile.mkdtemp(), "llama.trace")
        >>> with parity.torch.capture(model, path, preset="auto", attn_implementation="eager"), torch.no_grad():
        ...     _ = model(torch.tensor([[1, 2, 3]]))
        >>> parity.load_trace(path).stage("layers.1.attn_probs").axes
        ('batch', 'heads', 'seq', 'kv_seq')
    """
    if not isinstance(model, torch.nn.Module):
        raise UsageError(f"capture() needs a torch.nn.Module, not {type(model).__name__}.")
    step_sel = parse_steps(steps)
    resolved: Preset | None
    if preset is None:
        resolved = None
    elif preset == "auto":
        mt = getattr(getattr(model, "config", None), "model_type", None)
        resolved = detect_preset(mt)
        if resolved is None:
            from .presets import PRESETS
            raise UsageError(f'no preset for model_type "{mt}" ({type(model).__name__}); known: '
                             + ", ".join(sorted(PRESETS)) + ". Pass preset=None to capture by module names.")
    else:
        resolved = get_preset(preset)  # type: ignore[arg-type]

    original_impl = _attn_implementation(model)
    switched = attn_implementation is not None and attn_implementation != original_impl
    if switched:
        _set_attn_implementation(model, attn_implementation)  # type: ignore[arg-type]
    writer: TraceWriter | None = None
    session = _Session(model, step_sel)
    session.preset = resolved
    try:
        # Hooks first: a selector or preset error then leaves nothing on disk.
        session.handles.append(model.register_forward_pre_hook(session.root_pre, with_kwargs=True))
        session.handles.append(model.register_forward_hook(session.root_post))
        if resolved is not None:
            _install_preset(session, model, resolved, stages, layers)
        else:
            _install_modules(session, model, stages, layers)
        full_meta: dict[str, Any] = {
            "capture": "parity.torch",
            "model_class": type(model).__name__,
            "preset": resolved.name if resolved else None,
            "torch": torch.__version__,
        }
        cfg = getattr(model, "config", None)
        if cfg is not None and getattr(cfg, "model_type", None):
            full_meta["model_type"] = cfg.model_type
        if _version("transformers"):
            full_meta["transformers"] = _version("transformers")
        impl = _attn_implementation(model)
        if impl is not None:
            full_meta["attn_implementation"] = impl
        full_meta["training"] = bool(model.training)
        if model.training and any(m.training and (isinstance(m, torch.nn.modules.dropout._DropoutNd) and m.p > 0
                                                   or isinstance(m, torch.nn.modules.batchnorm._BatchNorm))
                                  for m in model.modules()):
            warnings.warn(f"parity.torch.capture: {type(model).__name__} is in training mode, so its dropout or batch "
                          "norm makes the captured values depend on the run; call model.eval() first to compare "
                          "implementations.", stacklevel=3)
        first = next(iter(model.parameters()), None)
        if first is not None:
            full_meta["dtype"] = str(first.dtype).removeprefix("torch.")
            full_meta["device"] = first.device.type
        if resolved is not None:
            full_meta["stages"] = list(session.stage_names)
            full_meta["layers"] = list(session.layer_ids)
            if session.omitted:
                full_meta["omitted_stages"] = dict(session.omitted)
        full_meta.update(dict(meta or {}))
        writer = TraceWriter(path, meta=full_meta, producer=producer, buffer_bytes=buffer_bytes,
                             command=list(sys.argv) if command is None else command)
        session.writer = writer
        session.sink = _PackedSink(writer, background=bool(background), arena_bytes=buffer_bytes,
                                   queue_bytes=queue_bytes)
    except BaseException:
        session.remove()
        if writer is not None:
            writer.close(complete=False, reason="capture set-up failed")
        if switched:
            _set_attn_implementation(model, original_impl)  # type: ignore[arg-type]
        raise
    assert writer is not None and session is not None
    error: BaseException | None = None
    try:
        yield Capture(session)
    except BaseException as e:
        error = e
        raise
    finally:
        session.remove()
        if switched:
            _set_attn_implementation(model, original_impl)  # type: ignore[arg-type]
        try:
            session.sink.close()
        except BaseException:
            writer.close(complete=False, reason="the trace writer failed")
            if error is None:
                raise
        else:
            if error is None:
                writer.close()
            else:
                writer.close(complete=False, reason=f"{type(error).__name__} raised during capture")
