"""Seconds per epoch of `minrep.train.train` on a GPU, one run alone (Lightning loop,
validation, history and checkpoint each epoch): ``python benchmarks/gpu_epoch.py [-o out.json]``."""

import argparse
import tempfile

from _report import emit

from minrep import datasets, train
from minrep.schedule import Plan, Stage

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("-o", "--output")
args = parser.parse_args()
data = datasets.make_dataset("fbm", "paper", n_per_cell=120, seed=0)  # 25,200 trajectories
train.keep_freed_memory()  # as `minrep train` does
with tempfile.TemporaryDirectory() as run:
    config = train.TrainConfig(plan=Plan([Stage(3, 0.0)]))
    rows = train.train(data, run, config, progress=False).history
n_train = len(train.split(len(data), 0.2, 0)[0])
per_epoch = (rows[-1]["elapsed_seconds"] - rows[0]["elapsed_seconds"]) / (len(rows) - 1)
emit(
    {
        "train_trajectories": n_train,
        "seconds_per_epoch": per_epoch,
        "trajectories_per_second": n_train / per_epoch,
        "paper_preset_144_epochs_of_79968_minutes": 144 * 79968 / (n_train / per_epoch) / 60,
    },
    args.output,
)
