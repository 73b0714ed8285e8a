"""The distillation term: what every method is, and the few operations methods share.

A term is one distillation method. It is a `keras.layers.Layer`, so that the weights it owns
(an adapter, a learnable temperature) train, save and restore with the Distiller that holds
it, and it is called on outputs:

    term(teacher, student, labels=None, epoch=None) -> per-example losses, shape (N,)

`teacher` and `student` are dicts: "logits" (N, C), and when the term reads them, "members"
(the teachers' own logits, (N, M, C)) and "layers" ({layer name: output}). A plain tensor
stands for {"logits": tensor} (for the teacher, a rank-3 tensor for {"members": tensor}), so
a term is checked on plain tensors outside any Distiller: `KD(temperature=4)(t, s)`.
`term.loss(...)` reduces the per-example losses as a Keras loss does (sample weights, and
the division by the replica count that makes N replicas give one device's update).

A term declares what it reads (`reads`, `teacher_layers`, `student_layers`), refuses
models or class counts it cannot serve (`setup`, `check_classes`), and creates its own
weights in `setup`. The Distiller builds one feature extractor per model from the layers its
terms name, runs the teachers only when some term needs what the teacher cache lacks, and
weighs and sums the terms.
"""

import keras
from keras import ops

REGISTRY = {}


def register(name):
    """Class decorator: registers a Term as method `name` (the name of its module in
    tfkd/terms) and as a Keras serializable, so Distillers holding it save and load."""
    def decorate(cls):
        cls.key = name
        REGISTRY[name] = cls
        return keras.saving.register_keras_serializable(package="tfkd")(cls)
    return decorate


class Term(keras.layers.Layer):
    """Base class of distillation methods (see the module docstring).

    Class attributes a method sets:
      reads: what it needs beyond both sides' logits: "labels", "members" (each teacher's
        own logits; the teacher cache then holds them too), "layers".
      relational: True when its loss relates the examples of a batch (a correlation over
        the batch): under several replicas it is computed over each replica's share of the
        global batch, and its docstring says so.
      settings: {command-line setting: constructor argument} of its hyper-parameters.
    """

    key = None
    reads = frozenset()
    relational = False
    settings = {}
    over_classes = True  # compares distributions over classes (see tfkd.losses.over_classes)
    min_teachers = 1
    observes = ()  # names of the values `observed()` gives (CTKD's learned temperature)

    def __init__(self, name=None, **kwargs):
        kwargs.setdefault("dtype", "float32")  # losses in float32 under mixed precision too
        super().__init__(name=name or self.key, **kwargs)
        # NOTE: labels are integers and outputs may be float16: the term casts what it
        # reads itself, rather than Keras's autocasting of a layer's inputs.
        self._convert_input_args = False
        self.built = True  # weights, if any, come from setup(), not from a first call

    # -- what a method may override ------------------------------------------------------

    @property
    def teacher_layers(self):
        """Names of the (first) teacher's layers this term reads."""
        return ()

    @property
    def student_layers(self):
        """Names of the student's layers this term reads."""
        return ()

    def check_classes(self, classes):
        """A ValueError if this method is undefined for `classes` output units."""

    def setup(self, student, teacher, classes):
        """Validates the models it will read and creates the weights it owns. `teacher` is
        the first teacher model (None when only cached outputs are given), `classes` the
        student's output width (None when not known yet)."""
        if classes is not None:
            self.check_classes(classes)

    def call(self, teacher, student, labels=None, epoch=None):
        raise NotImplementedError

    def observed(self):
        """The current values of `observes`, {name: scalar}. The training logs show each
        beside the term's loss, as "<the term's log name less _loss>_<name>": its mean over
        the epoch's steps, each read after the step's update."""
        return {}

    # -- what every term has -------------------------------------------------------------

    def __call__(self, teacher, student, labels=None, epoch=None):
        return super().__call__(as_outputs(teacher, teacher=True), as_outputs(student),
                                labels=labels, epoch=epoch)

    def loss(self, teacher, student, labels=None, sample_weight=None, epoch=None):
        """The batch's loss, reduced as a Keras loss reduces ("sum_over_batch_size")."""
        return reduce(self(teacher, student, labels=labels, epoch=epoch), sample_weight)

    @property
    def owned_variables(self):
        """The weights this term created (what a saved training state must hold)."""
        return list(self.variables)


class _PerExample(keras.losses.Loss):
    """Keras's reduction of given per-example values (the values arrive as y_pred)."""

    def call(self, y_true, y_pred):
        return y_pred


_REDUCE = _PerExample(name="term")


def reduce(values, sample_weight=None):
    """Per-example values reduced as a Keras loss reduces them (see Term.loss)."""
    return _REDUCE(values, values, sample_weight)


def layer_output(model, name, role):
    """The symbolic output of `model`'s layer `name`, or a ValueError naming its layers."""
    try:
        return model.get_layer(name).output
    except ValueError:
        names = ", ".join(layer.name for layer in model.layers)
        raise ValueError(f"{role} has no layer named {name!r}; its layers are: {names}") from None


def as_outputs(value, teacher=False):
    """A term's input as a dict of outputs (see the module docstring)."""
    if isinstance(value, dict):
        return keras.tree.map_structure(ops.convert_to_tensor, value)
    value = ops.convert_to_tensor(value)
    if teacher and len(value.shape) == 3:
        return {"members": value}
    return {"logits": value}


def logits(outputs):
    return ops.cast(outputs["logits"], "float32")


def logit_pair(teacher, student, standardize=False):
    """Both sides' logits in float32, z-scored (`standardize`) when asked."""
    t, s = logits(teacher), logits(student)
    return (standardize_logits(t), standardize_logits(s)) if standardize else (t, s)


def members(outputs):
    """Each teacher's logits, (N, M, C)."""
    if "members" not in outputs:
        raise ValueError("this method reads each teacher's own logits (N, M, C): give "
                         "teacher={'members': ...}, several teachers, or a teacher cache of "
                         "member logits")
    return ops.cast(outputs["members"], "float32")


def class_indices(labels, classes):
    """Labels as class indices (N,): from indices of shape (N,) or (N, 1), or one-hot (N, C)."""
    if labels is None:
        raise ValueError("this method reads the labels: pass labels=")
    labels = ops.convert_to_tensor(labels)
    if len(labels.shape) == 2 and labels.shape[-1] == classes and classes != 1:
        return ops.argmax(labels, axis=-1)
    return ops.cast(ops.reshape(labels, (-1,)), "int32")


def log_softmax(z, temperature=1.0):
    return ops.log_softmax(z / temperature, axis=-1)


def soft_target_kl(teacher_logits, student_logits, temperature):
    """T^2 * KL(softmax(t / T) || softmax(s / T)) per example (Hinton et al.)."""
    log_p = log_softmax(teacher_logits, temperature)
    log_q = log_softmax(student_logits, temperature)
    return (temperature * temperature) * ops.sum(ops.exp(log_p) * (log_p - log_q), axis=-1)


def standardize_logits(z):
    """Logit standardization (Sun et al., CVPR 2024): each row z-scored over its classes,
    (z - mean) / (std + 1e-7), with the Bessel-corrected std of the authors' code (the
    paper writes the std without saying which; the correction scales every row by the same
    sqrt(C / (C - 1)), which acts as a fixed change of temperature)."""
    classes = z.shape[-1]
    centred = z - ops.mean(z, axis=-1, keepdims=True)
    variance = ops.sum(ops.square(centred), axis=-1, keepdims=True) / max(classes - 1, 1)
    return centred / (ops.sqrt(variance) + 1e-7)


def check_number(name, value, low=None, *, low_open=False, high=None):
    """`value` as a float, or a ValueError naming the argument and what it accepts."""
    ok = not isinstance(value, bool) and isinstance(value, (int, float)) and value == value
    ok = ok and abs(value) != float("inf")
    if ok and low is not None:
        ok = value > low if low_open else value >= low
    if ok and high is not None:
        ok = value <= high
    if not ok:
        where = (f" {'>' if low_open else '>='} {low:g}" if low is not None else "") + (
            f" and <= {high:g}" if high is not None else "")
        raise ValueError(f"{name} must be a finite number{where}, got {value!r}")
    return float(value)


@keras.saving.register_keras_serializable(package="tfkd")
class LossTerm(Term):
    """A `keras.losses.Loss` of (teacher_logits, student_logits) as a term: its per-example
    values (`loss.call`), reduced as every term is. What `distillation_loss=` makes of a
    Keras loss (for regression: `keras.losses.MeanSquaredError()` on raw outputs)."""

    def __init__(self, loss, **kwargs):
        kwargs.setdefault("name", getattr(loss, "name", None) or "loss_term")
        super().__init__(**kwargs)
        if not isinstance(loss, keras.losses.Loss):
            raise ValueError(f"LossTerm takes a keras.losses.Loss, got {type(loss).__name__}")
        self.wrapped = loss

    @property
    def over_classes(self):
        from tfkd import losses

        return losses.over_classes(self.wrapped)

    def call(self, teacher, student, labels=None, epoch=None):
        return self.wrapped.call(logits(teacher), logits(student))

    def get_config(self):
        return {**super().get_config(), "loss": keras.saving.serialize_keras_object(self.wrapped)}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["loss"] = keras.saving.deserialize_keras_object(config["loss"])
        return cls(**config)


def as_term(loss, temperature):
    """A distillation method given as a registered name, a Term, or a Keras loss, as a Term."""
    if isinstance(loss, Term):
        return loss
    if isinstance(loss, keras.losses.Loss):
        return LossTerm(loss)
    from tfkd import terms

    if isinstance(loss, str) and loss in terms.NAMES:
        return terms.get(loss)(temperature=temperature)
    raise ValueError(f"unknown distillation loss {loss!r}; choose one of: "
                     f"{', '.join(terms.NAMES)}, or pass a tfkd term or a keras.losses.Loss")
