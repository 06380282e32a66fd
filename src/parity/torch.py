"""``parity.torch``: capture PyTorch and Hugging Face models (needs the ``torch`` extra).

    import parity.torch
    with parity.torch.capture(model, "ref.trace", preset="auto", attn_implementation="eager"):
        model(**inputs)

See :mod:`parity.capture.torch` for the details and :mod:`parity.capture.presets` for the
canonical stages of each architecture. Importing this module imports torch; ``import parity``
does not.
"""

from __future__ import annotations

from .capture.presets import PRESETS, Preset, StageSpec, detect_preset, get_preset, register_preset
from .capture.torch import Capture, capture, parse_layers, parse_steps

__all__ = ["capture", "Capture", "parse_layers", "parse_steps", "Preset", "StageSpec",
           "PRESETS", "get_preset", "detect_preset", "register_preset"]
