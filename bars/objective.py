"""The objective of one training batch, apart from the optimizer: the two regularizers, the data loss
(``train.loss``) and what a model's ``forward`` returns (DESIGN section 4; ``bars.train`` runs it).

Model outputs, one definition (:func:`final_logits`): ``forward`` returns the logits [B], or a mapping with key
``"logit"`` (the final prediction: validation, test, early stopping, predict and export use only it) plus any
named tensors a model needs for its own training loss. A model that defines ``training_loss(outputs, labels,
loss_fn) -> scalar`` (DIEN's auxiliary loss, FCN's Tri-BCE, QNN-alpha's self-ensemble...) replaces the data term
(:func:`data_loss`); ``loss_fn`` is ``train.loss`` on logits. A multi-task model declares ``tasks`` (the label
names it predicts, in the spec's ``labels`` order; :func:`model_tasks`): it returns logits [B, T] and its default
data term is the sum over tasks of ``loss_fn`` (FuxiCTR's equal-weight multi-task loss).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
from torch import Tensor, nn

__all__ = ["LOSSES", "TrainConfigError", "data_loss", "final_logits", "loss_function", "model_tasks", "regularization"]


class TrainConfigError(ValueError):
    """A train config with unknown keys or invalid values (an unknown ``train.loss`` here)."""


def regularization(params: list[Tensor], lam: float) -> Tensor | None:
    """``(lam / 2) * sum ||W||^2`` over ``params`` (differentiable); ``None`` when ``lam == 0`` or no params."""
    if lam == 0 or not params:
        return None
    sq = torch.stack([p.square().sum() for p in params]).sum()
    return sq * (lam / 2.0)


_CHUNK = 1 << 18  # entries per piece of a table squared at once (a 1 MiB temporary the allocator reuses)


@torch.no_grad()
def regularization_value(params: list[Tensor], lam: float) -> Tensor | None:
    """The value of :func:`regularization` without a graph, for a step that adds the gradient itself
    (``TrainStep``): a table of up to 2**18 entries gives :func:`regularization`'s value bit for bit; a larger
    table is summed in pieces of 2**18 entries, each a dot product with itself for float32 and float64 (no
    table-sized temporary: squaring a 16M-entry Criteo table at once cost ~80 ms of CPU, in squared pieces 3.4 ms,
    in dot products 1.9 ms), squared and summed for another dtype: the same sum in another order (a difference in
    the last bits of the logged loss, none in any gradient)."""
    if lam == 0 or not params:
        return None
    sums = []
    for p in params:
        flat = p.detach().reshape(-1)
        if flat.numel() <= _CHUNK:
            sums.append(flat.square().sum())
        elif flat.dtype in (torch.float32, torch.float64):
            sums.append(torch.stack([torch.dot(c, c) for c in flat.split(_CHUNK)]).sum())
        else:
            sums.append(torch.stack([c.square().sum() for c in flat.split(_CHUNK)]).sum())
    return torch.stack(sums).sum() * (lam / 2.0)


@torch.no_grad()
def add_regularization_grad(params: list[Tensor], lam: float) -> None:
    """Add the gradient of :func:`regularization`, ``lam * W``, to each parameter's ``.grad`` (set it when None),
    in pieces of ``2**18`` entries for a big table (a table-sized temporary per step cost ~90 ms of CPU on a
    16M-entry table, in pieces ~20 ms); elementwise, so the same values bit for bit."""
    if lam == 0:
        return
    for p in params:
        if p.grad is None:
            p.grad = p * lam
        elif p.numel() <= _CHUNK or not (p.is_contiguous() and p.grad.is_contiguous()):
            p.grad.add_(p * lam)
        else:
            for g, w in zip(p.grad.view(-1).split(_CHUNK), p.detach().view(-1).split(_CHUNK), strict=True):
                g.add_(w * lam)


def _bce_on_probabilities(logits: Tensor, y: Tensor) -> Tensor:
    """FuxiCTR's loss: the model's sigmoid output, then ``F.binary_cross_entropy`` (log clamped at -100).

    ``F.binary_cross_entropy`` rejects a NaN probability (an exception on CPU, a device assert on CUDA), so NaN
    rows are scored at 0.5 and a NaN term (exactly 0 with zero gradient when there is no NaN) makes the loss
    NaN, which the trainer's finite-loss check reports as :class:`NonFiniteLossError`.

    On CPU, where reading a flag costs no device sync, a batch without NaN (every batch of a healthy run) skips
    the guard's ops: the loss and its gradient are bit for bit those of the guarded graph (the masks select
    every row and the NaN term adds exactly zero); a few % of a shallow model's CPU step (issue 16)."""
    p = torch.sigmoid(logits)
    bad = torch.isnan(p)
    if p.device.type == "cpu" and not bool(bad.any()):
        return nn.functional.binary_cross_entropy(p, y)
    loss = nn.functional.binary_cross_entropy(p.masked_fill(bad, 0.5), y)
    return loss + p.masked_fill(~bad, 0.0).sum() * 0.0


LOSSES: dict[str, Callable[[Tensor, Tensor], Tensor]] = {
    "bce": _bce_on_probabilities,
    "bce_logits": nn.functional.binary_cross_entropy_with_logits,
}


def loss_function(name: str) -> Callable[[Tensor, Tensor], Tensor]:
    """``loss(logits [B], labels [B]) -> mean loss`` for ``train.loss`` ``name`` (one of :data:`LOSSES`)."""
    try:
        return LOSSES[name]
    except KeyError:
        raise TrainConfigError(f"train.loss {name!r} is not one of {sorted(LOSSES)}") from None


def final_logits(outputs: Tensor | Mapping[str, Tensor]) -> Tensor:
    """The final prediction of a model's ``forward``: the logits tensor itself, or ``outputs["logit"]``."""
    if isinstance(outputs, Tensor):
        return outputs
    if isinstance(outputs, Mapping):
        if "logit" not in outputs:
            raise TypeError(f"a model returning a mapping must put its final prediction under 'logit'; "
                            f"got keys {sorted(outputs)}")
        out = outputs["logit"]
        if not isinstance(out, Tensor):
            raise TypeError(f"outputs['logit'] must be a Tensor, got {type(out).__name__}")
        return out
    raise TypeError(f"a model must return a logits Tensor or a mapping with key 'logit', got {type(outputs).__name__}")


def model_tasks(model: nn.Module) -> tuple[str, ...]:
    """The tasks (label names) a multi-task model predicts, from its ``tasks`` attribute; ``()`` for a
    single-task model (trained on the split's first label)."""
    tasks = getattr(model, "tasks", ())
    if isinstance(tasks, str) or not all(isinstance(t, str) for t in tasks):
        raise TypeError(f"{type(model).__name__}.tasks must be a tuple of label names, got {tasks!r}")
    return tuple(tasks)


def data_loss(model: nn.Module, outputs: Tensor | Mapping[str, Tensor], labels: Tensor,
              loss_fn: Callable[[Tensor, Tensor], Tensor]) -> Tensor:
    """The data term of the objective (no regularizers): the model's own ``training_loss(outputs, labels,
    loss_fn)`` when it defines one, else ``loss_fn(logits, labels)`` (single task) or the sum over tasks of
    ``loss_fn(logits[:, j], labels[:, j])`` (a multi-task model's [B, T] logits against [B, T] labels)."""
    own = getattr(model, "training_loss", None)
    if callable(own):
        loss = own(outputs, labels, loss_fn)
        if not isinstance(loss, Tensor) or loss.dim() != 0:
            raise TypeError(f"{type(model).__name__}.training_loss must return a scalar Tensor, got "
                            f"{type(loss).__name__}{tuple(loss.shape) if isinstance(loss, Tensor) else ''}")
        return loss
    logits = final_logits(outputs)
    if logits.dim() == 2 and labels.dim() == 2:
        if logits.shape != labels.shape:
            raise ValueError(f"{type(model).__name__}: logits {tuple(logits.shape)} do not match labels "
                             f"{tuple(labels.shape)} (one column per task)")
        return torch.stack([loss_fn(logits[:, j], labels[:, j]) for j in range(labels.shape[1])]).sum()
    return loss_fn(logits, labels)
