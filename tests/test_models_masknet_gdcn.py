"""MaskNet, GDCN and GDCNP against their structure written out from their blocks (serial / parallel mask nets,
stacked / parallel gated cross networks), and the configurations FuxiCTR cannot run: GDCN/GDCNP without an MLP
(the gated cross network alone, the same function for both) and the MaskNet settings that are errors here."""

from __future__ import annotations

import pytest
import torch

from bars.data.spec import Feature, FeatureSpec
from bars.models import ModelConfigError, build
from bars.models.layers import init_bars_

SPEC = FeatureSpec("tiny", "y", (
    Feature("a", "categorical", vocab_size=9), Feature("b", "categorical", vocab_size=5),
    Feature("c", "numeric"), Feature("d", "categorical", vocab_size=7),
))


def batch(n: int = 12) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {"a": torch.randint(0, 9, (n,), generator=g, dtype=torch.int32),
            "b": torch.randint(0, 5, (n,), generator=g, dtype=torch.int32),
            "c": torch.randn(n, generator=g),
            "d": torch.randint(0, 7, (n,), generator=g, dtype=torch.int32)}


def spread(model: torch.nn.Module) -> torch.nn.Module:
    torch.manual_seed(3)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.3)
    return model.double().eval()


MASK = {"embedding_dim": 4, "dnn_hidden_units": [8, 6], "activation": "relu", "reduction_ratio": 0.5,
        "emb_layernorm": True, "net_layernorm": True, "dropout": 0.0}


def test_serial_masknet_chains_its_blocks_on_the_normalised_embeddings():
    m = spread(build("masknet", SPEC, {**MASK, "model_type": "serial"}))
    x = batch()
    emb = m.embedding(x).double()
    v_emb = emb.flatten(1)
    h = m.emb_norm(emb).flatten(1)
    assert [b.output_dim for b in m.blocks] == [8, 6] and m.dnn is None
    for blk in m.blocks:
        h = blk(v_emb, h)  # the mask always reads the raw embeddings
    torch.testing.assert_close(m(x), m.fc(h).squeeze(-1))


def test_parallel_masknet_concatenates_its_blocks_into_the_mlp():
    m = spread(build("masknet", SPEC, {**MASK, "model_type": "parallel", "emb_layernorm": False,
                                       "parallel_num_blocks": 3, "parallel_block_dim": 5}))
    x = batch()
    v = m.embedding(x).double().flatten(1)
    assert m.emb_norm is None and m.fc is None and len(m.blocks) == 3
    assert all(b.mask_layer[0].out_features == 8 for b in m.blocks)  # int(16 * 0.5): the mask of the embeddings
    want = m.dnn(torch.cat([b(v, v) for b in m.blocks], dim=-1)).squeeze(-1)
    torch.testing.assert_close(m(x), want)
    no_mlp = build("masknet", SPEC, {**MASK, "model_type": "parallel", "dnn_hidden_units": [],
                                     "parallel_num_blocks": 2, "parallel_block_dim": 3})
    assert isinstance(no_mlp.dnn.net[0], torch.nn.Linear) and no_mlp.dnn.net[0].in_features == 6
    assert no_mlp(batch()).shape == (12,)


@pytest.mark.parametrize(("params", "match"), [
    ({"model_type": "serial", "dnn_hidden_units": []}, "serial MaskNet needs at least one mask block"),
    ({"model_type": "serial", "reduction_ratio": 0.01}, "reduction_ratio 0.01"),
    ({"model_type": "serial", "reduction_ratio": 0.0}, "reduction_ratio must be > 0"),
    ({"model_type": "parallel", "activation": "prelu"}, "prelu"),
    ({"model_type": "parallel", "parallel_block_dim": 0}, "parallel_block_dim"),
])
def test_masknet_settings_that_are_errors(params, match):
    with pytest.raises((ModelConfigError, ValueError), match=match):
        build("masknet", SPEC, {**MASK, **params})


GD = {"embedding_dim": 3, "num_cross_layers": 2}


def test_gdcn_stacks_the_mlp_on_the_gated_cross_network():
    m = spread(build("gdcn", SPEC, {**GD, "dnn_hidden_units": [7, 5], "batch_norm": False}))
    x = batch()
    x0 = m.embedding.flat(x).double()
    assert m.fc is None and m.dnn.output_dim == 1
    torch.testing.assert_close(m(x), m.dnn(m.cross(x0)).squeeze(-1))


def test_gdcnp_joins_the_gated_cross_network_and_the_mlp():
    m = spread(build("gdcnp", SPEC, {**GD, "dnn_hidden_units": [7, 5], "batch_norm": True}))
    x = batch()
    x0 = m.embedding.flat(x).double()
    assert m.fc.in_features == 12 + 5
    torch.testing.assert_close(m(x), m.fc(torch.cat([m.cross(x0), m.dnn(x0)], dim=-1)).squeeze(-1))


@pytest.mark.parametrize("units", [[], None])
def test_without_an_mlp_gdcn_and_gdcnp_are_the_gated_cross_network_and_a_linear(units):
    """FuxiCTR crashes here (GDCN calls its None dnn; GDCNP sizes its Linear with dnn_hidden_units[-1]); ours is
    what its code means: the cross network alone, then one Linear, the same function for both structures."""
    params = {**GD, "dnn_hidden_units": units, "activation": None, "batch_norm": None, "dropout": None}
    torch.manual_seed(0)
    s = init_bars_(build("gdcn", SPEC, params))
    p = build("gdcnp", SPEC, params)
    p.load_state_dict(s.state_dict())
    assert s.dnn is None and p.dnn is None and s.fc.in_features == p.fc.in_features == 12
    x = batch()
    torch.testing.assert_close(s(x), p(x))
    torch.testing.assert_close(s(x), s.fc(s.cross(s.embedding.flat(x))).squeeze(-1))
    with pytest.raises(ModelConfigError, match="ignored"):  # the MLP keys must be null without an MLP
        build("gdcn", SPEC, {**GD, "dnn_hidden_units": units, "activation": "relu"})
