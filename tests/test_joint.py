"""Tests of tfkd.models.joint: the jointly trained average of k networks, and k networks
trained side by side."""

import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from tfkd.data import make_tf_dataset
from tfkd.data.multiview import MultiViewConfig, make_multiview
from tfkd.models import build_joint, build_model, joint_members
from tfkd.models.joint import build_side_by_side

SMALL = MultiViewConfig(num_classes=4, dim=16, num_patches=8, train_size=256, val_size=16,
                        test_size=32)
SHAPE = SMALL.input_shape
K = 3


@pytest.fixture(scope="module")
def data():
    return make_multiview(SMALL, seed=0)


def _numpy(tensor):
    return keras.ops.convert_to_numpy(tensor)


def _ce():
    return keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def test_logits_are_the_mean_of_the_members_logits(data):
    joint = build_joint("patch_net", SHAPE, 4, k=K, seed=0)
    members = joint_members(joint)
    assert [m.name for m in members] == [f"{joint.name}_member{i}" for i in range(K)]
    x = data.test.x
    member_logits = np.stack([_numpy(m(x, training=False)) for m in members])
    np.testing.assert_allclose(_numpy(joint(x, training=False)), member_logits.mean(0),
                               rtol=1e-5, atol=1e-6)
    # Registry conventions: "logits" is the output layer, "features" the stacked members.
    assert joint.layers[-1].name == "logits"
    features = keras.Model(joint.input, joint.get_layer("features").output)
    np.testing.assert_allclose(_numpy(features(x)), member_logits.transpose(1, 0, 2), rtol=1e-6)
    assert joint.output_shape == (None, 4)


def test_members_start_from_different_weights_and_seeds_reproduce(data):
    joint = build_joint("patch_net", SHAPE, 4, k=K, seed=0)
    kernels = [m.get_layer("neurons").get_weights()[0] for m in joint_members(joint)]
    for i in range(K):
        for j in range(i):
            assert not np.allclose(kernels[i], kernels[j])
    keras.utils.set_random_seed(123)  # global state must not matter
    again = build_joint("patch_net", SHAPE, 4, k=K, seed=0)
    other = build_joint("patch_net", SHAPE, 4, k=K, seed=1)
    for a, b, c in zip(joint.get_weights(), again.get_weights(), other.get_weights()):
        np.testing.assert_array_equal(a, b)
        assert not np.array_equal(a, c)


@pytest.mark.parametrize("name", ["patch_net", "random_features"])
def test_training_updates_every_member(name, data):
    joint = build_joint(name, SHAPE, 4, k=K, seed=0)
    members = joint_members(joint)
    before = [[w.copy() for w in m.get_weights()] for m in members]
    trainable_before = [[_numpy(w).copy() for w in m.trainable_weights] for m in members]
    joint.compile(keras.optimizers.Adam(1e-2), _ce())
    joint.fit(data.train.x, data.train.y, batch_size=64, epochs=1, verbose=0)
    for member, old, old_trainable in zip(members, before, trainable_before):
        assert member.trainable_weights
        for w, old_w in zip(member.trainable_weights, old_trainable):
            assert not np.allclose(_numpy(w), old_w), (member.name, w.path)
        if name == "random_features":  # the frozen random layer stays frozen in every member
            np.testing.assert_array_equal(member.get_layer("neurons").get_weights()[0], old[0])


_LOAD_SCRIPT = """
import sys
import keras
import numpy as np
model = keras.models.load_model(sys.argv[1])
assert not any(m == "tfkd" or m.startswith("tfkd.") for m in sys.modules), "tfkd was imported"
np.save(sys.argv[3], keras.ops.convert_to_numpy(model(np.load(sys.argv[2]), training=False)))
"""


def test_save_load_round_trip(data, tmp_path):
    joint = build_joint("patch_net", SHAPE, 4, k=K, seed=0)
    joint.compile(keras.optimizers.Adam(1e-2), _ce())
    joint.fit(data.train.x, data.train.y, batch_size=64, epochs=1, verbose=0)
    x = data.test.x
    path = tmp_path / "joint.keras"
    joint.save(path)
    loaded = keras.models.load_model(path)
    np.testing.assert_array_equal(_numpy(loaded(x)), _numpy(joint(x)))
    for a, b in zip(joint_members(loaded), joint_members(joint)):
        assert a.name == b.name
        np.testing.assert_array_equal(_numpy(a(x)), _numpy(b(x)))
    # The saved file holds stock Keras layers only: a fresh interpreter without tfkd loads it.
    np.save(tmp_path / "x.npy", x)
    env = {**os.environ, "PYTHONPATH": "", "TF_CPP_MIN_LOG_LEVEL": "3"}
    result = subprocess.run(
        [sys.executable, "-c", _LOAD_SCRIPT, str(path), str(tmp_path / "x.npy"),
         str(tmp_path / "out.npy")],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    np.testing.assert_allclose(np.load(tmp_path / "out.npy"), _numpy(joint(x)), rtol=1e-6)


def test_one_member_and_bad_arguments(data):
    single = build_joint("patch_net", SHAPE, 4, k=1, seed=0)
    (member,) = joint_members(single)
    np.testing.assert_allclose(_numpy(single(data.test.x)), _numpy(member(data.test.x)),
                               rtol=1e-6)
    for k in (0, 2.0, True):
        with pytest.raises(ValueError, match="k must"):
            build_joint("patch_net", SHAPE, 4, k=k, seed=0)
    with pytest.raises(ValueError, match="seed"):
        build_joint("patch_net", SHAPE, 4, k=2, seed=-1)
    with pytest.raises(ValueError, match="unknown model"):
        build_joint("no_such_model", SHAPE, 4, k=2, seed=0)
    with pytest.raises(ValueError, match="sub-networks"):
        joint_members(build_model("patch_net", SHAPE, 4, seed=0))


def test_side_by_side_equals_separate_training(data):
    """Each member's loss reaches only its own weights: one fit of the stack gives the
    weights of fitting every member alone on the same batches."""

    def members():
        return [build_model("patch_net", SHAPE, 4, seed=s, model_name=f"m{s}") for s in (0, 1)]

    def batches():
        return make_tf_dataset(data.train.x, data.train.y, batch_size=64, shuffle=True, seed=3)

    together = members()
    stack = build_side_by_side(together)
    stack.compile(keras.optimizers.Adam(1e-2), [_ce() for _ in together])
    stack.fit(batches().map(lambda x, y: (x, (y, y))), epochs=2, shuffle=False, verbose=0)
    for member in together:
        alone = build_model("patch_net", SHAPE, 4, seed=int(member.name[1:]),
                            model_name=f"alone_{member.name}")
        alone.compile(keras.optimizers.Adam(1e-2), _ce())
        alone.fit(batches(), epochs=2, shuffle=False, verbose=0)
        for a, b in zip(member.get_weights(), alone.get_weights()):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    with pytest.raises(ValueError, match="distinct names"):
        build_side_by_side([together[0], together[0]])
