"""Kernel ridge self-distillation theory against independent computations."""

import re

import numpy as np
import pytest

from tfkd import theory

LAM = 0.05


@pytest.fixture(scope="module")
def problem():
    """A small noisy 1-D regression: (kernel, noisy targets, noise-free targets, x)."""
    rng = np.random.default_rng(0)
    x = np.sort(rng.uniform(-3.0, 3.0, 30))
    clean = np.sin(2.0 * x)
    noisy = clean + 0.3 * rng.standard_normal(x.shape)
    return theory.rbf_kernel(x, length_scale=0.6), noisy, clean, x


def test_rbf_kernel_matches_definition():
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal((5, 2)), rng.standard_normal((3, 2))
    expected = np.array([[np.exp(-np.sum((p - q) ** 2) / (2 * 0.7**2)) for q in b] for p in a])
    np.testing.assert_allclose(theory.rbf_kernel(a, b, length_scale=0.7), expected, rtol=1e-12)
    np.testing.assert_allclose(np.diag(theory.rbf_kernel(a)), 1.0)


def test_fit_matches_scikit_learn_kernel_ridge(problem):
    # scikit-learn's KernelRidge uses the same convention, (K + alpha I) c = y, no factor n.
    from sklearn.kernel_ridge import KernelRidge

    _, noisy, _, x = problem
    gamma = 1.0 / (2 * 0.6**2)
    reference = KernelRidge(alpha=LAM, kernel="rbf", gamma=gamma).fit(x[:, None], noisy)
    x_new = np.linspace(-3, 3, 17)
    ours = theory.kernel_ridge_predict(
        theory.rbf_kernel(x_new, x, length_scale=0.6),
        theory.kernel_ridge_fit(theory.rbf_kernel(x, length_scale=0.6), noisy, LAM))
    np.testing.assert_allclose(ours, reference.predict(x_new[:, None]), atol=1e-8)


@pytest.mark.parametrize("alphas", [
    [0.0] * 6,
    [0.4] * 6,
    [1.0, 0.0, 0.25, 0.9, 0.5, 0.1, 0.7],
    [-0.5, 1.6, 0.3],  # extrapolating weights follow the same algebra
])
@pytest.mark.parametrize("lam", [1e-3, LAM, 2.0])
def test_closed_form_equals_iterated_fits(problem, alphas, lam):
    kernel, noisy, _, _ = problem
    chain = theory.self_distill_iterative(kernel, noisy, lam, alphas)
    closed = theory.self_distill_closed_form(kernel, chain.train_predictions[0], lam, alphas)
    assert closed.shape == (len(alphas) + 1, len(noisy))
    np.testing.assert_allclose(closed, chain.train_predictions, rtol=0, atol=1e-8)


def test_constant_alpha_multipliers_are_a_geometric_series():
    shrink, alpha, steps = np.linspace(0.0, 0.99, 7), 0.3, 9
    ratio = (1 - alpha) * shrink
    expected = [ratio**t + alpha * (1 - ratio**t) / (1 - ratio) for t in range(steps + 1)]
    np.testing.assert_allclose(theory.step_multipliers(shrink, [alpha] * steps), expected,
                               rtol=1e-12)


def test_scalar_alpha_equals_repeated_alpha(problem):
    kernel, noisy, _, _ = problem
    a = theory.self_distill_iterative(kernel, noisy, LAM, 0.3, steps=4)
    b = theory.self_distill_iterative(kernel, noisy, LAM, [0.3] * 4)
    np.testing.assert_array_equal(a.train_predictions, b.train_predictions)


def test_chain_predict_at_training_points_equals_train_predictions(problem):
    kernel, noisy, _, _ = problem
    chain = theory.self_distill_iterative(kernel, noisy, LAM, [0.2, 0.5])
    np.testing.assert_allclose(chain.predict(kernel), chain.train_predictions, atol=1e-12)


def _grid_errors(kernel, noisy, previous, lam, grid, kernel_eval, reference):
    """Squared errors of real refits to alpha * y + (1 - alpha) * previous, for every alpha."""
    mixed = grid[None, :] * noisy[:, None] + (1 - grid[None, :]) * previous[:, None]
    coefs = np.linalg.solve(kernel + lam * np.eye(len(noisy)), mixed)
    return np.sum((kernel_eval @ coefs - reference[:, None]) ** 2, axis=0)


@pytest.mark.parametrize("clip", [True, False])
@pytest.mark.parametrize("held_out", [False, True])
@pytest.mark.parametrize("lam", [1e-3, 3.0])  # under- and over-regularised
def test_optimal_alpha_equals_grid_search(problem, clip, held_out, lam):
    kernel, noisy, clean, x = problem
    previous = theory.self_distill_iterative(kernel, noisy, lam, [0.3, 0.0]).train_predictions[-1]
    if held_out:
        rng = np.random.default_rng(2)
        x_val = rng.uniform(-3, 3, 25)
        kernel_eval = theory.rbf_kernel(x_val, x, length_scale=0.6)
        reference = np.sin(2 * x_val) + 0.3 * rng.standard_normal(x_val.shape)
    else:
        kernel_eval, reference = kernel, clean
    alpha = theory.optimal_alpha_step(kernel, noisy, previous, lam, reference,
                                      kernel_eval=None if not held_out else kernel_eval,
                                      clip=clip)
    grid = np.linspace(0.0, 1.0, 20001) if clip else np.linspace(-5.0, 5.0, 20001)
    errors = _grid_errors(kernel, noisy, previous, lam, grid, kernel_eval, reference)
    best = grid[np.argmin(errors)]
    if not clip:
        assert -5.0 < best < 5.0, "grid too narrow for the unclipped optimum"
    step = grid[1] - grid[0]
    assert abs(alpha - best) <= step / 2 + 1e-12
    assert _grid_errors(kernel, noisy, previous, lam, np.array([alpha]), kernel_eval,
                        reference)[0] <= errors.min() + 1e-12


def test_unclipped_optimum_leaves_unit_interval_as_documented(problem):
    kernel, noisy, clean, _ = problem
    under, over = 1e-3, 3.0
    for lam, sign in [(under, -1), (over, 1)]:
        y0 = theory.self_distill_iterative(kernel, noisy, lam, []).train_predictions[0]
        alpha = theory.optimal_alpha_step(kernel, noisy, y0, lam, clean, clip=False)
        assert (alpha < 0) if sign < 0 else (alpha > 1), (lam, alpha)
        clipped = theory.optimal_alpha_step(kernel, noisy, y0, lam, clean)
        assert clipped == (0.0 if sign < 0 else 1.0)


def test_optimal_chain_uses_greedy_alphas(problem):
    kernel, noisy, clean, _ = problem
    chain = theory.self_distill_optimal(kernel, noisy, LAM, 4, clean)
    assert np.all((chain.alphas >= 0) & (chain.alphas <= 1))
    replay = theory.self_distill_iterative(kernel, noisy, LAM, chain.alphas)
    np.testing.assert_allclose(replay.train_predictions, chain.train_predictions, atol=1e-12)
    for t in range(1, 5):
        best = theory.optimal_alpha_step(kernel, noisy, chain.train_predictions[t - 1], LAM, clean)
        assert chain.alphas[t - 1] == pytest.approx(best)


def test_optimal_alpha_with_identical_fits_prefers_labels():
    g = np.array([1.0, 2.0, 3.0])
    assert theory.optimal_alpha(g, g.copy(), np.zeros(3)) == 1.0


@pytest.mark.parametrize("lam", [1e-3, LAM, 1.0])
def test_alpha_zero_chain_moves_monotonically_to_its_limit(problem, lam):
    kernel, noisy, _, _ = problem
    chain = theory.self_distill_iterative(kernel, noisy, lam, 0.0, steps=40)
    limit = theory.self_distill_limit(kernel, chain.train_predictions[0], lam, alpha=0.0)
    np.testing.assert_array_equal(limit, 0.0)
    distances = np.linalg.norm(chain.train_predictions - limit, axis=1)
    assert np.all(np.diff(distances) < 0)
    # Before vanishing, the chain lines up with the top eigen-directions of K.
    direction = theory.alpha0_limit_direction(kernel, chain.train_predictions[0])
    cosines = np.abs(chain.train_predictions @ direction) / distances
    assert np.all(np.diff(cosines) >= -1e-12)
    assert cosines[-1] > cosines[0]


@pytest.mark.parametrize("alpha", [0.1, 0.5, 1.0])
def test_constant_alpha_limit_is_ridge_with_lam_over_alpha(problem, alpha):
    kernel, noisy, _, _ = problem
    chain = theory.self_distill_iterative(kernel, noisy, LAM, alpha, steps=300)
    limit = theory.self_distill_limit(kernel, chain.train_predictions[0], LAM, alpha=alpha)
    amplified = kernel @ theory.kernel_ridge_fit(kernel, noisy, LAM / alpha)
    np.testing.assert_allclose(limit, amplified, atol=1e-8)
    np.testing.assert_allclose(chain.train_predictions[-1], limit, atol=1e-8)
    distances = np.linalg.norm(chain.train_predictions[:30] - limit, axis=1)
    assert np.all(np.diff(distances) <= 1e-12)


@pytest.mark.parametrize("lam", [0.0, -1.0, float("nan"), float("inf"), "abc"])
def test_bad_lam_is_named(problem, lam):
    kernel, noisy, _, _ = problem
    for call in [
        lambda: theory.kernel_ridge_fit(kernel, noisy, lam),
        lambda: theory.self_distill_iterative(kernel, noisy, lam, 0.5, steps=2),
        lambda: theory.self_distill_closed_form(kernel, noisy, lam, [0.5]),
        lambda: theory.optimal_alpha_step(kernel, noisy, noisy, lam, noisy),
    ]:
        with pytest.raises(ValueError, match="lam .*" + re.escape(repr(lam))):
            call()


def test_bad_shapes_and_alphas_are_named(problem):
    kernel, noisy, _, x = problem
    n = len(noisy)
    with pytest.raises(ValueError, match=f"targets has length {n - 1}, expected {n}"):
        theory.kernel_ridge_fit(kernel, noisy[:-1], LAM)
    with pytest.raises(ValueError, match="alphas has 3 entries but steps=4"):
        theory.self_distill_iterative(kernel, noisy, LAM, [0.1, 0.2, 0.3], steps=4)
    with pytest.raises(ValueError, match="steps is required with a single alpha"):
        theory.self_distill_closed_form(kernel, noisy, LAM, 0.5)
    with pytest.raises(ValueError, match="alphas must be finite, got nan"):
        theory.self_distill_iterative(kernel, noisy, LAM, [0.1, float("nan")])
    with pytest.raises(ValueError, match="steps must be a non-negative integer, got -1"):
        theory.self_distill_optimal(kernel, noisy, LAM, -1, noisy)
    with pytest.raises(ValueError, match=r"kernel must be a square \(n, n\) matrix, got shape"):
        theory.kernel_ridge_fit(kernel[:, :-1], noisy, LAM)
    with pytest.raises(ValueError, match="reference has length 5, expected 30"):
        theory.optimal_alpha_step(kernel, noisy, noisy, LAM, noisy[:5])
    with pytest.raises(ValueError, match=r"kernel_eval must have shape \(m, 30\)"):
        theory.optimal_alpha_step(kernel, noisy, noisy, LAM, noisy[:5], kernel_eval=kernel[:5, :4])
    with pytest.raises(ValueError, match=r"alpha must be a number in \[0, 1\].*1.5"):
        theory.self_distill_limit(kernel, noisy, LAM, alpha=1.5)
    with pytest.raises(ValueError, match="length_scale must be a positive finite number, got 0"):
        theory.rbf_kernel(x, length_scale=0)


def test_theory_imports_without_tensorflow():
    import subprocess
    import sys

    code = "import sys, tfkd.theory; print('tensorflow' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
