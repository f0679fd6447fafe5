"""Convolution over the field axis: CCPM's with k-max pooling (Liu et al. CIKM 2015), FGCNN's feature generation
(Liu et al. WWW 2019)."""

from __future__ import annotations

import ctypes
import functools
from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.nn import functional as F
from torch.nn.modules.utils import _pair

from bars.models.layers.core import activation
from bars.models.layers.kernels import _kernel_ok, _load, autocast_on, intel_avx512_cpu, kmax_index, traced


class KMaxPooling(nn.Module):
    """The ``k`` largest values along ``dim``, kept in their original order (FuxiCTR's ``KMaxPooling``: top-k
    indices sorted ascending, then gathered). Along the last axis the index comes from
    :func:`~bars.models.layers.kernels.kmax_index`: the compiled kernel where built, ``topk`` for the rows it leaves
    (ties at the boundary, NaN); the same index either way."""

    def __init__(self, k: int, dim: int) -> None:
        super().__init__()
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        self.k = k
        self.dim = dim

    def extra_repr(self) -> str:
        return f"k={self.k}, dim={self.dim}"

    def forward(self, x: Tensor) -> Tensor:
        if self.dim % x.dim() == x.dim() - 1:  # the last axis (CCPM's): the compiled kernel where built
            return x.gather(self.dim, kmax_index(x, self.k))
        index = x.topk(self.k, dim=self.dim).indices.sort(dim=self.dim).values
        return x.gather(self.dim, index)


def ccpm_pooling_sizes(num_fields: int, num_layers: int) -> list[int]:
    """CCPM's k per layer, as FuxiCTR: ``k_i = max(3, int((1 - (i / l) ** (l - i)) * F))`` for ``i < l`` and 3
    for the last layer. (The paper rounds up, ``ceil``; FuxiCTR truncates with ``int``, which we follow.)"""
    ks = []
    for i in range(1, num_layers + 1):
        if i < num_layers:
            ks.append(max(3, int((1 - pow(float(i) / num_layers, num_layers - i)) * num_fields)))
        else:
            ks.append(3)
    return ks


class FieldConvolution(nn.Module):
    """CCPM's convolution stack over the field embeddings ``[B, F, D] -> [B, C_l, 3, D]``. Layer ``i``:

        zero-pad the field axis by ``h_i - 1`` on both sides ("wide" convolution), Conv2d with kernel
        ``(h_i, 1)`` from ``C_{i-1}`` to ``C_i`` channels (each embedding dimension convolved separately, the
        kernel shared across them), k-max pooling over the field axis (:func:`ccpm_pooling_sizes`), activation.

    The convolutions are ``nn.Conv2d`` modules (``convs[i]``: weight ``[C_i, C_{i-1}, h_i, 1]``, FuxiCTR's
    ``conv_layer.conv_layer[4 * i + 1]``), keeping PyTorch's default initialisation as FuxiCTR does (its reset
    only touches Linear and Conv1d). The forward pass runs them as one matrix product of the unfolded windows
    over fields (the embedding dimension folded into the batch) with the ``[C_i, C_{i-1} * h_i]`` weights: the
    same sums as the convolution, 2.6x faster on CPU than ``conv1d`` for CCPM's first layer (8.4 ms against 22
    ms forward + backward at batch 4096 on two cores of an Intel Xeon with AVX-512; ``conv2d`` 19 ms), whose one
    or three input channels make a poor case for the convolution kernels. Except on Intel CPUs with AVX-512
    (:func:`~bars.models.layers.kernels.intel_avx512_cpu` false: AVX2 ones, and AMD's with AVX-512), layers of
    several input channels use ``conv1d``: there the product's copy of the windows costs more than the
    convolution. A traced (exported) graph keeps ``conv1d``.
    """

    def __init__(
        self, num_fields: int, channels: Sequence[int], kernel_heights: Sequence[int], activation_name: str
    ) -> None:
        super().__init__()
        if not channels:
            raise ValueError("channels must have at least one layer")
        if len(kernel_heights) != len(channels):
            raise ValueError(
                f"channels {tuple(channels)} and kernel_heights {tuple(kernel_heights)} must have the same length"
            )
        if any(c < 1 for c in channels) or any(h < 1 for h in kernel_heights):
            raise ValueError(
                f"channels {tuple(channels)} and kernel_heights {tuple(kernel_heights)} must be positive"
            )
        self.pooling_sizes = ccpm_pooling_sizes(num_fields, len(channels))
        height = num_fields
        for i, (h, k) in enumerate(zip(kernel_heights, self.pooling_sizes, strict=True)):
            out = height + h - 1  # wide convolution
            if k > out:
                raise ValueError(
                    f"CCPM layer {i + 1}: k-max pooling keeps {k} of only {out} convolution outputs "
                    f"({height} rows in, kernel height {h}); use more fields or taller kernels"
                )
            height = k
        ins = [1, *channels[:-1]]
        self.convs = nn.ModuleList(
            nn.Conv2d(c_in, c_out, kernel_size=(h, 1)) for c_in, c_out, h in zip(ins, channels, kernel_heights)
        )
        self.pools = nn.ModuleList(KMaxPooling(k, dim=2) for k in self.pooling_sizes)
        self.act = activation(activation_name)
        self.output_channels = channels[-1]

    def forward(self, emb: Tensor) -> Tensor:
        b, f, d = emb.shape
        x = emb.transpose(1, 2).reshape(b * d, 1, f)  # [B*D, C, F]: each embedding dimension is a sequence
        for conv, pool in zip(self.convs, self.pools, strict=True):
            h = conv.kernel_size[0]
            # an exported graph (ONNX has no Unfold of unknown size), and with AVX2 kernels a layer of several input
            # channels: the convolution (there the unfolded windows' product copies them: CCPM's second layer, 3
            # channels, 36 ms against conv1d's 14.5 forward + backward at batch 4096, 2 threads, an AMD EPYC; its
            # one-channel first layer 16.3 against 17.1)
            if traced() or (x.shape[1] > 1 and x.device.type == "cpu" and not intel_avx512_cpu()):
                x = F.conv1d(F.pad(x, (h - 1, h - 1)), conv.weight.squeeze(-1), conv.bias)
            else:
                windows = F.pad(x, (h - 1, h - 1)).unfold(-1, h, 1)  # [B*D, C_in, L, h]: each output's inputs
                x = torch.einsum("nclh,och->nol", windows, conv.weight.squeeze(-1)) + conv.bias.unsqueeze(-1)
            x = self.act(pool(x))
            x = x.contiguous()
        c, k = x.shape[1], x.shape[2]
        return x.view(b, d, c, k).permute(0, 2, 3, 1)  # [B, C, k, D]


@functools.cache
def _pool_lib() -> ctypes.CDLL:
    """The kernels' library with :class:`RowMaxPool`'s two functions declared (x, out / g, x, gi; n, h, w, p, pad,
    ho)."""
    lib = _load()
    assert lib is not None
    p, i64 = ctypes.c_void_p, ctypes.c_int64
    lib.bars_row_maxpool_fwd.argtypes, lib.bars_row_maxpool_fwd.restype = [p, p] + [i64] * 6, None
    lib.bars_row_maxpool_bwd.argtypes, lib.bars_row_maxpool_bwd.restype = [p, p, p] + [i64] * 6, None
    return lib


class RowMaxPool(torch.autograd.Function):
    """FGCNN's ``MaxPool2d((p, 1), padding=(pad, 0))`` on ``x [B, C, H, W]`` (float32 CPU, contiguous) in one pass
    each way (``bars_row_maxpool_*``, bars/models/layers/_kernels.c): the same values, the same row chosen (the
    first real row of a window, then a later one that is greater or NaN) and the same gradient (``0 + g`` at that
    row, 0 elsewhere) as torch's. Torch's NCHW pooling walks the ``W = D`` (16) columns one window at a time: at the
    Criteo shape (batch 4096, FGCNN's four layers) its forward + backward took 743 ms of a ~8.5 s step, the kernel's
    163 ms (docs/performance.md). The backward finds the row again from ``x``, which the activation before it keeps
    anyway (torch saves an int64 index per output). :func:`row_max_pool` picks it or torch's."""

    @staticmethod
    def forward(ctx, x: Tensor, p: int, pad: int) -> Tensor:  # type: ignore[override]
        b, c, h, w = x.shape
        ho = (h + 2 * pad - p) // p + 1
        out = torch.empty(b, c, ho, w, dtype=x.dtype)
        _pool_lib().bars_row_maxpool_fwd(x.data_ptr(), out.data_ptr(), b * c, h, w, p, pad, ho)
        ctx.save_for_backward(x)
        ctx.dims = (p, pad, ho)
        return out

    @staticmethod
    def backward(ctx, g: Tensor) -> tuple[Tensor, None, None]:  # type: ignore[override]
        (x,) = ctx.saved_tensors
        p, pad, ho = ctx.dims
        g = g.contiguous()
        if not _kernel_ok(g):  # (a gradient of another dtype, or the kernels turned off since: torch's pooling)
            with torch.enable_grad():
                xr = x.detach().requires_grad_()
                return torch.autograd.grad(F.max_pool2d(xr, (p, 1), padding=(pad, 0)), xr, g)[0], None, None
        gi = torch.empty_like(x)
        b, c, h, w = x.shape
        _pool_lib().bars_row_maxpool_bwd(g.data_ptr(), x.data_ptr(), gi.data_ptr(), b * c, h, w, p, pad, ho)
        return gi, None, None


def row_max_pool(x: Tensor, pool: nn.MaxPool2d) -> Tensor:
    """``pool(x)`` for FGCNN's ``MaxPool2d((p, 1), padding=(pad, 0))``: :class:`RowMaxPool` where it takes ``x``
    (float32 CPU, contiguous, kernels built, not traced or under autocast; windows of ``p`` rows, stride ``p``, each
    holding a real row), else torch's."""
    (p, one), (pad, zero), stride = _pair(pool.kernel_size), _pair(pool.padding), _pair(pool.stride)
    if (x.dim() == 4 and one == 1 and zero == 0 and stride == (p, 1) and _pair(pool.dilation) == (1, 1)
            and not pool.ceil_mode and not pool.return_indices and pad < p and x.shape[2] + 2 * pad >= p
            and _kernel_ok(x) and not traced() and not autocast_on()):
        return RowMaxPool.apply(x, p, pad)
    return pool(x)


def fgcnn_pooled_heights(num_fields: int, pooling_sizes: Sequence[int]) -> list[int]:
    """The field-axis height after each FGCNN pooling layer: ``ceil(H / p)``, which is what FuxiCTR sizes its
    recombination layers for. Its ``MaxPool2d((p, 1), padding=(H % p, 0))`` gives that height only when
    ``H % p`` is 0 or ``p / 2`` (every height for ``p`` = 1 or 2); any other remainder makes FuxiCTR fail (PyTorch
    refuses a padding over ``p / 2``, or the recombination Linear gets the wrong width). That is a ValueError
    here, naming the layer, its input height and the pooling size."""
    heights, h = [], num_fields
    for i, p in enumerate(pooling_sizes):
        r = h % p
        if r and 2 * r != p:
            raise ValueError(
                f"pooling_sizes[{i}] = {p} on {h} rows: FuxiCTR pads {r} rows on both sides and the pooled height "
                f"is not ceil({h}/{p}) (its recombination layer would not fit); use a pooling size p for which "
                f"{h} % p is 0 or p/2 (2 always fits)"
            )
        h = -(-h // p)
        heights.append(h)
    return heights


class FeatureGeneration(nn.Module):
    """FGCNN's feature generation (Liu et al., "Feature Generation by Convolutional Neural Network for
    Click-Through Rate Prediction", WWW 2019), as FuxiCTR 2.3.10's ``FGCNN_Layer``. Input: field embeddings
    ``[B, F, D]`` as a one-channel image ``[B, 1, F, D]``. Layer ``i``:

        Conv2d ``C_{i-1} -> C_i`` with kernel ``(h_i, 1)`` and ``(h_i - 1) / 2`` zero rows above and below (the
        height is kept: ``h_i`` must be odd), BatchNorm2d (``batch_norm``), activation, MaxPool2d ``(p_i, 1)`` with
        ``H % p_i`` padding rows (FuxiCTR's; :func:`fgcnn_pooled_heights`) -> ``[B, C_i, H_i, D]``; the next layer
        convolves that. Recombination: ``activation(Linear(H_i * D * C_i -> H_i * D * R_i))`` of the flattened
        pooled maps, read as ``H_i * R_i`` new feature embeddings of width ``D``.

    Output: the new features of every layer, concatenated, ``[B, sum_i H_i R_i, D]`` (:attr:`num_generated`).
    Parameters (ours -> FuxiCTR ``fgcnn_layer``): ``convs[i]`` -> ``conv_layers[i][0]``, ``norms[i]`` ->
    ``conv_layers[i][1]`` (BatchNorm2d; ``nn.Identity`` without batch norm), ``recombine[i]`` ->
    ``recombine_layers[i][0]``. The convolutions keep PyTorch's default initialisation as FuxiCTR does (its
    reset touches Linear and Conv1d only); the recombination Linears are xavier-normal (``init_bars_``).
    """

    def __init__(
        self,
        num_fields: int,
        embedding_dim: int,
        channels: Sequence[int],
        kernel_heights: Sequence[int],
        pooling_sizes: Sequence[int],
        recombined_channels: Sequence[int],
        activation_name: str,
        batch_norm: bool,
    ) -> None:
        super().__init__()
        n = len(channels)
        if not n:
            raise ValueError("channels must have at least one layer")
        if not len(kernel_heights) == len(pooling_sizes) == len(recombined_channels) == n:
            raise ValueError(
                f"channels {tuple(channels)}, kernel_heights {tuple(kernel_heights)}, pooling_sizes "
                f"{tuple(pooling_sizes)} and recombined_channels {tuple(recombined_channels)} must have the same "
                f"length (one value per convolution layer)"
            )
        for key, vals in (("channels", channels), ("kernel_heights", kernel_heights),
                          ("pooling_sizes", pooling_sizes), ("recombined_channels", recombined_channels)):
            if any(v < 1 for v in vals):
                raise ValueError(f"{key} must be positive, got {tuple(vals)}")
        even = [h for h in kernel_heights if h % 2 == 0]
        if even:
            raise ValueError(
                f"kernel_heights {tuple(kernel_heights)}: FGCNN pads (h - 1) // 2 rows on both sides, so an even "
                f"height shrinks the field axis and FuxiCTR's recombination layers no longer fit; use odd heights"
            )
        self.embedding_dim = embedding_dim
        self.heights = fgcnn_pooled_heights(num_fields, pooling_sizes)
        ins = [1, *channels[:-1]]
        self.convs = nn.ModuleList(
            nn.Conv2d(c_in, c_out, kernel_size=(h, 1), padding=((h - 1) // 2, 0))
            for c_in, c_out, h in zip(ins, channels, kernel_heights, strict=True)
        )
        self.norms = nn.ModuleList(nn.BatchNorm2d(c) if batch_norm else nn.Identity() for c in channels)
        inputs = [num_fields, *self.heights[:-1]]
        self.pools = nn.ModuleList(
            nn.MaxPool2d((p, 1), padding=(h_in % p, 0)) for p, h_in in zip(pooling_sizes, inputs, strict=True)
        )
        self.recombine = nn.ModuleList(
            nn.Linear(h * embedding_dim * c, h * embedding_dim * r)
            for h, c, r in zip(self.heights, channels, recombined_channels, strict=True)
        )
        self.act = activation(activation_name)
        self.num_generated = sum(h * r for h, r in zip(self.heights, recombined_channels, strict=True))

    def forward(self, emb: Tensor) -> Tensor:
        b = emb.shape[0]
        x = emb.unsqueeze(1)  # [B, 1, F, D]
        new = []
        for conv, norm, pool, rec in zip(self.convs, self.norms, self.pools, self.recombine, strict=True):
            x = row_max_pool(self.act(norm(conv(x))), pool)
            new.append(self.act(rec(x.flatten(start_dim=1))).view(b, -1, self.embedding_dim))
        return torch.cat(new, dim=1)
