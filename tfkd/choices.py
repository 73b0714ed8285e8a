"""The names behind the settings' choices, importable without TensorFlow.

Each table is the one list of its names: the module that implements them imports it from
here (and maps the names to what implements them, on first use), and the settings schema
(`tfkd.config`) reads it to validate a flag and to list the choices in `tfkd --help`, which
therefore answer in a fraction of a second instead of waiting for TensorFlow and Keras.
Lazy entries are "module:ATTRIBUTE" or a module name, resolved with `load`.
"""

import importlib

# --model: the module whose `register_model` decorators build each architecture; importing
# `tfkd.models` imports these modules and checks that each registers exactly its names.
MODELS = {
    "cnn": "tfkd.models.small",
    "mlp": "tfkd.models.small",
    "resnet18": "tfkd.models.resnet",
    "resnet50": "tfkd.models.resnet",
    "wrn": "tfkd.models.wrn",
    "wrn28_10": "tfkd.models.wrn",
    "wrn16_4": "tfkd.models.wrn",
    "wrn16_1": "tfkd.models.wrn",
    "patch_net": "tfkd.models.patchnet",
    "random_features": "tfkd.models.patchnet",
}
# --augment (tfkd.data.pipeline)
AUGMENTATIONS = ("none", "crop_flip", "jitter")
# --optimizer, --lr_schedule (tfkd.optim)
OPTIMIZERS = ("adam", "adamw", "sgd")
LR_SCHEDULES = ("constant", "cosine", "step")
# --checkpoint (tfkd.modes.fit): which weights a training run keeps, as the validation
# metric whose best epoch they come from (None: the last epoch's).
CHECKPOINTS = {"last": None, "best_val": "val_loss"}
# --distillation_loss: the modules of tfkd.terms (tfkd.terms.NAMES).
# --teacher_average (tfkd.ensemble)
AVERAGES = ("logits", "probabilities")
# --tuner (tfkd.modes.tune): keras-tuner's searches.
TUNERS = {
    "random": "keras_tuner:RandomSearch",
    "bayesian": "keras_tuner:BayesianOptimization",
    "hyperband": "keras_tuner:Hyperband",
}
# --tune_params (tfkd.modes.tune): what a search may vary, and the scale of each; the range
# of `name` is the setting tune_<name>, except the method's ("choice": among --tune_methods).
# A method's own setting (`setting(methods=...)`) is searched only in the trials that run
# its method: a method adding a searchable setting adds it here and its tune_<name> range.
SEARCHABLE = {"temperature": "log", "alpha": "linear", "learning_rate": "log",
              "hint_weight": "log", "distillation_loss": "choice", "dkd_alpha": "linear",
              "dkd_beta": "log"}


def load(target):
    """The object a "module:ATTRIBUTE" entry names (the module itself without ":")."""
    module, _, attribute = target.partition(":")
    loaded = importlib.import_module(module)
    return getattr(loaded, attribute) if attribute else loaded
