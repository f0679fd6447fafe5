"""Search spaces, beyond fitting the config (tests/test_sweep.py): every sampled trial of every model config
builds its model on a grouped spec and runs a forward pass (so no trial of a sweep fails on an invalid
combination), and the spaces of the zoo3 models cover the values BARS's tuner configs searched."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import optuna
import pytest
import torch
from omegaconf import OmegaConf

from bars import search as SP
from bars.config import CONF_DIR, compose
from bars.data.spec import Feature, FeatureSpec
from bars.models import build, config_class

MODEL_CONFIGS = sorted(p.stem for p in (CONF_DIR / "model").glob("*.yaml"))
SPEC = FeatureSpec("movielens_like", "y", (
    Feature("user", "categorical", vocab_size=30, group="user"),
    Feature("movie", "categorical", vocab_size=40, group="item"),
    Feature("genres", "sequence", vocab_size=12, max_len=3, group="item"),
    Feature("year", "categorical", vocab_size=9, group="item"),
    Feature("hour", "categorical", vocab_size=26, group="context"),
    Feature("weekday", "numeric", group="context"),
), labels=("y", "y_conversion"))  # two label columns: multi-task models predict both (logits [B, 2])


# behaviour-sequence models (their config pairs targets with histories) are sampled on movielens_seq's layout
SEQ_SPEC = FeatureSpec("movielens_seq_like", "y", SPEC.features + (
    Feature("genre", "categorical", vocab_size=12, group="item"),
    Feature("hist_movies", "sequence", vocab_size=40, max_len=5, share_embedding="movie", padding="pre"),
    Feature("hist_genres", "sequence", vocab_size=12, max_len=5, share_embedding="genre", padding="pre"),
))


def is_sequence_model(config_id: str) -> bool:
    name = OmegaConf.load(CONF_DIR / "model" / f"{config_id}.yaml").name
    return "sequence_fields" in {f.name for f in dataclasses.fields(config_class(name))}


def batch(n: int = 8, spec: FeatureSpec = SPEC) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    out = {}
    for f in spec.features:
        if f.type == "categorical":
            out[f.name] = torch.randint(0, f.vocab_size, (n,), generator=g, dtype=torch.int32)
        elif f.type == "sequence":
            out[f.name] = torch.randint(0, f.vocab_size, (n, f.max_len), generator=g, dtype=torch.int32)
        else:
            out[f.name] = torch.rand(n, generator=g)
    return out


@pytest.mark.parametrize("model", MODEL_CONFIGS)
def test_every_sampled_trial_builds_and_runs(model):
    seq = is_sequence_model(model)
    # movielens_small (movielens_seq for the sequence models): its data file narrows the space
    cfg = compose([f"model={model}"] + (["data=movielens_seq"] if seq else []))
    space = SP.space_of(cfg)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=1))
    spec = SEQ_SPEC if seq else SPEC
    x = batch(spec=spec)
    for _ in range(6):
        t = study.ask()
        params = {k: p.suggest(t) for k, p in space.items()}
        tcfg = SP.apply_params(cfg, params)  # what a sweep trial does to the composed config
        m = build(str(tcfg.model.name), spec, OmegaConf.to_container(tcfg.model.params, resolve=True)).eval()
        with torch.no_grad():
            assert m(x).shape == ((8, 2) if getattr(m, "multi_task", False) else (8,)), params
        study.tell(t, 0.5)


@pytest.mark.parametrize("model", MODEL_CONFIGS)
def test_every_search_space_passes_the_sweep_preflight(model):
    """`make sweep` checks every choice of the space before it starts (bars.validate.check_space): each model
    config's own space on the data its sweeps run on must pass (CCPM's channel lists need the kernel heights of
    their own length: a choice is checked with a partner choice of the other dimension)."""
    from bars.models import model_class
    from bars.validate import check_space

    data = ("movielens_seq" if is_sequence_model(model) else
            "synthetic_funnel" if getattr(model_class(compose([f"model={model}"]).model.name), "multi_task", False)
            else "movielens_small")
    assert check_space(compose([f"model={model}", f"data={data}"])) == []


def test_sweep_preflight_still_reports_a_choice_no_partner_makes_valid(tmp_path):
    from bars.validate import check_space

    # kernel heights of four layers: no channel choice (three layers) and not the configured [3, 3] matches them
    (tmp_path / "common.yaml").write_text("")
    (tmp_path / "ccpm.yaml").write_text("model.params.channels: [[16, 32, 64], [32, 64, 128]]\n"
                                        "model.params.kernel_heights: [[7, 5, 3], [7, 5, 3, 3]]\n")
    cfg = compose(["model=ccpm", f"sweep.search_dir={tmp_path}"])
    problems = check_space(cfg)
    assert len(problems) == 1 and "kernel_heights=[7, 5, 3, 3] gives an invalid config" in problems[0], problems


def _covered(p: SP.Param, value) -> bool:
    if p.type == "categorical":
        return (tuple(value) if isinstance(value, list) else value) in p.choices
    return p.low <= value <= p.high


# BARS tuner grids (ranking/ctr/<Model>/<Model>_<split>/*tuner_config*/model_config.yaml, all of the model's
# folders): the values each searched key took. The embedding regularizer is checked against the common range.
BARS_GRIDS = {
    "deepim": {"im_order": [2, 3, 4, 5], "im_batch_norm": [True, False], "dropout": [0.1, 0.2, 0.3, 0.4],
               "hidden_units": [[400, 400, 400]]},
    "destine": {"attention_dim": [32, 64, 128, 256], "attention_layers": [1, 2, 3, 4, 5, 6], "num_heads": [1, 2],
                "attention_dropout": [0.0, 0.1, 0.2], "use_wide": [True, False], "dropout": [0.2, 0.3],
                "dnn_hidden_units": [[400, 400, 400]]},
    "edcn": {"num_cross_layers": [1, 2, 3, 4], "temperature": [1.0, 5.0, 10.0, 20.0, 50.0],
             "use_regulation_module": [True, False], "dropout": [0.0, 0.1, 0.2, 0.3],
             "bridge_type": ["hadamard_product"]},
    "sam": {"interaction_type": ["SAM3A", "SAM3E"], "aggregation": ["concat", "weighted_pooling"],
            "num_interaction_layers": [1, 2, 3, 4, 5], "use_residual": [True, False],
            "dropout": [0.0, 0.1, 0.2, 0.3]},
    "aoanet": {"num_interaction_layers": [1, 2, 3], "num_subspaces": [1, 2, 4, 8, 16],
               "dropout": [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6], "batch_norm": [True, False]},
    "dssm": {"user_tower_dropout": [0.0, 0.1, 0.2, 0.3, 0.4], "item_tower_dropout": [0.1, 0.2, 0.3, 0.4]},
    "flen": {"dnn_hidden_units": [[1000, 1000, 1000], [1000, 1000, 1000, 1000], [2000, 2000, 2000, 2000]]},
    "ppnet": {"gate_emb_dim": [16, 32, 64], "gate_hidden_dim": [32, 64, 128, 256, 512],
              "hidden_units": [[512, 256, 128]], "dropout": [0.0, 0.1, 0.2]},
    "apg_dcnv2": {"rank_k": [[32, 16, 8]], "overparam_p": [[], [128, 64, 32]], "dropout": [0.0, 0.1]},
    "apg_deepfm": {"rank_k": [[32, 16, 8], [16, 8, 4]], "overparam_p": [[], [128, 64, 32]],
                   "dropout": [0.0, 0.1, 0.2, 0.3]},
    "fgcnn": {"channels": [[14, 16, 18, 20], [20, 22, 24, 26], [26, 28, 30, 32], [32, 34, 36, 38], [38, 40, 42, 44]],
              "kernel_heights": [7, 9], "recombined_channels": [3], "conv_batch_norm": [True, False],
              "dnn_hidden_units": [[1000, 1000, 1000], [1000, 1000, 1000, 1000], [1000, 1000, 1000, 1000, 1000],
                                   [2000, 2000, 2000, 2000], [4096, 2048], [4096, 2048, 1024, 512],
                                   [4096, 2048, 1024, 512, 256]],
              "dropout": [0.0, 0.1, 0.2]},
    "finalnet": {"block1_hidden_units": [[400], [800], [1000], [1200], [400, 400], [500, 500], [800, 400],
                                         [400, 400, 400], [1000, 1000, 1000], [1024, 512, 256], [2000, 2000, 2000]],
                 "block2_hidden_units": [[100], [200], [400], [500], [512], [200, 200], [400, 400], [500, 500],
                                         [800, 800], [1024, 512], [400, 400, 400], [1000, 1000, 1000]],
                 "block1_dropout": [0.0, 0.1, 0.2, 0.3, 0.4], "block2_dropout": [0.0, 0.1, 0.2, 0.3, 0.4],
                 "use_feature_gating": [True, False], "block1_activation": ["relu"], "block2_activation": ["relu"]},
    "finalnet_1b": {"block1_hidden_units": [[400], [400, 400], [400, 400, 400], [1000, 1000], [1200, 1200]],
                    "block1_dropout": [0.0, 0.1, 0.2], "use_feature_gating": [True, False],
                    "block1_activation": ["relu"]},
}

BARS_GRIDS.update({  # issue 11: MaskNet's two structures (BARS's tuner configs, split by model_type)
    "masknet": {"dnn_hidden_units": [[400, 400, 400], [1000, 1000, 1000, 1000, 1000], [2000, 2000, 2000]],
                "parallel_num_blocks": [1, 2, 3, 6, 8, 10], "parallel_block_dim": [50, 100, 200, 500],
                "reduction_ratio": [0.1, 0.2, 0.4, 0.5, 0.8, 1.0, 2.0, 4.0], "emb_layernorm": [False],
                "net_layernorm": [True, False], "dropout": [0.0, 0.1, 0.2, 0.3]},
    "masknet_serial": {"dnn_hidden_units": [[400, 400, 400]],
                       "reduction_ratio": [0.1, 0.2, 0.3, 0.4, 0.5, 0.8, 1.0, 2.0, 4.0, 8.0],
                       "emb_layernorm": [True, False], "net_layernorm": [True], "dropout": [0.2, 0.3, 0.4, 0.5]},
})

BARS_GRIDS.update({  # issue 12: DMIN's four sequential boards (ranking/ctr/DMIN/*/DMIN_*_tuner_config_*.yaml)
    "dmin": {"num_heads": [1, 2, 4, 8], "use_behavior_refiner": [True, False], "use_pos_emb": [True, False],
             "pos_emb_dim": [2, 4, 8, 16, 32], "enable_sum_pooling": [True, False],
             "attention_hidden_units": [[512, 256], [256, 128]], "attention_activation": ["relu", "dice"],
             "attention_dropout": [0.1, 0.2], "dnn_hidden_units": [[1024, 512, 256], [512, 256, 128]],
             "activation": ["relu", "dice"], "dropout": [0.0, 0.1], "batch_norm": [True, False],
             "bn_only_once": [True, False]},
})

@pytest.mark.parametrize("model", sorted(BARS_GRIDS))
def test_zoo3_spaces_cover_the_bars_grids(model):
    space = SP.load_search_space(model)  # without the movielens_small narrowing
    for key, values in BARS_GRIDS[model].items():
        p = space[f"model.params.{key}"]
        missing = [v for v in values if not _covered(p, v)]
        assert not missing, (model, key, missing)
    reg = space["train.embedding_regularizer"]
    assert reg.low <= 1e-6 and reg.high >= 0.1  # BARS: 1e-6 .. 0.1 on these models' splits


def test_the_grids_named_here_are_model_configs():
    assert set(BARS_GRIDS) <= {p.stem for p in Path(CONF_DIR / "model").glob("*.yaml")}


def test_fgcnn_searches_learning_rate_5e_4():
    """With conv batch norm at lr 1e-3 FGCNN can stall at AUC 0.5 (reczoo/BARS#10: lr 5e-4 fixes it)."""
    p = SP.load_search_space("fgcnn")["train.learning_rate"]
    assert _covered(p, 5e-4) and _covered(p, 1e-3) and _covered(p, 3e-4)
