"""Staging buffers for streaming captures: page-aligned arenas that stages are packed into.

A capture hook copies each captured value into the current :class:`Arena` (the copy is its
snapshot: the model may change its own tensor afterwards), computing the CRC-32 in the same pass;
a full arena becomes one data file through :meth:`parity.trace.TraceWriter.add_packed`, written
with direct I/O straight from the arena, and returns to its :class:`ArenaPool` for reuse. Reused
arenas are already mapped (no page faults), are backed by huge pages where the OS offers them, and
bound the memory a capture holds: when every arena is waiting for the disk, the next copy waits.

Arenas a finished capture leaves behind are kept for the next one, up to :data:`SPARE_BYTES`
(``PARITY_STAGING_SPARE_MB`` in the environment); :func:`release_spare` frees them.

Example:
    >>> pool = ArenaPool(arena_bytes=1 << 20, max_bytes=4 << 20)
    >>> arena = pool.get(1002)
    >>> arena.claim(1002, 2)   # 501 float16 values
    0
    >>> arena.claim(8, 4)      # 1002 is no multiple of 4: these float32 values need a new arena
    >>> pool.put(arena); pool.close()
"""

from __future__ import annotations

import mmap
import os
import threading

import numpy as np

__all__ = ["Arena", "ArenaPool", "release_spare", "SPARE_BYTES"]

_PAGE = 4096
_HUGE = 2 * 1024 * 1024

#: Bytes of arenas kept after a capture ends, for the next capture of this process.
SPARE_BYTES = int(float(os.environ.get("PARITY_STAGING_SPARE_MB", "256")) * 1024 * 1024)

_spare: list[Arena] = []
_spare_lock = threading.Lock()


class Arena:
    """A page-aligned byte buffer of ``capacity`` bytes; stages are claimed back to back from offset 0.

    Attributes:
        array: the buffer, a 1-D ``uint8`` array starting on a page (a huge page, where possible).
        used: bytes claimed so far.
        stages: what the user of the arena recorded about each claim (e.g. ``PackedStage``).
        pending: work to finish before the arena is written (e.g. device copies in flight).

    >>> arena = Arena(5000)  # rounded up to whole pages
    >>> arena.capacity, arena.array.ctypes.data % 4096, arena.claim(4096), arena.claim(8, 4), arena.used
    (8192, 0, 0, 4096, 4104)
    >>> arena.close()
    """

    __slots__ = ("capacity", "limit", "array", "used", "stages", "pending", "_map")

    def __init__(self, capacity: int):
        self.capacity = -(-max(int(capacity), _PAGE) // _PAGE) * _PAGE
        big = self.capacity >= _HUGE
        size = self.capacity + (_HUGE if big else 0)
        if hasattr(mmap, "MAP_PRIVATE") and hasattr(mmap, "MAP_ANONYMOUS"):
            # private anonymous memory (mmap(-1, n) alone is shared memory, which gets no huge pages)
            self._map = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        else:  # pragma: no cover - Windows
            self._map = mmap.mmap(-1, size)
        start = 0
        if big:  # start on a 2 MiB boundary and ask for transparent huge pages: fewer, cheaper faults
            start = -_address(self._map) % _HUGE
            if hasattr(mmap, "MADV_HUGEPAGE"):
                try:
                    self._map.madvise(mmap.MADV_HUGEPAGE)
                except OSError:  # pragma: no cover - kernels without THP
                    pass
        self.array = np.frombuffer(self._map, dtype=np.uint8, count=self.capacity, offset=start)
        self.limit = self.capacity  # bytes claims may fill (a pool sets it, so reuse never changes file sizes)
        self.used = 0
        self.stages: list = []
        self.pending: list = []

    def claim(self, nbytes: int, itemsize: int = 1) -> int | None:
        """Reserve the next ``nbytes``; return their offset, or ``None`` when they do not fit or the
        next offset is not a multiple of ``itemsize`` (every value stays aligned to its element)."""
        if self.used % itemsize or self.used + nbytes > self.limit:
            return None
        offset = self.used
        self.used += nbytes
        return offset

    def reset(self) -> None:
        self.used = 0
        self.stages = []
        self.pending = []

    def close(self) -> None:
        self.array = None  # type: ignore[assignment]
        try:
            self._map.close()
        except BufferError:  # pragma: no cover - a view is still alive; the GC unmaps it later
            pass


def _address(m: mmap.mmap) -> int:
    return np.frombuffer(m, dtype=np.uint8, count=1).ctypes.data


class ArenaPool:
    """Arenas for one capture: reused, and never more than ``max_bytes`` of them at once.

    ``get`` waits while the bytes in use would pass ``max_bytes`` (back-pressure from the writer),
    except that one arena is always allowed, so a value larger than the bound still gets through.

    Args:
        arena_bytes: capacity of an ordinary arena (= the size of the data files written).
        max_bytes: bound on the bytes of all arenas of this pool.

    >>> pool = ArenaPool(arena_bytes=1 << 20, max_bytes=4 << 20)
    >>> big, small = pool.get(3 << 20), pool.get(100)  # a value larger than arena_bytes gets its own arena
    >>> big.capacity, small.capacity
    (3145728, 1048576)
    >>> pool.put(big); pool.put(small); pool.close()
    """

    def __init__(self, arena_bytes: int, max_bytes: int):
        self.arena_bytes = max(int(arena_bytes), _PAGE)
        self.max_bytes = max(int(max_bytes), 1)
        self._free: list[Arena] = []
        self._total = 0  # bytes of every arena of this pool, free or in use
        self._in_use = 0
        self._cv = threading.Condition()
        self._error: BaseException | None = None

    def get(self, nbytes: int) -> Arena:
        """An empty arena of at least ``nbytes`` (and at least ``arena_bytes``)."""
        need = max(self.arena_bytes, int(nbytes))
        with self._cv:
            while True:
                if self._error is not None:
                    raise self._error
                for i, a in enumerate(self._free):
                    if a.capacity >= need:
                        self._in_use += 1
                        a.limit = need
                        return self._free.pop(i)
                if self._free and self._total + need > self.max_bytes:
                    a = self._free.pop()  # too small for this value: make room for one that fits
                    self._total -= a.capacity
                    a.close()
                    continue
                room = self.max_bytes - self._total
                if need <= room or self._in_use == 0:
                    arena = _take_spare(need, max(room, need)) or Arena(need)
                    self._total += arena.capacity
                    self._in_use += 1
                    arena.limit = need
                    return arena
                self._cv.wait()

    def put(self, arena: Arena) -> None:
        """Give back an arena (written, or no longer wanted)."""
        arena.reset()
        with self._cv:
            self._in_use -= 1
            self._free.append(arena)
            self._cv.notify_all()

    def abort(self, error: BaseException) -> None:
        """Make every waiting and later :meth:`get` raise ``error``."""
        with self._cv:
            self._error = error
            self._cv.notify_all()

    def close(self) -> None:
        """Hand the free arenas to the spare list of the process (up to :data:`SPARE_BYTES`)."""
        with self._cv:
            free, self._free = self._free, []
            self._total = 0
        _keep_spare(free)


def _take_spare(need: int, room: int) -> Arena | None:
    """A spare arena of at least ``need`` bytes and at most ``room``."""
    with _spare_lock:
        for i, a in enumerate(_spare):
            if need <= a.capacity <= room:
                return _spare.pop(i)
    return None


def _keep_spare(arenas: list[Arena]) -> None:
    with _spare_lock:
        held = sum(a.capacity for a in _spare)
        for a in sorted(arenas, key=lambda a: a.capacity):
            if held + a.capacity <= SPARE_BYTES:
                _spare.append(a)
                held += a.capacity
            else:
                a.close()


def release_spare() -> int:
    """Free the arenas kept from finished captures; return how many bytes were released.

    >>> _ = release_spare()  # start with no spare arenas
    >>> pool = ArenaPool(arena_bytes=1 << 20, max_bytes=4 << 20)
    >>> pool.put(pool.get(10)); pool.close()  # the closed pool's arena is kept as a spare
    >>> release_spare(), release_spare()
    (1048576, 0)
    """
    with _spare_lock:
        arenas = list(_spare)
        _spare.clear()
    for a in arenas:
        a.close()
    return sum(a.capacity for a in arenas)
