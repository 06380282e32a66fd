"""Hugging Face specifics of :func:`parity.torch.capture`: installing a preset's canonical stages.

:func:`install_preset` turns a :class:`~parity.capture.presets.Preset` into hooks on a
``transformers`` model: it finds the layer ``ModuleList`` and the model-level modules, hooks the
module outputs and inputs the preset names, and interposes on the attention module's own
``eager_attention_forward`` / ``apply_rotary_pos_emb`` (:mod:`parity.capture.torch_attention`) for
the values no module returns. A stage the model cannot produce is an error when it was asked for
by name, and is left out (listed in ``Capture.omitted``, with the reason) otherwise. Also here:
reading and switching the model's attention implementation.
"""

from __future__ import annotations

import inspect
import sys
import warnings
from typing import Any

import torch

from ..errors import CaptureError
from .presets import Preset, StageSpec
from .torch_attention import eager_wrapper, rope_wrapper
from .torch_hooks import Session, find_layer_list, parse_layers

__all__ = ["install_preset", "attn_implementation", "set_attn_implementation", "version"]

#: The function of the model's code each interposed source replaces, by StageSpec.source.
INTERPOSED = {"attention": "eager_attention_forward", "rope": "apply_rotary_pos_emb"}


def function_globals(cls: type) -> dict[str, Any]:
    """The module namespace that ``cls.forward`` looks its helper functions up in."""
    return inspect.unwrap(cls.forward).__globals__


def version(modname: str) -> str | None:
    """The ``__version__`` of an already imported module, or ``None``.

    >>> version("numpy") == np.__version__, version("no_such_module")
    (True, None)
    """
    mod = sys.modules.get(modname)
    return getattr(mod, "__version__", None) if mod is not None else None


def find_model_module(model: torch.nn.Module, alternatives: str, exclude: str | None) -> tuple[str, torch.nn.Module] | None:
    """The shortest-named module matching one of ``a|b|c`` (tried in order), outside ``exclude``."""
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


def attn_implementation(model: torch.nn.Module) -> str | None:
    """The model's attention implementation (``"eager"``, ``"sdpa"``...), or ``None``.

    >>> import transformers
    >>> model = transformers.BertModel(transformers.BertConfig(hidden_size=8, num_hidden_layers=2, num_attention_heads=2,
    ...                                                        intermediate_size=16, vocab_size=16)).eval()
    >>> attn_implementation(model), attn_implementation(torch.nn.Linear(2, 2))
    ('sdpa', None)
    """
    cfg = getattr(model, "config", None)
    return getattr(cfg, "_attn_implementation", None) if cfg is not None else None


def set_attn_implementation(model: torch.nn.Module, impl: str) -> None:
    """Switch a ``transformers`` model to the attention implementation ``impl`` (``"eager"``...).

    >>> import transformers
    >>> model = transformers.BertModel(transformers.BertConfig(hidden_size=8, num_hidden_layers=2, num_attention_heads=2,
    ...                                                        intermediate_size=16, vocab_size=16)).eval()
    >>> set_attn_implementation(model, "eager")
    >>> attn_implementation(model)
    'eager'
    """
    setter = getattr(model, "set_attn_implementation", None)
    if callable(setter):
        setter(impl)
    else:  # older transformers: the config attribute is what the attention modules read
        model.config._attn_implementation = impl


class _Installer:
    """One :func:`install_preset` call: the model, the preset, its layers and what was chosen."""

    def __init__(self, s: Session, model: torch.nn.Module, preset: Preset, explicit: bool,
                 layer_path: str, layer_list: torch.nn.ModuleList):
        self.s, self.model, self.preset, self.explicit = s, model, preset, explicit
        self.layer_path, self.layer_list = layer_path, layer_list
        self.impl = attn_implementation(model)
        self.chosen: list[str] = []

    def unavailable(self, name: str, reason: str, warn: bool = True) -> None:
        if self.explicit:
            raise CaptureError(f"cannot be captured from {type(self.model).__name__}: {reason}", stage=name)
        self.s.omitted[name] = reason
        if warn:
            self.s.warnings.append(f"{name}: {reason}")

    def model_stage(self, name: str, spec: StageSpec) -> None:
        hit = find_model_module(self.model, spec.module, self.layer_path or None)
        if hit is None:
            self.unavailable(name, f"the model has no module {' or '.join(spec.module.split('|'))} "
                                   f"({type(self.model).__name__} may lack that head).", warn=False)
            return
        mpath, mod = hit
        prov = {"module": mpath or type(self.model).__name__, "taken": f"{spec.source}[{spec.index}]"}
        self.s.hook_stage(mod, name, spec, prov)
        self.s.expected[name] = f"module {mpath} did not run."
        self.chosen.append(name)

    def layer_modules(self, name: str, spec: StageSpec) -> list[tuple[int, str, torch.nn.Module]] | None:
        """The stage's module in every selected layer (all or nothing: nothing is half-installed)."""
        mods: list[tuple[int, str, torch.nn.Module]] = []
        rel = spec.module
        for i in self.s.layer_ids:
            mpath = f"{self.layer_path}.{i}" + (f".{rel}" if rel else "")
            try:
                mod = self.layer_list[i].get_submodule(rel) if rel else self.layer_list[i]
            except AttributeError:
                self.unavailable(name, f"layer {i} has no submodule {rel} (expected by the {self.preset.name} preset).")
                return None
            mods.append((i, mpath, mod))
        return mods

    def interposed_stage(self, name: str, spec: StageSpec, mods: list[tuple[int, str, torch.nn.Module]]) -> None:
        s, fname = self.s, INTERPOSED[spec.source]
        if spec.source == "attention" and self.impl is not None and self.impl != "eager":
            self.unavailable(name, f'the model uses attn_implementation="{self.impl}", which computes attention in one '
                                   f'fused kernel; only the eager implementation exposes {name}. Pass '
                                   'attn_implementation="eager" to capture() (or load the model with it).')
            return
        namespaces = []
        for _, _, mod in mods:
            ns = function_globals(type(mod))
            if not callable(ns.get(fname)):
                self.unavailable(name, f"{type(mod).__module__} defines no {fname}() to interpose on "
                                       f"(transformers {version('transformers') or '?'}).")
                return
            namespaces.append(ns)
        wrapper = eager_wrapper if spec.source == "attention" else rope_wrapper
        for ns in namespaces:
            s.patch(ns, fname, lambda original, ns=ns: wrapper(s, original, f"{ns.get('__name__', '?')}.{fname}"))
        for i, mpath, mod in mods:
            s.attn_layers[mod] = i
            s.attn_paths[mod] = mpath
            s.expected[f"layers.{i}.{name}"] = (f"{fname}() was not called for {mpath} (the attention code path "
                                                "bypasses it, e.g. another implementation or a kernel).")
        if spec.source == "attention":
            s.attn_want.add(name)
            s.attn_axes[name] = spec.axes
        else:
            s.rope_want[spec.index] = (name, spec.axes)
        self.chosen.append(name)

    def hooked_stage(self, name: str, spec: StageSpec, mods: list[tuple[int, str, torch.nn.Module]]) -> None:
        for i, mpath, mod in mods:
            base = f"layers.{i}.{name}"
            taken = f"{spec.source}[{spec.index}]" + (f"/{spec.parts}" if spec.source == "split" else "")
            self.s.hook_stage(mod, base, spec, {"module": mpath, "taken": taken})
            self.s.expected[base] = f"module {mpath} did not run."
        self.chosen.append(name)


def install_preset(s: Session, model: torch.nn.Module, preset: Preset, stages: object, layers: object) -> None:
    """Install the hooks and interpositions that capture ``preset``'s selected stages into ``s``.

    Raises:
        UsageError: a stage selector names no stage of the preset (from :meth:`Preset.select`).
        CaptureError: a stage asked for by name cannot be captured from this model.

    >>> from parity.capture.presets import PRESETS
    >>> from parity.capture.torch_hooks import Session
    >>> import transformers
    >>> model = transformers.BertModel(transformers.BertConfig(hidden_size=8, num_hidden_layers=2, num_attention_heads=2,
    ...                                                        intermediate_size=16, vocab_size=16)).eval()
    >>> s = Session(model, None); set_attn_implementation(model, "eager")  # attn_probs needs eager attention
    >>> install_preset(s, model, PRESETS["bert"], ["attn_probs", "ffn_residual"], "-1")
    >>> s.stage_names, list(s.expected)
    (('attn_probs', 'ffn_residual'), ['layers.1.attn_probs', 'layers.1.ffn_residual'])
    >>> s.remove()
    """
    # Names and globs are requests (a stage the model cannot produce is an error); None and a
    # predicate filter what the model can produce (the rest is listed in Capture.omitted).
    explicit = stages is not None and not callable(stages)
    names = preset.select(stages)
    found = find_layer_list(model, preset.layers)
    if found is None and any(preset.is_layer_stage(n) for n in names):
        raise CaptureError(f'the {preset.name} preset expects the layers in a ModuleList named "{preset.layers}", '
                           f"but {type(model).__name__} has none; pass preset=None to capture by module names.")
    layer_path, layer_list = found if found is not None else ("", torch.nn.ModuleList())
    s.layer_ids = parse_layers(layers, len(layer_list)) if found is not None else ()
    inst = _Installer(s, model, preset, explicit, layer_path, layer_list)
    for name in names:
        spec = preset.spec(name)
        if not preset.is_layer_stage(name):
            inst.model_stage(name, spec)
            continue
        mods = inst.layer_modules(name, spec)
        if mods is None:
            continue
        if spec.source in INTERPOSED:
            inst.interposed_stage(name, spec, mods)
        else:
            inst.hooked_stage(name, spec, mods)
    if s.rope_want:  # the attention modules tell the rotary-embedding wrapper which layer is calling it
        for mod in list(s.attn_layers):
            s.handles.append(mod.register_forward_pre_hook(s.attn_pre))
            s.handles.append(mod.register_forward_hook(s.attn_post, always_call=True))
    s.stage_names = tuple(inst.chosen)
    if s.warnings:
        warnings.warn("parity.torch.capture: left out " + "; ".join(s.warnings), stacklevel=5)
