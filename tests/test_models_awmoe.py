"""AW-MoE (bars/models/awmoe.py) against the equations its module docstring writes from the paper's abstract (the
paper's body was not retrievable; docs/fidelity.md "AW-MoE" lists the assumptions): the logit is the gate-weighted
sum of the expert logits, the gate is the softmax of the activation-unit-weighted gate units, one expert is DIN,
the random mask acts only in training (seeded, off in eval), the contrastive term is InfoNCE on the two views'
gate outputs (zero / positive where it must be) and a tiny seeded run learns a history-driven label."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from torch.nn import functional as F

from bars.data.loader import SplitTensors
from bars.data.spec import Feature, FeatureSpec
from bars.models import ModelConfigError, build, make_config
from bars.models.layers import init_bars_
from bars.train import TrainConfig, fit, loss_function, predict
from tests.test_models_sequence import batch_of, spec_of

SMALL = {"embedding_dim": 4, "expert_hidden_units": [8, 4], "gate_hidden_units": [6], "attention_hidden_units": [5],
         "attention_activation": "relu"}


def make(**params) -> torch.nn.Module:
    torch.manual_seed(0)
    model = build("awmoe", spec_of(), {**SMALL, **params})
    return init_bars_(model, embedding_std=0.3)


def _mlp(mlp, x):
    """An MLP of Linear / ReLU layers (no dropout, no batch norm) from its weights."""
    for layer in mlp.net:
        x = layer.weight @ x + layer.bias if isinstance(layer, torch.nn.Linear) else torch.relu(x)
    return x


def _by_hand(model, batch, keep=None):
    """(logits [B], gate [B, K]) by the docstring's equations, row by row; ``keep`` [B, L] replaces the gate's
    history mask (the masked view)."""
    emb = model.embedding
    logits, gates = [], []
    k = model.cfg.num_experts
    for b in range(batch["item"].shape[0]):
        t = torch.cat([emb.lookup("item", batch["item"][b:b + 1]), emb.lookup("cate", batch["cate"][b:b + 1])], -1)[0]
        h = torch.cat([emb.lookup("item_hist", batch["item_hist"][b:b + 1]),
                       emb.lookup("cate_hist", batch["cate_hist"][b:b + 1])], -1)[0]
        m = batch["item_hist"][b] > 0
        gm = m if keep is None else keep[b]
        gate = model.gates[0]
        s = torch.stack([_mlp(gate.activation_unit.mlp, torch.cat([t, hj, t - hj, t * hj]))[0] for hj in h])
        w = torch.zeros(len(h))
        if gm.any():
            w[gm] = torch.softmax(s[gm], dim=0)  # gate_use_softmax: normalised over the row's behaviours
        z = sum((w[j] * _mlp(gate.gate_unit, h[j]) for j in range(len(h))), torch.zeros(k))
        g = torch.softmax(z, dim=0)
        # the experts' input: DIN's (the history pooled by its own activation unit, unnormalised a_j m_j)
        a = torch.stack([_mlp(model.attention[0].mlp, torch.cat([t, hj, t - hj, t * hj]))[0] for hj in h]) * m
        v = (a.unsqueeze(1) * h).sum(0)
        flat = emb({n: batch[n][b:b + 1] for n in batch})[0]  # user, item, cate, price, tags (spec order)
        x = torch.cat([flat[0], flat[1], flat[2], flat[3], v[:4], v[4:], flat[4]])
        s_k = torch.stack([_mlp(e, x)[0] for e in model.experts])
        logits.append((g * s_k).sum())
        gates.append(g)
    return torch.stack(logits), torch.stack(gates)


def test_logit_is_the_gate_weighted_sum_of_the_experts_by_hand():
    model = make().eval()
    b = batch_of()
    with torch.no_grad():
        want, g = _by_hand(model, b)
        assert torch.allclose(model(b), want, atol=1e-5)
        assert torch.allclose(model.gate(b), g, atol=1e-6)
        assert torch.allclose(g[0], torch.full((4,), 0.25))  # no behaviour: the uniform activation vector
        assert not torch.allclose(g[3], torch.full((4,), 0.25), atol=1e-3)  # a history moves the gate


def test_one_expert_is_din():
    din_params = {k: v for k, v in SMALL.items() if k not in ("expert_hidden_units", "gate_hidden_units")}
    torch.manual_seed(0)
    din = init_bars_(build("din", spec_of(), {**din_params, "dnn_hidden_units": [8, 4]}), embedding_std=0.3)
    aw = make(num_experts=1)
    state = {k: v for k, v in din.state_dict().items() if not k.startswith("mlp.")}
    state.update({f"experts.0.{k[4:]}": v for k, v in din.state_dict().items() if k.startswith("mlp.")})
    missing = aw.load_state_dict(state, strict=False).missing_keys
    assert missing and all(k.startswith("gates.") for k in missing)
    b = batch_of()
    with torch.no_grad():
        assert torch.allclose(aw.eval()(b), din.eval()(b), atol=1e-6)
        torch.manual_seed(1)
        out = aw.train()(b)
        assert torch.allclose(out["logit"], din.train()(b), atol=1e-6)
        assert torch.equal(out["gate"], torch.ones(6, 1))  # one expert: the activation vector is 1


def test_mask_only_in_training_seeded_and_the_loss_by_hand():
    model = make()
    b, y = batch_of(), torch.tensor([0.0, 1.0, 1.0, 0.0, 1.0, 0.0])
    model.eval()
    state = torch.get_rng_state()
    with torch.no_grad():
        e1, e2 = model(b), model(b)
    assert isinstance(e1, torch.Tensor) and torch.equal(e1, e2)
    assert torch.equal(torch.get_rng_state(), state)  # eval draws no mask
    model.train()
    with torch.no_grad():
        torch.manual_seed(7)
        out = model(b)
        torch.manual_seed(7)
        again = model(b)
        torch.manual_seed(7)
        keep = (b["item_hist"] > 0) & (torch.rand(b["item_hist"].shape) >= 0.5)  # the model's one draw
        torch.manual_seed(8)
        other = model(b)
    assert set(out) == {"logit", "gate", "gate_masked"}
    for k in out:
        assert torch.equal(out[k], again[k]), k  # the same seed, the same mask
    assert not torch.equal(out["gate_masked"], other["gate_masked"])
    assert torch.allclose(out["logit"], e1, atol=1e-6)  # the prediction uses the full history in training too
    with torch.no_grad():
        _, g_masked = _by_hand(model, b, keep)
        _, g = _by_hand(model, b)
    assert torch.allclose(out["gate"], g, atol=1e-6) and torch.allclose(out["gate_masked"], g_masked, atol=1e-6)
    assert not torch.allclose(g, g_masked, atol=1e-4)
    # train.loss(logit, y) + 0.1 * InfoNCE(g, g'; 0.1), InfoNCE written out
    bce = loss_function("bce")
    nce = 0.0
    for i in range(6):
        sims = [float(F.cosine_similarity(g[i], g_masked[j], dim=0)) / 0.1 for j in range(6)]
        nce += -(sims[i] - math.log(sum(math.exp(s) for s in sims))) / 6
    got = model.training_loss(out, y, bce)
    assert got.item() == pytest.approx(bce(out["logit"], y).item() + 0.1 * nce, rel=1e-5)
    assert got.item() > bce(out["logit"], y).item()  # the contrastive term is positive
    assert model.training_loss(e1, y, bce).item() == pytest.approx(bce(e1, y).item())  # eval output: plain loss


def test_contrastive_term_zero_where_it_must_be():
    b, y = batch_of(), torch.tensor([0.0, 1.0, 1.0, 0.0, 1.0, 0.0])
    bce = loss_function("bce")
    off = make(contrastive_weight=0.0).train()
    state = torch.get_rng_state()
    out = off(b)
    assert isinstance(out, torch.Tensor) and torch.equal(torch.get_rng_state(), state)  # no masked view at all
    assert torch.equal(off.training_loss(out, y, bce), bce(out, y))
    model = make().train()
    one = {k: v[3:4] for k, v in b.items()}  # a batch of one sample: no negative, InfoNCE = 0
    o = model(one)
    assert model.training_loss(o, y[3:4], bce).item() == pytest.approx(bce(o["logit"], y[3:4]).item(), abs=1e-7)
    same = make(mask_rate=0.0).train()  # no mask: both views are the same gate
    o = same(b)
    assert torch.equal(o["gate"], o["gate_masked"])


def test_contrastive_loss_reaches_the_gate_only():
    """The InfoNCE gradient reaches the gate network and the embeddings, never the experts."""
    model = make().train()
    b = batch_of()
    out = model(b)
    from bars.models.layers import gate_info_nce

    gate_info_nce(out["gate"], out["gate_masked"], 0.1).backward()
    grads = {n: p.grad for n, p in model.named_parameters()}
    assert all(grads[n] is None or not grads[n].any() for n in grads if n.startswith(("experts.", "attention.")))
    assert any(grads[n] is not None and grads[n].abs().sum() > 0 for n in grads if n.startswith("gates."))


def test_config_errors_name_the_key():
    for key, value, msg in (("mask_rate", 1.0, "mask_rate must be in"), ("temperature", 0.0, "temperature must be"),
                            ("contrastive_weight", -0.1, "contrastive_weight must be"),
                            ("num_experts", 0, "num_experts must be"), ("gate_hidden_units", [0], "gate_hidden_units")):
        with pytest.raises(ModelConfigError, match=msg):
            make_config("awmoe", {"embedding_dim": 4, key: value})
    flat = FeatureSpec(dataset="flat", label="y", features=(Feature("a", "categorical", vocab_size=3),))
    with pytest.raises(ModelConfigError, match="model 'awmoe'.*cannot be inferred"):
        build("awmoe", flat, {"embedding_dim": 4})


SEQ_SPEC = FeatureSpec(dataset="taste", label="click", features=(
    Feature("user", "categorical", vocab_size=402),
    Feature("item", "categorical", vocab_size=22),
    Feature("hist", "sequence", vocab_size=22, max_len=6, share_embedding="item"),
))


def taste_data(n: int, seed: int) -> SplitTensors:
    """Users like one of two item groups (items 2..11 or 12..21); their history holds 0 to 6 items of it; the click
    probability is 0.85 when the target is of the liked group, 0.15 otherwise (no history: the group is unknown)."""
    g = torch.Generator().manual_seed(seed)
    user = torch.randint(2, 402, (n,), generator=g, dtype=torch.int32)
    taste = torch.randint(0, 2, (n,), generator=g, dtype=torch.int32)  # the group liked (not the user id's)
    item = torch.randint(2, 22, (n,), generator=g, dtype=torch.int32)
    lengths = torch.randint(0, 7, (n,), generator=g)
    hist = 2 + 10 * taste.unsqueeze(1) + torch.randint(0, 10, (n, 6), generator=g, dtype=torch.int32)
    hist = torch.where(torch.arange(6).unsqueeze(0) < lengths.unsqueeze(1), hist, torch.zeros_like(hist))
    liked = ((item >= 12).to(torch.int32) == taste)
    y = (torch.rand(n, generator=g) < torch.where(liked, 0.85, 0.15)).float()
    return SplitTensors({"user": user, "item": item, "hist": hist.to(torch.int32)}, y)


def taste_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return build("awmoe", SEQ_SPEC, {"embedding_dim": 8, "expert_hidden_units": [32, 16], "gate_hidden_units": [16],
                                     "attention_hidden_units": [16], "attention_activation": "relu"})


def test_tiny_seeded_run_learns_from_the_history():
    model = taste_model()
    train, valid = taste_data(2000, 0), taste_data(600, 1)
    cfg = TrainConfig(learning_rate=0.01, batch_size=200, max_epochs=3, embedding_init_std=0.1, device="cpu")
    res = fit(model, train, valid, cfg, seed=3)
    assert res.best_val["auc"] > 0.7, res.best_val  # only the history tells the liked group
    probs = predict(model, valid)
    assert probs.shape == (len(valid),) and torch.isfinite(probs).all()
    # reproducible: the same seed gives the same weights (the masks are drawn from the seeded generator)
    again = taste_model()
    small, one = taste_data(400, 2), dataclasses.replace(cfg, max_epochs=1)
    fit(again, small, valid, one, seed=3)
    third = taste_model()
    fit(third, small, valid, one, seed=3)
    assert torch.equal(predict(again, valid), predict(third, valid))


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_exports_with_parity_and_no_mask_in_the_graph(fmt, tmp_path):
    """tests/test_export.py's check for this model alone (the tiny spec, weights N(0, 0.2)), plus: the exported
    eval graph draws nothing random (no mask, no masked view: only the main prediction)."""
    import onnx

    from bars.export import TOLERANCE, export_model
    from tests.test_export import TINY, _model, _tiny_sample

    model = _model("awmoe", TINY, 4)
    path, d_logit, d_prob, _ = export_model(model, TINY, fmt, tmp_path / fmt, _tiny_sample(), model_name="awmoe")
    assert d_logit <= TOLERANCE and d_prob <= TOLERANCE, (d_logit, d_prob)
    if fmt == "onnx":
        ops = {n.op_type for n in onnx.load(str(path)).graph.node}
        assert not {o for o in ops if "Random" in o or "Bernoulli" in o or "Multinomial" in o}, ops
    else:
        code = torch.jit.load(str(path)).code
        assert "rand" not in code and "bernoulli" not in code
