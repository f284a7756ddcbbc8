"""Optimizers with PyTorch's update rules (torch.optim docs), one small class each.

Each keeps its state per parameter name and updates the parameters in place. Notation, for a
parameter θ with gradient g at step t (t = 1, 2, ...), learning rate γ, weight decay λ:
every rule first adds the L2 term, g ← g + λθ (when λ ≠ 0). The gradient arrays are scratch space:
a step may overwrite them (the next backward pass refills them).

`stability(params, grads)` says when the next step is stable, for the edge-of-stability diagnostics
(`gdexp.diagnostics`): it returns (h, P) such that, on a quadratic with Hessian H and the preconditioner
P (diagonal; None for SGD, i.e. the identity) held fixed, the update is stable iff h·λmax(P⁻¹H) < 2.
Plain GD has h = γ (the 2/γ rule). A heavy-ball buffer b ← μb + (1 − τ)g, θ ← θ − γb gives the
recursion θ' = (1 + μ − c)θ − μθ₋ with c = γ(1 − τ)λ, stable iff c < 2 + 2μ, so h = γ(1 − τ)/(1 + μ);
Nesterov's step g + μb gives θ' = (1 + μ)(1 − c)θ − μ(1 − c)θ₋, stable iff c < (2 + 2μ)/(1 + 2μ), so
h = γ(1 + 2μ)/(1 + μ). Adaptive methods divide by P, built from the state as the next step would
update it with `grads`; Adam's P = (1 − β1ᵗ)(√v̂ + ε) and its exponential average m (τ = μ = β1) give
the threshold (2 + 2β1)/((1 − β1)γ) = 38/γ of Cohen et al. (2022), "Adaptive gradient methods at the
edge of stability". The state is left as it is.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from omegaconf import DictConfig

__all__ = ["SGD", "Adagrad", "Adam", "BadArgument", "Optimizer", "RMSprop", "make_optimizer"]

Params = dict[str, np.ndarray]
Slot = Callable[[str, float], np.ndarray]  # (state key, initial value) -> that state array, to update in place


class BadArgument(ValueError):
    """An optimizer argument outside what its rule allows, refused as torch.optim refuses it. `name` and `rule`
    let a config error name the key (`optim.<name>`) and say what is allowed: the rules live here only."""

    def __init__(self, name: str, value: object, rule: str) -> None:
        super().__init__(f"invalid {name}: {value!r} ({rule})")
        self.name, self.value, self.rule = name, value, rule


def _at_least(name: str, value: float, low: float = 0.0) -> float:
    """`value` as a float, or `BadArgument` naming the argument (also for NaN)."""
    if not float(value) >= low:
        raise BadArgument(name, value, f"it must be >= {low:g}")
    return float(value)


def _average(avg: np.ndarray, beta: float, x: np.ndarray) -> np.ndarray:
    """avg ← β avg + (1 − β) x, the exponential moving average every adaptive rule keeps, in place; `x` is
    scratch (it is overwritten), so a caller that still needs its value passes a copy."""
    avg *= beta
    x *= 1 - beta
    avg += x
    return avg


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

    def _slots(self, name: str, like: np.ndarray, *, lookahead: bool = False) -> Slot:
        """The state arrays of parameter `name`: the live ones, or (lookahead) fresh copies, so that a look at
        the next step can run the same update code and leave the state as it is."""
        if not lookahead:
            return lambda key, fill: self._slot(name, key, like, fill)
        slots = self.state.get(name, {})
        return lambda key, fill: slots[key].copy() if key in slots else np.full_like(like, fill)

    def step(self, params: Params, grads: Params) -> None:
        self.t += 1
        for name, p in params.items():
            self._update(name, p, self._decayed(p, grads[name]))

    def _update(self, name: str, p: np.ndarray, g: np.ndarray) -> None:
        raise NotImplementedError

    def stability(self, params: Params, grads: Params) -> tuple[float, Params | None]:
        """(h, P) of the next step: stable iff h·λmax(P⁻¹H) < 2 on a quadratic with Hessian H of the objective
        the step descends (the loss plus (λ/2)‖θ‖² with weight decay λ); P diagonal, shaped like `params`,
        None for the identity. `grads` (the loss's gradient) and the state are not changed."""
        conditioners: Params = {}
        for name, p in params.items():
            g = grads[name] + self.weight_decay * p
            found = self._preconditioner(g, self._slots(name, g, lookahead=True), self.t + 1)
            if found is None:
                return self._scale(), None
            conditioners[name] = found
        return self._scale(), conditioners

    def _scale(self) -> float:
        """h of `stability`."""
        return self.lr

    def _preconditioner(self, g: np.ndarray, slot: Slot, t: int) -> np.ndarray | None:
        """P of step t, updating the state arrays `slot` gives with the gradient g (which it may overwrite)."""
        return None


class SGD(Optimizer):
    """b ← g at t = 1, else μ b + (1 − τ) g;  g ← g + μ b (Nesterov) or b;  θ ← θ − γ g."""

    def __init__(self, lr: float, momentum: float = 0.0, dampening: float = 0.0, nesterov: bool = False,
                 weight_decay: float = 0.0) -> None:
        super().__init__(lr, weight_decay)
        self.momentum, self.dampening = _at_least("momentum", momentum), float(dampening)
        self.nesterov = bool(nesterov)
        if self.nesterov and (self.momentum <= 0 or self.dampening != 0):
            raise BadArgument("nesterov", True, f"it needs momentum > 0 and dampening = 0 (got momentum={momentum!r}, "
                             f"dampening={dampening!r})")

    def _scale(self) -> float:
        mu = self.momentum
        if not mu:
            return self.lr
        return self.lr * (1 + 2 * mu) / (1 + mu) if self.nesterov else self.lr * (1 - self.dampening) / (1 + mu)

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
        denom = self._preconditioner(g, self._slots(name, g), self.t)
        g *= self.lr / (1 + (self.t - 1) * self.lr_decay)
        g /= denom
        p -= g

    def _scale(self) -> float:
        return self.lr / (1 + self.t * self.lr_decay)  # γ̃ of the next step, t + 1

    def _preconditioner(self, g: np.ndarray, slot: Slot, t: int) -> np.ndarray:
        """√s + ε."""
        s = slot("sum", self.initial)
        s += g * g
        denom = np.sqrt(s)
        denom += self.eps
        return denom


class RMSprop(Optimizer):
    """v ← α v + (1 − α) g²;  centred: ḡ ← α ḡ + (1 − α) g, ṽ = v − ḡ² (else ṽ = v);
    with momentum μ: b ← μ b + g / (√ṽ + ε), θ ← θ − γ b;  without: θ ← θ − γ g / (√ṽ + ε)."""

    def __init__(self, lr: float = 0.01, alpha: float = 0.99, eps: float = 1e-8, weight_decay: float = 0.0,
                 momentum: float = 0.0, centered: bool = False) -> None:
        super().__init__(lr, weight_decay)
        self.alpha, self.eps = _at_least("alpha", alpha), _at_least("eps", eps)
        self.momentum, self.centered = _at_least("momentum", momentum), bool(centered)

    def _scale(self) -> float:
        return self.lr / (1 + self.momentum)

    def _preconditioner(self, g: np.ndarray, slot: Slot, t: int) -> np.ndarray:
        """√ṽ + ε."""
        v = _average(slot("square_avg", 0.0), self.alpha, g * g)
        if self.centered:
            gbar = _average(slot("grad_avg", 0.0), self.alpha, g.copy())
            denom = v - gbar * gbar  # ≥ 0 in exact arithmetic; float32 rounding can dip below (then NaN)
            np.maximum(denom, 0, out=denom)
            np.sqrt(denom, out=denom)
        else:
            denom = np.sqrt(v)
        denom += self.eps
        return denom

    def _update(self, name: str, p: np.ndarray, g: np.ndarray) -> None:
        denom = self._preconditioner(g, self._slots(name, g), self.t)
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
        if len(betas) != 2:  # [0.9] raised an IndexError; three were taken, the third unused (PyTorch refuses both)
            raise BadArgument("betas", list(betas), f"give two numbers in [0, 1), e.g. [0.9,0.999] (β1 and β2; "
                                                    f"{len(betas)} given)")
        for i, beta in enumerate(betas):
            if not 0.0 <= float(beta) < 1.0:
                raise BadArgument("betas", list(betas), f"give two numbers in [0, 1), e.g. [0.9,0.999] (the one at "
                                                        f"index {i} is {beta!r})")
        self.beta1, self.beta2 = float(betas[0]), float(betas[1])
        self.eps, self.amsgrad = _at_least("eps", eps), bool(amsgrad)

    def _update(self, name: str, p: np.ndarray, g: np.ndarray) -> None:
        m = _average(self._slot(name, "exp_avg", g), self.beta1, g.copy())
        denom = self._denominator(g, self._slots(name, g), self.t)
        np.divide(m, denom, out=g)
        g *= self.lr / (1 - self.beta1**self.t)
        p -= g

    def _denominator(self, g: np.ndarray, slot: Slot, t: int) -> np.ndarray:
        """√v̂ + ε, updating v (and its running maximum) with g, which it overwrites."""
        v = _average(slot("exp_avg_sq", 0.0), self.beta2, np.multiply(g, g, out=g))
        if self.amsgrad:
            vmax = slot("max_exp_avg_sq", 0.0)
            np.maximum(vmax, v, out=vmax)
            v = vmax
        denom = np.sqrt(v / (1 - self.beta2**t))
        denom += self.eps
        return denom

    def _scale(self) -> float:
        return self.lr * (1 - self.beta1) / (1 + self.beta1)

    def _preconditioner(self, g: np.ndarray, slot: Slot, t: int) -> np.ndarray:
        """P = (1 − β1ᵗ)(√v̂ + ε): the bias correction of m folded in, as Cohen et al. (2022) write it."""
        return self._denominator(g, slot, t) * (1 - self.beta1**t)


def make_optimizer(cfg: DictConfig) -> Optimizer:
    """Build the optimizer an `optim` config describes (keys as in `conf/optim/*.yaml`)."""
    kwargs = {str(k): v for k, v in cfg.items() if k != "name"}
    if "betas" in kwargs:
        kwargs["betas"] = tuple(kwargs["betas"])
    cls: type[Optimizer] = {"sgd": SGD, "adagrad": Adagrad, "rmsprop": RMSprop, "adam": Adam}[cfg.name]
    return cls(**kwargs)
