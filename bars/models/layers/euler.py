"""EulerNet's blocks (Tian et al., "EulerNet: Adaptive Feature Interaction Learning via Euler's Formula for CTR
Prediction", SIGIR 2023): field embeddings as complex numbers in polar form, interactions of learned (real,
possibly fractional or negative) orders as linear maps of log-modulus and phase.

On float32 CPU tensors the element-wise work around the layer's two matrix products (the input's ``mu cos e`` /
``mu sin e``; the log-modulus and phase, written into one buffer; the exp / cos / sin combination with the
implicit part's ReLU) runs as three autograd nodes, :class:`EulerEmbed`, :class:`EulerPolar` and
:class:`EulerCombine`, whose arithmetic is one pass of a compiled kernel each way (bars/models/layers/_kernels.c,
``bars_euler_*``; torch fallbacks with the same bits), the transcendental functions staying torch's. Their backward
passes read the saved cos / sin / exp instead of computing them again. At the Criteo shape a training step went
from 15.5-16.5k to 19.3-19.6k samples/s (docs/performance.md)."""

from __future__ import annotations

import itertools
import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bars.models.layers.core import Dropout, LayerNorm
from bars.models.layers.kernels import _kernel_ok, _load, autocast_on, traced


def _linear_default_(weight: Tensor, bias: Tensor) -> None:
    """The weight xavier-uniform, the bias as a fresh ``nn.Linear`` draws it: U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
    nn.init.xavier_uniform_(weight)
    bound = 1.0 / math.sqrt(weight.shape[1]) if weight.shape[1] > 0 else 0.0
    nn.init.uniform_(bias, -bound, bound)


class EulerEmbed(torch.autograd.Function):
    """``(r, p)`` of EulerNet's input on the transposed layout, ``e [B, D, F]`` (float32 CPU), ``mu [F]``: ``r = mu *
    cos(e)``, ``p = mu * sin(e)`` (cos and sin are torch's; the products one pass of ``bars_euler_embed_fwd``).
    Backward in one pass (``bars_euler_embed_bwd``) from the saved cos and sin, where autograd computes both again:
    ``g_e = (g_r * mu) * -sin + (g_p * mu) * cos`` (autograd's terms), ``g_mu = sum over B, D of (g_r * cos + g_p *
    sin)``. The fallback takes the same operations in torch."""

    @staticmethod
    def forward(ctx, e: Tensor, mu: Tensor) -> tuple[Tensor, Tensor]:  # type: ignore[override]
        e, mu = e.detach().contiguous(), mu.detach().contiguous()
        c, s = torch.cos(e), torch.sin(e)
        rows, f = e.shape[0], e.shape[-1]
        if _kernel_ok(c, s, mu):
            r, p = torch.empty_like(e), torch.empty_like(e)
            lib = _load()
            assert lib is not None
            lib.bars_euler_embed_fwd(c.data_ptr(), s.data_ptr(), mu.data_ptr(), r.data_ptr(), p.data_ptr(), rows,
                                     e[0].numel(), f)
        else:
            m = mu.view(f)
            r, p = m * c, m * s
        ctx.save_for_backward(c, s, mu)
        return r, p

    @staticmethod
    def backward(ctx, gr: Tensor, gp: Tensor) -> tuple[Tensor, Tensor]:  # type: ignore[override]
        c, s, mu = ctx.saved_tensors
        gr, gp = gr.contiguous(), gp.contiguous()
        f = c.shape[-1]
        if _kernel_ok(gr, gp, c, s, mu):
            ge, t = torch.empty_like(c), torch.empty_like(c)
            lib = _load()
            assert lib is not None
            lib.bars_euler_embed_bwd(gr.data_ptr(), gp.data_ptr(), c.data_ptr(), s.data_ptr(), mu.data_ptr(),
                                     ge.data_ptr(), t.data_ptr(), c.shape[0], c[0].numel(), f)
        else:
            m = mu.view(f)
            ge = (gr * m) * -s + (gp * m) * c
            t = gr * c + gp * s
        return ge, t.view(-1, f).sum(0).view(mu.shape)


class EulerPolar(torch.autograd.Function):
    """``polar [2, B, n]`` of ``r, p [B, n]`` (float32 CPU): ``polar[:, 0] = 0.5 * log((r * r + p * p) + 1e-8)``
    (the log-modulus), ``polar[:, 1] = atan2(p, r)`` (the phase), written into one buffer (no cat); the log, the
    0.5 and atan2 are torch's ops in place, the rest one pass of the kernel (``bars_euler_polar_fwd``). Backward in
    one pass (``bars_euler_polar_bwd``): with ``s = r * r + p * p``, ``a = (g_lam * 0.5) / (s + 1e-8)``, ``c = 1 / s``:
    ``g_r = (a * r + a * r) + (g_theta * -p) * c``, ``g_p = (a * p + a * p) + (g_theta * r) * c`` (autograd's
    products, log and atan2 backward, summed in this order). The fallback takes the same operations in torch."""

    @staticmethod
    def forward(ctx, r: Tensor, p: Tensor) -> Tensor:  # type: ignore[override]
        r, p = r.detach().contiguous(), p.detach().contiguous()
        rows, n = r.shape[0], r[0].numel()
        polar = torch.empty(2, rows, n, dtype=r.dtype)
        lam, theta = polar[0], polar[1]
        if _kernel_ok(r, p):
            lib = _load()
            assert lib is not None
            lib.bars_euler_polar_fwd(r.data_ptr(), p.data_ptr(), polar.data_ptr(), rows, n)
        else:
            rf, pf = r.view(rows, n), p.view(rows, n)
            torch.add(rf * rf + pf * pf, 1e-8, out=lam)
        lam.log_().mul_(0.5)
        torch.atan2(p.view(rows, n), r.view(rows, n), out=theta)
        ctx.save_for_backward(r, p)
        return polar

    @staticmethod
    def backward(ctx, g: Tensor) -> tuple[Tensor, Tensor]:  # type: ignore[override]
        r, p = ctx.saved_tensors
        g = g.contiguous()
        if _kernel_ok(g, r, p):
            gr, gp = torch.empty_like(r), torch.empty_like(p)
            lib = _load()
            assert lib is not None
            lib.bars_euler_polar_bwd(g.data_ptr(), r.data_ptr(), p.data_ptr(), gr.data_ptr(), gp.data_ptr(),
                                     r.shape[0], r[0].numel())
            return gr, gp
        rows = r.shape[0]
        x, y = r.view(rows, -1), p.view(rows, -1)
        s = x * x + y * y
        a = (g[0] * 0.5) / (s + 1e-8)
        c = 1.0 / s
        ax, ay = a * x, a * y
        gr = (ax + ax) + (g[1] * -y) * c
        gp = (ay + ay) + (g[1] * x) * c
        return gr.view_as(r), gp.view_as(p)


class EulerCombine(torch.autograd.Function):
    """``out [2, B, m]`` (the real parts, then the imaginary ones) of ``mixed [2, B, m]`` (the orders' map of the
    log-modulus and phase), ``bias_lam``, ``bias_theta [m]`` and ``lin [2B, m]`` (the implicit Linear before its
    ReLU, the real rows then the imaginary ones), float32 CPU: with ``e = exp(mixed[:, 0] + bias_lam)`` and ``t =
    mixed[:, 1] + bias_theta``, ``out[0] = relu(lin[:B]) + e * cos(t)``, ``out[1] = relu(lin[B:]) + e * sin(t)``.
    exp, cos and sin are torch's ops (in place); the rest one pass of the kernel each way (``bars_euler_combine_*``);
    the backward takes autograd's products in autograd's order (``g_e = g_r * cos + g_p * sin``, ``g_t = (g_r * e) *
    -sin + (g_p * e) * cos``, ReLU's gradient where the ReLU's output is > 0 or NaN). The fallback takes the same
    operations in torch."""

    @staticmethod
    def forward(ctx, mixed: Tensor, bias_lam: Tensor, bias_theta: Tensor, lin: Tensor) -> Tensor:  # type: ignore[override]
        mixed, lin = mixed.detach().contiguous(), lin.detach().contiguous()
        bl, bt = bias_lam.detach().contiguous(), bias_theta.detach().contiguous()
        rows, m = mixed.shape[1], mixed.shape[-1]
        kernel = _kernel_ok(mixed, bl, bt, lin)
        if kernel:
            e, t = torch.empty(rows, m, dtype=mixed.dtype), torch.empty(rows, m, dtype=mixed.dtype)
            lib = _load()
            assert lib is not None
            lib.bars_euler_combine_pre(mixed.data_ptr(), bl.data_ptr(), bt.data_ptr(), e.data_ptr(), t.data_ptr(),
                                       rows, m)
        else:
            e, t = mixed[0] + bl.view(m), mixed[1] + bt.view(m)
        e.exp_()
        c = torch.cos(t)
        s = t.sin_()
        lin2 = lin.view(2, rows, m)
        if kernel:
            out = torch.empty(2, rows, m, dtype=mixed.dtype)
            lib.bars_euler_combine_fwd(lin2.data_ptr(), e.data_ptr(), c.data_ptr(), s.data_ptr(), out.data_ptr(),
                                       rows, m)
        else:
            out = torch.stack([torch.relu(lin2[0]) + e * c, torch.relu(lin2[1]) + e * s])
        ctx.save_for_backward(lin2, e, c, s)
        ctx.bias_shapes = bias_lam.shape, bias_theta.shape
        return out

    @staticmethod
    def backward(ctx, g: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:  # type: ignore[override]
        lin2, e, c, s = ctx.saved_tensors
        g = g.contiguous()
        rows, m = e.shape
        if _kernel_ok(g, lin2, e, c, s):
            glin, gmixed = torch.empty_like(lin2), torch.empty(2, rows, m, dtype=g.dtype)
            lib = _load()
            assert lib is not None
            lib.bars_euler_combine_bwd(g.data_ptr(), lin2.data_ptr(), e.data_ptr(), c.data_ptr(), s.data_ptr(),
                                       glin.data_ptr(), gmixed.data_ptr(), rows, m)
        else:
            glin = torch.where((lin2 > 0) | lin2.isnan(), g, torch.zeros((), dtype=g.dtype))
            gr, gp = g[0], g[1]
            gmixed = torch.stack([(gr * c + gp * s) * e, (gr * e) * -s + (gp * e) * c])
        gb = gmixed.sum(1)
        shape_lam, shape_theta = ctx.bias_shapes
        return gmixed, gb[0].view(shape_lam), gb[1].view(shape_theta), glin.view(2 * rows, m)


class EulerInteractionLayer(nn.Module):
    """One Euler interaction layer: ``(r, p) [B, F_in, D] -> (r', p') [B, F_out, D]``, ``z = r + i p`` per field and
    embedding dimension.

    - explicit part (``exp(sum_f a_fo log z_f)``, the product of the fields' powers): with ``lambda = log|z|``
      (computed as ``0.5 log(r^2 + p^2 + 1e-8)``) and ``theta = atan2(p, r)``, both dropped out (``ex_dropout``,
      independent masks), ``lambda'_o = sum_f a_fo lambda_f + b^lambda_o``, ``theta'_o = sum_f a_fo theta_f +
      b^theta_o``, giving ``exp(lambda') cos(theta')`` and ``exp(lambda') sin(theta')``;
    - implicit part: ``relu(W drop(flat r) + b)`` and ``relu(W drop(flat p) + b)`` (one Linear ``F_in D ->
      F_out D`` for both, ``im_dropout``);
    - ``r' = implicit_r + explicit_r``, ``p' = implicit_p + explicit_p``, then per-field LayerNorm over D
      (``norm_r``, ``norm_p``) when ``layer_norm``.

    Parameters, named and initialised as FuxiCTR 2.3.10's ``EulerInteractionLayer`` (model_zoo/EulerNet):
    ``inter_orders [F_in, F_out]`` (the identity when ``F_in == F_out``, else ``softmax(N(0, 1) / 0.01)`` over
    the input fields: nearly one-hot columns), ``weight`` / ``bias`` (its ``im`` Linear: weight xavier-uniform, bias
    as a fresh ``nn.Linear``), ``bias_lam`` / ``bias_theta [1, D, F_out]`` (``N(0, 0.01^2)``), ``norm_r`` /
    ``norm_p``. The LayerNorms are built even without ``layer_norm``, as FuxiCTR builds them: unused, but in the
    net regularizer. Held as plain parameters (not an ``nn.Linear``) so that the BARS initialiser
    (``init_bars_``) keeps this initialisation."""

    def __init__(self, in_fields: int, out_fields: int, embedding_dim: int, layer_norm: bool = False,
                 ex_dropout: float = 0.0, im_dropout: float = 0.0) -> None:
        super().__init__()
        if min(in_fields, out_fields, embedding_dim) < 1:
            raise ValueError(f"EulerInteractionLayer: fields and embedding_dim must be >= 1, got in_fields "
                             f"{in_fields}, out_fields {out_fields}, embedding_dim {embedding_dim}")
        self.in_fields, self.out_fields, self.dim = in_fields, out_fields, embedding_dim
        self.layer_norm = layer_norm
        self.inter_orders = nn.Parameter(torch.empty(in_fields, out_fields))
        self.weight = nn.Parameter(torch.empty(out_fields * embedding_dim, in_fields * embedding_dim))
        self.bias = nn.Parameter(torch.empty(out_fields * embedding_dim))
        self.bias_lam = nn.Parameter(torch.empty(1, embedding_dim, out_fields))
        self.bias_theta = nn.Parameter(torch.empty(1, embedding_dim, out_fields))
        self.drop_ex = Dropout(ex_dropout)
        self.drop_im = Dropout(im_dropout)
        self.norm_r = LayerNorm(embedding_dim)
        self.norm_p = LayerNorm(embedding_dim)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        with torch.no_grad():
            if self.in_fields == self.out_fields:
                self.inter_orders.copy_(torch.eye(self.in_fields))
            else:
                self.inter_orders.copy_(torch.softmax(torch.randn(self.in_fields, self.out_fields) / 0.01, dim=0))
            _linear_default_(self.weight, self.bias)
            self.bias_lam.normal_(0.0, 0.01)
            self.bias_theta.normal_(0.0, 0.01)
        self.norm_r.reset_parameters()
        self.norm_p.reset_parameters()

    def forward(self, r: Tensor, p: Tensor) -> tuple[Tensor, Tensor]:
        rt, pt = self.forward_t(r.transpose(1, 2).contiguous(), p.transpose(1, 2).contiguous())
        return rt.transpose(1, 2), pt.transpose(1, 2)

    def forward_t(self, rt: Tensor, pt: Tensor) -> tuple[Tensor, Tensor]:
        """The layer on the transposed layout, ``(r, p) [B, D, F_in] -> [B, D, F_out]`` (what the network passes
        on): the orders' map over the field axis is then one matrix product over contiguous ``[B * 2D, F_in]``
        rows, ``bias_lam`` / ``bias_theta`` are already ``[1, D, F_out]``, the implicit Linear's rows and columns
        are taken in (dimension, field) order (a permuted view of the same weight, so the parameters keep
        FuxiCTR's layout), and the LayerNorms run over the middle axis: no transposed copies of the
        ``[B, F_out, D]`` activations forward or backward. Same values as FuxiCTR's layout up to float32 rounding
        (the implicit part's sums run over the inputs in another order)."""
        b, d, fi, fo = rt.shape[0], self.dim, self.in_fields, self.out_fields
        if self._fused(rt):
            return self._forward_fused(rt, pt)
        # explicit part: log-modulus and phase mixed by the orders ([B, 2D, F_in] @ [F_in, F_out])
        lam = 0.5 * torch.log(rt * rt + pt * pt + 1e-8)
        theta = torch.atan2(pt, rt)
        polar = torch.cat([self.drop_ex(lam), self.drop_ex(theta)], dim=1)
        lam, theta = torch.matmul(polar, self.inter_orders).split(d, dim=1)  # split, not slices (whose backward
        lam = torch.exp(lam + self.bias_lam)                                 # each fills a zero gradient)
        theta = theta + self.bias_theta
        # implicit part: one Linear over the real and the imaginary parts (stacked on the batch); weight rows in
        # (dimension, output field) order, columns in (dimension, input field) order
        w = self.weight.view(fo, d, fi, d).permute(1, 0, 3, 2).reshape(d * fo, d * fi)
        flat = torch.cat([rt.reshape(b, -1), pt.reshape(b, -1)], dim=0)
        lin = torch.relu(F.linear(self.drop_im(flat), w, self.bias.view(fo, d).t().reshape(-1)))
        lin_r, lin_p = lin.view(2, -1, d, fo).unbind(0)  # (not split(b): a traced graph would fix the batch size)
        out_r = lin_r + lam * torch.cos(theta)
        out_p = lin_p + lam * torch.sin(theta)
        if self.layer_norm:
            out_r, out_p = self.norm_r.forward_dim(out_r, 1), self.norm_p.forward_dim(out_p, 1)
        return out_r, out_p

    def _fused(self, rt: Tensor) -> bool:
        """Whether the element-wise parts run as autograd nodes of their own (:class:`EulerPolar`,
        :class:`EulerCombine`; the network's input :class:`EulerEmbed` follows the first layer's choice): float32
        CPU, no dropout at work (the unfused path draws the masks), not traced or under autocast (whose per-op casts
        apply to torch's ops only)."""
        no_dropout = not self.training or (self.drop_ex.p == 0.0 and self.drop_im.p == 0.0)
        return (rt.device.type == "cpu" and rt.dtype == torch.float32 and self.weight.dtype == torch.float32
                and no_dropout and not traced() and not autocast_on())

    def _forward_fused(self, rt: Tensor, pt: Tensor) -> tuple[Tensor, Tensor]:
        """:meth:`forward_t` with its element-wise parts fused: the log-modulus and the phase written into one
        ``[2, B, D F_in]`` buffer (no cat), and the exp / cos / sin combination with the implicit part's ReLU in one
        node whose backward is one pass (docs/performance.md). Same forward values as the unfused path (the same
        operations in the same order); the input gradients sum the same terms in a fixed order (float32
        rounding aside, the same)."""
        b, d, fi, fo = rt.shape[0], self.dim, self.in_fields, self.out_fields
        polar = EulerPolar.apply(rt, pt)  # [2, B, D * F_in]: the log-moduli, then the phases
        mixed = torch.matmul(polar.view(2 * b * d, fi), self.inter_orders)  # [2 B D, F_out]
        w = self.weight.view(fo, d, fi, d).permute(1, 0, 3, 2).reshape(d * fo, d * fi)
        flat = torch.cat([rt.reshape(b, -1), pt.reshape(b, -1)], dim=0)
        lin = F.linear(flat, w, self.bias.view(fo, d).t().reshape(-1))  # [2B, D * F_out], before its ReLU
        out = EulerCombine.apply(mixed.view(2, b, d * fo), self.bias_lam, self.bias_theta, lin)
        out_r, out_p = out[0].view(b, d, fo), out[1].view(b, d, fo)
        if self.layer_norm:
            out_r, out_p = self.norm_r.forward_dim(out_r, 1), self.norm_p.forward_dim(out_p, 1)
        return out_r, out_p


class EulerNetwork(nn.Module):
    """EulerNet's network over field embeddings ``E [B, F, D]``: ``r = mu cos E``, ``p = mu sin E`` (``mu [1, F, 1]``,
    ones at start: the moduli), one :class:`EulerInteractionLayer` per entry of ``shape`` (its number of output
    "fields"; ``()``: none), then ``logit = reg(flat r) + reg(flat p)`` with one ``Linear(shape[-1] D, 1)`` ``reg``
    (``weight`` xavier-normal, ``bias`` as a fresh ``nn.Linear``, as FuxiCTR; plain parameters so that the BARS
    initialiser keeps that). Output ``[B, 1]``."""

    def __init__(self, num_fields: int, embedding_dim: int, shape: tuple[int, ...], layer_norm: bool = False,
                 ex_dropout: float = 0.0, im_dropout: float = 0.0) -> None:
        super().__init__()
        widths = (num_fields, *shape)
        self.layers = nn.ModuleList(
            EulerInteractionLayer(a, b, embedding_dim, layer_norm, ex_dropout, im_dropout)
            for a, b in itertools.pairwise(widths)
        )
        self.mu = nn.Parameter(torch.ones(1, num_fields, 1))
        self.weight = nn.Parameter(torch.empty(1, widths[-1] * embedding_dim))
        self.bias = nn.Parameter(torch.empty(1))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        with torch.no_grad():
            self.mu.fill_(1.0)
            nn.init.xavier_normal_(self.weight)
            bound = 1.0 / math.sqrt(self.weight.shape[1])
            self.bias.uniform_(-bound, bound)

    def forward(self, emb: Tensor) -> Tensor:
        # the layers run on the transposed layout [B, D, F] (EulerInteractionLayer.forward_t)
        emb_t, mu_t = emb.transpose(1, 2).contiguous(), self.mu.transpose(1, 2)
        if self.layers and self.layers[0]._fused(emb_t):  # the same values in one autograd node (EulerEmbed)
            r, p = EulerEmbed.apply(emb_t, self.mu)
        else:
            r, p = mu_t * torch.cos(emb_t), mu_t * torch.sin(emb_t)
        for layer in self.layers:
            r, p = layer.forward_t(r, p)
        b, d, f = r.shape
        # reg(r) + reg(p) = W (r + p) + 2 b; W's columns in (dimension, field) order
        w = self.weight.view(f, d).t().reshape(1, -1)
        return F.linear((r + p).reshape(b, -1), w) + 2 * self.bias
