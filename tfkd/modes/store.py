"""The store: what a workdir holds, and when a finished model may stand for the one a run
would train.

A finished model is `models/<name>.keras` with `metrics/<name>.json` beside it. The record
holds the model's result row, training history, role (member, distilled, ...) and its
identity: the values of every setting that makes it what it is (derived from the settings
schema's groups, `tfkd.config.identity_of`), its seed and, for a student, the content
hash of its teachers' files.

Two uses, two rules:
- a model the run would *train* is reused only when its identity matches the run's; a
  mismatch is refused with the first differing setting (or retrained with --overwrite);
- models the run *consumes* (the members that teach, from the workdir or --teacher_dir)
  are taken as they are, whatever settings they were trained with; what consumes them
  records their content hash, so a changed teacher makes its students stale.
"""

import functools
import json
import os
import re
import time

from absl import logging

from tfkd import cache
from tfkd.config import ConfigError, fields_in, identity_of
from tfkd.workdir import DamagedFile, Workdir

MEMBER = re.compile(r"member_(\d+)\.keras$")


def member_names(num_models):
    return [f"member_{i}" for i in range(num_models)]


def model_identity(config, *, seed, teachers=None, alpha=None, extra=None):
    """The settings a model trained by this run would have (as they read back from JSON)."""
    # The model's own seed and teachers first: when they differ, that is the news.
    settings = {"seed": seed}
    if teachers is not None:
        settings["teachers"] = teachers.identity
    settings.update({name: getattr(config, name)
                     for name in identity_of(config, distilled=teachers is not None)})
    if teachers is not None:
        settings["alpha"] = float(alpha)  # a self-distillation step's own, not --alpha
    settings.update(extra or {})
    return json.loads(json.dumps(settings))


def state_key(settings):
    """A short hash of a model's identity: a training state saved under other settings is
    never resumed."""
    return cache.fingerprint((), json.dumps(settings, sort_keys=True))


def find_finished(config, workdir, name, settings, teachers=None):
    """(model, row) of `name` if the workdir holds it finished with `settings`, else None.

    A finished model trained with other settings is a ConfigError (unless --overwrite). An
    unreadable model or metrics file, or a model file that no longer matches the checksum
    its record holds, is reported and the model trained again. So is a student whose
    teachers are this workdir's own models and changed since it was trained (a redone
    member): derived from the files, so a run killed in the middle of a redo still
    retrains the students next time.
    """
    if not workdir.has_model(name):
        return None
    try:
        record = workdir.read_metrics(name)
        row = record["row"]
    except (OSError, DamagedFile) as e:
        return _redo(workdir, name, workdir.metrics_path(name), e)
    path = workdir.model_path(name)
    if record.get("sha") and cache.fingerprint([path], ()) != record["sha"]:
        return _redo(workdir, name, path, "its contents do not match the checksum in "
                     f"{os.path.basename(workdir.metrics_path(name))}")
    stored_teachers = record.get("settings", {}).get("teachers")
    if teachers is not None and stored_teachers != settings.get("teachers") and _own(
            workdir, teachers.paths):
        changed = [os.path.basename(p) for p in teachers.paths
                   if record.get("teacher_files", {}).get(os.path.basename(p)) != file_sha(p)]
        logging.info("%s: training it again, its teachers changed since it was trained (%s)",
                     name, ", ".join(changed) or teachers.name)
        return None
    if not reusable(config, workdir, name, settings, record):
        return None
    try:
        return workdir.load_model(name), row
    except Exception as e:  # noqa: BLE001 -- Keras raises many kinds for a damaged file
        return _redo(workdir, name, path, e)


def load_finished(workdir, name, how_to_redo):
    """The finished model `name`, as its record vouches for it (its checksum matches and it
    loads), for a run that consumes it rather than trains it; else a ConfigError naming the
    file and `how_to_redo` it."""
    path = workdir.model_path(name)
    try:
        record = workdir.read_metrics(name)
    except (OSError, DamagedFile) as e:
        raise ConfigError(f"{path} has no usable record ({describe(e)}); {how_to_redo}") from None
    if record.get("sha") and file_sha(path) != record["sha"]:
        raise ConfigError(f"{path} is damaged: its contents do not match the checksum in "
                          f"{os.path.basename(workdir.metrics_path(name))}; {how_to_redo}")
    try:
        return workdir.load_model(name)
    except Exception as e:  # noqa: BLE001 -- Keras raises many kinds for a damaged file
        raise ConfigError(f"{path} is unreadable ({describe(e)}); {how_to_redo}") from None


def _own(workdir, paths):
    """Whether every path is a model file of this workdir (its own members, not consumed
    from elsewhere)."""
    own = [os.path.join(top, "models") + os.sep for top in (workdir.root, workdir.scratch) if top]
    return bool(paths) and all(os.path.abspath(p).startswith(tuple(own)) for p in paths)


def file_sha(path):
    return cache.fingerprint([path], ())


def teacher_files(teachers):
    """{file name: content hash} of a student's teachers, recorded with the student so a
    later run can say which of them changed."""
    return {os.path.basename(p): file_sha(p) for p in teachers.paths} if teachers else {}


def _redo(workdir, name, path, error):
    why = (error if isinstance(error, str) else error.problem.removeprefix("is damaged: ")
           if isinstance(error, DamagedFile) else f"it is unreadable ({describe(error)})")
    logging.warning("%s: %s is damaged: %s; training it again", name, path, why)
    workdir.remove_model(name)
    return None


def describe(error):
    """An exception as one short line: its type and the first line of its message."""
    text = str(error).strip()
    return f"{type(error).__name__}: {text.splitlines()[0][:200]}" if text else type(
        error).__name__


def reusable(config, workdir, name, settings, record):
    """True if the finished model `name` was trained with `settings`; with --overwrite a
    mismatch means retrain, without it a ConfigError naming the first difference."""
    stored = record.get("settings", {})
    # Both ways: a model trained with a hint does not stand for one trained without.
    changed = [k for k in dict.fromkeys([*settings, *stored]) if stored.get(k) != settings.get(k)]
    if not changed:
        return True
    if config.overwrite:
        logging.info("%s: retraining (%s changed; --overwrite)", name, ", ".join(changed))
        return False
    field = changed[0]
    raise ConfigError(
        f"{workdir.root} already holds {name} trained with {field}={stored.get(field)!r} "
        f"(as {workdir.metrics_path(name)} records), but this run asks for "
        f"{field}={settings.get(field)!r}; use another --workdir, or --overwrite to retrain "
        "what differs")


# --- members: the models a run consumes as teachers ------------------------------------------

def held_members(directory):
    """The member model files `directory` holds, in order: a workdir's models/member_<i>.keras
    (by i), or else every .keras file of a plain folder (by name)."""
    models = os.path.join(directory, "models")
    if os.path.isdir(models):
        found = sorted((int(m.group(1)), f) for f in os.listdir(models)
                       if (m := MEMBER.match(f)))
        return [os.path.join(models, f) for _, f in found]
    if os.path.isdir(directory):
        return [os.path.join(directory, f) for f in sorted(os.listdir(directory))
                if f.endswith(".keras") and not f.startswith(".")]
    return []


def _record_beside(path):
    """The record the tfkd workdir holding model `path` (<dir>/models/NAME.keras) keeps of
    it, validated, or None: a plain .keras file, no model or record, or a damaged record
    (the model is then taken as a plain file)."""
    models = os.path.dirname(os.path.abspath(path))
    name = os.path.basename(path)[:-len(".keras")]
    if os.path.basename(models) != "models" or not os.path.isfile(path):
        return None
    try:
        return Workdir(os.path.dirname(models)).read_metrics(name)
    except (OSError, DamagedFile):
        return None


def recorded_row(path):
    """The result row that the tfkd workdir holding model `path` recorded for it, or None
    (see `_record_beside`)."""
    record = _record_beside(path)
    return record["row"] if record else None


def members_architecture(directory):
    """The --model the tfkd workdir `directory`'s members were trained with, as member_0's
    record says, or None (no such record: plain .keras files, or no members yet)."""
    record = _record_beside(os.path.join(directory, "models", "member_0.keras"))
    model = record.get("settings", {}).get("model") if record else None
    return model if isinstance(model, str) else None


def student_suffix(config, teacher_directory):
    """"" for a student of its teachers' architecture, else "_<model>": students of other
    architectures live beside it in one workdir, each under names of its own
    (distilled_cnn beside distilled)."""
    architecture = members_architecture(teacher_directory)
    return "" if architecture in (None, config.model) else f"_{config.model}"


def count_members(directory):
    """How many members `directory` holds, counted as `load_members` would take them."""
    paths = held_members(directory)
    if os.path.isdir(os.path.join(directory, "models")):
        # A workdir's members are member_0..member_{k-1}: a gap ends them.
        indices = [int(MEMBER.search(p).group(1)) for p in paths]
        return next((i for i, j in enumerate(indices) if i != j), len(indices))
    return len(paths)


def load_members(config, directory, *, how_to_train):
    """The first --num_models members `directory` holds, loaded as they are: (models, paths).

    A ConfigError says what is missing and `how_to_train` them; an unreadable file is named.
    """
    import keras  # deferred: listing members needs no TensorFlow

    from tfkd.ensemble import without_softmax

    if not os.path.isdir(directory):
        raise ConfigError(f"no teachers: {directory} is not a directory; train members there "
                          f"with --mode=train --workdir={directory}, or pass a folder of "
                          ".keras models")
    paths = held_members(directory)
    workdir_layout = os.path.isdir(os.path.join(directory, "models"))
    if workdir_layout:
        expected = [os.path.join(directory, "models", f"{n}.keras")
                    for n in member_names(config.num_models)]
        missing = [p for p in expected if p not in paths]
    else:
        expected = paths[:config.num_models]
        missing = [None] * (config.num_models - len(expected))
    if missing:
        first = (f"no trained teacher {os.path.basename(missing[0])[:-len('.keras')]!r}"
                 if missing[0] else f"only {len(paths)} .keras teacher models")
        raise ConfigError(
            f"{first} in {directory} ({len(missing)} of {config.num_models} members missing "
            f"for --num_models={config.num_models}); {how_to_train}")
    models = []
    for i, path in enumerate(expected):
        try:
            model = keras.saving.load_model(path, compile=False)
        except Exception as e:  # noqa: BLE001 -- Keras raises many kinds for a damaged file
            raise ConfigError(f"teacher file {path} is unreadable ({describe(e)}); retrain "
                              "it, or remove it from the folder") from None
        if not workdir_layout:
            # Plain files from a user's own code may share one name ("sequential"); the
            # Distiller needs its teachers and student told apart.
            model.name = f"member_{i}"
        try:
            model, softmax = without_softmax(model)
        except ValueError as e:
            raise ConfigError(f"teacher file {path}: {e}") from None
        if softmax:
            logging.info("teacher %s ends in a softmax (layer %r): its logits, the softmax's "
                         "input, teach", path, softmax)
        models.append(model)
    return models, expected


# --- teacher-output cache ---------------------------------------------------------------------

def teacher_logits(config, workdir, splits, teachers, train=True, *, members=False):
    """The teachers' (train, validation) logits, from the workdir's cache or computed into it
    (train None when not `train`: augmented training batches need `view_logits`).

    The cache file is named by the teachers' content hash and the data settings, so a
    changed teacher or split never reuses a stale cache. With `members`, each example's
    row is every member's logits, (members, classes) (`cache.predict_logits`), in a cache
    of its own name (`_cache_name`): never read for the ensemble's, nor the other way.
    """
    from tfkd import runtime

    if runtime.cluster is not None:
        # In a cluster, predict is a collective op: every worker must run it, none may
        # skip it by reading a file that only the chief writes.
        # Rounded as the cache file would be, so a cluster trains what one process does.
        return tuple(cache.predict_logits(teachers.model, x, fold=True, members=members)
                     .astype("float16") if x is not None else None
                     for x in (splits.x_train if train else None, splits.x_val))
    # Clean inputs: the augmentation settings do not change them.
    key = cache.fingerprint(teachers.paths, _data_key(config, "augment", "data_seed") + (
        config.smoke, len(splits.x_train), len(splits.x_val)))
    name = _cache_name(teachers, key, members)
    return tuple(
        cache.cached_logits(teachers.model, x, workdir.path("cache", f"{name}.{split}.npy"),
                            members=members)
        if x is not None else None
        for split, x in (("train", splits.x_train if train else None), ("val", splits.x_val)))


def _cache_name(teachers, key, members, kind=""):
    """The name of a cache of `teachers`' outputs: <teachers>-[<kind>-]<key>, and -members
    for each member's logits (their own name: `cache.read_cached` finds a cache by its
    name's prefix, and a members cache read as the ensemble's would teach the wrong
    targets)."""
    return f"{teachers.name}-{kind + '-' if kind else ''}{key}{'-members' if members else ''}"


def _data_key(config, *leave_out):
    """The data settings a cache's outputs depend on, in schema order, less `leave_out`."""
    return tuple(getattr(config, f) for f in fields_in("data") if f not in leave_out)


VIEW_CHUNK_BYTES = 256 * 2**20


def augment_seed(config, seed):
    """The seed of a model's augmented views: --data_seed, or the model's own seed."""
    return config.data_seed if config.data_seed >= 0 else seed


def view_logits(config, workdir, splits, teachers, seed, *, members=False):
    """The teachers' logits on every epoch's augmented views of the training split (a list:
    one read-only float16 memory map per epoch, rows in example order), or None when the
    cache would exceed --view_cache_max_gb or the run is a cluster's (the teachers then
    run online; the run says why). With `members`, a row is every member's logits,
    (members, classes), and the cache (named apart) is members times the size; with
    --view_cache_top_k, each member's row is packed on its own (`cache.TopK`).

    The views of epoch e depend only on the augmentation seed, e and the example, so the
    logits are exact and serve every student of those views: each epoch is one file named
    by the teachers' content hash, the data and augmentation settings, the seed and e,
    computed once (a killed build keeps its finished epochs; a damaged one is redone).
    """
    from tfkd import runtime
    from tfkd.data import augmented_views
    from tfkd.data.pipeline import VIEWS
    from tfkd.ensemble import member_count

    if runtime.cluster is not None:
        logging.info("teacher view cache: not in a cluster (every worker would build it); "
                     "teachers run online")
        return None
    n, epochs, classes = len(splits.x_train), config.epochs, splits.num_classes
    k = config.view_cache_top_k if 0 < config.view_cache_top_k < classes else 0
    width = 2 * k + 1 if k else classes  # float16 numbers stored per row (cache.TopK)
    count = member_count(teachers.model) if members else 1  # rows of logits per view
    per_view = f"{count} members x " if members else ""
    size = epochs * n * count * width * 2
    if size > config.view_cache_max_gb * 2**30:
        logging.info("teacher view cache: %d epochs x %d views x %s%d numbers would take "
                     "%.2f GB, more than --view_cache_max_gb=%g; teachers run online", epochs,
                     n, per_view, width, size / 2**30, config.view_cache_max_gb)
        return None
    views_seed = augment_seed(config, seed)
    # VIEWS names how views are drawn: a cache of views drawn otherwise is not reused.
    key = cache.fingerprint(teachers.paths, _data_key(config, "data_seed") + (
        config.smoke, n, views_seed, VIEWS))
    directory = workdir.path("cache", _cache_name(teachers, key, members, "views") + (
        f"-top{k}" if k else ""))
    paths = [os.path.join(directory, f"epoch_{e}.npy") for e in range(epochs)]
    logits = [cache.read_cached(path, n) for path in paths]
    missing = [e for e in range(epochs) if logits[e] is None]
    if missing:
        logging.info("teacher view cache: %d epochs x %d views x %s%d %s, %.1f MB in %s; "
                     "%d of %d epochs to compute", epochs, n, per_view, width,
                     f"numbers (top {k} of {classes} classes)" if k else "classes",
                     size / 2**20, directory, len(missing), epochs)
    # Several epochs per inference pass, a few hundred MB of float32 logits at most: a
    # killed build keeps every chunk it finished.
    per_chunk = max(1, min(len(missing), VIEW_CHUNK_BYTES // (n * count * classes * 4)))
    for start in range(0, len(missing), per_chunk):
        chunk, started = missing[start:start + per_chunk], time.time()
        views = functools.reduce(lambda a, b: a.concatenate(b), (
            augmented_views(splits.x_train, augment=config.augment, augment_seed=views_seed,
                            epoch=e) for e in chunk))
        computed = cache.predict_logits(teachers.model, views, fold=True, members=members)
        for i, e in enumerate(chunk):
            rows = computed[i * n:(i + 1) * n]
            logits[e] = cache.store_logits(paths[e], cache.TopK.pack(rows, k) if k else rows)
        logging.info("teacher view cache: epochs %d-%d of %d in %.1fs", chunk[0] + 1,
                     chunk[-1] + 1, epochs, time.time() - started)
    return [cache.TopK(e, classes) for e in logits] if k else logits
