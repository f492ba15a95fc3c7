"""The SIGReg statistic (spec/model.md), without the 0.02 loss coefficient."""

from __future__ import annotations

import math

import torch

from soma_ray.model.config import SIGREG_POINTS, SIGREG_T_MAX

_STEP = SIGREG_T_MAX / (SIGREG_POINTS - 1)  # t_j = j·3/16
_PHI = [math.exp(-0.5 * (j * _STEP) ** 2) for j in range(SIGREG_POINTS)]  # normal char. fn
_WEIGHTS = [_STEP * (1 if j in (0, SIGREG_POINTS - 1) else 2) * _PHI[j]  # trapezoid × phi
            for j in range(SIGREG_POINTS)]


def unit_directions(noise: torch.Tensor) -> torch.Tensor:
    """The noise columns [D, slices] scaled to unit length."""
    return noise / torch.linalg.vector_norm(noise, dim=0)


def characteristic_error(projections: torch.Tensor) -> torch.Tensor:
    """Per-token statistic from projections [..., slices]: the empirical characteristic
    function over the slices against exp(−t²/2), trapezoid-integrated on t in [0, 3], × slices.

    e^(i·t_j·y) comes from one cos and one sin of t_1·y by repeated rotation (t_j = j·t_1):
    2 transcendentals per projection instead of 34. It runs in the projections' precision, at
    least float32 (bf16 under autocast would round the statistic away); scoring passes float64
    projections, which keeps the repeated rotation closer to the exact value, while training
    keeps float32, where float64 complex tensors under autograd cost ~1.7x per step.
    """
    dtype = torch.promote_types(projections.dtype, torch.float32)
    angle = projections.to(dtype) * _STEP
    rotation = torch.complex(torch.cos(angle), torch.sin(angle))
    slices = projections.shape[-1]
    average = torch.full((slices,), 1.0 / slices, dtype=rotation.dtype, device=angle.device)
    # j = 0 adds nothing: e^0 = 1 = exp(−0²/2).
    z = rotation
    total = torch.zeros(projections.shape[:-1], dtype=dtype, device=angle.device)
    for j in range(1, SIGREG_POINTS):
        if j > 1:
            z = z * rotation
        total = total + _WEIGHTS[j] * (z @ average - _PHI[j]).abs().square()
    return total * slices


def sigreg_per_token(representations: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """Per-token statistic, shape representations.shape[:-1]."""
    return characteristic_error(representations @ unit_directions(noise.to(representations)))


def sigreg(representations: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """Mean of the per-token statistic over all tokens: a scalar, differentiable."""
    return sigreg_per_token(representations, noise).mean()
