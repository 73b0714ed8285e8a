"""tfkd: ensembles, knowledge distillation and self-distillation for Keras 3 / TensorFlow."""

__version__ = "0.1.0"

from tfkd.distiller import Distiller, Hint, with_teacher_logits  # noqa: E402,F401
from tfkd.ensemble import Ensemble  # noqa: E402,F401
from tfkd.losses import HintLoss, ProbabilityMSE, SoftTargetKL  # noqa: E402,F401
