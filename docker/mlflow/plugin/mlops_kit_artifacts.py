"""The kit's ``kit-s3://`` artifact repository: S3 storage served only through MLflow's proxy.

MLflow advertises multipart and presigned transfers on /server-info whenever the
artifact destination's repository supports them, as S3's does. Clients then move
large files straight to the presigned URLs, which name the S3 endpoint as MLflow
sees it (an internal Compose name such as http://minio:9000), so a data scientist's
laptop hangs in retries. This repository stores in S3 exactly as ``s3://`` does, but
implements none of the multipart/presigned mixins: MLflow itself then advertises
neither, refuses the multipart endpoints with its "not supported" answer (clients
fall back to a proxied transfer) and every byte goes through the one HTTPS door.
Registered through the ``mlflow.artifact_repository`` entry point (see the
dist-info folder next to this file).
"""

from __future__ import annotations

from typing import Any

from mlflow.store.artifact.artifact_repo import ArtifactRepository
from mlflow.store.artifact.s3_artifact_repo import S3ArtifactRepository

SCHEME = "kit-s3"


class ProxiedS3ArtifactRepository(ArtifactRepository):
    """``kit-s3://bucket/prefix``: S3ArtifactRepository's storage without its direct-transfer mixins."""

    def __init__(self, artifact_uri: str, tracking_uri: str | None = None, registry_uri: str | None = None) -> None:
        super().__init__(artifact_uri, tracking_uri=tracking_uri, registry_uri=registry_uri)
        if not artifact_uri.startswith(f"{SCHEME}://"):
            raise ValueError(f"not a {SCHEME}:// URI: {artifact_uri}")
        self._s3 = S3ArtifactRepository(
            "s3://" + artifact_uri[len(SCHEME) + 3 :], tracking_uri=tracking_uri, registry_uri=registry_uri
        )

    def log_artifact(self, local_file: str, artifact_path: str | None = None) -> None:
        self._s3.log_artifact(local_file, artifact_path)

    def log_artifacts(self, local_dir: str, artifact_path: str | None = None) -> None:
        self._s3.log_artifacts(local_dir, artifact_path)

    def list_artifacts(self, path: str | None = None) -> list[Any]:
        return self._s3.list_artifacts(path)

    def _download_file(self, remote_file_path: str, local_path: str) -> None:
        self._s3._download_file(remote_file_path, local_path)

    def delete_artifacts(self, artifact_path: str | None = None) -> None:
        self._s3.delete_artifacts(artifact_path)
