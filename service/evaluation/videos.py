"""What to evaluate: the videos of a folder or a list file, their prompts, their content hash.

A *group* is one folder (or list file): usually one model's outputs. Inside a group each video
has a *name* (its path relative to the folder, or its file name for list files); two groups are
compared video by video on equal names.

Videos are files PyAV decodes (.mp4, .webm, .avi, .mkv, .mov, ...), ``.npy`` / ``.safetensors``
arrays, or sub-folders of images (one video per sub-folder). A file ``NAME.geometry.npz`` next
to a video holds its known geometry (the oracle backend's layout); it is never a video itself.
A file ``NAME.trajectory.json`` (or ``.npz``) holds the camera path requested for that video
(explicit poses, as ``reward3d score --trajectory``): the trajectory term compares with it.

Prompts file (``--prompts``), one of:

- ``.jsonl``: one object per line, ``{"name": "clip_001.mp4", "prompt": "Camera orbit left."}``;
- ``.json``: one object ``{"clip_001.mp4": "Camera orbit left.", ...}``;
- ``.csv``: a header with columns ``name`` and ``prompt`` (any others are ignored);
- ``.txt``: one prompt per line, in the order of the sorted video names of the (first) group;
  the line count must equal the number of videos.

A name matches a video by its name (``sub/clip_001.mp4``), its file name (``clip_001.mp4``) or
either without the extension (``clip_001``). Videos without a prompt are scored without one
(the trajectory term is then ``not_applicable``).
"""

from __future__ import annotations

import csv
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

VIDEO_SUFFIXES = {".mp4", ".webm", ".avi", ".mkv", ".mov", ".m4v", ".gif", ".npy", ".safetensors"}
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff"}
LIST_SUFFIXES = {".txt", ".lst", ".list"}
GEOMETRY_SUFFIX = ".geometry.npz"
TRAJECTORY_SUFFIXES = (".trajectory.json", ".trajectory.npz")


class EvaluationInputError(ValueError):
    """A folder, list or prompts file that cannot be used (a CLI message, never a traceback)."""


@dataclass(frozen=True)
class VideoEntry:
    group: str  # the folder or list it came from (a model)
    name: str  # unique within the group; the key for pairing groups
    path: Path  # a file, or a folder of images

    @property
    def geometry_path(self) -> Path | None:
        """Known geometry next to the video (``NAME.geometry.npz``), if any."""
        candidate = self.path.parent / (_strip_suffix(self.path.name) + GEOMETRY_SUFFIX)
        return candidate if candidate.is_file() else None

    @property
    def trajectory_path(self) -> Path | None:
        """The requested camera path next to the video (``NAME.trajectory.json`` or ``.npz``,
        service.inputs.load_trajectory_file's formats), if any."""
        for suffix in TRAJECTORY_SUFFIXES:
            candidate = self.path.parent / (_strip_suffix(self.path.name) + suffix)
            if candidate.is_file():
                return candidate
        return None


@dataclass(frozen=True)
class Group:
    label: str
    source: Path
    videos: list[VideoEntry]


def collect_group(source: str | Path, label: str | None = None) -> Group:
    """The videos of a folder (recursively) or of a list file (one path per line, ``#`` comments,
    relative paths taken from the list's folder), sorted by name."""
    source = Path(source)
    label = label or (source.stem if source.is_file() else source.resolve().name)
    if source.is_dir():
        videos = [VideoEntry(label, name, path) for name, path in _scan_folder(source)]
    elif source.is_file() and source.suffix.lower() in LIST_SUFFIXES:
        videos = _read_list(source, label)
    elif source.is_file():
        raise EvaluationInputError(
            f"{source} is neither a folder nor a list file ({', '.join(sorted(LIST_SUFFIXES))})"
        )
    else:
        raise EvaluationInputError(f"no such folder or list file: {source}")
    if not videos:
        raise EvaluationInputError(
            f"no videos in {source} (looked for {', '.join(sorted(VIDEO_SUFFIXES))} files "
            "and folders of images)"
        )
    return Group(label, source, sorted(videos, key=lambda v: v.name))


def _scan_folder(folder: Path) -> list[tuple[str, Path]]:
    found = []
    for path in sorted(folder.rglob("*")):
        relative = path.relative_to(folder)
        if any(part.startswith(".") for part in relative.parts):
            continue  # hidden files and folders (.DS_Store, .git, our own .cache)
        if path.is_file() and path.suffix.lower() in VIDEO_SUFFIXES:
            if not path.name.endswith(GEOMETRY_SUFFIX):
                found.append((PurePosixPath(relative).as_posix(), path))
        elif path.is_dir() and _image_count(path) >= 2:
            found.append((PurePosixPath(relative).as_posix(), path))
    return found


def _image_count(folder: Path) -> int:
    return sum(1 for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def _read_list(list_file: Path, label: str) -> list[VideoEntry]:
    entries, seen = [], {}
    for number, line in enumerate(list_file.read_text(encoding="utf-8").splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        path = Path(line)
        if not path.is_absolute():
            path = list_file.parent / path
        if not path.exists():
            raise EvaluationInputError(f"{list_file}:{number}: no such file or folder: {line}")
        name = path.name
        if name in seen:
            raise EvaluationInputError(
                f"{list_file}: lines {seen[name]} and {number} have the same file name {name!r}; "
                "names pair videos across models and must be unique"
            )
        seen[name] = number
        entries.append(VideoEntry(label, name, path))
    return entries


def _strip_suffix(name: str) -> str:
    return name[: -len(Path(name).suffix)] if Path(name).suffix else name


def name_keys(name: str) -> list[str]:
    """The ways a prompts file may refer to a video: name, file name, both without extension."""
    base = PurePosixPath(name).name
    keys = [name, base, _strip_suffix(name), _strip_suffix(base)]
    return list(dict.fromkeys(keys))


def read_prompts(path: str | Path, names: list[str]) -> dict[str, str]:
    """``{video name: prompt}`` for the given video names (format: module docstring)."""
    path = Path(path)
    if not path.is_file():
        raise EvaluationInputError(f"prompts file not found: {path}")
    suffix = path.suffix.lower()
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise EvaluationInputError(f"prompts file {path} is not UTF-8 text: {exc}") from None
    if suffix == ".txt":
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        ordered = sorted(names)
        if len(lines) != len(ordered):
            raise EvaluationInputError(
                f"{path} has {len(lines)} prompts for {len(ordered)} videos; a .txt file gives one "
                "prompt per line in the order of the sorted video names (use .jsonl/.csv/.json "
                "to give names)"
            )
        return dict(zip(ordered, lines))
    by_key = _keyed_prompts(path, suffix, text)
    prompts = {}
    for name in names:
        for key in name_keys(name):
            if key in by_key:
                prompts[name] = by_key[key]
                break
    return prompts


def _keyed_prompts(path: Path, suffix: str, text: str) -> dict[str, str]:
    pairs: list[tuple[object, object]] = []
    try:
        if suffix == ".jsonl":
            for number, line in enumerate(text.splitlines(), start=1):
                if not line.strip():
                    continue
                record = json.loads(line)
                if not isinstance(record, dict) or "name" not in record or "prompt" not in record:
                    raise EvaluationInputError(
                        f"{path}:{number}: each line must be an object with 'name' and 'prompt'"
                    )
                pairs.append((record["name"], record["prompt"]))
        elif suffix == ".json":
            data = json.loads(text)
            if not isinstance(data, dict):
                raise EvaluationInputError(f"{path}: expected an object {{name: prompt}}")
            pairs = list(data.items())
        elif suffix == ".csv":
            reader = csv.DictReader(text.splitlines())
            if not reader.fieldnames or not {"name", "prompt"} <= set(reader.fieldnames):
                raise EvaluationInputError(f"{path}: the header must have 'name' and 'prompt'")
            pairs = [(row["name"], row["prompt"]) for row in reader]
        else:
            raise EvaluationInputError(
                f"prompts file must be .jsonl, .json, .csv or .txt, got {path.name}"
            )
    except json.JSONDecodeError as exc:
        raise EvaluationInputError(f"{path}: invalid JSON: {exc}") from None
    except csv.Error as exc:
        raise EvaluationInputError(f"{path}: invalid CSV: {exc}") from None
    prompts: dict[str, str] = {}
    for name, prompt in pairs:
        if not isinstance(name, str) or not isinstance(prompt, str):
            raise EvaluationInputError(f"{path}: names and prompts must be strings ({name!r})")
        if name in prompts and prompts[name] != prompt:
            raise EvaluationInputError(f"{path}: two different prompts for {name!r}")
        prompts[name] = prompt
    return prompts


def content_sha256(path: Path) -> str:
    """sha256 of a video's bytes; for a folder of images, of its image names and bytes."""
    digest = hashlib.sha256()
    if path.is_dir():
        for image in sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES):
            digest.update(image.name.encode() + b"\0")
            _update_from_file(digest, image)
    else:
        _update_from_file(digest, path)
    return digest.hexdigest()


def _update_from_file(digest, path: Path) -> None:
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
