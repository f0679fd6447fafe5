"""The model zoo against its configs: every registered model builds from conf/model/<m>.yaml on a tiny spec with
categorical, numeric and sequence fields, returns finite logits [B], and sends gradients to every parameter."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from bars import models
from bars.data.spec import Feature, FeatureSpec
from bars.models import ModelConfigError, build, config_class, list_models
from bars.models.layers import FeatureEmbedding, count_parameters, init_bars_, split_parameters
from bars.objective import final_logits

CONF = Path(__file__).resolve().parents[1] / "conf" / "model"
EXPECTED = {"lr", "fm", "dnn", "widedeep", "deepfm", "dcn", "dcnv2", "xdeepfm", "autoint", "finalmlp"}
NO_EMBEDDING_DIM = {"lr"}  # models without embeddings of a chosen width (a key they would ignore is an error)
# parameters that get no gradient by design: FinalMLP's gate MLP behind a zero context bias (FuxiCTR: with a zero
# input and zero biases its ReLUs sit at 0, so only the gate's output bias learns; see docs/fidelity.md)
NO_GRADIENT = {
    "finalmlp": tuple(
        f"fs{i}.{p}" for i in (1, 2) for p in ("ctx_bias", "gate.net.0.weight", "gate.net.0.bias", "gate.net.2.weight")
    ),
    # PLE's last CGC layer computes the shared path's gate too (FuxiCTR builds it), but no tower reads it
    "ple": tuple(f"cgc.0.gates.2.net.{i}.{p}" for i in (0, 2, 4) for p in ("weight", "bias")),
}
# DMR's User-to-Item queries ReLU(W_q p_j): the position embedding and the bias start at zero, so the query is
# ReLU(0) = 0 with zero gradient and neither ever trains, in FuxiCTR 2.3.10 too (docs/fidelity.md, DMR)
NO_GRADIENT["dmr"] = ("u2i.0.pos_emb", "u2i.0.query.weight", "u2i.0.query.bias")
# parameters whose true gradient is zero but whose computed one may round to a tiny value or to exactly 0 (which
# one depends on the reduction order, so neither list above can name them): DMIN's score-MLP output bias under
# the softmax over behaviours (a constant added to every score leaves the softmax unchanged)
ZERO_TRUE_GRADIENT = {"dmin": ("extractors.0.target_attention.0.mlp.net.4.bias",
                               "extractors.0.target_attention.1.mlp.net.4.bias",
                               "extractors.0.target_attention.2.mlp.net.4.bias",
                               "extractors.0.target_attention.3.mlp.net.4.bias")}
# Model configs (conf/model/<id>.yaml): one per registered model (id == registry name) plus the variants that
# are configurations of a registered model (BARS's CrossNet, CrossNetv2, CIN, AutoInt; AutoInt+ is autoint_plus).
CONFIG_IDS = sorted(p.stem for p in CONF.glob("*.yaml"))
VARIANTS = {"crossnet": "dcn", "crossnetv2": "dcnv2", "cin": "xdeepfm", "autoint_plus": "autoint",
            "finalnet_1b": "finalnet"}
VARIANTS["masknet_serial"] = "masknet"  # MaskNet's serial structure, with its own search space
VARIANTS["mc_mlcc"] = "mlcc"  # MLCC's multi-channel extension (MC-MLCC), with its own search space
B = 16


@pytest.fixture(scope="module")
def spec() -> FeatureSpec:
    return FeatureSpec(
        dataset="tiny",
        label="click",
        labels=("click", "conversion"),  # two label columns: a multi-task model predicts both (logits [B, 2])
        features=(
            Feature("user", "categorical", vocab_size=9, group="user"),
            Feature("price", "numeric", group="context"),
            Feature("item", "categorical", vocab_size=7, group="item"),
            Feature("history", "sequence", vocab_size=7, max_len=4, share_embedding="item", group="user"),
            Feature("tags", "sequence", vocab_size=5, max_len=3, group="item"),
        ),  # feature groups (data.groups) for the models that read them (DSSM, FLEN, PPNet)
    )


def make_batch(spec: FeatureSpec, n: int = B, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    out: dict[str, torch.Tensor] = {}
    for f in spec.features:
        if f.type == "categorical":
            out[f.name] = torch.randint(0, f.vocab_size, (n,), generator=g, dtype=torch.int32)
        elif f.type == "numeric":
            out[f.name] = torch.randn(n, generator=g)
        else:
            seq = torch.randint(0, f.vocab_size, (n, f.max_len), generator=g, dtype=torch.int32)
            seq[0] = 0  # one empty sequence
            out[f.name] = seq
    return out


def out_shape(model, n: int) -> tuple[int, ...]:
    """[n] for a single-task model, [n, T] for a multi-task one (one column per label of the spec)."""
    return (n, len(model.tasks)) if getattr(model, "multi_task", False) else (n,)


def yaml_params(name: str, embedding_dim: int = 4, **overrides) -> dict:
    """conf/model/<name>.yaml's params resolved at ``embedding_dim``; ``overrides`` replace keys (None = null)."""
    raw = OmegaConf.load(CONF / f"{name}.yaml")
    cfg = OmegaConf.create({"protocol": {"embedding_dim": embedding_dim}, "model": raw})
    params = OmegaConf.to_container(cfg.model.params, resolve=True)
    params.update(overrides)
    return params


def test_registry_has_the_ten_models():
    assert EXPECTED <= set(list_models())
    assert list_models() == sorted(list_models())


def test_config_files_and_registry_match():
    """Every registered model has conf/model/<name>.yaml; every other config is a listed variant of one."""
    files = set(CONFIG_IDS)
    assert set(list_models()) <= files, f"model without yaml: {set(list_models()) - files}"
    assert files - set(list_models()) == set(VARIANTS), f"yaml without model: {files - set(list_models())}"
    for vid, name in VARIANTS.items():
        assert OmegaConf.load(CONF / f"{vid}.yaml").name == name


@pytest.mark.parametrize("cid", CONFIG_IDS)
def test_yaml_keys_equal_dataclass_fields(cid):
    raw = OmegaConf.load(CONF / f"{cid}.yaml")
    name = raw.name
    assert name == VARIANTS.get(cid, cid)
    assert list(raw.keys()) == ["name", "id", "bars_name", "params"]
    assert raw.id == cid  # the file stem; bars_name: the BARS display name (null for a model BARS lacks)
    fields = [f.name for f in dataclasses.fields(config_class(name))]
    assert list(raw.params.keys()) == fields
    if name in NO_EMBEDDING_DIM:
        assert "embedding_dim" not in fields
    else:
        assert OmegaConf.to_container(raw.params)["embedding_dim"] == "${protocol.embedding_dim}"
    cls = config_class(name)
    assert dataclasses.is_dataclass(cls) and cls.__dataclass_params__.frozen


def test_bars_names_are_unique_and_published():
    from bars.published import load_published, load_published_seq

    names = [n for n in (OmegaConf.load(CONF / f"{cid}.yaml").bars_name for cid in CONFIG_IDS) if n is not None]
    assert len(names) == len(set(names))
    # a bars_name is a model of bars_published.csv (or, for a sequence model, of bars_published_seq.csv)
    assert set(names) <= {m for _, m in load_published()} | {m for _, m in load_published_seq()}
    assert len(names) >= 14


@pytest.mark.parametrize("cid", CONFIG_IDS)
def test_builds_from_yaml_forward_and_gradients(cid, spec):
    torch.manual_seed(0)
    # an OmegaConf node straight from the composed config (lists are ListConfig) must work too
    raw = OmegaConf.load(CONF / f"{cid}.yaml")
    name = str(raw.name)
    node = OmegaConf.create({"protocol": {"embedding_dim": 4}, "model": raw}).model.params
    model = build(name, spec, node)
    init_bars_(model)
    model.train()
    batch = make_batch(spec)
    out = final_logits(model(batch))  # a model with its own training loss returns named outputs in training
    assert out.shape == out_shape(model, B) and out.dtype == torch.float32
    assert torch.isfinite(out).all()
    out.sum().backward()
    params = dict(model.named_parameters())
    for n in ZERO_TRUE_GRADIENT.get(cid, ()):
        g = params[n].grad
        assert g is None or float(g.abs().max()) < 1e-6, (cid, n, "expected a (rounding-level) zero gradient")
    dead = [n for n, p in params.items() if (p.grad is None or not torch.any(p.grad != 0))
            and n not in ZERO_TRUE_GRADIENT.get(cid, ())]
    assert sorted(dead) == sorted(NO_GRADIENT.get(cid, ())), f"{cid}: parameters without gradient: {dead}"
    model.eval()
    with torch.no_grad():
        assert torch.isfinite(model(make_batch(spec, n=3, seed=1))).all()


@pytest.mark.parametrize("cid", CONFIG_IDS)
def test_trains_under_bfloat16_autocast_on_cpu(cid, spec):
    """``train.precision=bf16`` on the CPU: forward under torch's autocast, backward, finite gradients for every
    config. The layers' custom autograd Functions (C kernels, chunked AFM, DESTINE's shared projections) compute in
    their inputs' dtype, so under autocast they must give way to torch's ops or cast their gradients: AFM, DESTINE
    and FiBiNET failed here before they did."""
    from bars.precision import autocast

    torch.manual_seed(0)
    raw = OmegaConf.load(CONF / f"{cid}.yaml")
    model = init_bars_(build(str(raw.name), spec, yaml_params(cid))).train()
    with autocast(torch.device("cpu"), "bf16"):
        out = final_logits(model(make_batch(spec)))
    assert out.shape == out_shape(model, B) and torch.isfinite(out).all()
    out.float().sum().backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize("name", list_models())
def test_split_parameters_partitions(name, spec):
    model = build(name, spec, yaml_params(name))
    emb, net = split_parameters(model)
    ids_e, ids_n = {id(p) for p in emb}, {id(p) for p in net}
    assert not ids_e & ids_n
    assert ids_e | ids_n == {id(p) for p in model.parameters()}
    inside = {id(p) for m in model.modules() if isinstance(m, FeatureEmbedding) for p in m.parameters()}
    assert ids_e == inside and emb
    assert count_parameters(model) == sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name", list_models())
def test_unknown_key_raises_listing_fields(name, spec):
    params = yaml_params(name)
    params["no_such_knob"] = 1
    with pytest.raises(ModelConfigError) as e:
        build(name, spec, params)
    msg = str(e.value)
    assert "no_such_knob" in msg
    for f in dataclasses.fields(config_class(name)):
        assert f"  {f.name}: " in msg  # every valid field is listed


@pytest.mark.parametrize("name", sorted(set(list_models()) - NO_EMBEDDING_DIM))
def test_missing_embedding_dim_raises(name, spec):
    params = yaml_params(name)
    del params["embedding_dim"]
    with pytest.raises(ModelConfigError, match="missing params \\['embedding_dim'\\]"):
        build(name, spec, params)


def test_unknown_model_lists_names(spec):
    with pytest.raises(ModelConfigError) as e:
        build("no_such_model", spec, {})
    for n in list_models():
        assert n in str(e.value)
    with pytest.raises(ModelConfigError):
        config_class("nope")


def test_mistyped_values_raise(spec):
    with pytest.raises(ModelConfigError, match="dropout"):
        build("dnn", spec, yaml_params("dnn", dropout="0.2"))
    with pytest.raises(ModelConfigError, match="batch_norm"):
        build("dnn", spec, yaml_params("dnn", batch_norm=1))
    with pytest.raises(ModelConfigError, match="hidden_units"):
        build("dnn", spec, yaml_params("dnn", hidden_units=[400, "x"]))
    with pytest.raises(ModelConfigError, match="model_structure"):
        build("dcnv2", spec, yaml_params("dcnv2", model_structure="sideways"))
    with pytest.raises(ModelConfigError, match="dropout"):
        build("dnn", spec, yaml_params("dnn", dropout=1.5))  # __post_init__ range check
    with pytest.raises(ModelConfigError, match="fs1_context"):
        build("finalmlp", spec, yaml_params("finalmlp", fs1_context=["nope"]))


def test_plain_values_are_coerced(spec):
    cfg = models.make_config("dnn", yaml_params("dnn", dropout=0, hidden_units=[8, 4]))
    assert cfg.hidden_units == (8, 4) and isinstance(cfg.dropout, float)


MLP_OFF = {"activation": None, "batch_norm": None, "dropout": None}


@pytest.mark.parametrize("structure", ["stacked", "parallel", "crossnet_only"])
def test_dcnv2_structures(structure, spec):
    off = {"dnn_hidden_units": None, **MLP_OFF} if structure == "crossnet_only" else {"dnn_hidden_units": [8, 8]}
    model = build("dcnv2", spec, yaml_params("dcnv2", model_structure=structure, **off))
    assert model(make_batch(spec)).shape == (B,)
    assert (model.dnn is None) == (structure == "crossnet_only")


def test_finalmlp_with_contexts_and_without_fs(spec):
    torch.manual_seed(0)
    m = build("finalmlp", spec, yaml_params("finalmlp", fs1_context=["user"], fs2_context=["item", "price"]))
    init_bars_(m)
    m(make_batch(spec)).sum().backward()
    assert all(p.grad is not None and torch.any(p.grad != 0) for p in m.parameters())
    m2 = build("finalmlp", spec, yaml_params("finalmlp", use_fs=False, fs_hidden_units=None))
    assert m2(make_batch(spec)).shape == (B,) and m2.fs1 is None


def test_finalmlp_context_bias_init_switch(spec):
    """zeros (FuxiCTR): the gate MLP behind the bias gets no gradient; normal (N(0, 1)): it trains."""
    torch.manual_seed(0)
    zeros = init_bars_(build("finalmlp", spec, yaml_params("finalmlp")))
    assert torch.all(zeros.fs1.ctx_bias == 0) and torch.all(zeros.fs2.ctx_bias == 0)
    torch.manual_seed(0)
    normal = init_bars_(build("finalmlp", spec, yaml_params("finalmlp", fs_context_bias_init="normal")))
    assert 0.3 < normal.fs1.ctx_bias.std().item() < 3.0
    normal(make_batch(spec)).sum().backward()
    assert torch.any(normal.fs1.gate.net[0].weight.grad != 0) and torch.any(normal.fs1.ctx_bias.grad != 0)


def test_autoint_plain_and_wide(spec):
    m = build(
        "autoint",
        spec,
        yaml_params(
            "autoint", use_dnn=False, use_wide=True, layer_norm=True, use_scale=True,
            dnn_hidden_units=None, activation=None, batch_norm=None,
        ),
    )
    assert m(make_batch(spec)).shape == (B,)
    assert m.dnn is None and m.lr is not None
    plus = build("autoint", spec, yaml_params("autoint_plus"))  # AutoInt+: the same model with its MLP
    assert plus.dnn is not None


@pytest.mark.parametrize("vid", sorted(VARIANTS))
def test_variants_switch_off_the_mlp_part(vid, spec):
    """crossnet / crossnetv2 / cin have no MLP, autoint_plus has one: what BARS's names mean."""
    raw = OmegaConf.load(CONF / f"{vid}.yaml")
    m = build(str(raw.name), spec, yaml_params(vid))
    mlp = getattr(m, "dnn", None)
    assert (mlp is not None) == (vid == "autoint_plus"), vid


def test_autoint_dropout_reaches_attention(spec):
    """FuxiCTR's net_dropout (``dropout``) drops the attention weights too, with or without the MLP;
    ``attention_dropout`` gives attention its own rate (AutoInt+ only: without the MLP it is the one rate)."""
    m = build("autoint", spec, yaml_params("autoint", dropout=0.3))  # plain AutoInt: dropout acts on attention
    assert m.dnn is None and all(a.dropout is not None and a.dropout.p == 0.3 for a in m.attention)
    plus = build("autoint", spec, yaml_params("autoint_plus", dropout=0.3, attention_dropout=None))
    assert all(a.dropout is not None and a.dropout.p == 0.3 for a in plus.attention)
    m0 = build("autoint", spec, yaml_params("autoint_plus", dropout=0.3, attention_dropout=0.0))
    assert all(a.dropout is None for a in m0.attention)
    qkv = m.attention[0]
    assert qkv.w_q.weight.shape == qkv.w_k.weight.shape == qkv.w_v.weight.shape == (128, 4)


# keys that a model would ignore (the part that reads them is off) are errors naming the keys
IGNORED_KEYS = [
    ("dcn", {"dnn_hidden_units": []}, ["activation", "batch_norm", "dropout"]),
    ("dcnv2", {"model_structure": "crossnet_only", "dnn_hidden_units": None, "activation": None},
     ["batch_norm", "dropout"]),
    ("xdeepfm", {"dnn_hidden_units": [], "batch_norm": None, "dropout": None}, ["activation"]),
    ("autoint_plus", {"use_dnn": False}, ["dnn_hidden_units", "activation", "batch_norm"]),
    ("autoint", {"attention_dropout": 0.1}, ["dropout"]),  # no MLP: dropout acts only through attention_dropout
    ("dnn", {"hidden_units": [], "activation": None, "batch_norm": None}, ["dropout"]),
    ("finalmlp", {"use_fs": False}, ["fs_hidden_units"]),
    ("finalmlp", {"use_fs": False, "fs_hidden_units": None, "fs1_context": ["user"]}, ["fs1_context"]),
    ("finalmlp", {"fs1_context": ["user"], "fs2_context": ["item"], "fs_context_bias_init": "normal"},
     ["fs_context_bias_init"]),
]

IGNORED_KEYS += [  # issue 11
    ("masknet_serial", {"parallel_num_blocks": 2}, ["parallel_num_blocks"]),
    ("masknet", {"model_type": "serial"}, ["parallel_num_blocks", "parallel_block_dim"]),
    ("gdcn", {"dnn_hidden_units": []}, ["activation", "batch_norm", "dropout"]),
    ("gdcnp", {"dnn_hidden_units": None, "activation": None}, ["batch_norm", "dropout"]),
]

@pytest.mark.parametrize(("cid", "overrides", "ignored"), IGNORED_KEYS)
def test_ignored_keys_are_errors(cid, overrides, ignored, spec):
    with pytest.raises(ModelConfigError) as e:
        build(str(OmegaConf.load(CONF / f"{cid}.yaml").name), spec, yaml_params(cid, **overrides))
    msg = str(e.value)
    assert "ignored" in msg and all(k in msg for k in ignored), msg


def test_lr_has_no_embedding_dim(spec):
    with pytest.raises(ModelConfigError, match="unknown params \\['embedding_dim'\\]"):
        build("lr", spec, {"embedding_dim": 10})
    assert build("lr", spec, {})(make_batch(spec)).shape == (B,)


def test_unset_mlp_keys_take_defaults_when_the_mlp_exists(spec):
    cfg = models.make_config("dcn", {"embedding_dim": 4, "dnn_hidden_units": [8]})
    assert (cfg.activation, cfg.batch_norm, cfg.dropout) == ("relu", True, 0.2)
    cfg = models.make_config("dcnv2", {"embedding_dim": 4})
    assert cfg.dnn_hidden_units == (400, 400, 400)


def test_init_bars(spec):
    torch.manual_seed(0)
    m = build("dcn", spec, yaml_params("dcn", embedding_dim=8))
    init_bars_(m, embedding_std=1e-4)
    w = m.embedding.weight
    assert torch.all(w[0] == 0)
    assert 0.5e-4 < w[1:].std().item() < 2e-4
    for mod in m.modules():
        if isinstance(mod, torch.nn.Linear) and mod.bias is not None:
            assert torch.all(mod.bias == 0)
    fc = m.dnn.net[0]
    expected = (2.0 / (fc.in_features + fc.out_features)) ** 0.5
    assert abs(fc.weight.std().item() - expected) / expected < 0.1


def test_deterministic_given_seed(spec):
    outs = []
    for _ in range(2):
        torch.manual_seed(123)
        m = build("dcn", spec, yaml_params("dcn"))
        init_bars_(m)
        outs.append(m(make_batch(spec)).detach())
    assert torch.equal(outs[0], outs[1])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("name", list_models())
def test_forward_backward_on_cuda(name, spec):
    model = init_bars_(build(name, spec, yaml_params(name))).cuda().train()
    batch = {k: v.cuda() for k, v in make_batch(spec).items()}
    out = final_logits(model(batch))
    assert out.shape == out_shape(model, B) and out.is_cuda and torch.isfinite(out).all()
    out.sum().backward()


_CBWR_PROBE = """
import os, sys, torch
import bars
from bars.environment import environment_tags
torch.manual_seed(0)
a, w = torch.randn(600, 1024), torch.randn(512, 1024)
whole, parts = a @ w.t(), torch.cat([a[i:i + 256] @ w.t() for i in (0, 256, 512)])
print(os.environ["MKL_CBWR"], environment_tags()["mkl_cbwr"], torch.equal(whole, parts))
"""


@pytest.mark.parametrize(("preset", "want"), [(None, "AUTO,STRICT"), ("COMPATIBLE", "COMPATIBLE")])
def test_importing_bars_makes_matrix_products_independent_of_the_rows(preset, want):
    """``import bars`` sets oneMKL's strict reproducibility (unless MKL_CBWR is set): a product of 600 rows equals
    the same rows in batches of 256 bit for bit (what the next test needs of every model), and the mode in force
    is a run tag. A fresh process: MKL reads the variable at its first call."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "MKL_CBWR"} | ({"MKL_CBWR": preset} if preset else {})
    out = subprocess.run([sys.executable, "-c", _CBWR_PROBE], env=env, capture_output=True, text=True, check=True,
                         timeout=120).stdout.split()
    assert out == [want, want, "True"]


@pytest.mark.parametrize("cid", CONFIG_IDS)
def test_eval_outputs_do_not_depend_on_the_batching(cid, spec):
    """Scoring rows in one batch or in several gives the same outputs bit for bit, so `train.eval_batch_size` is a
    speed knob only (validation, test and `bars predict` may use any batch size without changing a metric)."""
    torch.manual_seed(0)
    raw = OmegaConf.load(CONF / f"{cid}.yaml")
    model = init_bars_(build(str(raw.name), spec, yaml_params(cid))).eval()
    batch = make_batch(spec, n=600, seed=2)
    with torch.no_grad():
        whole = final_logits(model(batch))
        parts = torch.cat([final_logits(model({k: v[i:i + 256] for k, v in batch.items()})) for i in (0, 256, 512)])
    assert torch.equal(whole, parts), f"{cid}: max |difference| {float((whole - parts).abs().max())}"


def _graph_step_run(name, spec, cuda_graph: bool, steps: int = 6, lr_change_at: int | None = None,
                    params: dict | None = None):
    """``steps`` TrainSteps on CUDA from one initialisation (full batches of B rows, then one of B - 3), with
    ``train.cuda_graph`` on or off: (losses, final weights, the step)."""
    from bars.train import TrainConfig, TrainStep

    torch.manual_seed(0)
    model = init_bars_(build(name, spec, params or yaml_params(name))).cuda().train()
    step = TrainStep(model, TrainConfig(cuda_graph=cuda_graph, embedding_regularizer=1e-3, net_regularizer=1e-4))
    multi = getattr(model, "multi_task", False)
    losses = []
    for i in range(steps + 1):
        n = B if i < steps else B - 3
        batch = {k: v.cuda() for k, v in make_batch(spec, n, seed=i).items()}
        y = torch.rand(n, 2 if multi else 1, generator=torch.Generator().manual_seed(i)).round().cuda()
        if i == lr_change_at:
            step.set_lr(1e-4)
        losses.append(step(batch, y if multi else y[:, 0]))
    torch.cuda.synchronize()
    return torch.stack(losses).cpu(), {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}, step


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_graph_step_matches_eager_on_cuda(spec):
    """train.cuda_graph replays the eager step's kernels: DCN without dropout (its masks come from the RNG) gives
    the eager losses and weights through warm-up, capture, replays, a re-capture after a learning-rate change and
    an eager last batch of another size."""
    p = yaml_params("dcn", dropout=0.0)
    eager_l, eager_w, _ = _graph_step_run("dcn", spec, False, steps=9, lr_change_at=7, params=p)
    graph_l, graph_w, step = _graph_step_run("dcn", spec, True, steps=9, lr_change_at=7, params=p)
    assert step.graph_fallback is None and step.graph_captures == 2 and step.graph_replays == 6
    assert step.graph_summary() == "replayed 6 of 10 steps"
    torch.testing.assert_close(graph_l, eager_l, rtol=1e-5, atol=1e-7)
    for k in eager_w:
        torch.testing.assert_close(graph_w[k], eager_w[k], rtol=1e-5, atol=1e-7, msg=k)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("name", list_models())
def test_cuda_graph_trains_every_model_on_cuda(name, spec):
    """Every model trains with train.cuda_graph: its step is captured and replayed (or, where a model's step
    cannot be captured, trains eagerly and says why); the losses stay finite."""
    losses, weights, step = _graph_step_run(name, spec, True)
    assert torch.isfinite(losses).all() and all(torch.isfinite(w.float()).all() for w in weights.values())
    assert step.graph_fallback is None, f"{name}: {step.graph_summary()}"
    assert step.graph_replays == 3 and step.graph_captures == 1  # 3 warm-up steps, capture + 2, 1 eager
