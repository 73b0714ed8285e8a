"""self_distill: for each member, a chain of steps, each a fresh model taught by the last.

Chain i starts from member_i (seed s+i, trained on the labels alone: step 0); step g of it
has seed s+100*g+i, so every student has a seed of its own, and is taught by step g-1's
weights (the last epoch's, or the best on validation with --checkpoint=best_val). The
last steps of all chains are also averaged (the replication note's "ensemble of
self-distilled students"). The chains start from the members the workdir (or --teacher_dir)
holds; members missing from the workdir are trained first.

Each step's ground-truth weight alpha_g comes from --self_distill_alpha: --alpha for every
step, one number, one per step, or "optimal" (Borup & Andersen's estimate): a probe
student trained with alpha = 0 gives validation predictions y0, the chain's step-0 model
gives y1, and alpha_g = argmin_a ||a*y1 + (1-a)*y0 - Y||^2 over the one-hot validation
labels Y (closed form, `tfkd.theory.optimal_alpha`); the step is then trained with alpha_g.
Every alpha_g is recorded in the step's result row and in self_distill_alphas.json.
"""

import numpy as np
from absl import logging

from tfkd import cache, metrics
from tfkd.modes import fit, inputs, results, self_distill_fits, store, train
from tfkd.theory import optimal_alpha
from tfkd.workdir import write_json

PROBE_KIND = "alpha0_probe"


def chain_name(member, generation):
    return f"self_distilled_{member}_g{generation}"


def probe_name(member, generation):
    return f"{chain_name(member, generation)}_alpha0"


def validation_probabilities(model, splits):
    return metrics.softmax(cache.predict_logits(model, splits.x_val).astype(np.float64))


num_fits = self_distill_fits  # the one count, in the modes' registry


def run(config, workdir, splits=None, progress=None):
    splits = splits or inputs.load_splits(config)
    missing = train.missing_members(config, workdir)
    alphas = config.step_alphas()
    progress = progress or results.Progress(
        (config.num_models if missing else 0) + num_fits(config))
    rows = train.ensure_members(config, workdir, splits, progress)
    members, paths = inputs.load_members(config, workdir, splits)
    one_hot = np.eye(splits.num_classes)[splits.y_val]
    last_generation, chosen = [], {}
    for i, (member, member_path) in enumerate(zip(members, paths)):
        teachers = fit.Teachers(member, store.member_names(config.num_models)[i],
                                (member_path,))
        ground_truth_predictions = None
        for g, alpha in enumerate(alphas, start=1):
            seed = config.seed + 100 * g + i
            # A teacher of a chain teaches one student, whose views nobody else sees: its
            # outputs are cached only for an estimated alpha, whose probe sees them too.
            step = dict(kind="self_distilled", seed=seed, teachers=teachers, generation=g,
                        progress=progress, view_cache=alpha == "optimal")
            if alpha == "optimal":
                if ground_truth_predictions is None:
                    ground_truth_predictions = validation_probabilities(member, splits)
                # Same seed as the step itself: the probe is the step's own alpha = 0 run.
                probe, _ = fit.fit_model(config, workdir, splits, name=probe_name(i, g),
                                         **{**step, "kind": PROBE_KIND}, alpha=0.0)
                alpha = optimal_alpha(ground_truth_predictions.ravel(),
                                      validation_probabilities(probe, splits).ravel(),
                                      one_hot.ravel(), clip=config.alpha_clip)
                logging.info("%s: estimated alpha %.4f", chain_name(i, g), alpha)
            student, row = fit.fit_model(config, workdir, splits, name=chain_name(i, g),
                                         alpha=float(alpha), **step)
            rows.append(row)
            chosen.setdefault(f"chain_{i}", []).append(float(alpha))
            teachers = fit.Teachers(student, chain_name(i, g),
                                    (workdir.model_path(chain_name(i, g)),))
        last_generation.append(teachers.model)
    if workdir.writable:
        write_json(workdir.path("self_distill_alphas.json"),
                   {"self_distill_alpha": config.self_distill_alpha or str(config.alpha),
                    "clipped": config.alpha_clip, "alphas": chosen})
    if len(last_generation) > 1:
        _, row = results.ensemble_row(config, workdir, splits, last_generation,
                                     name="self_distilled_ensemble",
                                     kind="self_distilled_ensemble")
        rows.append(row)
    return rows
