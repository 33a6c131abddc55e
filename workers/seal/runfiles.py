"""Files a long, resumable run keeps beside its results: atomic JSON writes, and the settings it was made under."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from .config import TRAINING_RECIPE


def write_json_atomic(path: str | os.PathLike, data: Any, *, indent: int = 2) -> None:
    """Write JSON so that a kill never leaves half a file: readers see the old file or the new one."""
    path = Path(path)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")  # per process: concurrent writers never share a temp file
    tmp.write_text(json.dumps(data, indent=indent))
    os.replace(tmp, path)


def pin_settings(path: Path, settings: dict, *, unrecorded_results: bool = False) -> None:
    """Record the settings a run's results are made under, or refuse to resume under other ones.

    `unrecorded_results` says the directory already holds results but no record (they predate records):
    nothing says what produced them, so they are refused as well.
    """
    settings = json.loads(json.dumps(settings))  # as stored: tuples come back as lists
    if path.is_file():
        if json.loads(path.read_text()) != settings:
            raise ValueError(f"{path.parent} holds results made under other settings ({path}); "
                             "use another output directory")
    elif unrecorded_results:
        raise ValueError(f"{path.parent} holds results whose settings were not recorded (older than training "
                         f"recipe {TRAINING_RECIPE}); use another output directory")
    else:
        write_json_atomic(path, settings)
