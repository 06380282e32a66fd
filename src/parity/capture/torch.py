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


The module is split along its seams: :mod:`~parity.capture.torch_hooks` (selectors, the capture
session and its hooks, stage naming), :mod:`~parity.capture.torch_attention` (interposition on the
eager attention and rotary-embedding functions), :mod:`~parity.capture.torch_hf` (installing a
preset on a Hugging Face model) and :mod:`~parity.capture.torch_sink` (the threaded writer sink:
each value is copied at hook time into a staging buffer, checksummed in the same pass, and written
by a background thread with direct I/O; CUDA tensors are copied to pinned memory without making
the forward wait). This module holds :func:`capture` and :class:`Capture`.
"""

from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import torch

from ..errors import UsageError
from ..trace.keys import make_key, validate_key
from ..trace.writer import TraceWriter
from .presets import PRESETS, Preset, detect_preset, get_preset
from .torch_hf import attn_implementation as current_attn_implementation
from .torch_hf import install_preset, set_attn_implementation, version
from .torch_hooks import Session, install_modules, parse_layers, parse_steps
from .torch_replay import TorchReplay
from .torch_shard import ShardedSink, ShardPlan
from .torch_sink import DEFAULT_BUFFER_BYTES, DEFAULT_QUEUE_BYTES, PackedSink

__all__ = ["capture", "Capture", "parse_layers", "parse_steps"]

_PackedSink = PackedSink  # the name tests and older code import from here


class Capture:
    """What a :func:`capture` block is recording (yielded by it).

    Attributes:
        path: the trace directory (with ``shard_dims``, this rank's trace inside the sharded one).
        preset: the :class:`~parity.capture.presets.Preset` in use, or ``None`` (module tree).
        stages: canonical stage names being captured (preset mode) or the hooked module names.
        layers: layer indices being captured (``()`` when the model has no recognisable layers).
        omitted: stages of the preset left out of a default selection, with the reason.
        substituted: with ``replay=``, how many values the reference's replaced.
        not_substituted: with ``replay=``, the stage keys whose reference value could not take
            the candidate's place, with the reason (also in the trace; see
            :mod:`parity.capture.torch_replay`).
        writer: the underlying :class:`~parity.trace.writer.TraceWriter`.

    >>> import torch, parity.torch
    >>> model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Tanh())
    >>> with parity.torch.capture(model, "c.trace", stages="1") as cap, torch.no_grad():
    ...     _ = cap.add("x", torch.ones(1, 2)); _ = model(torch.ones(1, 2))
    >>> cap.stages, cap.step, parity.load_trace("c.trace").keys()
    (('1',), 0, ['x', '1'])
    """

    def __init__(self, session: Session):
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
    def substituted(self) -> int:
        """With ``replay=``: how many captured values the reference's replaced (so far)."""
        replay = self._s.replay
        return replay.substituted if replay is not None else 0

    @property
    def not_substituted(self) -> dict[str, str]:
        replay = self._s.replay
        return dict(replay.not_substituted) if replay is not None else {}

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
        if self._s.replay is not None:
            self._s.replay.reserve(name, indices or None)  # numbered in order with the replayed stages
        self._s.sink.put(name, value, axes, None, indices or None)
        return key


def _resolve_preset(model: torch.nn.Module, preset: str | Preset | None) -> Preset | None:
    if preset is None:
        return None
    if preset == "auto":
        mt = getattr(getattr(model, "config", None), "model_type", None)
        resolved = detect_preset(mt)
        if resolved is None:
            raise UsageError(f'no preset for model_type "{mt}" ({type(model).__name__}); known: '
                             + ", ".join(sorted(PRESETS)) + ". Pass preset=None to capture by module names.")
        return resolved
    return get_preset(preset)


def _training_warning(model: torch.nn.Module) -> None:
    if model.training and any(m.training and (isinstance(m, torch.nn.modules.dropout._DropoutNd) and m.p > 0
                                               or isinstance(m, torch.nn.modules.batchnorm._BatchNorm))
                              for m in model.modules()):
        warnings.warn(f"parity.torch.capture: {type(model).__name__} is in training mode, so its dropout or batch "
                      "norm makes the captured values depend on the run; call model.eval() first to compare "
                      "implementations.", stacklevel=5)  # (the user's with-statement)


def _capture_meta(session: Session, model: torch.nn.Module, meta: Mapping[str, Any] | None) -> dict[str, Any]:
    """The trace metadata of a capture: what was captured from which model, library versions."""
    resolved = session.preset
    full_meta: dict[str, Any] = {
        "capture": "parity.torch",
        "model_class": type(model).__name__,
        "preset": resolved.name if resolved else None,
        "torch": torch.__version__,
    }
    cfg = getattr(model, "config", None)
    if cfg is not None and getattr(cfg, "model_type", None):
        full_meta["model_type"] = cfg.model_type
    if version("transformers"):
        full_meta["transformers"] = version("transformers")
    impl = current_attn_implementation(model)
    if impl is not None:
        full_meta["attn_implementation"] = impl
    full_meta["training"] = bool(model.training)
    first = next(iter(model.parameters()), None)
    if first is not None:
        full_meta["dtype"] = str(first.dtype).removeprefix("torch.")
        full_meta["device"] = first.device.type
    if resolved is not None:
        full_meta["stages"] = list(session.stage_names)
        full_meta["layers"] = list(session.layer_ids)
        if session.omitted:
            full_meta["omitted_stages"] = dict(session.omitted)
    if session.replay is not None:
        full_meta["replay"] = {"reference": session.replay.reference}
    full_meta.update(dict(meta or {}))
    return full_meta


def _open(session: Session, model: torch.nn.Module, path: str | os.PathLike[str], stages: object, layers: object,
          meta: Mapping[str, Any] | None, writer_options: dict[str, Any], sink_options: dict[str, Any],
          shard: ShardPlan | None = None) -> None:
    """Install the hooks, then open the trace writer and the sink (hooks first: a selector or preset
    error then leaves nothing on disk). On failure, everything installed is removed again. With
    ``shard``, the writer writes this rank's trace of a sharded one and the sink records placements."""
    try:
        session.handles.append(model.register_forward_pre_hook(session.root_pre, with_kwargs=True))
        session.handles.append(model.register_forward_hook(session.root_post))
        if session.preset is not None:
            install_preset(session, model, session.preset, stages, layers)
        else:
            install_modules(session, model, stages, layers)
        _training_warning(model)
        full_meta = _capture_meta(session, model, meta)
        if shard is not None:
            path, full_meta = shard.prepare(path), {**full_meta, **shard.meta()}
        session.writer = TraceWriter(path, meta=full_meta, **writer_options)
        session.sink = PackedSink(session.writer, **sink_options)
        if shard is not None:
            session.sink = ShardedSink(session.sink, shard)  # type: ignore[assignment]
    except BaseException:
        session.remove()
        if session.writer is not None:
            session.writer.close(complete=False, reason="capture set-up failed")
        raise


def _close(session: Session, error: BaseException | None) -> None:
    """Remove the hooks, flush the sink and close the trace: complete, unless the block raised
    (``error``) or the writer failed."""
    session.remove()
    writer = session.writer
    replay = session.replay
    if replay is not None:
        replay.missing(session.omitted, session.layer_ids)
        writer.update_meta(replay=replay.meta())
        if replay.not_substituted:
            listed = [f"{k} ({why})" for k, why in list(replay.not_substituted.items())[:4]]
            more = len(replay.not_substituted) - len(listed)
            warnings.warn("parity.torch.capture: replayed, but not substituted: " + "; ".join(listed)
                          + (f"; and {more} more (see Capture.not_substituted)" if more else ""), stacklevel=4)
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


@contextmanager
def _attention_switched(model: torch.nn.Module, impl: str | None) -> Iterator[None]:
    """Switch the model's attention implementation to ``impl`` (if given) for the block."""
    original = current_attn_implementation(model)
    switched = impl is not None and impl != original
    if switched:
        set_attn_implementation(model, impl)  # type: ignore[arg-type]
    try:
        yield
    finally:
        if switched:
            set_attn_implementation(model, original)  # type: ignore[arg-type]


def _replay_or_shards(session: Session, replay: str | os.PathLike[str] | None,
                      shard_dims: Mapping[str, int] | None) -> ShardPlan | None:
    """Set up ``replay=`` (teacher forcing) or ``shard_dims=`` (a sharded capture; its plan), not both."""
    if shard_dims is not None and replay is not None:
        raise UsageError("replay= and shard_dims= cannot be combined: a rank's values are slices of the reference's.")
    session.replay = TorchReplay(replay) if replay is not None else None
    return ShardPlan.from_distributed(shard_dims) if shard_dims is not None else None


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
    queue_bytes: int = DEFAULT_QUEUE_BYTES, buffer_bytes: int = DEFAULT_BUFFER_BYTES,
    producer: str = "parity.torch.capture", command: Sequence[str] | None = None,
    replay: str | os.PathLike[str] | None = None, shard_dims: Mapping[str, int] | None = None,
) -> Iterator[Capture]:
    """Record a PyTorch model's intermediate values into the trace directory ``path``.

    Forward hooks (and interpositions on the model's own attention and rotary-embedding functions)
    are installed on entry and always removed on exit (a block that raises leaves an incomplete trace).

    Args:
        model: the model. Each call of it is one step (``generate()`` calls it once per token).
        path: the ``NAME.trace`` directory to write.
        stages: with a preset, canonical names or ``*`` globs (``"attn_*"``) or a list of them (a
            request: what the model cannot produce is an error), or a predicate on the name (takes
            what the model can produce, as ``None`` does; the rest is in :attr:`Capture.omitted`).
            Without: globs on module names or a predicate ``(name, module)``; ``None`` hooks every
            module; keys are the module names (``name.0``, ``name.field`` inside tuples, dicts).
        layers: which layers (see :func:`parse_layers`); model-level stages are always captured.
        steps: decode steps (see :func:`parse_steps`); with it, keys carry ``[step=N]``.
        preset: ``None`` (module tree), ``"auto"`` (from ``model.config.model_type``), a preset
            name (``"llama"``, ``"qwen2"``, ``"gpt2"``, ``"bert"``) or a
            :class:`~parity.capture.presets.Preset`.
        attn_implementation: switch the model's attention implementation for the capture (e.g.
            ``"eager"``, needed for ``attn_scores``/``attn_probs``); restored on exit.
        meta: extra JSON-serialisable trace metadata.
        background: write data files on a background thread (``True``, the default) or in the
            forward call that fills a staging buffer (``False``); see :mod:`parity.capture.torch_sink`.
        queue_bytes: bound on the bytes of staging buffers not yet written (the forward waits
            when it is reached).
        buffer_bytes: size of one staging buffer, and so of each data file.
        producer, command: recorded in the manifest.
        replay: a reference trace of the same stages: teacher forcing. Each captured stage is
            recorded, then the reference's value takes its place in the forward, so each stage's
            error is its own (:mod:`parity.capture.torch_replay`; ``parity localize``).
        shard_dims: under ``torch.distributed``, one trace per rank, read as one: stage globs → the
            dim this rank's value is a slice along; others replicated (:mod:`~parity.capture.torch_shard`).

    Yields:
        A :class:`Capture` describing what is recorded.

    Raises:
        UsageError: bad selectors, a stage the architecture does not have (the message lists the
            ones it has); with ``replay``, a stage the reference lacks or has in another shape.
        CaptureError: a requested stage cannot be captured from this model, or the model did not
            produce it during a forward pass (raised from that forward call).

    Example:
        >>> import torch, parity.torch
        >>> model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
        >>> with parity.torch.capture(model, "net.trace", stages="*"), torch.no_grad():
        ...     _ = model(torch.ones(1, 3))
        >>> parity.load_trace("net.trace").keys()
        ['0', '1', '2']
    """
    if not isinstance(model, torch.nn.Module):
        raise UsageError(f"capture() needs a torch.nn.Module, not {type(model).__name__}.")
    session = Session(model, parse_steps(steps))
    session.preset = _resolve_preset(model, preset)
    plan = _replay_or_shards(session, replay, shard_dims)
    with _attention_switched(model, attn_implementation):
        _open(session, model, path, stages, layers, meta,
              {"producer": producer, "buffer_bytes": buffer_bytes, "command": list(sys.argv) if command is None else command},
              {"background": bool(background), "arena_bytes": buffer_bytes, "queue_bytes": queue_bytes}, plan)
        try:
            yield Capture(session)
        except BaseException as e:
            _close(session, e)
            raise
        _close(session, None)
