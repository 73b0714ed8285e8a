"""Config: every setting of a tfkd run, validated once, frozen afterwards."""

import dataclasses
from typing import Optional

MODES = ("pipeline", "train", "ensemble", "distill", "self_distill", "joint", "tune", "analyze")
TUNERS = ("random", "bayesian", "hyperband")
TUNABLE = ("temperature", "alpha", "learning_rate", "hint_weight")
# What --tune_params searches when not set: the hint weight only exists with --hint_layer.
DEFAULT_TUNED = ("temperature", "alpha", "learning_rate")
OPTIMIZERS = ("adam", "adamw", "sgd")
LR_SCHEDULES = ("constant", "cosine", "step")
AUGMENTATIONS = ("none", "crop_flip", "jitter")
CHECKPOINTS = ("last", "best_val")


class ConfigError(ValueError):
    """A setting a user can fix; the CLI prints it as one line and exits with code 2."""


class TrainingError(RuntimeError):
    """A training run that failed (its loss diverged); the CLI prints it as one line and
    exits with code 1. Finished models stay in the workdir."""


def _choice(field, value, accepted):
    if value not in accepted:
        raise ConfigError(f"unknown {field} {value!r}; choose one of: {', '.join(accepted)}")


@dataclasses.dataclass(frozen=True)
class Config:
    mode: str = "pipeline"
    workdir: str = "runs/digits"
    teacher_dir: Optional[str] = None  # where distill/tune/analyze find the teachers; default: workdir
    dataset: str = "digits"
    data_dir: Optional[str] = None  # TFDS data; default $TFDS_DATA_DIR or ~/tensorflow_datasets
    val_size: float = 0.0  # 0: the dataset's default; (0, 1): a fraction; >= 1: examples
    image_size: int = 0  # TFDS images resized to image_size x image_size; 0: native size
    augment: str = "none"
    model: str = "cnn"
    num_models: int = 5
    seed: int = 0
    epochs: int = 30
    batch_size: int = 64
    optimizer: str = "adam"
    learning_rate: float = 3e-3
    momentum: float = 0.9  # sgd only
    nesterov: bool = True  # sgd only
    weight_decay: float = 0.0
    lr_schedule: str = "constant"
    lr_decay_epochs: tuple = ()  # step schedule: epochs after which the rate is multiplied
    lr_decay_factor: float = 0.1  # step schedule: by this
    warmup_epochs: int = 0
    checkpoint: str = "last"
    temperature: float = 4.0
    alpha: float = 0.1
    distillation_loss: str = "kl"
    teacher_average: str = "logits"
    # FitNets hint: "LAYER" (a layer of that name in the student and in the first teacher)
    # or "TEACHER_LAYER:STUDENT_LAYER"; "": no hint loss.
    hint_layer: str = ""
    hint_weight: float = 1.0
    self_distill_steps: int = 1
    # Per-step ground-truth weight of a self-distillation chain: "" (= alpha), one number,
    # a comma-separated list (one per step), or "optimal" (estimated at every step).
    self_distill_alpha: str = ""
    alpha_clip: bool = True  # "optimal": clip the estimate to [0, 1]
    teacher_cache: bool = True
    analysis_layer: str = ""  # analyze: Grad-CAM layer; "": the last convolutional layer
    epsilon: float = 0.03  # analyze: L-infinity budget, as a fraction of the data's range
    pgd_steps: int = 10
    analysis_examples: int = 500  # analyze: test examples used
    tuner: str = "random"
    max_trials: int = 10
    tune_params: tuple = DEFAULT_TUNED
    tune_temperature: tuple = (1.0, 20.0)
    tune_alpha: tuple = (0.0, 1.0)
    tune_learning_rate: tuple = (1e-4, 1e-2)
    tune_hint_weight: tuple = (0.1, 10.0)
    strategy: str = "auto"
    num_cpu_devices: int = 1
    jit_compile: bool = False
    precision: str = "float32"
    deterministic: bool = False
    overwrite: bool = False
    smoke: bool = False
    verbose: int = 0

    def __post_init__(self):
        # Deferred imports: the registries import TensorFlow, which --help does not need.
        from tfkd.data import DATASETS, dataset_names
        from tfkd.data.tfds_loader import is_tfds_name
        from tfkd.losses import DISTILLATION_LOSSES
        from tfkd.ensemble import AVERAGES
        from tfkd.models import MODELS
        from tfkd.runtime import PRECISIONS, STRATEGIES

        # " " means no hint, as "" does.
        object.__setattr__(self, "hint_layer", self.hint_layer.strip())
        _choice("mode", self.mode, MODES)
        if self.dataset not in DATASETS and not is_tfds_name(self.dataset):
            raise ConfigError(
                f"unknown dataset {self.dataset!r}; choose one of: {', '.join(dataset_names())}"
                ", or any other TensorFlow Datasets image-classification set")
        _choice("augment", self.augment, AUGMENTATIONS)
        _choice("model", self.model, sorted(MODELS))
        _choice("optimizer", self.optimizer, OPTIMIZERS)
        _choice("lr_schedule", self.lr_schedule, LR_SCHEDULES)
        _choice("checkpoint", self.checkpoint, CHECKPOINTS)
        _choice("distillation_loss", self.distillation_loss, sorted(DISTILLATION_LOSSES))
        _choice("teacher_average", self.teacher_average, AVERAGES)
        _choice("strategy", self.strategy, STRATEGIES)
        _choice("precision", self.precision, PRECISIONS)
        _choice("tuner", self.tuner, TUNERS)
        for name in self.tune_params:
            _choice("tune_params entry", name, TUNABLE)
        if not self.tune_params:
            raise ConfigError(f"tune_params must name at least one of: {', '.join(TUNABLE)}")
        if "hint_weight" in self.tune_params and not self.hint_layer:
            raise ConfigError("tune_params names hint_weight, but no hint loss is on; add "
                              "--hint_layer (e.g. --hint_layer=features)")
        for field, low, high in (("tune_temperature", 0.0, None), ("tune_alpha", 0.0, 1.0),
                                 ("tune_learning_rate", 0.0, None),
                                 ("tune_hint_weight", 0.0, None)):
            bounds = getattr(self, field)
            text = ",".join(map(str, bounds))
            if len(bounds) != 2 or not bounds[0] < bounds[1]:
                raise ConfigError(f"{field} must be two increasing numbers LOW,HIGH, got {text!r}")
            if bounds[0] < low or (field != "tune_alpha" and bounds[0] <= 0) or (
                    high is not None and bounds[1] > high):
                accepted = "within [0, 1]" if high else "> 0"
                raise ConfigError(f"{field} must be {accepted}, got {text!r}")
        for field in ("num_models", "epochs", "batch_size", "self_distill_steps",
                      "num_cpu_devices", "max_trials", "pgd_steps", "analysis_examples"):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{field} must be a whole number >= 1, got {value!r}")
        if not 0.0 <= self.alpha <= 1.0:
            raise ConfigError(f"alpha must be in [0, 1] (the ground-truth weight), got {self.alpha!r}")
        self.step_alphas()  # validates self_distill_alpha
        if not 0.0 < self.epsilon <= 1.0:
            raise ConfigError(f"epsilon must be in (0, 1] (a fraction of the data's range), "
                              f"got {self.epsilon!r}")
        self.hint()  # validates hint_layer and hint_weight
        if not self.temperature > 0:
            raise ConfigError(f"temperature must be > 0, got {self.temperature!r}")
        if not self.learning_rate > 0:
            raise ConfigError(f"learning_rate must be > 0, got {self.learning_rate!r}")
        if self.seed < 0:
            raise ConfigError(f"seed must be >= 0, got {self.seed!r}")
        if not 0.0 <= self.momentum < 1.0:
            raise ConfigError(f"momentum must be in [0, 1), got {self.momentum!r}")
        if not self.weight_decay >= 0:
            raise ConfigError(f"weight_decay must be >= 0, got {self.weight_decay!r}")
        if not 0.0 < self.lr_decay_factor <= 1.0:
            raise ConfigError(f"lr_decay_factor must be in (0, 1], got {self.lr_decay_factor!r}")
        epochs = self.lr_decay_epochs
        if any(isinstance(e, bool) or not isinstance(e, int) or e < 1 for e in epochs) or list(
                epochs) != sorted(set(epochs)):
            raise ConfigError(f"lr_decay_epochs must be increasing whole numbers >= 1, got "
                              f"{','.join(map(str, epochs))!r}")
        if self.lr_schedule == "step" and not epochs:
            raise ConfigError("lr_schedule 'step' needs --lr_decay_epochs (e.g. 150,180,210)")
        if epochs and self.lr_schedule != "step":
            raise ConfigError(f"lr_decay_epochs={','.join(map(str, epochs))!r} needs "
                              f"--lr_schedule=step, not {self.lr_schedule!r}")
        if isinstance(self.warmup_epochs, bool) or not isinstance(self.warmup_epochs, int) or (
                not 0 <= self.warmup_epochs < self.epochs):
            raise ConfigError(f"warmup_epochs must be a whole number in [0, epochs={self.epochs}),"
                              f" got {self.warmup_epochs!r}")
        if epochs and epochs[0] <= self.warmup_epochs:
            raise ConfigError(f"lr_decay_epochs={','.join(map(str, epochs))!r} must come after "
                              f"the {self.warmup_epochs} warm-up epochs")
        if not (self.val_size == 0 or 0 < self.val_size < 1 or (
                self.val_size >= 1 and float(self.val_size).is_integer())):
            raise ConfigError(f"val_size must be 0 (the dataset's default), a fraction in "
                              f"(0, 1) or a whole number of examples, got {self.val_size!r}")
        if self.image_size < 0:
            raise ConfigError(f"image_size must be >= 0 (0: native size), got {self.image_size!r}")
        if self.dataset in DATASETS and (self.data_dir or self.image_size):
            raise ConfigError(f"--data_dir and --image_size apply to TFDS datasets, not to the "
                              f"embedded {self.dataset!r}")
        if not self.workdir:
            raise ConfigError("workdir must not be empty")

    def hint(self):
        """The FitNets hint as a `tfkd.distiller.Hint`, or None without --hint_layer."""
        if not 0.0 <= self.hint_weight < float("inf"):
            raise ConfigError(f"hint_weight must be a finite number >= 0, got {self.hint_weight!r}")
        text = self.hint_layer.strip()
        if not text:
            return None
        parts = [p.strip() for p in text.split(":")]
        if len(parts) > 2 or not all(parts):
            raise ConfigError(f"hint_layer must be LAYER or TEACHER_LAYER:STUDENT_LAYER "
                              f"(layer names, e.g. features), got {text!r}")
        from tfkd.distiller import Hint

        return Hint(teacher_layer=parts[0], student_layer=parts[-1], weight=self.hint_weight)

    def step_alphas(self):
        """The ground-truth weight of each self-distillation step: floats, or "optimal"."""
        text = self.self_distill_alpha.strip()
        if not text:
            return [self.alpha] * self.self_distill_steps
        if text == "optimal":
            return ["optimal"] * self.self_distill_steps
        try:
            values = [float(v) for v in text.split(",")]
        except ValueError:
            raise ConfigError(f"self_distill_alpha must be 'optimal', a number or a "
                              f"comma-separated list of numbers in [0, 1], got {text!r}") from None
        if any(not 0.0 <= v <= 1.0 for v in values):
            raise ConfigError(f"self_distill_alpha values must be in [0, 1], got {text!r}")
        if len(values) == 1:
            return values * self.self_distill_steps
        if len(values) != self.self_distill_steps:
            raise ConfigError(f"self_distill_alpha={text!r} gives {len(values)} values for "
                              f"{self.self_distill_steps} self_distill_steps; give one per step")
        return values

    def shrunk(self):
        """The --smoke version of this config: the same recipe, in seconds."""
        if not self.smoke:
            return self
        steps = min(self.self_distill_steps, 2)
        alphas = self.self_distill_alpha
        if "," in alphas:  # a per-step list keeps its first steps
            alphas = ",".join(alphas.split(",")[:steps])
        return dataclasses.replace(
            self, epochs=1, num_models=min(self.num_models, 2),
            self_distill_steps=steps, self_distill_alpha=alphas, warmup_epochs=0,
            # A recipe's validation count (5,000 of CIFAR's 50,000) may exceed a smoke
            # dataset; the default fraction always fits.
            val_size=self.val_size if self.val_size < 1 else 0.0)

    def to_dict(self):
        return dataclasses.asdict(self)
