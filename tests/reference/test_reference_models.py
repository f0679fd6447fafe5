"""Every registered bars model against its FuxiCTR 2.3.10 composition (fuxictr_zoo/<m>.py), on real Frappe_x1 rows
(with synthetic behaviour histories for the sequence models: ``Reference.data``, conftest.add_histories):

- initialisation: FuxiCTR's own initialisation and ours, seen through the same FuxiCTR module names, agree per
  tensor (zero where FuxiCTR is zero; std within 15 % on tensors of >= 256 values);
- logits: our weights transplanted into the composition give equal logits (<= 1e-5), in eval and train mode;
- regularization: our TrainStep's term equals FuxiCTR's ``BaseModel.regularization_loss`` (relative 1e-5, float64);
- cases: each composition's listed switches plus ``conf:<id>``, every shipped model config (variants included)
  at embedding_dim 10 with its dropout rates set to 0;
- training: 20 steps of our ``bars.train.TrainStep`` and of FuxiCTR's ``BaseModel.train_step`` (Adam 1e-3,
  clip 10, embedding and net regularizers, sigmoid + BCE) from identical weights on identical batches of 1024 real
  rows, both in float64, give equal losses (relative 1e-9 per step) and weights (max |diff| <= 1e-9; Linear
  biases right before a BatchNorm are left out: see fuxictr_zoo.biases_before_batchnorm).
"""

from __future__ import annotations

from copy import deepcopy

import pytest
import torch
from fuxictr_reference import biases_before_batchnorm, poison_, unwritten, with_groups, with_second_label
from fuxictr_zoo import PAPER_ONLY, PENDING, REFERENCES, build_reference, model_configs

from bars.models import build, list_models
from bars.models.layers import init_bars_
from bars.train import TrainConfig, TrainStep, final_logits

LOGIT_ATOL = 1e-5
LOGIT_ATOL_F64 = 1e-9  # float64 arbitration (see test_equal_logits)
REG_RTOL = 1e-5
STEPS, STEP_BATCH = 20, 512
LOSS_RTOL = 1e-9  # float64 (see test_equal_training_steps)
WEIGHT_ATOL = 1e-9
LR, REG_E, REG_N = 1e-3, 0.05, 0.01
CASES = [(m, c) for m in sorted(REFERENCES) for c in REFERENCES[m].cases]


def _pair(name: str, case: str, spec, seed: int = 2021, reg_e: float = REG_E, reg_n: float = REG_N):
    """(ours, theirs): our model built from the case's params and initialised by the BARS protocol; FuxiCTR's
    composition with our weights transplanted (every tensor written, checked)."""
    torch.manual_seed(seed)
    ours = init_bars_(build(name, spec, REFERENCES[name].cases[case]))
    theirs = build_reference(name, case, spec, lr=LR, reg_e=reg_e, reg_n=reg_n)
    poison_(theirs)
    REFERENCES[name].transplant(ours, theirs)
    missing = unwritten(theirs)
    assert not missing, f"{name}/{case}: transplant left FuxiCTR tensors unwritten: {missing}"
    return ours, theirs


def _data(name: str, request):
    """(spec, columns, labels) of the rows the model's reference runs on (``Reference.data``: the Frappe rows, or
    with behaviour histories for the sequence models), the spec with its feature groups (``Reference.groups``); a
    multi-task reference adds a synthetic second label (fuxictr_reference.with_second_label: labels [N, 2])."""
    spec, cols, y = request.getfixturevalue(REFERENCES[name].data)
    if REFERENCES[name].multi_task:
        spec, y = with_second_label(spec, cols, y)
    return with_groups(spec, REFERENCES[name].groups), cols, y


def _shape(name: str, rows: int) -> tuple[int, ...]:
    return (rows, 2) if REFERENCES[name].multi_task else (rows,)


def _label_columns(spec, yb) -> dict:
    """FuxiCTR reads labels from the batch by name: one column per label of the spec."""
    return {n: yb[:, j] for j, n in enumerate(spec.labels)} if yb.dim() == 2 else {spec.label: yb}


def _batches(data, n: int, size: int, seed: int = 2021):
    _, cols, y = data
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    for i in range(n):
        idx = perm[i * size:(i + 1) * size]
        yield {k: v[idx] for k, v in cols.items()}, y[idx]


def test_every_registered_model_has_a_reference_or_a_reason():
    registered = set(list_models())
    covered = set(REFERENCES) | set(PAPER_ONLY) | set(PENDING)
    assert registered <= covered, (
        f"models without a FuxiCTR composition, a PAPER_ONLY reason or a PENDING entry: "
        f"{sorted(registered - covered)} (see tests/reference/README.md)"
    )
    assert not (set(REFERENCES) & set(PAPER_ONLY)) and not (set(PENDING) & (set(REFERENCES) | set(PAPER_ONLY))), \
        "a model with a composition (or a paper-only reason) must leave PENDING"
    assert covered <= registered, f"references for unregistered models: {sorted(covered - registered)}"
    for name, paper in PAPER_ONLY.items():
        assert paper.reason.strip() and callable(paper.check), name


def test_every_model_config_is_a_case():
    """Every conf/model/<id>.yaml (crossnet, crossnetv2, cin, autoint_plus ... included) is checked against its
    model's FuxiCTR composition, or its model is paper-only."""
    configs = model_configs()
    assert {"crossnet", "crossnetv2", "cin", "autoint", "autoint_plus"} <= set(configs)
    for cid, (name, _) in configs.items():
        assert name in REFERENCES or name in PAPER_ONLY or name in PENDING, \
            f"conf/model/{cid}.yaml: model {name!r} is not covered"
        if name in REFERENCES:
            assert f"conf:{cid}" in REFERENCES[name].cases, cid


def test_pending_models_are_reported():
    """Not a pass for them: the registered models still waiting for a FuxiCTR composition, printed (-s / -rA)."""
    for name, fuxictr in sorted(PENDING.items()):
        assert name in list_models(), f"PENDING names an unregistered model {name!r}"
        print(f"PENDING (no FuxiCTR composition yet): {name} <- FuxiCTR model_zoo {fuxictr}")


@pytest.mark.parametrize("name", sorted(PAPER_ONLY) or [pytest.param("-", marks=pytest.mark.skip("none"))])
def test_paper_only_models_follow_their_equations(name, frappe):
    spec, cols, _ = frappe
    PAPER_ONLY[name].check(spec, {k: v[:256] for k, v in cols.items()})


@pytest.mark.parametrize(("name", "case"), CASES)
def test_initialisation_matches_fuxictr(name, case, request):
    data = _data(name, request)
    spec = data[0]
    _, ours_in_theirs = _pair(name, case, spec, seed=7)
    torch.manual_seed(7)
    native = build_reference(name, case, spec, lr=LR, reg_e=REG_E, reg_n=REG_N)  # FuxiCTR's own init
    mine = dict(ours_in_theirs.named_parameters())
    problems = []
    for n, t in native.named_parameters():
        a, b = t.detach(), mine[n].detach()
        if bool((a == 0).all()) != bool((b == 0).all()):
            problems.append(f"{n}: all-zero in FuxiCTR {bool((a == 0).all())}, in bars {bool((b == 0).all())}")
        elif a.is_floating_point() and a.numel() >= 256 and float(a.std()) > 0:  # (bool masks: as built)
            ratio = float(b.std()) / float(a.std())
            if not 0.85 < ratio < 1.15:
                problems.append(f"{n}: std bars/FuxiCTR = {ratio:.3f} ({float(b.std()):.3g} / {float(a.std()):.3g})")
    assert not problems, f"{name}/{case}: initialisation differs from FuxiCTR's:\n  " + "\n  ".join(problems)


def _float64_logits(model, xb: dict, ours: bool, seed: int = 2021):
    """The logits of a float64 copy of ``model`` on ``xb`` (float inputs widened); the model is left as it was."""
    copy = deepcopy(model).double()
    xb64 = {k: v.double() if v.is_floating_point() else v for k, v in xb.items()}
    torch.manual_seed(seed)
    with torch.no_grad():
        return final_logits(copy(xb64)) if ours else copy.logits(xb64)


@pytest.mark.parametrize(("name", "case"), CASES)
def test_equal_logits(name, case, request):
    """float32 logits within LOGIT_ATOL. Where a model's float32 sums round further apart than that (CCPM's
    convolution as one matrix product of the unfolded windows against FuxiCTR's Conv2d: 1.0e-5 to 1.8e-5 on AMD
    EPYC hosts, below 1e-5 on Intel ones), float64 arbitrates: the two models in float64 agree within
    LOGIT_ATOL_F64 (the same function), and our float32 logits are no further from our float64 ones than twice
    FuxiCTR's float32 distance from them, or LOGIT_ATOL (our float32 path rounds no worse than theirs: a
    float32-only kernel that computed something else fails here)."""
    data = _data(name, request)
    spec = data[0]
    ours, theirs = _pair(name, case, spec)
    xb, _ = next(_batches(data, 1, 4096))
    for mode in ("eval", "train"):
        ours.train(mode == "train")
        theirs.train(mode == "train")
        with torch.no_grad():  # in training a model with its own loss returns named outputs: its final logit
            a, b = final_logits(ours(xb)), theirs.logits(xb)
        assert a.shape == b.shape == _shape(name, 4096)
        diff = float((a - b).abs().max())
        if diff <= LOGIT_ATOL:
            continue
        a64, b64 = _float64_logits(ours, xb, True), _float64_logits(theirs, xb, False)
        diff64 = float((a64 - b64).abs().max())
        ours_err, theirs_err = float((a.double() - a64).abs().max()), float((b.double() - a64).abs().max())
        assert diff64 <= LOGIT_ATOL_F64 and ours_err <= max(2 * theirs_err, LOGIT_ATOL), (
            f"{name}/{case} ({mode} mode): max |logit diff| {diff:.3g} > {LOGIT_ATOL} in float32; in float64 "
            f"{diff64:.3g} (<= {LOGIT_ATOL_F64}?); float32 distance from our float64 logits: ours {ours_err:.3g}, "
            f"FuxiCTR's {theirs_err:.3g}"
        )


@pytest.mark.parametrize(("name", "case"), CASES)
def test_equal_regularization(name, case, request):
    """In float64, as the 20 steps: FuxiCTR's float32 ``torch.norm(W) ** 2`` of one large tensor is itself off by
    more than REG_RTOL (measured: 5.7e-4 low on FGCNN's default 2048 x 4096 MLP matrix; 1.8e-4 on AFN's 4,000,000-value
    ``dense_layer``, 769.4177 in float32 vs 769.5589 exact), its rounding, not a different sum."""
    data = _data(name, request)
    spec = data[0]
    ours, theirs = _pair(name, case, spec)
    ours.double()
    theirs.double()
    for reg_e, reg_n in ((REG_E, 0.0), (0.0, REG_N), (REG_E, REG_N)):
        cfg = TrainConfig(embedding_regularizer=reg_e, net_regularizer=reg_n, device="cpu")
        theirs._embedding_regularizer, theirs._net_regularizer = reg_e, reg_n  # what BaseModel.__init__ stores
        a = float(TrainStep(ours, cfg).regularization().detach())
        b = float(theirs.regularization_loss().detach())
        assert b > 0 or not reg_e, f"{name}/{case}: no embedding regularization at all"  # all have embeddings
        assert abs(a - b) <= REG_RTOL * b, f"{name}/{case} ({reg_e}, {reg_n}): bars {a!r} vs FuxiCTR {b!r}"


@pytest.mark.parametrize(("name", "case"), CASES)
def test_equal_training_steps(name, case, request):
    """In float64: in float32, parameters whose true gradient is zero (a Linear bias before BatchNorm) get
    rounding-noise gradients that Adam scales up to +-lr steps, so the two runs drift apart for reasons that have
    nothing to do with the libraries; in float64 that noise stays below Adam's eps."""
    data = _data(name, request)
    spec = data[0]
    ours, theirs = _pair(name, case, spec)
    ours.double()
    theirs.double()
    cfg = TrainConfig(learning_rate=LR, embedding_regularizer=REG_E, net_regularizer=REG_N, clip_grad_norm=10.0,
                      loss="bce", device="cpu")
    step = TrainStep(ours, cfg)
    theirs._max_gradient_norm = cfg.clip_grad_norm  # what BaseModel.fit sets before training
    ours.train()
    theirs.train()
    # Parameters with a zero true gradient (null_biases: a bias before a BatchNorm, a bias softmax ignores) move by
    # rounding noise that the net regularizer's pull (lam * w) then amplifies under Adam: they take different
    # values in the two runs and enter the losses through their L2 term only. The losses are compared without that
    # term (each side's own, from the weights before the step); they are left out of the weight comparison.
    null = biases_before_batchnorm(theirs)
    scratch = build_reference(name, case, spec, lr=LR, reg_e=REG_E, reg_n=REG_N).double() if null else None

    def null_l2(model):
        params = dict(model.named_parameters())
        return sum(REG_N / 2 * float(params[n].detach().square().sum()) for n in sorted(null))

    rows = []
    steps = REFERENCES[name].steps
    for i, (xb, yb) in enumerate(_batches(data, steps, STEP_BATCH)):
        yb = yb.double()
        if scratch is not None:
            REFERENCES[name].transplant(ours, scratch)
        na, nb = (null_l2(scratch), null_l2(theirs)) if null else (0.0, 0.0)
        a = float(step(xb, yb))
        b = float(theirs.train_step({**xb, **_label_columns(spec, yb)}).detach())
        rows.append((i + 1, a - na, b - nb))
    bad = [(i, a, b) for i, a, b in rows if abs(a - b) > LOSS_RTOL * abs(b)]
    assert not bad, f"{name}/{case}: losses differ (step, bars, FuxiCTR; without null_biases' L2): {bad}"
    # the steps trained: the first batch's loss, recomputed after them (same objective, train mode), is lower than
    # at step 1 (the same batch: the last batch's loss against the first's compares two batches of different
    # difficulty, e.g. DSSM's saturated dot products at FuxiCTR's initialisation)
    with torch.no_grad():
        xb, yb = next(_batches(data, 1, STEP_BATCH))
        after = float(step.objective(ours(xb), yb.double()))
    assert after < rows[0][1], f"{name}/{case}: {steps} steps did not lower the first batch's loss: {after} vs {rows}"
    # the weights after the steps, through the same transplant
    again = build_reference(name, case, spec, lr=LR, reg_e=REG_E, reg_n=REG_N).double()
    poison_(again)
    REFERENCES[name].transplant(ours, again)
    final = dict(theirs.named_parameters())
    diffs = {n: float((t - final[n]).detach().abs().max()) if t.is_floating_point() else float((t != final[n]).any())
             for n, t in again.named_parameters() if n not in null}  # bool masks (frozen): 0 when equal, else 1
    worst = max(diffs, key=diffs.get)
    assert diffs[worst] <= WEIGHT_ATOL, (
        f"{name}/{case}: weights after {steps} steps differ by up to {diffs[worst]:.3g} ({worst})"
    )


def test_fewer_training_steps_only_with_a_reason():
    """A composition compares fewer than STEPS training steps only with a stated reason, and never fewer than 10
    (enough for Adam's moments, clipping and both regularizers to act on every parameter)."""
    short = {m: (r.steps, r.steps_reason) for m, r in REFERENCES.items() if r.steps != STEPS}
    for m, (steps, reason) in short.items():
        assert 10 <= steps < STEPS and len(reason) > 40, (m, steps, reason)
    print(f"compared over fewer than {STEPS} steps: {short}")
