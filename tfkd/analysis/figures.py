"""PNG figures of an inheritance analysis: a property bar chart and a Grad-CAM grid.

Figures are drawn on bare `matplotlib.figure.Figure` objects with the Agg canvas, never
through pyplot, so no global backend or figure state is touched and nothing needs closing.
"""


import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from tfkd.workdir import save_figure

GRID_COLUMNS = ("teacher", "distilled", "independent")


def _save(figure, path):
    FigureCanvasAgg(figure)  # attaches itself as the figure's canvas
    save_figure(figure, path, dpi=100, bbox_inches="tight")
    return path


def plot_property_table(rows, path, title="What the student inherits"):
    """Grouped bar chart of (property, teacher-distilled value, teacher-independent value).

    `rows` is a list of such triples, e.g. from `inheritance.property_table`. Each property
    gets two bars: the distilled student and the independently trained one. Saves a PNG at
    `path` and returns `path`.
    """
    rows = list(rows)
    if not rows or any(len(row) != 3 for row in rows):
        raise ValueError(
            "`rows` must be a non-empty list of (property, distilled, independent) triples; "
            f"got {rows!r}."
        )
    names = [str(row[0]) for row in rows]
    distilled = np.array([row[1] for row in rows], dtype=float)
    independent = np.array([row[2] for row in rows], dtype=float)
    positions = np.arange(len(rows))
    width = 0.38

    figure = Figure(figsize=(max(4.0, 1.3 * len(rows) + 1.5), 3.6))
    axes = figure.add_subplot()
    axes.bar(positions - width / 2, distilled, width, label="teacher vs distilled")
    axes.bar(positions + width / 2, independent, width, label="teacher vs independent")
    axes.set_xticks(positions, names, rotation=30, ha="right")
    axes.axhline(0.0, color="black", linewidth=0.8)
    axes.set_title(title)
    axes.legend(frameon=False)
    return _save(figure, path)


def _display_image(image):
    """An (H, W, C) input as something imshow draws: rescaled to [0, 1], grey or RGB."""
    image = np.asarray(image, dtype=np.float64)
    # Inputs are often standardised; stretching each image to [0, 1] only affects display.
    span = image.max() - image.min()
    image = (image - image.min()) / span if span > 0 else np.zeros_like(image)
    return image[..., 0] if image.shape[-1] == 1 else image[..., :3]


def gradcam_figure(images, maps, labels=None, predictions=None, class_names=None,
                   max_rows=8, alpha=0.5):
    """The Grad-CAM grid as a matplotlib `Figure`: rows are images, columns the input and each
    model's map, with a colour bar of the map's scale (images).

    Args:
      images: (N, H, W, C) inputs, or (N, L, C) signals.
      maps: dict column title -> (N, H, W) or (N, L) maps in [0, 1], in column order,
        usually {"teacher": ..., "distilled": ..., "independent": ...}.
      labels: optional (N,) true classes, written under each input.
      predictions: optional dict column title -> (N,) predicted classes, written under that
        model's map (the class its map explains).
      class_names: optional names of the classes (default: their indices).
      max_rows: at most this many images (the first ones) are shown.
      alpha: opacity of a map over its image.
    """
    images = np.asarray(images)
    if images.ndim not in (3, 4) or len(images) == 0:
        raise ValueError(
            f"`images` must have shape (N, H, W, C) or (N, L, C); got shape {images.shape}."
        )
    if not maps:
        raise ValueError("`maps` must name at least one model's maps.")
    maps = {title: np.asarray(m) for title, m in maps.items()}
    for title, m in maps.items():
        if m.shape != images.shape[:-1]:
            raise ValueError(
                f"maps {title!r} must have shape {images.shape[:-1]} to match `images`; "
                f"got {m.shape}."
            )
    predictions = {title: np.asarray(p) for title, p in (predictions or {}).items()}
    unknown = set(predictions) - set(maps)
    if unknown:
        raise ValueError(f"`predictions` names {sorted(unknown)}, which have no maps.")

    def name(index):
        return str(class_names[int(index)]) if class_names is not None else str(int(index))

    num_rows = min(len(images), int(max_rows))
    titles = ["input", *maps]
    figure = Figure(figsize=(1.6 * len(titles) + (0.6 if images.ndim == 4 else 0),
                             1.8 * num_rows))
    grid = figure.subplots(num_rows, len(titles), squeeze=False)
    shown_map = None
    for row in range(num_rows):
        shown = _display_image(images[row])
        for column, title in enumerate(titles):
            axes = grid[row, column]
            if images.ndim == 4:
                axes.imshow(shown, cmap="gray" if shown.ndim == 2 else None)
                if column:
                    shown_map = axes.imshow(maps[title][row], cmap="jet", alpha=alpha,
                                            vmin=0.0, vmax=1.0)
                axes.set_xticks([])
                axes.set_yticks([])
            else:
                axes.plot(shown, color="black", linewidth=0.8)
                if column:
                    axes.plot(maps[title][row], color="tab:red")
                axes.set_ylim(-0.05, 1.05)
                axes.set_yticks([])
            if column == 0 and labels is not None:
                axes.set_xlabel(f"true: {name(labels[row])}", fontsize=8)
            elif column and title in predictions:
                axes.set_xlabel(f"predicted: {name(predictions[title][row])}", fontsize=8)
            if row == 0:
                axes.set_title(title, fontsize=9)
    if shown_map is not None:
        # One scale for every map: each is divided by its own maximum (gradcam.grad_cam).
        figure.colorbar(shown_map, ax=grid, fraction=0.04, pad=0.02,
                        label="Grad-CAM (each map / its maximum)")
    return figure


def plot_gradcam_grid(images, maps, path, max_rows=8, alpha=0.5, labels=None,
                      predictions=None, class_names=None):
    """`gradcam_figure(...)` saved as a PNG at `path`; returns `path`."""
    return _save(gradcam_figure(images, maps, labels=labels, predictions=predictions,
                                class_names=class_names, max_rows=max_rows, alpha=alpha), path)
