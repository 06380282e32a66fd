"""The writer sink of :func:`parity.torch.capture`: captured tensors → staging buffers → data files.

Each value is copied at hook time into a reusable, page-aligned staging buffer (the copy is its
snapshot: the model may change its activations later) and checksummed (CRC-32) in the same pass;
a background thread writes each full buffer as one data file with direct I/O, which needs almost
no CPU, so the forward neither waits for the disk nor loses a core to it. Memory is bounded
(``queue_bytes``): when the disk falls behind, the next copy waits. Tensors on CUDA are copied into
pinned host memory with ``non_blocking=True`` and the writer thread waits on a CUDA event, not the
forward. bf16/f16 values are stored as bf16/f16.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from ..errors import CaptureError
from ..trace.checksum import copy_crc32, copy_crc32_at, crc32
from ..trace.convert import as_array
from ..trace.staging import Arena, ArenaPool
from ..trace.writer import PackedStage, TraceWriter

__all__ = ["PackedSink", "TORCH_CODES", "DEFAULT_QUEUE_BYTES", "DEFAULT_BUFFER_BYTES"]

#: Default bound on the bytes of staging buffers (captured values not yet on disk).
DEFAULT_QUEUE_BYTES = 512 * 1024 * 1024
#: Default size of one staging buffer, and so of the data files a capture writes (a larger value
#: gets a buffer, and a file, of its own).
DEFAULT_BUFFER_BYTES = 16 * 1024 * 1024


TORCH_CODES: dict[torch.dtype, str] = {
    torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
    torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8", torch.uint8: "U8",
    torch.bool: "BOOL",
}
for _name, _code in (("float8_e4m3fn", "F8_E4M3"), ("float8_e5m2", "F8_E5M2"), ("uint16", "U16"),
                     ("uint32", "U32"), ("uint64", "U64")):
    if hasattr(torch, _name):
        TORCH_CODES[getattr(torch, _name)] = _code


def _bytes_of(t: torch.Tensor) -> np.ndarray:
    """The bytes of a contiguous CPU tensor as a ``uint8`` array (no copy)."""
    return t.reshape(-1).view(torch.uint8).numpy()


class PackedSink:
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

    >>> import torch
    >>> from parity.trace import TraceWriter
    >>> with TraceWriter("sink.trace") as w:
    ...     sink = PackedSink(w, background=False, arena_bytes=1 << 16, queue_bytes=1 << 20)
    ...     sink.put("x", torch.arange(6.0).reshape(2, 3), ("seq", "hidden"), None)
    ...     sink.put("note", "warm-up done", None, None)
    ...     sink.close()
    >>> t = parity.load_trace("sink.trace")
    >>> t.keys(), t["x"].tolist(), t["note"]
    (['x', 'note'], [[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]], 'warm-up done')
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
        code = TORCH_CODES.get(value.dtype) if isinstance(value, torch.Tensor) else None
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

