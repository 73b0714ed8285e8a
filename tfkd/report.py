"""The results table of a run: Markdown, CSV, JSON and a PNG bar chart.

The table follows the replication note on the three "mysteries" (docs/papers.md, section 3):
each member, the members' mean ± std, the ensemble, the distilled student, each
self-distilled student, their mean ± std, and the ensemble of the self-distilled students.

Input is a list of result rows as the modes write them: dicts with `name`, `kind`, `seed`,
`generation`, `teacher`, `val_accuracy`, `test_accuracy` and optionally `test_nll`,
`test_ece`. Accuracies are fractions in [0, 1]; None means "not measured" and shows as "-".
Nothing here needs TensorFlow, so a finished workdir can be reported on any machine.
"""

import csv
import io
import json
import math
import os

from tfkd.workdir import save_figure, write_text

__all__ = ["summarize", "gains", "to_markdown", "to_csv", "plot_results", "write_report"]

KNOWN_KINDS = ("teacher", "member", "ensemble", "distilled", "self_distilled",
               "self_distilled_ensemble")
METRICS = ("val_accuracy", "test_accuracy", "test_nll", "test_ece")
_ACCURACIES = ("val_accuracy", "test_accuracy")
# How many examples a row's model was trained on and its metrics measured on.
SIZES = ("train_examples", "val_examples", "test_examples")
_FIELDS = ("name", "kind", "seed", "generation", "teacher", "alpha", *METRICS, *SIZES)
# alpha: the ground-truth weight a trained row's model was fitted with (an estimated
# --self_distill_alpha=optimal included); none on ensembles and summaries.
CSV_COLUMNS = ("name", "kind", "summarizes", "n", "seed", "generation", "teacher", "alpha",
               *(c for m in METRICS for c in (m, f"{m}_std")), *SIZES)

MEMBERS_SUMMARY = "members mean ± std"
SELF_DISTILLED_SUMMARY = "self-distilled mean ± std (last generation)"

# Gain key -> (what it compares, label in the Markdown lines).
_GAINS = {
    "ensemble": ("ensemble", "ensemble"),
    "distilled": ("distilled", "distilled"),
    "self_distilled": ("self_distilled", "self-distilled mean (last generation)"),
    "self_distilled_ensemble": ("self_distilled_ensemble", "self-distilled ensemble"),
}


# ----------------------------------------------------------------------------- table


def _number(row, key):
    """A metric as a plain float, None when absent or not finite.

    NOTE: metrics often arrive as NumPy float32, which neither `json` nor `%` formatting
    treat like a float; a NaN from a diverged run is "not measured", not a number to average.
    """
    value = row.get(key)
    if value is None:
        return None
    value = float(value)
    if not math.isfinite(value):
        return None
    if key in _ACCURACIES and not 0.0 <= value <= 1.0:
        raise ValueError(f"row {row.get('name')!r}: {key}={value} is not a fraction in [0, 1] "
                         "(accuracies are fractions, not percentages)")
    return value


def _normalize(rows):
    out, seen = [], set()
    for i, row in enumerate(rows):
        for key in ("name", "kind"):
            if not row.get(key):
                raise ValueError(f"result row {i} has no {key!r}: {row!r}")
        if row["name"] in seen:
            # Teacher links are by name, so a duplicate would make chains ambiguous.
            raise ValueError(f"two result rows are named {row['name']!r}")
        seen.add(row["name"])
        clean = {key: None for key in _FIELDS}
        clean.update(row)
        clean.update({m: _number(row, m) for m in METRICS})
        out.append(clean)
    return out


def _mean_std(values):
    values = [v for v in values if v is not None]
    if not values:
        return None, None
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, 0.0
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def _summary_row(name, summarizes, rows):
    summary = {"name": name, "kind": "summary", "summarizes": summarizes, "n": len(rows),
               "seed": None, "generation": None, "teacher": None}
    for metric in METRICS:
        summary[metric], summary[f"{metric}_std"] = _mean_std(r[metric] for r in rows)
    for size in SIZES:  # shown only when every summarized row has the same
        values = {r[size] for r in rows}
        summary[size] = values.pop() if len(values) == 1 else None
    return summary


def _order_self_distilled(students, rank):
    """Students chain by chain, and the last generation of each chain.

    A chain is followed through `teacher` links, so generation 2 may name either its
    generation-1 teacher or the chain's original teacher. Chains are ordered by where their
    root teacher sits in the table; within a root, by generation, walking each chain down
    before starting the next.
    """
    by_name = {s["name"]: s for s in students}
    index = {s["name"]: i for i, s in enumerate(students)}
    children = {}
    for s in students:
        children.setdefault(s["teacher"], []).append(s)

    def root_of(student):
        seen = set()
        while student["teacher"] in by_name and student["name"] not in seen:
            seen.add(student["name"])
            student = by_name[student["teacher"]]
        return student

    def by_generation(s):
        return (s["generation"] is None, s["generation"] or 0, index[s["name"]])

    roots = sorted({id(r): r for r in map(root_of, students)}.values(), key=lambda r: (
        r["teacher"] not in rank, rank.get(r["teacher"], 0), by_generation(r)))
    ordered, placed = [], set()

    def walk(student):
        if student["name"] in placed:
            return
        placed.add(student["name"])
        ordered.append(student)
        for child in sorted(children.get(student["name"], []), key=by_generation):
            walk(child)

    for root in roots:
        walk(root)
    ordered += [s for s in students if s["name"] not in placed]  # cycles

    # The last of a chain teaches no one, and no sibling (same teacher) is of a later
    # generation: the latter is what tells the end when every generation names the root.
    def last(s):
        later = [o for o in children.get(s["teacher"], [])
                 if (o["generation"] or 0) > (s["generation"] or 0)]
        return s["name"] not in children and not later

    return ordered, [s for s in ordered if last(s)]


def summarize(rows):
    """The table rows in display order.

    Teachers from outside the workdir, members, a members summary row, ensemble, distilled, the self-distilled students (chain by
    chain, by generation), a summary row over the last generation of each chain, the
    self-distilled ensemble, then rows of any other kind in input order.

    A summary row has kind "summary", `summarizes` (the kind), `n` (rows summarized) and, for
    every metric, the mean and `<metric>_std` over the rows where it was measured. The std is
    the sample std (ddof=1) for two or more values, 0 for one, None for none. Other rows are
    copies of the input with missing fields set to None and metrics as plain floats.
    """
    rows = _normalize(rows)
    of_kind = lambda kind: [r for r in rows if r["kind"] == kind]  # noqa: E731
    members = of_kind("member")
    if members:
        members.append(_summary_row(MEMBERS_SUMMARY, "member", members))
    # Teachers from --teacher_dir, evaluated on this run's data, come first.
    table = of_kind("teacher") + members
    table += of_kind("ensemble") + of_kind("distilled")
    students = of_kind("self_distilled")
    if students:
        rank = {r["name"]: i for i, r in enumerate(table)}
        ordered, last = _order_self_distilled(students, rank)
        table += ordered + [_summary_row(SELF_DISTILLED_SUMMARY, "self_distilled", last)]
    table += of_kind("self_distilled_ensemble")
    table += [r for r in rows if r["kind"] not in KNOWN_KINDS]
    return table


def _summary_of(table, kind):
    return next((r for r in table if r.get("summarizes") == kind), None)


def _gains(table):
    members = _summary_of(table, "member")
    if members is None or members["test_accuracy"] is None:
        return {}
    out = {}
    for key, (kind, _) in _GAINS.items():
        if kind == "self_distilled":
            summary = _summary_of(table, kind)
            value = summary and summary["test_accuracy"]
        else:
            # Several rows of one kind (e.g. ensembles of different sizes) count by their mean.
            value, _ = _mean_std(r["test_accuracy"] for r in table if r["kind"] == kind)
        if value is not None:
            # Rounded because differences of fractions carry float noise (1.5000000000000013).
            out[f"{key}_minus_member_mean"] = round(100 * (value - members["test_accuracy"]), 10)
    return out


def gains(rows):
    """Test-accuracy gains over the members' mean, in percentage points.

    Keys "ensemble_minus_member_mean", "distilled_minus_member_mean",
    "self_distilled_minus_member_mean" (mean of the last generation of each chain) and
    "self_distilled_ensemble_minus_member_mean"; a kind with no measured test accuracy is
    left out, and so is everything when the members have none.
    """
    return _gains(summarize(rows))


# ----------------------------------------------------------------------------- text formats


def _percent(value, std=None):
    if value is None:
        return "-"
    text = f"{100 * value:.2f}"
    return text if std is None else f"{text} ± {100 * std:.2f}"


def _signed(points):
    # + 0.0 turns a rounded -0.0 into 0.0, so a tie never prints as "-0.00".
    return f"{round(points, 2) + 0.0:+.2f}"


def cell(value, number="{}"):
    """One Markdown table cell: "-" for a value not measured (None, NaN, inf), a number in
    `number`'s format, anything else as text with its pipes escaped. Every table tfkd
    writes (results, trials, analysis) formats its cells here."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return number.format(value)
    return str(value).replace("|", "\\|")


def markdown_table(header, rows, number="{}", right_from=1):
    """Lines of a Markdown table; columns from `right_from` on are right-aligned."""
    lines = ["| " + " | ".join(header) + " |",
             "|" + "".join("---:|" if i >= right_from else "---|" for i in range(len(header)))]
    lines += ["| " + " | ".join(cell(v, number) for v in row) + " |" for row in rows]
    return lines



def _markdown(table, title=None):
    lines = [f"## {title}", ""] if title else []
    lines += ["| model | kind | seed | teacher | alpha | val acc (%) | test acc (%) | "
              "train / val / test |",
              "|---|---|---|---|---:|---:|---:|---:|"]
    for r in table:
        if r["kind"] == "summary":
            name, seed = f"**{cell(r['name'])}**", f"n={r['n']}"
            accuracies = [_percent(r[m], r[f"{m}_std"]) for m in _ACCURACIES]
        else:
            name, seed = cell(r["name"]), cell(r["seed"])
            accuracies = [_percent(r[m]) for m in _ACCURACIES]
        sizes = " / ".join(cell(r.get(k)) for k in SIZES)
        alpha = "-" if r.get("alpha") is None else f"{float(r['alpha']):.4g}"
        lines.append(f"| {name} | {cell(r['kind'])} | {seed} | {cell(r['teacher'])} | "
                     f"{alpha} | " + " | ".join(accuracies) + f" | {sizes} |")
    found = _gains(table)
    if found:
        lines.append("")
        for key, (_, label) in _GAINS.items():
            if f"{key}_minus_member_mean" in found:
                points = found[f"{key}_minus_member_mean"]
                lines.append(f"{label} vs mean member: {_signed(points)} points (test)  ")
        lines[-1] = lines[-1].rstrip()
    return "\n".join(lines) + "\n"


def to_markdown(rows, title=None):
    """A Markdown table (accuracies in %, summary rows as "mean ± std") and the gains below it.

    Summary rows show the number of rows they summarize in the seed column ("n=5").
    """
    return _markdown(summarize(rows), title)


def to_csv(rows):
    """The summarized table as CSV: metrics as fractions, std columns filled on summary rows."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, CSV_COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for r in summarize(rows):
        # repr-exact floats (csv uses str(), which round-trips) and "" for None.
        writer.writerow({k: "" if r.get(k) is None else r[k] for k in CSV_COLUMNS})
    return buffer.getvalue()


# ----------------------------------------------------------------------------- plot

_COLOURS = {
    "teacher": "#c7c7c7",
    "member": "#8fb8de",
    "ensemble": "#e8833a",
    "distilled": "#4daf4a",
    "self_distilled": "#b9a3d6",
    "self_distilled_ensemble": "#d6404e",
}
_SUMMARY_COLOURS = {"member": "#2f6fad", "self_distilled": "#6a4c9c"}
_OTHER_COLOUR = "#9e9e9e"


def _colour(row):
    if row["kind"] == "summary":
        return _SUMMARY_COLOURS.get(row["summarizes"], _OTHER_COLOUR)
    return _COLOURS.get(row["kind"], _OTHER_COLOUR)


def _figure(table, title):
    # NOTE: a bare Figure on the Agg canvas instead of pyplot: no display needed, no global
    # backend switch under a user's notebook, and no figure left open in pyplot's registry.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    values = [None if r["test_accuracy"] is None else 100 * r["test_accuracy"] for r in table]
    errors = [100 * (r.get("test_accuracy_std") or 0.0) for r in table]
    ys = range(len(table))
    fig = Figure(figsize=(8.0, 1.6 + 0.34 * len(table)))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()

    measured = [(v, e) for v, e in zip(values, errors) if v is not None]
    if measured:
        low = min(v - e for v, e in measured)
        high = max(v + e for v, e in measured)
    else:
        low, high = 0.0, 100.0
    # Zoomed so a point of difference is visible; the right margin holds the value labels.
    span = max(high - low, 1.0)
    left, right = max(0.0, low - 0.25 * span), high + 0.45 * span

    for y, row, value, error in zip(ys, table, values, errors):
        summary = row["kind"] == "summary"
        if value is None:
            ax.text(left + 0.02 * (right - left), y, "not measured", va="center",
                    fontsize=8, color="0.4", style="italic")
            continue
        # Bars start at the left edge of the zoomed axis rather than at 0, where they'd be clipped.
        ax.barh(y, value - left, left=left, height=0.7, color=_colour(row),
                edgecolor="0.2" if summary else "none", linewidth=0.8,
                xerr=error if summary else None,
                error_kw={"ecolor": "0.15", "capsize": 3, "elinewidth": 1})
        label = _percent(value / 100, error / 100 if summary else None)
        ax.text(value + (error if summary else 0) + 0.015 * (right - left), y, label,
                va="center", fontsize=8, fontweight="bold" if summary else "normal",
                # A label may sit on the member-mean line; a backing keeps it legible.
                bbox={"facecolor": "white", "edgecolor": "none", "pad": 0.6, "alpha": 0.85})

    members = _summary_of(table, "member")
    if members and members["test_accuracy"] is not None:
        ax.axvline(100 * members["test_accuracy"], color="0.3", linestyle="--", linewidth=1,
                   zorder=0)

    # Long summary names wrap before their parenthesis so they don't squeeze the axes.
    names = [r["name"].replace(" (", "\n(") if r["kind"] == "summary" else r["name"]
             for r in table]
    ax.set_yticks(list(ys), names, fontsize=9)
    for tick, row in zip(ax.get_yticklabels(), table):
        if row["kind"] == "summary":
            tick.set_fontweight("bold")
    ax.set_ylim(len(table) - 0.5, -0.5)  # first row at the top, like the table
    ax.set_xlim(left, right)
    ax.set_xlabel("test accuracy (%)")
    ax.set_title(title or "Test accuracy")
    ax.grid(axis="x", color="0.9", linewidth=0.8)
    ax.set_axisbelow(True)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)

    kinds = []
    for r in table:
        key = ("summary", r["summarizes"]) if r["kind"] == "summary" else r["kind"]
        if key not in [k for k, _ in kinds]:
            name = f"{r['summarizes']} mean ± std" if r["kind"] == "summary" else r["kind"]
            kinds.append((key, Patch(color=_colour(r), label=name.replace("_", " "))))
    handles = [p for _, p in kinds]
    if members and members["test_accuracy"] is not None:
        from matplotlib.lines import Line2D
        handles.append(Line2D([], [], color="0.3", linestyle="--", linewidth=1,
                              label="member mean"))
    fig.tight_layout()
    # Below the axes, where it can never cover a bar or a label; placed after the layout so the
    # offset under the tick labels can be given in inches whatever the number of rows.
    axes_height = ax.get_position().height * fig.get_figheight()
    ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.6 / axes_height),
              ncol=min(len(handles), 4), fontsize=8, frameon=False)
    return fig


def plot_results(rows, path, title=None):
    """Writes a PNG bar chart of each table row's test accuracy to `path`; returns `path`.

    Summary rows carry their std as an error bar; a dashed line marks the members' mean.
    """
    save_figure(_figure(summarize(rows), title), path, dpi=120, bbox_inches="tight")
    return path


# ----------------------------------------------------------------------------- files


def _jsonable(value):
    """Plain JSON values: NumPy scalars (float32 accuracies, int64 seeds) unwrapped, and
    NaN / inf, which JSON has no word for, as null."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_report(rows, directory, title=None):
    """Writes results.md, .csv, .json (raw rows and gains) and .png into `directory`.

    Each file is replaced atomically. Returns the Markdown text.
    """
    os.makedirs(directory, exist_ok=True)
    table = summarize(rows)
    markdown = _markdown(table, title)
    path = lambda ext: os.path.join(directory, f"results.{ext}")  # noqa: E731
    write_text(path("md"), markdown)
    write_text(path("csv"), to_csv(rows))
    payload = _jsonable({"rows": list(rows), "gains": _gains(table)})
    write_text(path("json"), json.dumps(payload, indent=2, ensure_ascii=False,
                                        allow_nan=False) + "\n")
    plot_results(rows, path("png"), title)
    return markdown
