"""What a distilled student inherits from its teacher (Ojha et al., NeurIPS 2023).

Pure functions over Keras models and NumPy arrays, one property per module:
  inheritance  agreement, KL, calibration of a student against its teacher;
  gradcam      Grad-CAM maps and their similarity (localisation);
  adversarial  FGSM / PGD and teacher-to-student transfer (adversarial vulnerability);
  invariance   photometric jitter and prediction consistency (invariance);
  figures      PNG bar chart of a property table and a Grad-CAM grid;
  stats        counts with confidence intervals, mean ± std and paired tests over seeds.
"""

import importlib

# Loaded on first use, like `tfkd` itself: `figures` pulls in matplotlib and the rest
# TensorFlow, which a caller of one module need not pay for.
_EXPORTS = {
    "compare": "tfkd.analysis.inheritance",
    "property_table": "tfkd.analysis.inheritance",
    "find_last_conv_layer": "tfkd.analysis.gradcam",
    "feature_layer": "tfkd.analysis.gradcam",
    "grad_cam": "tfkd.analysis.gradcam",
    "map_similarity": "tfkd.analysis.gradcam",
    "mean_map_similarity": "tfkd.analysis.gradcam",
    "cross_entropy": "tfkd.analysis.adversarial",
    "fgsm": "tfkd.analysis.adversarial",
    "pgd": "tfkd.analysis.adversarial",
    "transfer": "tfkd.analysis.adversarial",
    "jitter": "tfkd.analysis.invariance",
    "consistency": "tfkd.analysis.invariance",
    "plot_property_table": "tfkd.analysis.figures",
    "plot_gradcam_grid": "tfkd.analysis.figures",
    "gradcam_figure": "tfkd.analysis.figures",
    "rate": "tfkd.analysis.stats",
    "mean_interval": "tfkd.analysis.stats",
    "wilson_interval": "tfkd.analysis.stats",
    "paired_mean_test": "tfkd.analysis.stats",
    "mcnemar_exact": "tfkd.analysis.stats",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'tfkd.analysis' has no attribute {name!r}")
