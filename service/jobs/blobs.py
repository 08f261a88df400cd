"""Content-addressed blob store: uploaded tensors and video files, keyed by BLAKE3.

Tensors never travel through Redis (one 81x480x832 video is 97 MB): the API streams each one
into the store as it arrives, and a job carries only :class:`BlobRef` references.

A tensor blob is a ``.npy`` file (a small text header with dtype and shape, then the raw
little-endian, row-major bytes) whose header we write ourselves, canonically: the same array
always has the same bytes, hence the same digest, whichever wire format brought it. Workers
memory-map it (no copy). An encoded video (multipart upload) is stored as the file it was.

``DirectoryBlobStore`` is the default (a local or shared directory); ``S3BlobStore`` keeps the
blobs in an S3-compatible bucket (``REWARD3D_BLOB_STORE=s3``), with a local cache.

The digest is BLAKE3 (256 bits; as strong a content key as sha256): about 3x faster than
sha256 on one core (~55 vs ~160 ms per 97 MB on the shared bench machine), and hashing is the
service's largest own cost on a large upload. The field is named after the algorithm
(``BlobRef.blake3``) and the result cache keys say ``video_blake3`` (jobs/cache.py), so keys
and records of the sha256 store (before issue 14) can never be mixed with these: an old
record does not validate, an old key never matches, and old blobs expire with the janitor.
"""

from __future__ import annotations

import contextlib
import io
import os
import time
import uuid
from pathlib import Path
from typing import Literal

import numpy as np
from blake3 import blake3
from pydantic import BaseModel, ConfigDict, Field

DIGEST_PATTERN = r"^[0-9a-f]{64}$"  # BLAKE3, 32 bytes in hex
# Uploads are the callers' data: readable by the service's own user only.
PRIVATE_FILE_MODE = 0o600
PRIVATE_DIR_MODE = 0o700
ALLOWED_FILE_SUFFIXES = {".mp4", ".webm", ".avi", ".mkv", ".mov", ".m4v", ".gif", ".ogv", ""}


def private_dir(path: Path) -> Path:
    """``path`` as a directory only its owner can enter (missing parents too: ``mkdir``'s
    ``parents=True`` would give them the default mode)."""
    if not path.is_dir():
        if not path.parent.is_dir():
            private_dir(path.parent)
        path.mkdir(mode=PRIVATE_DIR_MODE, exist_ok=True)
    if path.stat().st_mode & 0o777 != PRIVATE_DIR_MODE:
        with contextlib.suppress(PermissionError):  # a volume root owned by someone else
            os.chmod(path, PRIVATE_DIR_MODE)  # created earlier, or by an older version
    return path


def private_file(path: Path):
    """A new file (unbuffered, binary) that only its owner can read."""
    return open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE_MODE), "wb", buffering=0)


class BlobMissingError(FileNotFoundError):
    """A referenced blob is gone (expired or deleted)."""


class BlobStoreUnavailableError(OSError):
    """The store cannot be reached (an S3 endpoint down or refusing): transient, retry later."""


class BlobRef(BaseModel):
    """Where a job finds one input: what the API stored, what the worker reads."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    blake3: str = Field(pattern=DIGEST_PATTERN, description="BLAKE3 of the stored bytes.")
    kind: Literal["npy", "file"] = Field(description="'npy': a tensor; 'file': an encoded video.")
    nbytes: int = Field(ge=0, description="Payload bytes (tensor data or file size).")
    dtype: str | None = Field(None, description="numpy dtype string of a tensor, e.g. '|u1'.")
    shape: list[int] | None = Field(None, description="Shape of a tensor.")
    suffix: str | None = Field(None, description="File name suffix of an encoded video.")


def npy_header(dtype: np.dtype, shape: tuple[int, ...]) -> bytes:
    """The canonical .npy (v1.0) header for a C-ordered little-endian array."""
    dtype = np.dtype(dtype)
    if dtype.byteorder == ">":
        raise ValueError("tensors are stored little-endian")
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        buffer,
        {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False,
         "shape": tuple(int(s) for s in shape)},
    )  # fmt: skip
    return buffer.getvalue()


class BlobWriter:
    """Receives a blob's bytes piece by piece, hashing as it writes; ``commit()`` names it."""

    def __init__(self, store: DirectoryBlobStore, kind: str, *, dtype=None, shape=None,
                 suffix: str | None = None, expected_nbytes: int | None = None) -> None:  # fmt: skip
        self.store = store
        self.kind = kind
        self.dtype = np.dtype(dtype) if dtype is not None else None
        self.shape = tuple(int(s) for s in shape) if shape is not None else None
        self.suffix = suffix
        self.expected_nbytes = expected_nbytes
        self.nbytes = 0
        self.ref: BlobRef | None = None  # set by commit()
        self.created = False  # commit() stored new bytes (not a copy of an existing blob)
        self._hash = blake3()
        self._temp = store.temp_dir / f"{uuid.uuid4().hex}.part"
        self._file = private_file(self._temp)  # one write() per chunk, no extra copy
        if kind == "npy":
            header = npy_header(self.dtype, self.shape)
            self._hash.update(header)
            self._file.write(header)

    def write(self, chunk: bytes | memoryview) -> None:
        self._hash.update(chunk)
        written = self._file.write(chunk)
        while written < len(chunk):  # raw files may write short
            written += self._file.write(memoryview(chunk)[written:])
        self.nbytes += len(chunk)

    def commit(self) -> BlobRef:
        self._file.close()
        if self.expected_nbytes is not None and self.nbytes != self.expected_nbytes:
            self.abort()
            raise ValueError(f"blob got {self.nbytes} bytes, expected {self.expected_nbytes}")
        digest = self._hash.hexdigest()
        ref = BlobRef(
            blake3=digest, kind=self.kind, nbytes=self.nbytes,
            dtype=self.dtype.str if self.dtype is not None else None,
            shape=list(self.shape) if self.shape is not None else None,
            suffix=self.suffix,
        )  # fmt: skip
        final = self.store.path(ref)
        private_dir(final.parent)
        if final.exists():  # same content uploaded before: keep one copy, refresh its age
            self._temp.unlink(missing_ok=True)
            os.utime(final)
        else:
            os.replace(self._temp, final)  # atomic: readers never see a partial blob
            self.created = True
        self.ref = ref
        self.store.publish(ref, final)
        return ref

    def abort(self) -> None:
        if not self._file.closed:
            self._file.close()
        self._temp.unlink(missing_ok=True)


class DirectoryBlobStore:
    """Blobs as files under ``root/<first two hex digits>/<blake3><ext>``."""

    def __init__(self, root: str | Path) -> None:
        self.root = private_dir(Path(root))
        self.temp_dir = private_dir(self.root / "tmp")

    # -- writing ----------------------------------------------------------------------------
    def writer(self, kind: Literal["npy", "file"], *, dtype=None, shape=None,
               suffix: str | None = None, expected_nbytes: int | None = None) -> BlobWriter:  # fmt: skip
        if kind == "npy" and (dtype is None or shape is None):
            raise ValueError("a tensor blob needs dtype and shape")
        if kind == "file" and suffix not in ALLOWED_FILE_SUFFIXES:
            raise ValueError(f"unsupported video file suffix {suffix!r}")
        return BlobWriter(self, kind, dtype=dtype, shape=shape, suffix=suffix,
                          expected_nbytes=expected_nbytes)  # fmt: skip

    def put_array(self, array: np.ndarray) -> BlobRef:
        """Store an in-memory array (tests, JSON uploads)."""
        array = np.ascontiguousarray(array)
        if array.dtype.byteorder == ">":
            array = array.astype(array.dtype.newbyteorder("<"))
        writer = self.writer("npy", dtype=array.dtype, shape=array.shape,
                             expected_nbytes=array.nbytes)  # fmt: skip
        writer.write(memoryview(array.reshape(-1)).cast("B"))
        return writer.commit()

    def publish(self, ref: BlobRef, path: Path) -> None:
        """Make a committed blob visible to the workers (here it already is: a shared directory)."""

    # -- reading ----------------------------------------------------------------------------
    def path(self, ref: BlobRef) -> Path:
        extension = ".npy" if ref.kind == "npy" else (ref.suffix or ".bin")
        return self.root / ref.blake3[:2] / f"{ref.blake3}{extension}"

    def exists(self, ref: BlobRef) -> bool:
        return self.path(ref).is_file()

    def local_path(self, ref: BlobRef) -> Path:
        """A readable local file for the blob (a worker decodes encoded videos from it)."""
        path = self.path(ref)
        if not path.is_file():
            raise BlobMissingError(f"input {ref.blake3[:12]} is no longer stored (expired?)")
        return path

    def load_array(self, ref: BlobRef) -> np.ndarray:
        """The tensor, memory-mapped read-only (no copy until the pipeline reads it)."""
        array = np.load(self.local_path(ref), mmap_mode="r", allow_pickle=False)
        if ref.shape is not None and list(array.shape) != list(ref.shape):
            raise ValueError(f"blob {ref.blake3[:12]} has shape {array.shape}, expected {ref.shape}")
        return array

    def touch(self, ref: BlobRef) -> None:
        try:
            os.utime(self.path(ref))
        except FileNotFoundError:
            pass

    def remove(self, ref: BlobRef) -> None:
        """Delete a blob now (an upload whose request was refused)."""
        self.path(ref).unlink(missing_ok=True)

    # -- lifetime ---------------------------------------------------------------------------
    def collect_garbage(self, *, older_than_s: float, keep: set[str]) -> int:
        """Delete blobs untouched for ``older_than_s`` whose digest is not in ``keep``
        (the inputs of unfinished jobs), and abandoned partial uploads. Returns the count."""
        cutoff = time.time() - older_than_s
        removed = 0
        for folder in self.root.iterdir():
            if not folder.is_dir() or folder.name == "reports":  # jobs/reports.py cleans its own
                continue
            for path in folder.iterdir():
                sha = path.name.split(".", 1)[0]
                if folder != self.temp_dir and sha in keep:
                    continue
                try:
                    if path.stat().st_mtime < cutoff:
                        path.unlink()
                        removed += 1
                except FileNotFoundError:
                    pass
        return removed


class S3BlobStore(DirectoryBlobStore):
    """Blobs in an S3-compatible bucket, for API and workers that share no directory.

    The local directory (``blob_dir``) is only a cache: uploads are hashed into it as with the
    directory store, then copied to ``<prefix>/blobs/<blake3><ext>``; a worker that does not have
    a blob fetches it once and memory-maps its local copy. The bucket is the truth for existence
    and age; the janitor expires both, by the same rules as the directory store.
    """

    # Local copies are pruned at most this often, by each process that holds a store (the
    # fleet-wide janitor runs on one machine and cannot reach the others' caches).
    CACHE_PRUNE_PERIOD_S = 60.0

    def __init__(self, cache_dir: str | Path, objects, *, cache_ttl_s: float = 3_600) -> None:
        super().__init__(cache_dir)
        self.objects = objects  # object_storage.S3Objects
        self.cache_ttl_s = cache_ttl_s
        self._pruned_at = 0.0

    def _prune_cache(self) -> None:
        now = time.monotonic()
        if now - self._pruned_at >= self.CACHE_PRUNE_PERIOD_S:
            self._pruned_at = now
            # A copy deleted under a reader is harmless: mmaps survive unlink, and the next
            # reader downloads it again.
            DirectoryBlobStore.collect_garbage(self, older_than_s=self.cache_ttl_s, keep=set())

    def _name(self, ref: BlobRef) -> str:
        return self.path(ref).name

    def publish(self, ref: BlobRef, path: Path) -> None:
        self._prune_cache()
        try:
            if self.objects.exists(self._name(ref)):
                self.objects.refresh(self._name(ref))  # same content uploaded before: renew its age
            else:
                self.objects.put_file(self._name(ref), path)
        except Exception as error:  # botocore: endpoint down, throttled past retries, denied
            raise BlobStoreUnavailableError(f"the S3 blob store did not take the upload: {error}") from None

    def exists(self, ref: BlobRef) -> bool:
        return self.objects.exists(self._name(ref))

    def local_path(self, ref: BlobRef) -> Path:
        from service.jobs.object_storage import ObjectMissingError

        self._prune_cache()
        path = self.path(ref)
        if not path.is_file():
            try:
                self.objects.download(self._name(ref), path)
            except ObjectMissingError:
                raise BlobMissingError(f"input {ref.blake3[:12]} is no longer stored (expired?)") from None
            except Exception as error:
                raise BlobStoreUnavailableError(f"the S3 blob store is unreachable: {error}") from None
        return path

    def touch(self, ref: BlobRef) -> None:
        super().touch(ref)
        try:
            self.objects.refresh(self._name(ref))
        except Exception:  # best effort, as for the directory store: a missing blob stays missing
            pass

    def remove(self, ref: BlobRef) -> None:
        super().remove(ref)
        try:
            self.objects.delete([self._name(ref)])
        except Exception:  # best effort: the janitor removes it later
            pass

    def collect_garbage(self, *, older_than_s: float, keep: set[str]) -> int:
        """Expire bucket objects (the count returned) and this machine's cached copies."""
        super().collect_garbage(older_than_s=min(older_than_s, self.cache_ttl_s), keep=keep)
        cutoff = time.time() - older_than_s
        stale = [self.objects.name_of(entry.key) for entry in self.objects.list()
                 if entry.last_modified.timestamp() < cutoff
                 and self.objects.name_of(entry.key).split(".", 1)[0] not in keep]  # fmt: skip
        self.objects.delete(stale)
        return len(stale)


def open_blob_store(settings) -> DirectoryBlobStore:
    """The store named by ``settings.blob_store``: a (shared) directory, or an S3 bucket with
    ``blob_dir`` as this machine's cache."""
    if settings.blob_store == "s3":
        from service.jobs.object_storage import open_s3_objects

        return S3BlobStore(settings.resolved_blob_dir(), open_s3_objects(settings, under="blobs"),
                           cache_ttl_s=settings.blob_ttl_s)  # fmt: skip
    return DirectoryBlobStore(settings.resolved_blob_dir())
