"""Self-distillation chains of kernel ridge fits (Borup & Andersen, NeurIPS 2021).

Step 0 fits the targets y. Step t >= 1 fits the mixed targets

    alpha_t * y + (1 - alpha_t) * y_{t-1},

where y_{t-1} are the step t-1 predictions at the training points and alpha_t is the
ground-truth weight. The ridge convention is that of `tfkd.theory.kernel_ridge`
(c = (K + lam I)^-1 z, no factor n).

Closed form. Write K = V diag(d) V^T and s_i = d_i / (d_i + lam). A fit to targets z
predicts S z with S = V diag(s) V^T, so the initial fit is y_0 = S y and its
eigen-coordinates are b = V^T y_0 = s * (V^T y). The step-t coordinates b_t = V^T y_t then
obey b_t = alpha_t b + (1 - alpha_t) s b_{t-1} (elementwise). Unrolled, with alpha_0 = 1,

    y_t = V diag(m_t) b,   m_t(s) = sum_{j=0..t} alpha_j prod_{k=j+1..t} (1 - alpha_k) s^(t-j).

For a constant alpha and r = (1 - alpha) s this is m_t = r^t + alpha (1 - r^t) / (1 - r).
Only y_0 is needed, not y: the chain never leaves the span of the initial fit, and
null-directions of K (d_i = 0) stay exactly zero at every step.
"""

import dataclasses
import math
import numbers

import numpy as np

from tfkd.theory.kernel_ridge import (
    check_kernel, check_lam, check_vector, kernel_eigen, kernel_ridge_fit,
    kernel_ridge_predict, shrink_factors)


@dataclasses.dataclass(frozen=True)
class DistillChain:
    """The fits of one self-distillation chain, steps 0..T.

    Attributes:
      alphas: (T,) ground-truth weights of steps 1..T (step 0 always fits y alone).
      coefs: (T + 1, n) dual coefficients of every step.
      train_predictions: (T + 1, n) predictions of every step at the training points.
    """

    alphas: np.ndarray
    coefs: np.ndarray
    train_predictions: np.ndarray

    def predict(self, kernel_cross):
        """(T + 1, m) predictions of every step at new inputs, from the (m, n) cross-kernel."""
        return kernel_ridge_predict(kernel_cross, self.coefs)


def check_steps(steps):
    """Returns steps, or raises ValueError if it is not a non-negative integer."""
    if isinstance(steps, bool) or not (isinstance(steps, numbers.Integral) and steps >= 0):
        raise ValueError(f"steps must be a non-negative integer, got {steps!r}")
    return int(steps)


def resolve_alphas(alphas, steps=None):
    """The (T,) ground-truth weights of steps 1..T.

    Args:
      alphas: one number used at every step (then `steps` is required), or a sequence
        with one weight per step. Values outside [0, 1] are allowed (extrapolation).
      steps: the number T of distillation steps after the initial fit; checked against
        the length of a sequence.
    """
    if steps is not None:
        steps = check_steps(steps)
    try:
        values = np.asarray(alphas, dtype=float)
    except (TypeError, ValueError):
        raise ValueError(
            f"alphas must be a number or a sequence of numbers, got {alphas!r}") from None
    if values.ndim == 0:
        if steps is None:
            raise ValueError(f"steps is required with a single alpha ({alphas!r}), got steps=None")
        values = np.full(steps, float(values))
    elif values.ndim != 1:
        raise ValueError(f"alphas must be a number or a 1-D sequence, got shape {values.shape}")
    elif steps is not None and values.shape[0] != steps:
        raise ValueError(f"alphas has {values.shape[0]} entries but steps={steps}")
    bad = values[~np.isfinite(values)]
    if bad.size:
        raise ValueError(f"alphas must be finite, got {float(bad[0])!r}")
    return values


def self_distill_iterative(kernel, targets, lam, alphas, steps=None):
    """Runs the chain by refitting kernel ridge regression at every step.

    Args:
      kernel: (n, n) training Gram matrix.
      targets: (n,) ground-truth targets y.
      lam: positive ridge strength.
      alphas: ground-truth weight(s) of steps 1..T; see `resolve_alphas`.
      steps: T, required when `alphas` is a single number.

    Returns:
      A `DistillChain` with T + 1 fits.
    """
    kernel = check_kernel(kernel)
    lam = check_lam(lam)
    targets = check_vector(targets, kernel.shape[0], "targets")
    alphas = resolve_alphas(alphas, steps)
    coefs = [kernel_ridge_fit(kernel, targets, lam)]
    predictions = [kernel @ coefs[0]]
    for alpha in alphas:
        mixed = alpha * targets + (1.0 - alpha) * predictions[-1]
        coefs.append(kernel_ridge_fit(kernel, mixed, lam))
        predictions.append(kernel @ coefs[-1])
    return DistillChain(alphas, np.stack(coefs), np.stack(predictions))


def step_multipliers(shrink, alphas):
    """(T + 1, n) factors m_t(s_i) that map the initial fit's eigen-coordinates to step t.

    Evaluates the unrolled sum of the module docstring term by term (not the recursion),
    so that it is an independent check of `self_distill_iterative`.
    """
    shrink = np.asarray(shrink, dtype=float)
    alphas = resolve_alphas(alphas)
    weights = np.concatenate([[1.0], alphas])  # alpha_0 = 1: step 0 sees y alone
    steps = len(alphas)
    multipliers = np.zeros((steps + 1, shrink.shape[0]))
    for t in range(steps + 1):
        for j in range(t + 1):
            teacher_weight = np.prod(1.0 - weights[j + 1:t + 1])
            multipliers[t] += weights[j] * teacher_weight * shrink ** (t - j)
    return multipliers


def self_distill_closed_form(kernel, initial_predictions, lam, alphas, steps=None):
    """Training-point predictions of steps 0..T from the initial fit alone, via eig(K).

    Args:
      kernel: (n, n) training Gram matrix.
      initial_predictions: (n,) step-0 predictions y_0 = K (K + lam I)^-1 y.
      lam: the ridge strength that produced `initial_predictions`.
      alphas, steps: as in `self_distill_iterative`.

    Returns:
      (T + 1, n) predictions; row t equals `self_distill_iterative(...).train_predictions[t]`.
    """
    kernel = check_kernel(kernel)
    lam = check_lam(lam)
    initial = check_vector(initial_predictions, kernel.shape[0], "initial_predictions")
    alphas = resolve_alphas(alphas, steps)
    eigvals, eigvecs = kernel_eigen(kernel)
    coords = eigvecs.T @ initial
    multipliers = step_multipliers(shrink_factors(eigvals, lam), alphas)
    return (multipliers * coords) @ eigvecs.T


def self_distill_limit(kernel, initial_predictions, lam, alpha=0.0):
    """Training-point predictions after infinitely many steps with a constant alpha in [0, 1].

    Each eigen-direction converges geometrically with ratio (1 - alpha) s_i < 1 to

        b_i * alpha / (1 - (1 - alpha) s_i) = (V^T y)_i * d_i / (d_i + lam / alpha),

    i.e. to the kernel ridge fit of y with regularisation amplified from lam to lam / alpha.

    alpha = 0 (pure self-distillation) is the extreme case lam / alpha = infinity: the
    limit is the zero function. Every direction is multiplied by s_i < 1 per step, the
    ones with small eigenvalues fastest, so before vanishing the predictions line up with
    the top eigen-directions of K present in y_0 (see `alpha0_limit_direction`); the
    null-directions of K are zero from step 0 on. The ground-truth weight alpha is what
    stops this collapse and keeps the limit at a finite regularisation lam / alpha.
    """
    kernel = check_kernel(kernel)
    lam = check_lam(lam)
    initial = check_vector(initial_predictions, kernel.shape[0], "initial_predictions")
    if not (isinstance(alpha, numbers.Real) and 0.0 <= alpha <= 1.0):
        raise ValueError(f"alpha must be a number in [0, 1] for the limit to exist, got {alpha!r}")
    if alpha == 0.0:
        return np.zeros_like(initial)
    eigvals, eigvecs = kernel_eigen(kernel)
    shrink = shrink_factors(eigvals, lam)
    return eigvecs @ (alpha / (1.0 - (1.0 - alpha) * shrink) * (eigvecs.T @ initial))


def alpha0_limit_direction(kernel, initial_predictions, rtol=1e-8):
    """Unit vector that y_t / ||y_t|| tends to as t grows, for alpha = 0.

    y_t = V diag(s^t) b, so after normalising, every direction decays relative to the
    ones with the largest shrink factor s_i among those where b_i != 0. The limit is the
    normalised projection of the initial fit on that top eigen-space; the cosine between
    y_t and it never decreases, at rate (s_next / s_top)^t. Since s_i grows with d_i, the
    direction does not depend on lam.

    Args:
      rtol: coordinates |b_i| <= rtol * ||b|| count as absent, and eigenvalues within
        rtol (relative) of the top one count as tied.
    """
    kernel = check_kernel(kernel)
    initial = check_vector(initial_predictions, kernel.shape[0], "initial_predictions")
    eigvals, eigvecs = kernel_eigen(kernel)
    coords = eigvecs.T @ initial
    norm = math.sqrt(float(coords @ coords))
    if norm == 0.0:
        raise ValueError("initial_predictions is zero; the alpha = 0 chain has no direction")
    present = np.abs(coords) > rtol * norm
    top = eigvals[present].max()
    keep = present & (eigvals >= top * (1.0 - rtol))
    direction = eigvecs[:, keep] @ coords[keep]
    return direction / np.linalg.norm(direction)
