"""L-infinity adversarial examples (FGSM, PGD) and their transfer from teacher to students.

Ojha et al. (NeurIPS 2023) ask whether a distilled student inherits its teacher's
adversarial vulnerability: adversarial images made against the teacher should fool the
distilled student more often than an independently trained one.

All attacks are untargeted: they ascend the cross-entropy of the model's logits at the true
label. Inputs need not lie in [0, 1] (data are often standardised), so the valid range
`clip=(lo, hi)` is an argument; derive it from the data, e.g. `(x.min(), x.max())`.
"""

import numpy as np
import tensorflow as tf

from tfkd.analysis import _checks
from tfkd.ensemble import check_compatible

ATTACKS = ("fgsm", "pgd")


def _inputs_and_labels(model, x, y, clip):
    x = _checks.inputs(x)
    y = _checks.labels(y, len(x), _checks.num_classes(model))
    return x, y, _checks.value_range(clip, x, "clip")


def _loss_gradient(model, x, y):
    """Gradient of the summed per-example cross-entropy with respect to the inputs."""
    x = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(x)
        logits = model(x, training=False)
        # Summed, not averaged: each example's gradient then does not shrink with the batch.
        loss = tf.reduce_sum(
            tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=logits)
        )
    return tape.gradient(loss, x).numpy()


def cross_entropy(model, x, y, batch_size=256):
    """Per-example cross-entropy of the model's logits at labels `y`, shape (N,)."""
    x, y, _ = _inputs_and_labels(model, x, y, None)
    batch_size = _checks.positive_int(batch_size, "batch_size")
    logits = _checks.predict_logits(model, x, batch_size)
    return tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=logits).numpy()


def fgsm(model, x, y, epsilon, clip=None, batch_size=256):
    """Fast gradient sign method (Goodfellow et al., 2015).

    x_adv = x + epsilon * sign(d CE(model(x), y) / dx), then clipped to `clip`.

    Args:
      model: a Keras model that outputs logits.
      x: (N, ...) inputs; y: (N,) integer labels.
      epsilon: L-infinity radius, >= 0, in the units of `x`.
      clip: (lo, hi) valid input range that contains `x`, or None for no clipping.
      batch_size: examples per gradient computation.

    Returns:
      float32 adversarial inputs of the shape of `x`.
    """
    epsilon = _checks.non_negative(epsilon, "epsilon")
    batch_size = _checks.positive_int(batch_size, "batch_size")
    x, y, clip = _inputs_and_labels(model, x, y, clip)
    adversarial = np.empty_like(x)
    for start in range(0, len(x), batch_size):
        batch = x[start : start + batch_size]
        step = epsilon * np.sign(_loss_gradient(model, batch, y[start : start + batch_size]))
        adversarial[start : start + batch_size] = batch + step
    if clip is not None:
        adversarial = np.clip(adversarial, *clip)
    return adversarial.astype(np.float32)


def pgd(
    model, x, y, epsilon, steps, step_size=None, clip=None, random_start=True, seed=None,
    batch_size=256,
):
    """Projected gradient descent on the loss, L-infinity ball (Madry et al., 2018).

    From x (or, with `random_start`, a uniform point of the epsilon ball), `steps` times:
    move `step_size * sign(gradient)`, project onto the epsilon ball around x, clip to `clip`.

    Args:
      model, x, y, clip, batch_size: as for `fgsm`.
      epsilon: L-infinity radius, >= 0.
      steps: number of gradient steps, >= 1.
      step_size: per-step move, > 0; default 2.5 * epsilon / steps (Madry et al.), enough
        to cross the ball from one side to the other.
      random_start: start from a uniform point of the ball rather than from x.
      seed: seed of the random start; None draws a fresh one.

    Returns:
      float32 adversarial inputs of the shape of `x`, within epsilon of `x` and inside `clip`.
    """
    epsilon = _checks.non_negative(epsilon, "epsilon")
    steps = _checks.positive_int(steps, "steps")
    batch_size = _checks.positive_int(batch_size, "batch_size")
    if step_size is None:
        step_size = 2.5 * epsilon / steps
    elif not float(step_size) > 0:
        raise ValueError(f"`step_size` must be > 0; got {step_size!r}.")
    x, y, clip = _inputs_and_labels(model, x, y, clip)
    lower, upper = x - epsilon, x + epsilon
    if clip is not None:
        # NOTE: both constraints are boxes, so projecting onto their intersection is one
        # clip to the tighter bound per coordinate; x itself lies in both, so it is never empty.
        lower, upper = np.maximum(lower, clip[0]), np.minimum(upper, clip[1])

    adversarial = x.copy()
    if random_start and epsilon > 0:
        noise = np.random.default_rng(seed).uniform(-epsilon, epsilon, size=x.shape)
        adversarial = np.clip(x + noise, lower, upper).astype(np.float32)
    for start in range(0, len(x), batch_size):
        part = slice(start, start + batch_size)
        batch = adversarial[part]
        for _ in range(steps):
            batch = batch + step_size * np.sign(_loss_gradient(model, batch, y[part]))
            batch = np.clip(batch, lower[part], upper[part]).astype(np.float32)
        adversarial[part] = batch
    return adversarial


def transfer(
    teacher, students, x, y, epsilon, attack="pgd", steps=10, step_size=None, clip=None,
    random_start=True, seed=None, batch_size=256,
):
    """How often adversarial examples made against the teacher also fool each student.

    An example "fools" a model when the model classifies it correctly clean and wrongly
    after the attack. Only examples the teacher gets right clean are attacked meaningfully,
    so:
      teacher_fooled = (teacher right clean and wrong on x_adv) / (teacher right clean);
      transfer[name] = among the teacher-fooling examples that the student gets right
        clean, the fraction the student gets wrong on x_adv.
    Conditioning on the student's clean correctness keeps a less accurate student from
    looking more vulnerable. A student identical to the teacher has transfer 1.0.

    Args:
      teacher: the Keras model attacked (white box).
      students: dict name -> Keras model, evaluated on the teacher's adversarial examples.
      x, y, epsilon, clip, batch_size: as for `fgsm`.
      attack: "pgd" or "fgsm"; steps, step_size, random_start, seed go to `pgd`.

    Returns:
      dict with "teacher_fooled" (float), "num_teacher_correct" and "num_teacher_fooled"
      (ints), "transfer" (name -> float), "num_transfer_examples" (name -> int, the
      denominator) and "num_transferred" (name -> int, the numerator). NOTE: a rate with
      a zero denominator is NaN, not 0.
    """
    if attack not in ATTACKS:
        raise ValueError(f"`attack` must be one of {ATTACKS}; got {attack!r}.")
    if not isinstance(students, dict) or not students:
        raise ValueError(f"`students` must be a non-empty dict name -> model; got {students!r}.")
    check_compatible(list(students.values()), list(students), teacher, "teacher")
    x, y, _ = _inputs_and_labels(teacher, x, y, None)
    if attack == "fgsm":
        x_adv = fgsm(teacher, x, y, epsilon, clip=clip, batch_size=batch_size)
    else:
        x_adv = pgd(
            teacher, x, y, epsilon, steps, step_size=step_size, clip=clip,
            random_start=random_start, seed=seed, batch_size=batch_size,
        )

    def correct(model, inputs):
        return np.argmax(_checks.predict_logits(model, inputs, batch_size), axis=-1) == y

    teacher_correct = correct(teacher, x)
    teacher_fools = teacher_correct & ~correct(teacher, x_adv)
    result = {
        "teacher_fooled": _rate(teacher_fools, teacher_correct),
        "num_teacher_correct": int(teacher_correct.sum()),
        "num_teacher_fooled": int(teacher_fools.sum()),
        "transfer": {},
        "num_transfer_examples": {},
        "num_transferred": {},
    }
    for name, student in students.items():
        candidates = teacher_fools & correct(student, x)
        fooled = candidates & ~correct(student, x_adv)
        result["transfer"][name] = _rate(fooled, candidates)
        result["num_transfer_examples"][name] = int(candidates.sum())
        result["num_transferred"][name] = int(fooled.sum())
    return result


def _rate(events, population):
    count = int(population.sum())
    return float(events.sum() / count) if count else float("nan")
