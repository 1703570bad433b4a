"""The optional andi-datasets backend: the simulator the paper used, behind one wrapper.

andi-datasets pins numpy <= 1.26.4, so it is an extra (``pip install 'minrep[andi]'``) and is
imported only here. Its API has changed under its users before, so minrep calls exactly one
entry point (``andi_datasets.models_theory.models_theory``) and is tested against the pinned
version, :data:`PINNED_VERSION`.

What comes back is rescaled to minrep's conventions (see :mod:`minrep.processes`):

- ``fbm``, ``bm`` (FBM with alpha = 1): andi-datasets samples FBM on [0, 1], so its
  displacements have variance (1 / L)^alpha; they are multiplied by sqrt(2D) L^(alpha/2),
  giving Var(dx) = 2D exactly.
- ``sbm``: andi-datasets draws MSD(t) = t^alpha and drops the first displacement, so its
  displacement t has Var = (t+2)^alpha - (t+1)^alpha; multiplied by sqrt(2D) this is minrep's
  SBM with its time origin one step earlier.
- ``ctrw``, ``lw``, ``attm``: andi-datasets' own units multiplied by sqrt(D) (D = 1 gives
  its native trajectories); alpha must lie in the process's range
  (:data:`minrep.processes.ALPHA_RANGE`).
"""

from __future__ import annotations

import contextlib
import warnings
from importlib import metadata

import numpy as np

from minrep.processes import (
    ANDI_ONLY_PROCESSES,
    PROCESSES,
    SimulationError,
    check_parameters,
    check_process,
)
from minrep.progress import bar

PINNED_VERSION = "2.1.13"

INSTALL_HINT = (
    "the andi backend needs andi-datasets (which pins numpy<=1.26.4): pip install 'minrep[andi]'"
)


def installed_version() -> str | None:
    """Version of the installed andi-datasets, or None."""
    try:
        return metadata.version("andi-datasets")
    except metadata.PackageNotFoundError:
        return None


def _models_theory():
    version = installed_version()
    if version is None:
        raise SimulationError(INSTALL_HINT)
    if version != PINNED_VERSION:
        warnings.warn(
            f"andi-datasets {version} is installed; minrep is tested with {PINNED_VERSION}",
            stacklevel=3,
        )
    try:
        from andi_datasets.models_theory import models_theory
    except ImportError as err:  # e.g. a numpy too new for it
        raise SimulationError(f"andi-datasets failed to import ({err}); {INSTALL_HINT}") from err
    return models_theory()


@contextlib.contextmanager
def _seeded(seed):
    """Seed the global generators andi-datasets draws from, and restore them afterwards."""
    # andi-datasets draws from numpy's legacy global state: there is no generator to pass.
    import stochastic.random

    legacy_state = np.random.get_state()  # noqa: NPY002
    previous = stochastic.random.generator
    np.random.seed(seed)  # noqa: NPY002
    stochastic.random.generator = np.random.default_rng(seed)
    try:
        yield
    finally:
        np.random.set_state(legacy_state)  # noqa: NPY002
        stochastic.random.generator = previous


def simulate(
    process: str,
    alpha,
    D,
    n_steps: int,
    n: int | None = None,
    dim: int = 1,
    seed: int | None = 0,
    progress: bool = False,
) -> np.ndarray:
    """Displacements from andi-datasets, shape ``(n, dim, n_steps)``, float64, rescaled as
    described in the module docstring. One trajectory at a time (andi-datasets is not
    vectorised): from about 30 microseconds per trajectory (FBM, SBM) to milliseconds (BM via
    FBM with H = 1/2, Levy walks). The same seed gives the same trajectories; ``seed=None``
    draws fresh randomness."""
    check_process(process, PROCESSES + ANDI_ONLY_PROCESSES)
    if dim not in (1, 2, 3):
        raise SimulationError(f"andi-datasets simulates dim 1, 2 or 3, not {dim}")
    alpha, D = check_parameters(process, alpha if process != "bm" else 1.0, D, n)
    models = _models_theory()
    method = getattr(models, "fbm" if process == "bm" else process)
    n_positions = n_steps + 1
    out = np.empty((alpha.size, dim, n_steps))
    with _seeded(seed):
        for i in bar(range(alpha.size), desc=f"simulate {process} (andi)", enabled=progress):
            # andi-datasets calls the dimension "D" and returns the components concatenated.
            positions = np.asarray(method(n_positions, alpha[i], D=dim), dtype=np.float64)
            out[i] = np.diff(positions.reshape(dim, n_positions), axis=-1)
    if process in ("bm", "fbm"):
        scale = np.sqrt(2 * D) * n_steps ** (alpha / 2)
    elif process == "sbm":
        scale = np.sqrt(2 * D)
    else:
        scale = np.sqrt(D)
    return out * scale[:, None, None]
