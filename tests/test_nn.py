"""Gradients of every activation, loss, layer and the whole MLP against central finite differences (float64)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from gdexp.nn import MLP
from gdexp.nn.activations import ACTIVATIONS
from gdexp.nn.layers import Dense
from gdexp.nn.losses import LOSSES


@pytest.fixture
def rng(request: pytest.FixtureRequest) -> np.random.Generator:
    """Each test its own generator, seeded by its name: the data a test sees does not depend on which
    tests ran before it, or in what order."""
    return np.random.default_rng(list(request.node.name.encode()))


def numeric_grad(f: Callable[[], float], x: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """Central differences of the scalar f() with respect to every entry of x (perturbed in place)."""
    grad = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        old = x[i]
        x[i] = old + eps
        up = f()
        x[i] = old - eps
        down = f()
        x[i] = old
        grad[i] = (up - down) / (2 * eps)
    return grad


def rel_error(a: np.ndarray, b: np.ndarray) -> float:
    """‖a − b‖ / (‖a‖ + ‖b‖): entrywise ratios blow up on entries that are ~0 in both."""
    return float(np.linalg.norm(a - b) / max(1e-12, np.linalg.norm(a) + np.linalg.norm(b)))


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_activation_gradient(name: str, rng: np.random.Generator) -> None:
    act = ACTIVATIONS[name]()
    z = rng.standard_normal((5, 4))
    z[np.abs(z) < 1e-3] = 0.5  # keep away from ReLU's kink
    upstream = rng.standard_normal((5, 4))
    f = lambda: float(np.sum(act.forward(z.copy()) * upstream))  # noqa: E731
    a = act.forward(z.copy())
    assert rel_error(act.backward(a, upstream.copy()), numeric_grad(f, z)) < 1e-6


@pytest.mark.parametrize("task", sorted(LOSSES))
def test_loss_gradient(task: str, rng: np.random.Generator) -> None:
    loss = LOSSES[task]()
    m, k = 6, (4 if task == "multiclass" else 1 if task == "binary" else 3)
    z = rng.standard_normal((m, k))
    y = {"multiclass": rng.integers(0, k, m), "binary": rng.integers(0, 2, (m, 1)).astype(float),
         "regression": rng.standard_normal((m, k))}[task]
    f = lambda: loss.loss(z, y)[0]  # noqa: E731
    analytic = z.copy()
    loss.loss_grad(analytic, y)
    assert rel_error(analytic, numeric_grad(f, z)) < 1e-6


def test_loss_values_match_their_formulas(rng: np.random.Generator) -> None:
    z = rng.standard_normal((5, 3))
    y = np.array([0, 2, 1, 1, 0])
    p = np.exp(z) / np.exp(z).sum(1, keepdims=True)
    assert LOSSES["multiclass"]().loss(z, y)[0] == pytest.approx(-np.mean(np.log(p[np.arange(5), y])))
    zb, yb = z[:, :1], (y[:, None] > 0).astype(float)
    pb = 1 / (1 + np.exp(-zb))
    assert LOSSES["binary"]().loss(zb, yb)[0] == pytest.approx(-np.mean(yb * np.log(pb) + (1 - yb) * np.log(1 - pb)))
    yr = rng.standard_normal((5, 3))
    assert LOSSES["regression"]().loss(z, yr)[0] == pytest.approx(np.sum((z - yr) ** 2) / (2 * 5))


def test_dense_gradients(rng: np.random.Generator) -> None:
    x, W, b = rng.standard_normal((7, 5)), rng.standard_normal((5, 3)), rng.standard_normal(3)
    dW, db, dx = np.zeros_like(W), np.zeros_like(b), np.zeros_like(x)
    layer = Dense(W, b, dW, db)
    upstream = rng.standard_normal((7, 3))
    f = lambda: float(np.sum(layer.forward(x, np.empty((7, 3))) * upstream))  # noqa: E731
    layer.backward(x, upstream, dx)
    for analytic, wrt in ((dW, W), (db, b), (dx, x)):
        assert rel_error(analytic, numeric_grad(f, wrt)) < 1e-6


@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
@pytest.mark.parametrize("task,layers", [("multiclass", 2), ("binary", 1), ("regression", 2), ("multiclass", 0)])
def test_mlp_gradient(activation: str, task: str, layers: int, rng: np.random.Generator) -> None:
    k = {"multiclass": 3, "binary": 1, "regression": 2}[task]
    model = MLP([4, *[5] * layers, k], activation=activation, init="xavier", task=task,
                rng=np.random.default_rng(1), dtype="float64")
    X = rng.standard_normal((8, 4))
    y = {"multiclass": rng.integers(0, k, 8), "binary": rng.integers(0, 2, (8, 1)).astype(float),
         "regression": rng.standard_normal((8, k))}[task]
    for name, p in model.params.items():
        if name.startswith("b"):  # zero biases put ReLU exactly on its kink for samples with no active unit
            p[:] = rng.standard_normal(p.shape)
    model.train_step(X, y)
    analytic = {k: g.copy() for k, g in model.grads.items()}
    f = lambda: model.loss.loss(model.forward(X), y)[0]  # noqa: E731
    for name, p in model.params.items():
        assert rel_error(analytic[name], numeric_grad(f, p)) < 1e-6, name


def test_parameter_count_of_the_classic_784_16_16_10_network(rng: np.random.Generator) -> None:
    model = MLP([784, 16, 16, 10], activation="sigmoid", init="he", task="multiclass", rng=rng)
    assert model.n_params == 13_002


def test_single_sigmoid_neuron_gradient_is_xT_times_residual_over_m(rng: np.random.Generator) -> None:
    X = rng.standard_normal((20, 3))
    y = rng.integers(0, 2, (20, 1)).astype(float)
    model = MLP([3, 1], activation="relu", init="normal_0.01", task="binary", rng=rng, dtype="float64")
    y_hat = 1 / (1 + np.exp(-(X @ model.params["W0"] + model.params["b0"])))
    model.train_step(X, y)
    np.testing.assert_allclose(model.grads["W0"], X.T @ (y_hat - y) / 20, rtol=1e-10)
    np.testing.assert_allclose(model.grads["b0"], np.sum(y_hat - y) / 20, rtol=1e-10)
