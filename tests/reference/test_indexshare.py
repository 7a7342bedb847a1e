"""IndexShare and the DSA indexer: who owns an indexer, who runs it, what top-k each layer uses."""

from __future__ import annotations

import math

import torch

from glm52_plugin.reference.layers import MLA, Indexer
from tests.conftest import prompt_ids


def test_shared_layers_have_no_indexer_parameters(toy_model, toy_config) -> None:
    names = toy_model.state_dict().keys()
    for layer, kind in enumerate(toy_config.indexer_types):
        has = any(n.startswith(f"model.layers.{layer}.self_attn.indexer.") for n in names)
        assert has == (kind == "full"), layer
    mtp = toy_config.mtp_layer_index
    assert f"model.layers.{mtp}.self_attn.indexer.wq_b.weight" in names


def _capture(model):
    """Record which layers ran an indexer and the top-k every attention layer used."""
    ran, used, hooks = [], {}, []
    for i, layer in enumerate(model.model.layers[: model.config.num_hidden_layers]):
        attn = layer.self_attn
        hooks.append(attn.register_forward_hook(lambda m, a, out, i=i: used.__setitem__(i, out[1])))
        if attn.indexer is not None:
            hooks.append(attn.indexer.register_forward_hook(lambda m, a, out, i=i: ran.append(i)))
    return ran, used, hooks


def test_indexer_runs_only_on_full_layers_and_shared_layers_reuse_topk(
    toy_model, toy_config
) -> None:
    ran, used, hooks = _capture(toy_model)
    try:
        toy_model(prompt_ids(40))
    finally:
        for h in hooks:
            h.remove()
    assert ran == list(toy_config.full_layers)
    last_full = None
    for i, kind in enumerate(toy_config.indexer_types):
        if kind == "full":
            last_full = i
        else:
            assert used[i] is used[last_full], f"layer {i} should reuse layer {last_full}'s top-k"


def brute_force_topk(indexer: Indexer, x, cq, cos, sin, k: int) -> list[list[set[int]]]:
    """Spec section 4 written as loops over queries, heads and keys (fp64)."""
    b, s, _ = x.shape
    r, hd, nh = indexer.rope_dim, indexer.head_dim, indexer.n_heads
    q = indexer.wq_b(cq).view(b, s, nh, hd).double()
    key = indexer.k_norm(indexer.wk(x)).double()
    w = indexer.weights_proj(x.float()).double()

    def rope(v, t):
        out = v.clone()
        for i in range(r // 2):
            c, sn = cos[t, i].double(), sin[t, i].double()
            out[..., 2 * i] = v[..., 2 * i] * c - v[..., 2 * i + 1] * sn
            out[..., 2 * i + 1] = v[..., 2 * i + 1] * c + v[..., 2 * i] * sn
        return out

    result = []
    for bi in range(b):
        rows = []
        for t in range(s):
            scores = []
            for j in range(t + 1):
                kj = torch.cat((rope(key[bi, j, :r], j), key[bi, j, r:]))
                total = 0.0
                for h in range(nh):
                    qh = torch.cat((rope(q[bi, t, h, :r], t), q[bi, t, h, r:]))
                    total += w[bi, t, h] / math.sqrt(nh) * max(float(qh @ kj) / math.sqrt(hd), 0.0)
                scores.append((total, j))
            scores.sort(key=lambda p: (-p[0], p[1]))
            rows.append({j for _, j in scores[:k]})
        result.append(rows)
    return result


@torch.no_grad()
def test_indexer_top_k_equals_brute_force(toy_model, toy_config) -> None:
    from glm52_plugin.reference.cache import LayerCache

    attn: MLA = toy_model.model.layers[0].self_attn
    x = toy_model.model.layers[0].input_layernorm(
        toy_model.model.embed_tokens(prompt_ids(24, seed=5))
    )
    cis, pos = toy_model._rope(0, 24)
    cos, sin = cis.real, cis.imag
    cq = attn.q_a_layernorm(attn.q_a_proj(x))
    with torch.inference_mode():
        got = attn.indexer(x, cq, cis, pos, LayerCache(True))
    expected = brute_force_topk(attn.indexer, x, cq, cos, sin, toy_config.index_topk)
    for t in range(24):
        selected = {int(j) for j in got[0, t] if int(j) <= t}
        assert selected == expected[0][t], t
