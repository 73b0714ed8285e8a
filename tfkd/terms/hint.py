"""FitNets hint: Romero et al., "FitNets: hints for thin deep nets" (ICLR 2015)."""

import keras
from keras import ops

from tfkd.terms import base


@base.register("hint")
class FitNet(base.Term):
    """Squared error between the first teacher's `teacher_layer` output and the student's
    `student_layer` output through a learned 1x1 adapter (to the teacher's channels),
    averaged over every non-batch axis, so its weight does not depend on the map's size.

    The command line adds it to the chosen method with --hint_layer and --hint_weight; the
    Distiller with `hint=Hint(...)` or in `terms=`.
    """

    reads = frozenset({"layers"})
    over_classes = False

    def __init__(self, teacher_layer, student_layer, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.teacher_layer, self.student_layer, self.seed = teacher_layer, student_layer, seed
        self.adapter = None

    @property
    def teacher_layers(self):
        return (self.teacher_layer,)

    @property
    def student_layers(self):
        return (self.student_layer,)

    def setup(self, student, teacher, classes):
        if teacher is None:
            raise ValueError("a hint loss needs teacher models (teachers=None was given)")
        student_shape = tuple(base.layer_output(student, self.student_layer, "the student").shape)
        teacher_shape = tuple(base.layer_output(teacher, self.teacher_layer, "teacher 0").shape)
        if self.adapter is None:
            self.adapter = _adapter(student_shape, teacher_shape, self.seed)
            self.adapter.build(student_shape)

    def call(self, teacher, student, labels=None, epoch=None):
        return feature_mse(teacher["layers"][self.teacher_layer],
                           self.adapter(student["layers"][self.student_layer]))

    def get_config(self):
        return {**super().get_config(), "teacher_layer": self.teacher_layer,
                "student_layer": self.student_layer, "seed": self.seed}


def feature_mse(target, guess):
    """Squared error per example, averaged over every non-batch axis."""
    diff = ops.square(ops.cast(guess, "float32") - ops.cast(target, "float32"))
    return ops.mean(ops.reshape(diff, (ops.shape(diff)[0], -1)), axis=-1)


def _adapter(student_shape, teacher_shape, seed=None):
    """A 1x1 projection from the student's feature channels to the teacher's."""
    if student_shape[1:-1] != teacher_shape[1:-1]:
        raise ValueError(
            f"hint layers differ in spatial shape: student {student_shape[1:-1]} vs "
            f"teacher {teacher_shape[1:-1]}; pick layers of the same resolution")
    channels = teacher_shape[-1]
    rank = len(student_shape)
    init = keras.initializers.GlorotUniform(seed=seed)
    layers = {2: keras.layers.Dense, 3: keras.layers.Conv1D, 4: keras.layers.Conv2D}
    if rank not in layers:
        raise ValueError(f"hint features of rank {rank} are not supported (2, 3 or 4)")
    size = () if rank == 2 else (1,)
    return layers[rank](channels, *size, kernel_initializer=init, name="hint_adapter")
