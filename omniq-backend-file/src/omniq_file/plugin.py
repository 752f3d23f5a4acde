"""Entry point of the file backend: registers it with OmniQ (imports no fsspec driver)."""

from __future__ import annotations

from omniq.plugins import BackendSpec, hookimpl


@hookimpl
def omniq_backends() -> list[BackendSpec]:
    """The ``file`` backend (``file://`` paths; ``memory://``, ``s3://``, ``gs://``,
    ``az://`` with ``OMNIQ_TASK_QUEUE_TYPE=file``)."""
    return [
        BackendSpec.conventional(
            "file",
            "omniq_file",
            "File",
            schemes=("file", "memory", "s3", "s3a", "gs", "gcs", "az", "abfs", "abfss"),
            default_url="file://.omniq/files",
            package="omniq-backend-file",
            description="fsspec: a directory (rename claims), memory://, object stores",
        )
    ]
