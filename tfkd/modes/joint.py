"""joint: the average of --num_models networks trained together as one network.

Allen-Zhu & Li's contrast to the ensemble: the same average of k models of one
architecture, but trained end to end on cross-entropy of the averaged logits
(`tfkd.models.joint.build_joint`), seed s. Its row ("joint", kind "joint") sits in the
results table next to the members and their ensemble.
"""

from tfkd.models.joint import build_joint
from tfkd.modes import fit, inputs, results


def run(config, workdir, splits=None, progress=None):
    splits = splits or inputs.load_splits(config)

    def build(config, splits, seed, name):
        model, kwargs = fit.architecture(config)
        return build_joint(model, splits.input_shape, splits.num_classes,
                           k=config.num_models, seed=seed, model_name=name, **kwargs)

    _, row = fit.fit_model(config, workdir, splits, name="joint", kind="joint",
                           seed=config.seed, progress=progress or results.Progress(1),
                           build=build, extra_settings={"joint_k": config.num_models})
    return [row]
