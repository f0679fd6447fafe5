"""dmin: FuxiCTR 2.3.10 composition following model_zoo/DMIN/src/DMIN.py (its BehaviorRefinerLayer,
MultiInterestExtractorLayer and TargetAttention written here from that file, on torch's MultiheadAttention as
there and FuxiCTR's installed ScaledDotProductAttention, MaskedSumPooling, FeatureEmbeddingDict and MLP_Block), and
the transplant of our weights into it. Runs on the Frappe rows with synthetic behaviour histories
(``data="frappe_seq"``: item_history sharing item's table, cost_history sharing cost's).

The auxiliary loss is not composed: FuxiCTR 2.3.10 cannot compute it (``add_loss`` reads ``self.model_dim``, which
DMIN never sets, and multiplies 2N losses by N mask values), and every BARS run has ``aux_loss_lambda: 0``; the
cases keep it at 0 (ours: tests/test_models_dmin.py)."""

from __future__ import annotations

import torch
from fuxictr.pytorch.layers import (
    FeatureEmbeddingDict,
    MaskedSumPooling,
    MLP_Block,
    ScaledDotProductAttention,
)
from fuxictr_reference import (
    E,
    Reference,
    RefModel,
    copy_embedding,
    copy_leaves,
    copy_mlp,
    pool_unpaired_sequences,
    put,
)
from torch import nn

from fuxictr_zoo.din import fuxictr_pairs


class BehaviorRefinerLayer(nn.Module):  # model_zoo/DMIN: MHA, residual, layer norm, 2x feed-forward, residual
    def __init__(self, dim, num_heads, attn_dropout, net_dropout, layer_norm):
        super().__init__()
        self.attention = nn.MultiheadAttention(dim, num_heads=num_heads, dropout=attn_dropout, batch_first=True)
        self.ffn = nn.Sequential(nn.Linear(dim, dim * 2), nn.ReLU(), nn.Linear(dim * 2, dim))
        self.dropout = nn.Dropout(net_dropout)
        self.layer_norm = nn.LayerNorm(dim) if layer_norm else None

    def forward(self, x, attn_mask):
        # as model_zoo (``1 - attn_mask.float()``): a float mask "1 for masked positions", which torch adds; in the
        # model's dtype so the float64 steps run (torch rejects a float32 mask with float64 queries)
        attn_mask = 1 - attn_mask.to(x.dtype)
        s = self.dropout(self.attention(x, x, x, attn_mask=attn_mask)[0]) + x
        if self.layer_norm is not None:
            s = self.layer_norm(s)
        return self.ffn(s) + s


class TargetAttention(nn.Module):  # model_zoo/DMIN: DIN's unit on the position-projected target, softmax
    def __init__(self, dim, units, activation, dropout, use_pos_emb, pos_emb_dim, max_seq_len):
        super().__init__()
        self.use_pos_emb = use_pos_emb
        if use_pos_emb:
            self.pos_emb = nn.Parameter(torch.zeros(max_seq_len, pos_emb_dim))
            self.W_proj = nn.Linear(dim + pos_emb_dim, dim)
        self.attn_mlp = MLP_Block(input_dim=dim * 4, output_dim=1, hidden_units=list(units),
                                  hidden_activations=activation, output_activation=None, dropout_rates=dropout,
                                  batch_norm=False)

    def forward(self, sequence_emb, target_emb, mask):
        seq_len = sequence_emb.size(1)
        target_emb = target_emb.unsqueeze(1).expand(-1, seq_len, -1)
        if self.use_pos_emb:
            target_emb = self.W_proj(torch.cat([target_emb, self.pos_emb.expand(target_emb.size(0), -1, -1)], dim=-1))
        z = torch.cat([target_emb, sequence_emb, target_emb - sequence_emb, target_emb * sequence_emb], dim=-1)
        score = self.attn_mlp(z.view(-1, 4 * target_emb.size(-1))).view(-1, seq_len)
        score = score.masked_fill_(mask.float() == 0, -1.e9).softmax(dim=-1)
        return (score.unsqueeze(-1) * sequence_emb).sum(dim=1)


class MultiInterestExtractorLayer(nn.Module):  # model_zoo/DMIN: one interest per self-attention head
    def __init__(self, dim, num_heads, attn_dropout, net_dropout, layer_norm, units, activation, use_pos_emb,
                 pos_emb_dim, max_seq_len):
        super().__init__()
        self.head_dim = dim // num_heads
        self.num_heads = num_heads
        self.scale = self.head_dim ** 0.5
        self.W_qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.attention = ScaledDotProductAttention(attn_dropout)
        self.W_o = nn.ModuleList([nn.Linear(self.head_dim, dim, bias=False) for _ in range(num_heads)])
        self.dropout = nn.ModuleList([nn.Dropout(net_dropout) for _ in range(num_heads)]) if net_dropout > 0 else None
        self.layer_norm = nn.ModuleList([nn.LayerNorm(dim) for _ in range(num_heads)]) if layer_norm else None
        self.ffn = nn.ModuleList([nn.Sequential(nn.Linear(dim, dim * 2), nn.ReLU(), nn.Linear(dim * 2, dim))
                                  for _ in range(num_heads)])
        self.target_attention = nn.ModuleList([
            TargetAttention(dim, units, activation, attn_dropout, use_pos_emb, pos_emb_dim, max_seq_len)
            for _ in range(num_heads)])

    def forward(self, sequence_emb, target_emb, attn_mask, pad_mask):
        query, key, value = torch.chunk(self.W_qkv(sequence_emb), chunks=3, dim=-1)
        b = query.size(0)
        query, key, value = (t.view(b, -1, self.num_heads, self.head_dim).transpose(1, 2)
                             for t in (query, key, value))
        attn, _ = self.attention(query, key, value, scale=self.scale, mask=attn_mask)
        interests = []
        for idx, h_head in enumerate(torch.chunk(attn, chunks=self.num_heads, dim=1)):
            s = self.W_o[idx](h_head.squeeze(1))
            if self.dropout is not None:
                s = self.dropout[idx](s)
            s = s + sequence_emb
            if self.layer_norm is not None:
                s = self.layer_norm[idx](s)
            head_out = self.ffn[idx](s) + s
            interests.append(self.target_attention[idx](head_out, target_emb, pad_mask))
        return interests


class DMIN(RefModel):  # model_zoo/DMIN/src/DMIN.py (aux_loss_lambda 0)
    def __init__(self, fmap, p, lr, reg_e, reg_n):
        super().__init__(fmap, reg_e, reg_n)
        if p["aux_loss_lambda"] or p["neg_sequence_fields"] is not None or p["refiner_mask"] != "soft":
            raise ValueError("dmin composition: FuxiCTR has no aux loss it can compute and only the soft refiner mask")
        self.target_field, self.sequence_field = fuxictr_pairs(fmap, p)
        pool_unpaired_sequences(fmap, [n for s in self.sequence_field for n in s])
        dim = p["embedding_dim"]
        self.num_heads = p["num_heads"]
        self.enable_sum_pooling = p["enable_sum_pooling"]
        self.dice_attention = p["attention_activation"].lower() == "dice"
        self.embedding_layer = FeatureEmbeddingDict(fmap, dim)
        self.sum_pooling = MaskedSumPooling()
        self.behavior_refiner = nn.ModuleList() if p["use_behavior_refiner"] else None
        self.multi_interest_extractor = nn.ModuleList()
        feature_dim = fmap.sum_emb_out_dim()
        for targets, seqs in zip(self.target_field, self.sequence_field, strict=True):
            model_dim = dim * len(targets)
            max_seq_len = fmap.features[seqs[0]]["max_len"]
            feature_dim += model_dim * (self.num_heads - 1)
            if self.enable_sum_pooling:
                feature_dim += model_dim * 2
            if self.behavior_refiner is not None:
                self.behavior_refiner.append(BehaviorRefinerLayer(model_dim, self.num_heads, p["attention_dropout"],
                                                                  p["dropout"], p["layer_norm"]))
            self.multi_interest_extractor.append(MultiInterestExtractorLayer(
                model_dim, self.num_heads, p["attention_dropout"], p["dropout"], p["layer_norm"],
                p["attention_hidden_units"], p["attention_activation"], p["use_pos_emb"], p["pos_emb_dim"],
                max_seq_len))
        # (model_zoo passes the sigmoid to MLP_Block as its output activation; applied in forward, so logits()
        # sees the pre-sigmoid value)
        self.dnn = MLP_Block(input_dim=feature_dim, output_dim=1, hidden_units=list(p["dnn_hidden_units"]),
                             hidden_activations=p["activation"], dropout_rates=p["dropout"],
                             batch_norm=p["batch_norm"], bn_only_once=p["bn_only_once"])
        self.finish(lr)

    def get_mask(self, x):  # model_zoo's: true = keep; padding keys hidden except the query itself; causal
        padding_mask = x == 0
        seq_len = padding_mask.size(1)
        attn_mask = padding_mask.unsqueeze(1).repeat(1, seq_len, 1)
        attn_mask = attn_mask & ~torch.eye(seq_len, device=x.device).bool().unsqueeze(0).expand_as(attn_mask)
        causal = torch.triu(torch.ones(seq_len, seq_len, device=x.device), 1).bool().unsqueeze(0)
        attn_mask = attn_mask | causal.expand_as(attn_mask)
        attn_mask = attn_mask.unsqueeze(1).repeat(1, self.num_heads, 1, 1).flatten(end_dim=1)
        return ~padding_mask, ~attn_mask

    def null_biases(self):
        """Softmax ignores a shift shared by a row's scores: the key part of the refiner's in-projection bias (the
        tensor shared with the query and value parts, as BST) and the output bias of each target attention's MLP
        have zero true gradients (see biases_before_batchnorm). With a piecewise-linear hidden activation (ReLU,
        PReLU) so may a hidden bias of that MLP, by the data: a unit in its linear part at every behaviour of every
        row of the batch shifts all of a row's scores alike (measured on the Frappe rows: one unit of the second
        layer of inferred-pair's second head, gradient 3e-19 against 1e-4 for the others, then 1.4e-4 apart after
        20 steps). Those biases leave the weight comparison; the losses still cover them."""
        out = {n for n, _ in self.named_parameters() if n.endswith("attention.in_proj_bias")}
        for i, ext in enumerate(self.multi_interest_extractor):
            for k, ta in enumerate(ext.target_attention):
                for j, m in enumerate(ta.attn_mlp.mlp):
                    last = j == len(ta.attn_mlp.mlp) - 1
                    if isinstance(m, nn.Linear) and (last or not self.dice_attention):
                        out.add(f"multi_interest_extractor.{i}.target_attention.{k}.attn_mlp.mlp.{j}.bias")
        return out

    def forward(self, inputs):
        X = self.get_inputs(inputs)
        emb = self.embedding_layer(X)
        concat = []
        for i, (targets, seqs) in enumerate(zip(self.target_field, self.sequence_field, strict=True)):
            target_emb = torch.cat([emb[n] for n in targets], dim=-1)
            sequence_emb = torch.cat([emb[n] for n in seqs], dim=-1)
            pad_mask, attn_mask = self.get_mask(X[seqs[0]])
            refined = sequence_emb if self.behavior_refiner is None else self.behavior_refiner[i](sequence_emb,
                                                                                                   attn_mask)
            concat += self.multi_interest_extractor[i](refined, target_emb, attn_mask, pad_mask)
            if self.enable_sum_pooling:
                total = self.sum_pooling(sequence_emb)
                concat += [total, target_emb * total]
        concat += [e for e in emb.values() if e.ndim == 2]
        return {"y_pred": self.output_activation(self.dnn(torch.cat(concat, dim=-1)))}


def transplant_dmin(ours, theirs):
    copy_embedding(theirs.embedding_layer, ours.embedding, "embedding")
    if (theirs.behavior_refiner is None) != (ours.refiners is None):
        raise ValueError("dmin: behaviour refiner present in one side only")
    for i, (t, o) in enumerate(zip(theirs.behavior_refiner or [], ours.refiners or [], strict=True)):
        w = f"refiner[{i}]"
        put(t.attention.in_proj_weight, o.attention.in_proj_weight, f"{w}.in_proj_weight")
        put(t.attention.in_proj_bias, o.attention.in_proj_bias, f"{w}.in_proj_bias")
        put(t.attention.out_proj.weight, o.attention.out_weight, f"{w}.out_weight")
        put(t.attention.out_proj.bias, o.attention.out_bias, f"{w}.out_bias")
        copy_leaves(t.ffn, o.ffn, f"{w}.ffn")
        if (t.layer_norm is None) != (o.layer_norm is None):
            raise ValueError(f"{w}: layer norm present in one side only")
        if t.layer_norm is not None:
            copy_leaves(t.layer_norm, o.layer_norm, f"{w}.layer_norm")
    for i, (t, o) in enumerate(zip(theirs.multi_interest_extractor, ours.extractors, strict=True)):
        w = f"extractor[{i}]"
        put(t.W_qkv.weight, o.qkv.weight, f"{w}.qkv")
        if (t.layer_norm is None) != (o.layer_norm is None):
            raise ValueError(f"{w}: layer norm present in one side only")
        for k in range(t.num_heads):
            put(t.W_o[k].weight, o.out[k].weight, f"{w}.out[{k}]")
            if t.layer_norm is not None:
                copy_leaves(t.layer_norm[k], o.layer_norm[k], f"{w}.layer_norm[{k}]")
            copy_leaves(t.ffn[k], o.ffn[k], f"{w}.ffn[{k}]")
            ta, oa = t.target_attention[k], o.target_attention[k]
            if ta.use_pos_emb != (oa.pos_emb is not None):
                raise ValueError(f"{w}.target_attention[{k}]: position embedding present in one side only")
            if ta.use_pos_emb:
                put(ta.pos_emb, oa.pos_emb, f"{w}.target_attention[{k}].pos_emb")
                copy_leaves(ta.W_proj, oa.proj, f"{w}.target_attention[{k}].proj")
            copy_mlp(ta.attn_mlp, oa.mlp, f"{w}.target_attention[{k}].mlp")
    copy_mlp(theirs.dnn, ours.dnn, "dnn")


BASE = {**E, "dnn_hidden_units": (64, 32), "activation": "relu", "aux_hidden_units": (100, 50),
        "aux_activation": "relu", "dropout": 0.0, "num_heads": 2, "enable_sum_pooling": False,
        "attention_hidden_units": (16, 8), "attention_activation": "relu", "attention_dropout": 0.0,
        "use_pos_emb": True, "pos_emb_dim": 4, "use_behavior_refiner": True, "aux_loss_lambda": 0.0,
        "batch_norm": False, "bn_only_once": False, "layer_norm": True, "refiner_mask": "soft",
        "target_fields": None, "sequence_fields": None, "neg_sequence_fields": None}

REFERENCE = Reference(DMIN, transplant_dmin, {
    # the spec's pair: (item, cost) over (item_history, cost_history), width 20, 2 heads, refiner, positions
    "inferred-pair": BASE,
    # BARS's AmazonElectronics_x1 run's switches: Dice attention, sum pooling, one BatchNorm on the MLP input
    "dice-sum-pooling-bn-once-4-heads": {**BASE, "activation": "dice", "attention_activation": "dice",
                                         "enable_sum_pooling": True, "batch_norm": True, "bn_only_once": True,
                                         "num_heads": 4},
    # BARS's TaobaoAd_x1 / MicroVideo runs: no refiner, one head; no positions; batch norm per layer
    "no-refiner-no-positions-bn-1-head": {**BASE, "use_behavior_refiner": False, "use_pos_emb": False,
                                          "batch_norm": True, "num_heads": 1},
    "no-layer-norm-5-heads-dice-mlp": {**BASE, "layer_norm": False, "num_heads": 5, "activation": "dice"},
    # two pairs (KuaiVideo_x1 has two), each with its own refiner and extractor
    "two-pairs": {**BASE, "target_fields": (("item",), ("cost",)),
                  "sequence_fields": (("item_history",), ("cost_history",))},
    # one attended history; the other sequence (cost_history) is mean-pooled (FuxiCTR: MaskedAveragePooling)
    "item-only-prelu-sum-pooling": {**BASE, "activation": "prelu", "enable_sum_pooling": True,
                                    "target_fields": (("item",),), "sequence_fields": (("item_history",),)},
}, "model_zoo/DMIN/src/DMIN.py", data="frappe_seq")
