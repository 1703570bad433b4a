"""Shared by the benchmark scripts: print the JSON result and write it where asked."""

import json
from pathlib import Path


def emit(results: dict, output: str | None) -> None:
    text = json.dumps(results, indent=2)
    print(text)
    if output:
        Path(output).write_text(text + "\n")
