"""Object stores (S3, GCS, Azure Blob): the store primitives by conditional writes.

Object stores have no rename, so :class:`ObjectStore` builds ``move`` and ``create``
on three primitives each store implements with its own precondition:

* ``_version(path)``: the current version of an object (S3 and Azure: its ETag; GCS:
  its generation), or None;
* ``_put(path, data, exclusive=True)``: create-if-absent, refused by the server when
  the object exists (S3 ``If-None-Match: *``, GCS ``ifGenerationMatch=0``, Azure
  ``If-None-Match: *``);
* ``_delete_if(path, version)``: delete only that version (S3 and Azure ``If-Match``,
  GCS ``ifGenerationMatch``).

``move(src, dst)`` reads the source's version, creates a lock object named after the
source and that version exclusively -- the one caller that makes it owns the move --
then deletes that version of the source and writes the destination. Every object is
written with a non-empty, unique body (a random nonce stands in for an empty file), so
a version names one write. A process killed between the lock and the destination
write loses that token (docs/file.md says what that means). The guarantees are the
server's: a server that ignores the preconditions (gcp-storage-emulator does) gives no
exclusive claims.
"""

from __future__ import annotations

import builtins
import hashlib
import uuid
from abc import abstractmethod
from collections.abc import Callable, Coroutine, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, ClassVar, TypeVar

from omniq.errors import BackendError
from omniq_file._store import Store

__all__ = ["AzureStore", "GCSStore", "ObjectStore", "S3Store"]

T = TypeVar("T")
R = TypeVar("R")

#: fsspec options every object store gets: no listing cache, no shared instance (the
#: claim rules need every listing and read to reach the server).
_FRESH = {"use_listings_cache": False, "skip_instance_cache": True}


class ObjectStore(Store):
    """A bucket (or container) and key prefix, with claims by conditional writes."""

    #: URL scheme shown in ``repr``.
    scheme: ClassVar[str] = ""
    fs: Any

    def __init__(self, root: str) -> None:
        self.root = root.strip("/")
        self.bucket, _, self.prefix = self.root.partition("/")
        self._pool: ThreadPoolExecutor | None = None

    # -- what each store implements -------------------------------------------------

    @abstractmethod
    def _version(self, path: str) -> str | None:
        """The object's current version (ETag or generation), None when it is absent."""

    @abstractmethod
    def _put(self, path: str, data: bytes, exclusive: bool = False) -> bool:
        """Write ``data``; with ``exclusive``, only if absent (False when it exists)."""

    @abstractmethod
    def _delete_if(self, path: str, version: str) -> bool:
        """Delete ``path`` if it is still at ``version``; False when it is not (or gone)."""

    # -- shared ---------------------------------------------------------------------

    def _p(self, path: str) -> str:
        return f"{self.root}/{path}"

    def _key(self, path: str) -> str:
        return f"{self.prefix}/{path}" if self.prefix else path

    @staticmethod
    def _nonce() -> bytes:
        return uuid.uuid4().hex.encode()

    def map(self, fn: Callable[[T], R], items: Iterable[T]) -> builtins.list[R]:
        """Run ``fn`` on the items concurrently (each call is a round trip or more)."""
        items = list(items)
        if len(items) <= 1:
            return [fn(x) for x in items]
        if self._pool is None:
            self._pool = ThreadPoolExecutor(16, thread_name_prefix=f"omniq-{self.scheme}")
        return list(self._pool.map(fn, items))

    def close(self) -> None:
        """Stop the request threads."""
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False)

    def read(self, path: str) -> bytes | None:
        try:
            data: bytes = self.fs.cat_file(self._p(path))
            return data
        except FileNotFoundError:
            return None

    def write(self, path: str, data: bytes) -> None:
        self._put(path, data or self._nonce())

    def create(self, path: str, data: bytes, token: str | None = None) -> bool:
        # always a body: a zero-byte "create" is not conditional in s3fs
        if not self._put(path, data or self._nonce(), exclusive=True):
            return False
        if token is not None:
            self._put(token, self._nonce())
        return True

    def touch(self, path: str) -> None:
        self._put(path, self._nonce(), exclusive=True)  # an existing one stays as it is

    def move(self, src: str, dst: str) -> bool:
        version = self._version(src)
        if version is None:
            return False
        lock = f"locks/{hashlib.sha1(f'{src}#{version}'.encode()).hexdigest()}"
        if not self.create(lock, dst.encode()):
            return False  # another caller moves (or moved) this version of src
        if not self._delete_if(src, version):
            return False
        self._put(dst, self._nonce())
        return True

    def delete(self, path: str) -> bool:
        version = self._version(path)
        return version is not None and self._delete_if(path, version)

    def exists(self, path: str) -> bool:
        return self._version(path) is not None

    def list(self, directory: str) -> builtins.list[str]:
        try:
            entries = self.fs.ls(self._p(directory), detail=False, refresh=True)
        except FileNotFoundError:
            return []
        return [e.rstrip("/").rsplit("/", 1)[-1] for e in entries]

    def __repr__(self) -> str:
        return f"{type(self).__name__}('{self.scheme}://{self.root}')"


class S3Store(ObjectStore):
    """An S3 bucket through s3fs: ``PutObject`` with ``If-None-Match: *`` (s3fs
    ``mode="create"``) creates, ``DeleteObject`` with ``If-Match: <ETag>`` deletes."""

    scheme = "s3"

    def __init__(self, root: str, storage_options: dict[str, Any]) -> None:
        import fsspec

        super().__init__(root)
        self.fs = fsspec.filesystem("s3", **{**_FRESH, **storage_options})

    def check(self) -> None:
        """Open the session and check the bucket exists (a missing one is an error)."""
        try:
            self.fs.call_s3("head_bucket", Bucket=self.bucket)
        except (FileNotFoundError, OSError) as e:
            raise BackendError(f"cannot reach bucket s3://{self.bucket}: {e}") from e

    def _version(self, path: str) -> str | None:
        try:
            head = self.fs.call_s3("head_object", Bucket=self.bucket, Key=self._key(path))
        except (FileNotFoundError, PermissionError):
            return None
        etag: str = head["ETag"]
        return etag

    def _put(self, path: str, data: bytes, exclusive: bool = False) -> bool:
        if not exclusive:
            self.fs.pipe_file(self._p(path), data)
            return True
        try:
            self.fs.pipe_file(self._p(path), data, mode="create")
        except FileExistsError:
            return False
        return True

    def _delete_if(self, path: str, version: str) -> bool:
        try:
            self.fs.call_s3(
                "delete_object", Bucket=self.bucket, Key=self._key(path), IfMatch=version
            )
            return True
        except (FileNotFoundError, OSError):
            return False
        except Exception as e:  # botocore ClientError: PreconditionFailed
            if "PreconditionFailed" in str(e) or "412" in str(e):
                return False
            raise


class GCSStore(ObjectStore):
    """A Google Cloud Storage bucket through gcsfs's JSON-API file system.

    Creates are uploads with ``ifGenerationMatch=0`` (gcsfs ``mode="create"``; HTTP 412
    when the object exists), deletes carry ``ifGenerationMatch=<generation>``. gcsfs's
    gRPC "extended" file system (zonal buckets) is not used.
    """

    scheme = "gs"

    def __init__(self, root: str, storage_options: dict[str, Any]) -> None:
        from gcsfs.core import GCSFileSystem  # type: ignore[import-untyped,import-not-found,unused-ignore]

        super().__init__(root)
        self.fs = GCSFileSystem(**{**_FRESH, **storage_options})

    def check(self) -> None:
        """Check the bucket exists (a missing one is an error)."""
        try:
            self.fs.call("GET", "b/{}", self.bucket, json_out=True)
        except (FileNotFoundError, OSError, ValueError) as e:
            raise BackendError(f"cannot reach bucket gs://{self.bucket}: {e}") from e

    def _version(self, path: str) -> str | None:
        try:
            obj = self.fs.call(
                "GET", "b/{}/o/{}", self.bucket, self._key(path), json_out=True,
                fields="generation",
            )  # fmt: skip
        except FileNotFoundError:
            return None
        return str(obj["generation"])

    def _put(self, path: str, data: bytes, exclusive: bool = False) -> bool:
        try:
            self.fs.pipe_file(self._p(path), data, mode="create" if exclusive else "overwrite")
        except FileExistsError:  # 412: the ifGenerationMatch=0 precondition failed
            return False
        return True

    def _delete_if(self, path: str, version: str) -> bool:
        try:
            self.fs.call(
                "DELETE", "b/{}/o/{}", self.bucket, self._key(path), ifGenerationMatch=version
            )
            return True
        except (FileNotFoundError, FileExistsError):  # 404, or 412: another generation
            return False


class AzureStore(ObjectStore):
    """An Azure Blob Storage container through adlfs (azure-storage-blob).

    Creates are ``upload_blob(overwrite=False)`` (``If-None-Match: *``), deletes
    ``delete_blob(etag=..., match_condition=IfNotModified)`` (``If-Match: <ETag>``).
    An ``abfs://container@account.dfs.core.windows.net/prefix`` URL names the account
    too.
    """

    scheme = "az"

    def __init__(self, root: str, storage_options: dict[str, Any]) -> None:
        from adlfs import AzureBlobFileSystem  # type: ignore[import-untyped,import-not-found,unused-ignore]

        container, _, rest = root.strip("/").partition("/")
        opts = {**_FRESH, **storage_options}
        if "@" in container:
            container, _, host = container.partition("@")
            opts.setdefault("account_name", host.split(".", 1)[0])
        super().__init__(f"{container}/{rest}" if rest else container)
        self.fs = AzureBlobFileSystem(**opts)

    def _run(self, fn: Callable[..., Coroutine[Any, Any, T]], *args: Any) -> T:
        from fsspec.asyn import sync

        result: T = sync(self.fs.loop, fn, *args)
        return result

    def check(self) -> None:
        """Check the container exists (a missing one is an error)."""
        from azure.core.exceptions import AzureError

        async def props() -> None:
            async with self.fs.service_client.get_container_client(self.bucket) as cc:
                await cc.get_container_properties()

        try:
            self._run(props)
        except (AzureError, OSError) as e:
            raise BackendError(f"cannot reach container az://{self.bucket}: {e}") from e

    def _version(self, path: str) -> str | None:
        from azure.core.exceptions import ResourceNotFoundError

        async def etag() -> str:
            async with self.fs.service_client.get_blob_client(self.bucket, self._key(path)) as bc:
                props = await bc.get_blob_properties()
                return str(props.etag)

        try:
            return self._run(etag)
        except ResourceNotFoundError:
            return None

    def _put(self, path: str, data: bytes, exclusive: bool = False) -> bool:
        try:
            self.fs.pipe_file(self._p(path), data, overwrite=not exclusive)
        except FileExistsError:  # 409 BlobAlreadyExists: If-None-Match: * failed
            return False
        return True

    def _delete_if(self, path: str, version: str) -> bool:
        from azure.core import MatchConditions
        from azure.core.exceptions import ResourceModifiedError, ResourceNotFoundError

        async def delete() -> None:
            async with self.fs.service_client.get_blob_client(self.bucket, self._key(path)) as bc:
                await bc.delete_blob(etag=version, match_condition=MatchConditions.IfNotModified)

        try:
            self._run(delete)
            return True
        except (ResourceModifiedError, ResourceNotFoundError):  # 412, 404
            return False
