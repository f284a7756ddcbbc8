"""Weight initialisers: W shaped (fan_in, fan_out), biases start at zero.

Draws are made in float64 from the run's generator and cast afterwards, so a float32 and a float64
run with the same seed start from the same weights (up to rounding).
"""

from __future__ import annotations

import numpy as np

__all__ = ["INITS", "init_weight"]


def _he(rng: np.random.Generator, fan_in: int, fan_out: int) -> np.ndarray:
    """He et al. (2015): N(0, 2 / fan_in), made for ReLU."""
    return rng.standard_normal((fan_in, fan_out)) * np.sqrt(2.0 / fan_in)


def _xavier(rng: np.random.Generator, fan_in: int, fan_out: int) -> np.ndarray:
    """Glorot & Bengio (2010), uniform: U(−a, a) with a = sqrt(6 / (fan_in + fan_out))."""
    bound = np.sqrt(6.0 / (fan_in + fan_out))
    return rng.uniform(-bound, bound, (fan_in, fan_out))


def _normal_001(rng: np.random.Generator, fan_in: int, fan_out: int) -> np.ndarray:
    """randn * 0.01, the beginner-code default: tiny signals in deep or wide nets, so slow learning."""
    return rng.standard_normal((fan_in, fan_out)) * 0.01


INITS = {"he": _he, "xavier": _xavier, "normal_0.01": _normal_001}


def init_weight(name: str, rng: np.random.Generator, fan_in: int, fan_out: int, dtype: np.dtype) -> np.ndarray:
    return INITS[name](rng, fan_in, fan_out).astype(dtype)
