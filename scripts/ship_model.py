"""Copy a trained run into the package as a shipped model, with a model card.

    python scripts/ship_model.py RUN NAME --report REPORT_DIR --trained-on "one H200 GPU ..."

REPORT_DIR is the output of `minrep analyze RUN -o REPORT_DIR` (its metrics.json gives the
held-out numbers of the card). Copies model.safetensors, config.json and history.csv; with
RUN = src/minrep/pretrained/NAME it only rewrites the card. --notes FILE appends a Markdown
"Notes" section.
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
from pathlib import Path

import numpy as np

PRETRAINED = Path(__file__).resolve().parents[1] / "src" / "minrep" / "pretrained"


def data_meta(data: dict) -> dict:
    """The record the data file keeps of how it was made, where the file is at hand."""
    source = Path(data.get("source", ""))
    if not (source.is_file() and source.suffix == ".npz"):
        return {}
    with np.load(source, allow_pickle=False) as file:
        return json.loads(str(file["meta"]))


def describe(model: dict, training: dict, data: dict) -> tuple[str, str, str]:
    """The card's words for the decoder and the measurement, and the options of the
    `minrep simulate` command that made the data (from the data file's record of them where
    the file is at hand, else from the ranges the training recorded)."""
    if model.get("decoder", "window") == "whole":
        crop = training.get("crop_min_steps")
        prefixes = (
            f"; trained on prefixes of random length from {crop} displacements" if crop else ""
        )
        decoder = (
            "the whole-trajectory decoder (every displacement predicted, memory of the whole "
            f"past: `memory = {model.get('memory')!r}`, `ageing = {model.get('ageing')}`, "
            f"`mean_lags = {model.get('mean_lags', 0)}`{prefixes})"
        )
    else:
        decoder = "the paper's decoder (receptive field 32)"
    meta = data_meta(data)
    if meta:
        given = meta.get("measurement", {})
    else:
        ranges = data.get("training_range") or {}
        given = {
            k: [round(v, 2) for v in ranges[k]]
            for k in ("reduced_noise", "exposure")
            if k in ranges
        }
    given = {k: v for k, v in given.items() if any(x != 0 for x in v[:2])}
    options = f"--dim {model['dim']} " if model["dim"] > 1 else ""
    options += "".join(
        f"--{k.replace('_', '-')} {':'.join(f'{x:g}' for x in v)} " for k, v in given.items()
    )
    words = {
        "noise": "localisation error (sd per coordinate)",
        "reduced_noise": "localisation error sigma^2 / (2 D dt^alpha)",
        "exposure": "exposure (fraction of a frame)",
    }
    measurement = "".join(
        f"; {words[k]} "
        + (f"drawn per trajectory from {v[0]:g} to {v[1]:g}" if len(v) > 1 else f"{v[0]:g}")
        for k, v in given.items()
    )
    return decoder, measurement, options


def card(
    name: str,
    config: dict,
    metrics: dict,
    history: list[dict],
    trained_on: str,
    notes: str = "",
    analyze_options: str = "",
) -> str:
    training, data = config["training"], config["data"]
    stages = training["plan"]["stages"]

    def beta(schedule: dict) -> str:
        if schedule["kind"] == "constant":
            return f"beta {schedule['value']:g}"
        return f"beta {schedule['kind']} {schedule['start']:g} -> {schedule['end']:g}"

    def stage(s: dict) -> str:
        words = f"{s['epochs']} epochs at {beta(s['beta'])}, lr {s['lr']:g} ({s['policy']})"
        if s.get("decoder_only"):
            words += ", decoder only"
        if s.get("start_from"):
            words += f", from the weights at the end of stage {s['start_from']}"
        if s.get("compare_with"):
            words += f", kept only if its held-out loss beats stage {s['compare_with']}'s"
        return words

    plan = "; ".join(stage(s) for s in stages)
    command = " ".join(
        [
            f"--preset {training['preset']}" if training.get("preset") else "--plan PLAN.json",
            *(["--decoder whole"] if config["model"].get("decoder") == "whole" else []),
            *(
                [f"--crop-min-steps {training['crop_min_steps']}"]
                if training.get("crop_min_steps")
                else []
            ),
            *([f"--init {training['init']}"] if training.get("init") else []),
            f"--seed {training['seed']}",
        ]
    )
    outcome = "".join(
        f"\n- Epoch {row['epoch']}: {row['note']}."
        for row in history
        if row.get("note", "").endswith(("kept", "restored"))
    )
    last = history[-1]
    g = metrics.get("generation", {})
    dimension = []  # none in reports written before the effective dimension
    if "effective_dimension" in metrics:
        snr = ", ".join(f"{v:.3g}" for v in metrics["effective_dimension_snr"])
        dimension.append(
            (
                "effective dimension (directions along which the posterior means vary more "
                "than 0.22 times the posterior noise, i.e. carry more than 0.1 nat; their "
                "signal-to-noise ratios)",
                f"{metrics['effective_dimension']} ({snr})"
                + (
                    f"; curvature allowed for: {metrics['intrinsic_dimension']}"
                    if "intrinsic_dimension" in metrics
                    else ""
                ),
            )
        )
    rows = [
        ("surviving latents (KL > 0.1 nat)", metrics["surviving_latents"]),
        ("KL per latent (nat)", ", ".join(f"{v:.3g}" for v in metrics["kl_per_latent"])),
        *dimension,
        *[
            (
                f"R^2 {name.replace('_', ' ')} (latent readout / TA-MSD fit / best possible "
                "from the decoder's steps / from all steps)",
                " / ".join(
                    f"{value:.4f}"
                    for value in (
                        metrics[f"r2_{name}"],
                        metrics[f"tamsd_r2_{name}"],
                        *metrics[f"bayes_r2_{name}"].values(),
                    )
                ),
            )
            for name in ("alpha", "log10_D")
            if f"r2_{name}" in metrics
        ],
        (
            "NLL, exact NLL, gap (nat per displacement)",
            f"{metrics['nll_mean']:.4f}, {metrics['exact_nll_mean']:.4f}, "
            f"{metrics['nll_gap']:+.4f}",
        ),
        (
            "MIG; DCI",
            f"{metrics['mig']:.3f}; "
            + ", ".join(f"{k} {v:.3f}" for k, v in metrics["dci"].items()),
        ),
        *[(f"generated: {k}", f"{v:.4g}" if isinstance(v, float) else v) for k, v in g.items()],
    ]
    # Runs before the history's time columns were renamed wrote "seconds" (elapsed).
    minutes = float(last.get("elapsed_seconds", last.get("seconds"))) / 60
    model = config["model"]
    decoder, measurement, options = describe(model, training, data)
    data_seed = data_meta(data).get("seed", training["seed"])
    meaning = [
        (
            "R^2 from " + ("all surviving latents" if k == "all" else f"latent {k} alone"),
            ", ".join(f"{factor} {value:.3f}" for factor, value in r2.items()),
        )
        for k, r2 in metrics.get("latent_meaning", {}).items()
    ]
    rows[2 + len(dimension) : 2 + len(dimension)] = meaning
    table = "\n".join(f"| {k} | {v} |" for k, v in rows)
    return f"""# Shipped model `{name}`

{data["process"].upper()}, {model["dim"]}D, {model["latent_dim"]} latents, {decoder},
`scale_equivariant = {model["scale_equivariant"]}` (see `minrep.model`).

- Data: the `paper` grid (21 alpha x 10 D, T = 400; BM: 10 D){measurement}, {data["n_train"]}
  trained and {data["n_val"]} validation trajectories, simulated with minrep's exact simulator,
  seed {data_seed}
  (`minrep simulate {data["process"]} --preset paper {options}--seed {data_seed}`).
- Trained with `minrep train DATA -o RUN {command}`.
- Plan: {plan}; batch {training["batch_size"]}, Adam,
  split/initialisation seed {training["seed"]}.{outcome}
- Started from: {training.get("init") or "a fresh network"}.
- Trained on: {trained_on}; {len(history)} epochs, {minutes:.1f} min.
- Last validation epoch: NLL {float(last["val_nll"]):.4f}
  (exact {float(last["val_exact_nll"]):.4f}), surviving latents [{last["surviving"]}].

Held-out metrics (`minrep analyze {name} -o REPORT{analyze_options}`: a fresh `paper-test` set,
seed 0, {metrics["n"]:,} trajectories; numbers inside the training range alpha 0.2-1.8,
D 1e-5-1e-2, {metrics["n_in_training_range"]:,} trajectories; latents at their posterior mean):

| | |
|---|---|
{table}
""" + (f"\nNotes\n{notes}" if notes else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("name")
    parser.add_argument("--report", type=Path, required=True)
    parser.add_argument("--trained-on", required=True)
    parser.add_argument("--notes", type=Path, help="Markdown appended as the card's notes")
    parser.add_argument(
        "--analyze-options", default="", help="the report's options, e.g. --n-per-cell 8"
    )
    args = parser.parse_args()
    target = PRETRAINED / args.name
    target.mkdir(parents=True, exist_ok=True)
    if args.run.resolve() != target.resolve():
        for file in ("model.safetensors", "config.json", "history.csv"):
            shutil.copy(args.run / file, target / file)
    config = json.loads((args.run / "config.json").read_text())
    metrics = json.loads((args.report / "metrics.json").read_text())
    with open(args.run / "history.csv") as handle:
        history = list(csv.DictReader(handle))
    (target / "MODEL_CARD.md").write_text(
        card(
            args.name,
            config,
            metrics,
            history,
            args.trained_on,
            args.notes.read_text() if args.notes else "",
            f" {args.analyze_options}" if args.analyze_options else "",
        )
    )
    print(f"-> {target}")


if __name__ == "__main__":
    main()
