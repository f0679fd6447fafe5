"""MixtureOfExperts (MMoE) and CustomizedGateControl (PLE's CGC) against loop references written from the papers'
equations: per task ``sum_k softmax(g_t(x))_k f_k(x)``; CGC's task gates over [own experts, shared experts] and
the shared gate over the shared experts only, each path on its own input."""

from __future__ import annotations

import pytest
import torch

from bars.models.layers import MLP, CustomizedGateControl, MixtureOfExperts


def _mix_loop(gate_logits: torch.Tensor, outs: list[torch.Tensor]) -> torch.Tensor:
    """Row by row, expert by expert."""
    rows = []
    for b in range(gate_logits.shape[0]):
        w = torch.exp(gate_logits[b] - gate_logits[b].max())
        w = w / w.sum()
        rows.append(sum(w[k] * outs[k][b] for k in range(len(outs))))
    return torch.stack(rows)


def test_mixture_of_experts_is_a_softmax_gated_sum_per_task():
    torch.manual_seed(0)
    moe = MixtureOfExperts(6, num_experts=3, num_tasks=2, expert_units=[5, 4], gate_units=[7]).eval()
    assert all(isinstance(e, MLP) for e in moe.experts) and len(moe.gates) == 2 and moe.output_dim == 4
    x = torch.randn(9, 6)
    outs = [e(x) for e in moe.experts]
    assert all(torch.all(o >= 0) for o in outs)  # an expert ends with its activated hidden layer (no output Linear)
    got = moe(x)
    assert len(got) == 2
    for t in range(2):
        g = moe.gates[t](x)
        assert g.shape == (9, 3)
        torch.testing.assert_close(got[t], _mix_loop(g, outs))
    assert not torch.allclose(got[0], got[1])  # each task has its own gate


def test_cgc_gates_own_and_shared_experts_on_their_inputs():
    torch.manual_seed(1)
    cgc = CustomizedGateControl(6, num_shared=2, num_specific=3, num_tasks=2, expert_units=[4],
                                gate_units=[5], batch_norm=True).eval()
    assert [g.output_dim for g in cgc.gates] == [5, 5, 2]
    xs = [torch.randn(7, 6) for _ in range(3)]  # task 0, task 1, shared: different inputs
    got = cgc(xs)
    shared = [e(xs[2]) for e in cgc.shared_experts]
    for t in range(2):
        own = [e(xs[t]) for e in cgc.specific_experts[t]]
        torch.testing.assert_close(got[t], _mix_loop(cgc.gates[t](xs[t]), own + shared))
    torch.testing.assert_close(got[2], _mix_loop(cgc.gates[2](xs[2]), shared))
    with pytest.raises(ValueError, match="takes 3 inputs"):
        cgc(xs[:2])


def test_blocks_refuse_empty_structures():
    with pytest.raises(ValueError, match="at least one expert layer"):
        MixtureOfExperts(4, 2, 2, [], [])
    with pytest.raises(ValueError, match=">= 1 shared expert"):
        CustomizedGateControl(4, 0, 1, 2, [3], [])
