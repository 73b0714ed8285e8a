"""Config: every setting of a tfkd run, validated once, frozen afterwards."""

import dataclasses
from typing import Optional

MODES = ("pipeline", "train", "ensemble", "distill", "self_distill")
OPTIMIZERS = ("adam", "adamw", "sgd")
LR_SCHEDULES = ("cosine", "constant")
CHECKPOINTS = ("last", "best_val")


class ConfigError(ValueError):
    """A setting a user can fix; the CLI prints it as one line and exits with code 2."""


def _choice(field, value, accepted):
    if value not in accepted:
        raise ConfigError(f"unknown {field} {value!r}; choose one of: {', '.join(accepted)}")


@dataclasses.dataclass(frozen=True)
class Config:
    mode: str = "pipeline"
    workdir: str = "runs/digits"
    teacher_dir: Optional[str] = None  # where `distill` finds its teachers; default: workdir
    dataset: str = "digits"
    model: str = "cnn"
    num_models: int = 5
    seed: int = 0
    epochs: int = 30
    batch_size: int = 64
    optimizer: str = "adam"
    learning_rate: float = 3e-3
    lr_schedule: str = "constant"
    checkpoint: str = "last"
    temperature: float = 4.0
    alpha: float = 0.1
    distillation_loss: str = "kl"
    teacher_average: str = "logits"
    self_distill_steps: int = 1
    teacher_cache: bool = True
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
        from tfkd.data import DATASETS
        from tfkd.losses import DISTILLATION_LOSSES
        from tfkd.ensemble import AVERAGES
        from tfkd.models import MODELS
        from tfkd.runtime import PRECISIONS, STRATEGIES

        _choice("mode", self.mode, MODES)
        _choice("dataset", self.dataset, sorted(DATASETS))
        _choice("model", self.model, sorted(MODELS))
        _choice("optimizer", self.optimizer, OPTIMIZERS)
        _choice("lr_schedule", self.lr_schedule, LR_SCHEDULES)
        _choice("checkpoint", self.checkpoint, CHECKPOINTS)
        _choice("distillation_loss", self.distillation_loss, sorted(DISTILLATION_LOSSES))
        _choice("teacher_average", self.teacher_average, AVERAGES)
        _choice("strategy", self.strategy, STRATEGIES)
        _choice("precision", self.precision, PRECISIONS)
        for field in ("num_models", "epochs", "batch_size", "self_distill_steps",
                      "num_cpu_devices"):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{field} must be a whole number >= 1, got {value!r}")
        if not 0.0 <= self.alpha <= 1.0:
            raise ConfigError(f"alpha must be in [0, 1] (the ground-truth weight), got {self.alpha!r}")
        if not self.temperature > 0:
            raise ConfigError(f"temperature must be > 0, got {self.temperature!r}")
        if not self.learning_rate > 0:
            raise ConfigError(f"learning_rate must be > 0, got {self.learning_rate!r}")
        if self.seed < 0:
            raise ConfigError(f"seed must be >= 0, got {self.seed!r}")
        if not self.workdir:
            raise ConfigError("workdir must not be empty")

    def shrunk(self):
        """The --smoke version of this config: the same recipe, in seconds."""
        if not self.smoke:
            return self
        return dataclasses.replace(
            self, epochs=1, num_models=min(self.num_models, 2),
            self_distill_steps=min(self.self_distill_steps, 2))

    def to_dict(self):
        return dataclasses.asdict(self)
