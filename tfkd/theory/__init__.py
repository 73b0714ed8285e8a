"""Theory of self-distillation in kernel ridge regression (Borup & Andersen, NeurIPS 2021).

Pure NumPy, so that it imports without TensorFlow. Ridge convention everywhere:
c = (K + lam I)^-1 z, predictions k(X', X) c (no factor n in front of lam).

- `kernel_ridge`: RBF kernel, fit, predict, eigendecomposition and shrink factors.
- `self_distill`: chains fit by refitting or in closed form, and their infinite-step limit.
- `optimal_alpha`: the per-step optimal ground-truth weight, in closed form.
"""

from tfkd.theory.kernel_ridge import (
    kernel_eigen, kernel_ridge_fit, kernel_ridge_predict, rbf_kernel, shrink_factors)
from tfkd.theory.optimal_alpha import optimal_alpha, optimal_alpha_step, self_distill_optimal
from tfkd.theory.self_distill import (
    DistillChain, alpha0_limit_direction, resolve_alphas, self_distill_closed_form,
    self_distill_iterative, self_distill_limit, step_multipliers)

__all__ = [
    "DistillChain",
    "alpha0_limit_direction",
    "kernel_eigen",
    "kernel_ridge_fit",
    "kernel_ridge_predict",
    "optimal_alpha",
    "optimal_alpha_step",
    "rbf_kernel",
    "resolve_alphas",
    "self_distill_closed_form",
    "self_distill_iterative",
    "self_distill_limit",
    "self_distill_optimal",
    "shrink_factors",
    "step_multipliers",
]
