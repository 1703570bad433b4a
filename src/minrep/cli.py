"""The ``minrep`` command: a thin layer over the library (every command is a function call)."""

from __future__ import annotations

import contextlib
import json
import math
import os
import secrets
import sys
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import numpy as np
import typer
from typer.core import TyperGroup

# Only what simulation and files need: torch (through checkpoint, model, encode, generate,
# analysis) is imported inside the commands that use a model, so that simulate and exact-nll
# start fast.
from minrep import MinrepError, datasets, io, processes


class OptionError(MinrepError, ValueError):
    """A command-line option out of its range, or options that do not go together."""


class OutputError(MinrepError, ValueError):
    """An output path that the command could not write (checked before any work)."""


# The base of click's errors, as typer raises them (recent typer versions carry their own
# copy of click, so it is found from typer's BadParameter rather than imported from click).
_CLICK_ERROR = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")


class _OneLineErrors(TyperGroup):
    """Click's usage errors (an option that is not a number, a missing argument, an unknown
    option) as one line on stderr, like minrep's own errors, instead of a usage box."""

    def invoke(self, ctx: typer.Context):
        try:
            return super().invoke(ctx)
        except _CLICK_ERROR as err:
            message = " ".join(err.format_message().split())
            usage = getattr(err, "ctx", None)
            hint = f" (see {usage.command_path} --help)" if usage is not None else ""
            typer.echo(f"error: {message}{hint}", err=True)
            raise typer.Exit(err.exit_code) from None


app = typer.Typer(
    cls=_OneLineErrors,
    help="Learn the minimal parameters of a stochastic process from its trajectories.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _one_line_warning(message, category, filename, lineno, line=None) -> str:
    return f"warning: {message}\n"


@contextlib.contextmanager
def _user_errors(**options: str) -> Iterator[None]:
    """Print a bad-input error as one line on stderr (exit code 2, or the error's own
    ``exit_code``), not a traceback; an operating-system error (a full disk, a file that
    vanished) as one line too (exit code 1). ``options`` maps a dataset field to the option
    it came from (``alpha="--alpha"``), so that a :class:`minrep.datasets.GridError` names
    the option. Warnings print as one line too (``warning: ...``)."""
    warnings.formatwarning = _one_line_warning
    try:
        yield
    except datasets.GridError as err:
        option = options.get(err.field)
        typer.echo(f"error: {option}: {err}" if option else f"error: {err}", err=True)
        raise typer.Exit(2) from None
    except MinrepError as err:
        # An error may carry its own exit status (a training stopped by a signal: 128 + it).
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(getattr(err, "exit_code", 2)) from None
    except OSError as err:
        where = f"{err.filename}: " if err.filename else ""
        typer.echo(f"error: {where}{err.strerror or err}", err=True)
        raise typer.Exit(1) from None


# ---------------------------------------------------------------------------------------------
# Checks of the options, each where the option enters: a message that names the option.

MAX_SEED = 2**32 - 1
"""Seeds are 32-bit (what Lightning, numpy and torch all accept)."""

LATENT_LIMIT = 50.0
"""The largest latent value ``--z`` and ``--sweep`` accept, in prior standard deviations: the
prior is N(0, 1) and encoded data lie within a few units; far beyond, the decoder's output
overflows."""


def _at_least(option: str, value: int | None, minimum: int) -> None:
    if value is not None and value < minimum:
        raise OptionError(f"{option} must be >= {minimum}, got {value}")


def _check_seed(seed: int | None) -> None:
    if seed is not None and not 0 <= seed <= MAX_SEED:
        raise OptionError(f"--seed must be from 0 to {MAX_SEED}, got {seed}")


def _physical_memory() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, OSError, ValueError):
        return None


def _check_size(n_values: int, itemsize: int, what: str) -> None:
    """Refuse arrays larger than this machine's memory before allocating them; ``what``
    names the options that asked for them and what they make."""
    memory = _physical_memory()
    if memory is not None and n_values * itemsize > memory:
        raise OptionError(
            f"{what} would take {n_values * itemsize / 1e9:.3g} GB, more than this machine's "
            f"memory ({memory / 1e9:.3g} GB)"
        )


def _check_input(path: Path | None, option: str | None = None) -> None:
    """An input path that is a directory, said as such (the readers would say no file)."""
    if path is not None and path.is_dir():
        name = f"{option} {path}" if option else str(path)
        raise OptionError(f"{name}: is a directory; give a file")


def _given(ctx: typer.Context, name: str) -> bool:
    """Whether option ``name`` (the parameter's name) was given, not left at its default."""
    source = ctx.get_parameter_source(name)
    return source is not None and source.name in ("COMMANDLINE", "ENVIRONMENT")


def check_output(
    path: Path,
    suffixes: tuple[str, ...] = (),
    kind: str = "file",
    option: str = "--output",
    inputs: tuple[Path | None, ...] = (),
) -> Path:
    """Refuse, before any work, an output the command could not write: a ``kind="file"``
    path that is a directory, ends in none of ``suffixes`` or is one of the ``inputs``; a
    ``kind="directory"`` path that is a file; a path whose nearest existing parent is a file
    or a place this process cannot write in (tried by creating and removing a file there).
    Missing parent directories are fine: the command creates them. Raises
    :class:`OutputError` naming the option and the path."""
    where = f"{option} {path}"
    names = " or ".join(suffixes)
    try:
        if kind == "file":
            if path.is_dir():
                raise OutputError(f"{where}: is a directory; give a file name ending in {names}")
            if suffixes and path.suffix.lower() not in suffixes:
                raise OutputError(
                    f"{where}: this command writes {names} files; give a name ending in {names}"
                )
            for source in inputs:
                if source is not None and path.exists() and source.exists():
                    if os.path.samefile(path, source):
                        raise OutputError(f"{where}: is also the input; write to another file")
        elif path.exists() and not path.is_dir():
            raise OutputError(
                f"{where}: is a file; give a directory (this command writes several files there)"
            )
        existing = path if kind == "directory" else path.parent
        while not existing.exists():
            existing = existing.parent
        if not existing.is_dir():
            raise OutputError(f"{where}: {existing} is a file, not a directory")
        probe = existing / f".minrep-write-test-{secrets.token_hex(8)}"
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        os.unlink(probe)
    except OSError as err:
        raise OutputError(f"{where}: cannot write there ({err.strerror or err})") from None
    return path


def parse_range(spec: str | None, option: str):
    """``"0.02"``, ``"0:0.05"`` or ``"0:1:5"`` (:func:`minrep.datasets.parse_range`); errors name
    ``option``."""
    if spec is None:
        return 0.0
    try:
        return datasets.parse_range(spec)
    except ValueError as error:
        raise typer.BadParameter(str(error), param_hint=f"'{option}'") from None


def parse_values(
    spec: str | None, log: bool = False, option: str | None = None
) -> tuple[float, ...] | None:
    """``"0.5"``, ``"0.2,0.6,1.0"`` or ``"start:stop:count"`` (evenly spaced; in log space
    when ``log``, as for D) to a tuple of floats (:func:`minrep.datasets.parse_values`);
    errors name ``option``."""
    if spec is None:
        return None
    try:
        return datasets.parse_values(spec, log=log)
    except ValueError as error:
        hint = f"'{option}'" if option else None
        raise typer.BadParameter(str(error), param_hint=hint) from None


def _indexed(item: str, what: str, option: str) -> tuple[int, tuple[float, ...]]:
    """``"index=values"`` (values as :func:`parse_values` reads them) to (index, values), each
    value finite and within :data:`LATENT_LIMIT`."""
    index, sep, values = item.partition("=")
    try:
        index = int(index)
        if not sep:
            raise ValueError
    except ValueError:
        raise typer.BadParameter(f"{item!r}: expected {what}", param_hint=f"'{option}'") from None
    try:
        values = datasets.parse_values(values)
    except ValueError as err:
        # Text that does not read gets the expected form; a value that reads but cannot be
        # used (nan, inf) is named as such.
        detail = f"expected {what}" if "start:stop:count" in str(err) else err
        raise typer.BadParameter(f"{item!r}: {detail}", param_hint=f"'{option}'") from None
    for value in values:
        if not abs(value) <= LATENT_LIMIT:
            raise typer.BadParameter(
                f"{item!r}: latent {index} = {value:g}; latents are in prior standard "
                f"deviations (the prior is N(0, 1)): give values within +-{LATENT_LIMIT:g}",
                param_hint=f"'{option}'",
            )
    return index, values


def parse_latent_values(spec: str) -> dict[int, float]:
    """``"0=-1.5,1=0.3"`` -> {0: -1.5, 1: 0.3} (``--z``: one value per latent index, each
    index once)."""
    values = {}
    for item in spec.split(","):
        index, (value, *more) = _indexed(item, "latent values as index=value,index=value", "--z")
        if more:
            raise typer.BadParameter(
                f"{item!r}: one value per latent (a sweep is --sweep)", param_hint="'--z'"
            )
        if index in values:
            raise typer.BadParameter(f"{spec!r}: latent {index} is given twice", param_hint="'--z'")
        values[index] = value
    return values


def parse_sweep(spec: str) -> tuple[int, tuple[float, ...]]:
    """``"1=-4:4:60"`` -> (1, 60 values from -4 to 4) (``--sweep``: one latent's values, as
    start:stop:count, evenly spaced, or a comma-separated list)."""
    return _indexed(spec, "a sweep as index=start:stop:count or index=v1,v2,...", "--sweep")


def _nonempty(data: io.Trajectories, source) -> io.Trajectories:
    """Refuse a file without a single trajectory (never a success with nothing in it)."""
    if len(data) == 0:
        raise io.TrajectoryFileError(f"{source}: holds no trajectory")
    return data


PROCESS_HELP = "bm, fbm, sbm (exact, numpy) or ctrw, lw, attm (with --backend andi)"

GRID_OPTIONS = {
    "alpha": "--alpha",
    "D": "--D",
    "n_per_cell": "--n-per-cell",
    "n_positions": "--length",
    "dim": "--dim",
    "seed": "--seed",
    "preset": "--preset",
    "backend": "--backend",
    "noise": "--noise",
    "exposure": "--exposure",
    "reduced_noise": "--reduced-noise",
}
"""The option of each dataset field (for errors from :mod:`minrep.datasets`)."""


def _check_dataset_size(grid: datasets.Grid, dim: int, itemsize: int, options: str) -> None:
    _check_size(
        grid.n_trajectories * dim * grid.n_steps,
        itemsize,
        f"{options}: {grid.n_trajectories} trajectories of T = {grid.n_positions} in {dim}D",
    )


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
    noise: Annotated[
        str | None,
        typer.Option(
            help="localisation error (sd per coordinate): 0.01 | 0:0.05 (per track) | 0:0.05:5"
        ),
    ] = None,
    exposure: Annotated[
        str | None,
        typer.Option(help="motion blur, fraction of a frame: 1 | 0:1 (per track) | 0:1:5 (levels)"),
    ] = None,
    reduced_noise: Annotated[
        str | None,
        typer.Option(help="localisation error as sigma^2 / (2 D): 0.5 | 0:1 (per track) | 0:1:5"),
    ] = None,
):
    """Simulate a labelled dataset on a parameter grid and write it as .npz."""
    with _user_errors(**GRID_OPTIONS):
        _check_seed(seed)
        alpha_values = parse_values(alpha, option="--alpha")
        d_values = parse_values(D, log=True, option="--D")
        check_output(output, (".npz",))
        overrides = {
            "alpha": alpha_values,
            "D": d_values,
            "n_per_cell": n_per_cell,
            "n_positions": length,
        }
        grid = datasets.preset_grid(process, preset, **overrides)
        if dim < 1:
            raise OptionError(f"--dim must be >= 1, got {dim}")
        asked = " ".join(
            f"{option} {value}"
            for option, value in (("--n-per-cell", n_per_cell), ("--length", length))
            if value is not None
        )
        _check_dataset_size(grid, dim, 8 if float64 else 4, asked or f"--preset {preset}")
        started = time.perf_counter()
        data = datasets.make_dataset(
            process,
            preset,
            **overrides,
            dim=dim,
            seed=seed,
            backend=backend,
            dtype=np.float64 if float64 else np.float32,
            progress=True,
            noise=parse_range(noise, "--noise"),
            exposure=parse_range(exposure, "--exposure"),
            reduced_noise=parse_range(reduced_noise, "--reduced-noise"),
        )
        io.save_npz(data, output)
    grid = data.meta["grid"]
    typer.echo(
        f"{len(data)} {process} trajectories ({len(grid['alpha'])} alpha x {len(grid['D'])} D x "
        f"{grid['n_per_cell']}, T = {grid['n_positions']}, dim = {dim}) in "
        f"{time.perf_counter() - started:.1f} s -> {output}"
    )


def _labelled_process(trajectories: io.Trajectories, source) -> str:
    """The single simulated process of a labelled set, or an error that says what is
    missing (labels alpha and D, the process label) or wrong (several processes)."""
    missing = [k for k in ("alpha", "D") if k not in trajectories.labels]
    process = trajectories.process
    if not missing and process is None and "process" in trajectories.labels:
        found = ", ".join(map(str, np.unique(trajectories.labels["process"])))
        raise io.TrajectoryFileError(
            f"{source}: exact-nll needs trajectories of a single process, found {found}"
        )
    if missing or process is None:
        missing += [] if process is not None else ["process"]
        raise io.TrajectoryFileError(
            f"{source}: exact-nll needs labels alpha, D and a single process "
            f"(missing: {', '.join(missing)})"
        )
    if process not in processes.PROCESSES:
        raise io.TrajectoryFileError(
            f"{source}: the exact likelihood is known for {', '.join(processes.PROCESSES)}, "
            f"not {process!r}"
        )
    return process


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
        _at_least("--start", start, 0)
        _at_least("--memory", memory, 0)
        _check_input(data)
        trajectories = _nonempty(io.load_npz(data), data)
        # A scored step needs start + 1 displacements: the option and the file named.
        io.check_min_steps(trajectories, start + 1, f"--start {start}: {data}")
        if trajectories.is_ragged:
            raise io.TrajectoryFileError(f"{data}: exact-nll needs trajectories of equal length")
        process = _labelled_process(trajectories, data)
        datasets.check_labels(trajectories, data, process)
        started = time.perf_counter()
        measurement = trajectories.measurement()
        if memory is not None and any(np.any(v != 0) for v in measurement.values()):
            raise OptionError(
                f"--memory: {data} was simulated with localisation noise or blur, whose exact "
                f"NLL conditions on all earlier steps; leave --memory out"
            )
        nll = processes.exact_nll(
            trajectories.displacements,
            process,
            trajectories.alpha,
            trajectories.D,
            start=start,
            memory=memory,
            progress=True,
            **measurement,
        )
        expected = processes.expected_exact_nll(
            process,
            trajectories.alpha,
            trajectories.D,
            trajectories.n_steps,
            start=start,
            memory=memory,
            **measurement,
        )
    spread = nll.std(ddof=1) / np.sqrt(nll.size) if nll.size > 1 else float("nan")
    typer.echo(
        f"{len(trajectories)} trajectories, steps {start}..{trajectories.n_steps - 1}, memory "
        f"{'all' if memory is None else memory}: exact NLL {nll.mean():.5f} +- "
        f"{spread:.5f} nat per displacement "
        f"(expectation {expected.mean():.5f}), {time.perf_counter() - started:.1f} s"
    )


ACCELERATORS = ("auto", "cpu", "gpu", "cuda", "mps")


def _parse_devices(devices: str) -> int | str:
    """``--devices``: a count >= 1, -1 (all), ``auto``, or distinct GPU indices ``0,1``."""
    spec = devices.strip()
    if spec == "auto":
        return spec
    try:
        numbers = [int(part) for part in spec.split(",")]
    except ValueError:
        numbers = []
    if len(numbers) == 1 and (numbers[0] >= 1 or numbers[0] == -1):
        return numbers[0]
    if len(numbers) > 1 and min(numbers) >= 0 and len(set(numbers)) == len(numbers):
        return ",".join(map(str, numbers))  # GPU indices
    raise OptionError(
        f"--devices {devices!r}: give a count >= 1, -1 (all), auto or distinct GPU indices "
        "such as 0,1"
    )


def _check_hardware(accelerator: str, devices: str, num_nodes: int) -> int | str:
    """``--accelerator``, ``--devices`` and ``--num-nodes`` checked against this machine
    before any work; returns the devices as Lightning takes them."""
    import torch

    _at_least("--num-nodes", num_nodes, 1)
    if accelerator not in ACCELERATORS:
        raise OptionError(f"--accelerator {accelerator!r}: choose one of {', '.join(ACCELERATORS)}")
    count = _parse_devices(devices)
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if accelerator in ("gpu", "cuda") and gpus == 0:
        raise OptionError(
            f"--accelerator {accelerator}: torch sees no GPU on this machine "
            f"(torch.cuda.is_available() is False); use --accelerator cpu or auto"
        )
    if accelerator == "mps" and not torch.backends.mps.is_available():
        raise OptionError("--accelerator mps: torch sees no Apple GPU on this machine")
    on_gpu = accelerator in ("gpu", "cuda") or (accelerator == "auto" and gpus > 0)
    if isinstance(count, str) and count != "auto":
        indices = [int(part) for part in count.split(",")]
        if not on_gpu:
            raise OptionError(f"--devices {devices}: device indices are for GPUs; give a count")
        if max(indices) >= gpus:
            raise OptionError(f"--devices {devices}: this machine has {gpus} GPU(s)")
    if on_gpu and isinstance(count, int) and count > gpus:
        raise OptionError(f"--devices {count}: this machine has {gpus} GPU(s)")
    return count


def _read_plan(path: Path):
    """A plan file: ``{"stages": [...]}`` or a run's config.json (its training plan)."""
    from minrep.schedule import Plan

    where = f"--plan {path}: not a training plan"
    try:
        values = json.loads(path.read_text())
    except FileNotFoundError:
        raise OptionError(f"--plan {path}: no such file") from None
    except (OSError, UnicodeDecodeError) as err:
        raise OptionError(f"{where} (cannot be read: {err})") from None
    except json.JSONDecodeError as err:
        raise OptionError(f"{where} (not JSON: {err})") from None
    if isinstance(values, dict) and isinstance(values.get("training"), dict):
        values = values["training"].get("plan")  # a run's config.json
    if not isinstance(values, dict) or "stages" not in values:
        raise OptionError(f'{where} (expected {{"stages": [...]}}, got {str(values)[:80]})')
    try:
        return Plan.from_dict(values)
    except (ValueError, TypeError, KeyError) as err:
        raise OptionError(f"{where} ({err})") from None


Decoder = Annotated[
    str,
    typer.Option(
        help="window: the paper's (predicts from the receptive field on); whole: every "
        "displacement, with memory of the whole past, any length"
    ),
]
CudaGraph = Annotated[
    bool,
    typer.Option(
        help="experimental: on one GPU, replay the window network's forward and backward pass "
        "from a CUDA graph (2x the epochs per second on an H200; not yet checked on a GPU "
        "since a fix)"
    ),
]
Precision = Annotated[
    str,
    typer.Option(
        help="32-true, or bf16-mixed: convolutions in bfloat16, likelihood, KL and optimiser in "
        "float32"
    ),
]


@app.command()
def train(
    ctx: typer.Context,
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
    precision: Precision = "32-true",
    cuda_graph: CudaGraph = False,
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
    decoder: Decoder = "window",
    crop_min_steps: Annotated[
        int | None,
        typer.Option(
            help="train on prefixes of random length from N displacements (whole decoder: 10)"
        ),
    ] = None,
):
    """Train a beta-VAE on a dataset; writes the run directory (model, history, figures)."""
    from minrep.train import TrainConfig, keep_freed_memory
    from minrep.train import train as train_model

    with _user_errors():
        # Every option first, then the run directory, then the data: nothing is written, and
        # no data read, for a setting that cannot work.
        _check_train_options(ctx, batch_size, max_epochs, latent_dim, seed, lr, preset, plan, init)
        _check_network_options(ctx, decoder, paper_network, init, crop_min_steps)
        device_count = _check_hardware(accelerator, devices, num_nodes)
        _check_precision(precision)
        check_output(output, kind="directory")
        custom = _read_plan(plan) if plan is not None else None
        _check_init(init)
        _check_input(data)
        trajectories = io.load_npz(data)
        config = None
        if init is None:
            config = _new_network(trajectories.dim, latent_dim, paper_network, decoder)
        training = TrainConfig(
            preset=preset if plan is None else None,
            plan=custom,
            init=init,
            batch_size=batch_size,
            seed=seed,
            accelerator=accelerator,
            devices=device_count,
            num_nodes=num_nodes,
            max_epochs=max_epochs,
            lr=lr,
            crop_min_steps=crop_min_steps,
            precision=precision,
            cuda_graph=cuda_graph,
        )
        if resume:
            _warn_on_resume(ctx, output, training, config, plan)
        # Process-wide, hence here and not in the library's train(): glibc keeps freed memory
        # for the next training step instead of handing it back to the kernel page by page (a
        # quarter of a CPU step otherwise; see minrep.train.keep_freed_memory). This command
        # only trains.
        keep_freed_memory()
        result = train_model(
            trajectories,
            output,
            training,
            model_config=config,
            resume=resume,
            find_lr=find_lr,
            source=str(data),  # errors and config.json name the file
        )
    _report_training(result, output, find_lr)


def _report_training(result, output: Path, find_lr: bool) -> None:
    """One line: the learning-rate finder's suggestion, or where the run ended (and one more
    when more latents survive than the effective dimension)."""
    if find_lr:
        typer.echo(
            f"suggested learning rate: {result.history[0]['lr_suggestion']:.3g} "
            f"(plot: {output / 'figures' / 'lr_find.png'})"
        )
    elif result.history and result.primary:
        last = result.history[-1]
        typer.echo(
            f"epoch {last['epoch']}: held-out NLL {last['val_nll']:.4f} (exact "
            f"{last['val_exact_nll']:.4f}), surviving latents [{last['surviving']}], "
            f"effective dimension {last['effective_dimension']} -> {output}"
        )
        note = result.dimension.message() if result.dimension is not None else None
        if note is not None:
            typer.echo(note)


def _check_train_options(ctx, batch_size, max_epochs, latent_dim, seed, lr, preset, plan, init):
    """The numbers and combinations of train's options, before anything is read or written."""
    from minrep.schedule import PRESETS

    _at_least("--batch-size", batch_size, 1)
    _at_least("--max-epochs", max_epochs, 1)
    _at_least("--latent-dim", latent_dim, 1)
    _check_seed(seed)
    if lr is not None and not (math.isfinite(lr) and lr > 0):
        raise OptionError(f"--lr must be a finite number > 0, got {lr}")
    if plan is not None and _given(ctx, "preset"):
        raise OptionError("give --preset or --plan, not both")
    if plan is None and preset not in PRESETS:
        raise OptionError(
            f"--preset {preset!r}: choose one of {', '.join(sorted(PRESETS))} (or --plan)"
        )
    if init is not None and (_given(ctx, "latent_dim") or _given(ctx, "paper_network")):
        raise OptionError(
            "--latent-dim and --paper-network build a new network; --init starts from "
            "the network of the model given"
        )


def _new_network(dim: int, latent_dim: int, paper_network: bool, decoder: str):
    """The configuration of a new network: the paper's published one, or minrep's
    (scale-equivariant) with the decoder chosen."""
    from minrep.model import ModelConfig

    if paper_network:
        return ModelConfig.published(dim=dim, latent_dim=latent_dim)
    if decoder == "whole":
        return ModelConfig.whole_trajectory(dim=dim, latent_dim=latent_dim)
    return ModelConfig(dim=dim, latent_dim=latent_dim, scale_equivariant=True)


def _check_init(init: str | None) -> None:
    """``--init`` names a model directory or a shipped model."""
    from minrep import checkpoint

    if init is not None:
        try:
            checkpoint.resolve(init)
        except MinrepError as err:
            raise OptionError(f"--init: {err}") from None


def _check_precision(precision: str) -> None:
    from minrep.train import PRECISIONS

    if precision not in PRECISIONS:
        raise OptionError(f"--precision {precision!r}: choose one of {', '.join(PRECISIONS)}")


def _check_network_options(ctx, decoder, paper_network, init, crop_min_steps) -> None:
    from minrep.model import DECODERS

    if decoder not in DECODERS:
        raise OptionError(f"--decoder {decoder!r}: choose one of {', '.join(DECODERS)}")
    if paper_network and decoder != "window":
        raise OptionError("--paper-network is the paper's network, with its window decoder")
    if init is not None and _given(ctx, "decoder"):
        raise OptionError("--decoder builds a new network; --init starts from the model given")
    _at_least("--crop-min-steps", crop_min_steps, 1)


def _warn_on_resume(
    ctx: typer.Context, run_dir: Path, training, network, plan_file: Path | None
) -> None:
    """Each run setting given with ``--resume`` that differs from the run's own: one line on
    stderr, since the resumed run keeps its own (its config.json). Silent where config.json
    cannot be read: train() then says why the run cannot resume."""
    import dataclasses

    from minrep import checkpoint
    from minrep.model import ModelConfig

    config_path = run_dir / checkpoint.CONFIG
    try:
        saved = json.loads(config_path.read_text())
        recorded = saved["training"]
        plan = training.resolved().plan.to_dict()
        init = None if training.init is None else str(checkpoint.resolve(training.init))
        own_network = ModelConfig.from_dict(saved["model"])
    except (OSError, ValueError, KeyError, TypeError, MinrepError):
        return
    # (parameter, option, value given, the given value as recorded, the run's own)
    settings = [
        ("batch_size", "--batch-size", training.batch_size, training.batch_size, "batch_size"),
        ("seed", "--seed", training.seed, training.seed, "seed"),
        ("init", "--init", training.init, init, "init"),
        ("preset", "--preset", training.preset, plan, "plan"),
        ("plan", "--plan", plan_file, plan, "plan"),
        ("lr", "--lr", training.lr, plan, "plan"),
    ]
    for name, option, value, as_recorded, key in settings:
        if _given(ctx, name) and as_recorded != recorded.get(key):
            own = "plan" if key == "plan" else f"{key.replace('_', ' ')} {recorded.get(key)}"
            typer.echo(
                f"warning: {option} {value} is not used: {run_dir} resumes with its own {own} "
                f"({config_path}); start a new run to change it",
                err=True,
            )
    if network is not None and (_given(ctx, "latent_dim") or _given(ctx, "paper_network")):
        if dataclasses.replace(network, log_scale_mean=own_network.log_scale_mean) != own_network:
            typer.echo(
                f"warning: --latent-dim/--paper-network not used: {run_dir} resumes with its "
                f"own network ({own_network.latent_dim} latents; {config_path})",
                err=True,
            )


SplitGaps = Annotated[bool, typer.Option(help="cut tracks at missing frames")]
SkipShort = Annotated[
    bool, typer.Option(help="skip (with a warning) tracks shorter than the model's minimum")
]


def _load_tracks(trajectories: Path, vae, split_gaps: bool, skip_short: bool) -> io.Trajectories:
    """The trajectories a model is to read: ``--split-gaps`` and ``--skip-short`` are for
    tracking files; tracks shorter than the model's minimum are an error or skipped."""
    for flag, given in (("--split-gaps", split_gaps), ("--skip-short", skip_short)):
        if given and trajectories.suffix.lower() not in io.TRACK_SUFFIXES:
            raise OptionError(
                f"{flag} is for tracking files (.csv, .parquet, .xml), not {trajectories}"
            )
    data = io.load(
        trajectories,
        min_steps=vae.config.min_steps,
        split_gaps=split_gaps,
        on_short="skip" if skip_short else "error",
    )
    return _nonempty(data, trajectories)


@app.command()
def encode(
    model: Annotated[str, typer.Argument(help="run directory or shipped model name")],
    trajectories: Annotated[Path, typer.Argument(help=".npz dataset or tracking .csv/.parquet")],
    output: Annotated[Path, typer.Option("--output", "-o", help="latents .npz or .csv")],
    split_gaps: SplitGaps = False,
    skip_short: SkipShort = False,
):
    """Latent mean and log-variance of each trajectory (a 1D model encodes 2D/3D tracks axis
    by axis)."""
    from minrep import checkpoint
    from minrep.encode import encode as encode_all
    from minrep.encode import encode_axes, save_latents

    with _user_errors():
        _check_input(trajectories)
        check_output(output, (".npz", ".csv"), inputs=(trajectories,))
        vae = checkpoint.load_model(model)
        data = _load_tracks(trajectories, vae, split_gaps, skip_short)
        if data.dim != vae.config.dim and vae.config.dim != 1:
            raise io.TrajectoryFileError(
                f"{trajectories}: the trajectories have dim {data.dim}; model {model} was "
                f"trained on dim {vae.config.dim}"
            )
        if vae.config.dim == 1 and data.dim > 1:
            latents = encode_axes(vae, data, progress=True, source=str(trajectories))
            agree = latents["axes_agree"]
            typer.echo(
                f"The model is 1D and the tracks are {data.dim}D: each axis was encoded as its "
                f"own 1D trajectory (mu_x_*, mu_y_*, ...). The axes agree for {agree.sum()} of "
                f"{len(data)} tracks; for those, mu_combined_* is their precision-weighted mean "
                "(NaN where they disagree: anisotropic or correlated motion?)."
            )
        else:
            latents = encode_all(vae, data, progress=True, source=str(trajectories))
        save_latents(latents, data, output)
    typer.echo(f"{len(data)} trajectories encoded ({vae.config.latent_dim} latents) -> {output}")


@app.command()
def estimate(
    model: Annotated[str, typer.Argument(help="run directory or shipped model name")],
    trajectories: Annotated[Path, typer.Argument(help="tracking file or .npz dataset")],
    output: Annotated[Path, typer.Option("--output", "-o", help="estimates .csv")],
    pixel_size: Annotated[
        float | None, typer.Option(help="micrometres per pixel (default: the file's units)")
    ] = None,
    frame_interval: Annotated[
        float | None, typer.Option(help="seconds per frame (default: the file's, else frames)")
    ] = None,
    split_gaps: SplitGaps = False,
    skip_short: SkipShort = False,
):
    """alpha and D of each track with 90 % intervals, in physical units (one CSV row per
    track; per axis with a 1D model and 2D/3D tracks)."""
    from minrep import estimation

    with _user_errors():
        _check_input(trajectories)
        for option, value in (("--pixel-size", pixel_size), ("--frame-interval", frame_interval)):
            if value is not None and not (math.isfinite(value) and value > 0):
                raise OptionError(f"{option} must be a positive number, got {value}")
        check_output(output, (".csv",), inputs=(trajectories,))
        vae, calibration = estimation.model_calibration(model, progress=True)
        data = _load_tracks(trajectories, vae, split_gaps, skip_short)
        table, unit = estimation.estimate_in_units(
            vae, data, calibration, pixel_size, frame_interval
        )
        with io.atomic_write(output, suffix=".csv") as tmp:
            table.to_csv(tmp, index=False)
    typer.echo(
        f"{len(data)} tracks: alpha and D ({unit}) with {calibration.level:.0%} intervals "
        f"-> {output}"
    )


@app.command()
def generate(
    ctx: typer.Context,
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

    with _user_errors():
        source = _check_generate_options(
            z, from_file, sweep, n, n_per_value, length, context, seed, batch_size
        )
        values = parse_latent_values(z) if z is not None else None
        swept = parse_sweep(sweep) if sweep is not None else None
        _check_input(from_file, "--from")
        check_output(output, (".npz",), inputs=(from_file,))
        vae = checkpoint.load_model(model)
        _check_latent_indices(vae, model, values, swept)
        if seed is None:  # fresh randomness, recorded so that the file can be reproduced
            seed = int(np.random.SeedSequence().generate_state(1)[0])
        latents, labels, starts = _generation_latents(
            vae, model, values, swept, from_file, n, n_per_value, context, length
        )
        displacements = gen.generate_many(
            vae,
            latents,
            length - 1,
            context=starts,
            seed=seed,
            batch_size=batch_size,
            progress=True,
        )
        meta = {
            "generator": "minrep generate",
            "model": str(model),
            "seed": seed,
            "context": context,
            "source": source,
        }
        result = gen.generated_set(displacements, latents, meta, labels)
        io.save_npz(result, output)
    typer.echo(
        f"{len(result)} trajectories of T = {length} positions ({length - 1} displacements), "
        f"seed {seed} -> {output}"
    )


def _check_generate_options(
    z, from_file, sweep, n, n_per_value, length, context, seed, batch_size
) -> str:
    """Check generate's options before any work; returns the option that gives the latents."""
    from minrep.generate import GenerationError

    chosen = [
        name
        for name, value in (("--z", z), ("--from", from_file), ("--sweep", sweep))
        if value is not None
    ]
    if len(chosen) != 1:
        raise GenerationError("give exactly one of --z, --from and --sweep")
    if length < 2:
        raise GenerationError(f"--length (positions T) must be >= 2, got {length}")
    _at_least("--n", n, 1)
    _at_least("--n-per-value", n_per_value, 1)
    _at_least("--batch-size", batch_size, 1)
    _check_seed(seed)
    if n_per_value is not None and sweep is None:
        raise OptionError("--n-per-value is for --sweep (with --z and --from: --n)")
    if context not in ("zeros", "start") or (context == "start" and from_file is None):
        raise GenerationError("--context is zeros, or start together with --from")
    return chosen[0]


def _check_latent_indices(vae, model: str, values: dict | None, swept) -> None:
    """Every latent index of --z and --sweep exists in the model."""
    latent_dim = vae.config.latent_dim
    indices = [("--z", i) for i in values or ()]
    if swept is not None:
        indices.append(("--sweep", swept[0]))
    for option, index in indices:
        if not 0 <= index < latent_dim:
            raise OptionError(
                f"{option}: latent index {index} is out of range: model {model} has "
                f"{latent_dim} latents (0..{latent_dim - 1})"
            )


def _generation_latents(vae, model, values, swept, from_file, n, n_per_value, context, length):
    """The latent rows to generate from (given values, a sweep, or the encoded trajectories of
    --from), their labels, and the context of each row (None: zeros); refuses a request that
    would not fit in memory before encoding anything."""
    from minrep import generate as gen
    from minrep.encode import encode as encode_all

    data = None
    if values is not None:
        rows = n
    elif swept is not None:
        rows = len(swept[1]) * (n_per_value or n)
    else:
        data = _nonempty(io.load(from_file, min_steps=vae.config.min_steps), from_file)
        if data.dim != vae.config.dim:
            raise io.TrajectoryFileError(
                f"{from_file}: the trajectories have dim {data.dim}; model {model} was "
                f"trained on dim {vae.config.dim}"
            )
        rows = len(data) * n
    asked = {"--n": n, "--n-per-value": n_per_value, "--length": length}
    _check_size(
        rows * vae.config.dim * (length - 1),
        4,
        " ".join(f"{k} {v}" for k, v in asked.items() if v is not None)
        + f": {rows} trajectories of T = {length}",
    )
    if values is not None:
        return gen.latents_with_values(vae, values, n), {}, None
    if swept is not None:
        latents = gen.sweep_latents(vae, swept[0], swept[1], n_per_value or n)
        return latents, {"sweep_latent": np.full(len(latents), swept[0])}, None
    latents = np.repeat(encode_all(vae, data, source=str(from_file))["mu"], n, axis=0)
    labels = {k: np.repeat(v, n) for k, v in data.labels.items()}
    starts = None
    if context == "start":
        starts = np.repeat(data.displacements[:, :, : vae.receptive_field], n, axis=0)
    return latents, labels, starts


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

    with _user_errors(n_per_cell="--n-per-cell", seed="--seed"):
        _at_least("--n-per-cell", n_per_cell, 1)
        _check_seed(seed)
        if data is not None and n_per_cell is not None:
            raise OptionError(
                "--n-per-cell sets the size of the simulated test set: not with --data"
            )
        _check_input(data, "--data")
        check_output(output, kind="directory")
        vae = checkpoint.load_model(model)
        test = _test_set(model, vae, data, n_per_cell, seed)
        result = run_analysis(vae, test, seed=seed)
        page = write_report(result, output, title=f"minrep analysis of {model}")
    _print_metrics(result.metrics)
    typer.echo(f"report: {page}")


def check_test_set(test: io.Trajectories, source, model_dim: int) -> io.Trajectories:
    """A labelled test set the analysis can use, or an error naming the file and what is
    wrong: no trajectory, lengths that differ, another dimension, missing or bad labels."""
    _nonempty(test, source)
    if test.is_ragged:
        raise io.TrajectoryFileError(f"{source}: the analysis needs trajectories of one length")
    if test.dim != model_dim:
        raise io.TrajectoryFileError(
            f"{source}: the test set has dim {test.dim}, the model was trained on dim {model_dim}"
        )
    missing = [k for k in ("alpha", "D") if k not in test.labels]
    if missing:
        raise io.TrajectoryFileError(
            f"{source}: the analysis needs a labelled test set (missing labels: "
            f"{', '.join(missing)})"
        )
    process = test.process if test.process in processes.PROCESSES else None
    datasets.check_labels(test, source, process)
    return test


def _test_set(model: str, vae, data: Path | None, n_per_cell: int | None, seed: int):
    """The labelled test set given, or the paper-test grid of the model's training process."""
    from minrep import checkpoint

    if data is not None:
        test = io.load_npz(data, min_steps=vae.config.min_steps)
        return check_test_set(test, data, vae.config.dim)
    process = checkpoint.read_config(model).get("data", {}).get("process")
    if process not in processes.PROCESSES:
        raise io.TrajectoryFileError(
            f"{model}: the model's training process is not recorded; give a test set (--data)"
        )
    grid = datasets.preset_grid(process, "paper-test", n_per_cell=n_per_cell)
    _check_dataset_size(grid, vae.config.dim, 4, f"--n-per-cell {n_per_cell}")
    return datasets.paper_test_set(
        process, dim=vae.config.dim, training_range=vae.training_range, n_per_cell=n_per_cell,
        seed=seed, progress=True,
    )  # fmt: skip


def _print_metrics(metrics: dict) -> None:
    """The headline numbers, each kind with one line that says what a good value is."""
    from minrep.demo import metric_lines

    for line in metric_lines(metrics):
        typer.echo(line)
    if "effective_dimension_note" in metrics:  # more latents survive than the dimension
        typer.echo(metrics["effective_dimension_note"])


@app.command()
def demo(
    model: Annotated[
        str, typer.Option(help="shipped model (bm, fbm, sbm, fbm-2d) or run directory")
    ] = "fbm",
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

    with _user_errors(n_per_cell="--n-per-cell", seed="--seed"):
        _at_least("--n-per-cell", n_per_cell, 1)
        _check_seed(seed)
        _check_input(data, "--data")
        check_output(output, kind="directory")
        run_demo(model, output, data=data, n_per_cell=n_per_cell, seed=seed, echo=typer.echo)


def main() -> None:  # pragma: no cover - entry point for python -m minrep
    app(prog_name="minrep")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
