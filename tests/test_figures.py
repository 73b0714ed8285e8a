"""Figures read well: tick labels that do not overlap, whole-number steps."""

import dataclasses
import os

import numpy as np
import pytest

from helpers.figures import overlapping_tick_labels, tick_labels
from helpers.tools import load_tool
from tfkd.config import Config
from tfkd.modes import tune

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize("seed", range(4))
def test_trials_plot_tick_labels_do_not_overlap(seed):
    rng = np.random.default_rng(seed)
    # Searched ranges of a decade or less, and of several: where labels crowded.
    low_lr = float(rng.uniform(1e-4, 3e-3))
    config = dataclasses.replace(Config(), tune_learning_rate=(low_lr, low_lr * [1.5, 3, 10,
                                                                             100][seed]))
    low_t, high_t = config.tune_temperature
    high_lr = config.tune_learning_rate[1]
    trials = [{"temperature": float(np.exp(rng.uniform(np.log(low_t), np.log(high_t)))),
               "alpha": float(rng.uniform()),
               "learning_rate": float(np.exp(rng.uniform(np.log(low_lr), np.log(high_lr)))),
               tune.OBJECTIVE: float(rng.uniform(0.5, 0.9))} for _ in range(12)]
    trials.sort(key=lambda t: -t[tune.OBJECTIVE])
    figure = tune.trials_figure(config, trials)
    assert overlapping_tick_labels(figure) == []
    for axes in figure.axes:  # each axis still says where it is
        assert len(tick_labels(axes, "x")) >= 2


def _chain_tool():
    return load_tool("self_distill_chain")


@pytest.mark.parametrize("steps", [1, 2, 5])
def test_self_distillation_chain_plot_has_whole_step_ticks(steps):
    rng = np.random.default_rng(steps)
    results = {("digits", s): (rng.uniform(0.9, 1.0, (3, steps + 1)), None)
               for s in ("0", "optimal")}
    figure = _chain_tool().plot(results, ["digits"], ["0", "optimal"], steps)
    overlapping_tick_labels(figure)  # draws it
    labels = [text.replace("\u2212", "-") for text, _ in tick_labels(figure.axes[0], "x")]
    assert [float(t) for t in labels] == list(range(steps + 1))


def _tool(name):
    return load_tool(name)


@pytest.mark.parametrize("name,attribute", [
    ("fashion_mnist_repro", "plot"), ("invariance_transfer", "plot"),
    ("krr_self_distill", "out"), ("multiview_repro", "out"), ("methods_table", "plot")])
def test_reproduction_tools_write_their_figures_outside_docs_by_default(name, attribute):
    """A documented command run at smaller settings must not overwrite a committed figure:
    the tools write into their run's folder unless told --plot/--out=docs/..."""
    args = _tool(name).parse_args([])
    path = os.path.normpath(getattr(args, attribute))
    assert not path.startswith("docs" + os.sep) and os.sep + "docs" + os.sep not in path
    assert path.startswith("runs" + os.sep), path


def test_the_chain_tool_writes_its_figure_under_its_root_by_default():
    from absl import flags

    _chain_tool()
    assert flags.FLAGS["plot"].default is None and flags.FLAGS["root"].default.startswith("runs")
