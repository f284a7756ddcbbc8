"""Hessian-vector products against finite differences of the model's own gradient, and power iteration
against the top eigenvalue of the whole Hessian built column by column (float64, a few hundred weights)."""

from __future__ import annotations

import numpy as np
import pytest

from gdexp.nn import MLP
from gdexp.nn.activations import ACTIVATIONS
from gdexp.nn.hessian import Hessian, flatten, top_eigen, unflatten
from gdexp.nn.losses import LOSSES
from tests.test_nn import rel_error

OUTPUTS = {"multiclass": 3, "binary": 1, "regression": 2}


def small_problem(activation: str, task: str, *, layers: int = 2, dtype: str = "float64", seed: int = 0
                  ) -> tuple[MLP, np.ndarray, np.ndarray]:
    """A 5 -> 12 (-> 12) -> k MLP with random biases (off ReLU's kink) and 40 random samples."""
    rng = np.random.default_rng(seed)
    k = OUTPUTS[task]
    model = MLP([5, *[12] * layers, k], activation=activation, init="xavier", task=task, rng=rng, dtype=dtype)
    for name, p in model.params.items():
        if name.startswith("b"):
            p[:] = 0.5 * rng.standard_normal(p.shape)
    X = rng.standard_normal((40, 5))
    y = {"multiclass": rng.integers(0, k, 40), "binary": rng.integers(0, 2, (40, 1)).astype(float),
         "regression": rng.standard_normal((40, k))}[task]
    return model, X, y


def gradient_at(model: MLP, X: np.ndarray, y: np.ndarray, theta: np.ndarray) -> np.ndarray:
    """The model's own backward pass at the flat weights θ (written into its parameters)."""
    for name, value in unflatten(theta, model.params).items():
        model.params[name][...] = value
    model.train_step(X, y)
    return flatten(model.grads).copy()


CASES = [(activation, task) for activation in sorted(ACTIVATIONS) for task in sorted(LOSSES)]


@pytest.mark.parametrize("activation,task", CASES)
def test_hessian_vector_product_equals_finite_differences_of_the_gradient(activation: str, task: str) -> None:
    model, X, y = small_problem(activation, task)
    hessian = Hessian(model, X, y)
    assert 200 < hessian.size < 400
    theta = flatten(model.params).copy()
    np.testing.assert_allclose(hessian.gradient, gradient_at(model, X, y, theta), rtol=1e-12, atol=1e-15)
    v = np.random.default_rng(1).standard_normal(hessian.size)
    eps = 1e-5  # central differences: error O(eps²)·‖∇³L‖ + O(1e-16/eps), ~1e-10 here
    numeric = (gradient_at(model, X, y, theta + eps * v) - gradient_at(model, X, y, theta - eps * v)) / (2 * eps)
    assert rel_error(hessian.matvec(v), numeric) < 1e-7


@pytest.mark.parametrize("activation,task", CASES)
def test_power_iteration_finds_the_top_eigenvalue_of_the_whole_hessian(activation: str, task: str) -> None:
    model, X, y = small_problem(activation, task)
    hessian = Hessian(model, X, y)
    H = hessian.dense()
    np.testing.assert_allclose(H, H.T, atol=1e-13)
    top = np.linalg.eigvalsh(H)[-1]
    value, vector = top_eigen(hessian.matvec, hessian.size, iters=5000, tol=1e-13, rng=np.random.default_rng(0))
    assert value == pytest.approx(top, rel=1e-4)
    assert np.linalg.norm(H @ vector - value * vector) < 1e-2 * abs(value)


def test_the_products_are_exact_for_a_float32_model_and_leave_it_untouched() -> None:
    """A float32 model's Hessian is that of the same weights in float64; its weights and gradients stay as they were."""
    model32, X, y = small_problem("tanh", "multiclass", dtype="float32")
    X = X.astype(np.float32)
    model32.train_step(X, y)
    before = {k: v.copy() for k, v in (*model32.params.items(), *(("d" + k, g) for k, g in model32.grads.items()))}
    model64, _, _ = small_problem("tanh", "multiclass")
    for name, p in model32.params.items():
        model64.params[name][...] = p
    v = np.random.default_rng(2).standard_normal(model32.n_params)
    got = Hessian(model32, X, y).matvec(v)
    assert got.dtype == np.float64
    np.testing.assert_allclose(got, Hessian(model64, X.astype(np.float64), y).matvec(v), rtol=1e-12)
    after = {k: v for k, v in (*model32.params.items(), *(("d" + k, g) for k, g in model32.grads.items()))}
    for name, array in before.items():
        np.testing.assert_array_equal(after[name], array, err_msg=name)


def test_linear_regression_hessian_is_the_closed_form() -> None:
    """No hidden layer, MSE (1/2m)Σ: H = X̃ᵀX̃/m with X̃ = [X, 1], for every output."""
    rng = np.random.default_rng(3)
    X, y = rng.standard_normal((30, 4)), rng.standard_normal((30, 1))
    model = MLP([4, 1], activation="relu", init="he", task="regression", rng=rng, dtype="float64")
    Xt = np.c_[X, np.ones(30)]
    np.testing.assert_allclose(Hessian(model, X, y).dense(), Xt.T @ Xt / 30, rtol=1e-12, atol=1e-15)


def symmetric(eigenvalues: list[float], seed: int = 0) -> np.ndarray:
    Q, _ = np.linalg.qr(np.random.default_rng(seed).standard_normal((len(eigenvalues), len(eigenvalues))))
    return Q @ np.diag(eigenvalues) @ Q.T


@pytest.mark.parametrize("eigenvalues", [[-10.0, -3.0, 0.5, 2.0, 5.0], [-6.0, -1.0, 0.2, 5.0], [-9.0, -4.0, -1.5],
                                         [7.0, 3.0, -2.0, 0.0], [0.0, 0.0, 0.0]])
def test_top_eigen_is_the_largest_algebraic_eigenvalue(eigenvalues: list[float]) -> None:
    """When the most negative eigenvalue dominates, the shift A − λ_dom·I still finds the largest one."""
    A = symmetric(eigenvalues)
    value, vector = top_eigen(lambda v: A @ v, len(A), iters=2000, tol=1e-14, rng=np.random.default_rng(1))
    assert value == pytest.approx(max(eigenvalues), rel=1e-8, abs=1e-12)
    if any(eigenvalues):
        assert abs(vector @ A @ vector - value) < 1e-8 * max(map(abs, eigenvalues))


def test_a_warm_start_at_the_eigenvector_needs_one_product() -> None:
    A = symmetric([1.0, 2.0, 3.0, 4.0])
    exact = np.linalg.eigh(A)[1][:, -1]
    calls = []

    def matvec(v: np.ndarray) -> np.ndarray:
        calls.append(1)
        return A @ v

    value, _ = top_eigen(matvec, 4, iters=1, rng=np.random.default_rng(0), start=exact)
    assert value == pytest.approx(4.0, rel=1e-14) and len(calls) == 1


def test_same_generator_same_estimate_and_a_residual_tol_stops_early() -> None:
    A = symmetric([1.0, 2.0, 3.0, 3.5])
    counts = []

    def estimate(tol: float) -> float:
        calls: list[int] = []

        def matvec(v: np.ndarray) -> np.ndarray:
            calls.append(1)
            return A @ v

        value = top_eigen(matvec, 4, iters=500, tol=tol, rng=np.random.default_rng(5))[0]
        counts.append(len(calls))
        return value

    assert estimate(0.0) == estimate(0.0) == pytest.approx(3.5)
    assert estimate(1e-3) == pytest.approx(3.5, rel=1e-2)
    assert counts[2] < counts[0]


def test_flatten_and_unflatten_round_trip() -> None:
    params = {"W0": np.arange(6.0).reshape(2, 3), "b0": np.array([7.0, 8.0, 9.0])}
    flat = flatten(params)
    np.testing.assert_array_equal(flat, np.r_[np.arange(6.0), 7.0, 8.0, 9.0])
    back = unflatten(flat, params)
    assert list(back) == ["W0", "b0"] and back["W0"].shape == (2, 3)
    np.testing.assert_array_equal(back["b0"], params["b0"])
    with pytest.raises(ValueError, match="10 entries"):
        unflatten(np.zeros(10), params)
    with pytest.raises(ValueError, match="iters=0"):
        top_eigen(lambda v: v, 3, iters=0, rng=np.random.default_rng(0))
