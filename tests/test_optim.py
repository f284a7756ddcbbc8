"""Every optimizer against its update rule written out independently (PyTorch's torch.optim equations)."""

from __future__ import annotations

import numpy as np
import pytest

from gdexp.optim import SGD, Adagrad, Adam, RMSprop

STEPS = 5


def run(opt, theta0: np.ndarray, grads: list[np.ndarray]) -> np.ndarray:
    params = {"w": theta0.copy()}
    for g in grads:
        opt.step(params, {"w": g.copy()})
    return params["w"]


@pytest.fixture
def problem() -> tuple[np.ndarray, list[np.ndarray]]:
    rng = np.random.default_rng(7)
    return rng.standard_normal((3, 4)), [rng.standard_normal((3, 4)) for _ in range(STEPS)]


@pytest.mark.parametrize("momentum,dampening,nesterov,wd", [
    (0.0, 0.0, False, 0.0), (0.9, 0.0, False, 0.0), (0.9, 0.3, False, 0.01), (0.9, 0.0, True, 0.05)])
def test_sgd(problem, momentum: float, dampening: float, nesterov: bool, wd: float) -> None:
    theta, grads = problem
    lr, expected, b = 0.1, theta.copy(), None
    for g in grads:
        g = g + wd * expected
        if momentum:
            b = g if b is None else momentum * b + (1 - dampening) * g
            g = g + momentum * b if nesterov else b
        expected = expected - lr * g
    got = run(SGD(lr, momentum, dampening, nesterov, wd), theta, grads)
    np.testing.assert_allclose(got, expected, rtol=1e-12)


@pytest.mark.parametrize("lr_decay,wd,init", [(0.0, 0.0, 0.0), (0.1, 0.01, 0.5)])
def test_adagrad(problem, lr_decay: float, wd: float, init: float) -> None:
    theta, grads = problem
    lr, eps, expected, s = 0.05, 1e-10, theta.copy(), np.full_like(theta, init)
    for t, g in enumerate(grads, start=1):
        g = g + wd * expected
        clr = lr / (1 + (t - 1) * lr_decay)
        s = s + g**2
        expected = expected - clr * g / (np.sqrt(s) + eps)
    got = run(Adagrad(lr, lr_decay, wd, init, eps), theta, grads)
    np.testing.assert_allclose(got, expected, rtol=1e-12)


@pytest.mark.parametrize("momentum,centered,wd", [(0.0, False, 0.0), (0.9, False, 0.01), (0.5, True, 0.0),
                                                  (0.0, True, 0.02)])
def test_rmsprop(problem, momentum: float, centered: bool, wd: float) -> None:
    theta, grads = problem
    lr, alpha, eps = 0.01, 0.99, 1e-8
    expected, v, gbar, b = theta.copy(), np.zeros_like(theta), np.zeros_like(theta), np.zeros_like(theta)
    for g in grads:
        g = g + wd * expected
        v = alpha * v + (1 - alpha) * g**2
        v_tilde = v
        if centered:
            gbar = alpha * gbar + (1 - alpha) * g
            v_tilde = v - gbar**2
        if momentum:
            b = momentum * b + g / (np.sqrt(v_tilde) + eps)
            expected = expected - lr * b
        else:
            expected = expected - lr * g / (np.sqrt(v_tilde) + eps)
    got = run(RMSprop(lr, alpha, eps, wd, momentum, centered), theta, grads)
    np.testing.assert_allclose(got, expected, rtol=1e-10)


@pytest.mark.parametrize("amsgrad,wd", [(False, 0.0), (True, 0.0), (False, 0.1)])
def test_adam_with_bias_correction(problem, amsgrad: bool, wd: float) -> None:
    theta, grads = problem
    lr, b1, b2, eps = 0.01, 0.9, 0.999, 1e-8
    expected, m, v, vmax = theta.copy(), np.zeros_like(theta), np.zeros_like(theta), np.zeros_like(theta)
    for t, g in enumerate(grads, start=1):
        g = g + wd * expected
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g**2
        m_hat = m / (1 - b1**t)
        if amsgrad:
            vmax = np.maximum(vmax, v)
            v_hat = vmax / (1 - b2**t)
        else:
            v_hat = v / (1 - b2**t)
        expected = expected - lr * m_hat / (np.sqrt(v_hat) + eps)
    got = run(Adam(lr, (b1, b2), eps, wd, amsgrad), theta, grads)
    np.testing.assert_allclose(got, expected, rtol=1e-10)


def test_adam_first_step_moves_every_weight_by_lr() -> None:
    """With bias correction, Adam's first step is lr · sign(g) (up to ε): the classic sanity check."""
    g = np.array([3.0, -0.2, 1e-3])
    got = run(Adam(0.01), np.zeros(3), [g])
    np.testing.assert_allclose(got, -0.01 * np.sign(g), rtol=1e-4)


@pytest.mark.parametrize(("make", "argument"), [
    (lambda: SGD(-0.1), "lr"),
    (lambda: SGD(0.1, momentum=-0.5), "momentum"),
    (lambda: SGD(0.1, weight_decay=-1e-4), "weight_decay"),
    (lambda: SGD(float("nan")), "lr"),
    (lambda: SGD(0.1, nesterov=True), "nesterov"),  # without momentum: torch refuses, it would run plain SGD
    (lambda: SGD(0.1, momentum=0.9, dampening=0.1, nesterov=True), "nesterov"),
    (lambda: Adagrad(0.1, eps=-1e-10), "eps"),
    (lambda: Adagrad(0.1, lr_decay=-0.1), "lr_decay"),
    (lambda: Adagrad(0.1, initial_accumulator_value=-1.0), "initial_accumulator_value"),
    (lambda: RMSprop(0.1, alpha=-0.1), "alpha"),
    (lambda: RMSprop(0.1, momentum=-0.1), "momentum"),
    (lambda: Adam(0.1, betas=(1.0, 0.999)), "index 0"),
    (lambda: Adam(0.1, betas=(0.9, -0.1)), "index 1"),
    (lambda: Adam(0.1, eps=-1.0), "eps"),
])
def test_arguments_torch_refuses_are_refused(make, argument: str) -> None:
    with pytest.raises(ValueError, match=argument):
        make()


def test_centered_rmsprop_stays_finite_when_rounding_makes_the_variance_negative() -> None:
    """A constant float32 gradient: v − ḡ² = α^t (1 − α^t) g² shrinks to below float32's rounding of v and
    then rounds to ±ulp; below 0 its square root would be NaN. Clamped at 0, every step stays finite."""
    g = np.linspace(0.1, 3, 1000, dtype=np.float32)
    params = {"w": np.zeros(1000, dtype=np.float32)}
    opt = RMSprop(0.01, alpha=0.5, centered=True)
    dipped = False
    for _ in range(100):
        opt.step(params, {"w": g.copy()})
        state = opt.state["w"]
        dipped |= bool(np.any(state["square_avg"] - state["grad_avg"] ** 2 < 0))
    assert dipped, "the test must hit the rounding case it is about"
    assert np.all(np.isfinite(params["w"]))


@pytest.mark.parametrize("kwargs", [{}, {"momentum": 0.9}, {"momentum": 0.6, "dampening": 0.5},
                                    {"momentum": 0.9, "nesterov": True}, {"momentum": 0.5, "weight_decay": 0.3}])
def test_sgd_stability_edge_is_where_a_quadratic_starts_to_diverge(kwargs: dict) -> None:
    """On L = λθ²/2 (plus the L2 term) the step is stable iff h·(λ + wd) < 2: θ shrinks 2 % below, grows 2 % above."""
    wd = kwargs.get("weight_decay", 0.0)
    h, conditioner = SGD(0.1, **kwargs).stability({"w": np.ones(1)}, {"w": np.ones(1)})
    assert conditioner is None
    for factor, stable in ((0.98, True), (1.02, False)):
        curvature = factor * 2 / h - wd
        opt, params = SGD(0.1, **kwargs), {"w": np.ones(1)}
        with np.errstate(over="ignore", invalid="ignore"):
            for _ in range(3000):
                opt.step(params, {"w": curvature * params["w"]})
        assert (abs(params["w"][0]) < 1e-3) == stable, factor


def test_adaptive_preconditioners_are_those_of_the_next_step(problem) -> None:
    """P from the state the next step would reach with this gradient; the state itself is left as it was."""
    theta, grads = problem
    g, b1, b2, alpha, eps, wd = grads[-1], 0.9, 0.999, 0.99, 1e-8, 0.1
    past = grads[:-1]
    v = sum((1 - b2) * b2 ** (len(past) - 1 - i) * (x + wd * theta) ** 2 for i, x in enumerate(past))
    adam = Adam(0.01, (b1, b2), eps, weight_decay=wd)
    for x in past:
        adam.step({"w": theta.copy()}, {"w": x + 0.0})  # θ fixed, so every gradient gets the same L2 term
    state = {k: a.copy() for k, a in adam.state["w"].items()}
    t = len(past) + 1
    h, P = adam.stability({"w": theta}, {"w": g})
    v_next = b2 * v + (1 - b2) * (g + wd * theta) ** 2
    np.testing.assert_allclose(P["w"], (1 - b1**t) * (np.sqrt(v_next / (1 - b2**t)) + eps), rtol=1e-12)
    assert h == pytest.approx(0.01 * (1 - b1) / (1 + b1))
    for key, array in state.items():
        np.testing.assert_array_equal(adam.state["w"][key], array)

    rms = RMSprop(0.01, alpha, eps, momentum=0.5, centered=True)
    h, P = rms.stability({"w": theta}, {"w": g})
    assert rms.state == {} and h == pytest.approx(0.01 / 1.5)
    np.testing.assert_allclose(P["w"], np.sqrt((1 - alpha) * g**2 - ((1 - alpha) * g) ** 2) + eps, rtol=1e-12)

    ada = Adagrad(0.01, lr_decay=0.5, initial_accumulator_value=0.2, eps=eps)
    ada.step({"w": theta.copy()}, {"w": grads[0].copy()})
    h, P = ada.stability({"w": theta}, {"w": g})
    assert h == pytest.approx(0.01 / 1.5)
    np.testing.assert_allclose(P["w"], np.sqrt(0.2 + grads[0] ** 2 + g**2) + eps, rtol=1e-12)
