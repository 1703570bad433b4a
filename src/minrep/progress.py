"""Progress of long work (simulation, likelihoods, training, generation, analysis).

On a terminal, tqdm bars (inner bars of a nested loop vanish when done). Written to a file or
a pipe, bars would fill a log with carriage returns: there each outer task writes one line
when it starts, one per named stage (:meth:`set_postfix_str`) and one when it ends, and inner
bars write nothing.
"""

from __future__ import annotations

import sys
import time

from tqdm.auto import tqdm


def interactive() -> bool:
    """Whether progress goes to a terminal (stderr)."""
    return sys.stderr.isatty()


class _Lines(tqdm):
    """A disabled tqdm that writes plain lines: start, each named stage, end."""

    def __init__(self, iterable=None, desc: str = "", **kwargs):
        super().__init__(iterable, desc=desc, disable=True, **kwargs)
        self._label, self._started, self._ended = desc, time.perf_counter(), False
        self._write("started")

    def _write(self, what: str) -> None:
        print(f"{self._label}: {what}", file=sys.stderr, flush=True)

    def __iter__(self):
        yield from self.iterable
        self.close()

    def set_postfix_str(self, s: str = "", refresh: bool = True) -> None:
        self._write(s)

    def close(self) -> None:
        if not self._ended:
            self._ended = True
            self._write(f"done in {time.perf_counter() - self._started:.1f} s")
        super().close()


def bar(iterable=None, *, desc: str, enabled: bool = True, nested: bool = False, **kwargs):
    """A progress bar over ``iterable`` (or with ``total=``): tqdm on a terminal, plain lines
    elsewhere (none for a ``nested`` bar), nothing when not ``enabled``."""
    if not enabled or (nested and not interactive()):
        return tqdm(iterable, desc=desc, disable=True, **kwargs)
    if interactive():
        return tqdm(iterable, desc=desc, leave=not nested, **kwargs)
    return _Lines(iterable, desc=desc, **kwargs)
