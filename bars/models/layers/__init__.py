"""Shared building blocks of the model zoo. Each block is tested once in tests/test_layers.py.

Conventions
- A batch is ``dict[str, Tensor]`` keyed by feature name: categorical int32 [B], numeric float32 [B],
  sequence int32 [B, L] (0 = padding). Labels are never in the batch.
- Every embedding table of a model lives inside a :class:`FeatureEmbedding`; :func:`split_parameters` uses that to
  separate the embedding regulariser's parameters from the net regulariser's.
- :func:`init_bars_` applies the BARS initialisation to a whole model.

The package holds one module per concept (core: activations, dropout, MLP; embedding; interaction; attention;
gating; params). Import blocks from ``bars.models.layers``; a new block goes into the module of its concept (or
a new one), is re-exported here and gets one test in tests/test_layers.py (a new module: its own
tests/test_layers_<concept>.py).
"""

from bars.models.layers.anova import AnovaKernel, anova_kernels
from bars.models.layers.attention import MultiHeadSelfAttention
from bars.models.layers.bilinear import BilinearInteraction, bilinear_concat
from bars.models.layers.core import ACTIVATIONS, MLP, Dice, Dropout, LayerNorm, ReLUDropout, activation
from bars.models.layers.disentangled_attention import DisentangledSelfAttention
from bars.models.layers.embedding import FeatureEmbedding, LogisticRegression
from bars.models.layers.gating import BilinearFusion, FeatureSelection
from bars.models.layers.generalized_interaction import GeneralizedInteraction, GeneralizedInteractionNet
from bars.models.layers.generated_weights import APGMLP, APGLinear
from bars.models.layers.groups import FeatureGroups, require_groups
from bars.models.layers.inner_product import InnerProductInteraction, field_pairs, num_pairs
from bars.models.layers.interaction import CIN, CrossNet, CrossNetV2, FMInteraction
from bars.models.layers.interaction_machine import InteractionMachine
from bars.models.layers.params import count_parameters, init_bars_, split_parameters
from bars.models.layers.personalization import GatedMLP, GateNU
from bars.models.layers.squeeze_excitation import SqueezeExcitation

__all__ = [
    "ACTIVATIONS",
    "APGMLP",
    "CIN",
    "MLP",
    "APGLinear",
    "AnovaKernel",
    "BilinearFusion",
    "BilinearInteraction",
    "CrossNet",
    "CrossNetV2",
    "Dice",
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
    "InnerProductInteraction",
    "InteractionMachine",
    "LayerNorm",
    "LogisticRegression",
    "MultiHeadSelfAttention",
    "ReLUDropout",
    "SqueezeExcitation",
    "activation",
    "anova_kernels",
    "bilinear_concat",
    "count_parameters",
    "field_pairs",
    "init_bars_",
    "num_pairs",
    "require_groups",
    "split_parameters",
]

# zoo blocks, one module per concept (each tested in tests/test_layers_<concept>.py)
from bars.models.layers.behavior_transformer import BehaviorTransformer, MaskedSelfAttention, behaviour_masks
from bars.models.layers.convolution import (
    FeatureGeneration,
    FieldConvolution,
    KMaxPooling,
    ccpm_pooling_sizes,
    fgcnn_pooled_heights,
)
from bars.models.layers.euler import EulerInteractionLayer, EulerNetwork
from bars.models.layers.field_aware import (
    EmbeddingMemoryError,
    FieldAwareEmbedding,
    FieldAwareProducts,
    SlotSelect,
    ffm_slot,
    onn_slot,
    onnv2_slot,
)
from bars.models.layers.gated_cross import GatedCrossNet
from bars.models.layers.graph import FieldGraphNetwork, GraphLayer
from bars.models.layers.hierarchical_attention import (
    AttentionalAggregation,
    HierarchicalAttention,
    PositionwiseFeedForward,
    TransformerSelfAttention,
)
from bars.models.layers.holographic import HolographicInteraction
from bars.models.layers.logarithmic import LogarithmicTransformation
from bars.models.layers.masking import FieldLayerNorm, MaskBlock, mask_width
from bars.models.layers.target_attention import DINAttention
from bars.models.layers.wukong import FactorizationMachineBlock, WuKongLayer

__all__ += ["FieldConvolution", "KMaxPooling", "ccpm_pooling_sizes"]
__all__ += ["FeatureGeneration", "fgcnn_pooled_heights"]
__all__ += ["FactorizationMachineBlock", "WuKongLayer"]
__all__ += [
    "EmbeddingMemoryError", "FieldAwareEmbedding", "FieldAwareProducts", "SlotSelect", "ffm_slot", "onn_slot",
    "onnv2_slot",
]
__all__ += ["FieldGraphNetwork", "GraphLayer"]
__all__ += ["AttentionalAggregation", "HierarchicalAttention", "PositionwiseFeedForward", "TransformerSelfAttention"]
__all__ += ["HolographicInteraction"]
__all__ += ["LogarithmicTransformation"]
__all__ += ["DINAttention"]
__all__ += ["BehaviorTransformer", "MaskedSelfAttention", "behaviour_masks"]
__all__ += ["FieldLayerNorm", "MaskBlock", "mask_width"]
__all__ += ["GatedCrossNet"]
__all__ += ["EulerInteractionLayer", "EulerNetwork"]
from bars.models.layers.factorized_interaction import FactorizedInteraction, FeatureGating, FinalBlock
from bars.models.layers.quadratic import QuadraticLayer

__all__ += ["FactorizedInteraction", "FeatureGating", "FinalBlock"]
__all__ += ["QuadraticLayer"]
from bars.models.layers.multitask import CustomizedGateControl, MixtureOfExperts

__all__ += ["CustomizedGateControl", "MixtureOfExperts"]
from bars.models.layers.exponential_cross import SelfMaskCrossNet, multihead_split

__all__ += ["SelfMaskCrossNet", "multihead_split"]
from bars.models.layers.attention_weighted_moe import AttentionWeightedGate, gate_info_nce, random_keep

__all__ += ["AttentionWeightedGate", "gate_info_nce", "random_keep"]
from bars.models.layers.quadratic_interest import QuadraticInterestNetwork, SparseTargetAttention

__all__ += ["QuadraticInterestNetwork", "SparseTargetAttention"]
from bars.models.layers.deep_match import ItemToItemRelevance, UserToItemRelevance, pairwise_scores

__all__ += ["ItemToItemRelevance", "UserToItemRelevance", "pairwise_scores"]
from bars.models.layers.compression_cross import (
    CompressionCrossChannel,
    GlobalCompressor,
    LocalCompressor,
    MultiChannelCompressionCross,
    ProgressiveCross,
)

__all__ += ["CompressionCrossChannel", "GlobalCompressor", "LocalCompressor", "MultiChannelCompressionCross",
            "ProgressiveCross"]
from bars.models.layers.interest_evolution import (
    AttentionalGRU,
    AttentionalGRUCell,
    InterestAttention,
    behaviours_first,
    last_valid,
)

__all__ += ["AttentionalGRU", "AttentionalGRUCell", "InterestAttention", "behaviours_first", "last_valid"]
from bars.models.layers.multi_interest import (
    BehaviorRefiner,
    MultiInterestExtractor,
    PositionalTargetAttention,
    interest_masks,
)

__all__ += ["BehaviorRefiner", "MultiInterestExtractor", "PositionalTargetAttention", "interest_masks"]
from bars.models.layers.feature_gate import FeatureGate

__all__ += ["FeatureGate"]
from bars.models.layers.dimension_selection import DimensionSelection, prune_mask

__all__ += ["DimensionSelection", "prune_mask"]
from bars.models.layers.embedding_mask import BinaryStep, EmbeddingMask, binary_step, prefix_mask

__all__ += ["BinaryStep", "EmbeddingMask", "binary_step", "prefix_mask"]
from bars.models.layers.pair_interaction import PairInteraction, all_pairs, pair_keys, pair_vocabulary

__all__ += ["PairInteraction", "all_pairs", "pair_keys", "pair_vocabulary"]
