"""dien: FuxiCTR 2.3.10 composition following model_zoo/DIEN/src/DIEN.py (on the installed FeatureEmbeddingDict,
MLP_Block, MaskedSumPooling, torch's GRU and packed sequences; ``AttentionLayer``, ``AGRUCell``, ``AUGRUCell`` and
``DynamicGRU`` written here from the model_zoo file), and the transplant of our weights into it. Runs on the
Frappe rows with synthetic behaviour histories (``data="frappe_seq"``: post-padded, as DIEN requires).

Where the model_zoo file cannot run, the composition computes what it evidently means (docs/fidelity.md, DIEN):

- ``AIGRU``: ``interest_emb * attn_scores`` multiplies [B, L, d] by [B, L] (a broadcast error unless L == d);
  here the scores are unsqueezed, ``interest_emb * attn_scores.unsqueeze(-1)``;
- the auxiliary loss (``aux_loss_alpha > 0``): ``add_loss`` views a non-contiguous slice (an error), then
  multiplies the 2N BCE terms (positives and negatives) by the N-entry mask (a broadcast error) and would add a
  vector to the loss; here the mask is repeated for both halves and the masked terms averaged to a scalar. The
  negatives, which FuxiCTR reads from a data column (``dien_neg_seq_field``), are bars's in-batch ones, built
  here independently in ``add_loss``: row b's negative at step t is behaviour ``t mod len`` of row b + 1 (cyclic),
  the steps whose negative row is empty left out; both sides therefore see the same negatives;
- dtype: ``DynamicGRU``'s zero state and ``get_unmasked_tensor``'s zeros take the input's dtype (the model_zoo
  file makes them float32, which the float64 comparison cannot use); ``h_out.squeeze()`` squeezes the layer axis
  only (a one-row batch).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from fuxictr.pytorch.layers import FeatureEmbeddingDict, MaskedSumPooling, MLP_Block
from fuxictr_reference import E, Reference, RefModel, copy_embedding, copy_mlp, pool_unpaired_sequences, put
from torch import nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from fuxictr_zoo.din import fuxictr_pairs


class AttentionLayer(nn.Module):  # model_zoo/DIEN/src/DIEN.py
    def __init__(self, model_dim, attention_type, attention_hidden_units, attention_activation,
                 use_attention_softmax, attention_dropout):
        super().__init__()
        self.attention_type = attention_type
        self.use_attention_softmax = use_attention_softmax
        if attention_type == "bilinear_attention":
            self.W_kernel = nn.Parameter(torch.eye(model_dim))
        elif attention_type == "din_attention":
            self.attn_mlp = MLP_Block(input_dim=model_dim * 4, output_dim=1, hidden_units=attention_hidden_units,
                                      hidden_activations=attention_activation, output_activation=None,
                                      dropout_rates=attention_dropout, batch_norm=False)

    def forward(self, sequence_emb, target_emb, mask):
        seq_len = sequence_emb.size(1)
        if self.attention_type == "dot_attention":
            attn_score = sequence_emb @ target_emb.unsqueeze(-1)
        elif self.attention_type == "bilinear_attention":
            attn_score = (sequence_emb @ self.W_kernel) @ target_emb.unsqueeze(-1)
        else:
            target_emb = target_emb.unsqueeze(1).expand(-1, seq_len, -1)
            din_concat = torch.cat([target_emb, sequence_emb, target_emb - sequence_emb,
                                    target_emb * sequence_emb], dim=-1)
            attn_score = self.attn_mlp(din_concat.view(-1, 4 * target_emb.size(-1)))
        attn_score = attn_score.view(-1, seq_len)
        attn_score = attn_score * mask.to(attn_score.dtype)
        if self.use_attention_softmax:
            attn_score = attn_score + -1.e9 * (1 - mask.to(attn_score.dtype))
            attn_score = attn_score.softmax(dim=-1)
        return attn_score


class AGRUCell(nn.Module):  # model_zoo/DIEN/src/DIEN.py
    def __init__(self, input_size, hidden_size, bias=True):
        super().__init__()
        self.x2h = nn.Linear(input_size, 3 * hidden_size, bias=bias)
        self.h2h = nn.Linear(hidden_size, 3 * hidden_size, bias=bias)

    def forward(self, x, hx, attn):
        _i_u, i_r, i_n = self.x2h(x).chunk(3, 1)  # (the update gate is computed and unused)
        _h_u, h_r, h_n = self.h2h(hx).chunk(3, 1)
        reset_gate = torch.sigmoid(i_r + h_r)
        new_gate = torch.tanh(i_n + reset_gate * h_n)
        return hx + attn.view(-1, 1) * (new_gate - hx)


class AUGRUCell(AGRUCell):  # model_zoo/DIEN/src/DIEN.py
    def forward(self, x, hx, attn):
        i_u, i_r, i_n = self.x2h(x).chunk(3, 1)
        h_u, h_r, h_n = self.h2h(hx).chunk(3, 1)
        update_gate = torch.sigmoid(i_u + h_u) * attn.unsqueeze(-1)
        reset_gate = torch.sigmoid(i_r + h_r)
        new_gate = torch.tanh(i_n + reset_gate * h_n)
        return hx + update_gate * (new_gate - hx)


class DynamicGRU(nn.Module):  # model_zoo/DIEN/src/DIEN.py (zeros in the input's dtype)
    def __init__(self, input_size, hidden_size, gru_type):
        super().__init__()
        self.hidden_size = hidden_size
        self.gru_cell = (AUGRUCell if gru_type == "AUGRU" else AGRUCell)(input_size, hidden_size)

    def forward(self, packed_seq_emb, attn_score):
        x, batch_sizes, sorted_indices, unsorted_indices = packed_seq_emb
        attn = attn_score.data
        h = torch.zeros(batch_sizes[0], self.hidden_size, dtype=x.dtype)
        output_h = torch.zeros(batch_sizes[0], self.hidden_size, dtype=x.dtype)
        outputs = torch.zeros(x.shape[0], self.hidden_size, dtype=x.dtype)
        start = 0
        for batch_size in batch_sizes:
            h = self.gru_cell(x[start: start + batch_size], h[:batch_size], attn[start: start + batch_size])
            outputs[start: start + batch_size] = h
            output_h[:batch_size] = h
            start += batch_size
        return PackedSequence(outputs, batch_sizes, sorted_indices, unsorted_indices), output_h[unsorted_indices]


class DIEN(RefModel):  # model_zoo/DIEN/src/DIEN.py
    def __init__(self, fmap, p, lr, reg_e, reg_n):
        super().__init__(fmap, reg_e, reg_n)
        self.dien_target_field, self.dien_sequence_field = fuxictr_pairs(fmap, p)
        pool_unpaired_sequences(fmap, [n for s in self.dien_sequence_field for n in s])
        dim = p["embedding_dim"]
        self.gru_type = p["gru_type"]
        self.aux_loss_alpha = p["aux_loss_alpha"]
        self.enable_sum_pooling = p["enable_sum_pooling"]
        self.embedding_layer = FeatureEmbeddingDict(fmap, dim)
        self.sum_pooling = MaskedSumPooling()
        self.extraction_modules = nn.ModuleList()
        self.evolving_modules = nn.ModuleList()
        self.attention_modules = nn.ModuleList()
        feature_dim = 0
        for target_field in self.dien_target_field:
            model_dim = dim * len(target_field)
            feature_dim += model_dim * 2
            self.extraction_modules.append(nn.GRU(input_size=model_dim, hidden_size=model_dim, batch_first=True))
            if self.gru_type in ["AGRU", "AUGRU"]:
                self.evolving_modules.append(DynamicGRU(model_dim, model_dim, self.gru_type))
            else:
                self.evolving_modules.append(nn.GRU(input_size=model_dim, hidden_size=model_dim, batch_first=True))
            if self.gru_type in ["AIGRU", "AGRU", "AUGRU"]:
                self.attention_modules.append(AttentionLayer(
                    model_dim, p["attention_type"], list(p["attention_hidden_units"]), p["attention_activation"],
                    p["use_attention_softmax"], p["attention_dropout"]))
        feature_dim = feature_dim + fmap.sum_emb_out_dim()  # (no negative-sequence field)
        if not self.enable_sum_pooling:
            feature_dim -= dim * sum(len(t) for t in self.dien_target_field) * 2
        self.dnn = MLP_Block(input_dim=feature_dim, output_dim=1, hidden_units=list(p["dnn_hidden_units"]),
                             hidden_activations=p["activation"], dropout_rates=p["dropout"],
                             batch_norm=p["batch_norm"])
        if self.aux_loss_alpha > 0:
            self.model_dim = model_dim
            self.aux_net = MLP_Block(input_dim=model_dim * 2, output_dim=1, hidden_units=list(p["aux_hidden_units"]),
                                     hidden_activations=p["aux_activation"], output_activation="Sigmoid",
                                     dropout_rates=p["dropout"])
        self.finish(lr)

    def null_biases(self):
        """With softmax, DIN's unit's output bias shifts all scores of a row alike: its true gradient is zero."""
        if not any(getattr(a, "attention_type", "") == "din_attention" and a.use_attention_softmax
                   for a in self.attention_modules):
            return set()
        return {f"attention_modules.{i}.attn_mlp.mlp.{len(a.attn_mlp.mlp) - 1}.bias"
                for i, a in enumerate(self.attention_modules)}

    def forward(self, inputs):
        X = self.get_inputs(inputs)
        feature_emb_dict = self.embedding_layer(X)
        concat_emb = []
        for idx, (target_field, sequence_field) in enumerate(zip(self.dien_target_field, self.dien_sequence_field,
                                                                 strict=True)):
            target_emb = torch.cat([feature_emb_dict[f] for f in target_field], dim=-1)
            sequence_emb = torch.cat([feature_emb_dict[f] for f in sequence_field], dim=-1)
            pad_mask = X[sequence_field[0]].long() > 0
            non_zero_mask = pad_mask.sum(dim=1) > 0
            packed_interests, interest_emb = self.interest_extraction(idx, sequence_emb[non_zero_mask],
                                                                      pad_mask[non_zero_mask])
            h_out = self.interest_evolution(idx, packed_interests, interest_emb, target_emb[non_zero_mask],
                                            pad_mask[non_zero_mask])
            concat_emb.append(self.get_unmasked_tensor(h_out, non_zero_mask))
            if self.enable_sum_pooling:
                sum_pool_emb = self.sum_pooling(sequence_emb)
                concat_emb += [sum_pool_emb, target_emb * sum_pool_emb]
        for emb in feature_emb_dict.values():
            if emb.ndim == 2:
                concat_emb.append(emb)
        y_pred = self.output_activation(self.dnn(torch.cat(concat_emb, dim=-1)))
        return {"y_pred": y_pred, "interest_emb": self.get_unmasked_tensor(interest_emb, non_zero_mask),
                "pad_mask": pad_mask, "pos_emb": sequence_emb}

    def get_unmasked_tensor(self, h, non_zero_mask):
        out = torch.zeros([non_zero_mask.size(0)] + list(h.shape[1:]), dtype=h.dtype)
        out[non_zero_mask] = h
        return out

    def interest_extraction(self, idx, sequence_emb, mask):
        seq_lens = mask.sum(dim=1).cpu()
        packed_seq = pack_padded_sequence(sequence_emb, seq_lens, batch_first=True, enforce_sorted=False)
        packed_interests, _ = self.extraction_modules[idx](packed_seq)
        interest_emb, _ = pad_packed_sequence(packed_interests, batch_first=True, padding_value=0.0,
                                              total_length=mask.size(1))
        return packed_interests, interest_emb

    def interest_evolution(self, idx, packed_interests, interest_emb, target_emb, mask):
        if self.gru_type == "GRU":
            _, h_out = self.evolving_modules[idx](packed_interests)
        else:
            attn_scores = self.attention_modules[idx](interest_emb, target_emb, mask)
            seq_lens = mask.sum(dim=1).cpu()
            if self.gru_type == "AIGRU":
                packed_inputs = pack_padded_sequence(interest_emb * attn_scores.unsqueeze(-1), seq_lens,
                                                     batch_first=True, enforce_sorted=False)
                _, h_out = self.evolving_modules[idx](packed_inputs)
            else:
                packed_scores = pack_padded_sequence(attn_scores, seq_lens, batch_first=True, enforce_sorted=False)
                _, h_out = self.evolving_modules[idx](packed_interests, packed_scores)
        return h_out.squeeze(0) if h_out.dim() == 3 else h_out

    def add_loss(self, return_dict, y_true):
        loss = self.loss_fn(return_dict["y_pred"], y_true, reduction="mean")
        if self.aux_loss_alpha > 0:
            interest_emb, pos_emb, pad_mask = return_dict["interest_emb"], return_dict["pos_emb"], \
                return_dict["pad_mask"]
            neg_emb, neg_ok = self.in_batch_negatives(pos_emb, pad_mask)
            pos_prob = self.aux_net(torch.cat([interest_emb[:, :-1, :], pos_emb[:, 1:, :]], dim=-1)
                                    .reshape(-1, self.model_dim * 2))
            neg_prob = self.aux_net(torch.cat([interest_emb[:, :-1, :], neg_emb[:, 1:, :]], dim=-1)
                                    .reshape(-1, self.model_dim * 2))
            aux_prob = torch.cat([pos_prob, neg_prob], dim=0).view(-1, 1)
            aux_label = torch.cat([torch.ones_like(pos_prob), torch.zeros_like(neg_prob)], dim=0).view(-1, 1)
            aux_loss = F.binary_cross_entropy(aux_prob, aux_label, reduction="none")
            mask = (pad_mask[:, 1:] & neg_ok.unsqueeze(1)).reshape(-1, 1).to(aux_loss.dtype)
            mask = torch.cat([mask, mask], dim=0)  # the fix: one mask entry per BCE term
            loss = loss + self.aux_loss_alpha * torch.sum(aux_loss * mask) / (torch.sum(mask) + 1.e-9)
        return loss

    @staticmethod
    def in_batch_negatives(pos_emb, pad_mask):
        """Row b's negatives: row b + 1's behaviours (cyclic), repeated to the length L (step t: t mod len)."""
        b, length = pad_mask.shape
        lens = pad_mask.sum(dim=1).tolist()
        neg = torch.zeros_like(pos_emb)
        ok = torch.zeros(b, dtype=torch.bool)
        for r in range(b):
            nxt = (r + 1) % b
            if lens[nxt] > 0:
                ok[r] = True
                neg[r] = pos_emb[nxt, [t % lens[nxt] for t in range(length)]]
        return neg, ok


def transplant_dien(ours, theirs):
    copy_embedding(theirs.embedding_layer, ours.embedding, "embedding")
    for i, (t, o) in enumerate(zip(theirs.extraction_modules, ours.extraction, strict=True)):
        for n, w in t.named_parameters():
            put(w, getattr(o, n), f"extraction[{i}].{n}")
    for i, (t, o) in enumerate(zip(theirs.evolving_modules, ours.evolution, strict=True)):
        if isinstance(t, DynamicGRU):
            for lin in ("x2h", "h2h"):
                for n in ("weight", "bias"):
                    put(getattr(getattr(t.gru_cell, lin), n), getattr(getattr(o.cell, lin), n),
                        f"evolution[{i}].{lin}.{n}")
        else:
            for n, w in t.named_parameters():
                put(w, getattr(o, n), f"evolution[{i}].{n}")
    if len(theirs.attention_modules) != len(ours.attention):
        raise ValueError(f"dien: {len(theirs.attention_modules)} attention layers in FuxiCTR vs {len(ours.attention)}")
    for i, (t, o) in enumerate(zip(theirs.attention_modules, ours.attention, strict=True)):
        if t.attention_type == "bilinear_attention":
            put(t.W_kernel, o.kernel.weight, f"attention[{i}].W_kernel")
        elif t.attention_type == "din_attention":
            copy_mlp(t.attn_mlp, o.unit.mlp, f"attention[{i}]")
    copy_mlp(theirs.dnn, ours.mlp, "dnn")
    if hasattr(theirs, "aux_net"):
        copy_mlp(theirs.aux_net, ours.aux, "aux_net")


BASE = {**E, "dnn_hidden_units": (64, 32), "activation": "relu", "dropout": 0.0, "batch_norm": False,
        "gru_type": "AUGRU", "attention_type": "bilinear_attention", "attention_hidden_units": (16, 8),
        "attention_activation": "dice", "attention_dropout": 0.0, "use_attention_softmax": True,
        "enable_sum_pooling": False, "aux_loss_alpha": 0.0, "aux_hidden_units": (16, 8), "aux_activation": "relu",
        "target_fields": None, "sequence_fields": None}

REFERENCE = Reference(DIEN, transplant_dien, {
    # the spec's pair (item, cost) over (item_history, cost_history); FuxiCTR's default AUGRU + bilinear attention
    "augru-bilinear": BASE,
    # BARS's tuned runs: AUGRU with DIN's unit (Dice) and softmax, batch norm in the MLP
    "augru-din-bn": {**BASE, "attention_type": "din_attention", "batch_norm": True},
    # AGRU (the score as the update gate), dot attention without softmax, sum pooling of the history
    "agru-dot-sumpool": {**BASE, "gru_type": "AGRU", "attention_type": "dot_attention",
                         "use_attention_softmax": False, "enable_sum_pooling": True},
    # AIGRU (scores scale the GRU's input; FuxiCTR's broadcast fixed, see the module docstring), DIN unit with
    # ReLU, without softmax (with it, at N(0, 1e-4) embeddings the unit's hidden biases soon shift all scores of a
    # row alike, so their true gradient is ~0 and rounding noise moves them: measured 8e-4 apart after 6 steps)
    "aigru-din-relu": {**BASE, "gru_type": "AIGRU", "attention_type": "din_attention",
                       "attention_activation": "relu", "use_attention_softmax": False, "activation": "dice"},
    # GRU: no attention at all; two pairs, each with its own GRUs
    "gru-two-pairs": {**BASE, "gru_type": "GRU", "target_fields": (("item",), ("cost",)),
                      "sequence_fields": (("item_history",), ("cost_history",))},
    # the auxiliary loss on in-batch negatives (the last pair; FuxiCTR's add_loss fixed, see the module docstring)
    "augru-aux": {**BASE, "aux_loss_alpha": 0.5},
    "augru-din-aux-two-pairs": {**BASE, "attention_type": "din_attention", "aux_loss_alpha": 1.0,
                                "target_fields": (("item",), ("cost",)),
                                "sequence_fields": (("item_history",), ("cost_history",))},
}, "model_zoo/DIEN/src/DIEN.py", data="frappe_seq")
