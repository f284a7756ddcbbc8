"""Optimizers with PyTorch's update rules (torch.optim docs), one small class each.

Each keeps its state per parameter name and updates the parameters in place. Notation, for a
parameter θ with gradient g at step t (t = 1, 2, ...), learning rate γ, weight decay λ:
every rule first adds the L2 term, g ← g + λθ (when λ ≠ 0). The gradient arrays are scratch space:
a step may overwrite them (the next backward pass refills them).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from omegaconf import DictConfig

__all__ = ["SGD", "Adagrad", "Adam", "Optimizer", "RMSprop", "make_optimizer"]

Params = dict[str, np.ndarray]


def _at_least(name: str, value: float, low: float = 0.0) -> float:
    """`value` as a float, or ValueError naming the argument, as torch.optim refuses it (also NaN)."""
    if not float(value) >= low:
        raise ValueError(f"invalid {name}: {value!r} (it must be >= {low:g})")
    return float(value)


class Optimizer:
    """Per-parameter state and the L2 term shared by every rule; `_update` is the rule itself."""

    def __init__(self, lr: float, weight_decay: float = 0.0) -> None:
        self.lr = _at_least("lr", lr)
        self.weight_decay = _at_least("weight_decay", weight_decay)
        self.t = 0
        self.state: dict[str, dict[str, np.ndarray]] = {}

    def _decayed(self, p: np.ndarray, g: np.ndarray) -> np.ndarray:
        if self.weight_decay:
            g += self.weight_decay * p
        return g

    def _slot(self, name: str, key: str, like: np.ndarray, fill: float = 0.0) -> np.ndarray:
        slots = self.state.setdefault(name, {})
        if key not in slots:
            slots[key] = np.full_like(like, fill)
        return slots[key]

    def step(self, params: Params, grads: Params) -> None:
        self.t += 1
        for name, p in params.items():
            self._update(name, p, self._decayed(p, grads[name]))

    def _update(self, name: str, p: np.ndarray, g: np.ndarray) -> None:
        raise NotImplementedError


class SGD(Optimizer):
    """b ← g at t = 1, else μ b + (1 − τ) g;  g ← g + μ b (Nesterov) or b;  θ ← θ − γ g."""

    def __init__(self, lr: float, momentum: float = 0.0, dampening: float = 0.0, nesterov: bool = False,
                 weight_decay: float = 0.0) -> None:
        super().__init__(lr, weight_decay)
        self.momentum, self.dampening = _at_least("momentum", momentum), float(dampening)
        self.nesterov = bool(nesterov)
        if self.nesterov and (self.momentum <= 0 or self.dampening != 0):
            raise ValueError(f"nesterov=True requires momentum > 0 and dampening = 0 (got momentum={momentum!r}, "
                             f"dampening={dampening!r})")

    def _update(self, name: str, p: np.ndarray, g: np.ndarray) -> None:
        mu = self.momentum
        if mu:
            first = name not in self.state
            buf = self._slot(name, "momentum", g)
            if first:
                np.copyto(buf, g)
            else:
                buf *= mu
                buf += (1 - self.dampening) * g
            if self.nesterov:
                g += mu * buf
            else:
                np.copyto(g, buf)
        g *= self.lr
        p -= g


class Adagrad(Optimizer):
    """γ̃ = γ / (1 + (t − 1) η);  s ← s + g²;  θ ← θ − γ̃ g / (√s + ε)."""

    def __init__(self, lr: float = 0.01, lr_decay: float = 0.0, weight_decay: float = 0.0,
                 initial_accumulator_value: float = 0.0, eps: float = 1e-10) -> None:
        super().__init__(lr, weight_decay)
        self.lr_decay = _at_least("lr_decay", lr_decay)
        self.initial = _at_least("initial_accumulator_value", initial_accumulator_value)
        self.eps = _at_least("eps", eps)

    def _update(self, name: str, p: np.ndarray, g: np.ndarray) -> None:
        s = self._slot(name, "sum", g, self.initial)
        s += g * g
        clr = self.lr / (1 + (self.t - 1) * self.lr_decay)
        g *= clr
        g /= np.sqrt(s) + self.eps
        p -= g


class RMSprop(Optimizer):
    """v ← α v + (1 − α) g²;  centred: ḡ ← α ḡ + (1 − α) g, ṽ = v − ḡ² (else ṽ = v);
    with momentum μ: b ← μ b + g / (√ṽ + ε), θ ← θ − γ b;  without: θ ← θ − γ g / (√ṽ + ε)."""

    def __init__(self, lr: float = 0.01, alpha: float = 0.99, eps: float = 1e-8, weight_decay: float = 0.0,
                 momentum: float = 0.0, centered: bool = False) -> None:
        super().__init__(lr, weight_decay)
        self.alpha, self.eps = _at_least("alpha", alpha), _at_least("eps", eps)
        self.momentum, self.centered = _at_least("momentum", momentum), bool(centered)

    def _update(self, name: str, p: np.ndarray, g: np.ndarray) -> None:
        a = self.alpha
        v = self._slot(name, "square_avg", g)
        v *= a
        v += (1 - a) * g * g
        if self.centered:
            gbar = self._slot(name, "grad_avg", g)
            gbar *= a
            gbar += (1 - a) * g
            denom = v - gbar * gbar  # ≥ 0 in exact arithmetic; float32 rounding can dip below (then NaN)
            np.maximum(denom, 0, out=denom)
            np.sqrt(denom, out=denom)
        else:
            denom = np.sqrt(v)
        denom += self.eps
        if self.momentum:
            buf = self._slot(name, "momentum", g)
            buf *= self.momentum
            buf += g / denom
            p -= self.lr * buf
        else:
            g /= denom
            g *= self.lr
            p -= g


class Adam(Optimizer):
    """m ← β1 m + (1 − β1) g;  v ← β2 v + (1 − β2) g²;  m̂ = m / (1 − β1ᵗ);  v̂ = v / (1 − β2ᵗ)
    (AMSGrad: v̂ = max of all v̂ so far);  θ ← θ − γ m̂ / (√v̂ + ε)."""

    def __init__(self, lr: float = 0.001, betas: Sequence[float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0, amsgrad: bool = False) -> None:
        super().__init__(lr, weight_decay)
        for i, beta in enumerate(betas):
            if not 0.0 <= float(beta) < 1.0:
                raise ValueError(f"invalid beta parameter at index {i}: {beta!r} (it must be in [0, 1))")
        self.beta1, self.beta2 = float(betas[0]), float(betas[1])
        self.eps, self.amsgrad = _at_least("eps", eps), bool(amsgrad)

    def _update(self, name: str, p: np.ndarray, g: np.ndarray) -> None:
        b1, b2 = self.beta1, self.beta2
        m = self._slot(name, "exp_avg", g)
        v = self._slot(name, "exp_avg_sq", g)
        m *= b1
        m += (1 - b1) * g
        v *= b2
        g *= g
        g *= 1 - b2
        v += g
        if self.amsgrad:
            vmax = self._slot(name, "max_exp_avg_sq", g)
            np.maximum(vmax, v, out=vmax)
            v = vmax
        bias1, bias2 = 1 - b1**self.t, 1 - b2**self.t
        denom = np.sqrt(v / bias2)
        denom += self.eps
        np.divide(m, denom, out=g)
        g *= self.lr / bias1
        p -= g


def make_optimizer(cfg: DictConfig) -> Optimizer:
    """Build the optimizer an `optim` config describes (keys as in `conf/optim/*.yaml`)."""
    kwargs = {str(k): v for k, v in cfg.items() if k != "name"}
    if "betas" in kwargs:
        kwargs["betas"] = tuple(kwargs["betas"])
    cls: type[Optimizer] = {"sgd": SGD, "adagrad": Adagrad, "rmsprop": RMSprop, "adam": Adam}[cfg.name]
    return cls(**kwargs)
