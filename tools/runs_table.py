"""One row per pipeline workdir: test accuracy of members, ensemble and students, with gains.

Reads each workdir's results.json (written by `tfkd`, the pipeline) and prints the Markdown
table of docs/digits.md's "Other first seeds": the members' mean ± std, then the ensemble,
the distilled student, the self-distilled students' mean (last generation) and their
ensemble, each with its difference from the members' mean in brackets, in points:

    for S in 0 1 2; do tfkd --seed=$S --workdir=runs/digits_seed$S; done
    python tools/runs_table.py runs/digits_seed0 runs/digits_seed1 runs/digits_seed2

The first column is the run's first seed (its first member's seed).
"""

import json
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

# tfkd.report's own summary rows, gains and number formats, so these cells read exactly as
# the results tables they come from.
from tfkd import report  # noqa: E402
from tfkd.toolargs import OneLineParser  # noqa: E402

HEADER = ["first seed", "members mean ± std", "ensemble", "distilled", "self-distilled mean",
          "self-distilled ensemble"]
# (gain key in results.json, row of the summarized table holding the accuracy)
COLUMNS = (("ensemble", lambda r: r["kind"] == "ensemble"),
           ("distilled", lambda r: r["kind"] == "distilled"),
           ("self_distilled", lambda r: r.get("summarizes") == "self_distilled"),
           ("self_distilled_ensemble", lambda r: r["kind"] == "self_distilled_ensemble"))


def row(workdir):
    path = os.path.join(workdir, "results.json")
    try:
        results = json.load(open(path, encoding="utf-8"))
        table = report.summarize(results["rows"])
        members = next(r for r in table if r.get("summarizes") == "member")
    except (OSError, ValueError, KeyError, TypeError, AttributeError, StopIteration) as error:
        why = getattr(error, "strerror", None) or (str(error) if isinstance(error, ValueError)
                                                   else "no members' results in it")
        print(f"runs_table.py: error: {path} is not a finished pipeline's results ({why}); "
              f"run `tfkd --workdir={workdir}` first", file=sys.stderr)
        sys.exit(2)
    first_seed = min(r["seed"] for r in table if r["kind"] == "member")
    cells = [str(first_seed),
             report._percent(members["test_accuracy"], members["test_accuracy_std"])]
    for key, chosen in COLUMNS:
        found = next((r for r in table if chosen(r)), None)
        gain = results["gains"].get(f"{key}_minus_member_mean")
        cells.append("-" if found is None or gain is None else
                     f"{report._percent(found['test_accuracy'])} ({report._signed(gain)})")
    return cells


def main(argv=None):
    parser = OneLineParser(prog="runs_table.py", description=__doc__.splitlines()[0])
    parser.add_argument("workdirs", nargs="+", help="Workdirs of finished `tfkd` pipelines.")
    args = parser.parse_args(argv)
    print("\n".join(report.markdown_table(HEADER, [row(w) for w in args.workdirs],
                                          right_from=len(HEADER))))


if __name__ == "__main__":
    main()
