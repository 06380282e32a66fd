"""Hooks and stage naming for :func:`parity.torch.capture`: selectors, the capture session, module-tree mode.

:class:`Session` holds the state of one capture: the forward hooks it installed, the step counter
(one step per call of the model), which stages each forward must produce, and :meth:`Session.emit`,
which hands each captured tensor to the writer sink under its stage key. Without a preset
(:func:`install_modules`) every selected module's output is a stage named after the module;
with a preset, :mod:`parity.capture.torch_hf` resolves the canonical stages.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import torch

from ..errors import CaptureError, UsageError
from ..trace.writer import TraceWriter
from .presets import Preset, StageSpec
from .torch_sink import PackedSink

__all__ = ["parse_layers", "parse_steps", "Session", "install_modules", "find_layer_list", "pick"]

INVALID_KEY_CHARS = re.compile(r"[^A-Za-z0-9_+\-:@.]")

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

    >>> parse_steps(None) is None, parse_steps(3)(2), parse_steps(3)(3), parse_steps([0, 5])(5)
    (True, True, False, True)
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


def glob_regex(pattern: str) -> re.Pattern[str]:
    return re.compile("^" + "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern) + "$")


# -- stage naming ---------------------------------------------------------------------------------

def tensor_items(out: object, prefix: str) -> Iterator[tuple[str, torch.Tensor]]:
    """Tensors of a module output: the tensor itself, or ``prefix.i`` / ``prefix.field`` for containers."""
    if isinstance(out, torch.Tensor):
        yield prefix, out
    elif isinstance(out, Mapping):
        for k, v in out.items():
            if isinstance(v, torch.Tensor):
                yield f"{prefix}.{INVALID_KEY_CHARS.sub('_', str(k))}", v
    elif isinstance(out, (tuple, list)):
        for i, v in enumerate(out):
            if isinstance(v, torch.Tensor):
                yield f"{prefix}.{i}", v


def pick(value: object, index: int) -> torch.Tensor | None:
    if isinstance(value, torch.Tensor):
        return value if index == 0 else None
    if isinstance(value, (tuple, list)) and len(value) > index and isinstance(value[index], torch.Tensor):
        return value[index]
    return None


def safe_name(name: str) -> str:
    safe = ".".join(seg if seg and seg[0].isalnum() or seg.startswith("_") else "_" + seg
                    for seg in INVALID_KEY_CHARS.sub("_", name).split(".") if seg)
    return safe or "model"


# -- the capture session --------------------------------------------------------------------------

class Session:
    def __init__(self, model: torch.nn.Module, step_sel: Callable[[int], bool] | None):
        self.model = model
        self.writer: TraceWriter = None  # type: ignore[assignment]  # set once the hooks are installed
        self.sink: PackedSink = None  # type: ignore[assignment]
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
                t = pick(output, index)
                if t is not None:
                    self.emit(base, t, axes, prov)
        return hook

    def split_hook(self, base: str, spec: StageSpec, prov: dict[str, Any]):
        index, parts, axes = spec.index, spec.parts, spec.axes

        def hook(module, args, output):
            if self.active:
                t = pick(output, 0)
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

    def hook_stage(self, mod: torch.nn.Module, base: str, spec: StageSpec, prov: dict[str, Any]) -> None:
        """Hook ``mod`` to emit stage ``base`` where ``spec`` says (its output, a slice of it, or its input)."""
        if spec.source == "split":
            self.handles.append(mod.register_forward_hook(self.split_hook(base, spec, prov)))
        elif spec.source == "input":
            self.handles.append(mod.register_forward_pre_hook(self.input_hook(base, spec, prov), with_kwargs=True))
        else:
            self.handles.append(mod.register_forward_hook(self.output_hook(base, spec, prov)))

    def module_hook(self, name: str, prov: dict[str, Any]):
        def hook(module, args, output):
            if self.active:
                for key, t in tensor_items(output, name):
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

    # the attention modules tell the rotary-embedding wrapper which layer is calling it
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


def find_layer_list(model: torch.nn.Module, suffix: str | None) -> tuple[str, torch.nn.ModuleList] | None:
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



def install_modules(s: Session, model: torch.nn.Module, stages: object, layers: object) -> None:
    found = find_layer_list(model, None)
    layer_path, layer_list = found if found is not None else (None, None)
    s.layer_ids = parse_layers(layers, len(layer_list)) if layer_list is not None else ()
    if stages is None:
        select: Callable[[str, torch.nn.Module], bool] = lambda n, m: True
    elif callable(stages) and not isinstance(stages, str):
        select = stages  # type: ignore[assignment]
    else:
        patterns = [stages] if isinstance(stages, str) else list(stages)  # type: ignore[arg-type]
        regexes = [(p, glob_regex(p)) for p in patterns]
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
        key = safe_name(name)
        s.handles.append(mod.register_forward_hook(s.module_hook(key, {"module": name})))
        chosen.append(key)
    s.stage_names = tuple(chosen)


