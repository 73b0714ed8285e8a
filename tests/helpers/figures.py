"""Checks on drawn matplotlib figures."""


def tick_labels(axes, axis="x"):
    """The visible, non-empty tick labels of `axes` after drawing: [(text, extent)]."""
    figure = axes.figure
    renderer = figure.canvas.get_renderer()
    ticks = axes.xaxis if axis == "x" else axes.yaxis
    labels = ticks.get_ticklabels(minor=False) + ticks.get_ticklabels(minor=True)
    return [(label.get_text(), label.get_window_extent(renderer)) for label in labels
            if label.get_visible() and label.get_text()]


def overlapping_tick_labels(figure):
    """Pairs of tick labels of one axis of `figure` that overlap once drawn."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(figure).draw()
    pairs = []
    for axes in figure.axes:
        for axis in ("x", "y"):
            labels = tick_labels(axes, axis)
            for i, (a, box_a) in enumerate(labels):
                for b, box_b in labels[i + 1:]:
                    if box_a.overlaps(box_b):
                        pairs.append((a, b))
    return pairs
