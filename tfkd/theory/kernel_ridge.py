"""Kernel ridge regression: RBF kernel, fit, predict and the eigen-view of the fit.

Convention used throughout `tfkd.theory` (the one scikit-learn's `KernelRidge` uses):
the fit to targets z on training inputs X with kernel matrix K = k(X, X) minimises

    ||z - K c||^2 + lam * c^T K c,

whose dual coefficients are c = (K + lam I)^-1 z. The prediction at inputs X' is
k(X', X) c, so the training-point predictions are K (K + lam I)^-1 z. There is no
factor n in front of lam: halving the data at a fixed lam doubles the relative
strength of the penalty.

With the eigendecomposition K = V diag(d) V^T the training-point predictions are
V diag(d / (d + lam)) V^T z: every eigen-direction of the targets is multiplied by its
shrink factor s_i = d_i / (d_i + lam), which lies in [0, 1).
"""

import math

import numpy as np


def check_lam(lam):
    """Returns lam as a float, or raises ValueError if it is not a finite positive number."""
    try:
        value = float(lam)
    except (TypeError, ValueError):
        raise ValueError(f"lam must be a positive number, got {lam!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"lam must be a positive finite number, got {lam!r}")
    return value


def check_kernel(kernel):
    """Returns kernel as a float array, or raises ValueError if it is not square and symmetric."""
    kernel = np.asarray(kernel, dtype=float)
    if kernel.ndim != 2 or kernel.shape[0] != kernel.shape[1]:
        raise ValueError(f"kernel must be a square (n, n) matrix, got shape {kernel.shape}")
    if not np.all(np.isfinite(kernel)):
        raise ValueError("kernel has non-finite entries")
    scale = max(1.0, float(np.max(np.abs(kernel), initial=0.0)))
    if not np.allclose(kernel, kernel.T, rtol=0.0, atol=1e-10 * scale):
        raise ValueError("kernel must be symmetric (a Gram matrix k(X, X))")
    return kernel


def check_vector(values, n, name):
    """Returns values as a float vector of length n, or raises ValueError naming the mismatch."""
    values = np.asarray(values, dtype=float)
    if values.ndim != 1:
        raise ValueError(f"{name} must be a vector, got shape {values.shape}")
    if values.shape[0] != n:
        raise ValueError(f"{name} has length {values.shape[0]}, expected {n}")
    if not np.all(np.isfinite(values)):
        raise ValueError(f"{name} has non-finite entries")
    return values


def rbf_kernel(x1, x2=None, *, length_scale=1.0):
    """RBF (Gaussian) kernel matrix exp(-||a - b||^2 / (2 * length_scale^2)).

    Args:
      x1: inputs of shape (n,) for 1-D data, or (n, dims).
      x2: inputs of shape (m,) or (m, dims); defaults to x1, giving the (n, n) Gram matrix.
      length_scale: positive width of the kernel.

    Returns:
      The (n, m) matrix k(x1[i], x2[j]).
    """
    if not (isinstance(length_scale, (int, float)) and math.isfinite(length_scale)
            and length_scale > 0):
        raise ValueError(f"length_scale must be a positive finite number, got {length_scale!r}")
    a = _as_points(x1, "x1")
    b = a if x2 is None else _as_points(x2, "x2")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"x1 has {a.shape[1]} features but x2 has {b.shape[1]}")
    # NOTE: the expanded form |a|^2 + |b|^2 - 2ab can dip below zero by rounding;
    # clip so that exp never exceeds 1 and the Gram matrix keeps a unit diagonal.
    sq = np.sum(a**2, 1)[:, None] + np.sum(b**2, 1)[None, :] - 2.0 * a @ b.T
    kernel = np.exp(-np.maximum(sq, 0.0) / (2.0 * length_scale**2))
    if x2 is None:
        kernel = 0.5 * (kernel + kernel.T)
    return kernel


def _as_points(x, name):
    x = np.asarray(x, dtype=float)
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2:
        raise ValueError(f"{name} must have shape (n,) or (n, dims), got {x.shape}")
    return x


def kernel_ridge_fit(kernel, targets, lam):
    """Dual coefficients c = (K + lam I)^-1 targets of the kernel ridge fit.

    Args:
      kernel: the (n, n) training Gram matrix K.
      targets: the (n,) regression targets.
      lam: positive regularisation strength (no factor n; see the module docstring).

    Returns:
      The (n,) dual coefficients; predict with `kernel_ridge_predict`.
    """
    kernel = check_kernel(kernel)
    lam = check_lam(lam)
    targets = check_vector(targets, kernel.shape[0], "targets")
    # NOTE: K + lam I is symmetric positive definite, so a direct solve is stable
    # even when K itself is numerically singular, as RBF Gram matrices usually are.
    return np.linalg.solve(kernel + lam * np.eye(kernel.shape[0]), targets)


def kernel_ridge_predict(kernel_cross, coefs):
    """Predictions k(X', X) c at new inputs X', from the (m, n) cross-kernel and coefficients.

    `coefs` may also be a stack of shape (steps, n); the result then has shape (steps, m).
    """
    kernel_cross = np.asarray(kernel_cross, dtype=float)
    coefs = np.asarray(coefs, dtype=float)
    if kernel_cross.ndim != 2 or kernel_cross.shape[1] != coefs.shape[-1]:
        raise ValueError(
            f"kernel_cross of shape {kernel_cross.shape} does not match coefs of shape "
            f"{coefs.shape}: expected (m, {coefs.shape[-1]})")
    return coefs @ kernel_cross.T


def kernel_eigen(kernel):
    """Eigenvalues d (descending, clipped at 0) and orthonormal eigenvectors V of K.

    Returns:
      (d, V) with d of shape (n,) and V of shape (n, n), columns matching d, K = V diag(d) V^T.
    """
    kernel = check_kernel(kernel)
    eigvals, eigvecs = np.linalg.eigh(kernel)
    # NOTE: a positive semi-definite K comes back with eigenvalues like -1e-16;
    # they are rounding noise, and a negative d would make d / (d + lam) negative.
    order = np.argsort(eigvals)[::-1]
    return np.maximum(eigvals[order], 0.0), eigvecs[:, order]


def shrink_factors(eigvals, lam):
    """Per-direction factors s_i = d_i / (d_i + lam) by which one ridge fit scales its targets."""
    lam = check_lam(lam)
    eigvals = np.asarray(eigvals, dtype=float)
    return eigvals / (eigvals + lam)
