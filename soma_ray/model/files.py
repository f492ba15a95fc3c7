"""Whole-or-nothing file writes for weights (a reader never sees a half-written file): the one
atomic replace, `soma_ray.files.replacing`."""

from soma_ray.files import replacing

__all__ = ["replacing"]
