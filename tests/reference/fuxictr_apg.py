"""APG's layers as model_zoo/APG/src/APG.py defines them (FuxiCTR 2.3.10 ships no APG layer), written on FuxiCTR's
installed MLP_Block, for the two compositions fuxictr_zoo/apg_dcnv2.py and fuxictr_zoo/apg_deepfm.py; the
embedding / condition plumbing both models share (``get_condition_z``) and the transplant of our APG-MLP into an
APG_MLP written here. Not a model module (fuxictr_zoo/ discovers only those)."""

from __future__ import annotations

import torch
from fuxictr.pytorch.layers import FeatureEmbedding, MLP_Block
from fuxictr.pytorch.torch_utils import get_activation
from fuxictr_reference import copy_embedding, copy_leaves, put
from torch import nn


class APG_Linear(nn.Module):
    """model_zoo's APG_Linear: a hypernetwork (MLP_Block, no batch norm) generates per sample the weight (full:
    ``[in, out]``; low rank: ``S [k, k]`` between shared ``U [in, k]`` and ``V [k, out]``, themselves products
    ``U_l U_r`` / ``V_l V_r`` when over-parameterised) and, with ``generate_bias``, the bias (its first ``out``
    outputs); otherwise a static bias ``[1, out]`` of zeros. Factors xavier-normal at construction."""

    def __init__(self, input_dim, output_dim, condition_dim, bias=True, rank_k=None, overparam_p=None,
                 generate_bias=False, hypernet_config=None):
        super().__init__()
        cfg = hypernet_config or {}
        self.input_dim, self.output_dim, self.rank_k = input_dim, output_dim, rank_k
        self.generate_bias, self.use_bias = generate_bias, bias
        self.over_param = rank_k is not None and overparam_p is not None

        def factor(*shape):
            return nn.Parameter(nn.init.xavier_normal_(torch.empty(*shape)))

        if rank_k is not None:
            if self.over_param:
                self.U_l, self.U_r = factor(input_dim, overparam_p), factor(overparam_p, rank_k)
                self.V_l, self.V_r = factor(rank_k, overparam_p), factor(overparam_p, output_dim)
            else:
                self.U, self.V = factor(input_dim, rank_k), factor(rank_k, output_dim)
            generated = rank_k**2
        else:
            generated = input_dim * output_dim
        self.hypernet = MLP_Block(input_dim=condition_dim, output_dim=generated + int(generate_bias) * output_dim,
                                  hidden_units=cfg.get("hidden_units", []),
                                  hidden_activations=cfg.get("hidden_activations", "ReLU"),
                                  output_activation=None, dropout_rates=cfg.get("dropout_rates", 0),
                                  batch_norm=False)
        self.bias = nn.Parameter(torch.zeros(1, output_dim)) if bias and not generate_bias else None

    def forward(self, x, z):
        S = self.hypernet(z)
        bias = self.bias
        if self.generate_bias:
            if self.use_bias:
                bias = S[:, :self.output_dim]
            S = S[:, self.output_dim:]
        if self.rank_k is None:
            return self._plus(torch.bmm(x.unsqueeze(1), S.reshape(-1, self.input_dim, self.output_dim)).squeeze(1),
                              bias)
        U = self.U_l @ self.U_r if self.over_param else self.U
        V = self.V_l @ self.V_r if self.over_param else self.V
        h = torch.bmm((x @ U).unsqueeze(1), S.reshape(-1, self.rank_k, self.rank_k)).squeeze(1)
        return self._plus(h @ V, bias)

    @staticmethod
    def _plus(out, bias):
        return out + bias if bias is not None else out


class APG_MLP(nn.Module):
    """model_zoo's APG_MLP (bn_only_once false, use_bias true): per hidden layer APG_Linear, BatchNorm?,
    activation, Dropout?, in a ModuleDict as FuxiCTR names them; then ``out_proj`` (Linear) when ``output_dim``.
    Self-wise: each layer conditioned on its own input; group-wise: on ``z``."""

    def __init__(self, input_dim, hidden_units, hidden_activations, output_dim, dropout_rates, batch_norm,
                 hypernet_config, condition_dim, condition_mode, rank_k, overparam_p, generate_bias):
        super().__init__()
        n = len(hidden_units)
        self.hidden_layers, self.condition_mode = n, condition_mode
        acts = get_activation([hidden_activations] * n, hidden_units)
        dims = [input_dim, *hidden_units]
        self.dense_layers = nn.ModuleDict()
        for i in range(n):
            cond = dims[i] if condition_mode == "self-wise" else condition_dim
            self.dense_layers[f"linear_{i + 1}"] = APG_Linear(dims[i], dims[i + 1], cond, True, rank_k[i],
                                                              overparam_p[i], generate_bias, hypernet_config)
            if batch_norm:
                self.dense_layers[f"bn_{i + 1}"] = nn.BatchNorm1d(dims[i + 1])
            if acts[i]:
                self.dense_layers[f"act_{i + 1}"] = acts[i]
            if dropout_rates > 0:
                self.dense_layers[f"drop_{i + 1}"] = nn.Dropout(p=dropout_rates)
        if output_dim is not None:
            self.dense_layers["out_proj"] = nn.Linear(dims[-1], output_dim)

    def forward(self, x, z=None):
        for i in range(1, self.hidden_layers + 1):
            x = self.dense_layers[f"linear_{i}"](x, x if self.condition_mode == "self-wise" else z)
            for part in ("bn", "act", "drop"):
                if f"{part}_{i}" in self.dense_layers:
                    x = self.dense_layers[f"{part}_{i}"](x)
        if "out_proj" in self.dense_layers:
            x = self.dense_layers["out_proj"](x)
        return x

    def null_biases(self, prefix):
        """Biases BatchNorm removes in an APG_Linear that a BatchNorm follows (zero true gradient, so Adam moves
        them by rounding noise; see fuxictr_reference.biases_before_batchnorm): the static ``bias``, or with a
        generated bias the hypernetwork's output-layer bias, whose first ``out`` entries are the same for every
        sample (measured: 4.2e-4 apart after 20 float64 steps, the losses equal to 1e-9). The whole tensor is
        named (the suite leaves out whole tensors): its other entries, part of the generated weight, are still
        checked through the 20 losses."""
        out = set()
        for i in range(1, self.hidden_layers + 1):
            lin = self.dense_layers[f"linear_{i}"]
            if f"bn_{i}" not in self.dense_layers:
                continue
            if lin.bias is not None:
                out.add(f"{prefix}.dense_layers.linear_{i}.bias")
            elif lin.generate_bias and lin.use_bias:
                last = [n for n, m in lin.hypernet.named_modules() if isinstance(m, nn.Linear)][-1]
                out.add(f"{prefix}.dense_layers.linear_{i}.hypernet.{last}.bias")
        return out


def per_layer(values, n):
    """Our rank_k / overparam_p list convention as FuxiCTR's per-layer values: [] None, [k] every layer."""
    values = list(values or [])
    return [None] * n if not values else values * n if len(values) == 1 else values


def apg_mlp(p, input_dim, hidden_units, condition_dim, output_dim):
    """An APG_MLP from our config dict ``p`` (FuxiCTR's arguments; overparam_p only where the layer is low-rank,
    as FuxiCTR ignores it at full rank)."""
    n = len(hidden_units)
    ranks = per_layer(p["rank_k"], n)
    overparams = [o if r is not None else None for r, o in zip(ranks, per_layer(p["overparam_p"], n), strict=True)]
    hyper = {"hidden_units": list(p["hypernet_hidden_units"]), "hidden_activations": p["hypernet_activation"],
             "dropout_rates": p["hypernet_dropout"]}
    return APG_MLP(input_dim, list(hidden_units), p["activation"], output_dim, p["dropout"], p["batch_norm"], hyper,
                   condition_dim, p["condition_mode"], ranks, overparams, p["generate_bias"])


def condition_setup(model, fmap, p):
    """The condition part of APG_DeepFM / APG_DCNv2's ``__init__``: sets ``condition_mode``,
    ``condition_features`` and ``condition_emb_layer``; returns condition_dim (None in self-wise mode)."""
    model.condition_mode = p["condition_mode"]
    model.condition_features = list(p["condition_features"])
    model.condition_emb_layer = None
    if model.condition_mode == "self-wise":
        return None
    if p["new_condition_emb"]:
        model.condition_emb_layer = FeatureEmbedding(fmap, p["embedding_dim"],
                                                     required_feature_columns=model.condition_features)
    return len(model.condition_features) * p["embedding_dim"]


def condition_z(model, X, emb_dict):
    """model_zoo's ``get_condition_z``: None (self-wise), the condition fields' own embeddings, or theirs picked
    from the shared embedding dict (feature-map order)."""
    if model.condition_mode == "self-wise":
        return None
    if model.condition_emb_layer is not None:
        return model.condition_emb_layer(X, flatten_emb=True)
    return model.embedding_layer.embedding_layer.dict2tensor(emb_dict, feature_list=model.condition_features,
                                                             flatten_emb=True)


def transplant_apg_mlp(theirs: APG_MLP, ours, where):
    """Our APGMLP (``linears[i]``, ``post[i]``, ``out_proj``) into an APG_MLP, layer by layer."""
    if theirs.hidden_layers != len(ours.linears):
        raise ValueError(f"{where}: {theirs.hidden_layers} APG layers in FuxiCTR vs {len(ours.linears)} in bars")
    for i, (o, post) in enumerate(zip(ours.linears, ours.post, strict=True)):
        t = theirs.dense_layers[f"linear_{i + 1}"]
        copy_leaves(t.hypernet, o.hypernet, f"{where}.linears[{i}].hypernet")
        names = [n for n in ("U", "V", "U_l", "U_r", "V_l", "V_r", "bias") if getattr(o, n) is not None]
        theirs_names = [n for n, _ in t.named_parameters(recurse=False)]
        if sorted(names) != sorted(theirs_names):
            raise ValueError(f"{where}.linears[{i}]: tensors {sorted(theirs_names)} in FuxiCTR vs {sorted(names)}")
        for n in names:
            put(getattr(t, n), getattr(o, n), f"{where}.linears[{i}].{n}")
        after = nn.Sequential(*[theirs.dense_layers[k] for k in (f"bn_{i + 1}", f"act_{i + 1}")
                                if k in theirs.dense_layers])  # BatchNorm, PReLU: the stateful ones
        copy_leaves(after, post, f"{where}.post[{i}]")
    if ("out_proj" in theirs.dense_layers) != (ours.out_proj is not None):
        raise ValueError(f"{where}: out_proj present in one side only")
    if ours.out_proj is not None:
        copy_leaves(theirs.dense_layers["out_proj"], ours.out_proj, f"{where}.out_proj")


def transplant_conditions(theirs, ours):
    if (theirs.condition_emb_layer is None) != (ours.conditions.own is None):
        raise ValueError("condition embeddings of their own present in one side only")
    if ours.conditions.own is not None:
        copy_embedding(theirs.condition_emb_layer, ours.conditions.own, "conditions.own")
