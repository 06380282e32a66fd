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
from .torch_replay import SUBSTITUTED, TorchReplay, rebuilt, slots, why_not_rebuilt
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

def slot_name(prefix: str, slot: object) -> str:
    """The key of a module output's tensor at ``slot`` (see :func:`~parity.capture.torch_replay.slots`):
    ``prefix`` itself, or ``prefix.i`` / ``prefix.field`` for containers."""
    return prefix if slot is None else f"{prefix}.{INVALID_KEY_CHARS.sub('_', str(slot))}"


def joined_slices(t: torch.Tensor, slices: Mapping[int, tuple[int, torch.Tensor]]) -> torch.Tensor:
    """``t`` (a fused projection's output) with some of its equal slices along the last axis replaced."""
    parts = next(iter(slices.values()))[0]
    pieces = list(t.split(t.shape[-1] // parts, dim=-1))
    for i, (_, ref) in slices.items():
        pieces[i] = ref
    return torch.cat(pieces, dim=-1)


def pick(value: object, index: int) -> torch.Tensor | None:
    """The tensor at ``index`` of a module's output (a tensor is its own index 0), or ``None``.

    >>> t = torch.zeros(2)
    >>> pick(t, 0) is t, pick(t, 1), pick((t, None), 1), pick([t, t], 1) is t
    (True, None, None, True)
    """
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
    """The state of one capture (see the module docstring): hooks, step counter, stages to produce.

    Each call of the model is a step (:meth:`root_pre`); with a step selector, captured values
    carry the step index:

    >>> s = Session(torch.nn.Linear(3, 2), parse_steps(True))
    >>> s.root_pre(s.model, ()); s.root_pre(s.model, ())
    >>> s.indices(), s.active
    ({'step': 1}, True)
    """

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
        self.replay: TorchReplay | None = None  # set for capture(replay=...)
        self.out_stages: dict[torch.nn.Module, list[tuple[str, StageSpec, dict[str, Any]]]] = {}
        self.in_stages: dict[torch.nn.Module, list[tuple[str, StageSpec, dict[str, Any]]]] = {}

    # - emitting -
    def indices(self) -> dict[str, int] | None:
        """The key indices of a value captured now: ``{"step": N}`` when decode steps are captured."""
        return None if self.step_sel is None else {"step": self.step}

    def emit(self, base: str, t: torch.Tensor, axes: tuple[str, ...] | None, provenance: Mapping[str, Any], *,
             key: str | None = None, refused: str | None = None, already: bool = False) -> torch.Tensor | None:
        """Store ``t`` as the next value of stage ``base``.

        When replaying, also returns the reference's value for it (``None`` when ``refused`` says
        why it cannot be substituted, or when it was ``already`` handed on under the reserved ``key``).
        """
        if axes is not None and t.dim() != len(axes):
            raise CaptureError(f"expected a value with axes {list(axes)} but the model produced shape {tuple(t.shape)}; "
                               f"the preset does not fit this model (module {provenance.get('module')}).",
                               path=self.writer.path, stage=base)
        self.produced.add(base)
        indices = self.indices()
        replay = self.replay
        if replay is None:
            self.sink.put(base, t, axes, provenance, indices)
            return None
        key = key or replay.reserve(base, indices)
        status = replay.refuse(key, refused) if refused else SUBSTITUTED
        self.sink.put(base, t, axes, {**provenance, "replay": status}, indices)
        return None if refused or already else replay.value(key, t)

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

    # - hooks: one forward hook and one pre-hook per module, for all its stages -
    def hook_stage(self, mod: torch.nn.Module, base: str, spec: StageSpec, prov: dict[str, Any]) -> None:
        """Hook ``mod`` to emit stage ``base`` where ``spec`` says (its output, a slice of it, or its input).

        All the stages of one module are taken by one hook, in the order they were added, from the
        candidate's value, before a replay hands the reference's values on.
        """
        inputs = spec.source == "input"
        table = self.in_stages if inputs else self.out_stages
        if mod not in table:
            table[mod] = []
            if inputs:
                self.handles.append(mod.register_forward_pre_hook(self.input_hook, with_kwargs=True))
            else:
                self.handles.append(mod.register_forward_hook(self.output_hook))
        table[mod].append((base, spec, prov))

    def output_hook(self, module, args, output):
        if not self.active:
            return None
        whole: dict[object, torch.Tensor] = {}   # index in the output -> the reference's value
        slices: dict[int, tuple[int, torch.Tensor]] = {}  # slice index -> (parts, the reference's slice)
        refused = why_not_rebuilt(output) if self.replay is not None else None
        for base, spec, prov in self.out_stages[module]:
            t = pick(output, 0 if spec.source == "split" else spec.index)
            if t is None:
                continue
            if spec.source == "split":
                if t.shape[-1] % spec.parts:
                    continue
                t = t.split(t.shape[-1] // spec.parts, dim=-1)[spec.index]
            ref = self.emit(base, t, spec.axes, prov, refused=refused)
            if ref is not None and spec.source == "split":
                slices[spec.index] = (spec.parts, ref)
            elif ref is not None:
                whole[spec.index if isinstance(output, (tuple, list)) else None] = ref
        if slices and (0 if isinstance(output, (tuple, list)) else None) not in whole:
            whole[0 if isinstance(output, (tuple, list)) else None] = joined_slices(pick(output, 0), slices)
        return rebuilt(output, whole) if whole else None

    def input_hook(self, module, args, kwargs):
        if not self.active:
            return None
        new_args, new_kwargs = list(args), dict(kwargs)
        replaced = False
        for base, spec, prov in self.in_stages[module]:
            index = spec.index
            t, where = (args[index], index) if len(args) > index else (None, None)
            if t is None and index == 0:
                where = next((k for k, v in kwargs.items() if isinstance(v, torch.Tensor)), None)
                t = kwargs[where] if where is not None else None
            if isinstance(t, torch.Tensor):
                ref = self.emit(base, t, spec.axes, prov)
                if ref is not None:
                    if isinstance(where, int):
                        new_args[where] = ref
                    else:
                        new_kwargs[where] = ref
                    replaced = True
        return (tuple(new_args), new_kwargs) if replaced else None

    def module_hook(self, name: str, prov: dict[str, Any]):
        def hook(module, args, output):
            if not self.active:
                return None
            refused = why_not_rebuilt(output) if self.replay is not None else None
            new = {}
            for slot, t in slots(output):
                ref = self.emit(slot_name(name, slot), t, None, prov, refused=refused)
                if ref is not None:
                    new[slot] = ref
            return rebuilt(output, new) if new else None
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
    """The model's layer list: the shortest-named non-empty ``ModuleList`` named ``suffix`` (or
    ending in ``.suffix``), or with ``suffix=None`` the one of most modules; ``None`` when there is none.

    >>> model = torch.nn.ModuleDict({"blocks": torch.nn.ModuleList([torch.nn.Linear(2, 2) for _ in range(3)])})
    >>> name, layers = find_layer_list(model, None)
    >>> name, len(layers), find_layer_list(model, "layers")
    ('blocks', 3, None)
    """
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
    """Module-tree mode (no preset): hook every module selected by ``stages`` (``None``: all; glob
    patterns of module names; or a predicate ``f(name, module)``) and, inside the layer list, by
    ``layers``; each one's output is a stage named after the module.

    Raises:
        UsageError: a pattern matches no module (the message lists the model's modules).

    >>> model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    >>> s = Session(model, None)
    >>> install_modules(s, model, ["0", "2"], None)
    >>> s.stage_names, len(s.handles)
    (('0', '2'), 2)
    >>> s.remove()
    """
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


