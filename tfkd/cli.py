"""The tfkd command: the only module that defines and reads absl flags.

Flags in, a `Config` out, then one mode function does the work:

    tfkd                                   # the whole pipeline on digits
    tfkd --mode=train --num_models=3 --workdir=runs/x
    tfkd --flagfile=flags/digits_cnn.flags
"""

import argparse
import dataclasses
import os
import shutil
import sys
import tempfile

# Before TensorFlow loads: its C++ start-up chatter would bury the progress lines.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags, logging  # noqa: E402

from tfkd import runtime  # noqa: E402
from tfkd.config import (  # noqa: E402
    AUGMENTATIONS, CHECKPOINTS, LR_SCHEDULES, MODES, OPTIMIZERS, TUNABLE, TUNERS, Config,
    ConfigError, TrainingError)

FLAGS = flags.FLAGS
EXIT_USAGE = 2  # a setting to fix; nothing in the workdir changed
EXIT_FAILED = 1  # training failed (diverged); finished models are kept


def define_flags():
    # Field defaults, not Config(): validating a Config imports TensorFlow, --help must not.
    defaults = argparse.Namespace(**{f.name: f.default for f in dataclasses.fields(Config)})
    flags.DEFINE_enum("mode", defaults.mode, MODES,
                      "What to run. pipeline = train, ensemble, distill, self_distill in order.")
    flags.DEFINE_string("workdir", defaults.workdir,
                        "Directory for models, metrics, TensorBoard logs and the results table. "
                        "Re-running with the same workdir reuses finished models.")
    flags.DEFINE_string("teacher_dir", None,
                        "Workdir holding the trained members that --mode=distill, tune and "
                        "analyze use as teachers. Default: --workdir.")
    flags.DEFINE_string("dataset", defaults.dataset,
                        "Dataset: digits or mnist1d (embedded, no download), or a TensorFlow "
                        "Datasets image-classification set: cifar10, cifar100, mnist, "
                        "fashion_mnist, svhn_cropped, ...")
    flags.DEFINE_string("data_dir", defaults.data_dir,
                        "Where TFDS keeps prepared datasets. Default: $TFDS_DATA_DIR or "
                        "~/tensorflow_datasets.")
    flags.DEFINE_float("val_size", defaults.val_size,
                       "Validation examples carved from the training split: a fraction in "
                       "(0, 1) or a count (5000 gives CIFAR's 45k / 5k). 0: the dataset's "
                       "default (10% for TFDS sets).")
    flags.DEFINE_integer("image_size", defaults.image_size,
                         "Resize TFDS images to N x N (for sets whose images vary in size). "
                         "0: native size.")
    flags.DEFINE_enum("augment", defaults.augment, AUGMENTATIONS,
                      "Training-batch augmentation. crop_flip: 4-pixel pad, random crop, "
                      "horizontal flip (the standard CIFAR one); jitter: Ojha et al.'s colour "
                      "jitter (brightness, contrast; saturation, hue in colour). Teachers "
                      "then run online.")
    flags.DEFINE_string("model", defaults.model,
                        "Model architecture: cnn, mlp, wrn28_10, wrn16_4, wrn16_1, resnet18, "
                        "resnet50.")
    flags.DEFINE_integer("num_models", defaults.num_models,
                         "Number of independently trained members (seeds seed..seed+N-1).")
    flags.DEFINE_integer("seed", defaults.seed, "First seed; every model's seed derives from it.")
    flags.DEFINE_integer("epochs", defaults.epochs, "Training epochs per model.")
    flags.DEFINE_integer("batch_size", defaults.batch_size, "Global batch size.")
    flags.DEFINE_enum("optimizer", defaults.optimizer, OPTIMIZERS, "Optimiser.")
    flags.DEFINE_float("learning_rate", defaults.learning_rate, "(Peak) learning rate.")
    flags.DEFINE_float("momentum", defaults.momentum, "SGD momentum.")
    flags.DEFINE_boolean("nesterov", defaults.nesterov, "SGD with Nesterov momentum.")
    flags.DEFINE_float("weight_decay", defaults.weight_decay,
                       "Weight decay. sgd and adam: an L2 penalty whose gradient is "
                       "weight_decay * w on every trainable weight (PyTorch's weight_decay); "
                       "adamw: decoupled decay.")
    flags.DEFINE_enum("lr_schedule", defaults.lr_schedule, LR_SCHEDULES,
                      "constant; cosine: decay to 0 over the run's epochs; step: multiply by "
                      "--lr_decay_factor after each of --lr_decay_epochs.")
    flags.DEFINE_list("lr_decay_epochs", list(defaults.lr_decay_epochs),
                      "Step schedule: comma-separated epochs, e.g. 150,180,210.")
    flags.DEFINE_float("lr_decay_factor", defaults.lr_decay_factor,
                       "Step schedule: factor applied at each decay epoch.")
    flags.DEFINE_integer("warmup_epochs", defaults.warmup_epochs,
                         "Linear warm-up from 0 to --learning_rate over this many epochs, then "
                         "the schedule.")
    flags.DEFINE_enum("checkpoint", defaults.checkpoint, CHECKPOINTS,
                      "Which weights a training run keeps: the last epoch's, or the epoch "
                      "with the lowest validation loss.")
    flags.DEFINE_float("temperature", defaults.temperature,
                       "Distillation temperature T > 0 (soft targets softmax(logits / T)).")
    flags.DEFINE_float("alpha", defaults.alpha,
                       "Ground-truth weight in [0, 1] when distilling: loss = alpha * CE + "
                       "(1 - alpha) * distillation loss. Members always train with alpha = 1.")
    flags.DEFINE_string("distillation_loss", defaults.distillation_loss,
                        "kl (soft-target KL, T^2-scaled) or probability_mse.")
    flags.DEFINE_string("teacher_average", defaults.teacher_average,
                        "How members are averaged: logits or probabilities.")
    flags.DEFINE_string("hint_layer", defaults.hint_layer,
                        "FitNets hint loss for distill, self_distill and tune: a layer name "
                        "found in the student and the first teacher (e.g. features), or "
                        "TEACHER_LAYER:STUDENT_LAYER; the student's layer is regressed onto "
                        "the teacher's through a learned 1x1 adapter. Empty: no hint.")
    flags.DEFINE_float("hint_weight", defaults.hint_weight,
                       "Weight of the hint loss (with --hint_layer).")
    flags.DEFINE_integer("self_distill_steps", defaults.self_distill_steps,
                         "Generations per self-distillation chain (one chain per member).")
    flags.DEFINE_string("self_distill_alpha", defaults.self_distill_alpha,
                        "Ground-truth weight of each self-distillation step: empty (use "
                        "--alpha), a number, a comma-separated list with one value per step, "
                        "or 'optimal': before each step, a probe trained with alpha = 0 and "
                        "the chain's ground-truth model give the alpha minimising the squared "
                        "error of their mixture against the validation labels (Borup & "
                        "Andersen); costs one more fit per step.")
    flags.DEFINE_boolean("alpha_clip", defaults.alpha_clip,
                         "With --self_distill_alpha=optimal, clip the estimate to [0, 1]; "
                         "--noalpha_clip keeps values outside (the optimum can leave [0, 1] "
                         "when the chain over- or under-regularises).")
    flags.DEFINE_enum("tuner", defaults.tuner, TUNERS,
                      "--mode=tune: keras-tuner's RandomSearch, BayesianOptimization or "
                      "Hyperband (which sets its own trial count from --epochs).")
    flags.DEFINE_integer("max_trials", defaults.max_trials, "--mode=tune: trials to run.")
    flags.DEFINE_list("tune_params", list(defaults.tune_params),
                      f"--mode=tune: what to search, among {', '.join(TUNABLE)}; the rest "
                      "keep their flag values.")
    flags.DEFINE_list("tune_temperature", list(map(str, defaults.tune_temperature)),
                      "--mode=tune: LOW,HIGH of the temperature (log scale).")
    flags.DEFINE_list("tune_alpha", list(map(str, defaults.tune_alpha)),
                      "--mode=tune: LOW,HIGH of alpha, within [0, 1].")
    flags.DEFINE_list("tune_learning_rate", list(map(str, defaults.tune_learning_rate)),
                      "--mode=tune: LOW,HIGH of the learning rate (log scale).")
    flags.DEFINE_list("tune_hint_weight", list(map(str, defaults.tune_hint_weight)),
                      "--mode=tune: LOW,HIGH of the hint weight (log scale; searched when "
                      "--tune_params names hint_weight).")
    flags.DEFINE_string("analysis_layer", defaults.analysis_layer,
                        "--mode=analyze: the layer Grad-CAM weighs (default: the last "
                        "convolutional layer).")
    flags.DEFINE_float("epsilon", defaults.epsilon,
                       "--mode=analyze: L-infinity budget of FGSM / PGD, as a fraction of the "
                       "data's value range (0.03 of [0, 1] is about 8/255).")
    flags.DEFINE_integer("pgd_steps", defaults.pgd_steps, "--mode=analyze: PGD steps.")
    flags.DEFINE_integer("analysis_examples", defaults.analysis_examples,
                         "--mode=analyze: how many test examples the analysis uses.")
    flags.DEFINE_boolean("teacher_cache", defaults.teacher_cache,
                         "Compute each teacher's logits once, keep them in <workdir>/cache "
                         "(float16) and train students without any teacher forward pass.")
    flags.DEFINE_enum("strategy", defaults.strategy, runtime.STRATEGIES,
                      "auto: MirroredStrategy over all local GPUs when there are several, one "
                      "device otherwise. multi_worker: MultiWorkerMirroredStrategy from "
                      "TF_CONFIG. --batch_size is the global batch, split over replicas.")
    flags.DEFINE_integer("num_cpu_devices", defaults.num_cpu_devices,
                         "Split the CPU into this many logical devices (to try "
                         "--strategy=mirrored without GPUs).")
    flags.DEFINE_boolean("jit_compile", defaults.jit_compile,
                         "Compile training steps with XLA (turned off, with a warning, where "
                         "TensorFlow cannot: MirroredStrategy over several CPU devices).")
    flags.DEFINE_enum("precision", defaults.precision, runtime.PRECISIONS,
                      "Keras dtype policy for every model.")
    flags.DEFINE_boolean("deterministic", defaults.deterministic,
                         "Deterministic TensorFlow kernels: reruns with the same seed give "
                         "identical numbers, even on a busy machine.")
    flags.DEFINE_boolean("overwrite", defaults.overwrite,
                         "Retrain models in --workdir that were trained with other settings "
                         "(without it, such a workdir is refused).")
    flags.DEFINE_boolean("smoke", defaults.smoke,
                         "Shrink any recipe to seconds: 1 epoch, <= 2 members and steps, at most 4 "
                         "batches (256 examples) and the smallest network of the model's family; "
                         "for tests.")
    flags.DEFINE_integer("verbose", defaults.verbose,
                         "Keras fit verbosity: 0 = one line per model, 1 = progress bars, "
                         "2 = one line per epoch.")


def config_from_flags():
    values = {f.name: FLAGS[f.name].value for f in dataclasses.fields(Config)}
    # Comma-separated list flags -> the Config's tuples.
    for name, kind, what in (("lr_decay_epochs", int, "whole numbers"),
                             ("tune_params", str, "names"),
                             ("tune_temperature", float, "numbers"),
                             ("tune_alpha", float, "numbers"),
                             ("tune_learning_rate", float, "numbers"),
                             ("tune_hint_weight", float, "numbers")):
        try:
            values[name] = tuple(kind(v) for v in values[name])
        except ValueError:
            raise ConfigError(f"{name} must be comma-separated {what}, got "
                              f"{','.join(values[name])!r}") from None
    if FLAGS["hint_weight"].present and not values["hint_layer"].strip():
        raise ConfigError(f"hint_weight={values['hint_weight']!r} needs --hint_layer (the "
                          "layer whose output the hint regresses, e.g. features)")
    return Config(**values).shrunk()


def _fail(message):
    sys.stderr.write(f"tfkd: error: {message}\n")
    sys.exit(EXIT_USAGE)


def _parse_flags(argv):
    """absl's parser, with bad flags reported in one line and exit code 2."""
    try:
        return FLAGS(argv)
    except flags.Error as e:
        _fail(str(e))


def main(argv):
    if len(argv) > 1:
        _fail(f"unexpected arguments {argv[1:]!r}; every setting is a --flag (see --help)")
    # Deferred: importing TensorFlow takes seconds that --help should not cost.
    from tfkd import report
    from tfkd.modes import MODES as MODE_FUNCTIONS
    from tfkd.modes import OWN_STRATEGY_SCOPE
    from tfkd.workdir import Workdir

    _quiet_logging()
    try:
        config = config_from_flags()
        scratch = None if runtime.is_chief() else tempfile.mkdtemp(prefix="tfkd_worker_")
        workdir = Workdir(config.workdir, scratch=scratch).create()
    except ConfigError as e:
        _fail(str(e))
    except OSError as e:
        _fail(f"cannot use workdir {FLAGS.workdir!r}: {e.strerror or e}; pass a writable "
              "directory (it is created if missing)")
    try:
        runtime.split_cpu(config.num_cpu_devices)
        runtime.set_precision(config.precision)
        runtime.set_deterministic(config.deterministic)
        strategy = runtime.make_strategy(config.strategy)
    except ValueError as e:
        _fail(str(e))
    logging.info("tfkd: mode=%s dataset=%s model=%s strategy=%s (%d replicas) workdir=%s",
                 config.mode, config.dataset, config.model, type(strategy).__name__.lstrip("_"),
                 strategy.num_replicas_in_sync, workdir.root)
    try:
        if config.mode in OWN_STRATEGY_SCOPE:
            MODE_FUNCTIONS[config.mode](config, workdir, strategy=strategy)
        else:
            with strategy.scope():
                MODE_FUNCTIONS[config.mode](config, workdir)
    except ConfigError as e:
        _fail(str(e))
    except TrainingError as e:
        sys.stderr.write(f"tfkd: error: {e}\n")
        sys.exit(EXIT_FAILED)
    finally:
        if workdir.scratch:
            shutil.rmtree(workdir.scratch, ignore_errors=True)
    if not workdir.writable:
        return
    # Recorded once the run has succeeded: a refused invocation leaves the workdir as it was.
    workdir_write_config(workdir, config)
    from tfkd.modes.self_distill import PROBE_KIND

    # alpha = 0 probes of --self_distill_alpha=optimal are steps of an estimate, not results.
    rows = [record["row"] for record in workdir.all_metrics()
            if record["row"]["kind"] != PROBE_KIND]
    markdown = report.write_report(rows, workdir.root,
                                   title=f"{config.dataset} / {config.model}")
    print(markdown)
    print(f"\nResults table, CSV and chart: {workdir.path('results.md')}, "
          f"results.csv, results.png")


def workdir_write_config(workdir, config):
    if workdir.writable:
        from tfkd.workdir import write_json

        write_json(workdir.path("config.json"), {"config": config.to_dict(),
                                                  "argv": sys.argv, "versions": _versions()})


def _quiet_logging():
    """Progress lines as plain text; TensorFlow's Python warnings (retracing notes) muted."""
    import logging as std_logging

    import tensorflow as tf

    tf.get_logger().setLevel("ERROR")
    logging.set_verbosity(logging.INFO)
    logging.get_absl_handler().setFormatter(std_logging.Formatter("%(message)s"))


def _versions():
    import importlib.metadata as md

    versions = {}
    for package in ("tfkd", "tensorflow", "keras", "numpy", "absl-py", "tensorflow-datasets",
                    "keras-tuner"):
        try:
            versions[package] = md.version(package)
        except md.PackageNotFoundError:
            versions[package] = None
    return versions


def run():
    """Console-script entry point."""
    define_flags()
    app.run(main, flags_parser=_parse_flags)


if __name__ == "__main__":
    run()
