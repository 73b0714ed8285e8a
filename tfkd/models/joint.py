"""The average of k networks trained together as one network ("ensemble training").

Allen-Zhu & Li contrast two ways of getting the average of k networks of one architecture:

- an *ensemble*: k networks trained independently (seeds differ), averaged afterwards
  (`tfkd.Ensemble`);
- *joint training*: one network whose output is the average of the k sub-networks' logits,
  trained end to end with cross-entropy on that average.

For neural networks on multi-view data only the first gives the ensemble's gain: trained
together, the sub-networks share one loss, so once the average fits a sample no sub-network
is pushed to learn the views it missed. `build_joint` builds the second;
`build_side_by_side` puts k separate models in one Keras model with one output (and one
loss) each, which trains them independently in a single `fit`.

    joint = build_joint("patch_net", (16, 64), 10, k=10, seed=0)
    joint.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))

Layers: "inputs", the k sub-networks (nested functional models named
"<model_name>_member<i>", each exactly what `build_model(name, ...)` returns), their logits
stacked by "features" into shape (batch, k, num_classes), and their mean "logits". As for
every registry model the output layer is "logits"; the penultimate "features" holds the
sub-networks' logits, which is what the average is computed from. Only stock Keras layers
are used, so a saved `.keras` file loads without tfkd.

NOTE: not registered in `MODELS`: it is a wrapper around a registered architecture, and a
"joint" entry would need `base=` and `k=` arguments that a `--model` choice cannot carry.
"""

from __future__ import annotations

import numbers
from typing import Optional

import keras

from tfkd.models.registry import LayerSeeds, build_model


def build_joint(
    name: str,
    input_shape,
    num_classes: int,
    *,
    k: int,
    seed: Optional[int],
    model_name: Optional[str] = None,
    **kwargs,
) -> keras.Model:
    """A functional keras.Model whose logits are the mean of the logits of k sub-networks.

    Args:
      name: the registered architecture of every sub-network (see `tfkd.models.MODELS`).
      input_shape, num_classes: as for `build_model`.
      k: number of sub-networks, >= 1.
      seed: sub-network i is built with its own seed, drawn from (seed, i), so they start
        from different weights and the same `seed` rebuilds the same model. None leaves every
        sub-network unseeded.
      model_name: the Keras name of the joint model (default "joint_<name>", numbered when
        taken); sub-network i is named "<model_name>_member<i>".
      kwargs: passed to every sub-network's builder.
    """
    if isinstance(k, bool) or not isinstance(k, numbers.Integral) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    if seed is not None and (
        isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0
    ):
        raise ValueError(f"seed must be a non-negative integer or None, got {seed!r}")
    if model_name is None:
        base = f"joint_{name}"
        uid = keras.backend.get_uid(base)
        model_name = base if uid == 1 else f"{base}_{uid - 1}"
    # LayerSeeds mixes (seed, i) through a SeedSequence, so sub-network seeds of nearby joint
    # seeds do not overlap the way seed + i would.
    member_seeds = LayerSeeds(None if seed is None else int(seed))
    members = [
        build_model(name, input_shape, num_classes, seed=member_seeds.next(),
                    model_name=f"{model_name}_member{i}", **kwargs)
        for i in range(int(k))
    ]
    inputs = keras.Input(tuple(int(d) for d in input_shape), name="inputs")
    # (batch, C) -> (batch, 1, C) each, concatenated to (batch, k, C).
    stacked = [
        keras.layers.Reshape((1, int(num_classes)), name=f"member{i}_logits")(member(inputs))
        for i, member in enumerate(members)
    ]
    features = (stacked[0] if k == 1 else
                keras.layers.Concatenate(axis=1, name="stack")(stacked))
    # NOTE: an Identity layer names the stack "features" also when k = 1 (Concatenate needs
    # two inputs).
    features = keras.layers.Identity(name="features")(features)
    # The mean over k, in float32 whatever the sub-networks' compute dtype.
    logits = keras.layers.GlobalAveragePooling1D(name="logits", dtype="float32")(features)
    return keras.Model(inputs, logits, name=model_name)


def joint_members(model: keras.Model) -> list:
    """The sub-networks of a `build_joint` model (also after loading), in order.

    Each is a plain logits model of the base architecture, sharing its weights with the
    joint model: evaluate, distil from or save it like any single model.
    """
    members = {}
    for layer in model.layers:
        _, sep, index = layer.name.rpartition("_member")
        if isinstance(layer, keras.Model) and sep and index.isdigit():
            members[int(index)] = layer
    if not members:
        raise ValueError(f"model {model.name!r} has no sub-networks; build it with build_joint")
    # NOTE: sorted by the index in the name, not by `model.layers`, whose order is the
    # graph's topological order and not a promise about creation order.
    return [members[i] for i in sorted(members)]


def build_side_by_side(members, *, name: str = "side_by_side") -> keras.Model:
    """One Keras model with one output per member: `[member(x) for member in members]`.

    Compiled with one loss per output, `fit` minimises their sum, and member i's weights
    receive the gradient of its own loss only, so this is k independent trainings on the
    same batches, one graph instead of k `fit` calls (much faster for small models). With
    a per-weight optimizer such as Adam or SGD the updates are exactly those of training
    each member alone; the members share the model's weights, so they are the trained
    models afterwards.

    NOTE: an optimizer that couples weights (global gradient clipping, `clipnorm` on the
    whole update, LAMB-style trust ratios over all weights) would couple the members too.
    """
    members = list(members)
    if not members:
        raise ValueError("build_side_by_side needs at least one member; got none")
    names = [m.name for m in members]
    if len(set(names)) != len(names):
        raise ValueError(f"members need distinct names (their outputs are named after them), "
                         f"got {names}")
    shapes = {tuple(m.input_shape[1:]) for m in members}
    if len(shapes) != 1:
        raise ValueError(f"members take inputs of different shapes: {sorted(shapes)}")
    inputs = keras.Input(shapes.pop(), name="inputs")
    return keras.Model(inputs, [member(inputs) for member in members], name=name)
