"""Config: the settings schema of a tfkd run, validated once, frozen afterwards.

Every setting is declared once, here, as a `Config` field whose metadata carries its help,
its group and its accepted values. Everything else is derived from that declaration:

- `tfkd.cli` generates the command-line flags (and `tfkd --help`, grouped by topic);
- which settings a trained model depends on (its identity, compared before a finished
  model is reused) follows from the groups (`identity_fields`): a new setting in the data
  or training group is part of every trained model's identity by construction;
- which settings a later run on the same workdir takes from the workdir's record when
  they are not given (`REMEMBERED`).

Choice lists are tables of names importable without TensorFlow: `tfkd.modes.MODES`,
`tfkd.runtime`'s, and `tfkd.choices` for those whose implementations need TensorFlow (the
models, augmentations, losses, tuners, ...), which import their names from there. The
schema names each as "module:ATTRIBUTE" and resolves it when validating or listing it, so
that `tfkd --help` and a refused setting answer without importing TensorFlow (a test holds
this: tests/test_startup.py).
"""

import dataclasses
import math
from typing import Optional


class ConfigError(ValueError):
    """A setting a user can fix; the CLI prints it as one line and exits with code 2."""


class TrainingError(RuntimeError):
    """A training run that failed (its loss diverged); the CLI prints it as one line and
    exits with code 1. Finished models stay in the workdir."""


# Groups in the order `tfkd --help` shows them: (title, scope). The scope says whose
# identity the group's settings are part of: every trained model's ("trained"), every
# model trained with teachers ("distilled"), models trained with a hint loss ("hinted"),
# a tuning search ("search"), or nobody's (None: they change where or how fast a run
# goes, or what a run does, not what a trained model is).
GROUPS = {
    "run": ("What to run and where", None),
    "data": ("Data", "trained"),
    "training": ("Training (every model)", "trained"),
    "distillation": ("Distillation (students of teachers)", "distilled"),
    "method": ("Distillation methods' own settings (--distillation_loss)", None),
    "hint": ("FitNets hint loss", "hinted"),
    "self_distillation": ("Self-distillation chains", None),
    "tune": ("Hyper-parameter search (--mode=tune)", "search"),
    "analyze": ("What the student inherits (--mode=analyze)", None),
    "runtime": ("Devices and run-time", None),
}
# Settings a run on an existing workdir takes from the workdir's record when the command
# line (or a flagfile) does not give them: what the workdir was made with is what a user
# means. Runtime settings describe this machine and this invocation, not the experiment.
REMEMBERED_GROUPS = ("data", "training", "distillation", "method", "hint", "self_distillation",
                     "tune", "analyze")

MAX_SEED = 2**31 - 1  # model seeds derive from it by adding small offsets; Keras takes < 2**32


# --- per-value rules: each a function (value) -> None, or the phrase of what is accepted ---

def whole(low=1, high=None):
    def rule(value):
        if low <= value and (high is None or value <= high):
            return None
        return (f"a whole number >= {low}" if high is None
                else f"a whole number in [{low}, {high}]")
    return rule


def number(low=None, high=None, *, low_open=False, high_open=False):
    """A finite number in the interval; open ends exclude the bound."""
    def rule(value):
        if not math.isfinite(value):
            return f"a finite number{_interval(low, high, low_open, high_open)}"
        if low is not None and (value < low or (low_open and value == low)):
            return f"a number{_interval(low, high, low_open, high_open)}"
        if high is not None and (value > high or (high_open and value == high)):
            return f"a number{_interval(low, high, low_open, high_open)}"
        return None
    return rule


def _interval(low, high, low_open, high_open):
    if low is not None and high is not None:
        return f" in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
    if low is not None:
        return f" {'>' if low_open else '>='} {low:g}"
    if high is not None:
        return f" {'<' if high_open else '<='} {high:g}"
    return ""


def search_range(low=0.0, high=None):
    """LOW,HIGH of a searched hyper-parameter: two increasing finite numbers within bounds
    (low itself excluded: log-scaled ranges cannot start at 0 -- except for alpha)."""
    def rule(bounds):
        inside = number(low, high, low_open=high is None)
        if len(bounds) != 2 or not bounds[0] < bounds[1] or any(map(inside, bounds)):
            where = f"within [{low:g}, {high:g}]" if high is not None else f"> {low:g}"
            return f"two increasing finite numbers LOW,HIGH {where}"
        return None
    return rule


def increasing(low=1):
    def rule(values):
        if all(v >= low for v in values) and list(values) == sorted(set(values)):
            return None
        return f"increasing whole numbers >= {low}"
    return rule


def between(value, low, high):
    """The phrase of what is wrong with low < value < high, or None; each a (name, value)
    pair, so that a class names its arguments and the command line its settings."""
    (name, v), (low_name, lo), (high_name, hi) = value, low, high
    if not lo < hi:
        return f"{low_name}={lo:g} must be below {high_name}={hi:g}"
    if not lo < v < hi:
        return f"{name}={v:g} must lie strictly between {low_name}={lo:g} and {high_name}={hi:g}"
    return None


def val_size_rule(value):
    if value == 0:
        return None  # the dataset's default
    from tfkd.data.registry import val_size_problem

    problem = val_size_problem(value)
    return f"0 (the dataset's default), {problem}" if problem else None


def setting(default, group, help, *, choices=None, rule=None, item=None, remember=None,
            identity=True, methods=()):
    """A Config field. `choices`: the accepted values, a tuple or "module:ATTRIBUTE" naming
    the registry that owns them; `rule`: a per-value check (see above); `item`: the element
    type of a comma-separated list; `remember`: overrides the group's REMEMBERED_GROUPS;
    `identity=False` leaves a setting of an identity group out of that identity; `methods`:
    the distillation methods (--distillation_loss values) whose setting it is."""
    if group not in GROUPS:
        raise ValueError(f"unknown settings group {group!r}")
    metadata = {"group": group, "help": help, "choices": choices, "rule": rule, "item": item,
                "remember": group in REMEMBERED_GROUPS if remember is None else remember,
                "identity": identity, "methods": tuple(methods)}
    return dataclasses.field(default=default, metadata=metadata)


@dataclasses.dataclass(frozen=True)
class Config:
    # --- run -----------------------------------------------------------------------------
    mode: str = setting(
        "pipeline", "run", "What to run. pipeline = train, ensemble, distill, self_distill in "
        "order, on one workdir.", choices="tfkd.modes:MODES", remember=False)
    workdir: str = setting(
        "runs/digits", "run", "Directory for models, metrics, TensorBoard logs and the results "
        "table. It records what it holds: re-running reuses finished models, and settings not "
        "given on the command line default to the ones it was made with.", remember=False)
    teacher_dir: Optional[str] = setting(
        None, "run", "Where distill, tune and analyze find their teachers: another workdir "
        "(its members), or a folder of plain .keras models. Default: --workdir.",
        remember=True)
    num_models: int = setting(
        5, "run", "Ensemble members (seeds seed..seed+N-1). Modes that use members default "
        "to the number the workdir (or --teacher_dir) holds.", rule=whole(1, 10_000),
        remember=True)
    seed: int = setting(
        0, "run", "First seed; every model's seed derives from it (member i: seed+i, the "
        "distilled student: seed+N; a --mode=tune search: seed+1).",
        rule=whole(0, MAX_SEED - 100_000), remember=True)
    overwrite: bool = setting(
        False, "run", "Retrain models in --workdir that were trained with other settings "
        "(without it, such a workdir is refused).", remember=False)
    allow_chance: bool = setting(
        False, "run", "Keep a model whose validation accuracy after training is no better "
        "than always predicting the most common class. Without it such a model has learned "
        "nothing: the run stops (exit code 1) and the model is not saved as finished. "
        "--smoke runs are not checked.", remember=False)
    max_fits: int = setting(
        200, "run", "Refuse a run that plans more model fits than this (--num_models=1000 "
        "by a slip is days of work); the plan is printed at start. Raise it to go ahead.",
        rule=whole(1), remember=False)
    smoke: bool = setting(
        False, "training", "Shrink any recipe to seconds: 1 epoch, <= 2 members and steps, at "
        "most 4 batches (256 examples) and the smallest network of the model's family; for "
        "tests.")
    verbose: int = setting(
        0, "run", "Progress while a model trains: 0 = tfkd's line per epoch (loss, "
        "validation loss and accuracy, seconds); 1 = Keras's progress bars; 2 = Keras's line "
        "per epoch. Each finished model gets one line in any case.", choices=(0, 1, 2),
        remember=False)

    # --- data ----------------------------------------------------------------------------
    dataset: str = setting(
        "digits", "data", "Dataset: digits, mnist1d or multiview (no download needed); "
        "keras:NAME (keras.datasets: mnist, fashion_mnist, cifar10, cifar100); folder:PATH "
        "(one sub-folder of images per class); npz:PATH (x_train, y_train, x_test, y_test); "
        "or a TensorFlow Datasets image-classification set by name (cifar10, svhn_cropped, "
        "...). See docs/data.md.")
    val_size: float = setting(
        0.0, "data", "Validation examples carved from the training split: a fraction in "
        "(0, 1) or a count (5000 gives CIFAR's 45k / 5k). 0: the dataset's default (10% for "
        "TFDS sets).", rule=val_size_rule)
    train_size: int = setting(
        0, "data", "Train on N examples of the training split, a sample stratified by class "
        "(the same in every run), after the validation examples are carved from it "
        "(validation and test stay whole); 0: all.",
        rule=whole(0))
    input_scaling: str = setting(
        "auto", "data", "How images are prepared: auto (the source's own: scaled to [0, 1] and "
        "standardised per channel with the training split's statistics), standardise, unit "
        "([0, 1] only: for teachers trained on such inputs) or none (as stored). For TFDS, "
        "keras:, folder: and npz: data.", choices="tfkd.data.arrays:INPUT_SCALINGS")
    image_size: int = setting(
        0, "data", "Resize images to N x N (TFDS, keras:, folder:, npz: sources; for sets "
        "whose images vary in size). 0: native size.", rule=whole(0, 4096))
    augment: str = setting(
        "none", "data", "Training-batch augmentation. crop_flip: 4-pixel pad, random crop, "
        "horizontal flip (the standard CIFAR one); jitter: Ojha et al.'s colour jitter "
        "(brightness, contrast; saturation, hue in colour). The teachers' outputs on the "
        "augmented views are cached like any others (--teacher_cache).",
        choices="tfkd.choices:AUGMENTATIONS")
    data_seed: int = setting(
        -1, "data", "Seed of the augmented views (with --augment). -1: each model's own seed, "
        "so every model sees its own views. N >= 0: example i's view in epoch e depends only "
        "on (N, e, i), so every model trained on this data sees the same views and the "
        "teachers' outputs on them are computed once for all their students.",
        rule=whole(-1, MAX_SEED))

    # --- training ------------------------------------------------------------------------
    model: str = setting("cnn", "training", "Model architecture.",
                         choices="tfkd.choices:MODELS")
    epochs: int = setting(30, "training", "Training epochs per model.",
                          rule=whole(1, 1_000_000))
    batch_size: int = setting(64, "training", "Global batch size (split over replicas).",
                              rule=whole(1, 2**31 - 1))
    optimizer: str = setting(
        "adam", "training", "Optimiser: adam, adamw (Adam with decoupled weight decay) or sgd "
        "(with --momentum).", choices="tfkd.choices:OPTIMIZERS")
    learning_rate: float = setting(3e-3, "training", "(Peak) learning rate.",
                                   rule=number(0, low_open=True))
    momentum: float = setting(0.9, "training", "SGD momentum.",
                              rule=number(0, 1, high_open=True))
    nesterov: bool = setting(True, "training", "SGD with Nesterov momentum.")
    weight_decay: float = setting(
        0.0, "training", "Weight decay. sgd and adam: an L2 penalty whose gradient is "
        "weight_decay * w on every trainable weight (PyTorch's weight_decay); adamw: "
        "decoupled decay.", rule=number(0))
    lr_schedule: str = setting(
        "constant", "training", "constant; cosine: decay to 0 over the run's epochs; step: "
        "multiply by --lr_decay_factor after each of --lr_decay_epochs.",
        choices="tfkd.choices:LR_SCHEDULES")
    lr_decay_epochs: tuple = setting(
        (), "training", "Step schedule: comma-separated epochs, e.g. 150,180,210.", item=int,
        rule=increasing(1))
    lr_decay_factor: float = setting(0.1, "training",
                                     "Step schedule: factor applied at each decay epoch.",
                                     rule=number(0, 1, low_open=True))
    warmup_epochs: int = setting(
        0, "training", "Linear warm-up from 0 to --learning_rate over this many epochs, then "
        "the schedule.", rule=whole(0))
    checkpoint: str = setting(
        "last", "training", "Which weights a training run keeps: the last epoch's, or the "
        "epoch with the lowest validation loss.", choices="tfkd.choices:CHECKPOINTS")
    precision: str = setting("float32", "training", "Keras dtype policy for every model.",
                             choices="tfkd.runtime:PRECISIONS")

    # --- distillation --------------------------------------------------------------------
    temperature: float = setting(
        4.0, "distillation", "Distillation temperature T > 0 (soft targets "
        "softmax(logits / T)).", rule=number(0, low_open=True))
    alpha: float = setting(
        0.1, "distillation", "Ground-truth weight in [0, 1] when distilling: loss = alpha * "
        "CE + (1 - alpha) * distillation loss. Members always train with alpha = 1.",
        rule=number(0, 1))
    distillation_loss: str = setting(
        "kl", "distillation", "kl (soft-target KL, T^2-scaled) or probability_mse.",
        choices="tfkd.terms:NAMES")
    teacher_average: str = setting("logits", "distillation", "How members are averaged.",
                                   choices="tfkd.choices:AVERAGES")
    teacher_cache: bool = setting(
        True, "distillation", "Compute the teachers' logits once, keep them in "
        "<workdir>/cache (float16) and train students without any teacher forward pass. "
        "With --augment, the logits of every epoch's augmented views (exact: the views a "
        "student sees), reused by every student of those views (see --data_seed).")
    view_cache_max_gb: float = setting(
        4.0, "distillation", "Largest teacher cache of augmented views to keep, in GB "
        "(epochs x training examples x classes x 2 bytes, times the teachers for methods that "
        "read each teacher's logits); a larger one is not built and "
        "the teachers run online, which the run says.", rule=number(0), identity=False)
    view_cache_top_k: int = setting(
        0, "distillation", "Keep only each view's K largest teacher logits in that cache, and "
        "the mean of the others, which stand in for every other class: (2K+1)/classes of "
        "the storage, approximate (the other classes' share of the soft targets is "
        "underestimated). 0, or K >= classes: every logit, exact.", rule=whole(0))

    # --- method: each distillation method's own settings ------------------------------------
    # A method's class maps them to its arguments (tfkd.terms: `Term.settings`). They are
    # part of a distilled model's identity when their method is the run's and they differ
    # from their default (`identity_of`): the default is what earlier runs did.
    logit_standardization: bool = setting(
        False, "method", "Logit standardization (Sun et al., CVPR 2024) for kl, dkd and dist: "
        "z-score the teacher's and the student's logits per example before the temperature. "
        "The authors' results: T=2, alpha=0.1 and the method's weight 9 (--alpha=0.1 gives "
        "0.9; see docs/methods.md).", methods=("kl", "dkd", "dist"))
    dkd_alpha: float = setting(
        1.0, "method", "DKD (Zhao et al., CVPR 2022): weight of the target-class term TCKD.",
        rule=number(0, 1e6), methods=("dkd",))
    dkd_beta: float = setting(
        8.0, "method", "DKD: weight of the non-target-class term NCKD (the paper's CIFAR-100 "
        "values: 8, 2 for resnet56/110 teachers, 6 for WRN-40-2 and VGG13 pairs; 0.5 for "
        "ImageNet).", rule=number(0, 1e6), methods=("dkd",))
    dkd_warmup_epochs: int = setting(
        20, "method", "DKD: epochs over which its weight ramps linearly from 1/N to 1 "
        "(0: no warm-up).", rule=whole(0), methods=("dkd",))
    dist_beta: float = setting(
        1.0, "method", "DIST (Huang et al., NeurIPS 2022): weight of the inter-class relation "
        "(per example).", rule=number(0, 1e6), methods=("dist",))
    dist_gamma: float = setting(
        1.0, "method", "DIST: weight of the intra-class relation (over each replica's batch).",
        rule=number(0, 1e6), methods=("dist",))
    nkd_gamma: float = setting(
        1.5, "method", "NKD (Yang et al., ICCV 2023): weight of the non-target term (the "
        "authors: 1.5 with T=1 on ImageNet, 3.5 with T=3 on CIFAR-100).", rule=number(0, 1e6),
        methods=("nkd",))

    ctkd_min_temperature: float = setting(
        1.0, "method", "CTKD (Li et al., AAAI 2023): lowest value of its learned temperature "
        "T = min + (max - min) * sigmoid(theta), which starts at --temperature (the authors' "
        "code: T in [1, 21] from theta = 1, i.e. --temperature=15.62).",
        rule=number(0, 1e4, low_open=True), methods=("ctkd",))
    ctkd_max_temperature: float = setting(
        21.0, "method", "CTKD: highest value of its learned temperature.",
        rule=number(0, 1e4, low_open=True), methods=("ctkd",))
    ctkd_lambda_max: float = setting(
        1.0, "method", "CTKD: weight of the gradient reversal through which the temperature "
        "ascends the KD loss the student descends (0: the temperature stays).",
        rule=number(0, 1e6), methods=("ctkd",))
    ctkd_lambda_epochs: int = setting(
        10, "method", "CTKD: epochs over which that weight rises along a cosine from 0 to "
        "--ctkd_lambda_max, reached in the N-th epoch as in the authors' code (0: "
        "--ctkd_lambda_max from the start).", rule=whole(0),
        methods=("ctkd",))

    # --- hint ----------------------------------------------------------------------------
    hint_layer: str = setting(
        "", "hint", "FitNets hint loss for distill, self_distill and tune: a layer name found "
        "in the student and the first teacher (e.g. features), or TEACHER_LAYER:STUDENT_LAYER; "
        "the student's layer is regressed onto the teacher's through a learned 1x1 adapter. "
        "Empty: no hint.")
    hint_weight: float = setting(1.0, "hint", "Weight of the hint loss (with --hint_layer).",
                                 rule=number(0))

    # --- self-distillation ---------------------------------------------------------------
    self_distill_steps: int = setting(
        1, "self_distillation", "Generations per self-distillation chain (one chain per "
        "member).", rule=whole(1, 1000))
    self_distill_alpha: str = setting(
        "", "self_distillation", "Ground-truth weight of each self-distillation step: empty "
        "(use --alpha), a number, a comma-separated list with one value per step, or "
        "'optimal': before each step, a probe trained with alpha = 0 and the chain's "
        "ground-truth model give the alpha minimising the squared error of their mixture "
        "against the validation labels (Borup & Andersen); costs one more fit per step.")
    alpha_clip: bool = setting(
        True, "self_distillation", "With --self_distill_alpha=optimal, clip the estimate to "
        "[0, 1]; --noalpha_clip keeps values outside (the optimum can leave [0, 1] when the "
        "chain over- or under-regularises).")

    # --- tune ----------------------------------------------------------------------------
    tuner: str = setting(
        "random", "tune", "keras-tuner's RandomSearch, BayesianOptimization or Hyperband "
        "(which sets its own trial count from --epochs).", choices="tfkd.choices:TUNERS")
    max_trials: int = setting(
        10, "tune", "Trials to run; more trials later continue the same search.",
        rule=whole(1, 100_000), identity=False)  # so that more trials continue a search
    tune_params: tuple = setting(
        ("temperature", "alpha", "learning_rate"), "tune", "What to search; the rest keep "
        "their flag values. distillation_loss searches the method among --tune_methods; a "
        "method's own setting (dkd_beta, ...) is searched in the trials that run its method.",
        item=str, choices="tfkd.choices:SEARCHABLE")
    tune_methods: tuple = setting(
        ("kl", "dkd"), "tune", "The methods a search chooses among when --tune_params names "
        "distillation_loss.", item=str, choices="tfkd.terms:NAMES")
    tune_temperature: tuple = setting((1.0, 20.0), "tune",
                                      "LOW,HIGH of the temperature (log scale).", item=float,
                                      rule=search_range())
    tune_alpha: tuple = setting((0.0, 1.0), "tune", "LOW,HIGH of alpha, within [0, 1].",
                                item=float, rule=search_range(0.0, 1.0))
    tune_learning_rate: tuple = setting((1e-4, 1e-2), "tune",
                                        "LOW,HIGH of the learning rate (log scale).",
                                        item=float, rule=search_range())
    tune_hint_weight: tuple = setting(
        (0.1, 10.0), "tune", "LOW,HIGH of the hint weight (log scale; searched when "
        "--tune_params names hint_weight).", item=float, rule=search_range())
    tune_dkd_alpha: tuple = setting(
        (0.5, 2.0), "tune", "LOW,HIGH of dkd_alpha, within [0, 1e6] (searched in the trials "
        "that run dkd).", item=float, rule=search_range(0.0, 1e6))
    tune_dkd_beta: tuple = setting(
        (0.5, 10.0), "tune", "LOW,HIGH of dkd_beta (log scale; searched in the trials that run "
        "dkd).", item=float, rule=search_range())

    # --- analyze -------------------------------------------------------------------------
    analysis_layer: str = setting(
        "", "analyze", "The layer Grad-CAM weighs (default: the last convolutional layer).")
    epsilon: float = setting(
        0.03, "analyze", "L-infinity budget of FGSM / PGD, as a fraction of the data's value "
        "range (0.03 of [0, 1] is about 8/255).", rule=number(0, 1, low_open=True))
    pgd_steps: int = setting(10, "analyze", "PGD steps.", rule=whole(1, 100_000))
    analysis_examples: int = setting(500, "analyze", "How many test examples the analysis "
                                     "uses: a sample stratified by class, the same in every "
                                     "run.", rule=whole(1))
    analysis_students: int = setting(
        1, "analyze", "Distilled students the analysis compares, each against an independent "
        "student of its own seed (labels only), seeds seed+N, seed+N+1, ...: the first is "
        "--mode=distill's distilled student, the others (distilled_S) and the independent "
        "students (independent, independent_S) are trained if missing. With 2 or more, "
        "each property is given as mean ± std over the seeds with a paired t-test of "
        "distilled against independent.", rule=whole(1, 100))

    # --- runtime -------------------------------------------------------------------------
    data_dir: Optional[str] = setting(
        None, "runtime", "Where TFDS keeps prepared datasets. Default: $TFDS_DATA_DIR or "
        "~/tensorflow_datasets.")
    strategy: str = setting(
        "auto", "runtime", "auto: MirroredStrategy over all local GPUs when there are several, "
        "one device otherwise. multi_worker: MultiWorkerMirroredStrategy from TF_CONFIG. "
        "--batch_size is the global batch, split over replicas.",
        choices="tfkd.runtime:STRATEGIES")
    cluster_timeout: float = setting(
        300.0, "runtime", "Seconds a worker of --strategy=multi_worker waits for the other "
        "tasks of its cluster to start; then it gives up with one line (exit code 2).",
        rule=number(0, 86400, low_open=True))
    num_cpu_devices: int = setting(
        1, "runtime", "Split the CPU into this many logical devices (to try "
        "--strategy=mirrored without GPUs).", rule=whole(1, 256))
    jit_compile: bool = setting(
        False, "runtime", "Compile training steps with XLA (turned off, with a warning, where "
        "TensorFlow cannot: MirroredStrategy over several CPU devices).")
    deterministic: bool = setting(
        False, "runtime", "Deterministic TensorFlow kernels: reruns with the same seed give "
        "identical numbers, even on a busy machine.")

    def __post_init__(self):
        # " " means no hint, as "" does.
        object.__setattr__(self, "hint_layer", self.hint_layer.strip())
        for field in dataclasses.fields(self):
            object.__setattr__(self, field.name, _checked(field, getattr(self, field.name)))
        self._check_combinations()

    def _check_combinations(self):
        """The rules that relate two or more settings; each lives here once."""
        from tfkd.data import DatasetError, check_dataset_name

        try:
            check_dataset_name(self.dataset, data_dir=self.data_dir,
                               image_size=self.image_size or None,
                               input_scaling=self.input_scaling)
        except DatasetError as e:
            raise ConfigError(str(e)) from None
        if not self.tune_params:
            raise ConfigError(f"tune_params must name at least one of: "
                              f"{', '.join(choices_of('tune_params'))}")
        if "hint_weight" in self.tune_params and not self.hint_layer:
            raise ConfigError("tune_params names hint_weight, but no hint loss is on; add "
                              "--hint_layer (e.g. --hint_layer=features)")
        self._check_searched_methods()
        self.step_alphas()  # validates self_distill_alpha against self_distill_steps
        self.hint()  # validates hint_layer
        epochs = self.lr_decay_epochs
        if self.lr_schedule == "step" and not epochs:
            raise ConfigError("lr_schedule 'step' needs --lr_decay_epochs (e.g. 150,180,210)")
        if epochs and self.lr_schedule != "step":
            raise ConfigError(f"lr_decay_epochs={_text(epochs)!r} needs --lr_schedule=step, "
                              f"not {self.lr_schedule!r}")
        if self.warmup_epochs >= self.epochs:
            raise ConfigError(f"warmup_epochs must be a whole number in [0, epochs="
                              f"{self.epochs}), got {self.warmup_epochs!r}")
        if epochs and epochs[0] <= self.warmup_epochs:
            raise ConfigError(f"lr_decay_epochs={_text(epochs)!r} must come after the "
                              f"{self.warmup_epochs} warm-up epochs")
        self._check_ctkd()
        if not self.workdir:
            raise ConfigError("workdir must not be empty")
        from tfkd.modes import planned_fits

        fits = planned_fits(self)
        if fits > self.max_fits:
            raise ConfigError(
                f"--mode={self.mode} with these settings plans {fits:,} model fits of "
                f"{self.epochs} epochs each ({fits * self.epochs:,} epochs in all), more than "
                f"--max_fits={self.max_fits}; check --num_models and --self_distill_steps, or "
                f"pass --max_fits={fits} to go ahead")

    def searched_methods(self):
        """The methods a --mode=tune search runs: --tune_methods when it searches the
        method, the run's method otherwise."""
        if "distillation_loss" in self.tune_params:
            return self.tune_methods
        return (self.distillation_loss,)

    def run_methods(self):
        """The methods this run trains with: a search's (`searched_methods`) in --mode=tune,
        --distillation_loss otherwise."""
        return self.searched_methods() if self.mode == "tune" else (self.distillation_loss,)

    def _check_searched_methods(self):
        """A searched method setting needs a searched method that reads it."""
        if not self.tune_methods:
            raise ConfigError(f"tune_methods must name at least one of: "
                              f"{', '.join(choices_of('tune_methods'))}")
        for name in self.tune_params:
            owners = FIELDS[name].metadata["methods"]
            if owners and not set(owners) & set(self.searched_methods()):
                where = ("--tune_methods=" + ",".join(self.tune_methods)
                         if "distillation_loss" in self.tune_params
                         else f"--distillation_loss={self.distillation_loss}")
                raise ConfigError(
                    f"tune_params names {name}, a setting of {' or '.join(owners)}, but the "
                    f"search runs {where}; add {owners[0]} to the search (--distillation_loss="
                    f"{owners[0]}, or distillation_loss in --tune_params and {owners[0]} in "
                    "--tune_methods)")

    def _check_ctkd(self):
        """CTKD's learned temperature starts at --temperature (a search's at each trial's),
        strictly inside its range."""
        if self.distillation_loss != "ctkd":
            return
        low = ("ctkd_min_temperature", self.ctkd_min_temperature)
        high = ("ctkd_max_temperature", self.ctkd_max_temperature)
        problem = between(("temperature", self.temperature), low, high)
        if self.mode == "tune" and "temperature" in self.tune_params:
            # The searched temperatures, not --temperature, are the ones used.
            lo, hi = self.tune_temperature
            problem = between(("tune_temperature", lo), low, high) or between(
                ("tune_temperature", hi), low, high)
            if problem and low[1] < high[1]:
                problem = (f"tune_temperature={_text(self.tune_temperature)!r} must lie "
                           f"strictly between ctkd_min_temperature={low[1]:g} and "
                           f"ctkd_max_temperature={high[1]:g}")
        if problem:
            raise ConfigError(f"{problem} for --distillation_loss=ctkd (its learned temperature "
                              "starts there and reaches neither bound)")

    def hint(self):
        """The FitNets hint as a `tfkd.distiller.Hint`, or None without --hint_layer."""
        if not self.hint_layer:
            return None
        parts = [p.strip() for p in self.hint_layer.split(":")]
        if len(parts) > 2 or not all(parts):
            raise ConfigError(f"hint_layer must be LAYER or TEACHER_LAYER:STUDENT_LAYER "
                              f"(layer names, e.g. features), got {self.hint_layer!r}")
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
        # The data's sizes (val_size, train_size) stay: they are checked against the whole
        # data, which --smoke only cuts afterwards, so a smoke run refuses what the real
        # run would.
        return dataclasses.replace(
            self, epochs=1, num_models=min(self.num_models, 2),
            self_distill_steps=steps, self_distill_alpha=alphas, warmup_epochs=0)

    def to_dict(self):
        return dataclasses.asdict(self)


# --- the schema, read ------------------------------------------------------------------------

FIELDS = {f.name: f for f in dataclasses.fields(Config)}


def fields_in(*groups):
    """The names of the settings in `groups`, in declaration order."""
    return tuple(name for name, f in FIELDS.items() if f.metadata["group"] in groups)


def identity_of(config, distilled):
    """The settings that make a model trained under `config` what it is: every trained
    model's; for a model trained with teachers (`distilled`) also the distillation settings,
    the hint's when there is one, and the run's method's own settings that differ from their
    default (`setting(methods=...)`)."""
    if not distilled:
        return identity_fields("trained")
    scopes = ("trained", "distilled", *(("hinted",) if config.hint_layer else ()))
    own = tuple(name for name, f in FIELDS.items()
                if config.distillation_loss in f.metadata["methods"]
                and getattr(config, name) != f.default)
    return identity_fields(*scopes) + own


def identity_fields(*scopes):
    """The settings whose values make a thing of `scopes` what it is: "trained" (every
    trained model), "distilled" (a model trained with teachers), "hinted" (with a hint
    loss), "search" (what a tuning search adds to its students' identity)."""
    groups = [group for group, (_, scope) in GROUPS.items() if scope in scopes]
    return tuple(name for name in fields_in(*groups) if FIELDS[name].metadata["identity"])


REMEMBERED = tuple(name for name, f in FIELDS.items() if f.metadata["remember"])


def choices_of(name):
    """The accepted values of setting `name` (None: any value its rule accepts). A
    registry named "module:ATTRIBUTE" is imported now; a dict's keys are its choices."""
    choices = FIELDS[name].metadata["choices"]
    if isinstance(choices, str):
        from tfkd.choices import load

        choices = load(choices)
    if isinstance(choices, dict):
        choices = sorted(choices) if name == "model" else tuple(choices)
    return tuple(choices) if choices is not None else None


def _text(values):
    """A setting's value as a user typed it: a list comma-separated."""
    return ",".join(map(str, values)) if isinstance(values, (tuple, list)) else str(values)


def _kind(field):
    """The Python type of a setting's values (its elements' for a list)."""
    if field.metadata["item"] is not None:
        return field.metadata["item"]
    default = field.default
    return str if default is None else type(default)


def _checked(field, value):
    """`value` as the setting's type, or a ConfigError naming the setting, the value and
    what would be accepted."""
    name, meta, kind = field.name, field.metadata, _kind(field)
    if field.default is None and value in (None, ""):
        return None  # an optional path left empty
    values = tuple(value) if meta["item"] is not None else (value,)
    typed = []
    for v in values:
        if kind is bool and not isinstance(v, bool):
            raise ConfigError(f"{name} must be true or false, got {v!r}")
        if kind is int and (isinstance(v, bool) or not isinstance(v, int)):
            raise ConfigError(f"{name} must be a whole number, got {v!r}")
        if kind is float:
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise ConfigError(f"{name} must be a number, got {v!r}")
            v = float(v)
        if kind is str and not isinstance(v, str):
            raise ConfigError(f"{name} must be text, got {v!r}")
        typed.append(v)
    if meta["choices"] is not None:
        accepted = choices_of(name)
        for v in typed:
            if v not in accepted:
                what = f"{name} entry" if meta["item"] is not None else name
                raise ConfigError(f"unknown {what} {v!r}; choose one of: "
                                  f"{', '.join(map(str, accepted))}")
    value = tuple(typed) if meta["item"] is not None else typed[0]
    if meta["rule"] is not None:
        accepted = meta["rule"](value)
        if accepted:
            shown = repr(_text(value)) if meta["item"] is not None else repr(value)
            raise ConfigError(f"{name} must be {accepted}, got {shown}")
    return value
