"""Ensemble: the average of several models of one architecture, as one Keras model."""

import keras
import numpy as np
from keras import ops

from tfkd import folding
from tfkd import metrics as metrics_lib
from tfkd.choices import AVERAGES  # the names, listed there

# What a model outputs: logits, or probabilities (a softmax last layer).
OUTPUTS = ("logits", "probabilities")


def output_problem(model):
    """What makes `model` unfit to teach or learn here, or None: tfkd's models output one
    tensor of class scores, (batch, classes). A model with several outputs (a list or dict
    of them) is refused: its outputs would be averaged, compared and saved as one."""
    outputs = getattr(model, "outputs", None)
    if outputs is None:  # not built, or subclassed: checked on its first batch instead
        return None
    if len(outputs) > 1 or keras.tree.is_nested(getattr(model, "_outputs_struct", None)):
        names = ", ".join(repr(getattr(o, "name", "?")) for o in outputs)
        return (f"has {len(outputs)} outputs ({names}); tfkd takes models with one output "
                "of class scores, shape (batch, classes): pass "
                "keras.Model(model.inputs, model.outputs[i]) for the one that classifies")
    return None


def single_output(outputs, name):
    """`outputs` if it is one tensor; a ValueError naming `name` for a list or dict of them
    (for models whose outputs show only when they run: subclassed, unbuilt)."""
    if keras.tree.is_nested(outputs):
        raise ValueError(f"{name} returns {type(outputs).__name__} of "
                         f"{len(keras.tree.flatten(outputs))} outputs; tfkd takes models with "
                         "one output of class scores, shape (batch, classes)")
    return outputs


def model_signature(model):
    """(input shape without batch, number of classes), or None where the model is not built."""
    if output_problem(model):
        return None
    try:
        input_shape = tuple(model.input_shape[1:])
        num_classes = model.output_shape[-1]
    except (AttributeError, ValueError, TypeError):
        return None
    return input_shape, num_classes


def check_compatible(models, names, reference=None, reference_name=None):
    """Raises a ValueError naming the first model whose inputs or classes differ from the rest.

    `reference` (optional) is a model the others must match, e.g. the student.
    """
    pairs = list(zip(models, names))
    if reference is not None:
        pairs.insert(0, (reference, reference_name))
    for model, name in pairs:
        problem = output_problem(model)
        if problem:
            raise ValueError(f"{name} {problem}")
    signatures = [(model_signature(m), n) for m, n in pairs]
    known = [(s, n) for s, n in signatures if s is not None]
    if not known:
        return
    (ref_shape, ref_classes), ref_name = known[0]
    for (shape, classes), name in known[1:]:
        if classes != ref_classes:
            raise ValueError(
                f"{name} predicts {classes} classes but {ref_name} predicts "
                f"{ref_classes}; teachers and student must share the label set"
            )
        if shape != ref_shape:
            raise ValueError(
                f"{name} takes inputs of shape {shape} but {ref_name} takes "
                f"{ref_shape}; teachers and student must read the same inputs"
            )


def softmax_layer(model):
    """The name of the layer that ends `model` with a softmax, or None.

    Looks at the last layer only (descending into a model nested there): a Softmax layer,
    or a layer whose `activation` is softmax (Dense(..., activation="softmax"),
    Activation("softmax")).
    """
    layers = getattr(model, "layers", None)
    if not layers:
        return None
    last = layers[-1]
    if isinstance(last, keras.Model):
        return softmax_layer(last)
    activation = getattr(last, "activation", None)
    if isinstance(last, keras.layers.Softmax) or getattr(activation, "__name__", None) == "softmax":
        return last.name
    return None


def output_kinds(outputs, count, argument="member_outputs"):
    """Each of `count` models' output kind, from one kind for all or a list of one per model."""
    kinds = [outputs] * count if isinstance(outputs, str) else list(outputs)
    if isinstance(outputs, str) and outputs not in OUTPUTS or any(
            not isinstance(k, str) or k not in OUTPUTS for k in kinds):
        raise ValueError(f"unknown {argument} {outputs!r}; choose one of: {', '.join(OUTPUTS)}, "
                         "or a list of one of them per model")
    if len(kinds) != count:
        raise ValueError(f"{argument} lists {len(kinds)} output kinds for {count} models; give "
                         "one per model, or one string for all")
    return tuple(kinds)


def as_logits(outputs, kinds):
    """Each model's outputs as logits: probabilities become log(p), logits stay."""
    return [probabilities_to_logits(o) if kind == "probabilities" else o
            for o, kind in zip(outputs, kinds)]


def kind_problem(outputs, kind):
    """Why a sample of a model's `outputs` contradicts its declared `kind`, or None: rows
    that are probabilities declared as logits, or rows that are not probabilities (a
    negative value, or a sum away from 1) declared as probabilities."""
    outputs = np.asarray(outputs, dtype=np.float64)
    if outputs.ndim != 2 or outputs.shape[-1] < 2:
        return None
    if kind == "logits" and looks_like_probabilities(outputs):
        return ("outputs probabilities (non-negative, each row sums to 1), which would be "
                "read as logits")
    # Looser for declared probabilities: a float16 softmax's rows sum to 1 within ~1e-3.
    if kind == "probabilities" and not looks_like_probabilities(outputs, tolerance=1e-2):
        sums = outputs.sum(axis=-1)
        row = int(np.argmax(np.abs(sums - 1.0) + (outputs.min(axis=-1) < 0)))
        return (f"is declared to output probabilities, but its outputs are not (row {row} "
                f"sums to {sums[row]:.4g}, least value {outputs[row].min():.4g}); they look "
                "like logits, which would be clipped and taken as log-probabilities")
    return None


def without_softmax(model):
    """(model, the softmax layer's name): `model` made to output its logits when it ends in
    a softmax (most saved Keras classifiers do), else (`model`, None).

    A Dense (or other layer) with a softmax activation gets a linear one: the model then
    outputs the softmax's input, the exact logits. A final Softmax or Activation layer is
    cut off: the model's output becomes that layer's input. The logits z and log p differ by
    a constant per example, so every softmax of them, at any temperature, and every
    average of the members, is the same. A ValueError where the softmax sits inside a
    nested model or a layer with several inputs.
    """
    name = softmax_layer(model)
    if name is None:
        return model, None
    last = model.layers[-1]
    if isinstance(last, keras.Model):
        raise ValueError(f"{model.name} ends in a softmax inside its nested model "
                         f"{last.name!r}; save it with logits outputs, or load it yourself "
                         "and pass teacher_outputs='probabilities' to a Distiller")
    if getattr(last, "activation", None) is not None and not isinstance(
            last, (keras.layers.Activation, keras.layers.Softmax)):
        last.activation = keras.activations.linear
        return model, name
    inputs = getattr(model, "inputs", None)
    if not inputs or isinstance(last.input, (list, tuple, dict)):
        raise ValueError(f"{model.name} ends in a softmax layer {name!r} that cannot be cut "
                         "off; save it with logits outputs")
    return keras.Model(inputs, last.input, name=model.name), name


def check_outputs(models, names, outputs, fix):
    """Raises a ValueError when a model declared to output logits ends in a softmax.

    `outputs` is one kind for all `models` or a list of one per model; `fix` is the
    argument that declares probabilities, e.g. "teacher_outputs='probabilities'".
    """
    kinds = output_kinds(outputs, len(models), fix.split("=")[0])
    for model, name, kind in zip(models, names, kinds):
        layer = softmax_layer(model) if kind == "logits" else None
        if layer is not None:
            raise ValueError(
                f"{name} ends in a softmax (layer {layer!r}), so it outputs probabilities, "
                f"which would be read as logits; pass {fix}")


def looks_like_probabilities(outputs, tolerance=1e-3):
    """Whether a (N, C) batch of outputs, C > 1, is non-negative with rows summing to 1."""
    outputs = np.asarray(outputs, dtype=np.float64)
    return (outputs.ndim == 2 and outputs.shape[-1] > 1 and bool(np.all(outputs >= 0))
            and bool(np.all(np.abs(outputs.sum(axis=-1) - 1.0) < tolerance)))


def probabilities_to_logits(probs):
    """log(p), a valid set of logits for probabilities p: softmax(log p / T) equals softmax(z / T)
    for the logits z that gave p, at every temperature T, since log p and z differ by a
    per-example constant. Zeros (underflowed probabilities) become the log of float32's
    smallest normal number instead of -inf."""
    probs = ops.cast(probs, "float32")
    return ops.log(ops.maximum(probs, np.finfo(np.float32).tiny))


def average_logits(member_logits, average="logits"):
    """Combines a list of per-member logits into ensemble logits.

    "logits": the mean of the logits. "probabilities": log of the mean of the
    softmax outputs, computed as a logsumexp for stability; softmax of it gives
    back the mean probability, so it can stand wherever logits are expected.
    """
    stacked = ops.stack([ops.cast(z, "float32") for z in member_logits], axis=0)
    if average == "logits":
        return ops.mean(stacked, axis=0)
    log_probs = ops.log_softmax(stacked, axis=-1)
    return ops.logsumexp(log_probs, axis=0) - ops.log(float(len(member_logits)))


def member_count(model):
    """How many members' logits `model` gives: an Ensemble's members, or 1 for one model."""
    return len(model.members) if isinstance(model, Ensemble) else 1


def stacked_member_logits(model, inputs, training=False):
    """Each member's logits on `inputs`, stacked on axis 1: (batch, members, classes). An
    Ensemble's `member_logits` (probabilities taken as logits); one model is one member."""
    logits = (model.member_logits(inputs, training=training) if isinstance(model, Ensemble)
              else [single_output(model(inputs, training=training), model.name)])
    # float32, as `average_logits` gives: members may differ in dtype (mixed precision).
    return ops.stack([ops.cast(z, "float32") for z in logits], axis=1)


class MemberLogits(keras.Model):
    """A model whose output is `stacked_member_logits(teachers, x)`: every member's logits
    from one `predict` over the inputs (an augmented pipeline is drawn once, not once per
    member)."""

    def __init__(self, teachers, **kwargs):
        super().__init__(name=f"{teachers.name}_members", **kwargs)
        self.teachers = teachers
        self.built = bool(teachers.built)

    def call(self, inputs, training=False):
        return stacked_member_logits(self.teachers, inputs, training=training)


def for_inference(model, sample):
    """(`model` for inference with frozen weights, its `folding.Folded` copies): an Ensemble's
    members, or a single model, with BatchNorm folded where `folding.fold` finds that exact
    on `sample`; the model itself, and no copies, where nothing folds."""
    members = model.members if isinstance(model, Ensemble) else [model]
    folds = [folding.fold(m, sample) for m in members]
    if not any(folds):
        return model, []
    members = [f.folded if f else m for f, m in zip(folds, members)]
    if not isinstance(model, Ensemble):
        return members[0], folds
    return (Ensemble(members, average=model.average, member_outputs=model.member_outputs,
                     name=f"{model.name}_folded"), [f for f in folds if f])


def _without_compile_config(config):
    # NOTE: a member's optimizer is of no use inside an Ensemble (nor to a Distiller's
    # frozen teachers), and a member compiled again on load gets an optimizer without
    # slots for its (then frozen) weights: Keras warns "Skipping variable loading for
    # optimizer" on every load of a saved Ensemble or Distiller.
    return {**config, "compile_config": None} if isinstance(config, dict) else config


@keras.saving.register_keras_serializable(package="tfkd")
class Ensemble(keras.Model):
    """Averages the outputs of `members`.

    Its own output is logits (see `average_logits`), so an Ensemble can be
    compiled with `SparseCategoricalCrossentropy(from_logits=True)`, evaluated,
    saved and loaded like any Keras model, and handed to a Distiller as teacher.

    Args:
      members: keras.Models of one label set and input shape.
      average: "logits" (mean of the logits) or "probabilities" (mean of the
        softmax outputs, returned as its log).
      member_outputs: what the members output: "logits" (default) or
        "probabilities" (e.g. models ending in a softmax, as many saved Keras
        classifiers do), or a list of one of them per member, to mix the two;
        probabilities are taken as logits log(p), which changes neither average.
        Members ending in a softmax declared "logits" are refused.
    """

    def __init__(self, members, average="logits", member_outputs="logits", **kwargs):
        super().__init__(**kwargs)
        members = list(members) if isinstance(members, (list, tuple)) else [members]
        if not members:
            raise ValueError("an Ensemble needs at least one member; got an empty list")
        for i, member in enumerate(members):
            if not isinstance(member, keras.Model):
                raise ValueError(
                    f"ensemble member {i} is a {type(member).__name__}, expected a keras.Model"
                )
        if average not in AVERAGES:
            raise ValueError(
                f"unknown average {average!r}; choose one of: {', '.join(AVERAGES)}"
            )
        names = [f"ensemble member {i}" for i in range(len(members))]
        check_compatible(members, names)
        check_outputs(members, names, member_outputs, "member_outputs='probabilities'")
        self.members = members
        self.average = average
        self.member_outputs = (member_outputs if isinstance(member_outputs, str)
                               else list(member_outputs))
        self.output_kinds = output_kinds(member_outputs, len(members))
        if all(member.built for member in members):
            self.built = True

    def build(self, input_shape=None):
        if input_shape is not None:
            inputs = keras.tree.map_shape_structure(keras.KerasTensor, input_shape)
            for member in self.members:
                if not member.built:
                    # A symbolic call builds any kind of model (Sequential, subclassed),
                    # as its first real call would.
                    member(inputs)
        self.built = True

    def call(self, inputs, training=False):
        return average_logits(self.member_logits(inputs, training=training), self.average)

    def member_logits(self, inputs, training=False):
        """Each member's logits, as a list."""
        outputs = [single_output(member(inputs, training=training), f"ensemble member {i}")
                   for i, member in enumerate(self.members)]
        return as_logits(outputs, self.output_kinds)

    def evaluate_members(self, x, y, batch_size=256):
        """Each member's and the ensemble's accuracy, NLL and ECE, and the members' disagreement.

        Returns {"members": [report, ...], "ensemble": report, "disagreement": float or None,
        "logits": the ensemble's logits as a NumPy array}.
        """
        member_logits = [m.predict(x, batch_size=batch_size, verbose=0) for m in self.members]
        member_logits = [np.asarray(z) for z in as_logits(member_logits, self.output_kinds)]
        ensemble_logits = np.asarray(average_logits(member_logits, self.average))
        return {
            "members": [metrics_lib.classification_report(y, z) for z in member_logits],
            "ensemble": metrics_lib.classification_report(y, ensemble_logits),
            "disagreement": (metrics_lib.pairwise_disagreement(np.stack(member_logits))
                             if len(member_logits) > 1 else None),
            "logits": ensemble_logits,
        }

    def get_config(self):
        return {
            **super().get_config(),
            "members": [_without_compile_config(keras.saving.serialize_keras_object(m))
                        for m in self.members],
            "average": self.average,
            "member_outputs": self.member_outputs,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        members = [keras.saving.deserialize_keras_object(m) for m in config.pop("members")]
        return cls(members, **config)

    @classmethod
    def load(cls, paths, average="logits", member_outputs="logits", **kwargs):
        """Builds an Ensemble from saved `.keras` member files."""
        return cls([keras.saving.load_model(p, compile=False) for p in paths],
                   average=average, member_outputs=member_outputs, **kwargs)
