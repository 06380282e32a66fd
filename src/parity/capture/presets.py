"""Presets: where each canonical transformer stage lives in a Hugging Face architecture.

The canonical stage vocabulary (shared/DESIGN.md) means the same thing on every side of a
comparison, so a Llama captured from ``transformers`` lines up with a re-implementation, an ONNX
Runtime run or a quantized variant without hand-written aliases::

    per layer  layers.{i}.attn_norm  q_proj k_proj v_proj qkv  q_rope k_rope
               attn_scores (scaled, before the mask)  attn_probs (softmax)  attn_context
               attn_out  attn_residual  ffn_norm  ffn_gate ffn_up ffn_act ffn_mul ffn_out
               ffn_residual (= the layer's output)
    model      embedding  final_norm  logits

A :class:`Preset` is plain data: for each stage, *where* its value is found (a module's output
or input, the attention function, the rotary-embedding function), relative to a layer (or to the
model), and the names of its axes. The PyTorch capture (:mod:`parity.capture.torch`) turns it
into hooks; the ONNX capture (:mod:`parity.capture.onnx`) uses the same module paths to find the
matching values in an exported graph. An architecture without a stage (BERT has no gate, GPT-2 no
rotary embedding) simply does not list it, and asking for it is an error that lists what it has.

Post-LayerNorm models (BERT) map onto the pre-norm vocabulary this way: ``attn_residual`` is the
sum ``x + attn_out`` before the LayerNorm, ``ffn_norm`` that LayerNorm's output (the FFN's input),
and ``ffn_residual`` the layer's output (after the output LayerNorm).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from ..errors import UsageError

__all__ = [
    "CANONICAL_LAYER_STAGES",
    "CANONICAL_MODEL_STAGES",
    "StageSpec",
    "Preset",
    "PRESETS",
    "get_preset",
    "detect_preset",
    "register_preset",
]

#: Per-layer canonical stages, in the order a pre-norm layer computes them.
CANONICAL_LAYER_STAGES: tuple[str, ...] = (
    "attn_norm", "qkv", "q_proj", "k_proj", "v_proj", "q_rope", "k_rope", "attn_scores", "attn_probs",
    "attn_context", "attn_out", "attn_residual", "ffn_norm", "ffn_gate", "ffn_up", "ffn_act", "ffn_mul",
    "ffn_out", "ffn_residual",
)
#: Whole-model canonical stages.
CANONICAL_MODEL_STAGES: tuple[str, ...] = ("embedding", "final_norm", "logits")

# Axis names. Composite axes spell out what they are made of, so that a side storing
# [batch, seq, heads, head_dim] is never compared silently against one storing [batch, seq, heads*head_dim].
HIDDEN = ("batch", "seq", "hidden")
Q_FLAT = ("batch", "seq", "heads*head_dim")
KV_FLAT = ("batch", "seq", "kv_heads*head_dim")
QKV_FLAT = ("batch", "seq", "3*heads*head_dim")
Q_HEADS = ("batch", "heads", "seq", "head_dim")
K_HEADS = ("batch", "kv_heads", "seq", "head_dim")
SCORES = ("batch", "heads", "seq", "kv_seq")
FFN = ("batch", "seq", "ffn")
LOGITS = ("batch", "seq", "vocab")

#: Where a stage's value comes from (see :class:`StageSpec`).
SOURCES = ("output", "input", "split", "attention", "rope")


@dataclass(frozen=True)
class StageSpec:
    """Where one canonical stage is found.

    Attributes:
        name: the canonical stage name, e.g. ``"attn_probs"``.
        source: ``"output"`` (a module's output), ``"input"`` (a module's positional input),
            ``"split"`` (one of ``parts`` equal slices of a module's output along the last axis,
            for fused projections), ``"attention"`` (taken from the eager attention function:
            ``attn_scores`` and ``attn_probs``), or ``"rope"`` (the return value of the model's
            ``apply_rotary_pos_emb``: ``q_rope`` and ``k_rope``).
        module: module path relative to the layer (per-layer stages) or alternatives separated by
            ``|`` searched in the whole model (model stages); ``""`` is the layer itself. For
            ``attention`` and ``rope`` it is the attention module.
        axes: names of the stored value's axes.
        index: which input or output element (``input``/``output``/``rope``), or which slice (``split``).
        parts: number of slices for ``split``.

    >>> StageSpec("attn_out", "output", "self_attn.o_proj", ("batch", "seq", "hidden")).index
    0
    """

    name: str
    source: str
    module: str
    axes: tuple[str, ...]
    index: int = 0
    parts: int = 1

    def __post_init__(self) -> None:
        if self.source not in SOURCES:
            raise UsageError(f"StageSpec {self.name!r}: source must be one of {SOURCES}, not {self.source!r}.")


@dataclass(frozen=True)
class Preset:
    """How one architecture maps onto the canonical stages.

    Attributes:
        name: preset name (``"llama"``, ``"qwen2"``, ``"gpt2"``, ``"bert"``).
        model_types: ``config.model_type`` values it applies to.
        layers: path (suffix) of the ``ModuleList`` holding the layers, e.g. ``"layers"`` or
            ``"encoder.layer"``.
        layer_stages: per-layer stages, in canonical order (a trace stores them in the order
            the model computes them).
        model_stages: whole-model stages.
        notes: remarks shown in the docs (e.g. how post-norm maps onto the vocabulary).

    >>> bert = get_preset("bert")
    >>> bert.layers, bert.select("attn_*"), bert.spec("ffn_out").module
    ('encoder.layer', ('attn_scores', 'attn_probs', 'attn_context', 'attn_out', 'attn_residual'), 'output.dense')
    """

    name: str
    model_types: tuple[str, ...]
    layers: str
    layer_stages: tuple[StageSpec, ...]
    model_stages: tuple[StageSpec, ...]
    notes: str = ""
    _by_name: dict[str, StageSpec] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        by_name: dict[str, StageSpec] = {}
        for s in (*self.layer_stages, *self.model_stages):
            if s.name in by_name:
                raise UsageError(f"preset {self.name!r} lists stage {s.name!r} twice.")
            by_name[s.name] = s
        object.__setattr__(self, "_by_name", by_name)

    @property
    def stage_names(self) -> tuple[str, ...]:
        """Every stage this architecture has: model stages first, then layer stages in order."""
        return (*(s.name for s in self.model_stages), *(s.name for s in self.layer_stages))

    def spec(self, name: str) -> StageSpec:
        """The :class:`StageSpec` of ``name``.

        Raises:
            UsageError: the architecture has no such stage (the message lists the ones it has).
        """
        try:
            return self._by_name[name]
        except KeyError:
            raise UsageError(self._unknown_message(name)) from None

    def is_layer_stage(self, name: str) -> bool:
        return any(s.name == name for s in self.layer_stages)

    def _unknown_message(self, name: str) -> str:
        canon = set(CANONICAL_LAYER_STAGES) | set(CANONICAL_MODEL_STAGES)
        what = "canonical stage" if name in canon else "stage"
        return (f'the {self.name} preset has no {what} "{name}"'
                + (" (this architecture does not compute it)" if name in canon else "")
                + "; it has: " + ", ".join(self.stage_names) + ".")

    def select(self, stages: str | Iterable[str] | object | None) -> tuple[str, ...]:
        """Resolve a stage selector (names or ``*``/``?`` globs, a list of them, or a predicate).

        Returns:
            The selected stage names, in the preset's order (model stages first).

        Raises:
            UsageError: a name is not a stage of this architecture, or a glob matches none.
        """
        names = self.stage_names
        if stages is None:
            return names
        if callable(stages) and not isinstance(stages, str):
            return tuple(n for n in names if stages(n))
        patterns = [stages] if isinstance(stages, str) else list(stages)  # type: ignore[arg-type]
        chosen: set[str] = set()
        for p in patterns:
            if not isinstance(p, str):
                raise UsageError(f"a stage selector must be a name, a glob, a list of them or a predicate, not {p!r}.")
            p = p.strip()
            if any(c in p for c in "*?"):
                rx = re.compile("^" + "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in p) + "$")
                hit = [n for n in names if rx.match(n)]
                if not hit:
                    raise UsageError(f'the stage pattern "{p}" matches no stage of the {self.name} preset; it has: '
                                     + ", ".join(names) + ".")
                chosen.update(hit)
            elif p in self._by_name:
                chosen.add(p)
            else:
                raise UsageError(self._unknown_message(p))
        return tuple(n for n in names if n in chosen)


def _out(name: str, module: str, axes: tuple[str, ...], index: int = 0) -> StageSpec:
    return StageSpec(name, "output", module, axes, index)


def _in(name: str, module: str, axes: tuple[str, ...], index: int = 0) -> StageSpec:
    return StageSpec(name, "input", module, axes, index)


def _llama_like(name: str, model_types: tuple[str, ...]) -> Preset:
    """Llama and its descendants (Qwen2 adds q/k/v biases, which changes nothing here)."""
    return Preset(
        name=name,
        model_types=model_types,
        layers="layers",
        layer_stages=(
            _out("attn_norm", "input_layernorm", HIDDEN),
            _out("q_proj", "self_attn.q_proj", Q_FLAT),
            _out("k_proj", "self_attn.k_proj", KV_FLAT),
            _out("v_proj", "self_attn.v_proj", KV_FLAT),
            StageSpec("q_rope", "rope", "self_attn", Q_HEADS, 0),
            StageSpec("k_rope", "rope", "self_attn", K_HEADS, 1),
            StageSpec("attn_scores", "attention", "self_attn", SCORES),
            StageSpec("attn_probs", "attention", "self_attn", SCORES),
            _in("attn_context", "self_attn.o_proj", Q_FLAT),
            _out("attn_out", "self_attn.o_proj", HIDDEN),
            _in("attn_residual", "post_attention_layernorm", HIDDEN),
            _out("ffn_norm", "post_attention_layernorm", HIDDEN),
            _out("ffn_gate", "mlp.gate_proj", FFN),
            _out("ffn_up", "mlp.up_proj", FFN),
            _out("ffn_act", "mlp.act_fn", FFN),
            _in("ffn_mul", "mlp.down_proj", FFN),
            _out("ffn_out", "mlp.down_proj", HIDDEN),
            _out("ffn_residual", "", HIDDEN),
        ),
        model_stages=(
            _out("embedding", "embed_tokens", HIDDEN),
            _out("final_norm", "norm", HIDDEN),
            _out("logits", "lm_head", LOGITS),
        ),
    )


PRESETS: dict[str, Preset] = {}


def register_preset(preset: Preset, *, replace: bool = False) -> None:
    """Add a preset (e.g. for an architecture of your own) to the registry used by ``preset="auto"``.

    Raises:
        UsageError: a preset of that name exists and ``replace`` is false.

    >>> mine = Preset("mine", ("my_llama",), "layers", get_preset("llama").layer_stages, ())
    >>> register_preset(mine); detect_preset("my_llama").name
    'mine'
    >>> del PRESETS["mine"]
    """
    if preset.name in PRESETS and not replace:
        raise UsageError(f'a preset named "{preset.name}" exists; pass replace=True to replace it.')
    PRESETS[preset.name] = preset


register_preset(_llama_like("llama", ("llama",)))
register_preset(_llama_like("qwen2", ("qwen2",)))
register_preset(Preset(
    name="gpt2",
    model_types=("gpt2",),
    layers="h",
    layer_stages=(
        _out("attn_norm", "ln_1", HIDDEN),
        _out("qkv", "attn.c_attn", QKV_FLAT),
        # GPT-2 computes q, k and v with one fused projection; the slices line up with separate projections.
        StageSpec("q_proj", "split", "attn.c_attn", Q_FLAT, 0, 3),
        StageSpec("k_proj", "split", "attn.c_attn", KV_FLAT, 1, 3),
        StageSpec("v_proj", "split", "attn.c_attn", KV_FLAT, 2, 3),
        StageSpec("attn_scores", "attention", "attn", SCORES),
        StageSpec("attn_probs", "attention", "attn", SCORES),
        _in("attn_context", "attn.c_proj", Q_FLAT),
        _out("attn_out", "attn.c_proj", HIDDEN),
        _in("attn_residual", "ln_2", HIDDEN),
        _out("ffn_norm", "ln_2", HIDDEN),
        _out("ffn_up", "mlp.c_fc", FFN),
        _out("ffn_act", "mlp.act", FFN),
        _out("ffn_out", "mlp.c_proj", HIDDEN),
        _out("ffn_residual", "", HIDDEN),
    ),
    model_stages=(
        # wte + wpe after the embedding dropout: the hidden state entering layer 0.
        _out("embedding", "drop", HIDDEN),
        _out("final_norm", "ln_f", HIDDEN),
        _out("logits", "lm_head", LOGITS),
    ),
))
register_preset(Preset(
    name="bert",
    model_types=("bert",),
    layers="encoder.layer",
    layer_stages=(
        _out("q_proj", "attention.self.query", Q_FLAT),
        _out("k_proj", "attention.self.key", KV_FLAT),
        _out("v_proj", "attention.self.value", KV_FLAT),
        StageSpec("attn_scores", "attention", "attention.self", SCORES),
        StageSpec("attn_probs", "attention", "attention.self", SCORES),
        _in("attn_context", "attention.output.dense", Q_FLAT),
        _out("attn_out", "attention.output.dense", HIDDEN),
        _in("attn_residual", "attention.output.LayerNorm", HIDDEN),
        _out("ffn_norm", "attention.output.LayerNorm", HIDDEN),
        _out("ffn_up", "intermediate.dense", FFN),
        _out("ffn_act", "intermediate.intermediate_act_fn", FFN),
        _out("ffn_out", "output.dense", HIDDEN),
        _out("ffn_residual", "", HIDDEN),
    ),
    model_stages=(
        _out("embedding", "embeddings", HIDDEN),
        _out("logits", "cls.predictions", LOGITS),
    ),
    notes="post-LayerNorm: attn_residual is x + attn_out before the LayerNorm, ffn_norm its output, "
          "ffn_residual the layer output after the output LayerNorm; no attn_norm, no final_norm.",
))


def get_preset(name: str | Preset) -> Preset:
    """Look a preset up by name.

    Raises:
        UsageError: no preset has that name (the message lists them).

    >>> get_preset("gpt2").spec("q_proj").source
    'split'
    """
    if isinstance(name, Preset):
        return name
    try:
        return PRESETS[name]
    except KeyError:
        raise UsageError(f'no preset named "{name}"; known presets: ' + ", ".join(sorted(PRESETS)) + ".") from None


def detect_preset(model_type: str | None) -> Preset | None:
    """The preset registered for a ``config.model_type``, or ``None``.

    >>> detect_preset("qwen2").name, detect_preset("mamba")
    ('qwen2', None)
    """
    if model_type is None:
        return None
    for p in PRESETS.values():
        if model_type in p.model_types:
            return p
    return None
