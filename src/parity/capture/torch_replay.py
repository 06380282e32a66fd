"""Teacher forcing for :func:`parity.torch.capture`: ``capture(model, path, replay="ref.trace")``.

Every captured stage is recorded with the candidate's own value, and then the reference's value
for the same key (cast to the candidate's dtype and device, by
:class:`parity.capture.record.ReplaySource`) takes its place in the forward pass: a forward hook
returns it in place of the module's output, a forward pre-hook in place of the module's input,
the interposed attention function hands it on in place of the scores before the mask or the
softmax (``attn_scores``, ``attn_probs``), and the rotary-embedding wrapper returns it in place
of ``q_rope`` / ``k_rope``. Each later stage then starts from the reference's inputs, so the error
recorded for it is its own (local), not accumulated from earlier stages.

Where a value cannot be put back, the stage is recorded with the reason, never silently:

* per stage, the provenance field ``replay`` is ``"substituted"`` or ``"not substituted: <reason>"``;
* the trace metadata ``replay`` holds ``{"reference": PATH, "substituted": N, "not_substituted":
  {KEY: REASON}}``, which also lists the reference's stages this capture did not produce at all
  (e.g. ``attn_scores`` inside a fused SDPA kernel: the next captured stage, ``attn_context``,
  then carries the error of the whole fused computation).

A key the reference lacks, or a shape that differs, raises :class:`~parity.errors.UsageError`
naming the stage, from the forward call.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from typing import Any

import torch

from ..trace.keys import make_key, split_key
from .record import ReplaySource

__all__ = ["TorchReplay", "SUBSTITUTED", "NOT_SUBSTITUTED"]

#: The ``replay`` provenance value of a stage whose reference value replaced the candidate's.
SUBSTITUTED = "substituted"
#: The prefix of the ``replay`` provenance value of a stage that could not be replaced.
NOT_SUBSTITUTED = "not substituted: "


def slots(out: object) -> list[tuple[object, torch.Tensor]]:
    """The tensors of a module output with their place in it: ``None`` for the output itself, the
    index in a tuple or list, the key in a mapping."""
    if isinstance(out, torch.Tensor):
        return [(None, out)]
    if isinstance(out, Mapping):
        return [(k, v) for k, v in out.items() if isinstance(v, torch.Tensor)]
    if isinstance(out, (tuple, list)):
        return [(i, v) for i, v in enumerate(out) if isinstance(v, torch.Tensor)]
    return []


def why_not_rebuilt(out: object) -> str | None:
    """Why parity cannot hand on a copy of ``out`` with some tensors replaced, or ``None`` if it can."""
    if isinstance(out, (torch.Tensor, list)) or type(out) in (tuple, dict):
        return None
    if isinstance(out, tuple) and hasattr(out, "_fields"):
        return None  # a namedtuple
    if isinstance(out, Mapping) and dataclasses.is_dataclass(out):
        return None  # e.g. a transformers ModelOutput
    return f"the module returns a {type(out).__name__}, which parity cannot rebuild with the reference's values"


def rebuilt(out: object, new: Mapping[object, torch.Tensor]) -> Any:
    """A copy of ``out`` with the tensors at the places in ``new`` replaced (see :func:`slots`)."""
    if not new:
        return out
    if isinstance(out, torch.Tensor):
        return new[None]
    if isinstance(out, Mapping):
        items = {k: new.get(k, v) for k, v in out.items()}
        return items if type(out) is dict else type(out)(**items)
    items = [new.get(i, v) for i, v in enumerate(out)]  # type: ignore[arg-type]
    if isinstance(out, list):
        return items
    return type(out)(*items) if hasattr(out, "_fields") else tuple(items)


class TorchReplay:
    """The reference of one replayed capture: key numbering, substitution and the record of it.

    >>> import torch
    >>> r = TorchReplay("ref.trace")
    >>> r.reserve("embedding", None), r.reserve("embedding", None), r.reserve("logits", {"step": 2})
    ('embedding', 'embedding#1', 'logits[step=2]')
    >>> r.value("embedding", torch.zeros(8, 32, dtype=torch.bfloat16)).dtype, r.substituted
    (torch.bfloat16, 1)
    >>> r.refuse("layers.0.attn_scores", "inside a fused kernel"), r.meta()["not_substituted"]
    ('not substituted: inside a fused kernel', {'layers.0.attn_scores': 'inside a fused kernel'})
    """

    def __init__(self, reference: str | os.PathLike[str]):
        self.source = ReplaySource(reference)
        self.reference = os.fspath(reference)
        self.counts: dict[str, int] = {}
        self.not_substituted: dict[str, str] = {}

    @property
    def substituted(self) -> int:
        """How many values the reference's replaced."""
        return self.source.substituted

    def reserve(self, base: str, indices: Mapping[str, object] | None) -> str:
        """The key the next value of ``base`` is stored under (numbered as the trace writer does)."""
        key = make_key(base, indices)
        n = self.counts.get(key, 0)
        self.counts[key] = n + 1
        return f"{key}#{n}" if n else key

    def value(self, key: str, candidate: torch.Tensor) -> torch.Tensor:
        """The reference's value of ``key``, cast to ``candidate``'s dtype and device."""
        return self.source.substitute(key, candidate)

    def refuse(self, key: str, reason: str) -> str:
        """Record that ``key`` was not substituted; returns its ``replay`` provenance value."""
        self.not_substituted[key] = reason
        return NOT_SUBSTITUTED + reason

    def missing(self, omitted: Mapping[str, str], layer_ids: tuple[int, ...]) -> None:
        """Record the reference's stages of the selected layers that this capture left out
        (``omitted``: stage name → reason), as not substituted."""
        for key in self.source.trace.keys():
            name = split_key(key)[0]
            parts = name.split(".", 2)
            if len(parts) == 3 and parts[0] == "layers" and parts[1].isdigit():
                if int(parts[1]) not in layer_ids:
                    continue
                name = parts[2]
            if name in omitted and key not in self.not_substituted:
                self.not_substituted[key] = f"this capture left it out: {omitted[name]}"

    def meta(self) -> dict[str, Any]:
        return {"reference": self.reference, "substituted": self.substituted,
                "not_substituted": dict(self.not_substituted)}
