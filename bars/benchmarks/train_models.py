"""Model-side throughput helpers for `bars bench train` (owned by bars.benchmarks.train): pure forward+backward
(+ optional Adam step) samples/s on synthetic batches, with no data loading in the loop.

    python -m bars.benchmarks.train_models          # DCN at the Frappe_x1 best configuration
"""

from __future__ import annotations

import time
from collections.abc import Mapping

import torch
from torch import Tensor, nn

from bars.data.spec import Feature, FeatureSpec
from bars.models import build
from bars.models.layers import init_bars_

# Frappe_x1 vocabulary sizes BARS logged (padding and OOV included; sum 5,399)
FRAPPE_VOCAB = {
    "user": 956,
    "item": 4084,
    "daytime": 9,
    "weekday": 9,
    "isweekend": 4,
    "homework": 5,
    "cost": 4,
    "weather": 11,
    "country": 82,
    "city": 235,
}
# BARS's Frappe_x1 feature groups (ranking/ctr/DSSM/DSSM_frappe_x1/*/dataset_config.yaml = conf/data/frappe_x1.yaml)
FRAPPE_GROUPS = {n: "item" if n in ("item", "cost") else "user" for n in FRAPPE_VOCAB}
FRAPPE_DCN_BEST = {
    "embedding_dim": 10,
    "dnn_hidden_units": (400, 400, 400),
    "activation": "relu",
    "batch_norm": True,
    "dropout": 0.2,
    "num_cross_layers": 3,
}


def frappe_like_spec() -> FeatureSpec:
    feats = tuple(Feature(n, "categorical", vocab_size=v, group=FRAPPE_GROUPS[n]) for n, v in FRAPPE_VOCAB.items())
    return FeatureSpec(dataset="frappe_like", label="label", features=feats)


def synthetic_batch(spec: FeatureSpec, batch_size: int, seed: int = 0) -> dict[str, Tensor]:
    g = torch.Generator().manual_seed(seed)
    out: dict[str, Tensor] = {}
    for f in spec.features:
        if f.type == "categorical":
            out[f.name] = torch.randint(0, f.vocab_size, (batch_size,), generator=g, dtype=torch.int32)
        elif f.type == "numeric":
            out[f.name] = torch.randn(batch_size, generator=g)
        else:
            out[f.name] = torch.randint(0, f.vocab_size, (batch_size, f.max_len), generator=g, dtype=torch.int32)
    return out


def forward_backward_samples_per_s(
    model: nn.Module,
    batch: Mapping[str, Tensor],
    iters: int = 20,
    warmup: int = 3,
    optimizer_step: bool = True,
) -> float:
    """Training samples/s of ``model`` on one fixed ``batch``: forward, BCE loss, backward, grad-norm clip at 10
    and (``optimizer_step``) an Adam step, ``iters`` times after ``warmup``."""
    batch = dict(batch)
    n = next(iter(batch.values())).shape[0]
    y = torch.randint(0, 2, (n,), generator=torch.Generator().manual_seed(1)).float()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3) if optimizer_step else None
    params = [p for p in model.parameters() if p.requires_grad]
    model.train()

    def step() -> None:
        model.zero_grad(set_to_none=True)
        loss = nn.functional.binary_cross_entropy_with_logits(model(batch), y)
        loss.backward()
        if opt is not None:
            torch.nn.utils.clip_grad_norm_(params, 10.0)
            opt.step()

    for _ in range(warmup):
        step()
    t = time.perf_counter()
    for _ in range(iters):
        step()
    return iters * n / (time.perf_counter() - t)


def eval_samples_per_s(model: nn.Module, batch: Mapping[str, Tensor], iters: int = 20) -> float:
    batch = dict(batch)
    n = next(iter(batch.values())).shape[0]
    model.eval()
    with torch.inference_mode():
        model(batch)
        t = time.perf_counter()
        for _ in range(iters):
            model(batch)
        return iters * n / (time.perf_counter() - t)


def main() -> int:
    torch.manual_seed(2021)
    spec = frappe_like_spec()
    model = init_bars_(build("dcn", spec, FRAPPE_DCN_BEST))
    batch = synthetic_batch(spec, 4096)
    train = forward_backward_samples_per_s(model, batch)
    fb = forward_backward_samples_per_s(model, batch, optimizer_step=False)
    ev = eval_samples_per_s(model, synthetic_batch(spec, 16384))
    print(f"DCN Frappe_x1 best config, batch 4096, {torch.get_num_threads()} threads:")
    print(f"  train step (fwd+bwd+clip+Adam): {train:,.0f} samples/s")
    print(f"  forward+backward only:          {fb:,.0f} samples/s")
    print(f"  eval forward (batch 16384):     {ev:,.0f} samples/s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
