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

from collections.abc import Callable
from typing import Any

import torch
from torch.overrides import TorchFunctionMode

from ..errors import CaptureError
from .torch_hooks import Session, pick
from .torch_replay import rebuilt

__all__ = ["AttentionOps", "eager_wrapper", "rope_wrapper"]


def _is_view_of(a: object, base: torch.Tensor) -> bool:
    return a is base or (isinstance(a, torch.Tensor) and a._base is not None and a._base is base)


class AttentionOps(TorchFunctionMode):
    """Watch the ops of one eager-attention call: find the scores before the mask and the softmax.

    The scores are the other operand of the first op that uses the attention mask (``+ mask``,
    ``where(mask, ...)``); without a mask tensor, the operand of an internal ``where``/``masked_fill``,
    else the softmax's input.

    When replaying, ``on_scores(scores)`` and ``on_probs(probs)`` return the reference's values,
    which the call then goes on with: the scores go into the masking op (or the softmax) in place
    of the candidate's, and the softmax returns the reference's probabilities.

    >>> scores, mask = torch.randn(1, 1, 2, 2), torch.zeros(1, 1, 2, 2)
    >>> with AttentionOps(mask) as ops:
    ...     probs = torch.softmax(scores + mask, dim=-1)
    >>> ops.scores() is scores, ops.softmax_out is probs
    (True, True)
    """

    def __init__(self, mask: object, on_scores: Callable[[torch.Tensor], torch.Tensor] | None = None,
                 on_probs: Callable[[torch.Tensor], torch.Tensor] | None = None):
        super().__init__()
        self.mask = mask if isinstance(mask, torch.Tensor) else None
        self.on_scores, self.on_probs = on_scores, on_probs
        self.masked: torch.Tensor | None = None
        self.mask_used = False
        self.softmax_in: torch.Tensor | None = None
        self.softmax_out: torch.Tensor | None = None
        self.done = False  # softmax seen: nothing more to find, the remaining ops only pass through

    def _scores_operand(self, name: str, args: tuple) -> torch.Tensor | None:
        if self.masked is not None:
            return None
        mask = self.mask
        if mask is not None:
            if any(_is_view_of(a, mask) for a in args):
                self.mask_used = True
                return next((a for a in args if isinstance(a, torch.Tensor) and not _is_view_of(a, mask)
                             and a.is_floating_point() and a.dim() >= 2), None)
        elif name in ("where", "masked_fill", "masked_fill_"):
            return next((a for a in args if isinstance(a, torch.Tensor) and a.is_floating_point() and a.dim() >= 2),
                        None)
        return None

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if kwargs is None:
            kwargs = {}
        if self.done:
            return func(*args, **kwargs)
        name = getattr(func, "__name__", "")
        if name == "__get__":  # attribute reads (.shape, .dtype...): neither the mask nor the softmax
            return func(*args, **kwargs)
        target = self._scores_operand(name, args)  # (the softmax is not seen yet: self.done would have returned)
        operand = target
        if target is not None:
            in_place = (name.endswith("_") and not name.startswith("__")) or name.startswith("__i")
            if in_place:
                operand = target.clone()  # the op is about to overwrite it (in place) with the masked scores
            if self.on_scores is not None:
                ref = self.on_scores(operand)
                if in_place:
                    target.copy_(ref)
                else:
                    args = tuple(ref if a is target else a for a in args)
        is_softmax = name in ("softmax", "_softmax") and args and isinstance(args[0], torch.Tensor)
        softmax_in = args[0] if is_softmax else None
        if is_softmax and self.masked is None and self.mask is None and self.on_scores is not None:
            args = (self.on_scores(softmax_in), *args[1:])  # the scores are the softmax's input
        out = func(*args, **kwargs)
        if operand is not None:
            self.masked = operand
        if is_softmax:
            self.softmax_in, self.softmax_out = softmax_in, out
            self.done = True
            if self.on_probs is not None:
                return self.on_probs(out)
        return out

    def scores(self) -> torch.Tensor | None:
        if self.masked is not None:
            return self.masked
        if self.mask is not None:
            return None  # a mask was given but we did not see where it was applied: refuse to guess
        return self.softmax_in


def eager_wrapper(session: Session, original: Any, name: str | None = None) -> Any:
    """Wrap the model's ``eager_attention_forward`` to emit ``attn_scores`` and ``attn_probs``
    (and, when replaying, to go on with the reference's).

    >>> import transformers, parity.torch
    >>> model = transformers.BertModel(transformers.BertConfig(hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
    ...                                intermediate_size=16, vocab_size=16, attn_implementation="eager")).eval()
    >>> with parity.torch.capture(model, "bert.trace", preset="bert", stages=["attn_probs"]), torch.no_grad():
    ...     _ = model(torch.tensor([[1, 2, 3]]))
    >>> parity.load_trace("bert.trace").stage("layers.0.attn_probs").provenance["function"]
    'transformers.models.bert.modeling_bert.eager_attention_forward'
    """
    function = name or _qualified(original)  # where it was patched: module.attribute

    def parity_eager_attention_forward(module, query, key, value, attention_mask, *args, **kwargs):
        layer = session.attn_layers.get(module)
        if layer is None or not session.active:
            return original(module, query, key, value, attention_mask, *args, **kwargs)
        prov = {"module": session.attn_paths.get(module), "function": function}
        bases = {name: f"layers.{layer}.{name}" for name in ("attn_scores", "attn_probs") if name in session.attn_want}
        forcing = _Forcing(session, bases) if session.replay is not None else None
        ops = AttentionOps(attention_mask, *(forcing.callbacks() if forcing else (None, None)))
        with ops:
            out = original(module, query, key, value, attention_mask, *args, **kwargs)
        if "attn_scores" in bases:
            scores = ops.scores()
            if scores is None:
                raise CaptureError("the attention mask was passed to the eager attention function but parity could "
                                   "not see where it was applied, so the scores before the mask are unknown.",
                                   path=session.writer.path, stage=bases["attn_scores"])
            session.emit(bases["attn_scores"], scores, session.attn_axes["attn_scores"],
                         {**prov, "taken": "pre-mask scores"}, **(forcing.emitted("attn_scores") if forcing else {}))
        if "attn_probs" in bases:
            probs = pick(out, 1)
            if probs is None or probs.dim() != 4:
                probs = ops.softmax_out
            elif forcing is not None and ops.softmax_out is not None:
                probs = ops.softmax_out.to(probs.dtype)  # the candidate's own (the returned ones are the reference's)
            if probs is not None:
                session.emit(bases["attn_probs"], probs, session.attn_axes["attn_probs"],
                             {**prov, "taken": "attention weights"}, **(forcing.emitted("attn_probs") if forcing else {}))
        return out
    return parity_eager_attention_forward


class _Forcing:
    """Replay inside one eager-attention call: the keys reserved when the reference's scores and
    probabilities were handed on, so that the stages are stored under the same keys afterwards."""

    def __init__(self, session: Session, bases: dict[str, str]):
        self.session, self.bases = session, bases
        self.keys: dict[str, str] = {}

    def _substitute(self, name: str, t: torch.Tensor) -> torch.Tensor:
        replay = self.session.replay
        assert replay is not None
        key = self.keys[name] = replay.reserve(self.bases[name], self.session.indices())
        return replay.value(key, t)

    def callbacks(self) -> tuple[Callable | None, Callable | None]:
        return tuple((lambda t, n=name: self._substitute(n, t)) if name in self.bases else None  # type: ignore[return-value]
                     for name in ("attn_scores", "attn_probs"))

    def emitted(self, name: str) -> dict[str, Any]:
        """The ``emit()`` options of stage ``name``: its reserved key, or why it was not substituted."""
        if name in self.keys:
            return {"key": self.keys[name], "already": True}
        return {"refused": "the eager attention function computed it without a torch softmax call parity could see, "
                           "so the reference's value could not be handed on"}


def _qualified(fn) -> str:
    """``module.name`` of a wrapped function, or of a callable object (transformers >= 5.25
    makes some of these ``nn.Module`` instances, which have no ``__qualname__``)."""
    name = getattr(fn, "__qualname__", None) or type(fn).__qualname__
    return f"{getattr(fn, '__module__', None) or type(fn).__module__}.{name}"


def rope_wrapper(session: Session, original: Any, name: str | None = None) -> Any:
    """Wrap the model's ``apply_rotary_pos_emb`` to emit ``q_rope`` and ``k_rope`` (and, when
    replaying, to return the reference's).

    >>> import transformers, parity.torch
    >>> model = transformers.LlamaForCausalLM(transformers.LlamaConfig(vocab_size=16, hidden_size=8, intermediate_size=16,
    ...                                       num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1)).eval()
    >>> with parity.torch.capture(model, "llama.trace", preset="llama", stages=["k_rope"]), torch.no_grad():
    ...     _ = model(torch.tensor([[1, 2, 3]]))
    >>> k = parity.load_trace("llama.trace").stage("layers.0.k_rope"); k.axes, k.shape, k.provenance["taken"]
    (('batch', 'kv_heads', 'seq', 'head_dim'), (1, 1, 3, 4), 'return[1]')
    """
    function = name or _qualified(original)  # where it was patched: module.attribute

    def parity_apply_rotary_pos_emb(q, k, *args, **kwargs):
        out = original(q, k, *args, **kwargs)
        if not (session.active and session.attn_stack):
            return out
        module = session.attn_stack[-1]
        layer = session.attn_layers.get(module)
        if layer is None:
            return out
        prov = {"module": session.attn_paths.get(module), "function": function}
        new = {}
        for idx, (name, axes) in session.rope_want.items():
            t = pick(out, idx)
            if t is not None:
                ref = session.emit(f"layers.{layer}.{name}", t, axes, {**prov, "taken": f"return[{idx}]"})
                if ref is not None:
                    new[idx if isinstance(out, (tuple, list)) else None] = ref
        return rebuilt(out, new) if new else out
    return parity_apply_rotary_pos_emb
