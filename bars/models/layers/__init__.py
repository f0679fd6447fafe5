"""Shared building blocks of the model zoo. Each block is tested once in tests/test_layers.py.

Conventions
- A batch is ``dict[str, Tensor]`` keyed by feature name: categorical int32 [B], numeric float32 [B],
  sequence int32 [B, L] (0 = padding). Labels are never in the batch.
- Every embedding table of a model lives inside a :class:`FeatureEmbedding`; :func:`split_parameters` uses that to
  separate the embedding regulariser's parameters from the net regulariser's.
- :func:`init_bars_` applies the BARS initialisation to a whole model.

The package holds one module per concept (core: activations, dropout, MLP; embedding; interaction; attention;
gating; params). Import blocks from ``bars.models.layers``; a new block goes into the module of its concept (or
a new one), is re-exported here and gets one test in tests/test_layers.py (or its own tests/test_layers_<concept>.py:
feature groups, interaction machine, disentangled attention, generalized interaction, generated weights,
personalisation).
"""

from bars.models.layers.attention import MultiHeadSelfAttention
from bars.models.layers.core import ACTIVATIONS, MLP, Dropout, ReLUDropout, activation
from bars.models.layers.disentangled_attention import DisentangledSelfAttention
from bars.models.layers.embedding import FeatureEmbedding, LogisticRegression
from bars.models.layers.gating import BilinearFusion, FeatureSelection
from bars.models.layers.generalized_interaction import GeneralizedInteraction, GeneralizedInteractionNet
from bars.models.layers.generated_weights import APGMLP, APGLinear
from bars.models.layers.groups import FeatureGroups, require_groups
from bars.models.layers.interaction import CIN, CrossNet, CrossNetV2, FMInteraction
from bars.models.layers.interaction_machine import InteractionMachine
from bars.models.layers.params import count_parameters, init_bars_, split_parameters
from bars.models.layers.personalization import GatedMLP, GateNU

__all__ = [
    "ACTIVATIONS",
    "APGMLP",
    "CIN",
    "MLP",
    # zoo3: DeepIM, DESTINE, AOANet, APG, DSSM / FLEN / PPNet
    "APGLinear",
    "BilinearFusion",
    "CrossNet",
    "CrossNetV2",
    "DisentangledSelfAttention",
    "Dropout",
    "FMInteraction",
    "FeatureEmbedding",
    "FeatureGroups",
    "FeatureSelection",
    "GateNU",
    "GatedMLP",
    "GeneralizedInteraction",
    "GeneralizedInteractionNet",
    "InteractionMachine",
    "LogisticRegression",
    "MultiHeadSelfAttention",
    "ReLUDropout",
    "activation",
    "count_parameters",
    "init_bars_",
    "require_groups",
    "split_parameters",
]
