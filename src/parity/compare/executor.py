"""Where stages are compared: a Dask cluster (``parity diff --dask``, ``compare_traces(scheduler=)``).

:class:`DaskExecutor` is an :class:`~parity.compare.diff.Executor`: the engine
(:func:`~parity.compare.diff.compare_stages`) still walks the stages and builds the result; the
executor only decides where each stage's work runs. The plan, made from the manifests alone:

* a large stage whose result depends on its values only through the metrics
  (:func:`~parity.compare.diff.streamable`) is **split** into element ranges of whole chunks, the
  chunks :func:`~parity.compare.metrics.compute_metrics` itself would use
  (:func:`~parity.compare.metrics.chunk_layout`); each range is one task, which returns the
  partials of its chunks (:func:`~parity.compare.metrics.chunk_partials`), and the client folds
  them in chunk order (:func:`~parity.compare.metrics.metrics_from_partials`). Same chunks, same
  order: the same float64 sums, bit for bit.
* every other stage (small ones, text, shape or layout mismatches, transforms, images, logits)
  runs whole, through :func:`~parity.compare.diff.compare_stage` on a worker; consecutive stages
  are **batched** into one task until it holds about :data:`TASK_ELEMENTS` elements or
  :data:`BATCH_STAGES` stages.

Tasks carry trace paths or URLs, stage keys and element ranges, never array data: each worker
process opens the traces itself (once per comparison) and reads its own ranges through the
memory map, or with one ranged request to a trace at a URL (:meth:`~parity.trace.reader.Trace.elements`:
the stages of a sharded trace, whose reader joins its ranks' slices, are batched but never split). Results come back in stage order, so progress, the first divergence and the
``--json`` document are those of the single-process diff. Diagnoses run on the client, for
failing stages only: a :class:`~parity.compare.diff.Diagnoser` is any object of the caller's
(it need not be importable on a worker), and it reads the two arrays. A worker lost mid-run has
its tasks rerun by Dask; they are pure functions of the stored traces, so the result is unchanged.

Dask is imported only when a scheduler is given (``pip install 'parity[dask]'``).
"""

from __future__ import annotations

import contextlib
import os
import re
import threading
import uuid
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from .._version import __version__
from ..errors import UsageError
from ..results import StageDiff, Status
from ..trace.reader import Stage, Trace, load_trace
from ..trace.storage import is_remote
from .config import CompareConfig
from .diff import Diagnoser, Executor, compare_stage, streamable
from .floor import NoiseFloor
from .metrics import (ChunkPartial, chunk_layout, chunk_partials, kernel_available, metrics_from_partials,
                      registered_metrics, stage_rescaled_sums)

__all__ = ["DaskExecutor", "dask_executor", "parse_scheduler", "TASK_ELEMENTS", "BATCH_STAGES"]

#: Elements per task: larger streamable stages are split into ranges of about this many (whole
#: chunks), smaller stages are batched up to it.
TASK_ELEMENTS = 1 << 22
#: The most stages one batched task compares.
BATCH_STAGES = 512

_LOCAL = re.compile(r"local(?::(\d+))?")
_ADDRESS = re.compile(r"(?:(?P<scheme>[a-z][a-z0-9+.-]*)://)?(?P<host>\[[0-9a-fA-F:.]+\]|[^\s/:\[\]]+)"
                      r"(?::(?P<port>\d+))?(?P<path>/\S*)?")
#: the comm protocols of the ``distributed`` scheduler
_SCHEMES = {"tcp", "tls", "inproc", "ucx", "ws", "wss"}


def parse_scheduler(spec: str) -> tuple[str, Any]:
    """What a ``--dask`` value names: ``("local", N)`` for a local cluster of N worker processes
    (``None``: one per CPU), or ``("address", ADDRESS)`` for a running scheduler.

    Raises:
        UsageError: neither ``local``, ``local:N`` (N >= 1) nor a scheduler address.

    >>> parse_scheduler("local:2"), parse_scheduler("local"), parse_scheduler("tcp://10.0.0.5:8786")
    (('local', 2), ('local', None), ('address', 'tcp://10.0.0.5:8786'))
    >>> parse_scheduler("local:0")
    Traceback (most recent call last):
    parity.errors.UsageError: --dask local:0: a local cluster needs at least one worker (local:N, N >= 1).
    """
    if not isinstance(spec, str) or not spec.strip():
        raise UsageError(f"--dask {spec!r}: give a scheduler address (tcp://HOST:PORT) or local[:N].")
    spec = spec.strip()
    if spec == "local" or spec.startswith("local:"):
        m = _LOCAL.fullmatch(spec)
        if m is None:
            raise UsageError(f"--dask {spec}: a local cluster is local or local:N, N a number of workers.")
        if m.group(1) is not None and int(m.group(1)) < 1:
            raise UsageError(f"--dask {spec}: a local cluster needs at least one worker (local:N, N >= 1).")
        return "local", int(m.group(1)) if m.group(1) else None
    m = _ADDRESS.fullmatch(spec)
    scheme = m.group("scheme") if m else None
    if m is None or (scheme is None and m.group("port") is None) or (scheme is not None and scheme not in _SCHEMES):
        raise UsageError(f"--dask {spec}: not a Dask scheduler address; give tcp://HOST:PORT (or HOST:PORT, "
                         f"{', '.join(sorted(_SCHEMES - {'tcp'}))}://...) or local[:N].")
    return "address", spec


def _distributed() -> Any:
    try:
        import distributed
    except ImportError as e:
        raise UsageError("a distributed diff needs Dask: pip install 'parity[dask]'.") from e
    return distributed


@contextlib.contextmanager
def dask_executor(scheduler: Any, *, timeout: float | None = None, **options: Any) -> Iterator[Executor]:
    """The executor for ``scheduler``, connected for the ``with`` block.

    Args:
        scheduler: ``"local"`` / ``"local:N"`` (a local cluster of worker processes, started and
            stopped here), a scheduler address (``"tcp://host:8786"``), a ``distributed.Client``
            (used as it is, left open), or an :class:`~parity.compare.diff.Executor`.
        timeout: seconds to wait for an address to answer (default: Dask's connect timeout).
        **options: for :class:`DaskExecutor` (``task_elements``, ``batch_stages``).

    Raises:
        UsageError: a malformed scheduler, a scheduler that cannot be reached, or no Dask installed.

    >>> with dask_executor("local:0"):
    ...     pass
    Traceback (most recent call last):
    parity.errors.UsageError: --dask local:0: a local cluster needs at least one worker (local:N, N >= 1).
    """
    if hasattr(scheduler, "results"):
        yield scheduler
        return
    kind, value = ("client", scheduler) if not isinstance(scheduler, str) else parse_scheduler(scheduler)
    distributed = _distributed()
    if kind == "client":
        if not isinstance(scheduler, distributed.Client):
            raise UsageError(f"scheduler must be an address, local[:N] or a distributed.Client, not {type(scheduler).__name__}.")
        yield DaskExecutor(scheduler, **options)
    elif kind == "local":
        # loopback only; the scheduler's HTTP server on a free port (8787 may be another cluster's)
        with distributed.LocalCluster(n_workers=value or os.cpu_count() or 1, threads_per_worker=1, processes=True,
                                      host="127.0.0.1", dashboard_address="127.0.0.1:0") as cluster, \
                distributed.Client(cluster) as client:
            yield DaskExecutor(client, **options)
    else:
        try:
            client = distributed.Client(value, timeout=timeout) if timeout is not None else distributed.Client(value)
        except (OSError, TimeoutError, ValueError) as e:
            raise UsageError(f"--dask {value}: cannot reach the Dask scheduler ({e}).") from e
        with client:
            yield DaskExecutor(client, **options)


# ------------------------------------------------------------------------------------------------
# the plan


@dataclass
class _Task:
    """One unit of work: a batch of whole stages (``pairs``), or one range of a split stage."""

    pairs: list[int]  # indices into the stage pairs
    elements: int = 0
    ranges: list[tuple[int, int]] = field(default_factory=list)  # split stage only: its element ranges
    layout: tuple[str, int] | None = None  # split stage only: (backend, chunk_elements)


def _plan(pairs: Sequence[tuple[Stage, Stage]], config: CompareConfig, split: bool, task_elements: int,
          batch_stages: int) -> list[_Task]:
    """Tasks in stage order: huge streamable stages split into ranges, the others batched."""
    tasks: list[_Task] = []
    batch: _Task | None = None
    for j, (rs, cs) in enumerate(pairs):
        n = rs.size
        if split and n > task_elements and streamable(rs, cs, config):
            layout = chunk_layout(rs.dtype_info, cs.dtype_info)
            per = max(layout[1], task_elements // layout[1] * layout[1])
            tasks.append(_Task([j], n, [(s, min(s + per, n)) for s in range(0, n, per)], layout))
            batch = None
            continue
        if batch is None or batch.elements >= task_elements or len(batch.pairs) >= batch_stages:
            batch = _Task([], 0)
            tasks.append(batch)
        batch.pairs.append(j)
        batch.elements += max(n, 1)
    return tasks


# ------------------------------------------------------------------------------------------------
# worker side: module-level functions (Dask sends them by reference), plain arguments


_OPENED: OrderedDict[tuple, Trace] = OrderedDict()
_OPENED_LOCK = threading.Lock()
_OPENED_MAX = 4  # traces kept open per worker process (two comparisons' worth)


def _opened(run: str, source: tuple[str, dict[str, Any]]) -> Trace:
    """The trace at ``source`` (path or URL, storage options), opened once per comparison ``run``."""
    key = (run, source[0])
    with _OPENED_LOCK:
        trace = _OPENED.get(key)
        if trace is not None:
            _OPENED.move_to_end(key)
            return trace
    path, options = source
    trace = load_trace(path, storage_options=options or None)
    with _OPENED_LOCK:
        _OPENED[key] = trace
        while len(_OPENED) > _OPENED_MAX:
            _OPENED.popitem(last=False)
    return trace


def _batch_task(run: str, ref: tuple, cand: tuple, keys: list[tuple[str, str]], config: CompareConfig,
                floor: NoiseFloor | None) -> list[StageDiff]:
    rt, ct = _opened(run, ref), _opened(run, cand)
    return [compare_stage(rt, ct, rt.stage(rk), ct.stage(ck), config, None, floor) for rk, ck in keys]


def _range_task(run: str, ref: tuple, cand: tuple, rkey: str, ckey: str, start: int, end: int, rtol: float,
                atol: float, layout: tuple[str, int]) -> list[ChunkPartial]:
    rt, ct = _opened(run, ref), _opened(run, cand)
    rs, cs = rt.stage(rkey), ct.stage(ckey)
    # only elements [start, end) are read (a remote trace fetches just those bytes); the partials are
    # those of the same chunks of the whole stage, their chunk starts and indices moved by start
    parts = chunk_partials(rt.elements(rs, start, end), ct.elements(cs, start, end), 0, end - start,
                           ref_dtype=rs.dtype_info, cand_dtype=cs.dtype_info, rtol=rtol, atol=atol, backend=layout[0],
                           chunk_elements=layout[1])
    return [(s + start, p, {i + start: v for i, v in at.items()}) for s, p, at in parts]


def _rescale_task(run: str, ref: tuple, cand: tuple, rkey: str, ckey: str, chunk: int) -> tuple[list[float], int]:
    rt, ct = _opened(run, ref), _opened(run, cand)
    rs, cs = rt.stage(rkey), ct.stage(ckey)
    return stage_rescaled_sums(rt.array(rs), ct.array(cs), ref_dtype=rs.dtype_info, cand_dtype=cs.dtype_info,
                               chunk_elements=chunk)


def _worker_facts() -> tuple[str, bool]:
    return __version__, kernel_available()


# ------------------------------------------------------------------------------------------------
# client side


def _source(trace: Trace) -> tuple[str, dict[str, Any]]:
    """How a worker opens ``trace``: an absolute path or the URL, and the URL's storage options."""
    if not is_remote(trace.path):
        return os.path.abspath(trace.path), {}
    if trace.path.lower().startswith("memory://"):
        raise UsageError("a memory:// trace lives in this process only; Dask workers cannot read it "
                         "(write it to a path or an object store).", path=trace.path)
    remote = getattr(trace, "remote", None)
    options = getattr(getattr(remote, "fs", None), "storage_options", None) or {}
    return trace.path, dict(options)


class DaskExecutor:
    """Compare stages on a Dask ``distributed`` cluster (see the module docs for the plan).

    Args:
        client: a connected ``distributed.Client``.
        task_elements: elements per task (see :data:`TASK_ELEMENTS`).
        batch_stages: the most stages one batched task compares.

    The workers must run the same parity (version, and C kernel built or not) as the client,
    or the sums could round differently: this is checked before any work is sent.

    >>> ex = DaskExecutor(None, batch_stages=64)  # no cluster is contacted until results()
    >>> ex.task_elements == TASK_ELEMENTS, ex.batch_stages
    (True, 64)
    """

    def __init__(self, client: Any, *, task_elements: int = TASK_ELEMENTS, batch_stages: int = BATCH_STAGES):
        if not isinstance(task_elements, int) or task_elements < 1 or not isinstance(batch_stages, int) or batch_stages < 1:
            raise UsageError(f"task_elements and batch_stages must be positive integers, not {task_elements!r}, {batch_stages!r}")
        self.client = client
        self.task_elements = task_elements
        self.batch_stages = batch_stages

    def _check_workers(self) -> None:
        mine = _worker_facts()
        for address, facts in self.client.run(_worker_facts).items():
            if tuple(facts) != mine:
                raise UsageError(f"Dask worker {address} runs parity {facts[0]} (C kernel: {facts[1]}), this process "
                                 f"parity {mine[0]} (C kernel: {mine[1]}); install the same parity on every worker.")

    def results(self, ref: Trace, cand: Trace, pairs: Sequence[tuple[Stage, Stage]], config: CompareConfig,
                diagnoser: Diagnoser | None, floor: NoiseFloor | None) -> Iterator[StageDiff]:
        """Each pair's :class:`StageDiff`, in order, as :func:`~parity.compare.diff.compare_stage` gives it.

        Raises:
            UsageError: extra metrics are registered (:func:`~parity.compare.metrics.register_metric`
                runs in this process only), a trace is a ``memory://`` URL, or a worker runs another parity.
        """
        if registered_metrics():
            raise UsageError(f"extra metrics {list(registered_metrics())} are registered in this process only; "
                             "a distributed diff cannot compute them (unregister them or compare without --dask).")
        src = (_source(ref), _source(cand))
        self._check_workers()
        run = uuid.uuid4().hex
        # traces that read a range of a stage alone (a memory map, a ranged request to a URL) get
        # their huge stages split; a sharded trace joins its ranks' slices: its stages are batched
        split = getattr(ref, "range_reads", False) and getattr(cand, "range_reads", False)
        tasks = _plan(pairs, config, split, self.task_elements, self.batch_stages)
        futures = self._submit(run, src, tasks, pairs, config, floor)
        try:
            for t, fs in zip(tasks, futures):
                if t.layout is None:
                    for j, sd in zip(t.pairs, fs[0].result()):
                        yield self._judged(ref, cand, pairs[j], sd, config, diagnoser, floor)
                else:
                    yield self._split_result(run, src, ref, cand, pairs[t.pairs[0]], t, fs, config, diagnoser, floor)
                fs.clear()
        finally:
            self.client.cancel([f for fs in futures for f in fs])

    def _submit(self, run: str, src: tuple, tasks: list[_Task], pairs: Sequence[tuple[Stage, Stage]],
                config: CompareConfig, floor: NoiseFloor | None) -> list[list[Any]]:
        submit = self.client.submit
        futures: list[list[Any]] = []
        for u, t in enumerate(tasks):  # earlier stages first, so that results stream in stage order
            if t.layout is None:
                keys = [(pairs[j][0].key, pairs[j][1].key) for j in t.pairs]
                futures.append([submit(_batch_task, run, *src, keys, config, floor, key=f"parity-batch-{run}-{u}",
                                       priority=-u, pure=False)])
                continue
            rs, cs = pairs[t.pairs[0]]
            tol = config.tolerance.for_stage(rs.key, rs.dtype, cs.dtype)
            futures.append([submit(_range_task, run, *src, rs.key, cs.key, s, e, tol.rtol, tol.atol, t.layout,
                                   key=f"parity-range-{run}-{u}-{s}", priority=-u, pure=False) for s, e in t.ranges])
        return futures

    def _split_result(self, run: str, src: tuple, ref: Trace, cand: Trace, pair: tuple[Stage, Stage], t: _Task,
                      fs: list[Any], config: CompareConfig, diagnoser: Diagnoser | None,
                      floor: NoiseFloor | None) -> StageDiff:
        rs, cs = pair
        tol = config.tolerance.for_stage(rs.key, rs.dtype, cs.dtype)
        assert t.layout is not None

        def rescale() -> tuple[list[float], int]:  # a second pass over the stage, on a worker
            return self.client.submit(_rescale_task, run, *src, rs.key, cs.key, t.layout[1], pure=False).result()

        parts = (p for f in fs for p in f.result())
        m = metrics_from_partials(parts, rs.shape, ref_dtype=rs.dtype_info, cand_dtype=cs.dtype_info, rtol=tol.rtol,
                                  atol=tol.atol, rescale=rescale)
        # the verdict from the metrics; a local trace's arrays are mapped, not read, unless the diagnoser reads them
        return compare_stage(ref, cand, rs, cs, config, diagnoser, floor, metrics=m)

    @staticmethod
    def _judged(ref: Trace, cand: Trace, pair: tuple[Stage, Stage], sd: StageDiff, config: CompareConfig,
                diagnoser: Diagnoser | None, floor: NoiseFloor | None) -> StageDiff:
        """A worker's whole-stage result, with the diagnoses of a failing stage added here."""
        if diagnoser is None or sd.status != Status.FAIL:
            return sd
        return compare_stage(ref, cand, *pair, config, diagnoser, floor, metrics=sd.metrics)
