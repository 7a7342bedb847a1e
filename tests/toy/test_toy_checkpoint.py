"""Toy checkpoints: real names, IndexShare-aware indexer tensors, determinism, tokenizer, template."""

from __future__ import annotations

import hashlib
import json

import pytest
from safetensors import safe_open

from glm52_plugin.presets import GLM_SPECIAL_TOKENS
from glm52_plugin.toy import make_toy


def _tensors(path) -> dict[str, tuple]:
    index = json.loads((path / "model.safetensors.index.json").read_text())
    out = {}
    for name, fname in index["weight_map"].items():
        with safe_open(path / fname, framework="pt") as f:
            t = f.get_slice(name)
            out[name] = (tuple(t.get_shape()), t.get_dtype())
    return out


def test_is_sharded_with_a_consistent_index(toy_checkpoint) -> None:
    index = json.loads((toy_checkpoint / "model.safetensors.index.json").read_text())
    files = set(index["weight_map"].values())
    assert len(files) > 1
    on_disk = {p.name for p in toy_checkpoint.glob("*.safetensors")}
    assert files == on_disk
    for fname in files:
        with safe_open(toy_checkpoint / fname, framework="pt") as f:
            assert {n for n, v in index["weight_map"].items() if v == fname} == set(f.keys())


def test_indexer_tensors_only_on_full_layers_and_mtp(toy_checkpoint, toy_config) -> None:
    names = _tensors(toy_checkpoint)
    mtp = toy_config.mtp_layer_index
    for layer in range(toy_config.num_hidden_layers + 1):
        has = f"model.layers.{layer}.self_attn.indexer.wk.weight" in names
        assert has == (layer == mtp or toy_config.indexer_types[layer] == "full"), layer
    for suffix in ("enorm.weight", "hnorm.weight", "eh_proj.weight", "shared_head.norm.weight",
                   "mlp.gate.e_score_correction_bias", "mlp.experts.7.down_proj.weight"):  # fmt: skip
        assert f"model.layers.{mtp}.{suffix}" in names


def test_shapes_and_dtypes_follow_the_spec(toy_checkpoint, toy_config) -> None:
    names = _tensors(toy_checkpoint)
    # spec section 16: shapes [out, in]
    expected = {
        "model.layers.0.self_attn.q_a_proj.weight": (128, 256),
        "model.layers.0.self_attn.q_b_proj.weight": (512, 128),
        "model.layers.0.self_attn.kv_a_proj_with_mqa.weight": (576, 256),
        "model.layers.0.self_attn.kv_b_proj.weight": (512, 512),
        "model.layers.0.self_attn.o_proj.weight": (256, 256),
        "model.layers.0.self_attn.indexer.wq_b.weight": (512, 128),
        "model.layers.0.self_attn.indexer.wk.weight": (128, 256),
        "model.layers.0.self_attn.indexer.weights_proj.weight": (4, 256),
        "model.layers.0.mlp.gate_proj.weight": (512, 256),
        "model.layers.0.mlp.down_proj.weight": (256, 512),
        "model.layers.1.mlp.gate.weight": (8, 256),
        "model.layers.1.mlp.experts.0.up_proj.weight": (64, 256),
        "model.layers.1.mlp.experts.0.down_proj.weight": (256, 64),
        f"model.layers.{toy_config.mtp_layer_index}.eh_proj.weight": (256, 512),
        "lm_head.weight": (404, 256),
    }
    for name, shape in expected.items():
        assert names[name][0] == shape, name
    assert names["model.layers.1.mlp.gate.e_score_correction_bias"][1] == "F32"
    assert names["model.layers.1.mlp.gate.weight"][1] == "BF16"


def test_same_seed_same_bytes(tmp_path) -> None:
    def digest(p) -> str:
        h = hashlib.sha256()
        for f in sorted(p.glob("*.safetensors")):
            h.update(f.read_bytes())
        return h.hexdigest()

    a = make_toy(tmp_path / "a", seed=3, progress=False)
    b = make_toy(tmp_path / "b", seed=3, progress=False)
    c = make_toy(tmp_path / "c", seed=4, progress=False)
    assert digest(a) == digest(b) != digest(c)
    assert not list(tmp_path.glob(".*"))  # no temp dirs left behind


def test_tokenizer_has_glm_special_tokens_at_the_spec_ids(toy_checkpoint) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(toy_checkpoint)
    for i, t in enumerate(GLM_SPECIAL_TOKENS):
        assert tok.convert_tokens_to_ids(t) == 384 + i
    assert tok.convert_tokens_to_ids("<|user|>") == 391
    assert len(tok) == 404


@pytest.mark.parametrize("thinking", [True, False])
def test_chat_template_renders_the_same_in_transformers(toy_checkpoint, thinking) -> None:
    from transformers import AutoTokenizer

    from glm52_plugin.toy.chat import render_chat

    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": "", "tool_calls": [
            {"type": "function", "function": {"name": "get_weather",
                                              "arguments": {"city": "Paris", "days": 3}}}]},
        {"role": "tool", "content": "sunny"},
        {"role": "user", "content": "Thanks"},
    ]  # fmt: skip
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {}}}]
    tok = AutoTokenizer.from_pretrained(toy_checkpoint)
    hf = tok.apply_chat_template(messages, tools=tools, tokenize=False, add_generation_prompt=True,
                                 enable_thinking=thinking)  # fmt: skip
    ours = render_chat(messages, tools=tools, enable_thinking=thinking)
    assert ours == hf
    assert hf.startswith("[gMASK]<sop><|system|># Tools")
    assert "<tool_call>get_weather<arg_key>city</arg_key><arg_value>Paris</arg_value>" in hf
    assert "<arg_key>days</arg_key><arg_value>3</arg_value></tool_call>" in hf
    assert "<|observation|><tool_response>sunny</tool_response>" in hf
    assert hf.endswith("<|assistant|><think>" if thinking else "<|assistant|></think>")
