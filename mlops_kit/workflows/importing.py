"""`mlops-kit import`: another MLflow's data into the kit's stack, keeping its ids.

The work is the ``mlflow-import`` job in the MLflow image (docker/mlflow/importer.py):
the kit's own MLflow stages the source (file store or SQLite) into a SQLite copy at its
schema, copies the artifacts into the store (sha256-checked, skipping what a previous
attempt already copied) and the rows into the kit's database in one transaction. This
module recognises the source, mounts it read-only, takes the stack's lock (no backup,
restore, gc or migration meanwhile) and turns the job's answer into a report.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

from mlops_kit.config.settings import _bucket as check_bucket_name
from mlops_kit.config.settings import _url as check_endpoint_url
from mlops_kit.engine.compose import ComposeProject
from mlops_kit.engine.jobs import json_answer, run_json_job
from mlops_kit.errors import ConfigError, ImportDataError
from mlops_kit.masking import register_secret
from mlops_kit.services.mlflow import IMPORT_JOB, MLFLOW, MLFLOW_UID
from mlops_kit.workflows.lifecycle import require_running
from mlops_kit.workflows.lock import backup_lock

__all__ = ["ImportReport", "ImportSource", "import_data", "recognise_source"]

SQLITE_HEADER = b"SQLite format 3\x00"
#: Where the job sees the source, its artifacts and its scratch folder.
SOURCE_MOUNT = "/import/source"
ARTIFACTS_MOUNT = "/import/artifacts"
WORK_MOUNT = "/import/work"
#: The scratch folder (the staged copy), under BACKUP_DIR: sized for copies of the data.
WORK_FOLDER = "import-work"
#: How the job reading another server's database gets its password (by environment, never
#: argv; not PGPASSWORD, which libpq would offer to any server).
SOURCE_PASSWORD_VARIABLE = "MLOPS_KIT_IMPORT_SOURCE_PASSWORD"
#: A SQLite source's copy in the scratch folder.
SQLITE_COPY = "source.db"
#: The source bucket's mirror in the scratch folder, and the file naming its bucket (the job's names).
BUCKET_MIRROR = "bucket"
BUCKET_MARKER = "bucket.source"
#: How the job that mirrors a source bucket gets its endpoint; its keys are boto3's own variables.
BUCKET_ENDPOINT_VARIABLE = "MLOPS_KIT_IMPORT_S3_ENDPOINT_URL"
BUCKET_KEY_VARIABLES = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
BUCKET_OPTIONAL_VARIABLES = ("AWS_SESSION_TOKEN", "AWS_REGION", "AWS_DEFAULT_REGION")
BUCKET_CA_MOUNT = "/import/bucket-ca.pem"


@dataclass(frozen=True)
class SourceBucket:
    """The S3 bucket holding the source's artifacts (``uri`` s3://bucket[/prefix]) and how to reach it.

    ``environment``: the AWS_* keys it is read with, passed to the job by name only.
    """

    uri: str
    endpoint_url: str | None = None
    ca_file: Path | None = None
    environment: dict[str, str] = field(default_factory=dict, repr=False)


@dataclass(frozen=True)
class ImportSource:
    """What to import: ``kind`` is "filestore", "sqlite" or "postgresql"; ``artifacts`` the folder its URIs point into.

    A file store or SQLite file has a ``path``; another server's database a ``url``
    (without its password, which is ``password``, kept out of argv, logs and reprs).
    """

    kind: str
    path: Path | None = None
    artifacts: Path | None = None
    url: str | None = None
    password: str | None = field(default=None, repr=False)
    bucket: SourceBucket | None = None

    def describe(self) -> str:
        what = {"filestore": "file store", "sqlite": "SQLite database", "postgresql": "PostgreSQL database"}[self.kind]
        artifacts = self.bucket.uri if self.bucket else self.artifacts
        return f"{what} {self.url or self.path}" + (f" (artifacts: {artifacts})" if artifacts else "")


def _database_source(source: str, artifacts: Path | None, password: str | None) -> ImportSource:
    """Another MLflow server's PostgreSQL database, from its URL (the password out of it)."""
    try:
        parts = urlsplit(source)
        port = parts.port
        user, host, in_url = parts.username, parts.hostname, parts.password
    except ValueError:
        # The text is not repeated: it may hold a password.
        raise ConfigError(
            "SOURCE: the database URL does not parse",
            hint="percent-encode / ? # @ : in the password (or put it in PGPASSWORD), as in "
            "postgresql://USER@HOST:PORT/DATABASE",
        ) from None
    query = parse_qsl(parts.query, keep_blank_values=True)
    in_query = [value for key, value in query if key == "password"]
    if not host or not parts.path.strip("/"):
        raise ConfigError(
            "SOURCE: a database URL needs a host and a database name",
            hint="give postgresql://USER@HOST[:PORT]/DATABASE (the password in PGPASSWORD)",
        )
    given = unquote(in_url) if in_url is not None else (in_query[0] if in_query else password)
    register_secret(given)
    user_part = f"{user}@" if user else ""
    netloc = f"{user_part}{f'[{host}]' if ':' in host else host}" + (f":{port}" if port else "")
    kept_query = urlencode([(key, value) for key, value in query if key != "password"])
    url = urlunsplit(("postgresql", netloc, parts.path, kept_query, ""))
    return ImportSource("postgresql", artifacts=artifacts, url=url, password=given)


def source_bucket(
    uri: str, *, endpoint_url: str | None, ca_file: str | None, environ: Mapping[str, str]
) -> SourceBucket:
    """The bucket ``--artifacts s3://BUCKET[/PREFIX]`` names, read with the AWS_* keys in ``environ``."""
    scheme, _, rest = uri.partition("://")
    if scheme.lower() != "s3":
        raise ConfigError(
            f"--artifacts {scheme}://... : artifacts can come from a folder or an s3:// bucket",
            hint="copy them to a folder first and give the folder",
        )
    bucket = rest.split("/", 1)[0]
    try:
        check_bucket_name(bucket)
    except ValueError as error:
        raise ConfigError(f"--artifacts: the bucket {bucket!r} {error}") from None
    try:
        endpoint = check_endpoint_url(endpoint_url or "") or None
    except ValueError as error:
        raise ConfigError(f"--artifacts-endpoint-url ({BUCKET_ENDPOINT_VARIABLE}) {error}") from None
    missing = [name for name in BUCKET_KEY_VARIABLES if not environ.get(name)]
    if missing:
        raise ConfigError(
            f"{' and '.join(missing)} not set: the source bucket is read with the keys in the environment",
            hint="export the bucket's AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (read-only keys are enough)",
        )
    ca_path = Path(ca_file).expanduser().absolute() if ca_file else None
    if ca_path is not None and not ca_path.is_file():
        raise ConfigError(f"--artifacts-ca-file {ca_path} is not a file", hint="give the PEM file of the endpoint's CA")
    names = (*BUCKET_KEY_VARIABLES, *BUCKET_OPTIONAL_VARIABLES)
    environment = {name: environ[name] for name in names if environ.get(name)}
    register_secret(environment.get("AWS_SECRET_ACCESS_KEY"))
    register_secret(environment.get("AWS_SESSION_TOKEN"))
    return SourceBucket(f"s3://{rest.rstrip('/')}", endpoint, ca_path, environment)


def recognise_source(
    source: str,
    artifacts: str | None = None,
    *,
    password: str | None = None,
    s3_endpoint_url: str | None = None,
    s3_ca_file: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> ImportSource:
    """The kind of ``source`` (a file store folder, a SQLite file or a PostgreSQL URL), or a ConfigError saying why not.

    ``password``: the database's, when its URL has none (the CLI passes PGPASSWORD).
    ``artifacts``: a folder, or an s3:// bucket read with the AWS_* keys in ``environ``
    at ``s3_endpoint_url`` (empty: AWS), trusting ``s3_ca_file`` besides the system's CAs.
    """
    scheme = source.split(":", 1)[0].lower() if "://" in source else ""
    if scheme and scheme.split("+")[0] not in ("postgresql", "postgres"):
        raise ConfigError(
            f"SOURCE {scheme}://... : only PostgreSQL databases can be imported from a server",
            hint="copy the database to SQLite first, or import the server's file store",
        )
    if artifacts and "://" in artifacts:
        environ = os.environ if environ is None else environ
        bucket = source_bucket(artifacts, endpoint_url=s3_endpoint_url, ca_file=s3_ca_file, environ=environ)
        found = recognise_source(source, None, password=password)
        return replace(found, bucket=bucket)
    artifacts_path = Path(artifacts).expanduser().absolute() if artifacts else None
    if artifacts_path is not None and ":" in str(artifacts_path):
        raise ConfigError(f"--artifacts {artifacts_path} has a ':' in its path, which Docker cannot mount")
    if artifacts_path is not None and not artifacts_path.is_dir():
        raise ConfigError(f"--artifacts {artifacts_path} is not a folder", hint="give the source's artifact root")
    if scheme:
        return _database_source(source, artifacts_path, password)
    path = Path(source).expanduser().absolute()
    if ":" in str(path):
        raise ConfigError(f"SOURCE {path} has a ':' in its path, which Docker cannot mount", hint="rename it")
    if not path.exists():
        raise ConfigError(f"SOURCE {path} does not exist", hint="give an mlruns/ folder or an MLflow SQLite file")
    if path.is_file():
        with path.open("rb") as handle:
            header = handle.read(len(SQLITE_HEADER))
        if header != SQLITE_HEADER:
            raise ConfigError(
                f"SOURCE {path} is neither a folder nor a SQLite database", hint="give mlruns/ or mlflow.db"
            )
        return ImportSource("sqlite", path=path, artifacts=artifacts_path)
    mlruns = path / "mlruns" if (path / "mlruns").is_dir() else path
    looks_like_a_store = any(
        child.is_dir() and (child.name.isdigit() or child.name in ("models", ".trash")) for child in mlruns.iterdir()
    )
    if not looks_like_a_store:
        raise ConfigError(
            f"SOURCE {path} holds no MLflow file store (no experiment folders, no mlruns/)",
            hint="give the folder `mlflow ui` or MLFLOW_TRACKING_URI=file:... wrote",
        )
    # A file store written through `mlflow server` keeps the files in the server's
    # --artifacts-destination (./mlartifacts by default): that is --artifacts here.
    return ImportSource("filestore", path=mlruns, artifacts=artifacts_path)


@dataclass(frozen=True)
class ImportReport:
    """What one import did (or, in a dry run, would do), from the job's answer."""

    dry_run: bool
    source: str
    #: Rows per table in the source (the plan) and imported (empty in a dry run).
    planned_rows: dict[str, int]
    rows: dict[str, int]
    artifact_files: int
    artifact_bytes: int
    copied_files: int = 0
    copied_bytes: int = 0
    already_there: int = 0
    new_experiment_ids: dict[str, int] = field(default_factory=dict)
    kept_uris: dict[str, int] = field(default_factory=dict)
    #: Server URIs (mlflow-artifacts:/) with no --artifacts folder to find their files in.
    unresolved_uris: int = 0
    #: Tables whose rows stayed behind: {"rows": n, "reason": why}.
    skipped: dict[str, dict[str, Any]] = field(default_factory=dict)
    seconds: float = 0.0
    #: The job's peak resident memory (0 in a dry run).
    peak_memory_mib: int = 0
    #: The source's artifact bucket: uri, objects, bytes (and, importing, fetched, fetched_bytes, already_there).
    bucket: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_answer(
        cls, answer: dict[str, Any], source: ImportSource, started: float, bucket: dict[str, Any] | None = None
    ) -> ImportReport:
        plan = answer.get("plan") or {}
        planned = plan.get("source") or {}
        artifacts = answer.get("artifacts") or {}
        return cls(
            dry_run=bool(answer.get("dry_run")),
            source=source.describe(),
            planned_rows={k: int(v) for k, v in (planned.get("rows") or {}).items()},
            rows={k: int(v) for k, v in (answer.get("rows") or {}).items()},
            artifact_files=int(planned.get("artifact_files", 0)),
            artifact_bytes=int(planned.get("artifact_bytes", 0)),
            copied_files=int(artifacts.get("files", 0)),
            copied_bytes=int(artifacts.get("bytes", 0)),
            already_there=int(artifacts.get("already_there", 0)),
            new_experiment_ids={str(k): int(v) for k, v in (plan.get("new_experiment_ids") or {}).items()},
            kept_uris={str(k): int(v) for k, v in (plan.get("kept_uris") or {}).items()},
            skipped={str(k): dict(v) for k, v in (plan.get("skipped") or {}).items()},
            unresolved_uris=int(plan.get("unresolved_uris") or 0),
            seconds=round(time.time() - started, 1),
            peak_memory_mib=int(answer.get("peak_memory_mib") or 0),
            bucket=dict(bucket or {}),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "dry_run": self.dry_run,
            "source": self.source,
            "planned_rows": self.planned_rows,
            "rows": self.rows,
            "artifacts": {
                "files": self.artifact_files,
                "bytes": self.artifact_bytes,
                "copied_files": self.copied_files,
                "copied_bytes": self.copied_bytes,
                "already_there": self.already_there,
            },
            "new_experiment_ids": self.new_experiment_ids,
            "kept_uris": self.kept_uris,
            "skipped": self.skipped,
            "unresolved_uris": self.unresolved_uris,
            "seconds": self.seconds,
            "peak_memory_mib": self.peak_memory_mib,
            "bucket": self.bucket,
        }


def _work_folder(project: ComposeProject) -> Path:
    """The job's scratch folder (BACKUP_DIR/import-work), private to the MLflow image's user."""
    work = project.config.backup_path / WORK_FOLDER
    work.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        os.chown(work, MLFLOW_UID, MLFLOW_UID)
    except PermissionError:
        raise ConfigError(
            f"cannot give {work} to the MLflow image's user (uid {MLFLOW_UID})",
            hint="run mlops-kit import as root (it runs Docker)",
        ) from None
    work.chmod(0o700)
    return work


def _copy_private(database: Path, copy: Path) -> None:
    """``database`` (and its write-ahead log, which the staging replays) into the scratch folder."""
    for suffix in ("", "-wal"):
        original = Path(f"{database}{suffix}")
        if original.exists():
            shutil.copyfile(original, f"{copy}{suffix}")
            os.chown(f"{copy}{suffix}", MLFLOW_UID, MLFLOW_UID)


def _plainly(failure: ImportDataError, source: ImportSource, work: Path) -> ImportDataError:
    """The job's complaint naming the host's paths, not the container's (and the fix for unreadable files)."""
    message = failure.message.replace(SOURCE_MOUNT, str(source.path or source.url))
    if source.artifacts is not None:
        message = message.replace(ARTIFACTS_MOUNT, str(source.artifacts))
    if source.bucket is not None:
        message = message.replace(f"{WORK_MOUNT}/{BUCKET_MIRROR}", f"(the copy of {source.bucket.uri})")
    message = message.replace(WORK_MOUNT, str(work))
    if "Permission denied" in message:
        return ImportDataError(
            message,
            hint=f"the import reads as the MLflow image's user (uid {MLFLOW_UID}): make the source readable "
            "to others (chmod -R o+rX) or import a copy",
        )
    return ImportDataError(message, hint=failure.hint)


def _stage_database(project: ComposeProject, source: ImportSource, work: Path, on_step: Callable[[str], None]) -> None:
    """Copy another server's PostgreSQL into ``work``/source.db (SQLite, at its own schema revision).

    In a container of the MLflow image outside the stack: the host's network (the URL means
    what it means on the host), the scratch folder and nothing else; none of the stack's
    secrets, so a hostile server can learn nothing of the kit. Its password comes by environment.
    """
    assert source.url is not None
    env = {SOURCE_PASSWORD_VARIABLE: source.password} if source.password else {}
    command = [IMPORT_JOB, "--stage-only", "--kind", "postgresql", "--source", source.url, "--work", WORK_MOUNT]
    try:
        _run_outside(project, command, [f"{work}:{WORK_MOUNT}"], env, "reading the source database", on_step)
    except ImportDataError as failure:
        raise _plainly(failure, source, work) from failure


def _run_outside(
    project: ComposeProject,
    command: list[str],
    mounts: list[str],
    env: dict[str, str],
    what: str,
    on_step: Callable[[str], None],
) -> dict[str, Any]:
    """The import job's answer, run in a container of the MLflow image outside the stack, on the host's network."""
    return json_answer(
        lambda on_line: project.run_image(
            project.config.mlflow_image,
            ["--", *command],
            entrypoint="tini",
            user=f"{MLFLOW_UID}:{MLFLOW_UID}",
            network="host",
            mounts=mounts,
            env=env,
            on_stderr_line=on_line,
        ),
        what=what,
        error=ImportDataError,
        on_progress=lambda m: on_step(f"Reading the source: {m}"),
    )


def _fetch_bucket(
    project: ComposeProject, bucket: SourceBucket, work: Path, on_step: Callable[[str], None], *, list_only: bool
) -> dict[str, Any]:
    """Mirror the source's artifact bucket into ``work``/bucket (``list_only``: count its objects).

    Like the database's reading: a container outside the stack on the host's network, holding
    only the bucket's keys (by environment) and the scratch folder. Objects already mirrored by
    an interrupted attempt are not fetched again.
    """
    env = dict(bucket.environment)
    mounts = [f"{work}:{WORK_MOUNT}"]
    if bucket.endpoint_url:
        env[BUCKET_ENDPOINT_VARIABLE] = bucket.endpoint_url
    if bucket.ca_file is not None:
        mounts.append(f"{bucket.ca_file}:{BUCKET_CA_MOUNT}:ro")
        env["AWS_CA_BUNDLE"] = BUCKET_CA_MOUNT
    command = [IMPORT_JOB, "--fetch-bucket", bucket.uri, "--work", WORK_MOUNT]
    command += ["--list-only"] if list_only else []
    answer = _run_outside(project, command, mounts, env, "reading the source bucket", on_step)
    return dict(answer.get("bucket") or {})


def _clear_work(work: Path, *, keep_mirror: bool) -> None:
    """Remove the scratch folder; ``keep_mirror``: all but a bucket's mirror, which a rerun goes on filling."""
    if not keep_mirror:
        shutil.rmtree(work, ignore_errors=True)
        return
    for child in work.iterdir() if work.is_dir() else ():
        if child.name not in (BUCKET_MIRROR, BUCKET_MARKER):
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child, ignore_errors=True)
            else:
                child.unlink(missing_ok=True)


def import_data(
    project: ComposeProject,
    source: ImportSource,
    *,
    dry_run: bool = False,
    merge: bool = False,
    on_step: Callable[[str], None] = lambda _s: None,
) -> ImportReport:
    """Import ``source`` into the running stack (``dry_run``: plan only, change nothing).

    Raises ImportDataError (the job's reason) when the stack holds data and not ``merge``,
    when ids collide, or when anything fails; the kit's database is then as it was.
    """
    config = project.config
    with backup_lock(config, "import (dry run)" if dry_run else "import"):
        started = time.time()
        on_step("Checking the stack")
        require_running(project)
        work = _work_folder(project)
        finished = False
        bucket: dict[str, Any] = {}
        try:
            mounts = [f"{work}:{WORK_MOUNT}"]
            kind = source.kind
            if source.kind == "postgresql":
                on_step(f"Reading {source.url}")
                _stage_database(project, source, work, on_step)
                kind, where = "sqlite", f"{WORK_MOUNT}/{SQLITE_COPY}"
            elif source.kind == "sqlite" and source.path:
                # Copied here (as whoever runs the kit) rather than mounted: the job's user could
                # not read a database in a private folder, and the staging needs a copy anyway.
                on_step(f"Copying {source.path}")
                _copy_private(source.path, work / SQLITE_COPY)
                where = f"{WORK_MOUNT}/{SQLITE_COPY}"
            else:
                mounts.append(f"{source.path}:{SOURCE_MOUNT}:ro")
                where = SOURCE_MOUNT
            command = [IMPORT_JOB, "--kind", kind, "--source", where, "--work", WORK_MOUNT, "--origin", source.kind]
            if source.bucket is not None:
                on_step(f"{'Listing' if dry_run else 'Copying'} {source.bucket.uri}")
                try:
                    bucket = _fetch_bucket(project, source.bucket, work, on_step, list_only=dry_run)
                except ImportDataError as failure:
                    raise _plainly(failure, source, work) from failure
                mirror = work / BUCKET_MIRROR
                mirror.mkdir(exist_ok=True)
                os.chown(mirror, MLFLOW_UID, MLFLOW_UID)
                command += ["--artifacts", f"{WORK_MOUNT}/{BUCKET_MIRROR}", "--artifacts-uri", source.bucket.uri]
            elif source.artifacts is not None:
                mounts.append(f"{source.artifacts}:{ARTIFACTS_MOUNT}:ro")
                command += ["--artifacts", ARTIFACTS_MOUNT]
            if dry_run:
                command.append("--dry-run")
            if merge:
                command.append("--merge")
            doing = "Planning" if dry_run else "Importing"
            on_step(f"{doing} {source.describe()}")
            try:
                answer = run_json_job(
                    project,
                    MLFLOW.name,
                    command,
                    what="the import",
                    error=ImportDataError,
                    mounts=mounts,
                    read_only=dry_run,
                    on_progress=lambda m: on_step(f"{doing}: {m}"),
                )
            except ImportDataError as failure:
                raise _plainly(failure, source, work) from failure
            finished = True
        finally:
            # The staged copy is only scratch (a rerun stages again); the store keeps what was
            # copied, and a bucket's mirror stays until an import of it finishes.
            _clear_work(work, keep_mirror=source.bucket is not None and not finished)
        return ImportReport.from_answer(answer, source, started, bucket)
