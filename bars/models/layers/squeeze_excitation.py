"""FiBiNET's squeeze-and-excitation over fields: re-weights each field embedding by a learned importance."""

from __future__ import annotations

from torch import Tensor, nn

EXCITATION_ACTIVATIONS = ("relu", "sigmoid")


class SqueezeExcitation(nn.Module):
    """``[B, F, D] -> [B, F, D]``: squeeze ``z_f = mean_d e_fd``, excite ``a = act(W2 relu(W1 z))`` (both Linear
    without bias, ``W1: F -> max(1, int(F / reduction_ratio))``), re-weight ``v_f = a_f * e_f``. ``excitation``
    is FuxiCTR's ``SqueezeExcitation.excitation`` (Linear, ReLU, Linear, ReLU|Sigmoid) index for index."""

    def __init__(self, num_fields: int, reduction_ratio: float = 3.0, excitation_activation: str = "relu") -> None:
        super().__init__()
        if reduction_ratio <= 0:
            raise ValueError(f"reduction_ratio must be > 0, got {reduction_ratio}")
        act = excitation_activation.lower()
        if act not in EXCITATION_ACTIVATIONS:
            raise ValueError(f"excitation_activation {excitation_activation!r} is not one of {EXCITATION_ACTIVATIONS}")
        self.reduced_size = max(1, int(num_fields / reduction_ratio))
        self.excitation = nn.Sequential(
            nn.Linear(num_fields, self.reduced_size, bias=False),
            nn.ReLU(),
            nn.Linear(self.reduced_size, num_fields, bias=False),
            nn.ReLU() if act == "relu" else nn.Sigmoid(),
        )

    def forward(self, emb: Tensor) -> Tensor:
        a = self.excitation(emb.mean(dim=-1))  # [B, F]
        return emb * a.unsqueeze(-1)
