"""The value head of the PPO agent (the paper's MLP on the last prompt token's hidden state)."""

from __future__ import annotations

import torch
from torch import nn


class ValueHead(nn.Module):
    """MLP hidden_size -> 1024 -> 512 -> 1 with ReLU, kept in float32 whatever the VLM's dtype.

    It reads the final hidden state of the last prompt token (the state the answer is generated
    from) and returns one value per row. Inputs are cast to the head's weight dtype, float32 (so a
    bf16/fp16 model still gets a float32 value estimate and float32 value-head gradients) unless a
    sharding engine's bf16 compute (FSDP, DeepSpeed) has cast the weights; the output is float32.
    """

    def __init__(self, hidden_size: int, widths: tuple[int, int] = (1024, 512)):
        super().__init__()
        if hidden_size <= 0:
            raise ValueError(f"ValueHead: hidden_size must be positive, got {hidden_size}")
        self.hidden_size = hidden_size
        self.net = nn.Sequential(
            nn.Linear(hidden_size, widths[0]),
            nn.ReLU(),
            nn.Linear(widths[0], widths[1]),
            nn.ReLU(),
            nn.Linear(widths[1], 1),
        ).float()

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        """hidden [N, hidden_size] (any float dtype) -> values [N] float32.

        The input is cast to the dtype the weights have at call time: float32 normally, bfloat16
        under FSDP's or DeepSpeed's bf16 compute (which cast the parameters, not the inputs)."""
        weight = self.net[0].weight
        return self.net(hidden.to(weight.dtype)).squeeze(-1).float()
