"""Presets (pure data, no torch needed) and the layer / step selectors."""

import pytest

from parity.capture.presets import (CANONICAL_LAYER_STAGES, CANONICAL_MODEL_STAGES, PRESETS, Preset, StageSpec,
                                    detect_preset, get_preset, register_preset)
from parity.errors import UsageError


def test_builtin_presets_cover_the_required_architectures():
    assert {"llama", "qwen2", "gpt2", "bert"} <= set(PRESETS)
    assert detect_preset("qwen2").name == "qwen2"
    assert detect_preset("bert").name == "bert"
    assert detect_preset("t5") is None
    assert detect_preset(None) is None


@pytest.mark.parametrize("name", ["llama", "qwen2", "gpt2", "bert"])
def test_presets_use_only_canonical_names_in_canonical_order(name):
    p = get_preset(name)
    layer = [s.name for s in p.layer_stages]
    assert set(layer) <= set(CANONICAL_LAYER_STAGES)
    assert {s.name for s in p.model_stages} <= set(CANONICAL_MODEL_STAGES)
    assert layer == sorted(layer, key=CANONICAL_LAYER_STAGES.index)
    assert layer[-1] == "ffn_residual"
    for s in (*p.layer_stages, *p.model_stages):
        assert s.axes[0] == "batch" and len(set(s.axes)) == len(s.axes), s  # named, distinct axes


def test_architectures_without_a_stage_omit_it():
    assert "q_rope" in get_preset("llama").stage_names
    assert "ffn_gate" in get_preset("qwen2").stage_names
    for name in ("gpt2", "bert"):
        assert "q_rope" not in get_preset(name).stage_names and "k_rope" not in get_preset(name).stage_names
        assert "ffn_gate" not in get_preset(name).stage_names
    assert "attn_norm" not in get_preset("bert").stage_names  # post-LayerNorm
    assert "qkv" in get_preset("gpt2").stage_names           # fused projection


def test_select_names_globs_lists_and_predicates():
    p = get_preset("llama")
    assert p.select(None) == p.stage_names
    assert p.select("attn_probs") == ("attn_probs",)
    assert p.select("ffn_*") == ("ffn_norm", "ffn_gate", "ffn_up", "ffn_act", "ffn_mul", "ffn_out", "ffn_residual")
    assert p.select(["logits", "q_rope", "embedding"]) == ("embedding", "logits", "q_rope")  # preset order
    assert p.select(lambda n: n.endswith("_rope")) == ("q_rope", "k_rope")


def test_requesting_a_stage_the_architecture_lacks_lists_what_it_has():
    with pytest.raises(UsageError) as e:
        get_preset("bert").select(["q_proj", "q_rope"])
    msg = str(e.value)
    assert 'the bert preset has no canonical stage "q_rope" (this architecture does not compute it)' in msg
    assert "it has: embedding, logits, q_proj, k_proj, v_proj, attn_scores, attn_probs" in msg


def test_unknown_names_and_empty_globs_are_errors():
    with pytest.raises(UsageError, match='the gpt2 preset has no stage "atn_probs"; it has: embedding'):
        get_preset("gpt2").select("atn_probs")
    with pytest.raises(UsageError, match='the stage pattern "rope_\\*" matches no stage of the llama preset'):
        get_preset("llama").select("rope_*")
    with pytest.raises(UsageError, match="a stage selector must be"):
        get_preset("llama").select([3])
    with pytest.raises(UsageError, match='no preset named "mamba"; known presets: bert, gpt2, llama, qwen2'):
        get_preset("mamba")


def test_register_preset_refuses_silent_replacement():
    p = Preset("unit-test-arch", ("unit_test_arch",), "blocks",
               (StageSpec("ffn_residual", "output", "", ("batch", "seq", "hidden")),), ())
    register_preset(p)
    try:
        assert detect_preset("unit_test_arch") is p
        with pytest.raises(UsageError, match="pass replace=True"):
            register_preset(p)
        register_preset(p, replace=True)
    finally:
        del PRESETS["unit-test-arch"]
    with pytest.raises(UsageError, match="source must be one of"):
        StageSpec("x", "outptu", "", ("batch",))
    with pytest.raises(UsageError, match="lists stage 'x' twice"):
        Preset("dup", (), "l", (StageSpec("x", "output", "", ("b",)), StageSpec("x", "input", "", ("b",))), ())


class TestSelectors:
    torch_mod = pytest.importorskip("parity.capture.torch", reason="needs torch")

    def test_parse_layers(self):
        parse = self.torch_mod.parse_layers
        assert parse(None, 4) == (0, 1, 2, 3)
        assert parse(-1, 4) == (3,)
        assert parse([2, 0, 2], 4) == (0, 2)
        assert parse(range(1, 3), 4) == (1, 2)
        assert parse(slice(None, None, 2), 5) == (0, 2, 4)
        assert parse(lambda i: i % 2, 5) == (1, 3)
        assert parse("0, 2-3,-1", 6) == (0, 2, 3, 5)
        assert parse("-2--1", 6) == (4, 5)
        with pytest.raises(UsageError, match=r"layer index 6 is out of range: the model has 6 layers \(0..5\)"):
            parse(6, 6)
        with pytest.raises(UsageError, match='"x" is not an index or a range'):
            parse("1,x", 6)
        with pytest.raises(UsageError, match="is empty"):
            parse("3-1", 6)
        with pytest.raises(UsageError, match="must be ints"):
            parse([1.5], 6)

    def test_parse_steps(self):
        parse = self.torch_mod.parse_steps
        assert parse(None) is None and parse(False) is None
        assert parse(True)(99) and parse("all")(0)
        three = parse(3)
        assert [three(s) for s in range(5)] == [True, True, True, False, False]
        some = parse([0, 4])
        assert [some(s) for s in range(5)] == [True, False, False, False, True]
        with pytest.raises(UsageError, match="positive number"):
            parse(0)
        with pytest.raises(UsageError, match="non-negative ints"):
            parse([-1])
