"""mlcc: FuxiCTR has no MLCC (not in its model_zoo; the paper, Yu et al., arXiv 2602.12041, 2026, has no public
code), so the model is checked against the equations bars/models/mlcc.py writes from the paper's abstract (the body
was not retrievable; docs/fidelity.md "MLCC"), in float64 on real Frappe rows, for both shipped configs
(conf/model/mlcc.yaml and mc_mlcc.yaml at embedding_dim 10) and a no-LayerNorm / no-Local-Compressor case:

    X_0^c  = E P_c (or E)          G^c = A^c X_0^c          ctx^c = flat(G^c)
    X_l^c  = LN_l( Y + V2 relu(V1 Y + a1) + a2 ),   Y = X_{l-1}^c * (W_l ctx^c + b_l) + X_{l-1}^c
    logit  = MLP([flat(X_L^1), ..., flat(X_L^C)])

written here with einsum over [B, F, d] tensors (the model computes them with Linears over views)."""

from __future__ import annotations

import torch
from fuxictr_reference import PaperOnly
from torch.nn import functional as F

from bars.models import build
from bars.models.layers import init_bars_
from bars.objective import loss_function


def _mlp(mlp, x: torch.Tensor) -> torch.Tensor:
    linears = [m for m in mlp.modules() if isinstance(m, torch.nn.Linear)]
    for lin in linears[:-1]:
        x = torch.relu(x @ lin.weight.T + lin.bias)
    return (x @ linears[-1].weight.T + linears[-1].bias).squeeze(-1)


def _equations(model, e: torch.Tensor) -> torch.Tensor:
    cfg, inter = model.cfg, model.interaction
    b, f_n, _ = e.shape
    d = cfg.token_dim
    outs = []
    for c, ch in enumerate(inter.channels):
        x = e if inter.projection is None else torch.einsum("bfD,dD->bfd", e, inter.projection.weight[c * d:(c + 1) * d])
        ctx = torch.einsum("kf,bfd->bkd", ch.compressor.linear.weight, x).reshape(b, -1)
        for i in range(cfg.num_layers):
            w = ch.cross[i].linear.weight.view(f_n, d, -1)  # [F, d, K*d]: token f's projection of the context
            u = torch.einsum("fdj,bj->bfd", w, ctx) + ch.cross[i].linear.bias.view(f_n, d)
            x = x * u + x
            if cfg.local_dim is not None:
                lc = ch.local[i]
                x = x + torch.einsum("rd,bfd->bfr", lc.down.weight, x).add(lc.down.bias).relu() @ lc.up.weight.T \
                    + lc.up.bias
            if cfg.layer_norm:
                ln = ch.norm[i]
                x = F.layer_norm(x, (d,), ln.weight, ln.bias, ln.eps)
        outs.append(x.reshape(b, -1))
    return _mlp(model.mlp, torch.cat(outs, dim=1))


def check(spec, batch) -> None:
    from fuxictr_zoo import model_configs  # here: fuxictr_zoo imports this module while it initialises

    configs = model_configs()
    cases = {cid: configs[cid][1] for cid in ("mlcc", "mc_mlcc")}
    cases["no-norm-no-local-2-heads"] = {**cases["mlcc"], "layer_norm": False, "local_dim": None, "num_heads": 2}
    y = (torch.rand(len(next(iter(batch.values()))), generator=torch.Generator().manual_seed(3)) < 0.4).double()
    for case, params in cases.items():
        torch.manual_seed(0)
        model = init_bars_(build("mlcc", spec, params), embedding_std=1.0)
        with torch.no_grad():  # non-zero biases and LayerNorm affines, so every term counts
            for n, p in model.named_parameters():
                if n.endswith("bias") or ".norm." in n:
                    p.add_(torch.randn_like(p) * 0.1)
        model.double()
        with torch.no_grad():
            want = _equations(model, model.embedding(batch))
            got = model.eval()(batch)
            assert torch.allclose(got, want, rtol=1e-10, atol=1e-10), (case, float((got - want).abs().max()))
            assert want.std() > 0.05, (case, float(want.std()))
            assert torch.allclose(model.train()(batch), want, rtol=1e-10, atol=1e-10), (case, "train mode")
        loss = model.training_loss(model(batch), y, loss_function("bce")) if hasattr(model, "training_loss") else \
            loss_function("bce")(model(batch), y)
        assert torch.allclose(loss, F.binary_cross_entropy_with_logits(want, y), rtol=1e-10), case


PAPER_ONLY = PaperOnly("FuxiCTR 2.3.10 has no MLCC (not in its model_zoo; the paper has no public code); checked "
                       "against the equations written from the paper's abstract, both configs (MLCC, MC-MLCC)", check)
