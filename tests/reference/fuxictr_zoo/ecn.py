"""ecn: FuxiCTR 2.3.10 composition following the authors' salmon1802/FCN ``src/ECN.py`` (class ``ECN``: the
multi-head embedding and the exponential cross network of fcn.py, output Linear ``fc``, FuxiCTR's default loss), and
the transplant of our weights into it."""

from __future__ import annotations

from fuxictr_reference import E, Reference, RefModel, copy_embedding

from fuxictr_zoo.fcn import CrossNetwork, MultiHeadFeatureEmbedding, copy_cross


class ECN(RefModel):  # salmon1802/FCN src/ECN.py
    def __init__(self, fmap, p, lr, reg_e, reg_n):
        super().__init__(fmap, reg_e, reg_n)
        heads = p["num_heads"]
        self.embedding_layer = MultiHeadFeatureEmbedding(fmap, p["embedding_dim"] * heads, heads)
        self.ECN = CrossNetwork(fmap.sum_emb_out_dim(), p["num_cross_layers"], p["layer_norm"], p["batch_norm"],
                                p["dropout"], heads, linear=False, out="fc")
        self.finish(lr)

    def forward(self, inputs):
        y = self.ECN(self.embedding_layer(self.get_inputs(inputs))).mean(dim=1)
        return {"y_pred": self.output_activation(y)}


def transplant_ecn(ours, theirs):
    copy_embedding(theirs.embedding_layer.embedding_layer, ours.embedding, "embedding")
    copy_cross(theirs.ECN, ours.ecn, "ecn")


REFERENCE = Reference(ECN, transplant_ecn, {
    "three_heads_ln_bn": {**E, "num_heads": 3, "num_cross_layers": 4, "dropout": 0.0, "layer_norm": True,
                          "batch_norm": True},
    "one_head_plain": {**E, "num_heads": 1, "num_cross_layers": 2, "dropout": 0.0, "layer_norm": False,
                       "batch_norm": False},
}, "salmon1802/FCN:src/ECN.py@1835ffe0")
