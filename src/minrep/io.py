"""Trajectory data: the :class:`Trajectories` container, ``.npz`` datasets and tracking files.

A dataset ``.npz`` holds ``displacements`` float32 ``(n, dim, time)``; per-trajectory labels
of shape ``(n,)`` (``alpha`` and ``D`` float64, ``process`` strings, ``particle`` ids, ...);
``meta``, a JSON string; and ``lengths`` (int, ``(n,)``) when trajectories differ in length,
in which case each row is padded with NaN after its last displacement.

Tracking files (CSV or Parquet, as trackpy and the AnDi challenge write them) have one row per
position and columns ``particle`` (or ``traj_idx``), ``frame``, ``x`` and, in 2D/3D, ``y``,
``z``. TrackMate's spots CSV (``TRACK_ID``, ``FRAME``, ``POSITION_X/Y/Z``; its three rows of
names and units under the header) and its tracks XML (``<Tracks>``, ``<particle>``,
``<detection t x y z>``) are read too, with the units they state, and so is a DataFrame in
memory (trackpy's, :func:`from_dataframe`). Positions become displacements
``dx[t] = x[t+1] - x[t]``. Every problem with a file is reported as a
:class:`TrajectoryFileError` that names the file, the trajectory and the row.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import stat
import warnings
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from minrep import MinrepError

TABLE_SUFFIXES = (".csv", ".parquet", ".pq")  # what write_tracks writes
TRACK_SUFFIXES = (*TABLE_SUFFIXES, ".xml")  # what read_tracks reads
COORDINATES = ("x", "y", "z")
ID_COLUMNS = ("particle", "traj_idx")
FLOAT32_MAX = float(np.finfo(np.float32).max)  # the largest displacement a model can hold
MAX_FRAME = 2**53  # frame numbers beyond it are not exact as the float64 a table is read as


class TrajectoryFileError(MinrepError, ValueError):
    """A trajectory file or array that cannot be used, with the reason."""


@contextlib.contextmanager
def atomic_write(path, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is renamed onto ``path``.

    An interrupted write leaves the old file (or none), never a truncated one. The file gets
    the permissions of an ordinary write (0666 less the umask), whatever the writer did to
    the temporary file (safetensors, for one, writes it 0600).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{secrets.token_hex(8)}{suffix}.tmp"
    # created with the permissions of an ordinary write (mkstemp's would be 0600)
    os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    try:
        mode = stat.S_IMODE(os.stat(tmp).st_mode)
        yield Path(tmp)
        if stat.S_IMODE(os.stat(tmp).st_mode) != mode:
            os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@dataclass
class Trajectories:
    """A set of trajectories as displacements, with per-trajectory labels and metadata.

    ``displacements``: float32 ``(n, dim, time)``; when ``lengths`` is given (ragged sets, e.g.
    from tracking files) row ``i`` holds ``lengths[i]`` displacements followed by NaN.
    ``labels``: name -> array of shape ``(n,)``. ``meta``: JSON-serialisable description.
    Every displacement (padding aside) is a finite float32: NaN, infinities and values too
    large for float32 are refused, naming the trajectory.
    """

    displacements: np.ndarray
    labels: dict[str, np.ndarray] = field(default_factory=dict)
    meta: dict = field(default_factory=dict)
    lengths: np.ndarray | None = None

    def __post_init__(self):
        dx = np.asarray(self.displacements)
        if dx.ndim != 3:
            raise TrajectoryFileError(
                f"displacements must have shape (n, dim, time), got {dx.shape}"
            )
        if not np.issubdtype(dx.dtype, np.floating):
            raise TrajectoryFileError(f"displacements must be floating point, got {dx.dtype}")
        with np.errstate(over="ignore", invalid="ignore"):  # overflow is reported below
            self.displacements = np.ascontiguousarray(dx, dtype=np.float32)
        n = dx.shape[0]
        labels = {}
        for name, values in self.labels.items():
            values = np.asarray(values)
            if values.shape != (n,):
                raise TrajectoryFileError(
                    f"label {name!r} has shape {values.shape}, expected ({n},): one per trajectory"
                )
            labels[name] = values
        self.labels = labels
        if self.lengths is not None:
            lengths = np.asarray(self.lengths, dtype=np.int64)
            if lengths.shape != (n,) or (lengths < 0).any() or (lengths > dx.shape[2]).any():
                raise TrajectoryFileError(
                    f"lengths must be {n} integers in [0, {dx.shape[2]}], got shape {lengths.shape}"
                )
            self.lengths = None if (lengths == dx.shape[2]).all() else lengths
        _check_finite(self, dx)

    # -- shape ------------------------------------------------------------------------------
    def __len__(self) -> int:
        return self.displacements.shape[0]

    @property
    def dim(self) -> int:
        return self.displacements.shape[1]

    @property
    def n_steps(self) -> int:
        """Displacements per trajectory (the longest, for ragged sets)."""
        return self.displacements.shape[2]

    @property
    def is_ragged(self) -> bool:
        return self.lengths is not None

    def step_counts(self) -> np.ndarray:
        """Number of displacements of each trajectory, ``(n,)``."""
        if self.lengths is None:
            return np.full(len(self), self.n_steps, dtype=np.int64)
        return self.lengths

    # -- labels -----------------------------------------------------------------------------
    @property
    def alpha(self) -> np.ndarray | None:
        return self.labels.get("alpha")

    @property
    def D(self) -> np.ndarray | None:
        return self.labels.get("D")

    def measurement(self) -> dict[str, np.ndarray | float]:
        """``noise`` and ``exposure`` of each trajectory (labels of simulated sets, 0 when
        absent), as :func:`minrep.processes.exact_nll` and friends take them."""
        return {name: self.labels.get(name, 0.0) for name in ("noise", "exposure")}

    @property
    def process(self) -> str | None:
        """The process name when all trajectories share one, else None."""
        values = self.labels.get("process")
        if values is None or len(values) == 0:
            return self.meta.get("process")
        unique = np.unique(values)
        return str(unique[0]) if unique.size == 1 else None

    # -- access -----------------------------------------------------------------------------
    def trajectory(self, i: int) -> np.ndarray:
        """Displacements of trajectory ``i`` without padding, ``(dim, length)``."""
        return self.displacements[i, :, : self.step_counts()[i]]

    def subset(self, index) -> Trajectories:
        """The trajectories selected by ``index`` (integer array, slice or boolean mask)."""
        lengths = None if self.lengths is None else self.lengths[index]
        dx = self.displacements[index]
        if lengths is not None and lengths.size:  # trim padding no longer needed
            dx = dx[:, :, : lengths.max()]
        labels = {k: v[index] for k, v in self.labels.items()}
        return Trajectories(dx, labels, dict(self.meta), lengths)

    def groups_by_length(self) -> Iterator[tuple[int, np.ndarray]]:
        """``(length, indices)`` for each distinct trajectory length, shortest first."""
        counts = self.step_counts()
        for length in np.unique(counts):
            yield int(length), np.flatnonzero(counts == length)


# ---------------------------------------------------------------------------------------------
# .npz datasets


def save_npz(trajectories: Trajectories, path) -> Path:
    """Write ``trajectories`` to ``path`` (``.npz``) atomically; returns the path."""
    arrays = {
        "displacements": trajectories.displacements,
        "meta": np.array(json.dumps(trajectories.meta, default=_json_default)),
    }
    for name in trajectories.labels:
        if name in ("displacements", "meta", "lengths"):
            raise TrajectoryFileError(f"label name {name!r} is reserved")
    arrays.update(trajectories.labels)
    if trajectories.lengths is not None:
        arrays["lengths"] = trajectories.lengths
    return write_npz(path, arrays)


def write_npz(path, arrays: dict) -> Path:
    """Write named arrays to an ``.npz`` atomically, never as pickles: text held in object
    arrays (as pandas returns it) is stored as strings; other Python objects are refused."""
    path = Path(path)
    plain = {}
    for name, values in arrays.items():
        values = np.asarray(values)
        if values.dtype.hasobject:  # np.savez would pickle it, and load_npz never unpickles
            if not all(isinstance(v, str) for v in values.ravel()):
                raise TrajectoryFileError(
                    f"{path}: {name!r} holds Python objects that .npz stores only by "
                    f"pickling; use numbers or strings"
                )
            values = values.astype(str)
        plain[name] = values
    with atomic_write(path) as tmp, open(tmp, "wb") as handle:
        np.savez(handle, **plain)
    return path


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"cannot store {type(value).__name__} in metadata")


def load_npz(path, min_steps: int = 1) -> Trajectories:
    """Read a dataset written by :func:`save_npz` (or by hand in the same layout).

    Never unpickles. Raises :class:`TrajectoryFileError` naming the file and the trajectory
    for a missing or misshapen array, non-finite values or trajectories shorter than
    ``min_steps`` displacements.
    """
    path = Path(path)
    if not path.is_file():
        raise TrajectoryFileError(f"{path}: no such file")
    if not zipfile.is_zipfile(path):  # np.load would take it for a pickle or a .npy array
        raise TrajectoryFileError(f"{path}: not an .npz dataset (not a zip archive)")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {key: data[key] for key in data.files}
    except (zipfile.BadZipFile, OSError, EOFError) as err:
        raise TrajectoryFileError(f"{path}: not an .npz dataset ({err})") from None
    except ValueError as err:  # object arrays need pickle: refused
        raise TrajectoryFileError(f"{path}: contains arrays that need unpickling ({err})") from None
    if "displacements" not in arrays:
        raise TrajectoryFileError(
            f"{path}: no 'displacements' array (found: {', '.join(sorted(arrays)) or 'nothing'})"
        )
    dx = arrays.pop("displacements")
    if dx.ndim != 3:
        raise TrajectoryFileError(
            f"{path}: 'displacements' has shape {dx.shape}, expected (n, dim, time)"
        )
    if not np.issubdtype(dx.dtype, np.floating):
        raise TrajectoryFileError(f"{path}: 'displacements' has dtype {dx.dtype}, expected float")
    meta_raw = arrays.pop("meta", None)
    try:
        meta = json.loads(str(meta_raw)) if meta_raw is not None else {}
    except json.JSONDecodeError as err:
        raise TrajectoryFileError(f"{path}: 'meta' is not valid JSON ({err})") from None
    lengths = arrays.pop("lengths", None)
    n = dx.shape[0]
    labels = {}
    for name, values in arrays.items():
        if values.ndim == 0:  # one value for the whole set, e.g. process = "fbm"
            values = np.full(n, values[()])
        if values.shape != (n,):
            raise TrajectoryFileError(
                f"{path}: label {name!r} has shape {values.shape}, expected ({n},), one value "
                f"per trajectory"
            )
        labels[name] = values
    try:
        trajectories = Trajectories(dx, labels, meta, lengths)
    except TrajectoryFileError as err:
        raise TrajectoryFileError(f"{path}: {err}") from None
    check_min_steps(trajectories, min_steps, path)
    return trajectories


def valid_steps(trajectories: Trajectories) -> np.ndarray:
    """``(n, time)``: True where a trajectory has a displacement, False on its padding."""
    counts = trajectories.step_counts()
    return np.arange(trajectories.n_steps) < counts[:, None]


def _check_finite(trajectories: Trajectories, given: np.ndarray) -> None:
    """Every displacement (padding aside) is finite in float32; ``given``: the array before
    the cast, to tell a value too large for float32 from one that was NaN or infinite."""
    dx = trajectories.displacements
    if np.isfinite(dx).all():  # the common case, without building the mask
        return
    bad = ~np.isfinite(dx) & valid_steps(trajectories)[:, None, :]
    if not bad.any():
        return
    i, component, t = (int(v) for v in np.argwhere(bad)[0])
    value = given[i, component, t]
    rows = np.flatnonzero(bad.any(axis=(1, 2)))
    more = "" if rows.size == 1 else f" ({rows.size} trajectories have such values)"
    if np.isfinite(value):
        raise TrajectoryFileError(
            f"trajectory {trajectory_name(trajectories, i)}: displacement {float(value):.4g} at "
            f"step {t}, component {component} is too large for float32 (largest "
            f"{FLOAT32_MAX:.4g}); rescale the data (other length units){more}"
        )
    raise TrajectoryFileError(
        f"trajectory {trajectory_name(trajectories, i)} has a non-finite displacement "
        f"({float(value)}) at step {t}, component {component}{more}"
    )


def trajectory_name(trajectories: Trajectories, i: int) -> str:
    """How messages name trajectory ``i``: its index, and its particle id where there is one."""
    particle = trajectories.labels.get("particle")
    return f"{i} (particle {particle[i]})" if particle is not None else str(i)


def trajectory_names(trajectories: Trajectories, rows, limit: int = 5) -> str:
    """The first ``limit`` of ``rows`` named as :func:`trajectory_name` does, and how many
    more there are."""
    rows = np.asarray(rows).ravel()
    names = ", ".join(trajectory_name(trajectories, int(i)) for i in rows[:limit])
    return names + (f" and {rows.size - limit} more" if rows.size > limit else "")


def check_min_steps(trajectories: Trajectories, min_steps: int, source="data") -> None:
    """Raise a :class:`TrajectoryFileError` if a trajectory has fewer than ``min_steps``
    displacements."""
    counts = trajectories.step_counts()
    short = np.flatnonzero(counts < min_steps)
    if short.size:
        i = int(short[0])
        raise TrajectoryFileError(
            f"{source}: {short.size} trajector{'y is' if short.size == 1 else 'ies are'} shorter "
            f"than the minimum of {min_steps} displacements ({min_steps + 1} positions); the "
            f"first is trajectory {trajectory_name(trajectories, i)} with {counts[i]}"
        )


# ---------------------------------------------------------------------------------------------
# Tracking files


def _read_table(path: Path) -> tuple[pd.DataFrame, Callable[[int], str], dict]:
    """The tracking file as a table with minrep's column names, where each row is in the file
    (row -> "line 7"), and what the file says of its format and units."""
    suffix = path.suffix.lower()
    if suffix not in TRACK_SUFFIXES:
        raise TrajectoryFileError(
            f"{path}: unknown file type {suffix!r}; expected .npz, .csv, .parquet or .xml"
        )
    if not path.is_file():
        raise TrajectoryFileError(f"{path}: no such file")
    if suffix == ".xml":
        return _read_trackmate_xml(path)
    try:
        if suffix == ".csv":
            if _is_trackmate_csv(path):
                return _read_trackmate_csv(path)
            # every number as written (pandas' default is off by an ulp in 1 in 6 floats)
            table = pd.read_csv(path, float_precision="round_trip")
            return table, lambda row: f"line {row + 2}", {"format": "table"}
        return pd.read_parquet(path), lambda row: f"row {row}", {"format": "table"}
    except pd.errors.EmptyDataError:
        raise TrajectoryFileError(f"{path}: the file is empty") from None
    except ImportError as err:
        raise TrajectoryFileError(
            f"{path}: reading Parquet needs pyarrow: pip install 'minrep[parquet]' ({err})"
        ) from None
    except Exception as err:  # parser errors of pandas/pyarrow: report them, not a traceback
        raise TrajectoryFileError(f"{path}: cannot be read as a table ({err})") from None


# TrackMate's names for minrep's columns, and for units it writes
TRACKMATE_COLUMNS = {
    "TRACK_ID": "particle",
    "FRAME": "frame",
    "POSITION_X": "x",
    "POSITION_Y": "y",
    "POSITION_Z": "z",
}
UNITS = {
    "micron": "um", "microns": "um", "um": "um", "\u00b5m": "um", "\u03bcm": "um",
    "nm": "nm", "mm": "mm", "pixel": "pixel", "pixels": "pixel",
    "sec": "s", "s": "s", "second": "s", "seconds": "s", "ms": "ms",
    "min": "min", "frame": "frame", "frames": "frame",
}  # fmt: skip


def _unit(text: str | None) -> str | None:
    """A unit as TrackMate writes it ("(micron)", "sec") in minrep's spelling ("um", "s")."""
    if text is None:
        return None
    text = str(text).strip().strip("()").strip()
    return UNITS.get(text.lower(), text or None)


def _is_trackmate_csv(path: Path) -> bool:
    with open(path, encoding="utf-8", errors="replace") as handle:
        header = handle.readline().strip().split(",")
    return "TRACK_ID" in header and "POSITION_X" in header


def _read_trackmate_csv(path: Path):
    """TrackMate's spots table: a header, then (in TrackMate 7 and later) three rows of long
    names, short names and units; spots in no track (empty TRACK_ID) are skipped, counted in a
    warning; POSITION_Z is dropped when it is zero throughout (a 2D movie)."""
    head = pd.read_csv(path, nrows=3, dtype=str, keep_default_na=False)
    described = len(head) == 3 and head["TRACK_ID"].iloc[0].strip() == "Track ID"
    table = pd.read_csv(path, skiprows=[1, 2, 3] if described else None,
                        float_precision="round_trip", dtype={"TRACK_ID": str})  # fmt: skip
    first_line = 5 if described else 2
    lines = np.arange(len(table)) + first_line
    track = table["TRACK_ID"].fillna("").astype(str).str.strip()
    untracked = track.isin(["", "None"]).to_numpy()
    if untracked.all():
        raise TrajectoryFileError(f"{path}: no spot belongs to a track (TRACK_ID is empty)")
    if untracked.any():
        warnings.warn(f"{path}: {untracked.sum()} spots in no track skipped", stacklevel=4)
    table, lines = table[~untracked].reset_index(drop=True), lines[~untracked]
    table = table.rename(columns=TRACKMATE_COLUMNS)
    table["particle"] = track[~untracked].to_numpy()
    table = _without_flat_z(table)
    meta = {"format": "trackmate-csv"}
    if described:
        units = head.iloc[2]
        meta["length_unit"] = _unit(units.get("POSITION_X"))
        meta["time_unit"] = _unit(units.get("POSITION_T"))
    meta["frame_interval"] = _frame_interval(path, table)
    return table, lambda row: f"line {lines[row]}", meta


def _without_flat_z(table: pd.DataFrame) -> pd.DataFrame:
    z = pd.to_numeric(table.get("z"), errors="coerce") if "z" in table.columns else None
    if z is not None and (z == 0).all():
        return table.drop(columns="z")
    return table


def _frame_interval(path: Path, table: pd.DataFrame) -> float | None:
    """Seconds (or the file's time unit) per frame from POSITION_T / FRAME, if they say it."""
    if "POSITION_T" not in table.columns:
        return None
    time = pd.to_numeric(table["POSITION_T"], errors="coerce").to_numpy(dtype=float)
    frame = pd.to_numeric(table["frame"], errors="coerce").to_numpy(dtype=float)
    usable = np.isfinite(time) & np.isfinite(frame) & (frame != 0)
    if not usable.any():
        return None
    return float(np.median(time[usable] / frame[usable]))


def _read_trackmate_xml(path: Path):
    """TrackMate's tracks XML: ``<Tracks spaceUnits timeUnits frameInterval>`` holding one
    ``<particle>`` per track of ``<detection t x y z>`` (t the frame). Parsed by the standard
    library, which expands no external entity."""
    import xml.etree.ElementTree as ElementTree

    try:
        root = ElementTree.parse(path).getroot()
    except ElementTree.ParseError as err:
        raise TrajectoryFileError(f"{path}: not readable as XML ({err})") from None
    if root.tag != "Tracks":
        raise TrajectoryFileError(
            f"{path}: not a TrackMate tracks file: the root element is <{root.tag}>, "
            f"expected <Tracks>"
        )
    rows, places = [], []
    for k, particle in enumerate(root.iter("particle")):
        for j, detection in enumerate(particle.iter("detection")):
            values = {c: detection.get(c) for c in ("t", "x", "y", "z")}
            rows.append({"particle": k, "frame": values.pop("t"), **values})
            places.append(f"particle {k + 1}, detection {j + 1}")
    if not rows:
        raise TrajectoryFileError(f"{path}: the file holds no <particle> with a <detection>")
    table = _without_flat_z(pd.DataFrame(rows).dropna(axis=1, how="all"))
    interval = root.get("frameInterval")
    meta = {
        "format": "trackmate-xml",
        "length_unit": _unit(root.get("spaceUnits")),
        "time_unit": _unit(root.get("timeUnits")),
        "frame_interval": float(interval) if interval is not None else None,
    }
    return table, lambda row: places[row], meta


@dataclass
class _Runs:
    """The rows of a tracking table grouped into trajectories: ``order`` sorts the rows by
    particle then frame; trajectory k is sorted rows ``starts[k] .. ends[k] - 1``."""

    order: np.ndarray
    starts: np.ndarray
    ends: np.ndarray
    particle: np.ndarray  # id of each trajectory's particle
    first_frame: np.ndarray
    segment: np.ndarray  # 0, 1, ... for the pieces of one particle cut at gaps

    @property
    def n_steps(self) -> np.ndarray:
        return self.ends - self.starts - 1

    def subset(self, keep: np.ndarray) -> _Runs:
        return _Runs(
            self.order,
            self.starts[keep],
            self.ends[keep],
            self.particle[keep],
            self.first_frame[keep],
            self.segment[keep],
        )


def _track_columns(source: str, table: pd.DataFrame) -> tuple[str, list[str]]:
    """The particle id column and the coordinate columns, or an error naming what is missing."""
    id_column = next((c for c in ID_COLUMNS if c in table.columns), None)
    coords = [c for c in COORDINATES if c in table.columns]
    missing = [] if id_column else ["particle (or traj_idx)"]
    missing += [c for c in ("frame", "x") if c not in table.columns]
    needed = COORDINATES[: COORDINATES.index(coords[-1]) + 1] if coords else ()
    missing += [f"{c} (found {', '.join(coords)})" for c in needed[1:] if c not in coords]
    if missing:
        raise TrajectoryFileError(
            f"{source}: missing column(s) {', '.join(missing)}; "
            f"found {', '.join(map(str, table.columns))}"
        )
    return id_column, coords


def _numbers(source: str, table: pd.DataFrame, ids, columns, where) -> dict[str, np.ndarray]:
    """``columns`` as float64, every value finite, frames integers; else the first bad row."""
    numbers = {}
    for column in columns:
        values = pd.to_numeric(table[column], errors="coerce").to_numpy(dtype=np.float64)
        bad = ~np.isfinite(values)
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            value = table[column].iloc[row]  # as written (numpy 2 would repr np.float64(nan))
            value = value.item() if isinstance(value, np.generic) else value
            raise TrajectoryFileError(
                f"{source}: particle {ids[row]}, {where(row)}: {column} = {value!r}"
                f" is not a finite number ({bad.sum()} such value(s) in column {column})"
            )
        numbers[column] = values
    frames = numbers["frame"]
    if (frames != np.round(frames)).any():
        row = int(np.flatnonzero(frames != np.round(frames))[0])
        raise TrajectoryFileError(
            f"{source}: particle {ids[row]}, {where(row)}: frame {frames[row]} is not an integer"
        )
    if (np.abs(frames) > MAX_FRAME).any():
        row = int(np.flatnonzero(np.abs(frames) > MAX_FRAME)[0])
        raise TrajectoryFileError(
            f"{source}: particle {ids[row]}, {where(row)}: frame {frames[row]:.4g} is beyond the "
            f"frame numbers that can be told apart (|frame| <= 2**53)"
        )
    numbers["frame"] = frames.astype(np.int64)
    return numbers


def _runs(source: str, ids, frames, split_gaps: bool, where) -> _Runs:
    """Trajectories as runs of consecutive frames of one particle; a repeated frame is an
    error, and so is a gap unless ``split_gaps`` (a new trajectory starts after it)."""
    order = np.lexsort((frames, pd.factorize(ids, sort=True)[0]))
    ids_sorted, frames_sorted = ids[order], frames[order]
    same = ids_sorted[1:] == ids_sorted[:-1]
    step = np.diff(frames_sorted)
    repeated = np.flatnonzero(same & (step == 0))
    if repeated.size:
        j = int(repeated[0])
        raise TrajectoryFileError(
            f"{source}: particle {ids_sorted[j]} has frame {frames_sorted[j]} twice "
            f"({where(int(order[j]))} and {where(int(order[j + 1]))})"
        )
    gaps = np.flatnonzero(same & (step > 1))
    if gaps.size and not split_gaps:
        j = int(gaps[0])
        raise TrajectoryFileError(
            f"{source}: particle {ids_sorted[j]} jumps from frame {frames_sorted[j]} to "
            f"{frames_sorted[j + 1]} ({where(int(order[j + 1]))}); frames must be consecutive "
            f"(or pass split_gaps / --split-gaps to cut trajectories at gaps)"
        )
    starts = np.flatnonzero(np.concatenate([[True], ~same | (step > 1)]))
    ends = np.append(starts[1:], len(order))
    particle = ids_sorted[starts]
    segment = np.zeros(starts.size, dtype=np.int64)
    for k in range(1, starts.size):
        if particle[k] == particle[k - 1]:
            segment[k] = segment[k - 1] + 1
    return _Runs(order, starts, ends, particle, frames_sorted[starts], segment)


def _long_enough(source: str, runs: _Runs, min_steps: int, on_short: str, where) -> _Runs:
    """The runs with at least ``min_steps`` displacements; the others raise (``on_short``
    "error") or are dropped with a warning that counts them ("skip")."""
    short = runs.n_steps < min_steps
    if not short.any():
        return runs
    k = int(np.flatnonzero(short)[0])
    message = (
        f"{source}: {short.sum()} trajector{'y has' if short.sum() == 1 else 'ies have'} fewer "
        f"than the minimum of {min_steps} displacements ({min_steps + 1} positions); the first"
        f" is particle {runs.particle[k]} ({where(int(runs.order[runs.starts[k]]))}) with "
        f"{runs.n_steps[k] + 1} position(s)"
    )
    if on_short == "error":
        raise TrajectoryFileError(message)
    warnings.warn(message + ": skipped", stacklevel=3)
    if short.all():
        raise TrajectoryFileError(f"{source}: no trajectory is long enough ({min_steps} steps)")
    return runs.subset(~short)


def _displacements(source: str, runs: _Runs, coordinates: list[np.ndarray], where) -> np.ndarray:
    """The runs' displacements, float32 ``(n, dim, longest)`` padded with NaN; a displacement
    too large for float32 (or for float64: positions of +-1e308) is an error naming its row."""
    positions = np.stack([values[runs.order] for values in coordinates])  # (dim, rows), sorted
    n_steps = runs.n_steps
    dx = np.full((n_steps.size, len(coordinates), int(n_steps.max())), np.nan, dtype=np.float32)
    with np.errstate(over="ignore", invalid="ignore"):  # overflow is reported below
        increments = np.diff(positions, axis=1)  # increments across run boundaries are unused
        for k, (s, m) in enumerate(zip(runs.starts, n_steps, strict=True)):
            dx[k, :, :m] = increments[:, s : s + m]
    valid = np.arange(dx.shape[2]) < n_steps[:, None]
    bad = ~np.isfinite(dx) & valid[:, None, :]
    if bad.any():
        k, component, t = (int(v) for v in np.argwhere(bad)[0])
        row = int(runs.order[runs.starts[k] + t + 1])
        value = increments[component, runs.starts[k] + t]
        count = int(bad.any(axis=(1, 2)).sum())
        raise TrajectoryFileError(
            f"{source}: particle {runs.particle[k]}, {where(row)}: the {COORDINATES[component]} "
            f"displacement from the previous frame ({float(value):.4g}) is too large for "
            f"float32 (largest {FLOAT32_MAX:.4g}); rescale the coordinates (other length units)"
            + ("" if count == 1 else f" ({count} trajectories have such displacements)")
        )
    _check_resolution(source, runs, positions, dx, where)
    return dx


RESOLUTION = 2.0**-10  # the coarsest float64 spacing of positions, relative to the RMS step


def _check_resolution(source: str, runs: _Runs, positions: np.ndarray, dx: np.ndarray, where):
    """Refuse a trajectory whose positions are so large next to its displacements that float64
    holds the displacements to less than 1/1000 of their RMS (coordinates of 1e12 moving by
    0.01, or of 1e300 moving by 1e285): they would be read as steps of whole float64
    spacings."""
    largest = np.abs(positions).max(axis=0)  # (rows,), sorted like runs.order
    bounds = np.column_stack([runs.starts, runs.ends]).ravel()
    largest = np.maximum.reduceat(np.append(largest, 0.0), bounds)[::2]  # per run
    squares = np.nansum(dx.astype(np.float64) ** 2, axis=(1, 2))
    rms = np.sqrt(squares / np.maximum(runs.n_steps * dx.shape[1], 1))
    with np.errstate(over="ignore"):  # the spacing above the largest float64 is infinite
        spacing = np.spacing(largest)
    coarse = np.flatnonzero((rms > 0) & (spacing > RESOLUTION * rms))
    if coarse.size:
        k = int(coarse[0])
        row = int(runs.order[runs.starts[k]])
        raise TrajectoryFileError(
            f"{source}: particle {runs.particle[k]} ({where(row)}): positions as large as "
            f"{largest[k]:.4g} hold its displacements (RMS {rms[k]:.4g}) only to steps of "
            f"{spacing[k]:.4g}; subtract an offset from the coordinates"
            + ("" if coarse.size == 1 else f" ({coarse.size} trajectories are like it)")
        )


def read_tracks(
    path,
    *,
    split_gaps: bool = False,
    min_steps: int = 1,
    on_short: str = "error",
) -> Trajectories:
    """Read a tracking file (CSV, Parquet, TrackMate CSV or XML) into displacements.

    Trajectories may differ in length (the result is then ragged). A gap in the frames of a
    particle is an error unless ``split_gaps``, which starts a new trajectory after it (label
    ``segment`` counts the pieces). Trajectories with fewer than ``min_steps`` displacements
    raise (``on_short="error"``) or are dropped with a warning that gives their number
    (``on_short="skip"``). Labels: ``particle`` (the id in the file) and ``first_frame``;
    ``meta`` says the format and, where the file states them, ``length_unit``, ``time_unit``
    and ``frame_interval``.
    """
    path = Path(path)
    table, where, meta = _read_table(path)
    return _tracks(table, str(path), where, meta, split_gaps, min_steps, on_short)


def from_dataframe(
    table: pd.DataFrame,
    *,
    name: str = "DataFrame",
    split_gaps: bool = False,
    min_steps: int = 1,
    on_short: str = "error",
) -> Trajectories:
    """Trajectories from a table in memory with the columns of a tracking file, such as the
    DataFrame of linked positions trackpy returns (``particle``, ``frame``, ``x``, ``y``);
    as :func:`read_tracks`, with errors naming ``name`` and the table's index."""
    if not isinstance(table, pd.DataFrame):
        raise TrajectoryFileError(f"{name}: expected a pandas DataFrame, got {type(table)}")
    index = table.index

    def where(row: int) -> str:
        return f"index {index[row]!r}"

    table = table.reset_index(drop=True)
    return _tracks(table, name, where, {"format": "table"}, split_gaps, min_steps, on_short)


def _tracks(table, source, where, meta, split_gaps, min_steps, on_short) -> Trajectories:
    if on_short not in ("error", "skip"):
        raise ValueError(f"on_short must be 'error' or 'skip', got {on_short!r}")
    if len(table) == 0:
        raise TrajectoryFileError(f"{source}: the file has a header but no rows")
    id_column, coords = _track_columns(source, table)
    ids = table[id_column].to_numpy()
    if pd.isna(ids).any():
        row = int(np.flatnonzero(pd.isna(ids))[0])
        raise TrajectoryFileError(f"{source}: {where(row)} has no {id_column}")
    numbers = _numbers(source, table, ids, ["frame", *coords], where)
    runs = _runs(source, ids, numbers["frame"], split_gaps, where)
    runs = _long_enough(source, runs, min_steps, on_short, where)
    dx = _displacements(source, runs, [numbers[c] for c in coords], where)
    labels = {"particle": runs.particle, "first_frame": runs.first_frame}
    if split_gaps:
        labels["segment"] = runs.segment
    meta = {"source": source, "id_column": id_column, "coordinates": coords, **meta}
    try:
        return Trajectories(dx, labels, meta, lengths=runs.n_steps)
    except TrajectoryFileError as err:
        raise TrajectoryFileError(f"{source}: {err}") from None


def write_tracks(trajectories: Trajectories, path) -> Path:
    """Write trajectories as a tracking file (CSV or Parquet by suffix), positions starting
    at 0, atomically. Labels ``particle`` and ``first_frame`` are used when present."""
    path = Path(path)
    if path.suffix.lower() not in TABLE_SUFFIXES:
        raise TrajectoryFileError(f"{path}: tracking files end in .csv or .parquet")
    particle = trajectories.labels.get("particle", np.arange(len(trajectories)))
    first = trajectories.labels.get("first_frame", np.zeros(len(trajectories), dtype=np.int64))
    frames = []
    for i in range(len(trajectories)):
        dx = trajectories.trajectory(i).astype(np.float64)
        pos = np.concatenate([np.zeros((dx.shape[0], 1)), np.cumsum(dx, axis=1)], axis=1)
        part = {"particle": particle[i], "frame": first[i] + np.arange(pos.shape[1])}
        part.update({c: pos[d] for d, c in enumerate(COORDINATES[: trajectories.dim])})
        frames.append(pd.DataFrame(part))
    table = pd.concat(frames, ignore_index=True)
    with atomic_write(path, suffix=path.suffix) as tmp:
        if path.suffix.lower() == ".csv":
            table.to_csv(tmp, index=False)
        else:
            table.to_parquet(tmp, index=False)
    return path


def load(path, *, min_steps: int = 1, split_gaps: bool = False, on_short: str = "error"):
    """Read a dataset ``.npz`` or a tracking file, by suffix."""
    path = Path(path)
    if path.suffix.lower() == ".npz":
        return load_npz(path, min_steps=min_steps)
    return read_tracks(path, split_gaps=split_gaps, min_steps=min_steps, on_short=on_short)
