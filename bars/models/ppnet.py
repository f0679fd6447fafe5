"""PPNet, the parameter personalisation network of PEPNet (Chang et al., "PEPNet: Parameter and Embedding
Personalized Network for Infusing with Personalized Prior Information", KDD 2023): an MLP whose every hidden
layer is scaled, per sample, by a gate computed from "prior" features.

    x   = flat E (all fields)                     z = [stop_gradient(x); flat E'_priors]
    h_0 = x;  h_l = (Linear -> BN? -> act -> Dropout?)(h_{l-1}) * GateNU_l(z)
    GateNU(z) = 2 * sigmoid(W_2 ReLU(W_1 z + b_1) + b_2)
    logit = Linear(h_L)

``E'_priors``: the prior fields embedded by a second table of width ``gate_emb_dim`` (their own rows, trained by
the gates only), in spec order as FuxiCTR's feature-map order. The priors are ``gate_priors`` (field names, FuxiCTR's key) followed by the fields of the feature
groups in ``gate_prior_groups`` (in spec order) — groups keep a default config independent of the dataset's
field names; they come from the feature spec (``data.groups``), and naming a group the spec lacks is an error
naming that key. With no priors the gates read ``stop_gradient(x)`` alone.

Config -> FuxiCTR ``PPNet`` (model_zoo/PEPNet/src/PPNet.py): gate_emb_dim, gate_priors, gate_hidden_dim,
hidden_units, ``activation`` = hidden_activations, ``dropout`` = net_dropout, batch_norm; ``gate_prior_groups``
is ours. Parameters: ``embedding.weight`` = embedding_layer, ``gate_embedding.weight`` = gate_embed_layer,
``ppn.mlp_layers[l].net`` = ppn.mlp_layers[l], ``ppn.mlp_layers[-1]``, ``ppn.gate_layers[l].gate`` =
ppn.gate_layers[l].gate.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from bars.data.spec import FEATURE_GROUPS, FeatureSpec
from bars.models._common import check_deep, check_dim, logits
from bars.models.layers import FeatureEmbedding, GatedMLP, require_groups
from bars.models.layers.personalization import gate_input
from bars.models.registry import ModelConfigError, register


@dataclass(frozen=True)
class PPNetConfig:
    embedding_dim: int
    gate_emb_dim: int = 10
    gate_priors: tuple[str, ...] = ()
    gate_prior_groups: tuple[str, ...] = ()
    gate_hidden_dim: int = 64
    hidden_units: tuple[int, ...] = (64, 64, 64)
    activation: str = "relu"
    dropout: float = 0.0
    batch_norm: bool = False

    def __post_init__(self) -> None:
        check_deep(self, "hidden_units")
        check_dim("gate_emb_dim", self.gate_emb_dim)
        check_dim("gate_hidden_dim", self.gate_hidden_dim)
        bad = [g for g in self.gate_prior_groups if g not in FEATURE_GROUPS]
        if bad:
            raise ValueError(f"gate_prior_groups {bad}: groups are {list(FEATURE_GROUPS)}")
        for key in ("gate_priors", "gate_prior_groups"):
            names = getattr(self, key)
            if len(set(names)) != len(names):
                raise ValueError(f"{key} {list(names)} names an entry twice")


def prior_fields(spec: FeatureSpec, cfg: PPNetConfig) -> list[str]:
    """``gate_priors`` then the fields of ``gate_prior_groups`` (spec order); errors name the config key."""
    unknown = [n for n in cfg.gate_priors if n not in spec.names]
    if unknown:
        raise ModelConfigError(f"ppnet gate_priors: fields {unknown} are not in the spec; fields: {spec.names}")
    fields = list(cfg.gate_priors)
    if cfg.gate_prior_groups:
        groups = require_groups(spec, "ppnet (gate_prior_groups)", cfg.gate_prior_groups,
                                nonempty=cfg.gate_prior_groups)
        for g in cfg.gate_prior_groups:
            twice = [n for n in groups[g] if n in fields]
            if twice:
                raise ModelConfigError(f"ppnet: fields {twice} are priors twice (gate_priors and group {g!r} of "
                                       f"gate_prior_groups)")
            fields += groups[g]
    return fields


@register("ppnet", PPNetConfig)
class PPNet(nn.Module):
    def __init__(self, spec: FeatureSpec, cfg: PPNetConfig) -> None:
        super().__init__()
        self.cfg = cfg
        priors = prior_fields(spec, cfg)
        self.embedding = FeatureEmbedding(spec, cfg.embedding_dim)
        # the prior embeddings are concatenated in spec order, as FuxiCTR's (feature-map order)
        self.gate_embedding = FeatureEmbedding(spec, cfg.gate_emb_dim, fields=priors) if priors else None
        x_dim = self.embedding.output_dim
        self.ppn = GatedMLP(x_dim, cfg.hidden_units, x_dim + len(priors) * cfg.gate_emb_dim, cfg.gate_hidden_dim,
                            cfg.activation, cfg.batch_norm, cfg.dropout, output_dim=1)

    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        x = self.embedding.flat(batch)
        prior = self.gate_embedding.flat(batch) if self.gate_embedding is not None else None
        return logits(self.ppn(x, gate_input(x, prior)))
