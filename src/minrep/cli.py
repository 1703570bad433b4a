"""The ``minrep`` command: a thin layer over the library (every command is a function call)."""

from __future__ import annotations

import contextlib
import json
import sys
import time
from pathlib import Path
from typing import Annotated

import numpy as np
import typer

# Only what simulation and files need: torch (through checkpoint, model, encode, generate,
# analysis) is imported inside the commands that use a model, so that simulate and exact-nll
# start fast.
from minrep import MinrepError, datasets, io, processes

app = typer.Typer(
    help="Learn the minimal parameters of a stochastic process from its trajectories.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@contextlib.contextmanager
def _user_errors():
    """Print a bad-input error as one line on stderr (exit code 2), not a traceback."""
    try:
        yield
    except MinrepError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(2) from None


def parse_values(spec: str | None, log: bool = False) -> tuple[float, ...] | None:
    """``"0.5"``, ``"0.2,0.6,1.0"`` or ``"start:stop:count"`` (evenly spaced; in log space
    when ``log``, as for D) to a tuple of floats (:func:`minrep.datasets.parse_values`)."""
    if spec is None:
        return None
    try:
        return datasets.parse_values(spec, log=log)
    except ValueError as error:
        raise typer.BadParameter(str(error)) from None


def _indexed(item: str, what: str) -> tuple[int, tuple[float, ...]]:
    """``"index=values"`` (values as :func:`parse_values` reads them) to (index, values)."""
    index, sep, values = item.partition("=")
    try:
        if not sep:
            raise ValueError
        return int(index), datasets.parse_values(values)
    except ValueError:
        raise typer.BadParameter(f"{item!r}: expected {what}") from None


def parse_latent_values(spec: str) -> dict[int, float]:
    """``"0=-1.5,1=0.3"`` -> {0: -1.5, 1: 0.3} (``--z``: one value per latent index)."""
    values = {}
    for item in spec.split(","):
        index, (value, *more) = _indexed(item, "latent values as index=value,index=value")
        if more:
            raise typer.BadParameter(f"{item!r}: one value per latent (a sweep is --sweep)")
        values[index] = value
    return values


def parse_sweep(spec: str) -> tuple[int, tuple[float, ...]]:
    """``"1=-4:4:60"`` -> (1, 60 values from -4 to 4) (``--sweep``: one latent's values, as
    start:stop:count, evenly spaced, or a comma-separated list)."""
    return _indexed(spec, "a sweep as index=start:stop:count or index=v1,v2,...")


PROCESS_HELP = "bm, fbm, sbm (exact, numpy) or ctrw, lw, attm (with --backend andi)"


@app.command()
def simulate(
    process: Annotated[str, typer.Argument(help=PROCESS_HELP)],
    output: Annotated[Path, typer.Option("--output", "-o", help="dataset .npz to write")],
    preset: Annotated[str, typer.Option(help="paper, paper-test or small")] = "small",
    alpha: Annotated[
        str | None, typer.Option(help="alpha values: 0.5 | 0.2,1.0 | 0.2:1.8:21")
    ] = None,
    D: Annotated[
        str | None, typer.Option("--D", "-D", help="D values: 1e-3 | 1e-5:1e-2:10 (log-spaced)")
    ] = None,
    n_per_cell: Annotated[
        int | None, typer.Option(help="trajectories per (alpha, D) cell; for bm, per D value")
    ] = None,
    length: Annotated[
        int | None, typer.Option(help="positions per trajectory T (T - 1 displacements)")
    ] = None,
    dim: Annotated[int, typer.Option(help="spatial dimensions (independent components)")] = 1,
    seed: Annotated[int, typer.Option(help="random seed: same seed, same bytes")] = 0,
    backend: Annotated[str, typer.Option(help="numpy (exact, ours) or andi")] = "numpy",
    float64: Annotated[
        bool, typer.Option(help="store float64 internally (file is float32)")
    ] = False,
):
    """Simulate a labelled dataset on a parameter grid and write it as .npz."""
    with _user_errors():
        started = time.perf_counter()
        data = datasets.make_dataset(
            process,
            preset,
            alpha=parse_values(alpha),
            D=parse_values(D, log=True),
            n_per_cell=n_per_cell,
            n_positions=length,
            dim=dim,
            seed=seed,
            backend=backend,
            dtype=np.float64 if float64 else np.float32,
            progress=True,
        )
        io.save_npz(data, output)
    grid = data.meta["grid"]
    typer.echo(
        f"{len(data)} {process} trajectories ({len(grid['alpha'])} alpha x {len(grid['D'])} D x "
        f"{grid['n_per_cell']}, T = {grid['n_positions']}, dim = {dim}) in "
        f"{time.perf_counter() - started:.1f} s -> {output}"
    )


@app.command("exact-nll")
def exact_nll(
    data: Annotated[Path, typer.Argument(help="labelled dataset .npz (alpha, D, process)")],
    start: Annotated[
        int, typer.Option(help="first scored step (the model's receptive field)")
    ] = 32,
    memory: Annotated[
        int | None, typer.Option(help="condition on the last M steps only (default: all)")
    ] = None,
):
    """The exact NLL per displacement of a labelled dataset: the floor no model can beat."""
    with _user_errors():
        trajectories = io.load_npz(data, min_steps=start + 1)
        missing = [k for k in ("alpha", "D") if k not in trajectories.labels]
        if missing or trajectories.process is None:
            raise io.TrajectoryFileError(
                f"{data}: exact-nll needs labels alpha, D and a single process "
                f"(missing: {', '.join(missing) or 'process'})"
            )
        if trajectories.is_ragged:
            raise io.TrajectoryFileError(f"{data}: exact-nll needs trajectories of equal length")
        started = time.perf_counter()
        nll = processes.exact_nll(
            trajectories.displacements,
            trajectories.process,
            trajectories.alpha,
            trajectories.D,
            start=start,
            memory=memory,
            progress=True,
        )
        expected = processes.expected_exact_nll(
            trajectories.process,
            trajectories.alpha,
            trajectories.D,
            trajectories.n_steps,
            start=start,
            memory=memory,
        )
    typer.echo(
        f"{len(trajectories)} trajectories, steps {start}..{trajectories.n_steps - 1}, memory "
        f"{'all' if memory is None else memory}: exact NLL {nll.mean():.5f} +- "
        f"{nll.std(ddof=1) / np.sqrt(nll.size):.5f} nat per displacement "
        f"(expectation {expected.mean():.5f}), {time.perf_counter() - started:.1f} s"
    )


@app.command()
def train(
    data: Annotated[Path, typer.Argument(help="dataset .npz (trajectories of one length)")],
    output: Annotated[Path, typer.Option("--output", "-o", help="run directory")],
    preset: Annotated[
        str, typer.Option(help="training plan: quick (2 CPU cores) or paper")
    ] = "quick",
    max_epochs: Annotated[
        int | None, typer.Option(help="stop after N epochs whatever the plan")
    ] = None,
    batch_size: Annotated[int, typer.Option(help="trajectories per batch")] = 256,
    seed: Annotated[int, typer.Option(help="seed of the split, the batches and the weights")] = 0,
    accelerator: Annotated[str, typer.Option(help="auto, cpu or gpu")] = "auto",
    devices: Annotated[str, typer.Option(help="devices per node (DDP when > 1)")] = "1",
    num_nodes: Annotated[int, typer.Option(help="nodes (DDP)")] = 1,
    resume: Annotated[bool, typer.Option(help="continue a run from its last checkpoint")] = False,
    find_lr: Annotated[bool, typer.Option(help="run the learning-rate finder only")] = False,
    lr: Annotated[
        float | None, typer.Option(help="peak learning rate of the first stage (others scaled)")
    ] = None,
    latent_dim: Annotated[int, typer.Option(help="number of latents")] = 6,
    paper_network: Annotated[
        bool,
        typer.Option(help="the network of the paper's published code (ModelConfig.published)"),
    ] = False,
    plan: Annotated[
        Path | None,
        typer.Option(help="a plan as JSON ({'stages': [...]}, as in a run's config.json)"),
    ] = None,
    init: Annotated[
        str | None, typer.Option(help="start from this model's weights (path or shipped name)")
    ] = None,
):
    """Train a beta-VAE on a dataset; writes the run directory (model, history, figures)."""
    from minrep.model import ModelConfig
    from minrep.schedule import Plan
    from minrep.train import TrainConfig, TrainingError, keep_freed_memory
    from minrep.train import train as train_model

    # Process-wide, hence here and not in the library's train(): glibc keeps freed memory for
    # the next training step instead of handing it back to the kernel page by page (a quarter
    # of a CPU step otherwise; see minrep.train.keep_freed_memory). This command only trains.
    keep_freed_memory()
    with _user_errors():
        trajectories = io.load_npz(data)
        config = None
        if init is None:
            sizes = {"dim": trajectories.dim, "latent_dim": latent_dim}
            if paper_network:
                config = ModelConfig.published(**sizes)
            else:
                config = ModelConfig(**sizes, scale_equivariant=True)
        custom = None
        if plan is not None:
            try:
                values = json.loads(plan.read_text())
                custom = Plan.from_dict(values.get("training", {}).get("plan", values))
            except (OSError, ValueError, KeyError, TypeError) as error:
                raise TrainingError(f"{plan}: not a training plan ({error})") from error
        training = TrainConfig(
            preset=preset,
            plan=custom,
            init=init,
            batch_size=batch_size,
            seed=seed,
            accelerator=accelerator,
            devices=int(devices) if devices.isdigit() else devices,
            num_nodes=num_nodes,
            max_epochs=max_epochs,
            lr=lr,
        )
        result = train_model(
            trajectories, output, training, model_config=config, resume=resume, find_lr=find_lr
        )
    if find_lr:
        typer.echo(
            f"suggested learning rate: {result.history[0]['lr_suggestion']:.3g} "
            f"(plot: {output / 'figures' / 'lr_find.png'})"
        )
        return
    if result.history and result.primary:
        last = result.history[-1]
        typer.echo(
            f"epoch {last['epoch']}: held-out NLL {last['val_nll']:.4f} (exact "
            f"{last['val_exact_nll']:.4f}), surviving latents [{last['surviving']}] -> {output}"
        )


@app.command()
def encode(
    model: Annotated[str, typer.Argument(help="run directory or shipped model name")],
    trajectories: Annotated[Path, typer.Argument(help=".npz dataset or tracking .csv/.parquet")],
    output: Annotated[Path, typer.Option("--output", "-o", help="latents .npz or .csv")],
    split_gaps: Annotated[bool, typer.Option(help="cut tracks at missing frames")] = False,
    skip_short: Annotated[
        bool, typer.Option(help="skip (with a warning) tracks shorter than the model's minimum")
    ] = False,
):
    """Latent mean and log-variance of each trajectory (a 1D model encodes 2D/3D tracks axis
    by axis)."""
    from minrep import checkpoint
    from minrep.encode import encode as encode_all
    from minrep.encode import encode_axes, save_latents

    with _user_errors():
        vae = checkpoint.load_model(model)
        data = io.load(
            trajectories,
            min_steps=vae.config.min_steps,
            split_gaps=split_gaps,
            on_short="skip" if skip_short else "error",
        )
        if vae.config.dim == 1 and data.dim > 1:
            latents = encode_axes(vae, data, progress=True)
            agree = latents["axes_agree"]
            typer.echo(
                f"The model is 1D and the tracks are {data.dim}D: each axis was encoded as its "
                f"own 1D trajectory (mu_x_*, mu_y_*, ...). The axes agree for {agree.sum()} of "
                f"{len(data)} tracks; for those, mu_combined_* is their precision-weighted mean "
                "(NaN where they disagree: anisotropic or correlated motion?)."
            )
        else:
            latents = encode_all(vae, data, progress=True)
        save_latents(latents, data, output)
    typer.echo(f"{len(data)} trajectories encoded ({vae.config.latent_dim} latents) -> {output}")


@app.command()
def generate(
    model: Annotated[str, typer.Argument(help="run directory or shipped model name")],
    output: Annotated[Path, typer.Option("--output", "-o", help="generated dataset .npz")],
    z: Annotated[
        str | None, typer.Option("--z", help="latent values, e.g. 0=-1.5,1=0.3 (others 0)")
    ] = None,
    from_file: Annotated[
        Path | None, typer.Option("--from", help="encode these trajectories and regenerate")
    ] = None,
    sweep: Annotated[
        str | None, typer.Option(help="sweep one latent: index=start:stop:count or index=v1,v2")
    ] = None,
    n: Annotated[int, typer.Option(help="trajectories per latent vector (or per input)")] = 1,
    n_per_value: Annotated[int | None, typer.Option(help="trajectories per sweep value")] = None,
    length: Annotated[
        int, typer.Option(help="positions per generated trajectory T (T - 1 displacements)")
    ] = 400,
    context: Annotated[
        str, typer.Option(help="zeros (the paper) or start (the input's first displacements)")
    ] = "zeros",
    seed: Annotated[
        int | None,
        typer.Option(
            help="random seed: same seed, same trajectories (default: fresh randomness each "
            "run; the seed drawn is recorded in the file)"
        ),
    ] = None,
    batch_size: Annotated[int, typer.Option(help="trajectories generated together")] = 1000,
):
    """Generate trajectories from latent values, from encoded trajectories, or a latent sweep."""
    from minrep import checkpoint
    from minrep import generate as gen
    from minrep.encode import encode as encode_all

    with _user_errors():
        chosen = [
            name
            for name, value in (("--z", z), ("--from", from_file), ("--sweep", sweep))
            if value is not None
        ]
        if len(chosen) != 1:
            raise gen.GenerationError("give exactly one of --z, --from and --sweep")
        if length < 2:
            raise gen.GenerationError(f"--length (positions T) must be >= 2, got {length}")
        values = parse_latent_values(z) if z is not None else None
        index, sweep_values = parse_sweep(sweep) if sweep is not None else (None, None)
        vae = checkpoint.load_model(model)
        if seed is None:  # fresh randomness, recorded so that the file can be reproduced
            seed = int(np.random.SeedSequence().generate_state(1)[0])
        labels: dict[str, np.ndarray] = {}
        starts = None
        if values is not None:
            latents = gen.latents_with_values(vae, values, n)
        elif sweep is not None:
            latents = gen.sweep_latents(vae, index, sweep_values, n_per_value or n)
            labels["sweep_latent"] = np.full(len(latents), index)
        else:
            data = io.load(from_file, min_steps=vae.config.min_steps)
            latents = np.repeat(encode_all(vae, data)["mu"], n, axis=0)
            labels.update({k: np.repeat(v, n) for k, v in data.labels.items()})
            if context == "start":
                rf = vae.receptive_field
                starts = np.repeat(data.displacements[:, :, :rf], n, axis=0)
        if context not in ("zeros", "start") or (context == "start" and starts is None):
            raise gen.GenerationError("--context is zeros, or start together with --from")
        displacements = gen.generate_many(
            vae,
            latents,
            length - 1,
            context=starts,
            seed=seed,
            batch_size=batch_size,
            progress=True,
        )
        result = gen.generated_set(
            displacements,
            latents,
            {
                "generator": "minrep generate",
                "model": str(model),
                "seed": seed,
                "context": context,
                "source": chosen[0],
            },
        )
        result.labels.update(labels)
        io.save_npz(result, output)
    typer.echo(
        f"{len(result)} trajectories of T = {length} positions ({length - 1} displacements), "
        f"seed {seed} -> {output}"
    )


@app.command()
def analyze(
    model: Annotated[str, typer.Argument(help="run directory or shipped model name")],
    output: Annotated[Path, typer.Option("--output", "-o", help="report directory")],
    data: Annotated[
        Path | None,
        typer.Option(help="labelled test set .npz; default: simulate the paper-test grid"),
    ] = None,
    n_per_cell: Annotated[
        int | None,
        typer.Option(help="trajectories per cell of the simulated test set (default: 41)"),
    ] = None,
    seed: Annotated[int, typer.Option(help="seed of the test set and the generation")] = 0,
):
    """The paper's figures and every number behind them: index.html, PNGs and metrics.json."""
    from minrep import checkpoint
    from minrep.analysis import analyze as run_analysis
    from minrep.plots import write_report

    with _user_errors():
        vae = checkpoint.load_model(model)
        test = _test_set(model, vae, data, n_per_cell, seed)
        result = run_analysis(vae, test, seed=seed)
        page = write_report(result, output, title=f"minrep analysis of {model}")
    _print_metrics(result.metrics)
    typer.echo(f"report: {page}")


def _test_set(model: str, vae, data: Path | None, n_per_cell: int | None, seed: int):
    """The labelled test set given, or the paper-test grid of the model's training process."""
    from minrep import checkpoint

    if data is not None:
        return io.load_npz(data, min_steps=vae.config.min_steps)
    process = checkpoint.read_config(model).get("data", {}).get("process")
    if process not in processes.PROCESSES:
        raise io.TrajectoryFileError(
            f"{model}: the model's training process is not recorded; give a test set (--data)"
        )
    return datasets.make_dataset(
        process, "paper-test", n_per_cell=n_per_cell, seed=seed, progress=True
    )


def _print_metrics(metrics: dict) -> None:
    """The headline numbers, each kind with one line that says what a good value is."""
    from minrep.demo import metric_lines

    for line in metric_lines(metrics):
        typer.echo(line)


@app.command()
def demo(
    model: Annotated[str, typer.Option(help="shipped model (bm, fbm, sbm) or run directory")] = (
        "fbm"
    ),
    data: Annotated[
        Path | None, typer.Option(help="your own .npz or tracking .csv/.parquet instead")
    ] = None,
    output: Annotated[Path, typer.Option("--output", "-o", help="report directory")] = Path(
        "minrep-demo"
    ),
    n_per_cell: Annotated[
        int, typer.Option(help="trajectories per (alpha, D) cell of the simulated test set")
    ] = 4,
    seed: Annotated[int, typer.Option(help="random seed")] = 0,
):
    """A shipped model at work: encode a fresh test set, read alpha and D from the latents
    next to the TA-MSD fit, generate along each latent, and write the full report."""
    from minrep.demo import run_demo

    with _user_errors():
        run_demo(model, output, data=data, n_per_cell=n_per_cell, seed=seed, echo=typer.echo)


def main() -> None:  # pragma: no cover - entry point for python -m minrep
    app(prog_name="minrep")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
