"""Attention interposition for :func:`parity.torch.capture`: ``attn_scores``, ``attn_probs``, ``q_rope``, ``k_rope``.

No module returns the attention scores before the mask, the softmax, or the rotary-embedded
queries and keys, so for the duration of a capture parity replaces the model's own eager
attention function (``eager_attention_forward``) and rotary-embedding function
(``apply_rotary_pos_emb``) in the namespace of the attention module's class with wrappers
(:func:`eager_wrapper`, :func:`rope_wrapper`). Inside one eager-attention call,
:class:`AttentionOps` (a :class:`~torch.overrides.TorchFunctionMode`) watches the torch ops to
find the scores (the operand the mask is applied to) and the softmax.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.overrides import TorchFunctionMode

from ..errors import CaptureError
from .torch_hooks import Session, pick

__all__ = ["AttentionOps", "eager_wrapper", "rope_wrapper"]


def _is_view_of(a: object, base: torch.Tensor) -> bool:
    return a is base or (isinstance(a, torch.Tensor) and a._base is not None and a._base is base)


class AttentionOps(TorchFunctionMode):
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


def eager_wrapper(session: Session, original: Any) -> Any:
    """Wrap the model's ``eager_attention_forward`` to emit ``attn_scores`` and ``attn_probs``."""

    def parity_eager_attention_forward(module, query, key, value, attention_mask, *args, **kwargs):
        layer = session.attn_layers.get(module)
        if layer is None or not session.active:
            return original(module, query, key, value, attention_mask, *args, **kwargs)
        ops = AttentionOps(attention_mask)
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
            probs = pick(out, 1)
            if probs is None or probs.dim() != 4:
                probs = ops.softmax_out
            if probs is not None:
                session.emit(f"layers.{layer}.attn_probs", probs, session.attn_axes["attn_probs"],
                             {**prov, "taken": "attention weights"})
        return out
    return parity_eager_attention_forward


def rope_wrapper(session: Session, original: Any) -> Any:
    """Wrap the model's ``apply_rotary_pos_emb`` to emit ``q_rope`` and ``k_rope``."""

    def parity_apply_rotary_pos_emb(q, k, *args, **kwargs):
        out = original(q, k, *args, **kwargs)
        if session.active and session.attn_stack:
            module = session.attn_stack[-1]
            layer = session.attn_layers.get(module)
            if layer is not None:
                prov = {"module": session.attn_paths.get(module),
                        "function": f"{original.__module__}.{original.__qualname__}"}
                for idx, (name, axes) in session.rope_want.items():
                    t = pick(out, idx)
                    if t is not None:
                        session.emit(f"layers.{layer}.{name}", t, axes, {**prov, "taken": f"return[{idx}]"})
        return out
    return parity_apply_rotary_pos_emb
