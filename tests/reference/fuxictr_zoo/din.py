"""din: FuxiCTR 2.3.10 composition following model_zoo/DIN/src/DIN.py (on the installed FeatureEmbeddingDict,
DIN_Attention, Dice and MLP_Block), and the transplant of our weights into it. Runs on the Frappe rows with
synthetic behaviour histories (``data="frappe_seq"``: item_history sharing item's table, cost_history sharing
cost's)."""

from __future__ import annotations

import torch
from fuxictr.pytorch.layers import Dice, DIN_Attention, FeatureEmbeddingDict, MLP_Block
from fuxictr_reference import E, Reference, RefModel, copy_embedding, copy_mlp, pool_unpaired_sequences
from torch import nn


def fuxictr_pairs(fmap, p) -> tuple[list[tuple[str, ...]], list[tuple[str, ...]]]:
    """Our ``target_fields`` / ``sequence_fields`` as FuxiCTR's ``*_target_field`` / ``*_sequence_field`` (lists of
    tuples: FuxiCTR sizes a pair's attention by ``len`` only for a tuple). Null: what a FuxiCTR user writes for
    the data: every sequence field sharing a categorical field's table, attended by that field, in one pair."""
    if p["target_fields"] is not None:
        return [tuple(t) for t in p["target_fields"]], [tuple(s) for s in p["sequence_fields"]]
    seqs = [n for n, f in fmap.features.items() if f["type"] == "sequence" and "share_embedding" in f
            and fmap.features[f["share_embedding"]]["type"] == "categorical"]
    return [tuple(fmap.features[n]["share_embedding"] for n in seqs)], [tuple(seqs)]


class DIN(RefModel):  # model_zoo/DIN/src/DIN.py
    def __init__(self, fmap, p, lr, reg_e, reg_n):
        super().__init__(fmap, reg_e, reg_n)
        self.target_fields, self.sequence_fields = fuxictr_pairs(fmap, p)
        pool_unpaired_sequences(fmap, [n for s in self.sequence_fields for n in s])
        self.embedding_dim = dim = p["embedding_dim"]
        self.use_softmax = p["use_softmax"]
        self.embedding_layer = FeatureEmbeddingDict(fmap, dim)
        self.attention_layers = nn.ModuleList([
            DIN_Attention(dim * len(t), attention_units=list(p["attention_hidden_units"]),
                          hidden_activations=p["attention_activation"],
                          output_activation=p["attention_output_activation"],
                          dropout_rate=p["attention_dropout"], use_softmax=p["use_softmax"])
            for t in self.target_fields])
        units = list(p["dnn_hidden_units"])
        act = [Dice(u) for u in units] if p["activation"].lower() == "dice" else p["activation"]
        self.dnn = MLP_Block(input_dim=fmap.sum_emb_out_dim(), output_dim=1, hidden_units=units,
                             hidden_activations=act, dropout_rates=p["dropout"], batch_norm=p["batch_norm"])
        self.finish(lr)

    def null_biases(self):
        """With softmax the attention scores of a row are shifted alike by the output Linear's bias, which
        softmax ignores: its true gradient is zero (see biases_before_batchnorm)."""
        if not self.use_softmax:
            return set()
        return {f"attention_layers.{i}.attention_layer.mlp.{len(a.attention_layer.mlp) - 1}.bias"
                for i, a in enumerate(self.attention_layers)}

    def forward(self, inputs):
        X = self.get_inputs(inputs)
        emb = self.embedding_layer(X)
        for att, targets, seqs in zip(self.attention_layers, self.target_fields, self.sequence_fields, strict=True):
            t = torch.cat([emb[n] for n in targets], dim=-1)
            h = torch.cat([emb[n] for n in seqs], dim=-1)
            pooled = att(t, h, X[seqs[0]].long() != 0)  # the first sequence field's padding is the pair's mask
            for n, part in zip(seqs, pooled.split(self.embedding_dim, dim=-1), strict=True):
                emb[n] = part
        # (model_zoo passes the sigmoid to MLP_Block as its output activation; applied here, so logits() sees
        # the pre-sigmoid value)
        return {"y_pred": self.output_activation(self.dnn(self.embedding_layer.dict2tensor(emb, flatten_emb=True)))}


def transplant_din(ours, theirs):
    copy_embedding(theirs.embedding_layer, ours.embedding, "embedding")
    if len(theirs.attention_layers) != len(ours.attention):
        raise ValueError(f"din: {len(theirs.attention_layers)} attention units in FuxiCTR vs {len(ours.attention)}")
    for i, (t, o) in enumerate(zip(theirs.attention_layers, ours.attention, strict=True)):
        copy_mlp(t.attention_layer, o.mlp, f"attention[{i}]")
    copy_mlp(theirs.dnn, ours.mlp, "dnn")


BASE = {**E, "dnn_hidden_units": (64, 32), "activation": "relu", "attention_hidden_units": (16,),
        "attention_activation": "dice", "attention_output_activation": None, "attention_dropout": 0.0,
        "dropout": 0.0, "batch_norm": False, "use_softmax": False, "target_fields": None, "sequence_fields": None}

REFERENCE = Reference(DIN, transplant_din, {
    # the spec's pair: (item, cost) over (item_history, cost_history), Dice attention, no softmax
    "inferred-pair": BASE,
    # BARS's tuned DIN runs: Dice in the MLP too (with batch norm: see docs/fidelity.md section 9), softmax on
    # AmazonElectronics_x1
    "dice-mlp": {**BASE, "activation": "dice", "attention_hidden_units": (32, 16)},
    "bn": {**BASE, "batch_norm": True},
    "softmax": {**BASE, "use_softmax": True},
    # two pairs, each with its own attention unit; ReLU attention with a sigmoid output
    "two-pairs-relu-sigmoid": {**BASE, "attention_activation": "relu", "attention_output_activation": "sigmoid",
                               "target_fields": (("item",), ("cost",)),
                               "sequence_fields": (("item_history",), ("cost_history",))},
    # one attended history; the other sequence (cost_history) is mean-pooled (FuxiCTR: MaskedAveragePooling)
    "item-only-prelu": {**BASE, "activation": "prelu", "attention_hidden_units": (32, 8),
                        "target_fields": (("item",),), "sequence_fields": (("item_history",),)},
}, "model_zoo/DIN/src/DIN.py", data="frappe_seq")
