"""EulerNet (Tian et al., "EulerNet: Adaptive Feature Interaction Learning via Euler's Formula for CTR
Prediction", SIGIR 2023): each field embedding ``e`` becomes the complex vector ``mu e^{i e}`` (``mu`` a learned
modulus per field), and an interaction of any real order is a linear map of log-moduli and phases (Euler's
formula turns products of powers into sums):

    r_0 = mu cos E,  p_0 = mu sin E                                     [B, F, D]
    (r_l, p_l) = EulerInteractionLayer_l(r_{l-1}, p_{l-1})               [B, shape[l-1], D]
    logit = reg(flat r_L) + reg(flat p_L)

(:class:`bars.models.layers.EulerNetwork` / :class:`~bars.models.layers.EulerInteractionLayer`: explicit part
``exp(A^T log|z| + b) e^{i (A^T arg z + b')}`` plus an implicit ReLU Linear per part, optional LayerNorm).

Config -> FuxiCTR ``EulerNet`` (model_zoo/EulerNet/src/EulerNet.py, 2.3.10): ``shape`` = shape (the number of
output "fields" of each interaction layer; ``[]``: none, ``reg`` reads the input directly), ``ex_dropout`` =
net_ex_dropout (on the log-modulus and phase), ``im_dropout`` = net_im_dropout (on the implicit Linear's input),
``layer_norm`` = layer_norm. Parameters: ``embedding.weight`` = embedding_layer,
``net.layers[l].inter_orders / weight / bias / bias_lam / bias_theta / norm_r / norm_p`` =
Euler_interaction_layers[l].inter_orders / im.weight / im.bias / bias_lam / bias_theta / norm_r / norm_p,
``net.mu`` = mu, ``net.weight / bias`` = reg. Initialisation as FuxiCTR's: FuxiCTR calls ``reset_parameters``
before it builds the interaction layers and ``reg``, so only the embeddings get the BARS initialisation; the
layers keep their own (orders identity or near one-hot, ``im`` weight xavier-uniform with torch's default bias,
``bias_lam`` / ``bias_theta`` N(0, 0.01^2), ``mu`` ones, ``reg`` weight xavier-normal with torch's default bias).
The LayerNorms exist (and are net-regularized) even with ``layer_norm: false``, as in FuxiCTR.

No BARS result exists; the authors' FuxiCTR configs and logs (Ethan-TZ/EulerNet, ``#Code4FuxiCTR#``) are the
defaults of conf/model/eulernet.yaml.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from bars.data.spec import FeatureSpec
from bars.models._common import check_dim, check_dropout, check_units, logits
from bars.models.layers import EulerNetwork, FeatureEmbedding
from bars.models.registry import register


@dataclass(frozen=True)
class EulerNetConfig:
    embedding_dim: int
    shape: tuple[int, ...] = (52,)
    ex_dropout: float = 0.0
    im_dropout: float = 0.0
    layer_norm: bool = True

    def __post_init__(self) -> None:
        check_dim("embedding_dim", self.embedding_dim)
        check_units("shape", self.shape)
        check_dropout("ex_dropout", self.ex_dropout)
        check_dropout("im_dropout", self.im_dropout)


@register("eulernet", EulerNetConfig)
class EulerNet(nn.Module):
    def __init__(self, spec: FeatureSpec, cfg: EulerNetConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.embedding = FeatureEmbedding(spec, cfg.embedding_dim)
        self.net = EulerNetwork(self.embedding.num_fields, cfg.embedding_dim, cfg.shape, cfg.layer_norm,
                                cfg.ex_dropout, cfg.im_dropout)

    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        return logits(self.net(self.embedding(batch)))
