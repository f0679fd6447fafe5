"""dmr: FuxiCTR 2.3.10 composition following model_zoo/DMR/src/DMR.py (on the installed FeatureEmbeddingDict and
MLP_Block; User2ItemNet and Item2ItemNet are defined in the model_zoo file, so they are written here from it, without
their context-field branch, which fails in 2.3.10: ``torch.cat(..., dimi=-1)``), and the transplant of our weights
into it. Runs on the Frappe rows with synthetic behaviour histories and one synthetic negative item per row
(``data="frappe_seq_neg"``: item_history sharing item's table, cost_history sharing cost's, ``neg_item`` in item's
vocabulary; conftest.add_negatives).

The auxiliary loss's negatives are data, as in FuxiCTR (``neg_seq_field``: a column of the batch looked up in the
target's output table): both sides read the same ``neg_item`` column of the same batches, so they draw nothing.
FuxiCTR's ``neg_seq_field`` must be a categorical field: for a sequence field its ``[B, L, d]`` lookup does not
broadcast against ``user_embs[:, -2, :]`` [B, d] (unless B == L)."""

from __future__ import annotations

import torch
from fuxictr.pytorch.layers import FeatureEmbeddingDict, MaskedSumPooling, MLP_Block
from fuxictr_reference import E, Reference, RefModel, copy_embedding, copy_mlp, pool_unpaired_sequences, put
from torch import nn

from fuxictr_zoo.din import fuxictr_pairs


def _mlp(input_dim, p):
    return MLP_Block(input_dim=input_dim, output_dim=1, hidden_units=list(p["attention_hidden_units"]),
                     hidden_activations=p["attention_activation"], output_activation=None,
                     dropout_rates=p["attention_dropout"], batch_norm=False)


class User2ItemNet(nn.Module):  # model_zoo/DMR/src/DMR.py, context_emb None
    def __init__(self, model_dim, p, max_seq_len):
        super().__init__()
        self.model_dim = model_dim
        self.pos_emb = nn.Parameter(torch.zeros(max_seq_len, p["pos_emb_dim"]))
        self.context_dim = p["pos_emb_dim"]
        self.W_q = nn.Sequential(nn.Linear(self.context_dim, model_dim), nn.ReLU())
        self.attn_mlp = _mlp(model_dim * 4, p)
        self.W_o = nn.Sequential(nn.Linear(model_dim, model_dim), nn.ReLU())

    def forward(self, target_emb, sequence_emb, sequence_emb2, neg_emb=None, mask=None):
        batch_size = target_emb.size(0)
        context_emb = self.pos_emb.unsqueeze(0).expand(batch_size, -1, -1)
        seq_len = sequence_emb.size(1)
        query = self.W_q(context_emb.reshape(-1, self.context_dim)).reshape(-1, seq_len, self.model_dim)
        inp_concat = torch.cat([query, sequence_emb, query - sequence_emb, query * sequence_emb], dim=-1)
        attn_score = self.attn_mlp(inp_concat.view(-1, 4 * self.model_dim)).view(-1, seq_len)
        attn_mask = self.get_mask(mask)
        expand_score = attn_score.unsqueeze(1).repeat(1, seq_len, 1)
        expand_score = expand_score.masked_fill_(attn_mask == False, -1.e9)
        expand_score = expand_score.softmax(dim=-1)
        user_embs = torch.bmm(expand_score, sequence_emb)
        user_embs = self.W_o(user_embs.reshape(-1, self.model_dim)).reshape(-1, seq_len, self.model_dim)
        rel_u2i = torch.sum(user_embs[:, -1, :] * target_emb, dim=-1, keepdim=True)
        if neg_emb is not None:
            pos_prob = torch.sum(user_embs[:, -2, :] * sequence_emb2[:, -1, :], dim=-1).sigmoid()
            neg_prob = torch.sum(user_embs[:, -2, :] * neg_emb, dim=-1).sigmoid()
            aux_loss = -torch.log(pos_prob) - torch.log(1 - neg_prob)
            aux_loss = (aux_loss * mask[:, -1]).sum() / mask[:, -1].sum()
        else:
            aux_loss = 0
        return rel_u2i, aux_loss

    def get_mask(self, mask):
        seq_len = mask.size(1)
        attn_mask = mask.unsqueeze(1).repeat(1, seq_len, 1)
        causal_mask = (torch.tril(torch.ones(seq_len, seq_len, device=mask.device)).bool()
                       .unsqueeze(0).expand_as(attn_mask))
        attn_mask = attn_mask & causal_mask
        diag_ones = torch.eye(seq_len, device=mask.device).bool().unsqueeze(0).expand_as(attn_mask)
        return attn_mask | diag_ones


class Item2ItemNet(nn.Module):  # model_zoo/DMR/src/DMR.py, context_emb None
    def __init__(self, model_dim, p, max_seq_len):
        super().__init__()
        self.model_dim = model_dim
        self.use_pos_emb = p["use_pos_emb"]
        context_dim = 0
        if self.use_pos_emb:
            self.pos_emb = nn.Parameter(torch.zeros(max_seq_len, p["pos_emb_dim"]))
            context_dim += p["pos_emb_dim"]
        self.context_dim = context_dim + model_dim
        self.W_q = nn.Sequential(nn.Linear(self.context_dim, model_dim), nn.ReLU())
        self.attn_mlp = _mlp(model_dim * 4, p)

    def forward(self, target_emb, sequence_emb, mask=None):
        seq_len = sequence_emb.size(1)
        context_emb = target_emb.unsqueeze(1).expand(-1, seq_len, -1)
        if self.use_pos_emb:
            context_emb = torch.cat([context_emb, self.pos_emb.unsqueeze(0).expand(context_emb.size(0), -1, -1)],
                                    dim=-1)
        query = self.W_q(context_emb.reshape(-1, self.context_dim)).view(-1, seq_len, self.model_dim)
        inp_concat = torch.cat([query, sequence_emb, query - sequence_emb, query * sequence_emb], dim=-1)
        attn_score = self.attn_mlp(inp_concat.view(-1, 4 * self.model_dim)).view(-1, seq_len)
        score_softmax = attn_score.masked_fill_(mask.float() == 0, -1.e9)
        score_softmax = score_softmax.softmax(dim=-1)
        attn_out = (score_softmax.unsqueeze(-1) * sequence_emb).sum(dim=1)
        rel_i2i = (attn_score * mask.float()).sum(dim=1, keepdim=True)
        return attn_out, rel_i2i


class DMR(RefModel):  # model_zoo/DMR/src/DMR.py
    def __init__(self, fmap, p, lr, reg_e, reg_n):
        super().__init__(fmap, reg_e, reg_n)
        self.target_field, self.sequence_field = fuxictr_pairs(fmap, p)
        self.neg_seq_field = [tuple(n) for n in p["neg_fields"]] if p["neg_fields"] is not None else None
        pool_unpaired_sequences(fmap, [n for s in self.sequence_field for n in s])
        neg_names = [n for ns in self.neg_seq_field for n in ns] if self.neg_seq_field else []
        self.aux_loss_beta = p["aux_loss_beta"]
        self.enable_sum_pooling = p["enable_sum_pooling"]
        self.enable_u2i_rel, self.enable_i2i_rel = p["enable_u2i_rel"], p["enable_i2i_rel"]
        self.embedding_dim = dim = p["embedding_dim"]
        self.embedding_layer = FeatureEmbeddingDict(fmap, dim, not_required_feature_columns=neg_names or None)
        self.sum_pooling = MaskedSumPooling()
        self.output_emb_layer = nn.ModuleDict()
        for targets in self.target_field:
            for feature in targets:
                self.output_emb_layer[feature] = nn.Embedding(fmap.features[feature]["vocab_size"], dim,
                                                              padding_idx=fmap.features[feature]["padding_idx"])
        self.u2i_net, self.i2i_net = nn.ModuleList(), nn.ModuleList()
        feature_dim = fmap.sum_emb_out_dim()
        for targets, seqs in zip(self.target_field, self.sequence_field, strict=True):
            model_dim = dim * len(targets)
            max_seq_len = fmap.features[seqs[0]]["max_len"]
            if self.enable_sum_pooling:
                feature_dim += model_dim * 2
            if self.enable_u2i_rel:
                self.u2i_net.append(User2ItemNet(model_dim, p, max_seq_len))
                feature_dim += 1
            if self.enable_i2i_rel:
                feature_dim += 1
            self.i2i_net.append(Item2ItemNet(model_dim, p, max_seq_len))
        feature_dim -= dim * len(set(neg_names))
        self.dnn = MLP_Block(input_dim=feature_dim, output_dim=1, hidden_units=list(p["dnn_hidden_units"]),
                             hidden_activations=p["activation"], dropout_rates=p["dropout"],
                             batch_norm=p["batch_norm"])
        self.finish(lr)

    def get_embedding(self, field, emb):
        return torch.cat([emb[f] for f in field], dim=-1)

    def get_out_embedding(self, field, target_field, X):
        return torch.cat([self.output_emb_layer[t](X[n].long()) for n, t in zip(field, target_field, strict=True)],
                         dim=-1)

    def forward(self, inputs):
        X = self.get_inputs(inputs)
        feature_emb_dict = self.embedding_layer(X)
        concat_emb = []
        aux_loss_sum = 0
        for i in range(len(self.target_field)):
            target_emb = self.get_embedding(self.target_field[i], feature_emb_dict)
            sequence_emb = self.get_embedding(self.sequence_field[i], feature_emb_dict)
            pad_mask = X[self.sequence_field[i][0]].long() > 0
            attn_out, rel_i2i = self.i2i_net[i](target_emb, sequence_emb, mask=pad_mask)
            concat_emb.append(attn_out)
            if self.enable_i2i_rel:
                concat_emb.append(rel_i2i)
            if self.enable_u2i_rel:
                neg_emb = self.get_out_embedding(self.neg_seq_field[i], self.target_field[i], X) \
                    if self.aux_loss_beta > 0 else None
                target_emb2 = self.get_out_embedding(self.target_field[i], self.target_field[i], X)
                sequence_emb2 = self.get_out_embedding(self.sequence_field[i], self.target_field[i], X)
                rel_u2i, aux_loss = self.u2i_net[i](target_emb2, sequence_emb, sequence_emb2, neg_emb, mask=pad_mask)
                aux_loss_sum += aux_loss
                concat_emb.append(rel_u2i)
            if self.enable_sum_pooling:
                sum_pool_emb = self.sum_pooling(sequence_emb)
                concat_emb += [sum_pool_emb, target_emb * sum_pool_emb]
        negs = {n for ns in self.neg_seq_field for n in ns} if self.neg_seq_field else set()
        for feature, emb in feature_emb_dict.items():
            if emb.ndim == 2 and feature not in negs:
                concat_emb.append(emb)
        # (model_zoo passes the sigmoid to MLP_Block as its output activation; applied here, so logits() sees
        # the pre-sigmoid value)
        y_pred = self.output_activation(self.dnn(torch.cat(concat_emb, dim=-1)))
        return {"y_pred": y_pred, "aux_loss": aux_loss_sum}

    def add_loss(self, return_dict, y_true):
        loss = self.loss_fn(return_dict["y_pred"], y_true, reduction="mean")
        if self.aux_loss_beta > 0:
            loss += self.aux_loss_beta * return_dict["aux_loss"]
        return loss

    def null_biases(self):
        """The attention MLPs' output bias shifts all of a row's scores alike, which softmax ignores (see
        biases_before_batchnorm); the Item-to-Item one still enters r_i2i (the raw scores summed), so it is null
        only without enable_i2i_rel."""
        out = set()
        for i, net in enumerate(self.u2i_net):
            out.add(f"u2i_net.{i}.attn_mlp.mlp.{len(net.attn_mlp.mlp) - 1}.bias")
        if not self.enable_i2i_rel:
            for i, net in enumerate(self.i2i_net):
                out.add(f"i2i_net.{i}.attn_mlp.mlp.{len(net.attn_mlp.mlp) - 1}.bias")
        return out


def transplant_dmr(ours, theirs):
    copy_embedding(theirs.embedding_layer, ours.embedding, "embedding")
    if sorted(theirs.output_emb_layer.keys()) != sorted(ours.output_tables.keys()):
        raise ValueError(f"dmr: output tables {list(theirs.output_emb_layer.keys())} in FuxiCTR vs "
                         f"{list(ours.output_tables.keys())}")
    for n, table in theirs.output_emb_layer.items():
        put(table.weight, ours.output_tables[n].weight, f"output_tables.{n}")
    if len(theirs.i2i_net) != len(ours.i2i) or len(theirs.u2i_net) != len(ours.u2i):
        raise ValueError("dmr: numbers of relevance networks differ")
    for i, (t, o) in enumerate(zip(theirs.i2i_net, ours.i2i, strict=True)):
        if t.use_pos_emb:
            put(t.pos_emb, o.pos_emb, f"i2i[{i}].pos_emb")
        copy_mlp(t.W_q, o.query, f"i2i[{i}].query")
        copy_mlp(t.attn_mlp, o.mlp, f"i2i[{i}].mlp")
    for i, (t, o) in enumerate(zip(theirs.u2i_net, ours.u2i, strict=True)):
        put(t.pos_emb, o.pos_emb, f"u2i[{i}].pos_emb")
        copy_mlp(t.W_q, o.query, f"u2i[{i}].query")
        copy_mlp(t.attn_mlp, o.mlp, f"u2i[{i}].mlp")
        copy_mlp(t.W_o, o.output, f"u2i[{i}].output")
    copy_mlp(theirs.dnn, ours.mlp, "dnn")


BASE = {**E, "dnn_hidden_units": (64, 32), "activation": "relu", "dropout": 0.0, "batch_norm": True,
        "attention_hidden_units": (16, 8), "attention_activation": "relu", "attention_dropout": 0.0,
        "use_pos_emb": True, "pos_emb_dim": 4, "enable_u2i_rel": True, "enable_i2i_rel": False,
        "enable_sum_pooling": False, "aux_loss_beta": 0.0, "neg_fields": None, "unused_output_tables": True,
        "target_fields": None, "sequence_fields": None}

REFERENCE = Reference(DMR, transplant_dmr, {
    # the spec's pair (item, cost) over (item_history, cost_history): User-to-Item relevance, pooled Item-to-Item
    "inferred-pair": BASE,
    # both relevances and the paper code's sum pooling, Dice attention and MLP
    "i2i-u2i-sum-dice": {**BASE, "enable_i2i_rel": True, "enable_sum_pooling": True, "activation": "dice",
                         "attention_activation": "dice", "batch_norm": False},
    # no User-to-Item network (BARS's TaobaoAd / KuaiVideo / MicroVideo runs): the output tables still exist;
    # with r_i2i (without it and without positions the attention parameters are near-degenerate: docs/fidelity.md)
    "no-u2i-no-pos": {**BASE, "enable_u2i_rel": False, "use_pos_emb": False, "activation": "prelu",
                      "enable_i2i_rel": True},
    # the auxiliary match loss on one negative item per row (neg_item, in item's vocabulary)
    "aux-loss": {**BASE, "target_fields": (("item",),), "sequence_fields": (("item_history",),),
                 "aux_loss_beta": 0.5, "neg_fields": (("neg_item",),)},
    # two pairs, each with its own networks, the same target in both (as BARS's KuaiVideo_x1 run: one output
    # table), the aux loss on both with the same negative column
    "two-pairs-aux": {**BASE, "target_fields": (("item",), ("item",)),
                      "sequence_fields": (("item_history",), ("cost_history",)), "enable_i2i_rel": True,
                      "aux_loss_beta": 1.0, "neg_fields": (("neg_item",), ("neg_item",))},
}, "model_zoo/DMR/src/DMR.py", data="frappe_seq_neg")
