"""Shared building blocks of the model zoo. Each block is tested once in tests/test_layers.py.

Conventions
- A batch is ``dict[str, Tensor]`` keyed by feature name: categorical int32 [B], numeric float32 [B],
  sequence int32 [B, L] (0 = padding). Labels are never in the batch.
- Every embedding table of a model lives inside a :class:`FeatureEmbedding`; :func:`split_parameters` uses that to
  separate the embedding regulariser's parameters from the net regulariser's.
- :func:`init_bars_` applies the BARS initialisation to a whole model.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bars.data.spec import Feature, FeatureSpec

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "leaky_relu": nn.LeakyReLU,
    "prelu": nn.PReLU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "identity": nn.Identity,
}


def activation(name: str, inplace: bool = False) -> nn.Module:
    """An activation module by (case-insensitive) name; one of :data:`ACTIVATIONS`. ``inplace`` applies to ReLU
    only (safe after Linear or BatchNorm, whose backward does not need their output)."""
    key = name.lower()
    if key not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; known: {sorted(ACTIVATIONS)}")
    if key == "relu":
        return nn.ReLU(inplace=inplace)
    return ACTIVATIONS[key]()


# ------------------------------------------------------------------------------------------------------------
# Embeddings
# ------------------------------------------------------------------------------------------------------------
class FeatureEmbedding(nn.Module):
    """Embeds every field of ``spec`` (or the subset ``fields``, in spec order) into ``[B, F, dim]``.

    - categorical: one lookup. All tables (categorical and sequence fields) are packed into ONE parameter
      ``weight`` of shape ``[1 + sum(vocab_size - 1), dim]``: row 0 is the shared padding row (always zero, its
      gradient is masked by ``padding_idx``), field ``f``'s index ``i >= 1`` lives at row ``offset_f + i - 1``.
      One gather for all categorical fields keeps per-batch Python overhead to a handful of ops. The squared
      norm of the packed table equals the sum over the per-field tables, so regularising "whole tables" is
      unchanged; :meth:`table` returns a field's own rows for inspection.
    - numeric: ``value * v_f`` with a learned vector ``v_f`` per field (``numeric_weight [F_num, dim]``), as
      FuxiCTR's ``Linear(1, dim, bias=False)``; initialised xavier-normal like that Linear (see init_bars_).
    - sequence: masked mean over the non-zero indices of ``[B, L]``; a sequence with no non-zero index gives the
      zero vector.
    - ``Feature.share_embedding``: the field reads the rows of the named field's table (its vocab_size must not
      exceed the owner's).
    - indices must lie in ``[0, vocab_size)``; in the packed table a larger one would silently read a
      neighbouring field's rows, so on CPU an out-of-range index raises ``IndexError`` naming the field (one
      comparison per batch; skipped on accelerators to avoid a device sync).
    """

    def __init__(self, spec: FeatureSpec, dim: int, fields: Sequence[str] | None = None) -> None:
        super().__init__()
        if dim < 1:
            raise ValueError(f"FeatureEmbedding: dim must be >= 1, got {dim}")
        names = list(spec.names) if fields is None else [n for n in spec.names if n in set(fields)]
        if fields is not None:
            missing = [n for n in fields if n not in spec.names]
            if missing:
                raise ValueError(
                    f"FeatureEmbedding: fields {missing} are not in spec; fields are {spec.names}"
                )
        if not names:
            raise ValueError("FeatureEmbedding: no fields to embed")
        self.dim = dim
        self.field_names: tuple[str, ...] = tuple(names)
        feats = [spec[n] for n in names]

        # table owners: a field that shares another's table reads the owner's rows (owner may be outside `fields`)
        def owner(f: Feature) -> Feature:
            seen = {f.name}
            while f.share_embedding:
                f = spec[f.share_embedding]
                if f.name in seen:
                    raise ValueError(f"share_embedding cycle through {sorted(seen)}")
                seen.add(f.name)
            return f

        offsets: dict[str, int] = {}
        rows = 1  # row 0 = shared padding
        for f in feats:
            if f.type == "numeric":
                continue
            o = owner(f)
            if o.type == "numeric":
                raise ValueError(f"feature {f.name!r} shares the embedding of numeric field {o.name!r}")
            if f.vocab_size > o.vocab_size:
                raise ValueError(
                    f"feature {f.name!r} (vocab {f.vocab_size}) shares the table of {o.name!r} "
                    f"(vocab {o.vocab_size}), which is smaller"
                )
            if o.name not in offsets:
                offsets[o.name] = rows
                rows += o.vocab_size - 1
        self.table_rows: dict[str, tuple[int, int]] = {
            n: (offsets[n], offsets[n] + spec[n].vocab_size - 1) for n in offsets
        }
        self._owner = {f.name: owner(f).name for f in feats if f.type != "numeric"}
        self.cat_names = tuple(f.name for f in feats if f.type == "categorical")
        self.num_names = tuple(f.name for f in feats if f.type == "numeric")
        self.seq_names = tuple(f.name for f in feats if f.type == "sequence")
        self._seq_offsets = tuple(offsets[owner(spec[n]).name] for n in self.seq_names)

        self.weight = nn.Parameter(torch.empty(rows, dim)) if rows > 1 else None
        # global row of index i of a categorical field = (i + offset - 1) if i > 0 else 0
        cat_off = [offsets[owner(spec[n]).name] - 1 for n in self.cat_names]
        self.register_buffer("cat_offsets", torch.tensor(cat_off, dtype=torch.int64), persistent=False)
        cat_vocab = [spec[n].vocab_size for n in self.cat_names]
        self.register_buffer("cat_vocab", torch.tensor(cat_vocab, dtype=torch.int64), persistent=False)
        self._seq_vocab = tuple(spec[n].vocab_size for n in self.seq_names)
        self.numeric_weight = nn.Parameter(torch.empty(len(self.num_names), dim)) if self.num_names else None

        order = list(self.cat_names) + list(self.num_names) + list(self.seq_names)
        perm = [order.index(n) for n in names]
        self._perm = None if perm == list(range(len(names))) else perm
        self.register_buffer("perm", torch.tensor(perm, dtype=torch.int64), persistent=False)
        self.reset_parameters()

    @property
    def num_fields(self) -> int:
        return len(self.field_names)

    @property
    def output_dim(self) -> int:
        """Width of :meth:`flat`: num_fields * dim."""
        return self.num_fields * self.dim

    def reset_parameters(self, std: float = 1e-4) -> None:
        """Embedding rows ~ N(0, std) with the padding row zero; numeric vectors xavier-normal (fan 1 x dim)."""
        with torch.no_grad():
            if self.weight is not None:
                self.weight.normal_(0.0, std)
                self.weight[0].zero_()
            if self.numeric_weight is not None:
                self.numeric_weight.normal_(0.0, math.sqrt(2.0 / (1 + self.dim)))

    def table(self, name: str) -> Tensor:
        """The rows of field ``name``'s table (index i >= 1 at row i - 1; padding row 0 is implicit zero); a
        field with ``share_embedding`` gives its owner's rows."""
        lo, hi = self.table_rows[self._owner.get(name, name)]
        assert self.weight is not None
        return self.weight[lo:hi]

    def _lookup(self, idx: Tensor, offset: Tensor | int) -> Tensor:
        assert self.weight is not None
        g = torch.where(idx > 0, idx + offset, 0)
        return F.embedding(g, self.weight, padding_idx=0)

    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        """``[B, F, dim]`` in spec order."""
        parts: list[Tensor] = []
        if self.cat_names:
            idx = torch.stack([batch[n] for n in self.cat_names], dim=1).long()  # [B, Fc]
            if idx.device.type == "cpu" and bool((idx >= self.cat_vocab).any()):
                self._out_of_range(idx, self.cat_vocab, self.cat_names)
            parts.append(self._lookup(idx, self.cat_offsets))
        if self.num_names:
            vals = torch.stack([batch[n] for n in self.num_names], dim=1).float()  # [B, Fn]
            parts.append(vals.unsqueeze(-1) * self.numeric_weight)
        for n, off, v in zip(self.seq_names, self._seq_offsets, self._seq_vocab, strict=True):
            seq = batch[n].long()  # [B, L]
            if seq.device.type == "cpu" and bool((seq >= v).any()):
                raise IndexError(f"sequence field {n!r}: index {int(seq.max())} >= vocab_size {v}")
            emb = self._lookup(seq, off - 1)  # [B, L, D]
            mask = (seq > 0).to(emb.dtype)  # explicit, so pooling never depends on the padding row's value
            count = mask.sum(dim=1, keepdim=True).clamp_(min=1.0)
            pooled = torch.bmm(mask.unsqueeze(1), emb).squeeze(1)  # [B, D]: sum over non-padding positions
            parts.append((pooled / count).unsqueeze(1))
        out = parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)
        if self._perm is not None:
            out = out.index_select(1, self.perm)
        return out

    @staticmethod
    def _out_of_range(idx: Tensor, vocab: Tensor, names: Sequence[str]) -> None:
        bad = (idx >= vocab).any(dim=0).nonzero().flatten().tolist()
        detail = ", ".join(
            f"{names[j]!r}: max {int(idx[:, j].max())} >= vocab_size {int(vocab[j])}" for j in bad
        )
        raise IndexError(f"categorical indices out of range ({detail})")

    def flat(self, batch: dict[str, Tensor]) -> Tensor:
        """``[B, F * dim]`` (a view of :meth:`forward`)."""
        return self.forward(batch).flatten(start_dim=1)


class LogisticRegression(nn.Module):
    """First-order term: sum over fields of a scalar weight per value (a dim-1 FeatureEmbedding), plus bias."""

    def __init__(self, spec: FeatureSpec, use_bias: bool = True) -> None:
        super().__init__()
        self.embedding = FeatureEmbedding(spec, 1)
        self.bias = nn.Parameter(torch.zeros(1)) if use_bias else None

    def reset_parameters(self) -> None:
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        """Logits ``[B, 1]``."""
        out = self.embedding(batch).sum(dim=1)
        return out + self.bias if self.bias is not None else out


# ------------------------------------------------------------------------------------------------------------
# Dense blocks
# ------------------------------------------------------------------------------------------------------------
class Dropout(nn.Module):
    """Inverted dropout, as ``nn.Dropout``, with a cheaper mask on CPU.

    ``torch.bernoulli_`` on CPU draws one generator call per element and was a third of DCN's training step on
    two cores. Here one 64-bit draw of the (seeded, global) torch generator gives four 16-bit uniforms; an element
    is kept when its uniform is >= ``round(p * 65536)``, so the drop probability is ``p`` rounded to a multiple
    of 1/65536 (0.2 -> 0.199997) and kept values are scaled by the exact ``1 / keep_probability``. On other
    devices it is ``F.dropout``."""

    def __init__(self, p: float) -> None:
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout probability must be in [0, 1), got {p}")
        self.p = p
        self._threshold = round(p * 65536) - 32768  # on the signed int16 scale
        self._scale = 65536.0 / (65536 - round(p * 65536))

    def extra_repr(self) -> str:
        return f"p={self.p}"

    def _keep(self, x: Tensor) -> Tensor:
        n = x.numel()
        bits = torch.empty((n + 3) // 4, dtype=torch.int64).random_(-(2**63), None)
        return bits.view(torch.int16)[:n].view(x.shape) >= self._threshold

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0.0:
            return x
        if x.device.type != "cpu":
            return F.dropout(x, self.p, True)
        return x * self._keep(x).to(x.dtype).mul_(self._scale)


class ReLUDropout(Dropout):
    """``Dropout(ReLU(x))`` in one mask on CPU while training: ``x * ((x > 0) & keep) / keep_probability`` (one
    multiply forward and backward instead of ReLU + its threshold backward + the dropout multiply). Same values
    and gradients as the two modules in sequence."""

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0.0 or x.device.type != "cpu":
            return super().forward(torch.relu(x))
        keep = self._keep(x).logical_and_(x > 0)
        return x * keep.to(x.dtype).mul_(self._scale)


class MLP(nn.Module):
    """Per hidden layer: Linear -> BatchNorm (optional) -> activation -> :class:`Dropout` (when > 0); then an optional
    output Linear (``output_dim``). With no hidden units and no output_dim it is the identity. ReLU followed by
    dropout is the single module :class:`ReLUDropout` (same function, fewer passes over memory)."""

    def __init__(
        self,
        input_dim: int,
        hidden_units: Sequence[int],
        activation_name: str = "relu",
        batch_norm: bool = False,
        dropout: float = 0.0,
        output_dim: int | None = None,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        d = input_dim
        for h in hidden_units:
            layers.append(nn.Linear(d, h))
            if batch_norm:
                layers.append(nn.BatchNorm1d(h))
            if dropout > 0 and activation_name.lower() == "relu":
                layers.append(ReLUDropout(dropout))
            else:
                layers.append(activation(activation_name, inplace=True))
                if dropout > 0:
                    layers.append(Dropout(dropout))
            d = h
        if output_dim is not None:
            layers.append(nn.Linear(d, output_dim))
            d = output_dim
        self.net = nn.Sequential(*layers)
        self.output_dim = d

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class CrossNet(nn.Module):
    """DCN (v1) cross network: ``x_{l+1} = x_0 * (x_l . w_l) + b_l + x_l`` (w_l a vector, b_l zero-initialised)."""

    def __init__(self, input_dim: int, num_layers: int) -> None:
        super().__init__()
        self.w = nn.ModuleList(nn.Linear(input_dim, 1, bias=False) for _ in range(num_layers))
        self.b = nn.ParameterList(nn.Parameter(torch.zeros(input_dim)) for _ in range(num_layers))

    def reset_parameters(self) -> None:
        for b in self.b:
            nn.init.zeros_(b)

    def forward(self, x0: Tensor) -> Tensor:
        x = x0
        for w, b in zip(self.w, self.b, strict=True):
            x = x0 * w(x) + b + x
        return x


class CrossNetV2(nn.Module):
    """DCN-V2 full-rank cross network: ``x_{l+1} = x_0 * (W_l x_l + b_l) + x_l``."""

    def __init__(self, input_dim: int, num_layers: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(input_dim, input_dim) for _ in range(num_layers))

    def forward(self, x0: Tensor) -> Tensor:
        x = x0
        for lin in self.layers:
            x = x0 * lin(x) + x
        return x


class FMInteraction(nn.Module):
    """Second-order FM term ``sum_{i<j} <e_i, e_j>`` via ``0.5 * ((sum e)^2 - sum e^2)`` summed over dim.
    Input ``[B, F, D]``, output ``[B, 1]``."""

    def forward(self, emb: Tensor) -> Tensor:
        s = emb.sum(dim=1)
        return 0.5 * (s * s - (emb * emb).sum(dim=1)).sum(dim=1, keepdim=True)


class CIN(nn.Module):
    """xDeepFM's Compressed Interaction Network. Layer k: ``Z = x_0 (outer, per dim) x_{k-1}`` of shape
    ``[B, F * H_{k-1}, D]``, compressed by a 1x1 convolution (here a Linear over the channel axis, the same map)
    into ``H_k`` feature maps; every layer's maps are sum-pooled over D, concatenated and mapped to
    ``output_dim`` by a Linear. No split-half (as FuxiCTR). Input ``[B, F, D]``."""

    def __init__(self, num_fields: int, hidden_units: Sequence[int], output_dim: int = 1) -> None:
        super().__init__()
        convs = []
        prev = num_fields
        for h in hidden_units:
            convs.append(nn.Linear(num_fields * prev, h))
            prev = h
        self.convs = nn.ModuleList(convs)
        self.fc = nn.Linear(sum(hidden_units), output_dim)

    def forward(self, x0: Tensor) -> Tensor:
        b, _, d = x0.shape
        x = x0
        pooled = []
        for conv in self.convs:
            z = torch.einsum("bhd,bmd->bhmd", x0, x).reshape(b, -1, d)  # [B, F*H, D]
            x = conv(z.transpose(1, 2)).transpose(1, 2)  # [B, H_k, D]
            pooled.append(x.sum(dim=-1))
        return self.fc(torch.cat(pooled, dim=-1))


class MultiHeadSelfAttention(nn.Module):
    """AutoInt's interacting layer over fields ``[B, F, input_dim] -> [B, F, attention_dim]``: multi-head
    dot-product attention (optional 1/sqrt(head_dim) scaling, dropout on the attention weights), plus a residual
    (projected by a Linear when the widths differ), optional LayerNorm, then ReLU."""

    def __init__(
        self,
        input_dim: int,
        attention_dim: int,
        num_heads: int = 1,
        dropout: float = 0.0,
        use_residual: bool = True,
        use_scale: bool = False,
        layer_norm: bool = False,
    ) -> None:
        super().__init__()
        if attention_dim % num_heads:
            raise ValueError(f"attention_dim {attention_dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.head_dim = attention_dim // num_heads
        self.scale = self.head_dim**-0.5 if use_scale else 1.0
        self.qkv = nn.Linear(input_dim, 3 * attention_dim, bias=False)
        self.use_residual = use_residual
        self.res = (
            nn.Linear(input_dim, attention_dim, bias=False)
            if use_residual and input_dim != attention_dim
            else None
        )
        self.dropout = Dropout(dropout) if dropout > 0 else None
        self.norm = nn.LayerNorm(attention_dim) if layer_norm else None

    def forward(self, x: Tensor) -> Tensor:
        b, f, _ = x.shape
        q, k, v = self.qkv(x).view(b, f, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)  # [B,H,F,d]
        att = torch.softmax((q @ k.transpose(-2, -1)) * self.scale, dim=-1)
        if self.dropout is not None:
            att = self.dropout(att)
        out = (att @ v).transpose(1, 2).reshape(b, f, self.num_heads * self.head_dim)
        if self.use_residual:
            out = out + (self.res(x) if self.res is not None else x)
        if self.norm is not None:
            out = self.norm(out)
        return torch.relu(out)


# ------------------------------------------------------------------------------------------------------------
# FinalMLP pieces
# ------------------------------------------------------------------------------------------------------------
class FeatureSelection(nn.Module):
    """FinalMLP's stream-specific feature gating: ``gate = 2 * sigmoid(MLP(context))`` of width ``F * D``
    multiplies the flat embedding. The context is the embedding of ``context`` fields (own table, as FuxiCTR)
    or, when empty, a learned bias vector of width ``dim``.

    Deviation from FuxiCTR: the context bias starts at N(0, 1), not zeros. With a zero context and zero Linear
    biases every ReLU of the gate MLP sits at 0 forever, so only the gate's output bias would ever learn."""

    def __init__(
        self, spec: FeatureSpec, dim: int, flat_dim: int, hidden_units: Sequence[int], context: Sequence[str]
    ) -> None:
        super().__init__()
        self.context = FeatureEmbedding(spec, dim, fields=list(context)) if context else None
        self.ctx_bias = None if context else nn.Parameter(torch.randn(1, dim))
        in_dim = dim * max(1, len(context))
        self.gate = MLP(in_dim, hidden_units, "relu", batch_norm=False, dropout=0.0, output_dim=flat_dim)

    def reset_parameters(self) -> None:
        if self.ctx_bias is not None:
            nn.init.normal_(self.ctx_bias, 0.0, 1.0)

    def forward(self, batch: dict[str, Tensor], flat: Tensor) -> Tensor:
        if self.context is not None:
            ctx = self.context.flat(batch)
        else:
            assert self.ctx_bias is not None
            ctx = self.ctx_bias.expand(flat.shape[0], -1)
        return flat * (2.0 * torch.sigmoid(self.gate(ctx)))


class BilinearFusion(nn.Module):
    """FinalMLP's multi-head bilinear fusion of two stream outputs ``x [B, dx]``, ``y [B, dy]``:
    ``w_x.x + w_y.y + sum_h x_h^T W_h y_h`` (+ bias), heads splitting x and y into equal chunks. Output [B, 1]."""

    def __init__(self, x_dim: int, y_dim: int, num_heads: int = 1) -> None:
        super().__init__()
        if x_dim % num_heads or y_dim % num_heads:
            raise ValueError(f"stream widths {x_dim}, {y_dim} must be divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.hx, self.hy = x_dim // num_heads, y_dim // num_heads
        self.w_x = nn.Linear(x_dim, 1)
        self.w_y = nn.Linear(y_dim, 1, bias=False)
        self.w_xy = nn.Parameter(torch.empty(num_heads, self.hx, self.hy))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # xavier-normal of the (heads*hx*hy, 1) matrix FuxiCTR stores
        nn.init.normal_(self.w_xy, 0.0, math.sqrt(2.0 / (self.w_xy.numel() + 1)))

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        b = x.shape[0]
        xh = x.view(b, self.num_heads, 1, self.hx)
        yh = y.view(b, self.num_heads, self.hy, 1)
        bil = (xh @ self.w_xy @ yh).view(b, self.num_heads).sum(dim=1, keepdim=True)
        return self.w_x(x) + self.w_y(y) + bil


# ------------------------------------------------------------------------------------------------------------
# Parameters: regulariser split and initialisation
# ------------------------------------------------------------------------------------------------------------
def split_parameters(model: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """``(embedding_params, net_params)``: every parameter inside a :class:`FeatureEmbedding` (first-order LR
    weights and FinalMLP context embeddings included) is an embedding parameter, everything else a net
    parameter. Each parameter appears once (shared parameters are deduplicated)."""
    emb_ids: set[int] = set()
    emb: list[nn.Parameter] = []
    for m in model.modules():
        if isinstance(m, FeatureEmbedding):
            for p in m.parameters():
                if id(p) not in emb_ids:
                    emb_ids.add(id(p))
                    emb.append(p)
    net: list[nn.Parameter] = []
    seen = set(emb_ids)
    for p in model.parameters():
        if id(p) not in seen:
            seen.add(id(p))
            net.append(p)
    return emb, net


def init_bars_(model: nn.Module, embedding_std: float = 1e-4) -> nn.Module:
    """The BARS initialisation, in place; returns ``model``.

    1. every module with its own ``reset_parameters`` (BatchNorm/LayerNorm: ones/zeros, CrossNet bias and
       FinalMLP context bias: N(0, 1), bilinear fusion weight: xavier-normal, PReLU: 0.25) is reset;
    2. every ``nn.Linear``: weight xavier-normal, bias 0;
    3. every :class:`FeatureEmbedding`: rows N(0, embedding_std), padding row zero; numeric vectors
       xavier-normal (FuxiCTR initialises its ``Linear(1, dim)`` that way).
    """
    for m in model.modules():
        if isinstance(m, (nn.Linear, FeatureEmbedding)):
            continue
        reset = getattr(m, "reset_parameters", None)
        if callable(reset):
            reset()
    for m in model.modules():
        if isinstance(m, nn.Linear):
            nn.init.xavier_normal_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    for m in model.modules():
        if isinstance(m, FeatureEmbedding):
            m.reset_parameters(embedding_std)
    return model


def count_parameters(model: nn.Module, params: Iterable[nn.Parameter] | None = None) -> int:
    """Number of trainable scalars (each shared parameter counted once)."""
    ps = {id(p): p for p in (params if params is not None else model.parameters()) if p.requires_grad}
    return sum(p.numel() for p in ps.values())
