"""S3-compatible object storage (AWS S3, MinIO, Ceph RGW, GCS's S3 API...), for the blob and
report stores when API and workers share no directory (Kubernetes without a ReadWriteMany
volume, workers on other nodes or clusters).

A thin wrapper over boto3 (imported lazily: the ``s3`` extra). Credentials come from boto3's
usual chain (``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``, a profile, an instance or pod
role), never from reward3d's settings, so they are never logged with them.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

# Objects above this go up in parallel parts (boto3's managed transfer); a 97 MB video is 13.
MULTIPART_CHUNK_BYTES = 8 * 1024 * 1024


class ObjectMissingError(FileNotFoundError):
    """The key does not exist in the bucket."""


@dataclass(frozen=True)
class StoredObject:
    key: str  # full key, prefix included
    last_modified: datetime  # timezone-aware (UTC)


class S3Objects:
    """Objects under ``s3://bucket/prefix``; every key argument is relative to the prefix."""

    def __init__(self, *, bucket: str, prefix: str = "", endpoint_url: str | None = None,
                 region: str | None = None, client: Any = None) -> None:  # fmt: skip
        self.bucket = bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        if client is None:
            try:
                import boto3
                from botocore.config import Config
            except ImportError:
                raise RuntimeError("the s3 blob store needs boto3: pip install 'reward3d[s3]'") from None
            # Retries in "standard" mode: throttling and 5xx from the store are retried with backoff.
            config = Config(retries={"max_attempts": 5, "mode": "standard"})
            client = boto3.client("s3", endpoint_url=endpoint_url, region_name=region, config=config)
        self.client = client
        from boto3.s3.transfer import TransferConfig

        self._transfer = TransferConfig(multipart_chunksize=MULTIPART_CHUNK_BYTES,
                                        multipart_threshold=MULTIPART_CHUNK_BYTES)  # fmt: skip

    def key(self, name: str) -> str:
        return self.prefix + name

    # -- one object -------------------------------------------------------------------------
    def exists(self, name: str) -> bool:
        try:
            self.client.head_object(Bucket=self.bucket, Key=self.key(name))
            return True
        except Exception as error:
            if _is_not_found(error):
                return False
            raise

    def put_file(self, name: str, path: Path) -> None:
        self.client.upload_file(str(path), self.bucket, self.key(name), Config=self._transfer)

    def put_bytes(self, name: str, data: bytes, content_type: str) -> None:
        self.client.put_object(Bucket=self.bucket, Key=self.key(name), Body=data,
                               ContentType=content_type)  # fmt: skip

    def get_bytes(self, name: str) -> bytes:
        try:
            return self.client.get_object(Bucket=self.bucket, Key=self.key(name))["Body"].read()
        except Exception as error:
            if _is_not_found(error):
                raise ObjectMissingError(name) from None
            raise

    def download(self, name: str, destination: Path) -> None:
        """Into ``destination`` atomically (a temp file, then a rename): concurrent readers of the
        same blob on one machine never see half a file."""
        destination.parent.mkdir(parents=True, exist_ok=True)
        temporary = destination.parent / f".{uuid.uuid4().hex}.part"
        try:
            self.client.download_file(self.bucket, self.key(name), str(temporary),
                                      Config=self._transfer)  # fmt: skip
        except Exception as error:
            temporary.unlink(missing_ok=True)
            if _is_not_found(error):
                raise ObjectMissingError(name) from None
            raise
        os.chmod(temporary, 0o600)  # a cached upload: owner only, as in the directory store
        os.replace(temporary, destination)

    def refresh(self, name: str) -> None:
        """Renew the object's Last-Modified (its age for garbage collection) without moving its
        bytes through us: a server-side copy onto itself."""
        key = self.key(name)
        self.client.copy_object(Bucket=self.bucket, Key=key, CopySource={"Bucket": self.bucket, "Key": key},
                                MetadataDirective="REPLACE")  # fmt: skip

    def delete(self, names: list[str]) -> None:
        for start in range(0, len(names), 1000):  # DeleteObjects takes 1000 keys a call
            batch = [{"Key": self.key(name)} for name in names[start : start + 1000]]
            self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": batch, "Quiet": True})

    # -- listing ----------------------------------------------------------------------------
    def list(self, under: str = "") -> Iterator[StoredObject]:
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=self.key(under)):
            for entry in page.get("Contents", []):
                modified = entry["LastModified"]
                if modified.tzinfo is None:
                    modified = modified.replace(tzinfo=timezone.utc)
                yield StoredObject(key=entry["Key"], last_modified=modified)

    def name_of(self, key: str) -> str:
        return key[len(self.prefix) :]


def _is_not_found(error: Exception) -> bool:
    response = getattr(error, "response", None)
    code = str((response or {}).get("Error", {}).get("Code", ""))
    return code in ("404", "NoSuchKey", "NotFound")


def open_s3_objects(settings, *, under: str = "") -> S3Objects:
    """The bucket and prefix named by the settings (``REWARD3D_S3_*``)."""
    if not settings.s3_bucket:
        raise ValueError("blob_store is 's3' but REWARD3D_S3_BUCKET is not set")
    prefix = "/".join(part.strip("/") for part in (settings.s3_prefix, under) if part.strip("/"))
    return S3Objects(bucket=settings.s3_bucket, prefix=prefix, endpoint_url=settings.s3_endpoint_url,
                     region=settings.s3_region)  # fmt: skip
