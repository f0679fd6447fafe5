"""A big embedding table's step without its dense gradient (bars.models.layers.table_grad, bars.optim.
step_with_sparse_tables): the same gradient, clipping and Adam update, bit for bit, as the dense step."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from bars import optim as O
from bars import train as T
from bars.data.spec import Feature, FeatureSpec
from bars.models import build
from bars.models.layers import kernels as K
from bars.models.layers import table_grad as TG
from bars.models.layers.kernels import lookup_grad

pytestmark = pytest.mark.skipif(not K.available(), reason="the compiled kernels are not built")


def bits(t: torch.Tensor) -> torch.Tensor:  # bit patterns: NaN == NaN, -0 != +0
    return t.view(torch.int32)


def _table(rows: int, d: int, n: int, seed: int, specials: bool = False):
    """A table, ``n`` skewed lookups into it (repeats, the padding row among them) and their gradients."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(rows, d, generator=g) * 0.01
    w[0] = 0.0
    w[3::11] = 0.0  # zero rows: signed-zero products
    w[4::13, 0] = -0.0
    flat = (torch.rand(n, generator=g) ** 3 * rows).long().clamp(max=rows - 1)
    flat[::17] = 0
    grads = torch.randn(n, d, generator=g) * 1e-3
    grads[::5] = -0.0
    if specials:
        grads[7, 0] = float("nan")
        grads[9, d - 1] = float("inf")
    return w, flat, grads


@pytest.mark.parametrize(("rows", "d", "n"), [(50, 1, 30), (9000, 16, 4000), (300, 7, 900), (5000, 33, 2000),
                                               (4097, 16, 100)])
@pytest.mark.parametrize("lam", [0.05, 1e-5])
def test_adam_on_the_sparse_gradient_is_torchs_fused_adam_bit_for_bit(rows, d, n, lam):
    """Three steps: the table and both moments after each are ``torch._fused_adam_``'s with the dense gradient
    (``lookup_grad``, the unfused step's), and the slot map is all zero again."""
    w, _, _ = _table(rows, d, n, seed=0)
    mine, theirs = w.clone(), w.clone()
    m1, v1, m2, v2 = (torch.zeros_like(w) for _ in range(4))
    step = torch.zeros(())
    slots = TG.new_slots(w)
    for k in range(3):
        _, flat, grads = _table(rows, d, n, seed=k + 1, specials=k == 2)
        dense = lookup_grad(flat, grads, theirs, lam)
        step += 1
        torch._fused_adam_([theirs], [dense], [m2], [v2], [], [step], amsgrad=False, lr=1e-3 * (k + 1),
                           beta1=0.9, beta2=0.999, weight_decay=0.0, eps=1e-8, maximize=False, grad_scale=None,
                           found_inf=None)
        TG.SparseTableGrad(mine, flat, grads, lam, slots).adam(m1, v1, float(step), 1e-3 * (k + 1))
        for a, b in ((mine, theirs), (m1, m2), (v1, v2)):
            assert torch.equal(bits(a), bits(b))
        assert not slots.any()
    assert torch.isnan(mine).any()  # the NaN lookup gradient went through as torch's does


@pytest.mark.parametrize("prior", [False, True])
def test_materialise_writes_the_dense_gradient(prior):
    """``materialise`` writes ``lookup_grad``'s gradient bit for bit (added to a gradient another path wrote)."""
    w, flat, grads = _table(700, 16, 3000, seed=3, specials=True)
    p = nn.Parameter(w.clone())
    other = torch.randn(700, 16) * 1e-2
    if prior:
        p.grad = other.clone()
    slots = TG.new_slots(p)
    TG.SparseTableGrad(p, flat, grads, 0.05, slots).materialise()
    want = lookup_grad(flat, grads, w, 0.05)
    assert torch.equal(bits(p.grad), bits(other + want if prior else want))
    assert not slots.any()


def test_the_norm_estimate_is_the_dense_gradients_norm():
    """``lam^2 ||W||^2 + grad_sq_over()`` is the dense gradient's squared norm (to rounding)."""
    w, flat, grads = _table(20000, 16, 8000, seed=4)
    grads *= 30.0  # the looked-up rows dominate
    sparse = TG.SparseTableGrad(w, flat, grads, 0.05, TG.new_slots(w))
    est = 0.05**2 * float(w.double().square().sum()) + sparse.grad_sq_over()
    dense = lookup_grad(flat, grads, w, 0.05).double()
    assert est == pytest.approx(float(dense.square().sum()), rel=1e-9)
    sparse.release()
    assert not sparse.slots.any()


def test_usable_needs_the_kernels_and_a_plain_float32_table(monkeypatch):
    assert TG.usable(torch.zeros(10, 16))
    assert not TG.usable(torch.zeros(10, 16, dtype=torch.float64))
    assert not TG.usable(torch.zeros(16, 10).t())
    assert not TG.usable(torch.zeros(10, TG.MAX_WIDTH + 1))
    monkeypatch.setenv("BARS_KERNELS", "torch")
    assert not TG.usable(torch.zeros(10, 16))


def _spec() -> FeatureSpec:
    feats = tuple(Feature(f"f{i}", "categorical", vocab_size=v) for i, v in enumerate((3000, 2000, 700, 40)))
    return FeatureSpec(dataset="tiny", label="y", features=feats)


def _batches(spec: FeatureSpec, n: int = 5):
    g = torch.Generator().manual_seed(9)
    out = []
    for _ in range(n):
        x = {f.name: (torch.rand(256, generator=g) ** 2 * f.vocab_size).long().clamp(max=f.vocab_size - 1).int()
             for f in spec.features}
        out.append((x, (torch.rand(256, generator=g) < 0.3).float()))
    return out


class Tied(nn.Module):
    """DCN plus a second path into the table's gradient (a term that reads the table's rows directly)."""

    def __init__(self, spec: FeatureSpec, dim: int) -> None:
        super().__init__()
        self.dcn = build("dcn", spec, {"embedding_dim": dim, "dnn_hidden_units": (32,), "num_cross_layers": 2})
        self.embedding = self.dcn.embedding

    def forward(self, batch):
        return self.dcn(batch) + 1e-3 * self.embedding.weight[1:50].sum()


@pytest.mark.parametrize(("clip", "tied", "path", "dim"), [(10.0, False, "sparse", 16), (math.inf, False, "sparse", 16),
                                                           (1e-3, False, "clipped", 16), (10.0, True, "dense", 16),
                                                           (10.0, False, "sparse", 10), (1e-3, False, "clipped", 10),
                                                           (10.0, True, "dense", 10)])
def test_training_steps_change_no_bit(clip, tied, path, dim):
    """Five steps of a model whose table qualifies: every loss, weight and Adam state bit for bit the dense
    step's (``SparseTables([])``). Clipping far off or no clipping: the table's Adam runs on the sparse gradient.
    A clipping norm every step reaches: the dense gradient is written for the exact norm, and the table's Adam
    still runs on the sparse one, times the coefficient. A second path into the table's gradient: the dense
    gradient goes into ``.grad`` and the unfused clipping and step run. At width 10 the dense step takes its
    gradient from ``bincount`` and adds ``lam * W`` after the backward (a zero's sign may differ, no weight)."""
    spec = _spec()
    c = T.TrainConfig(batch_size=256, learning_rate=1e-2, device="cpu", num_threads=1, embedding_regularizer=0.05,
                      net_regularizer=0.01, clip_grad_norm=clip)
    runs, scales, dense = [], [], [0]
    real_adam, real_dense = TG.SparseTableGrad.adam, TG.SparseTableGrad.materialise
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(TG.SparseTableGrad, "adam", lambda self, *a, **k: (scales.append(k.get("scale", 1.0)),
                                                                       real_adam(self, *a, **k))[1])
        mp.setattr(TG.SparseTableGrad, "materialise", lambda self: (dense.__setitem__(0, dense[0] + 1),
                                                                    real_dense(self))[1])
        for sparse in (True, False):
            torch.manual_seed(1)
            model = Tied(spec, dim) if tied else build("dcn", spec, {"embedding_dim": dim, "dnn_hidden_units": (32,),
                                                                     "num_cross_layers": 2})
            step = T.TrainStep(model, c)
            if not sparse:
                step.sparse_tables = O.SparseTables([])
            losses = []
            for xb, yb in _batches(spec):
                torch.manual_seed(7)
                losses.append(step(xb, yb))
            state = [t for p in step.params for t in step.optimizer.state[p]]
            runs.append((losses, [p.detach().clone() for p in model.parameters()], state))
            if sparse:
                exact = step.sparse_tables.exact_norms
    if path == "dense":
        assert dense[0] == 5 and not scales
    else:
        assert dense[0] == 0 and len(scales) == 5
        assert exact == (5 if path == "clipped" else 0)
        assert all(0 < x < 1 for x in scales) if path == "clipped" else all(x == 1.0 for x in scales)
    for a, b in zip(runs[0][0], runs[1][0], strict=True):
        assert torch.equal(a, b)
    for xs, ys in zip(runs[0][1:], runs[1][1:], strict=True):
        assert all(torch.equal(bits(a), bits(b)) for a, b in zip(xs, ys, strict=True))


@pytest.mark.parametrize("max_norm", [1e-4, 1e3, float("nan")])
def test_without_a_norm_bound_the_exact_norm_clips_the_sparse_step(max_norm):
    """``step_with_sparse_tables`` with no bound on ``||W||^2`` takes torch's exact norm (the dense gradient written
    for it, then dropped): the table, a second parameter and every Adam state bit for bit ``clip_grad_norm_`` and
    ``torch._fused_adam_`` on the dense gradients, clipped (1e-4), not clipped (1e3) or with a NaN coefficient."""
    w, flat, grads = _table(500, 16, 900, seed=6)
    other = torch.randn(30, 4)
    ours, theirs = [nn.Parameter(w.clone()), nn.Parameter(other.clone())], [nn.Parameter(w.clone()),
                                                                           nn.Parameter(other.clone())]
    opt_o, opt_t = O.FusedAdam(ours, 1e-3), O.FusedAdam(theirs, 1e-3)
    for k in range(2):
        g = torch.randn(30, 4, generator=torch.Generator().manual_seed(k))
        ours[1].grad, theirs[1].grad = g.clone(), g.clone()  # clipping scales a gradient in place
        theirs[0].grad = lookup_grad(flat, grads, theirs[0].detach(), 0.05)
        O.clip_grad_norm_(theirs, max_norm)
        opt_t.step()
        table = TG.SparseTableGrad(ours[0], flat, grads, 0.05, TG.new_slots(ours[0]))
        assert O.step_with_sparse_tables(opt_o, ours, max_norm, [table]) is True
        assert ours[0].grad is None
        for a, b in zip(ours, theirs, strict=True):
            assert torch.equal(bits(a.detach()), bits(b.detach()))
            assert all(torch.equal(bits(x), bits(y)) for x, y in zip(opt_o.state[a], opt_t.state[b], strict=True))


def test_the_probe_tells_the_widths_apart():
    """Exactly one of the vector widths reproduces torch's Adam here (the probe can tell a wrong tail)."""
    assert [TG._agrees(w) for w in (8, 16)].count(True) == 1
    assert TG.adam_width() in (8, 16)


def test_a_step_that_stopped_before_its_update_leaves_no_row_behind():
    """A step whose backward filled a slot map and then stopped (an exception before the update) does not corrupt
    the next one: its slot maps are cleared before they are handed out again, and the next step is the dense
    step's, bit for bit."""
    spec = _spec()
    c = T.TrainConfig(batch_size=256, learning_rate=1e-2, device="cpu", num_threads=1, embedding_regularizer=0.05)
    batches = _batches(spec, 2)
    runs = []
    for sparse in (True, False):
        torch.manual_seed(1)
        model = build("dcn", spec, {"embedding_dim": 16, "dnn_hidden_units": (32,), "num_cross_layers": 2})
        step = T.TrainStep(model, c)
        if not sparse:
            step.sparse_tables = O.SparseTables([])
        else:  # a step that stops after its backward: the lookup's rows stay in the slot map
            real = O.step_with_sparse_tables

            def boom(*a, **k):
                raise RuntimeError("stopped")

            O.step_with_sparse_tables = boom
            try:
                with pytest.raises(RuntimeError, match="stopped"):
                    step(*batches[0])
            finally:
                O.step_with_sparse_tables = real
            assert any(s.any() for s in step.sparse_tables.slots.values())
        torch.manual_seed(7)
        loss = step(*batches[1])
        assert not any(s.any() for s in step.sparse_tables.slots.values())
        runs.append((loss, [p.detach().clone() for p in model.parameters()]))
    assert torch.equal(runs[0][0], runs[1][0])
    assert all(torch.equal(bits(a), bits(b)) for a, b in zip(runs[0][1], runs[1][1], strict=True))


def test_stale_slots_change_nothing():
    """A slot map with rows left in it (slots that do not point back at their row) gives the same gradient and the
    same Adam step as a clean one, and nothing is read or written outside this step's sums."""
    w, flat, grads = _table(3000, 16, 500, seed=8)
    dirty = torch.randint(1, 2**31 - 1, (3000,), dtype=torch.int32, generator=torch.Generator().manual_seed(0))
    mine, theirs = w.clone(), w.clone()
    m1, v1, m2, v2 = (torch.zeros_like(w) for _ in range(4))
    table = TG.SparseTableGrad(mine, flat, grads, 0.05, dirty)
    assert torch.equal(bits(table.dense()), bits(lookup_grad(flat, grads, w, 0.05)))
    table.adam(m1, v1, 1.0, 1e-3)
    torch._fused_adam_([theirs], [lookup_grad(flat, grads, w, 0.05)], [m2], [v2], [], [torch.ones(())],
                       amsgrad=False, lr=1e-3, beta1=0.9, beta2=0.999, weight_decay=0.0, eps=1e-8, maximize=False,
                       grad_scale=None, found_inf=None)
    for a, b in ((mine, theirs), (m1, m2), (v1, v2)):
        assert torch.equal(bits(a), bits(b))


@pytest.mark.parametrize(("rows", "d", "n"), [(50, 1, 30), (9000, 16, 4000), (300, 7, 900), (5000, 33, 2000),
                                               (4097, 16, 100), (2001, 10, 3000)])
@pytest.mark.parametrize("specials", [False, True])
def test_the_norm_is_torchs_norm_of_the_dense_gradient(rows, d, n, specials):
    """``SparseTableGrad.norm`` (one pass over the table, the dense gradient not written) is
    ``torch.linalg.vector_norm(dense())`` and ``torch._foreach_norm``'s bit for bit: tails, zero rows, signed zeros,
    NaN and inf in the lookups."""
    w, flat, grads = _table(rows, d, n, seed=rows + d, specials=specials)
    w.mul_(torch.pow(10.0, torch.rand(rows, d, generator=torch.Generator().manual_seed(1)) * 4 - 2))
    t = TG.SparseTableGrad(w, flat, grads, 0.05, TG.new_slots(w))
    dense = t.dense()
    assert torch.equal(bits(t.norm()), bits(torch.linalg.vector_norm(dense)))
    assert torch.equal(bits(t.norm()), bits(torch._foreach_norm([dense], 2.0)[0]))
    t.release()


def test_the_norm_probe_finds_one_order():
    """Exactly one summation order (lane width, fused multiply-adds in the lanes and in the tail) reproduces torch's
    norm here: the probe tells them apart."""
    orders = [(w, lf, tf) for w in (8, 16) for lf in (False, True) for tf in (False, True)]
    assert [TG._norm_agrees(o) for o in orders].count(True) == 1
    assert TG.norm_order() in orders


@pytest.mark.parametrize("order", ["probed", "unknown"])
def test_the_exact_norm_without_the_dense_gradient_changes_no_bit(monkeypatch, order):
    """Clipping every step (max_norm 1e-4): with the probed order the table's norm comes from its sparse gradient,
    with none (another host) the dense gradient is written for it; both give the dense step's bits, and the dense
    gradient is not written in the first case."""
    if order == "unknown":
        monkeypatch.setattr(TG, "_ORDER", [None])
    written = []
    dense = TG.SparseTableGrad.dense
    monkeypatch.setattr(TG.SparseTableGrad, "dense", lambda self: written.append(1) or dense(self))
    w, flat, grads = _table(500, 16, 900, seed=8)
    ours, theirs = nn.Parameter(w.clone()), nn.Parameter(w.clone())
    opt_o, opt_t = O.FusedAdam([ours], 1e-3), O.FusedAdam([theirs], 1e-3)
    for _ in range(2):
        theirs.grad = lookup_grad(flat, grads, theirs.detach(), 0.05)
        O.clip_grad_norm_([theirs], 1e-4)
        opt_t.step()
        assert O.step_with_sparse_tables(opt_o, [ours], 1e-4, [TG.SparseTableGrad(ours, flat, grads, 0.05,
                                                                                   TG.new_slots(ours))])
    assert torch.equal(bits(ours.detach()), bits(theirs.detach()))
    assert bool(written) == (order == "unknown")
