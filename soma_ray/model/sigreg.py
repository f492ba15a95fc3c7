"""The SIGReg statistic (spec/model.md), without the 0.02 loss coefficient."""

from __future__ import annotations

import functools

import torch

from soma_ray.model.config import SIGREG_POINTS, SIGREG_T_MAX


@functools.lru_cache(maxsize=8)
def _quadrature(dtype: torch.dtype, device: torch.device) -> tuple[torch.Tensor, ...]:
    """t_j = j·3/16, the normal characteristic function exp(−t²/2), trapezoid weights × it."""
    t = torch.linspace(0.0, SIGREG_T_MAX, SIGREG_POINTS, dtype=dtype, device=device)
    phi = torch.exp(-0.5 * t * t)
    step = SIGREG_T_MAX / (SIGREG_POINTS - 1)
    trapezoid = torch.full_like(t, 2 * step)
    trapezoid[0] = trapezoid[-1] = step
    return t, phi, trapezoid * phi


def unit_directions(noise: torch.Tensor) -> torch.Tensor:
    """The noise columns [D, slices] scaled to unit length."""
    return noise / torch.linalg.vector_norm(noise, dim=0)


def characteristic_error(projections: torch.Tensor) -> torch.Tensor:
    """Per-token statistic from projections [..., slices]: the empirical characteristic
    function over the slices against exp(−t²/2), integrated over t in [0, 3], × slices."""
    t, phi, weights = _quadrature(projections.dtype, projections.device)
    angles = projections.unsqueeze(-1) * t  # [..., slices, points]
    err = (torch.cos(angles).mean(dim=-2) - phi) ** 2 + torch.sin(angles).mean(dim=-2) ** 2
    return (err * weights).sum(dim=-1) * projections.shape[-1]


def sigreg_per_token(representations: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """Per-token statistic, shape representations.shape[:-1]."""
    return characteristic_error(representations @ unit_directions(noise.to(representations)))


def sigreg(representations: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """Mean of the per-token statistic over all tokens: a scalar, differentiable."""
    return sigreg_per_token(representations, noise).mean()
