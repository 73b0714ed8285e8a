"""The tfkd command: the only module that defines and reads absl flags.

Flags in, a `Config` out, then one mode function does the work:

    tfkd                                   # the whole pipeline on digits
    tfkd --mode=train --num_models=3 --workdir=runs/x
    tfkd --recipe=digits_cnn               # a flagfile of flags/, also from an installed package

The flags are generated from the settings schema (`tfkd.config.Config`); `tfkd --help`
lists them by group. Settings a run does not give default to what its workdir recorded.
"""

import functools
import glob
import os
import shutil
import signal
import sys
import tempfile
import textwrap
import threading

# Before TensorFlow loads: its C++ start-up chatter would bury the progress lines. A user's
# own level is kept, and then so is every line it lets through (runtime.start_tensorflow).
QUIET_START = "TF_CPP_MIN_LOG_LEVEL" not in os.environ
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags, logging  # noqa: E402

from tfkd import flagfiles, runtime  # noqa: E402
from tfkd.config import (  # noqa: E402
    FIELDS, GROUPS, REMEMBERED, Config, ConfigError, TrainingError, choices_of)

FLAGS = flags.FLAGS
EXIT_USAGE = 2  # a setting to fix; nothing in the workdir changed
EXIT_FAILED = 1  # training failed (diverged, learned nothing, disk full); finished models kept
RECORD = "config.json"  # what a workdir records of the last run that finished in it
HELP_FLAGS = ("--help", "-h", "--helpshort", "-?")
FULL_HELP_FLAGS = ("--helpfull",)  # absl's: tfkd's help, then absl's own flags apart


# --- flags from the schema --------------------------------------------------------------------

def flag_help(name):
    """The help of setting `name`, with its accepted values when it has a list of them."""
    text = FIELDS[name].metadata["help"]
    if FIELDS[name].metadata["choices"] is not None:
        text += f" One of: {', '.join(map(str, choices_of(name)))}."
    return text


def define_flags(flag_values=FLAGS):
    """One absl flag per Config field, of the field's type, grouped as the schema groups it
    (absl lists them under "tfkd <group>").

    Settings with choices are plain flags whose help lists them (`flag_help`), not
    DEFINE_enum: the settings schema checks them, with the one-line message every refused
    setting gets, naming its registry's choices."""
    for name, field in FIELDS.items():
        meta = field.metadata
        args = dict(name=name, help=flag_help(name), module_name=f"tfkd {meta['group']}",
                    flag_values=flag_values)
        if meta["item"] is not None:
            flags.DEFINE_list(default=[str(v) for v in field.default], **args)
        elif isinstance(field.default, bool):
            flags.DEFINE_boolean(default=field.default, **args)
        elif isinstance(field.default, int):
            flags.DEFINE_integer(default=field.default, **args)
        elif isinstance(field.default, float):
            flags.DEFINE_float(default=field.default, **args)
        else:
            flags.DEFINE_string(default=field.default, **args)
    flags.DEFINE_string("recipe", None, "A recipe of flags/ by name (see --help); flags after "
                        "it override it.", module_name="tfkd run", flag_values=flag_values)


def flag_values():
    """The flags as Config field values: comma-separated lists parsed into tuples."""
    values = {}
    for name, field in FIELDS.items():
        value = FLAGS[name].value
        kind = field.metadata["item"]
        if kind is not None:
            try:
                value = tuple(kind(v) for v in value)
            except ValueError:
                what = {int: "whole numbers", float: "numbers"}.get(kind, "names")
                raise ConfigError(f"{name} must be comma-separated {what}, got "
                                  f"{','.join(value)!r}") from None
        values[name] = value
    return values


def given_flags():
    """The settings given on the command line or in a flagfile."""
    return {name for name in FIELDS if FLAGS[name].present}


def config_from_flags(remember=True):
    """The run's Config (before --smoke shrinks it), and the note saying which settings
    came from the workdir's record rather than the command line (`remember=False`, as
    tools that run many configs want: the flags alone)."""
    values, given = flag_values(), given_flags()
    values, note = remembered(values, given) if remember else (values, "")
    if "hint_weight" in given and not values["hint_layer"].strip():
        raise ConfigError(f"hint_weight={values['hint_weight']!r} needs --hint_layer (the "
                          "layer whose output the hint regresses, e.g. features)")
    method = values["distillation_loss"]
    for name in sorted(given):
        methods = FIELDS[name].metadata["methods"]
        # A search may vary the method; elsewhere a setting of another method does nothing.
        if methods and method not in methods and values["mode"] != "tune":
            raise ConfigError(
                f"{name}={values[name]!r} is a setting of --distillation_loss="
                f"{' or '.join(methods)}, but this run's is {method!r}")
    try:
        return Config(**values), note
    except ConfigError as e:
        raise ConfigError(f"{e} ({note})" if note else str(e)) from None


# --- what the workdir remembers ---------------------------------------------------------------

def read_record(directory):
    """The settings recorded by the last run that finished in `directory`, or {} (no record,
    or one of a tfkd that recorded none). A damaged one is a ConfigError naming it: what
    later runs default to is not guessed."""
    from tfkd.workdir import DamagedFile, settings_schema
    from tfkd.workdir import read_record as read_valid

    path = os.path.join(directory, RECORD)
    try:
        record = read_valid(path, {"settings?": (settings_schema(REMEMBERED), type(None))})
    except (FileNotFoundError, NotADirectoryError):
        return {}
    except DamagedFile as e:
        if not e.problem.startswith("is damaged"):
            raise
        raise ConfigError(f"{e.path} {e.problem}; it holds the settings later runs on its "
                          "workdir default to: fix it, or remove it (a run then takes the "
                          "settings given and the defaults, and records them anew)") from None
    return record.get("settings") or {}


def remembered(values, given):
    """`values` with each setting the run does not give taken from the workdir's record
    (or, for a new workdir, from --teacher_dir's), and --num_models, when neither gives it,
    from the members the teachers' folder holds. Returns (values, note)."""
    from tfkd.modes import store

    values = dict(values)
    taken, source = {}, None
    for directory in filter(None, (values["workdir"], values["teacher_dir"])):
        record = read_record(directory)
        if record:
            source = os.path.join(directory, RECORD)
            for name in REMEMBERED:
                if name not in given and name in record:
                    value = record[name]
                    value = tuple(value) if isinstance(value, list) else value
                    if value != values[name]:
                        taken[name] = values[name] = value
            break
    # Only modes that take members rather than train them count what the folder holds: a
    # killed first `tfkd` run must resume to its --num_models, not to the members it left.
    consumer = values["mode"] in ("ensemble", "distill", "self_distill", "tune", "analyze")
    if consumer and "num_models" not in given and source is None:
        teachers = values["teacher_dir"] or values["workdir"]
        held = store.count_members(teachers) if os.path.isdir(teachers) else 0
        if held and held != values["num_models"]:
            taken["num_models"] = values["num_models"] = held
            source = f"the {held} members in {teachers}"
    if not taken:
        return values, ""
    shown = ", ".join(f"{k}={_flag_text(v)}" for k, v in taken.items())
    return values, f"not given, so taken from {source}: {shown}"


def write_record(workdir, config):
    """After a run succeeded: the settings a later run on this workdir defaults to, the
    configuration as it ran (--smoke applied), argv and the library versions."""
    from tfkd.modes import store
    from tfkd.workdir import write_json

    settings = {name: getattr(config, name) for name in REMEMBERED}
    # The workdir's model is its members' architecture: a student of another one (distilled
    # as distilled_<model>) must not make later runs default to it.
    if "model" in settings:
        settings["model"] = store.members_architecture(workdir.root) or config.model
    write_json(workdir.path(RECORD), {
        "settings": settings,
        "config": config.shrunk().to_dict(), "argv": sys.argv, "versions": _versions()})


def _flag_text(value):
    return ",".join(map(str, value)) if isinstance(value, (tuple, list)) else str(value)


# --- help and recipes -------------------------------------------------------------------------

def recipe_dirs():
    """Where recipes are looked for: the checkout's flags/ (running from source), then the
    copy an installed package carries (setup.py installs flags/ as data files)."""
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    return [os.path.join(here, "flags"), os.path.join(sys.prefix, "share", "tfkd", "flags")]


def recipes():
    """{name: flagfile path} of every recipe found."""
    found = {}
    for directory in reversed(recipe_dirs()):
        for path in glob.glob(os.path.join(directory, "*.flags")):
            found[os.path.basename(path)[:-len(".flags")]] = path
    return dict(sorted(found.items()))


def expand_flagfiles(argv):
    """argv with each --flagfile=FILE and --recipe=NAME replaced by the flags its file holds,
    in place (flags after it override it), every file checked as it is read (see
    tfkd.flagfiles: absl's own reader hangs on a FIFO and recurses without a limit)."""
    try:
        return [argv[0], *flagfiles.expand(argv[1:], recipes())]
    except flagfiles.FlagfileError as e:
        _fail(str(e))


def help_text(width=100):
    """tfkd's own flags, by group, each with its default and accepted values."""
    lines = ["usage: tfkd [--flag=value ...] [--recipe=NAME] [--flagfile=FILE]", "",
             "Ensembles, knowledge distillation and self-distillation for Keras 3 / TensorFlow.",
             "Settings not given default to what the workdir recorded when it was made.", ""]
    indent = " " * 6
    for group, (title, _) in GROUPS.items():
        lines.append(f"{title}:")
        for name, field in FIELDS.items():
            if field.metadata["group"] != group:
                continue
            default = field.default
            shown = (f"--[no]{name}  (default: {'on' if default else 'off'})"
                     if isinstance(default, bool) else
                     f"--{name}={_flag_text(default) if default is not None else ''}")
            lines.append(f"  {shown}")
            lines += textwrap.wrap(flag_help(name), width, initial_indent=indent, subsequent_indent=indent)
        lines.append("")
    lines.append("Recipes (--recipe=NAME): " + ", ".join(recipes()))
    lines.append("absl's own flags (--flagfile, logging, ...): tfkd --helpfull")
    return "\n".join(lines) + "\n"


def full_help_text():
    """--helpfull: tfkd's help (`help_text`), then absl's own flags (logging, debugging),
    apart from tfkd's rather than mixed among them as absl would print them."""
    if "mode" not in FLAGS:
        define_flags()
    modules = [m for m in sorted(FLAGS.flags_by_module_dict()) if not m.startswith("tfkd")]
    return (help_text() + "\nabsl's own flags:\n\n"
            + "\n\n".join(FLAGS.module_help(module) for module in modules) + "\n")


def reference_markdown():
    """docs/cli.md: the --help text as a page (a test keeps the two equal)."""
    return ("# The tfkd command\n\n"
            "Every flag, by group, as `tfkd --help` prints it. Regenerate this page with\n"
            "`python tools/write_cli_reference.py` after changing a setting in `tfkd/config.py`.\n\n"
            "```\n" + help_text() + "```\n")


# --- the command ------------------------------------------------------------------------------

def _fail(message):
    sys.stderr.write(f"tfkd: error: {message}\n")
    sys.exit(EXIT_USAGE)


def parse_flags(argv):
    """absl's parser, with bad flags reported in one line and exit code 2."""
    argv = expand_flagfiles(argv)
    try:
        return FLAGS(argv)
    except flags.Error as e:
        _fail(str(e))


def main(argv):
    if len(argv) > 1:
        _fail(f"unexpected arguments {argv[1:]!r}; every setting is a --flag (see --help)")
    # SIGTERM, the pre-emption signal of cloud machines, stops as Ctrl-C does, with a line
    # to resume; both are recorded as well as raised (see runtime.request_stop).
    main_thread = threading.current_thread() is threading.main_thread()
    previous = {sig: signal.signal(sig, runtime.request_stop)
                for sig in (signal.SIGTERM, signal.SIGINT)} if main_thread else {}
    previous_hook = sys.unraisablehook
    sys.unraisablehook = functools.partial(runtime.quiet_lost_stop, fallback=previous_hook)
    runtime.stop_requested = None
    used = {}  # the workdir, once the run has one
    try:
        _run(used)
        runtime.check_stop()  # a stop whose raise was lost never ends in success
    except (KeyboardInterrupt, runtime.Interrupted) as e:
        _interrupted(e, used.get("workdir"))
    except Exception as e:  # noqa: BLE001 -- only a full disk is turned into a line here
        from tfkd.workdir import DiskFull, is_disk_full

        if runtime.stop_requested is not None:
            # An error after a stop is the stop's doing: its raise inside an import (of
            # TensorFlow, seconds long) leaves modules half made, and the next use of one
            # fails. Nothing of the run's is lost: files are written atomically.
            _interrupted(None, used.get("workdir"))
        if not is_disk_full(e):
            raise
        if not isinstance(e, DiskFull):
            path = getattr(e, "filename", None) or FLAGS.workdir
            e = DiskFull(path, free=_free_space(path))
        sys.stderr.write(f"tfkd: error: {e.strerror}\n")
        sys.exit(EXIT_FAILED)
    finally:
        for sig, handler in previous.items():  # main may run inside a caller's process
            signal.signal(sig, handler)
        sys.unraisablehook = previous_hook
        if "workdir" in used:
            from tfkd.workdir import release

            release(used["workdir"].root)
            # A run refused (or stopped) before it wrote anything leaves no empty workdir
            # where it made one; only its writer removes it, never a cluster's other worker.
            if used.get("new") and used["workdir"].writable:
                used["workdir"].remove_if_empty(used["new"])
            if used["workdir"].scratch:  # a non-chief worker's own copies
                shutil.rmtree(used["workdir"].scratch, ignore_errors=True)


def _interrupted(stop, workdir):
    """Ends the process for a stop (a KeyboardInterrupt or runtime.Interrupted, or None:
    the signal runtime recorded) with one line and 128 + the signal's number."""
    signum = (signal.SIGTERM if isinstance(stop, runtime.Interrupted) else
              signal.SIGINT if isinstance(stop, KeyboardInterrupt) else runtime.stop_requested)
    sys.stderr.write(f"tfkd: interrupted by {signal.Signals(signum).name}; "
                     f"{_where_it_stopped(workdir)}\n")
    sys.exit(128 + signum)


def _free_space(path):
    while path and not os.path.exists(path):
        path = os.path.dirname(path)
    try:
        return shutil.disk_usage(path or ".").free
    except OSError:
        return None


def _where_it_stopped(workdir):
    if workdir is None:
        return "nothing was written"
    # Not imported here: a stop inside TensorFlow's import leaves it half made, and a run
    # that never imported tfkd.resume has no model in training.
    resume = sys.modules.get("tfkd.resume")
    state = resume.running if resume is not None else None
    model = (f", and {state.distiller.student.name} resumes after epoch "
             f"{state.completed_epochs} of {state.total_epochs}" if state is not None else "")
    return (f"finished models are kept in {workdir.root}{model}; run the same command again "
            "to continue")


def _run(used):
    """The run behind `main`; puts the workdir into `used` as soon as it holds it."""
    # Everything up to runtime.start_tensorflow runs without TensorFlow, so that a refused
    # setting costs no import of it (tests/test_startup.py).
    from tfkd import report
    from tfkd.data.registry import display_name
    from tfkd.modes import OWN_STRATEGY_SCOPE, get_mode, plan_text
    from tfkd.workdir import Workdir, WorkdirBusy, first_missing

    setup_logging()
    try:
        base, note = config_from_flags()
        config = base.shrunk()
        cluster = runtime.join(config.strategy)
        # A cluster's other workers train alongside the chief, which alone writes the
        # workdir; they write their own copies into a scratch folder they remove.
        scratch = (tempfile.mkdtemp(prefix="tfkd_worker_")
                   if cluster is not None and not cluster.is_chief else None)
        used["new"] = first_missing(config.workdir)
        workdir = used["workdir"] = Workdir(config.workdir, scratch=scratch).create()
        workdir.check()  # every file it reads or writes, before anything trains
    except (ConfigError, WorkdirBusy) as e:
        _fail(str(e))
    except OSError as e:
        from tfkd.workdir import is_disk_full

        if is_disk_full(e):
            raise
        where = e.filename or FLAGS.workdir
        _fail(f"cannot use workdir {FLAGS.workdir!r}: {e.strerror or e} ({where}); pass a "
              "writable directory (it is created if missing)")
    except ValueError as e:  # the environment (TF_CONFIG)
        _fail(str(e))
    if note:
        logging.info("tfkd: %s", note)
    runtime.start_tensorflow(quiet=QUIET_START)
    try:
        runtime.split_cpu(config.num_cpu_devices)
        runtime.set_precision(config.precision)
        runtime.set_deterministic(config.deterministic)
        strategy = runtime.make_strategy(config.strategy, config.cluster_timeout)
    except ValueError as e:
        _fail(str(e))
    logging.info("tfkd: devices: %s", runtime.describe_devices())
    logging.info("tfkd: mode=%s dataset=%s model=%s strategy=%s (%d replicas) workdir=%s",
                 config.mode, config.dataset, config.model, type(strategy).__name__.lstrip("_"),
                 strategy.num_replicas_in_sync, workdir.root)
    logging.info("tfkd: %s", plan_text(config))
    try:
        if config.mode in OWN_STRATEGY_SCOPE:
            get_mode(config.mode)(config, workdir, strategy=strategy)
        else:
            with strategy.scope():
                get_mode(config.mode)(config, workdir)
    except ConfigError as e:
        _fail(str(e))
    except TrainingError as e:
        sys.stderr.write(f"tfkd: error: {e}\n")
        sys.exit(EXIT_FAILED)
    if not workdir.writable:  # a cluster's worker other than the chief: its share is done
        print(f"tfkd: {cluster.name()} is done; the chief, {cluster.name(cluster.chief)}, "
              f"writes the results to {workdir.root} on its machine")
        return
    # Recorded once the run has succeeded: a refused invocation leaves the workdir as it was.
    write_record(workdir, base)
    from tfkd.modes.self_distill import PROBE_KIND

    # alpha = 0 probes of --self_distill_alpha=optimal are steps of an estimate, not results.
    rows = [record["row"] for record in workdir.all_metrics()
            if record["row"]["kind"] != PROBE_KIND]
    markdown = report.write_report(rows, workdir.root,
                                   title=f"{display_name(config.dataset)} / {config.model}")
    print(markdown)
    print(f"\nResults table, CSV and chart: {workdir.path('results.md')}, "
          f"results.csv, results.png")


def setup_logging():
    """Progress lines as plain text; TensorFlow's Python warnings (retracing notes) muted."""
    import logging as std_logging

    # tf.get_logger() is this logger; named, not imported, so that TensorFlow loads later.
    std_logging.getLogger("tensorflow").setLevel(std_logging.ERROR)
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
    # First, before absl starts and TensorFlow imports: a stop in a run's first seconds
    # ends in one line too (`main` handles the signals the same way once it runs).
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, runtime.request_stop)
    try:
        if any(arg in FULL_HELP_FLAGS for arg in sys.argv[1:]):
            sys.stdout.write(full_help_text())
            sys.exit(0)
        if any(arg in HELP_FLAGS for arg in sys.argv[1:]):
            sys.stdout.write(help_text())
            sys.exit(0)
        if "mode" not in FLAGS:  # once per process (run may be called again in one)
            define_flags()
        app.run(main, flags_parser=parse_flags)
    except (KeyboardInterrupt, runtime.Interrupted) as e:
        _interrupted(e, None)
    except SystemExit as e:
        if runtime.stop_requested is None or e.code != 128 + runtime.stop_requested:
            raise
        # Python ends a process that ever let a KeyboardInterrupt out of code it ran for a
        # C extension (pybind11 runs some while TensorFlow imports) by SIGINT, whatever
        # the exit code: -2, not 130. The stop's line is written and main has cleaned up.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(e.code)


if __name__ == "__main__":
    run()
