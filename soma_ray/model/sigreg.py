"""The SIGReg statistic (spec/model.md), without the 0.02 loss coefficient."""

from __future__ import annotations

import torch

from soma_ray.model.config import SIGREG_POINTS, SIGREG_T_MAX


def sigreg_per_token(representations: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """Per-token statistic, shape representations.shape[:-1].

    Each token vector is projected on the unit-normalised noise columns; the empirical
    characteristic function of those projections is compared with the standard normal's
    exp(-t²/2) on 17 points of [0, 3], integrated by the trapezoid rule.
    """
    t = torch.linspace(0.0, SIGREG_T_MAX, SIGREG_POINTS, dtype=representations.dtype,
                       device=representations.device)
    phi = torch.exp(-0.5 * t * t)
    step = SIGREG_T_MAX / (SIGREG_POINTS - 1)
    trapezoid = torch.full_like(t, 2 * step)
    trapezoid[0] = trapezoid[-1] = step
    directions = noise.to(representations) / torch.linalg.vector_norm(noise.to(representations),
                                                                      dim=0)
    projections = (representations @ directions).unsqueeze(-1) * t  # [..., slices, points]
    cos_mean = torch.cos(projections).mean(dim=-2)
    sin_mean = torch.sin(projections).mean(dim=-2)
    err = (cos_mean - phi) ** 2 + sin_mean ** 2
    return (err * (trapezoid * phi)).sum(dim=-1) * directions.shape[-1]


def sigreg(representations: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """Mean of the per-token statistic over all tokens: a scalar, differentiable."""
    return sigreg_per_token(representations, noise).mean()
