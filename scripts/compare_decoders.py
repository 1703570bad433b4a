"""Two reports of `minrep analyze` side by side, as the Markdown table of docs (issue 10).

    python scripts/compare_decoders.py REPORT_A REPORT_B [--names window whole]

Each REPORT is the output directory of `minrep analyze MODEL -o REPORT` (its metrics.json):
surviving latents and effective dimension, NLL gap over the steps each model predicts, readout
R^2 next to the best possible (whole trajectories and each track's first n displacements),
and the errors of generated trajectories. Figures are not copied: the table names them.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def _number(value, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def rows(metrics: dict) -> dict[str, str]:
    """The table's cells of one report, by row name."""
    out = {
        "first predicted step": str(metrics.get("first_predicted_step", "-")),
        "surviving latents": str(len(metrics["surviving_latents"])),
        "effective dimension": str(metrics.get("effective_dimension", "-")),
        "NLL gap (nat)": _number(metrics.get("nll_gap"), 4),
    }
    for name in ("alpha", "log10_D"):
        if f"r2_{name}" in metrics:
            best = metrics.get(f"bayes_r2_{name}")
            best = best.get("all_steps") if isinstance(best, dict) else best
            cell = f"{_number(metrics[f'r2_{name}'])} ({_number(best)})"
            out[f"R^2 {name} (best possible, all steps)"] = cell
    for length, values in (metrics.get("readout_by_length") or {}).items():
        for name in ("alpha", "log10_D"):
            if f"r2_{name}" in values:
                cell = f"{_number(values[f'r2_{name}'])} ({_number(values[f'bayes_r2_{name}'])})"
                out[f"R^2 {name}, first {length} displacements (best)"] = cell
    for key, value in (metrics.get("generation") or {}).items():
        if isinstance(value, float):
            out[f"generated: {key}"] = _number(value)
    return out


def table(reports: list[Path], names: list[str]) -> str:
    cells = [rows(json.loads((r / "metrics.json").read_text())) for r in reports]
    order = list(dict.fromkeys(key for c in cells for key in c))
    lines = ["| | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    lines += [f"| {key} | " + " | ".join(c.get(key, "-") for c in cells) + " |" for key in order]
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("reports", nargs=2, type=Path)
    parser.add_argument("--names", nargs=2, default=["window", "whole"])
    args = parser.parse_args(argv)
    print(table(args.reports, args.names))


if __name__ == "__main__":
    main()
