"""The per-step optimal ground-truth weight alpha, in closed form.

Kernel ridge regression is linear in its targets, so the step-t fit to
alpha * y + (1 - alpha) * y_{t-1} is exactly alpha * (fit to y) + (1 - alpha) * (fit to
y_{t-1}), at the training points and at any other points alike. Its squared error
against a reference r is therefore a quadratic in alpha,

    E(alpha) = ||h + alpha (g - h) - r||^2,   g = ground-truth fit, h = teacher fit,

minimised at alpha* = <g - h, r - h> / ||g - h||^2. With clip=True the answer is the
minimiser over [0, 1], which for a convex quadratic is alpha* clipped to that interval.

The reference can be the noise-free targets at the training points (an oracle, as in
the theory) or noisy targets at held-out validation points, in which case g and h are
the two fits' predictions at those points. Unclipped values outside [0, 1] are real
optima, not noise. alpha > 1, a negative weight 1 - alpha on the teacher, extrapolates
away from the teacher towards less smoothing and is what an over-regularised fit (lam
too large) asks for; alpha < 0 extrapolates past the teacher towards more smoothing and
is what an under-regularised fit asks for.
"""

import numpy as np

from tfkd.theory.kernel_ridge import (
    check_kernel, check_lam, check_vector, kernel_ridge_fit)
from tfkd.theory.self_distill import DistillChain, check_steps


def optimal_alpha(ground_truth_predictions, teacher_predictions, reference, *, clip=True):
    """alpha minimising ||alpha * g + (1 - alpha) * h - reference||^2.

    Args:
      ground_truth_predictions: g, predictions of the fit to the targets y (alpha = 1).
      teacher_predictions: h, predictions of the fit to the previous step's training
        predictions (alpha = 0), at the same points as g.
      reference: what the mixture should match at those points.
      clip: restrict alpha to [0, 1].

    Returns:
      The optimal alpha as a float. If g == h every alpha gives the same predictions and
      1.0 is returned.
    """
    g = np.asarray(ground_truth_predictions, dtype=float)
    if g.ndim != 1:
        raise ValueError(f"ground_truth_predictions must be a vector, got shape {g.shape}")
    n = g.shape[0]
    g = check_vector(g, n, "ground_truth_predictions")
    h = check_vector(teacher_predictions, n, "teacher_predictions")
    r = check_vector(reference, n, "reference")
    gap = g - h
    denom = float(gap @ gap)
    # NOTE: a relative threshold, since g and h can agree to rounding (e.g. lam tiny)
    # and then the ratio below is noise divided by noise.
    if denom <= 1e-14 * max(float(g @ g), float(h @ h)):
        return 1.0
    alpha = float(gap @ (r - h)) / denom
    return min(max(alpha, 0.0), 1.0) if clip else alpha


def optimal_alpha_step(kernel, targets, previous_predictions, lam, reference, *,
                       kernel_eval=None, clip=True):
    """The optimal alpha for the next step of a chain (Algorithm 1 of Borup & Andersen).

    Fits y and the previous step's training predictions once each and solves the
    one-dimensional least-squares problem of `optimal_alpha`; by linearity this is exact.

    Args:
      kernel: (n, n) training Gram matrix.
      targets: (n,) ground-truth targets y.
      previous_predictions: (n,) step t-1 predictions at the training points.
      lam: positive ridge strength.
      reference: (n,) targets at the training points, or (m,) targets at held-out points.
      kernel_eval: None to score at the training points, or the (m, n) cross-kernel
        k(X_val, X) to score at held-out points.
      clip: restrict alpha to [0, 1].

    Returns:
      The optimal alpha as a float.
    """
    kernel = check_kernel(kernel)
    n = kernel.shape[0]
    lam = check_lam(lam)
    targets = check_vector(targets, n, "targets")
    previous = check_vector(previous_predictions, n, "previous_predictions")
    if kernel_eval is None:
        kernel_eval = kernel
    kernel_eval = np.asarray(kernel_eval, dtype=float)
    if kernel_eval.ndim != 2 or kernel_eval.shape[1] != n:
        raise ValueError(f"kernel_eval must have shape (m, {n}), got {kernel_eval.shape}")
    reference = check_vector(reference, kernel_eval.shape[0], "reference")
    g = kernel_eval @ kernel_ridge_fit(kernel, targets, lam)
    h = kernel_eval @ kernel_ridge_fit(kernel, previous, lam)
    return optimal_alpha(g, h, reference, clip=clip)


def self_distill_optimal(kernel, targets, lam, steps, reference, *, kernel_eval=None,
                         clip=True):
    """A chain of T = `steps` steps, each with its greedily optimal alpha.

    Each alpha_t minimises the step-t error against `reference` given the chain so far
    (see `optimal_alpha_step` for the arguments); it does not look ahead.

    Returns:
      A `DistillChain`; its `alphas` are the chosen weights.
    """
    kernel = check_kernel(kernel)
    lam = check_lam(lam)
    targets = check_vector(targets, kernel.shape[0], "targets")
    check_steps(steps)
    coefs = [kernel_ridge_fit(kernel, targets, lam)]
    predictions = [kernel @ coefs[0]]
    alphas = []
    for _ in range(steps):
        alpha = optimal_alpha_step(kernel, targets, predictions[-1], lam, reference,
                                   kernel_eval=kernel_eval, clip=clip)
        mixed = alpha * targets + (1.0 - alpha) * predictions[-1]
        alphas.append(alpha)
        coefs.append(kernel_ridge_fit(kernel, mixed, lam))
        predictions.append(kernel @ coefs[-1])
    return DistillChain(np.asarray(alphas, dtype=float), np.stack(coefs), np.stack(predictions))
