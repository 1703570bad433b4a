"""Tests of minrep.io: the Trajectories container, .npz datasets, tracking files, atomic writes."""

from __future__ import annotations

import os
import re
import stat
import tempfile
import textwrap
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from minrep import MinrepError
from minrep.io import (
    COORDINATES,
    Trajectories,
    TrajectoryFileError,
    atomic_write,
    from_dataframe,
    load,
    load_npz,
    read_tracks,
    save_npz,
    valid_steps,
    write_npz,
    write_tracks,
)


def _parquet_problem() -> str | None:
    """Why Parquet files cannot be used here, or None (pyarrow may be absent or built for
    another numpy, which raises ImportError rather than ModuleNotFoundError)."""
    try:
        import pyarrow  # noqa: F401
    except ImportError as err:
        return f"pyarrow unusable: {err}"
    return None


needs_parquet = pytest.mark.skipif(_parquet_problem() is not None, reason=str(_parquet_problem()))
TABLE_SUFFIXES = [".csv", pytest.param(".parquet", marks=needs_parquet)]


def matching(*parts) -> str:
    """A regex finding ``parts`` (literal text) in this order in a message."""
    return ".*".join(re.escape(str(part)) for part in parts)


def write_csv(path, text: str):
    """Write a CSV file from an indented literal; its first line is line 1 (the header)."""
    path.write_text(textwrap.dedent(text).lstrip("\n"))
    return path


def ragged_set(seed: int = 0, lengths=(5, 2, 4, 3), dim: int = 2) -> Trajectories:
    rng = np.random.default_rng(seed)
    lengths = np.asarray(lengths)
    dx = rng.normal(size=(len(lengths), dim, lengths.max())).astype(np.float32)
    for i, length in enumerate(lengths):
        dx[i, :, length:] = np.nan
    labels = {
        "alpha": rng.uniform(0.2, 1.8, len(lengths)),
        "D": rng.uniform(1e-3, 1.0, len(lengths)),
        "process": np.array(["fbm", "sbm", "fbm", "bm"][: len(lengths)]),
    }
    return Trajectories(dx, labels, {"generator": "test", "seed": seed}, lengths)


# ---------------------------------------------------------------------------------------------
# Trajectories


@pytest.mark.parametrize("shape", [(6,), (3, 6), (2, 1, 3, 4)])
def test_displacements_must_be_3d_and_the_error_names_the_shape(shape):
    with pytest.raises(TrajectoryFileError, match=re.escape(str(shape))):
        Trajectories(np.zeros(shape))


def test_integer_displacements_are_refused():
    with pytest.raises(TrajectoryFileError, match="floating point.*int64"):
        Trajectories(np.zeros((2, 1, 3), dtype=np.int64))


def test_displacements_are_cast_to_contiguous_float32():
    rng = np.random.default_rng(1)
    dx64 = rng.normal(size=(3, 2, 7))
    t = Trajectories(np.asfortranarray(dx64))
    assert t.displacements.dtype == np.float32
    assert t.displacements.flags.c_contiguous
    np.testing.assert_array_equal(t.displacements, dx64.astype(np.float32))
    assert (len(t), t.dim, t.n_steps) == (3, 2, 7)
    assert not t.is_ragged
    np.testing.assert_array_equal(t.step_counts(), [7, 7, 7])


def test_label_of_wrong_length_is_refused():
    with pytest.raises(
        TrajectoryFileError, match=r"label 'alpha' has shape \(3,\), expected \(4,\)"
    ):
        Trajectories(np.zeros((4, 1, 5)), {"alpha": np.ones(3)})


@pytest.mark.parametrize("lengths", [[1, 2, 6], [1, -1, 2], [1, 2]])
def test_lengths_outside_the_array_are_refused(lengths):
    with pytest.raises(TrajectoryFileError, match=r"lengths must be 3 integers in \[0, 5\]"):
        Trajectories(np.zeros((3, 1, 5)), lengths=lengths)


def test_lengths_all_full_make_a_rectangular_set():
    t = Trajectories(np.zeros((3, 1, 5)), lengths=[5, 5, 5])
    assert t.lengths is None
    assert not t.is_ragged


def test_ragged_set_and_unpadded_trajectories():
    t = ragged_set()
    assert t.is_ragged
    assert t.n_steps == 5
    np.testing.assert_array_equal(t.step_counts(), [5, 2, 4, 3])
    assert t.step_counts().dtype == np.int64
    for i, length in enumerate([5, 2, 4, 3]):
        traj = t.trajectory(i)
        assert traj.shape == (2, length)
        assert np.isfinite(traj).all()
        np.testing.assert_array_equal(traj, t.displacements[i, :, :length])
    assert t.alpha is t.labels["alpha"]
    assert t.D is t.labels["D"]


@pytest.mark.parametrize(
    "index",
    [np.array([1, 3]), np.array([False, True, False, True]), slice(1, 4, 2)],
    ids=["indices", "mask", "slice"],
)
def test_subset_selects_labels_and_trims_padding(index):
    t = ragged_set()
    sub = t.subset(index)
    assert len(sub) == 2
    assert sub.n_steps == 3  # the longest of the selected (2 and 3), not 5
    np.testing.assert_array_equal(sub.lengths, [2, 3])
    np.testing.assert_array_equal(sub.trajectory(0), t.trajectory(1))
    np.testing.assert_array_equal(sub.trajectory(1), t.trajectory(3))
    np.testing.assert_array_equal(sub.alpha, t.alpha[[1, 3]])
    np.testing.assert_array_equal(sub.labels["process"], ["sbm", "bm"])
    assert sub.meta == t.meta
    sub.meta["extra"] = 1
    assert "extra" not in t.meta


def test_subset_of_equal_lengths_is_rectangular():
    t = ragged_set()
    sub = t.subset(np.array([0]))
    assert not sub.is_ragged
    assert sub.displacements.shape == (1, 2, 5)
    np.testing.assert_array_equal(sub.trajectory(0), t.trajectory(0))
    sub = t.subset(np.array([1]))
    assert sub.displacements.shape == (1, 2, 2)
    assert np.isfinite(sub.displacements).all()


def test_groups_by_length():
    t = ragged_set(lengths=(3, 5, 3, 1))
    groups = list(t.groups_by_length())
    assert [length for length, _ in groups] == [1, 3, 5]
    for (_, got), expected in zip(groups, [[3], [0, 2], [1]], strict=True):
        np.testing.assert_array_equal(got, expected)
    rect = Trajectories(np.zeros((4, 1, 6)))
    ((length, indices),) = rect.groups_by_length()
    assert length == 6
    np.testing.assert_array_equal(indices, [0, 1, 2, 3])


def test_process_property():
    dx = np.zeros((3, 1, 4))
    assert Trajectories(dx, {"process": np.array(["fbm"] * 3)}).process == "fbm"
    assert Trajectories(dx, {"process": np.array(["fbm", "bm", "fbm"])}).process is None
    assert Trajectories(dx, meta={"process": "sbm"}).process == "sbm"
    assert Trajectories(dx).process is None


# ---------------------------------------------------------------------------------------------
# .npz datasets


@pytest.mark.parametrize("ragged", [False, True])
def test_npz_round_trip_is_bit_exact(tmp_path, ragged):
    rng = np.random.default_rng(2)
    if ragged:
        t = ragged_set(seed=3)
    else:
        dx = rng.normal(size=(5, 2, 9)).astype(np.float32)
        dx[0, 0, :3] = [np.float32(1e-38), np.float32(-3.4e38), np.float32(1 / 3)]
        labels = {
            "alpha": rng.uniform(0.2, 1.8, 5),
            "D": 10 ** rng.uniform(-5, -2, 5),
            "process": np.array(["fbm", "fbm", "sbm", "bm", "fbm"]),
        }
        meta = {"generator": "minrep", "seed": 2, "grid": {"alpha": [0.2, 1.0]}, "note": "é"}
        t = Trajectories(dx, labels, meta)
    path = save_npz(t, tmp_path / "data.npz")
    assert path == tmp_path / "data.npz"
    back = load_npz(path)

    assert back.displacements.dtype == np.float32
    assert back.displacements.shape == t.displacements.shape
    # bit-exact, including the NaN padding of ragged sets
    np.testing.assert_array_equal(
        back.displacements.view(np.uint32), t.displacements.view(np.uint32)
    )
    assert set(back.labels) == set(t.labels)
    for name in ("alpha", "D"):
        assert back.labels[name].dtype == np.float64
        np.testing.assert_array_equal(back.labels[name], t.labels[name])
    assert back.labels["process"].tolist() == t.labels["process"].tolist()
    assert back.meta == t.meta
    if ragged:
        np.testing.assert_array_equal(back.lengths, [5, 2, 4, 3])
    else:
        assert back.lengths is None


def test_meta_with_numpy_values_is_stored_as_json(tmp_path):
    meta = {"seed": np.int64(7), "scale": np.float32(0.5), "grid": np.array([0.5, 1.5])}
    save_npz(Trajectories(np.zeros((1, 1, 2)), meta=meta), tmp_path / "m.npz")
    assert load_npz(tmp_path / "m.npz").meta == {"seed": 7, "scale": 0.5, "grid": [0.5, 1.5]}


def test_reserved_label_names_are_refused(tmp_path):
    t = Trajectories(np.zeros((2, 1, 3)), {"lengths": np.array([1, 2])})
    with pytest.raises(TrajectoryFileError, match="'lengths' is reserved"):
        save_npz(t, tmp_path / "r.npz")
    assert os.listdir(tmp_path) == []


def test_saved_npz_needs_no_pickle(tmp_path):
    # string particle ids come back from pandas as object arrays: they must be stored as
    # strings, not pickled, or load_npz (which never unpickles) could not read the file
    write_csv(
        tmp_path / "ids.csv",
        """
        particle,frame,x
        cell-b,0,0.0
        cell-b,1,1.5
        cell-a,0,0.0
        cell-a,1,-2.0
        """,
    )
    t = read_tracks(tmp_path / "ids.csv")
    save_npz(t, tmp_path / "ids.npz")
    with np.load(tmp_path / "ids.npz", allow_pickle=False) as data:
        for key in data.files:
            assert data[key].dtype != object
    back = load_npz(tmp_path / "ids.npz")
    assert back.labels["particle"].tolist() == ["cell-a", "cell-b"]
    np.testing.assert_array_equal(back.displacements, [[[-2.0]], [[1.5]]])


def test_labels_that_only_pickle_can_store_are_refused(tmp_path):
    tags = np.empty(2, dtype=object)
    tags[:] = [{"a": 1}, None]
    t = Trajectories(np.zeros((2, 1, 3)), {"tag": tags})
    with pytest.raises(TrajectoryFileError, match="'tag'.*pickl"):
        save_npz(t, tmp_path / "tags.npz")
    assert os.listdir(tmp_path) == []


TRIPPED = []


def _trip():
    TRIPPED.append(True)
    return "tripped"


class _Tripwire:
    """Unpickling this calls _trip: it shows whether a loader ran pickle."""

    def __reduce__(self):
        return (_trip, ())


def test_load_npz_never_unpickles(tmp_path):
    path = tmp_path / "evil.npz"
    payload = np.empty(2, dtype=object)
    payload[:] = [_Tripwire(), _Tripwire()]
    np.savez(path, displacements=np.zeros((2, 1, 3), np.float32), process=payload)
    TRIPPED.clear()
    with pytest.raises(TrajectoryFileError, match=matching(path, "unpickling")):
        load_npz(path)
    assert TRIPPED == []


def test_scalar_process_is_broadcast(tmp_path):
    path = tmp_path / "scalar.npz"
    np.savez(path, displacements=np.zeros((3, 1, 4), np.float32), process=np.array("fbm"))
    t = load_npz(path)
    assert t.labels["process"].tolist() == ["fbm", "fbm", "fbm"]
    assert t.process == "fbm"
    assert t.meta == {}


def _npz(path, **arrays):
    np.savez(path, **arrays)
    return path


@pytest.mark.parametrize(
    "arrays, reason",
    [
        ({"alpha": np.ones(3)}, "no 'displacements' array (found: alpha)"),
        ({"displacements": np.zeros((3, 4), np.float32)}, "shape (3, 4), expected (n, dim, time)"),
        ({"displacements": np.zeros((3, 1, 4), np.int32)}, "dtype int32, expected float"),
        (
            {"displacements": np.zeros((3, 1, 4), np.float32), "alpha": np.ones(2)},
            "label 'alpha' has shape (2,), expected (3,)",
        ),
        (
            {"displacements": np.zeros((3, 1, 4), np.float32), "lengths": np.array([1, 9, 2])},
            "lengths must be 3 integers in [0, 4]",
        ),
        (
            {"displacements": np.zeros((3, 1, 4), np.float32), "meta": np.array("{not json")},
            "'meta' is not valid JSON",
        ),
    ],
    ids=["no-displacements", "2d", "integer", "label-length", "lengths", "meta"],
)
def test_bad_npz_contents_name_the_file(tmp_path, arrays, reason):
    path = _npz(tmp_path / "bad.npz", **arrays)
    with pytest.raises(TrajectoryFileError, match=matching(path, reason)):
        load_npz(path)


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_non_finite_displacements_name_trajectory_and_step(tmp_path, value):
    dx = np.zeros((4, 2, 6), np.float32)
    dx[2, 1, 5] = value
    path = _npz(tmp_path / "nan.npz", displacements=dx)
    with pytest.raises(TrajectoryFileError, match=matching(path, "trajectory 2 ", "step 5")):
        load_npz(path)
    # with particle ids the error gives the id too
    path = _npz(tmp_path / "nan_ids.npz", displacements=dx, particle=np.array([4, 5, 9, 12]))
    with pytest.raises(TrajectoryFileError, match=matching(path, "trajectory 2 (particle 9)")):
        load_npz(path)


def test_nan_padding_of_ragged_sets_is_not_an_error(tmp_path):
    dx = np.full((2, 1, 4), np.nan, np.float32)
    dx[0, 0, :] = 1.0
    dx[1, 0, :2] = 2.0
    path = _npz(tmp_path / "ragged.npz", displacements=dx, lengths=np.array([4, 2]))
    np.testing.assert_array_equal(load_npz(path).step_counts(), [4, 2])
    dx[1, 0, 1] = np.nan  # inside trajectory 1: an error
    path = _npz(tmp_path / "ragged_nan.npz", displacements=dx, lengths=np.array([4, 2]))
    with pytest.raises(TrajectoryFileError, match=matching(path, "trajectory 1 ", "step 1")):
        load_npz(path)


def test_displacements_too_large_for_float32_are_refused_naming_the_trajectory(tmp_path):
    dx = np.zeros((3, 2, 5))
    dx[1, 0, 3] = 1e300  # finite in float64, infinite in float32
    with pytest.raises(TrajectoryFileError, match=matching("trajectory 1", "step 3", "float32")):
        Trajectories(dx)
    dx[1, 0, 3] = 3e38  # the largest float32 is 3.4e38: it fits
    assert np.isfinite(Trajectories(dx).displacements).all()
    dx[1, 0, 3] = 1e39
    path = _npz(tmp_path / "big.npz", displacements=dx, particle=np.array([4, 5, 9]))
    with pytest.raises(
        TrajectoryFileError,
        match=matching(path, "trajectory 1 (particle 5): displacement 1e+39", "too large"),
    ):
        load_npz(path)


def test_the_container_refuses_non_finite_displacements_but_not_padding():
    dx = np.zeros((2, 1, 4))
    dx[0, 0, 3] = np.nan
    with pytest.raises(TrajectoryFileError, match=matching("trajectory 0 ", "(nan) at step 3")):
        Trajectories(dx)
    assert Trajectories(dx, lengths=[3, 4]).step_counts().tolist() == [3, 4]  # padding
    dx[1, 0, 0] = -np.inf
    with pytest.raises(TrajectoryFileError, match="2 trajectories have such values"):
        Trajectories(dx)


def test_load_npz_min_steps(tmp_path):
    save_npz(ragged_set(lengths=(5, 2, 4)), tmp_path / "r.npz")
    assert len(load_npz(tmp_path / "r.npz", min_steps=2)) == 3
    with pytest.raises(
        TrajectoryFileError, match=matching(tmp_path / "r.npz", "minimum of 3", "trajectory 1 ")
    ):
        load_npz(tmp_path / "r.npz", min_steps=3)


@pytest.mark.parametrize("content", ["text", "empty", "npy", "truncated"])
def test_files_that_are_not_npz_name_the_file(tmp_path, content):
    path = tmp_path / "not.npz"
    if content == "text":
        path.write_text("particle,frame,x\n1,0,0.0\n")
    elif content == "empty":
        path.write_bytes(b"")
    elif content == "npy":  # a plain .npy array under an .npz name
        with open(path, "wb") as handle:
            np.save(handle, np.zeros((2, 1, 3), np.float32))
    else:
        save_npz(ragged_set(), tmp_path / "full.npz")
        data = (tmp_path / "full.npz").read_bytes()
        path.write_bytes(data[: len(data) // 2])
    with pytest.raises(TrajectoryFileError, match=matching(path, "not an .npz dataset")):
        load_npz(path)


def test_missing_npz_names_the_file(tmp_path):
    path = tmp_path / "absent.npz"
    with pytest.raises(TrajectoryFileError, match=matching(path, "no such file")):
        load_npz(path)


# ---------------------------------------------------------------------------------------------
# Atomic writes


def test_crash_while_saving_npz_keeps_the_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "data.npz"
    old = ragged_set(seed=4)
    save_npz(old, path)
    before = path.read_bytes()
    calls = []

    def crashing_savez(file, *args, **kwds):
        calls.append(file)
        file.write(b"PK\x03\x04 half a zip")
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", crashing_savez)
    with pytest.raises(OSError, match="disk full"):
        save_npz(ragged_set(seed=5), path)
    assert calls, "the crash was not simulated"
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["data.npz"]  # no temporary file left (they start with '.')
    monkeypatch.undo()
    np.testing.assert_array_equal(load_npz(path).displacements, old.displacements)


def test_crash_while_saving_npz_leaves_no_file(tmp_path, monkeypatch):
    def crashing_savez(file, *args, **kwds):
        file.write(b"PK")
        raise KeyboardInterrupt

    monkeypatch.setattr(np, "savez", crashing_savez)
    with pytest.raises(KeyboardInterrupt):
        save_npz(ragged_set(), tmp_path / "new.npz")
    assert os.listdir(tmp_path) == []


def test_crash_while_writing_tracks_keeps_the_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "tracks.csv"
    write_tracks(ragged_set(seed=6), path)
    before = path.read_bytes()

    def crashing_to_csv(self, target, *args, **kwargs):
        with open(target, "w") as handle:
            handle.write("particle,frame,x\n0,0,")
        raise OSError("disk full")

    monkeypatch.setattr(pd.DataFrame, "to_csv", crashing_to_csv)
    with pytest.raises(OSError, match="disk full"):
        write_tracks(ragged_set(seed=7), path)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["tracks.csv"]


def test_atomic_write_creates_folders_and_replaces(tmp_path):
    path = tmp_path / "a" / "b" / "file.txt"
    with atomic_write(path) as tmp:
        assert tmp.parent == path.parent
        assert not path.exists()
        tmp.write_text("one")
    assert path.read_text() == "one"
    with atomic_write(path) as tmp:
        tmp.write_text("two")
        assert path.read_text() == "one"  # not replaced before the write is complete
    assert path.read_text() == "two"
    assert os.listdir(path.parent) == ["file.txt"]


@pytest.mark.skipif(os.name != "posix", reason="POSIX permission bits")
def test_written_files_get_the_permissions_of_an_ordinary_write(tmp_path):
    old_umask = os.umask(0o022)
    try:
        (tmp_path / "plain").write_bytes(b"")
        save_npz(ragged_set(), tmp_path / "data.npz")
        write_tracks(ragged_set(), tmp_path / "tracks.csv")
    finally:
        os.umask(old_umask)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in tmp_path.iterdir()}
    assert modes == {"plain": 0o644, "data.npz": 0o644, "tracks.csv": 0o644}


@pytest.mark.skipif(os.name != "posix", reason="POSIX permission bits")
@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_atomic_write_gives_the_ordinary_mode_whatever_the_writer_did(tmp_path, umask):
    old_umask = os.umask(umask)
    try:
        (tmp_path / "plain").write_bytes(b"")
        with atomic_write(tmp_path / "private") as tmp:
            os.chmod(tmp, 0o600)
            tmp.write_bytes(b"x")
        with atomic_write(tmp_path / "recreated") as tmp:  # a writer that replaces the file
            tmp.unlink()
            tmp.write_bytes(b"y")
            os.chmod(tmp, 0o700)
    finally:
        os.umask(old_umask)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in tmp_path.iterdir()}
    assert modes == dict.fromkeys(["plain", "private", "recreated"], 0o666 & ~umask)


# ---------------------------------------------------------------------------------------------
# Tracking files

HAND_TABLE = pd.DataFrame(
    # two particles, ids out of order, different lengths, rows shuffled
    {
        "particle": [7, 3, 7, 3, 7, 3, 3],
        "frame": [12, 0, 10, 2, 11, 1, 3],
        "x": [1.0, 0.0, 0.0, -1.5, 0.25, 0.5, -1.0],
        "y": [0.0, 0.0, 0.5, 2.0, 0.25, 1.0, 2.25],
    }
)


def write_table(table: pd.DataFrame, path):
    if path.suffix == ".csv":
        table.to_csv(path, index=False)
    else:
        table.to_parquet(path, index=False)
    return path


@pytest.mark.parametrize("suffix", TABLE_SUFFIXES)
def test_positions_become_displacements(tmp_path, suffix):
    path = write_table(HAND_TABLE, tmp_path / f"tracks{suffix}")
    t = read_tracks(path)
    nan = np.nan
    expected = [
        [[0.5, -2.0, 0.5], [1.0, 1.0, 0.25]],  # particle 3, frames 0-3
        [[0.25, 0.75, nan], [-0.25, -0.25, nan]],  # particle 7, frames 10-12
    ]
    assert t.displacements.dtype == np.float32
    np.testing.assert_array_equal(t.displacements, expected)
    np.testing.assert_array_equal(t.lengths, [3, 2])
    assert t.labels["particle"].tolist() == [3, 7]
    assert t.labels["first_frame"].tolist() == [0, 10]
    assert "segment" not in t.labels
    assert t.meta == {
        "source": str(path),
        "id_column": "particle",
        "coordinates": ["x", "y"],
        "format": "table",
    }


@pytest.mark.parametrize("suffix", TABLE_SUFFIXES)
@pytest.mark.parametrize("dim", [1, 2, 3])
def test_tracking_files_in_1d_2d_3d(tmp_path, suffix, dim):
    rng = np.random.default_rng(10 + dim)
    lengths = [6, 3, 9]
    parts, expected = [], []
    for particle, n_pos in zip([11, 2, 5], lengths, strict=True):
        # quarter-integer positions: exact in binary and in short decimals
        pos = np.cumsum(rng.integers(-8, 9, size=(dim, n_pos)) / 4, axis=1)
        table = pd.DataFrame({"traj_idx": particle, "frame": 100 + np.arange(n_pos)})
        table = table.assign(**{c: pos[d] for d, c in enumerate("xyz"[:dim])})
        parts.append(table)
        expected.append((particle, np.diff(pos, axis=1)))
    table = pd.concat(parts, ignore_index=True)
    table = table.iloc[rng.permutation(len(table))]
    t = read_tracks(write_table(table, tmp_path / f"tracks{suffix}"))
    assert t.dim == dim
    assert t.meta["id_column"] == "traj_idx"
    assert t.meta["coordinates"] == list("xyz"[:dim])
    expected.sort(key=lambda item: item[0])  # trajectories come sorted by id
    assert t.labels["particle"].tolist() == [2, 5, 11]
    assert t.labels["first_frame"].tolist() == [100, 100, 100]
    np.testing.assert_array_equal(t.step_counts(), [2, 8, 5])
    for i, (_, dx) in enumerate(expected):
        np.testing.assert_array_equal(t.trajectory(i), dx.astype(np.float32))


@pytest.mark.parametrize("suffix", TABLE_SUFFIXES)
@pytest.mark.parametrize("dim", [1, 3])
def test_write_tracks_read_tracks_round_trip(tmp_path, suffix, dim):
    rng = np.random.default_rng(20 + dim)
    t = ragged_set(seed=21, lengths=(30, 12, 25, 7), dim=dim)
    t.labels = {"particle": np.array([40, 3, 17, 8]), "first_frame": np.array([0, 5, 2, 99])}
    path = write_tracks(t, tmp_path / f"round{suffix}")
    table = pd.read_csv(path) if suffix == ".csv" else pd.read_parquet(path)
    assert list(table.columns) == ["particle", "frame", *"xyz"[:dim]]
    assert len(table) == 30 + 12 + 25 + 7 + 4  # one row per position
    write_table(table.iloc[rng.permutation(len(table))], path)  # order must not matter
    back = read_tracks(path)
    order = np.argsort(t.labels["particle"])  # read_tracks sorts by particle
    assert back.labels["particle"].tolist() == t.labels["particle"][order].tolist()
    assert back.labels["first_frame"].tolist() == t.labels["first_frame"][order].tolist()
    np.testing.assert_array_equal(back.step_counts(), t.step_counts()[order])
    # Positions are written as float64 cumulative sums of the float32 displacements and
    # differenced again on reading, then rounded to float32: each displacement can pick up a
    # rounding error of the order of the float32 resolution of the positions (not of the
    # displacement itself), hence a tolerance relative to the position scale.
    scale = np.abs(table[list("xyz"[:dim])].to_numpy()).max()
    for i, j in enumerate(order):
        np.testing.assert_allclose(back.trajectory(i), t.trajectory(j), rtol=0, atol=1e-5 * scale)


def test_written_tracks_start_at_zero_and_default_labels(tmp_path):
    dx = np.array([[[1.0, 2.0, -0.5]], [[0.25, 0.25, 0.25]]], np.float32)
    path = write_tracks(Trajectories(dx), tmp_path / "t.csv")
    table = pd.read_csv(path)
    assert table["particle"].tolist() == [0, 0, 0, 0, 1, 1, 1, 1]
    assert table["frame"].tolist() == [0, 1, 2, 3, 0, 1, 2, 3]
    assert table["x"].tolist() == [0.0, 1.0, 3.0, 2.5, 0.0, 0.25, 0.5, 0.75]


def test_split_segments_survive_a_round_trip(tmp_path):
    write_csv(
        tmp_path / "gaps.csv",
        """
        particle,frame,x
        1,0,0.0
        1,1,1.0
        1,3,2.0
        1,4,4.0
        1,5,4.5
        2,7,0.0
        2,8,-1.0
        """,
    )
    first = read_tracks(tmp_path / "gaps.csv", split_gaps=True)
    write_tracks(first, tmp_path / "again.csv")
    second = read_tracks(tmp_path / "again.csv", split_gaps=True)
    np.testing.assert_array_equal(second.displacements, first.displacements)
    for name in ("particle", "first_frame", "segment"):
        assert second.labels[name].tolist() == first.labels[name].tolist()


# ---------------------------------------------------------------------------------------------
# Bad tracking files


@pytest.mark.parametrize(
    "header, missing",
    [
        ("particle,x,y", "missing column(s) frame;"),
        ("frame,x,y", "missing column(s) particle (or traj_idx);"),
        ("particle,frame,x,z", "missing column(s) y (found x, z);"),
        ("particle,frame,y", "missing column(s) x;"),
        ("particle,frame,y,z", "missing column(s) x;"),
    ],
)
def test_missing_columns(tmp_path, header, missing):
    row = ",".join("0" for _ in header.split(","))
    path = write_csv(tmp_path / "cols.csv", f"{header}\n{row}\n{row}\n")
    with pytest.raises(
        TrajectoryFileError, match=matching(path, missing, "found " + header.replace(",", ", "))
    ):
        read_tracks(path)


def test_empty_file(tmp_path):
    path = tmp_path / "empty.csv"
    path.write_bytes(b"")
    with pytest.raises(TrajectoryFileError, match=matching(path, "empty")):
        read_tracks(path)


def test_header_only(tmp_path):
    path = write_csv(tmp_path / "header.csv", "particle,frame,x\n")
    with pytest.raises(TrajectoryFileError, match=matching(path, "header but no rows")):
        read_tracks(path)


def test_unparsable_csv(tmp_path):
    path = write_csv(tmp_path / "ragged.csv", "particle,frame,x\n1,0,0.0\n1,1,1.0,5,6\n")
    with pytest.raises(TrajectoryFileError, match=matching(path, "cannot be read as a table")):
        read_tracks(path)


@pytest.mark.parametrize(
    "value, shown",
    [("", "nan"), ("nan", "nan"), ("inf", "inf"), ("-inf", "-inf"), ("abc", "'abc'")],
)
def test_bad_coordinate_names_particle_and_line(tmp_path, value, shown):
    path = write_csv(
        tmp_path / "bad.csv",
        f"""
        particle,frame,x,y
        1,0,0.0,0.0
        1,1,1.0,2.0
        2,0,0.0,{value}
        2,1,1.0,1.0
        """,
    )
    with pytest.raises(
        TrajectoryFileError,
        match=matching(path, f"particle 2, line 4: y = {shown}", "not a finite number"),
    ):
        read_tracks(path)


def test_missing_id(tmp_path):
    path = write_csv(tmp_path / "noid.csv", "particle,frame,x\n1,0,0.0\n1,1,1.0\n,2,2.0\n")
    with pytest.raises(TrajectoryFileError, match=matching(path, "line 4 has no particle")):
        read_tracks(path)


def test_non_integer_frame(tmp_path):
    path = write_csv(
        tmp_path / "frames.csv", "particle,frame,x\n1,0,0.0\n1,1,1.0\n2,0,0.0\n2,1.5,1.0\n"
    )
    with pytest.raises(
        TrajectoryFileError, match=matching(path, "particle 2, line 5: frame 1.5 is not an integer")
    ):
        read_tracks(path)


def test_repeated_frame_names_both_lines(tmp_path):
    path = write_csv(
        tmp_path / "twice.csv",
        """
        particle,frame,x
        1,0,0.0
        2,0,0.0
        1,1,1.0
        2,1,1.0
        1,1,2.0
        """,
    )
    with pytest.raises(
        TrajectoryFileError,
        match=matching(path, "particle 1 has frame 1 twice (line 4 and line 6)"),
    ):
        read_tracks(path)


GAPS = """
    particle,frame,x
    2,7,0.0
    1,0,0.0
    1,1,1.0
    2,8,-1.0
    1,3,2.0
    1,4,4.0
    1,5,4.5
    """


def test_gap_in_frames_is_an_error_that_mentions_split_gaps(tmp_path):
    path = write_csv(tmp_path / "gaps.csv", GAPS)
    with pytest.raises(
        TrajectoryFileError,
        match=matching(path, "particle 1 jumps from frame 1 to 3 (line 6)", "split_gaps"),
    ):
        read_tracks(path)


def test_split_gaps_cuts_trajectories_into_segments(tmp_path):
    t = read_tracks(write_csv(tmp_path / "gaps.csv", GAPS), split_gaps=True)
    assert t.labels["particle"].tolist() == [1, 1, 2]
    assert t.labels["segment"].tolist() == [0, 1, 0]
    assert t.labels["first_frame"].tolist() == [0, 3, 7]
    np.testing.assert_array_equal(t.lengths, [1, 2, 1])
    # no displacement across the gap (frame 1 -> 3) nor across particles
    np.testing.assert_array_equal(t.trajectory(0), [[1.0]])
    np.testing.assert_array_equal(t.trajectory(1), [[2.0, 0.5]])
    np.testing.assert_array_equal(t.trajectory(2), [[-1.0]])


SHORT = """
    particle,frame,x
    1,0,0.0
    1,1,1.0
    1,2,1.5
    1,3,2.0
    2,0,0.0
    2,1,1.0
    3,5,0.0
    """


def test_trajectories_too_short(tmp_path):
    path = write_csv(tmp_path / "short.csv", SHORT)
    with pytest.raises(
        TrajectoryFileError,
        match=matching(
            path,
            "1 trajectory has fewer than the minimum of 1 displacements",
            "particle 3 (line 8)",
        ),
    ):
        read_tracks(path)
    with pytest.raises(
        TrajectoryFileError,
        match=matching(
            path,
            "2 trajectories have fewer than the minimum of 3 displacements",
            "particle 2 (line 6)",
        ),
    ):
        read_tracks(path, min_steps=3)


def test_short_trajectories_can_be_skipped_with_a_warning(tmp_path):
    path = write_csv(tmp_path / "short.csv", SHORT)
    with pytest.warns(
        UserWarning, match=matching(path, "2 trajectories", "minimum of 2", "skipped")
    ):
        t = read_tracks(path, min_steps=2, on_short="skip")
    assert t.labels["particle"].tolist() == [1]
    np.testing.assert_array_equal(t.displacements, [[[1.0, 0.5, 0.5]]])
    with (
        pytest.warns(UserWarning, match="3 trajectories"),
        pytest.raises(TrajectoryFileError, match=matching(path, "no trajectory is long enough")),
    ):
        read_tracks(path, min_steps=10, on_short="skip")
    with pytest.raises(ValueError, match="on_short"):
        read_tracks(path, on_short="drop")


@pytest.mark.parametrize(
    ("x", "shown"),
    [
        (["0", "1e300", "1e300"], "(1e+300)"),  # overflows float32
        (["1.7e308", "-1.7e308", "0"], "(-inf)"),  # overflows float64 too
    ],
)
def test_coordinates_whose_displacements_overflow_float32_name_particle_and_line(
    tmp_path, x, shown
):
    rows = "".join(f"8,{frame},{value},0.5\n" for frame, value in enumerate(x))
    path = write_csv(tmp_path / "huge.csv", "particle,frame,x,y\n2,0,0,0\n2,1,1,1\n" + rows)
    with pytest.raises(
        TrajectoryFileError,
        match=matching(
            path,
            f"particle 8, line 5: the x displacement from the previous frame {shown}",
            "too large for float32",
            "rescale",
        ),
    ):
        read_tracks(path)
    # Large positions whose displacements fit are fine: only the displacements must fit.
    path.write_text("particle,frame,x\n8,0,1e30\n8,1,2e30\n8,2,3e30\n")
    np.testing.assert_allclose(read_tracks(path).displacements, [[[1e30, 1e30]]], rtol=1e-6)


def test_positions_too_large_to_resolve_their_displacements_are_refused(tmp_path):
    # 1e12 + 0.01 steps: float64 spaces numbers near 1e12 by 1.2e-4, 1% of a step.
    steps = np.cumsum(np.full(6, 0.01))
    rows = "".join(f"5,{t},{1e12 + x!r}\n" for t, x in enumerate(steps))
    path = write_csv(tmp_path / "offset.csv", "particle,frame,x\n3,0,0\n3,1,1\n" + rows)
    with pytest.raises(
        TrajectoryFileError,
        match=matching(path, "particle 5 (line 4): positions as large as 1e+12", "offset"),
    ):
        read_tracks(path)
    rows = "".join(f"5,{t},{1e6 + x!r}\n" for t, x in enumerate(steps))  # 1e-10 spacing
    path.write_text("particle,frame,x\n" + rows)
    np.testing.assert_allclose(read_tracks(path).displacements, 0.01, rtol=1e-6)


def test_frames_beyond_exact_integers_are_refused(tmp_path):
    path = write_csv(tmp_path / "frames.csv", "particle,frame,x\n1,0,0\n1,1e300,1\n")
    with pytest.raises(
        TrajectoryFileError, match=matching(path, "particle 1, line 3: frame 1e+300")
    ):
        read_tracks(path)


@needs_parquet
def test_parquet_errors_give_the_row(tmp_path):
    table = HAND_TABLE.copy()
    table.loc[4, "x"] = np.nan
    path = write_table(table, tmp_path / "bad.parquet")
    with pytest.raises(TrajectoryFileError, match=matching(path, "particle 7, row 4: x = nan")):
        read_tracks(path)


def test_parquet_without_pyarrow_is_a_clear_error(tmp_path, monkeypatch):
    path = tmp_path / "tracks.parquet"
    path.write_bytes(b"PAR1")

    def no_engine(*args, **kwargs):
        raise ImportError("Unable to find a usable engine")

    monkeypatch.setattr(pd, "read_parquet", no_engine)
    with pytest.raises(TrajectoryFileError, match=matching(path, "needs pyarrow")):
        read_tracks(path)


def test_unknown_suffix_and_missing_file(tmp_path):
    path = write_csv(tmp_path / "tracks.txt", "particle,frame,x\n1,0,0.0\n1,1,1.0\n")
    with pytest.raises(TrajectoryFileError, match=matching(path, "unknown file type '.txt'")):
        read_tracks(path)
    with pytest.raises(TrajectoryFileError, match=matching(path, "unknown file type '.txt'")):
        load(path)
    with pytest.raises(TrajectoryFileError, match=matching(tmp_path / "t.txt", ".csv or .parquet")):
        write_tracks(ragged_set(), tmp_path / "t.txt")
    absent = tmp_path / "absent.csv"
    with pytest.raises(TrajectoryFileError, match=matching(absent, "no such file")):
        read_tracks(absent)


# ---------------------------------------------------------------------------------------------
# load


def test_load_dispatches_on_suffix(tmp_path):
    t = ragged_set(seed=30)
    save_npz(t, tmp_path / "data.NPZ")
    loaded = load(tmp_path / "data.NPZ")
    np.testing.assert_array_equal(loaded.displacements, t.displacements)
    assert loaded.meta == t.meta

    write_table(HAND_TABLE, tmp_path / "tracks.csv")
    tracks = load(tmp_path / "tracks.csv")
    assert tracks.meta["source"] == str(tmp_path / "tracks.csv")
    np.testing.assert_array_equal(tracks.lengths, [3, 2])

    # the options reach the reader
    with pytest.raises(TrajectoryFileError, match="minimum of 3"):
        load(tmp_path / "tracks.csv", min_steps=3)
    with pytest.warns(UserWarning, match="1 trajectory"):
        assert load(tmp_path / "tracks.csv", min_steps=3, on_short="skip").labels[
            "particle"
        ].tolist() == [3]
    with pytest.raises(TrajectoryFileError, match="minimum of 5"):
        load(tmp_path / "data.NPZ", min_steps=5)
    write_csv(tmp_path / "gaps.csv", GAPS)
    assert len(load(tmp_path / "gaps.csv", split_gaps=True)) == 3


# ---------------------------------------------------------------------------------------------
# Properties: any table of finite numbers in the documented layout reads, or is refused with a
# MinrepError; never another exception, never a numpy warning, never a non-finite displacement.

FINITE = st.floats(allow_nan=False, allow_infinity=False)  # every magnitude, 1e300 and 5e-324
SMALL = st.floats(-10, 10, allow_nan=False)
IDS = st.one_of(
    st.integers(0, 3),  # few particles: long trajectories, repeated frames
    st.integers(-(2**62), 2**62),
    st.floats(-1e300, 1e300, allow_nan=False),
)
FRAMES = st.one_of(st.integers(0, 6), st.integers(-(2**60), 2**60), st.sampled_from([2**53, 1e300]))


@st.composite
def tracking_tables(draw) -> pd.DataFrame:
    """Columns particle, frame, x[, y, z] in any order of rows: ids and frames repeated, with
    gaps or unsorted, coordinates of any finite magnitude (or all small)."""
    n = draw(st.integers(1, 30))
    dim = draw(st.integers(1, 3))
    ids = draw(st.lists(IDS, min_size=n, max_size=n))
    frames = draw(st.lists(FRAMES, min_size=n, max_size=n))
    numbers = draw(st.sampled_from([FINITE, SMALL]))
    table = {"particle": ids, "frame": frames}
    for c in COORDINATES[:dim]:
        table[c] = draw(st.lists(numbers, min_size=n, max_size=n))
    return pd.DataFrame(table)


@st.composite
def consecutive_tables(draw) -> pd.DataFrame:
    """Many particles with consecutive frames, rows shuffled: tables that mostly read."""
    lengths = draw(st.lists(st.integers(1, 6), min_size=1, max_size=25))
    first = draw(st.lists(st.integers(-5, 5), min_size=len(lengths), max_size=len(lengths)))
    ids = np.repeat(np.arange(len(lengths)) * 7 - 3, lengths)
    frames = np.concatenate([f + np.arange(m) for f, m in zip(first, lengths, strict=True)])
    n = len(ids)
    x = draw(st.lists(draw(st.sampled_from([FINITE, SMALL])), min_size=n, max_size=n))
    table = pd.DataFrame({"particle": ids, "frame": frames, "x": x})
    return table.sample(frac=1.0, random_state=draw(st.integers(0, 2**32 - 1)))


def _read_or_refuse(read):
    """``read()``'s result or None when it raised a MinrepError; every warning it gave is
    minrep's own (a skipped short trajectory), none is numpy's."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            result = read()
        except MinrepError as err:
            assert str(err)
            result = None
    event("refused" if result is None else "read")
    for warning in caught:
        assert warning.category is UserWarning and "skipped" in str(warning.message), warning
    return result


PROPERTY_SETTINGS = settings(
    max_examples=60,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)


@PROPERTY_SETTINGS
@example(  # pandas' default CSV parser read this id back an ulp off
    table=pd.DataFrame({"particle": [1801439850948199.2, 0.0], "frame": [0, 0], "x": [0.0, 0.0]}),
    split_gaps=False,
    min_steps=0,
    on_short="error",
)
@example(  # the float64 spacing above the largest position overflowed (numpy warned)
    table=pd.DataFrame(
        {"particle": [0, 0, 1], "frame": [0, 1, 0], "x": [0.0, 1.0, 1.7976931348623157e308]}
    ),
    split_gaps=False,
    min_steps=0,
    on_short="error",
)
@given(
    table=st.one_of(tracking_tables(), consecutive_tables()),
    split_gaps=st.booleans(),
    min_steps=st.integers(0, 3),
    on_short=st.sampled_from(["error", "skip"]),
)
def test_any_tracking_table_reads_or_is_refused_with_a_minrep_error(
    table, split_gaps, min_steps, on_short
):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "tracks.csv"
        table.to_csv(path, index=False)
        read = _read_or_refuse(
            lambda: read_tracks(path, split_gaps=split_gaps, min_steps=min_steps, on_short=on_short)
        )
    if read is None:
        return
    counts = read.step_counts()
    assert (counts >= min_steps).all()
    assert np.isfinite(read.displacements[valid_steps(read)[:, None, :].repeat(read.dim, 1)]).all()
    assert set(read.labels["particle"].tolist()) <= set(table["particle"].tolist())
    if on_short == "error":  # every row is a position of exactly one trajectory
        assert int(counts.sum()) + len(read) == len(table)
    # Each displacement is the difference of the positions in frame order, in float32.
    i = 0
    rows = table[table["particle"] == read.labels["particle"][i]].sort_values("frame")
    start = int(np.flatnonzero(rows["frame"].to_numpy() == read.labels["first_frame"][i])[0])
    x = rows["x"].to_numpy()[start : start + counts[i] + 1]
    np.testing.assert_array_equal(read.trajectory(i)[0], np.diff(x).astype(np.float32))


@st.composite
def npz_arrays(draw) -> dict:
    """A dataset .npz's arrays: displacements of any finite magnitude, sometimes ``lengths``
    (possibly out of range) and labels (possibly of the wrong length)."""
    n, dim, time = draw(st.integers(0, 5)), draw(st.integers(1, 3)), draw(st.integers(0, 6))
    numbers = draw(st.sampled_from([FINITE, SMALL]))
    values = draw(st.lists(numbers, min_size=n * dim * time, max_size=n * dim * time))
    arrays = {"displacements": np.array(values, dtype=np.float64).reshape(n, dim, time)}
    if draw(st.booleans()):
        arrays["lengths"] = np.array(
            draw(st.lists(st.integers(-1, time + 1), min_size=n, max_size=n))
        )
    if draw(st.booleans()):
        size = draw(st.sampled_from([n, n + 1]))
        arrays["alpha"] = np.array(draw(st.lists(FINITE, min_size=size, max_size=size)))
    if draw(st.booleans()):
        arrays["particle"] = np.array(draw(st.lists(IDS, min_size=n, max_size=n)))
    return arrays


@PROPERTY_SETTINGS
@given(arrays=npz_arrays(), min_steps=st.integers(0, 3))
def test_any_npz_of_finite_numbers_reads_or_is_refused_with_a_minrep_error(arrays, min_steps):
    with tempfile.TemporaryDirectory() as folder:
        path = write_npz(Path(folder) / "data.npz", arrays)
        read = _read_or_refuse(lambda: load_npz(path, min_steps=min_steps))
        if read is None:
            return
        dx = arrays["displacements"]
        assert read.displacements.shape == dx.shape and len(read) == dx.shape[0]
        valid = valid_steps(read)[:, None, :].repeat(read.dim, 1)
        assert np.isfinite(read.displacements[valid]).all()
        np.testing.assert_array_equal(read.displacements[valid], dx[valid].astype(np.float32))
        # What reads also saves and reads back bit for bit.
        again = load_npz(save_npz(read, Path(folder) / "again.npz"), min_steps)
        np.testing.assert_array_equal(again.displacements, read.displacements)
        np.testing.assert_array_equal(again.step_counts(), read.step_counts())


# ---------------------------------------------------------------------------------------------
# TrackMate, AnDi 2024 and DataFrames

TRACKMATE_HEADER = (
    "LABEL,ID,TRACK_ID,QUALITY,POSITION_X,POSITION_Y,POSITION_Z,POSITION_T,FRAME,RADIUS\n"
    "Label,Spot ID,Track ID,Quality,X,Y,Z,T,Frame,Radius\n"
    "Label,Spot ID,Track ID,Quality,X,Y,Z,T,Frame,R\n"
    ",,,(quality),(micron),(micron),(micron),(sec),,(micron)\n"
)
TRACKMATE_SPOTS = (
    "ID1,1,0,1.0,11.0,21.5,0.0,0.1,1,0.5\n"
    "ID0,0,0,1.0,10.0,20.0,0.0,0.0,0,0.5\n"
    "ID2,2,0,1.0,12.5,22.0,0.0,0.2,2,0.5\n"
    "ID9,9,,1.0,50.0,50.0,0.0,0.0,0,0.5\n"  # in no track
    "ID3,3,4,1.0,30.0,40.0,0.0,0.0,0,0.5\n"
    "ID4,4,4,1.0,29.0,40.5,0.0,0.1,1,0.5\n"
)


def test_trackmate_spots_csv_with_its_units(tmp_path):
    path = write_csv(tmp_path / "spots.csv", TRACKMATE_HEADER + TRACKMATE_SPOTS)
    with pytest.warns(UserWarning, match=matching(path, "1 spots in no track skipped")):
        t = read_tracks(path)
    assert t.dim == 2  # POSITION_Z is 0 throughout: a 2D movie
    np.testing.assert_array_equal(t.trajectory(0), [[1.0, 1.5], [1.5, 0.5]])  # track 0
    np.testing.assert_array_equal(t.trajectory(1), [[-1.0], [0.5]])  # track 4
    assert t.labels["particle"].tolist() == ["0", "4"]
    assert t.meta["format"] == "trackmate-csv"
    assert (t.meta["length_unit"], t.meta["time_unit"]) == ("um", "s")
    assert t.meta["frame_interval"] == pytest.approx(0.1)
    # Errors give the line of the file: the data start on line 5.
    bad = TRACKMATE_SPOTS.replace("ID2,2,0,1.0,12.5", "ID2,2,0,1.0,oops")
    path = write_csv(tmp_path / "bad.csv", TRACKMATE_HEADER + bad)
    with (
        pytest.warns(UserWarning),
        pytest.raises(TrajectoryFileError, match=matching(path, "particle 0, line 7: x = 'oops'")),
    ):
        read_tracks(path)


def test_trackmate_spots_csv_of_older_versions_and_3d(tmp_path):
    # One header row and no units (TrackMate before version 7); a 3D movie keeps z.
    spots = TRACKMATE_SPOTS.replace(",0.0,0.", ",1.0,0.").replace("ID9,9,,", "ID9,9,None,")
    path = write_csv(tmp_path / "spots.csv", TRACKMATE_HEADER.splitlines()[0] + "\n" + spots)
    with pytest.warns(UserWarning, match="1 spots in no track"):
        t = read_tracks(path)
    assert t.dim == 3 and "length_unit" not in t.meta
    only_untracked = TRACKMATE_HEADER + "ID9,9,,1.0,50.0,50.0,0.0,0.0,0,0.5\n"
    path = write_csv(tmp_path / "none.csv", only_untracked)
    with pytest.raises(TrajectoryFileError, match=matching(path, "no spot belongs to a track")):
        read_tracks(path)


TRACKMATE_XML = """<?xml version="1.0" encoding="UTF-8"?>
<Tracks nTracks="2" spaceUnits="micron" frameInterval="0.05" timeUnits="sec">
  <particle nSpots="3">
    <detection t="1" x="11.0" y="21.0" z="0.0" />
    <detection t="0" x="10.0" y="20.0" z="0.0" />
    <detection t="2" x="12.5" y="22.0" z="0.0" />
  </particle>
  <particle nSpots="2">
    <detection t="5" x="30.0" y="40.0" z="0.0" />
    <detection t="6" x="30.25" y="39.0" z="0.0" />
  </particle>
</Tracks>
"""


def test_trackmate_xml_with_its_units(tmp_path):
    path = write_csv(tmp_path / "tracks.xml", TRACKMATE_XML)
    t = read_tracks(path)
    assert t.dim == 2
    np.testing.assert_array_equal(t.trajectory(0), [[1.0, 1.5], [1.0, 1.0]])
    np.testing.assert_array_equal(t.trajectory(1), [[0.25], [-1.0]])
    assert t.labels["first_frame"].tolist() == [0, 5]
    assert t.meta["format"] == "trackmate-xml" and t.meta["frame_interval"] == 0.05
    assert (t.meta["length_unit"], t.meta["time_unit"]) == ("um", "s")
    assert load(path).meta["format"] == "trackmate-xml"
    bad = TRACKMATE_XML.replace('x="12.5"', 'x="nan"')
    path = write_csv(tmp_path / "bad.xml", bad)
    with pytest.raises(TrajectoryFileError, match=matching(path, "particle 1, detection 3: x")):
        read_tracks(path)
    for text, reason in (
        ("<Tracks><particle>", "not readable as XML"),
        ("<Spots></Spots>", "the root element is <Spots>, expected <Tracks>"),
        ("<Tracks></Tracks>", "no <particle> with a <detection>"),
    ):
        path = write_csv(tmp_path / "other.xml", text)
        with pytest.raises(TrajectoryFileError, match=matching(path, reason)):
            read_tracks(path)


def test_andi_2024_csv(tmp_path):
    text = "traj_idx,frame,x,y\n0,0,1.0,2.0\n0,1,1.5,2.5\n0,2,1.0,3.0\n1,0,5.0,5.0\n1,1,5.5,4.0\n"
    t = read_tracks(write_csv(tmp_path / "trajs_fov_0.csv", text))
    assert t.meta["id_column"] == "traj_idx" and t.dim == 2
    np.testing.assert_array_equal(t.trajectory(1), [[0.5], [-1.0]])


def test_trackpy_dataframe(tmp_path):
    # trackpy's link() returns positions with columns y, x, frame, particle (and more), the
    # index often the frame; errors name the index.
    linked = pd.DataFrame(
        {
            "y": [2.0, 2.5, 3.0, 7.0, 7.5],
            "x": [1.0, 1.5, 1.0, 5.0, 5.5],
            "mass": [10.0] * 5,
            "frame": [0, 1, 2, 0, 1],
            "particle": [0, 0, 0, 3, 3],
        },
        index=[0, 1, 2, 0, 1],
    )
    t = from_dataframe(linked)
    np.testing.assert_array_equal(t.trajectory(0), [[0.5, -0.5], [0.5, 0.5]])
    assert t.labels["particle"].tolist() == [0, 3] and t.meta["source"] == "DataFrame"
    broken = linked.set_index(pd.Index(["a", "b", "c", "d", "e"]))
    broken.loc["c", "x"] = np.nan
    with pytest.raises(TrajectoryFileError, match="linked: particle 0, index 'c': x = nan"):
        from_dataframe(broken, name="linked")
    with pytest.raises(TrajectoryFileError, match="expected a pandas DataFrame"):
        from_dataframe({"x": [1.0]})
