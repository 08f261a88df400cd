"""Reading request inputs other than the video itself (no torch here: the API uses it too)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from pydantic import ValidationError

from service.schemas import TrajectoryTarget


class InputFileError(ValueError):
    """A user-supplied file is missing or malformed (a 4xx / CLI error, never a traceback)."""


def load_trajectory_file(path: str | Path) -> TrajectoryTarget:
    """A camera path from .json (the TrajectoryTarget schema) or .npz (arrays
    ``camera_to_world`` or ``world_to_camera`` [N,4,4], optional string ``convention``)."""
    path = Path(path)
    if not path.is_file():
        raise InputFileError(f"trajectory file not found: {path}")
    try:
        if path.suffix.lower() == ".json":
            data = json.loads(path.read_text())
        elif path.suffix.lower() == ".npz":
            with np.load(path, allow_pickle=False) as arrays:
                data = {key: arrays[key].tolist() for key in arrays.files}
            if "convention" in data and isinstance(data["convention"], list):
                raise InputFileError("convention must be a string")
        else:
            raise InputFileError(f"trajectory file must be .json or .npz, got {path.name}")
        return TrajectoryTarget.model_validate(data)
    except InputFileError:
        raise
    except ValidationError as exc:
        raise InputFileError(f"invalid trajectory in {path}: {_first_error(exc)}") from None
    except Exception as exc:  # JSON syntax, zip errors, pickled arrays...
        raise InputFileError(f"cannot read trajectory file {path}: {exc}") from None


def _first_error(exc: ValidationError) -> str:
    error = exc.errors()[0]
    where = ".".join(str(part) for part in error.get("loc", ()))
    return f"{where}: {error['msg']}" if where else error["msg"]
