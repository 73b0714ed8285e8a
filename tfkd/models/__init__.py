"""Model builders by name. Every model is a functional keras.Model that outputs logits, with
its penultimate layer named "features" and its last "logits".

Importing this package registers "cnn", "mlp", the CIFAR ResNets and WRNs, "patch_net" and
"random_features"; further builders join `MODELS` through `register_model`. `build_joint`
wraps any of them into k networks averaged and trained as one.
"""

from tfkd.models import small as _small  # noqa: F401  (registers its builders)
from tfkd.models import resnet as _resnet  # noqa: F401  (registers its builders)
from tfkd.models import wrn as _wrn  # noqa: F401  (registers its builders)
from tfkd.models import patchnet as _patchnet  # noqa: F401  (registers its builders)
from tfkd.models.joint import build_joint, joint_members  # noqa: F401  (public API)
from tfkd.models.registry import MODELS, build_model, input_problem, models_for, register_model

__all__ = ["MODELS", "build_model", "input_problem", "models_for", "register_model"]
