"""Infrastructure of the FuxiCTR reference suite: the FeatureMap built from a bars FeatureSpec, the base of every
composition (FuxiCTR's installed ``BaseModel``), the weight-transplant helpers and the :class:`Reference` record.

Runs only in the reference environment (``make test-reference``: .venv-ref with fuxictr==2.3.10 and
torch==2.13.0); ``make test`` never collects this folder. One model = one module in ``fuxictr_zoo/`` (see
README.md).
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import tempfile
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml
from fuxictr.features import FeatureMap
from fuxictr.pytorch.layers import LogisticRegression, MLP_Block
from fuxictr.pytorch.models import BaseModel, MultiTaskModel
from torch import nn

from bars.data.spec import FeatureSpec

_MODEL_ROOT = tempfile.mkdtemp(prefix="fuxictr-ref-")

# ------------------------------------------------------------------------------------------------ feature map
def feature_map(spec: FeatureSpec, embedding_dim: int) -> FeatureMap:
    """A FuxiCTR FeatureMap equal to ``spec``: the same fields in the same order, index 0 = padding row (FuxiCTR's
    ``padding_idx``), the same vocabulary sizes, so the same integer batches feed both models; a field's feature
    group (``Feature.group``, set by :func:`with_groups`) is its FuxiCTR ``source`` ("" when it has none). A
    sequence field gets FuxiCTR's entry (``max_len``, ``padding_idx`` 0, ``oov_idx`` 1, ``share_embedding`` when
    it shares a table; padding and truncation happened before: both models see the same 0-padded indices); a
    model that pools some sequence itself (DIN, BST) gives the others a ``feature_encoder``, see
    :func:`pool_unpaired_sequences`."""
    fmap = FeatureMap(spec.dataset, _MODEL_ROOT)
    fmap.default_emb_dim = embedding_dim
    feats: OrderedDict[str, dict[str, Any]] = OrderedDict()
    for f in spec.features:
        if f.type == "categorical":
            feats[f.name] = {"type": "categorical", "vocab_size": f.vocab_size, "padding_idx": 0, "source": f.group}
        elif f.type == "numeric":
            feats[f.name] = {"type": "numeric", "source": f.group}
        elif f.type == "sequence":  # as FuxiCTR's FeatureProcessor writes a sequence column's entry
            feats[f.name] = {"type": "sequence", "vocab_size": f.vocab_size, "padding_idx": 0, "oov_idx": 1,
                             "max_len": f.max_len, "source": f.group}
            if f.share_embedding:  # FuxiCTR tests the key's presence (FeatureEmbeddingDict.init_weights)
                feats[f.name]["share_embedding"] = f.share_embedding
        else:
            raise NotImplementedError(f"reference feature map: {f.type} field {f.name!r} is not mapped yet")
    fmap.features = feats
    fmap.labels = list(spec.labels)  # a multi-task reference's spec has two (with_second_label)
    fmap.num_fields = fmap.get_num_fields()
    return fmap


def pool_unpaired_sequences(fmap: FeatureMap, attended) -> None:
    """Give every sequence field of ``fmap`` not in ``attended`` FuxiCTR's ``MaskedAveragePooling`` encoder (what
    a FuxiCTR dataset config must declare for a sequence a sequence model does not attend: bars mean-pools it)."""
    for name, f in fmap.features.items():
        if f["type"] == "sequence" and name not in set(attended):
            f["feature_encoder"] = "layers.MaskedAveragePooling()"


def with_groups(spec: FeatureSpec, groups: Mapping[str, Sequence[str]] | None) -> FeatureSpec:
    """``spec`` with the feature groups ``{group: [field names]}`` (what ``data.groups`` declares; every named
    field must exist, fields not named stay in no group); ``None``: ``spec`` unchanged. The groups models (DSSM,
    FLEN, PPNet's gate priors) read them, and :func:`feature_map` passes them to FuxiCTR as ``source``."""
    if groups is None:
        return spec
    where = {n: g for g, names in groups.items() for n in names}
    unknown = sorted(set(where) - set(spec.names))
    if unknown:
        raise ValueError(f"groups {dict(groups)}: fields {unknown} are not in the spec ({spec.names})")
    feats = tuple(dataclasses.replace(f, group=where.get(f.name, "")) for f in spec.features)
    return dataclasses.replace(spec, features=feats)


SECOND_LABEL = "conversion"


def with_second_label(spec: FeatureSpec, cols: Mapping[str, torch.Tensor], y: torch.Tensor
                      ) -> tuple[FeatureSpec, torch.Tensor]:
    """The multi-task cases' data: Frappe's real rows with a second, synthetic label column ``conversion`` next to
    the real ``label`` (as a click -> conversion funnel: 1 only on rows with label 1, for a deterministic third of
    them, those whose item and daytime indices sum to a multiple of 3), so every task has both classes and the
    two labels differ. Returns the spec with ``labels=(label, conversion)`` and the labels [N, 2]."""
    second = y * ((cols["item"].long() + cols["daytime"].long()) % 3 == 0).to(y.dtype)
    return dataclasses.replace(spec, labels=(spec.label, SECOND_LABEL)), torch.stack([y, second], dim=1)


# The feature groups of BARS's Frappe_x1 runs (ranking/ctr/DSSM/DSSM_frappe_x1/*/dataset_config.yaml), read from
# conf/data/frappe_x1.yaml's data.groups, which declares them: the context fields on the user side, no context group.
FRAPPE_X1_GROUPS = {g: tuple(names) for g, names in yaml.safe_load(
    (Path(__file__).resolve().parents[2] / "conf" / "data" / "frappe_x1.yaml").read_text(encoding="utf-8")
)["data"]["groups"].items()}
# The three groups of Frappe's fields by meaning (user / item / the context of the use), for models that need a
# context group (FLEN: FuxiCTR cannot run with an empty group).
FRAPPE_THREE_GROUPS = {"user": ("user",), "item": ("item", "cost"),
                       "context": ("daytime", "weekday", "isweekend", "homework", "weather", "country", "city")}


# ------------------------------------------------------------------------------------------------ base
class RefModel(BaseModel):
    """FuxiCTR's BaseModel with the keyword arguments its constructor needs; subclasses end their ``__init__``
    with :meth:`finish`, as every model_zoo model does (compile, reset_parameters, model_to_device)."""

    def __init__(self, fmap: FeatureMap, embedding_regularizer: float, net_regularizer: float) -> None:
        super().__init__(
            fmap,
            model_id=type(self).__name__,
            gpu=-1,
            embedding_regularizer=float(embedding_regularizer),
            net_regularizer=float(net_regularizer),
            verbose=0,
            model_root=_MODEL_ROOT,
            metrics=["AUC", "logloss"],
        )

    def finish(self, learning_rate: float) -> None:
        self.compile("adam", "binary_crossentropy", learning_rate)
        self.reset_parameters()
        self.model_to_device()

    def get_labels(self, inputs):
        """BaseModel's, with the labels in the model's dtype instead of always float32: the 20-step comparison
        runs both models in float64 (nothing else about the step changes)."""
        dtype = next(self.parameters()).dtype
        return inputs[self.feature_map.labels[0]].to(device=self.device, dtype=dtype).view(-1, 1)

    def logits(self, inputs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """The pre-sigmoid output ``[B]`` (FuxiCTR returns ``sigmoid``; ``output_activation`` is swapped)."""
        act, self.output_activation = self.output_activation, nn.Identity()
        try:
            return self.forward(dict(inputs))["y_pred"].reshape(-1)
        finally:
            self.output_activation = act


class RefMultiTaskModel(MultiTaskModel):
    """FuxiCTR's installed ``MultiTaskModel`` (per-task sigmoid outputs ``<label>_pred``, the sum of per-task
    BCE losses, its own regularization_loss) with the constructor arguments filled in: one binary task per label of
    the feature map. Subclasses end their ``__init__`` with :meth:`finish`, as model_zoo/multitask models do."""

    def __init__(self, fmap: FeatureMap, embedding_regularizer: float, net_regularizer: float) -> None:
        n = len(fmap.labels)
        super().__init__(
            fmap,
            model_id=type(self).__name__,
            task=["binary_classification"] * n,
            num_tasks=n,
            gpu=-1,
            embedding_regularizer=float(embedding_regularizer),
            net_regularizer=float(net_regularizer),
            verbose=0,
            model_root=_MODEL_ROOT,
            metrics=["AUC", "logloss"],
        )

    def finish(self, learning_rate: float) -> None:
        self.compile("adam", "binary_crossentropy", learning_rate)
        self.reset_parameters()
        self.model_to_device()

    def get_labels(self, inputs):
        """MultiTaskModel's, in the model's dtype (the 20-step comparison runs in float64)."""
        dtype = next(self.parameters()).dtype
        return [inputs[n].to(device=self.device, dtype=dtype).view(-1, 1) for n in self.feature_map.labels]

    def logits(self, inputs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """The pre-sigmoid outputs ``[B, T]`` in the labels' order (every ``output_activation`` swapped)."""
        acts = self.output_activation
        self.output_activation = nn.ModuleList(nn.Identity() for _ in acts)
        try:
            out = self.forward(dict(inputs))
            return torch.cat([out[f"{n}_pred"].reshape(-1, 1) for n in self.feature_map.labels], dim=1)
        finally:
            self.output_activation = acts


def mlp_block(input_dim, units, activation, batch_norm, dropout, output_dim=None, output_activation=None):
    return MLP_Block(
        input_dim=input_dim,
        output_dim=output_dim,
        hidden_units=list(units),
        hidden_activations=activation,
        output_activation=output_activation,
        dropout_rates=dropout,
        batch_norm=batch_norm,
    )



# ------------------------------------------------------------------------------------------------ transplant
def put(dst: torch.Tensor, src: torch.Tensor, where: str) -> None:
    """``dst <- src`` (same number of elements; reshaped to ``dst``'s shape)."""
    if dst.numel() != src.numel():
        raise ValueError(f"{where}: shapes differ: FuxiCTR {tuple(dst.shape)} vs bars {tuple(src.shape)}")
    with torch.no_grad():
        dst.copy_(src.detach().reshape(dst.shape))


_LEAVES = (nn.Linear, nn.Conv1d, nn.BatchNorm1d, nn.LayerNorm, nn.PReLU)


def copy_leaves(dst: nn.Module, src: nn.Module, where: str) -> None:
    """Copy every parameter and buffer of the stateful leaf modules (Linear/Conv1d, BatchNorm, LayerNorm, PReLU)
    of ``src`` (ours) into those of ``dst`` (FuxiCTR), paired in registration order; a Linear may pair with a
    Conv1d of kernel 1 (the same map)."""
    a = [m for m in dst.modules() if isinstance(m, _LEAVES)]
    b = [m for m in src.modules() if isinstance(m, _LEAVES)]
    if len(a) != len(b):
        raise ValueError(f"{where}: {len(a)} stateful layers in FuxiCTR vs {len(b)} in bars")
    for i, (x, y) in enumerate(zip(a, b, strict=True)):
        linear = (nn.Linear, nn.Conv1d)
        # bars's LayerNorm subclasses nn.LayerNorm (same tensors; a CPU kernel for narrow widths)
        same = type(x) is type(y) or (type(x) is nn.LayerNorm and isinstance(y, nn.LayerNorm))
        if not (same or (isinstance(x, linear) and isinstance(y, linear))):
            raise ValueError(f"{where}[{i}]: FuxiCTR {type(x).__name__} vs bars {type(y).__name__}")
        ours = dict(y.named_parameters()) | dict(y.named_buffers())
        for name, t in list(x.named_parameters()) + list(x.named_buffers()):
            if name not in ours:
                raise ValueError(f"{where}[{i}].{name}: bars {type(y).__name__} has no such tensor")
            put(t, ours[name], f"{where}[{i}].{name}")


def copy_embedding(dst: nn.Module, src, where: str) -> None:
    """FuxiCTR FeatureEmbedding (one nn.Embedding per field, row 0 = padding) <- bars FeatureEmbedding (packed
    table; field rows for indices >= 1). ``dst`` is a FeatureEmbedding or a FeatureEmbeddingDict; the sequence
    fields a sequence model pools itself (``unpooled``) are fields too."""
    layers = (dst.embedding_layer if hasattr(dst, "embedding_layer") else dst).embedding_layers
    names = list(src.field_names) + list(src.unpooled)  # (a table shared by several fields is written per field)
    if sorted(layers.keys()) != sorted(names):
        raise ValueError(f"{where}: fields differ: FuxiCTR {list(layers.keys())} vs bars {names}")
    for n in names:
        if n in src.num_names:
            j = src.num_names.index(n)
            put(layers[n].weight, src.numeric_weight[j], f"{where}.{n}")
        else:
            w = layers[n].weight
            with torch.no_grad():
                w[0].zero_()
            put(w[1:], src.table(n), f"{where}.{n}")


def copy_mlp(dst: nn.Module, src: nn.Module, where: str) -> None:
    """:func:`copy_leaves` plus the ``alpha`` of every Dice (FuxiCTR's ``layers.Dice`` <- ours), paired in
    registration order (their BatchNorms are leaves)."""
    copy_leaves(dst, src, where)
    a = [m for m in dst.modules() if type(m).__name__ == "Dice"]
    b = [m for m in src.modules() if type(m).__name__ == "Dice"]
    if len(a) != len(b):
        raise ValueError(f"{where}: {len(a)} Dice in FuxiCTR vs {len(b)} in bars")
    for i, (x, y) in enumerate(zip(a, b, strict=True)):
        put(x.alpha, y.alpha, f"{where}.dice[{i}].alpha")


def copy_lr(dst: LogisticRegression, src, where: str) -> None:
    copy_embedding(dst.embedding_layer, src.embedding, where + ".embedding")
    if (dst.bias is None) != (src.bias is None):
        raise ValueError(f"{where}: bias in FuxiCTR: {dst.bias is not None}, in bars: {src.bias is not None}")
    if dst.bias is not None:
        put(dst.bias, src.bias, where + ".bias")


# ------------------------------------------------------------------------------------------------ records
DATA = ("frappe", "frappe_seq", "frappe_seq_neg")  # the row sets a Reference may run on (fixtures of conftest.py)

@dataclass(frozen=True)
class Reference:
    """How to check one registered model against FuxiCTR: its composition, the weight transplant, and the
    configurations (switches) to check, each a full set of bars model params (dropout 0: the 20 training steps
    compare losses, and the two libraries draw different dropout masks)."""

    composition: Callable[..., RefModel]
    transplant: Callable[[nn.Module, RefModel], None]
    cases: Mapping[str, Mapping[str, Any]]
    source: str  # the FuxiCTR model_zoo file the composition follows
    # the feature groups of the Frappe rows every case runs on ({group: [fields]}, see with_groups), for the models
    # that read groups (FuxiCTR's feature ``source``); None: no groups
    groups: Mapping[str, Sequence[str]] | None = None
    # multi-task compositions (RefMultiTaskModel): the cases run on two labels, Frappe's and a synthetic second one
    # (with_second_label); our model returns logits [B, 2] and the 20 steps train both tasks
    multi_task: bool = False
    # training steps compared (test_equal_training_steps); fewer than the suite's 20 only with the measured reason
    # (steps_reason) why rounding alone outgrows the tolerance later
    steps: int = 20
    steps_reason: str = ""
    # the rows every case runs on: the name of a conftest fixture, "frappe" (the Frappe_x1 rows) or "frappe_seq"
    # (the same rows with synthetic behaviour histories sharing the item / cost tables: DIN, BST)
    data: str = "frappe"

    def __post_init__(self) -> None:
        if self.data not in DATA:
            raise ValueError(f"Reference.data: {self.data!r} is not one of {DATA}")


MLP = {"activation": "relu", "batch_norm": True, "dropout": 0.0}
MLP_OFF = {"activation": None, "batch_norm": None, "dropout": None}
E = {"embedding_dim": 10}


@dataclass(frozen=True)
class PaperOnly:
    """A registered model FuxiCTR has no counterpart of: why, and ``check(spec, batch)``, a test of the model
    against its paper's equations written out (raises AssertionError on a mismatch)."""

    reason: str
    check: Callable[[FeatureSpec, Mapping[str, torch.Tensor]], None]


@torch.no_grad()
def poison_(model: nn.Module) -> None:
    """Fill every parameter and floating buffer with NaN (integer buffers with -1), so that a tensor the
    transplant misses is found by :func:`unwritten`. Boolean tensors are left as built: they are masks fixed by the
    architecture, never weights (FuxiCTR's InnerProductInteraction keeps its ``triu_mask`` as a frozen bool
    Parameter), and a bool has no value that could mark it unwritten."""
    for t in list(model.parameters()) + list(model.buffers()):
        if t.dtype != torch.bool:
            t.fill_(math.nan if t.is_floating_point() else -1)


def unwritten(model: nn.Module) -> list[str]:
    named = list(model.named_parameters()) + list(model.named_buffers())
    return [n for n, t in named if (torch.isnan(t).any() if t.is_floating_point() else (t == -1).any())]


def biases_before_batchnorm(model: nn.Module) -> set[str]:
    """Names of Linear biases that a BatchNorm1d follows directly (in an ``nn.Sequential``). BatchNorm subtracts
    the batch mean, so such a bias does not change the model's output: its true gradient is zero, and Adam turns
    the rounding noise in its gradient into steps of up to the learning rate. It takes different values in two
    exact implementations; the 20-step weight comparison leaves these out (the losses include them). A composition
    adds those that a BatchNorm follows through other operations (e.g. a residual sum: the bias still shifts every
    row alike) with a ``null_biases()`` method."""
    out = set(model.null_biases()) if hasattr(model, "null_biases") else set()
    for prefix, m in model.named_modules():
        if isinstance(m, nn.Sequential):
            kids = list(m.named_children())
            for (n, a), (_, b) in itertools.pairwise(kids):
                if isinstance(a, nn.Linear) and a.bias is not None and isinstance(b, nn.BatchNorm1d):
                    out.add(f"{prefix}.{n}.bias" if prefix else f"{n}.bias")
    return out
