#!/opt/mlflow/bin/python
"""mlflow-import: bring another MLflow's data into the kit's, keeping its ids, as a one-shot job.

    mlflow-import --kind filestore|sqlite|postgresql --source PATH|URL [--artifacts DIR]
                  --work DIR [--dry-run] [--merge]

Runs in the MLflow image with the server's own settings (the backend store on the
PostgreSQL socket, MLFLOW_ARTIFACTS_DESTINATION) and ends with one JSON line: counts per
table, artifact files and bytes, what was kept as it was and why, and the time taken.

1. **Stage** the source, never touching it: a file store goes through MLflow's own
   converter (``mlflow migrate-filestore``: meta.yaml, metric histories, the registry,
   traces, logged models) into a SQLite copy in --work; a SQLite database is copied there;
   another server's PostgreSQL is read in one read-only snapshot into a SQLite copy that
   MLflow's migrations first brought to the source's own schema revision. Then MLflow's
   migrations bring the copy to this image's schema, the schema the kit's database has.
2. **Plan**: every artifact URI that points into the source's artifact root (file
   paths, ``mlflow-artifacts:/``) becomes ``mlflow-artifacts:/<the same relative path>``;
   any other URI (an S3 bucket, another server) is kept and reported. Experiment ids
   above PostgreSQL's integer range get new ids (the old one is kept as a tag).
3. **Artifacts** are copied into the store, each file checked by sha256. A file already
   there with the same bytes is not copied again: a rerun after an interruption goes on
   where it stopped.
4. **Rows** go into the kit's database in one transaction, table by table in foreign-key
   order, with the rewritten URIs; then the id sequences move past the imported ids. An
   interruption before the commit leaves the database as it was.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import posixpath
import shutil
import sqlite3
import stat
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlparse

SCHEME = "mlflow-artifacts:"
#: PostgreSQL's `integer`, the type of experiments.experiment_id.
MAX_EXPERIMENT_ID = 2**31 - 1
ORIGINAL_ID_TAG = "mlops-kit.import.original-experiment-id"
#: Columns that hold an artifact location (every table that has one of these names).
URI_COLUMNS = ("artifact_location", "artifact_uri", "source", "storage_location")
#: Tag tables whose values may hold an artifact location (trace artifacts, for one).
TAG_TABLES = ("tags", "trace_tags", "trace_request_metadata", "experiment_tags", "logged_model_tags")
#: Tables a fresh kit database already has rows in (MLflow's migrations seed them): they
#: do not make it "hold data", and a source row equal by key is already there.
SEEDED_TABLES = ("workspaces",)
#: Tables not carried over, and why; a table that refers to one of them stays behind with it.
GATEWAY = "AI gateway setup: its secrets are encrypted with the source server's key; set it up again in the kit"
SKIPPED_TABLES = {
    "webhooks": "their signing secrets are encrypted with the source server's key; create them again in the kit",
    "webhook_events": "the deliveries of webhooks, which are not carried over",
    "secrets": GATEWAY,
    "endpoints": GATEWAY,
    "model_definitions": GATEWAY,
    "budget_policies": GATEWAY,
    "jobs": "the source server's own job queue",
    "job_locks": "the source server's own job queue",
    "scheduler_leases": "the source server's own scheduler",
}
BATCH = 2000
#: A PostgreSQL source's copy (at its own schema revision) in the scratch folder, from --stage-only.
STAGED_SOURCE = "source.db"
#: The source database's password, from the kit (the environment, never argv).
SOURCE_PASSWORD_VARIABLE = "MLOPS_KIT_IMPORT_SOURCE_PASSWORD"
CHUNK = 1 << 20

logger = logging.getLogger("mlflow-import")


def progress(message: str) -> None:
    """A step for the person waiting (the kit shows ``progress:`` lines as they come)."""
    print(f"progress: {message}", file=sys.stderr, flush=True)


# ---- staging ----------------------------------------------------------------------------


def stage(kind: str, source: str, work: str) -> str:
    """A SQLite copy of the source at this image's MLflow schema; returns its URI."""
    os.makedirs(work, exist_ok=True)
    staged = os.path.join(work, "staged.db")
    for leftover in (staged, staged + "-wal", staged + "-shm"):
        if os.path.exists(leftover):
            os.unlink(leftover)
    uri = f"sqlite:///{staged}"
    if kind == "filestore":
        from pathlib import Path

        from mlflow.store.fs2db import migrate

        check_source_tree(source, "file store", links_out=True)
        progress("staging the file store with MLflow's converter")
        # MLflow 3 refuses to open a file store unless asked to (it is read here, once).
        os.environ["MLFLOW_ALLOW_FILE_STORE"] = "true"
        migrate(Path(source), uri, progress=False)
    else:
        progress("copying the SQLite database")
        # The file and its write-ahead log, if any (the copy replays it): a read-only
        # mount cannot hold the lock files SQLite needs to read the original in place.
        # A copy the kit made for this job is used up rather than copied again.
        place = os.replace if os.path.dirname(os.path.abspath(source)) == os.path.abspath(work) else shutil.copyfile
        place(source, staged)
        if os.path.exists(source + "-wal"):
            place(source + "-wal", staged + "-wal")
    import sqlalchemy as sa
    from mlflow.store.db.utils import _get_alembic_config, _upgrade_db, create_sqlalchemy_engine_with_retry

    engine = create_sqlalchemy_engine_with_retry(uri)
    try:
        if sa.inspect(engine).has_table("alembic_version"):
            require_known_revision(_get_alembic_config(uri), revision(engine))
        progress("bringing the copy to this MLflow's schema")
        _upgrade_db(engine)
    except sa.exc.DatabaseError as error:
        raise SourceError(f"the source is not an MLflow database this kit can read ({first_line(error)})") from None
    finally:
        engine.dispose()
    return uri


def check_source_tree(root: str, what: str, *, links_out: bool = False) -> None:
    """Refuse a source folder the job cannot read whole (and, ``links_out``, one with a link
    that leads outside it), before anything is read from it or written.

    MLflow's file-store converter skips a file it cannot read with a warning in the log and
    nothing in its result: a store with a ``meta.yaml`` only its owner may read would come in
    with that model or run missing. (MLflow's own client leaves such files: two of its
    threads rewriting one ``meta.yaml`` at once can restore each other's temporary 0600 mode.)
    The converter also reads params, tags and metrics through links: a crafted store could
    turn the job's own files (its password files) into tag values.
    """
    real_root = os.path.realpath(root)
    unreadable: dict[str, None] = {}  # in the order found, each once

    def cannot_list(error: OSError) -> None:
        unreadable[str(error.filename)] = None

    if not os.access(root, os.R_OK | os.X_OK):
        unreadable[root] = None
    for folder, dirs, files in os.walk(root, onerror=cannot_list):
        for name in dirs + files:
            path = os.path.join(folder, name)
            if os.path.islink(path):
                target = os.path.realpath(path)
                if links_out and target != real_root and not target.startswith(real_root.rstrip("/") + "/"):
                    raise SourceError(
                        f"{os.path.relpath(path, root)} in the {what} is a link to a place outside it: "
                        "import a copy of it without links (cp -rL into a new folder)"
                    )
                continue
            if not os.access(path, os.R_OK | (os.X_OK if name in dirs else 0)):
                unreadable[path] = None
    if unreadable:
        first = next(iter(unreadable))
        try:
            status = os.lstat(first)
            detail = f" (mode {stat.S_IMODE(status.st_mode):04o}, owner uid {status.st_uid})"
        except OSError:
            detail = ""
        shown = "the folder itself" if first == root else os.path.relpath(first, root)
        raise SourceError(
            f"{len(unreadable)} file(s) or folder(s) of the {what} cannot be read by the import (uid {os.getuid()}), "
            f"e.g. {shown}{detail}: make them readable (chmod -R a+rX on the folder, or import a copy made "
            "with cp -r) and run the import again; nothing was imported"
        )


def require_known_revision(config: Any, source_revision: str) -> None:
    """Refuse a source at a schema revision this MLflow does not know (a newer MLflow wrote it)."""
    from alembic.script import ScriptDirectory

    try:
        ScriptDirectory.from_config(config).get_revision(source_revision)
    except Exception:
        raise SourceError(
            f"the source database is at schema {source_revision}, which this kit's MLflow does not "
            "know (a newer MLflow wrote it): upgrade the kit first"
        ) from None


def first_line(error: BaseException) -> str:
    """The driver's own first line of a database error (never SQLAlchemy's [SQL: ...] and parameters)."""
    text = str(getattr(error, "orig", None) or error).strip()
    return text.splitlines()[0] if text else type(error).__name__


class SourceError(Exception):
    """The source cannot be imported as it is (the message says why and what to do)."""


def stage_postgres(source: str, staged_uri: str) -> None:
    """Another server's MLflow database into SQLite at the same schema revision, only reading it.

    The whole copy comes from one REPEATABLE READ, read-only transaction: a server still in
    use is copied as it was at one moment. The password comes in SOURCE_PASSWORD_VARIABLE,
    never argv (not PGPASSWORD: libpq would offer it to the kit's own database too).
    """
    import sqlalchemy as sa
    from alembic import command
    from mlflow.store.db.utils import _get_alembic_config
    from mlflow.store.tracking.dbmodels.initial_models import Base as InitialBase

    progress("reading the source database's schema revision")
    # The driver this image has (SQLAlchemy's default for postgresql:// may be another one).
    url = sa.engine.make_url(source).set(drivername="postgresql+psycopg2")
    if os.environ.get(SOURCE_PASSWORD_VARIABLE):
        url = url.set(password=os.environ[SOURCE_PASSWORD_VARIABLE])
    reader = sa.create_engine(
        url,
        connect_args={
            # No password file: libpq must never offer any other password to this server.
            "passfile": "/dev/null",
            "connect_timeout": 30,
            # A server that goes silent is noticed, and a lock held over there is not waited on forever.
            "keepalives": 1,
            "keepalives_idle": 30,
            "keepalives_interval": 10,
            "keepalives_count": 3,
            "options": "-c default_transaction_read_only=on -c lock_timeout=60s",
        },
        poolclass=sa.pool.NullPool,
    )
    writer = sa.create_engine(staged_uri)
    try:
        try:
            connection = reader.connect()
        except sa.exc.DBAPIError as error:
            raise SourceError(f"cannot read the source database: {first_line(error)}") from None
        with connection.execution_options(isolation_level="REPEATABLE READ") as read:
            read.execute(sa.text("SET TRANSACTION READ ONLY"))
            if not sa.inspect(read).has_table("alembic_version"):
                raise SourceError("the source database has no MLflow schema (no alembic_version table)")
            source_revision = str(read.execute(sa.text("SELECT version_num FROM alembic_version")).scalar())
            config = _get_alembic_config(staged_uri)
            require_known_revision(config, source_revision)
            progress(f"creating a copy at the source's schema {source_revision}")
            InitialBase.metadata.create_all(writer)
            with writer.begin() as connection:
                config.attributes["connection"] = connection
                command.upgrade(config, source_revision)
            staged_meta = sa.MetaData()
            staged_meta.reflect(writer)
            source_meta = sa.MetaData()
            source_meta.reflect(read)
            with writer.begin() as out:
                for table in staged_meta.sorted_tables:
                    theirs = source_meta.tables.get(table.name)
                    if theirs is None or table.name == "alembic_version":
                        continue
                    columns = [
                        c.name
                        for c in table.columns
                        if c.name in theirs.columns and c.computed is None and theirs.c[c.name].computed is None
                    ]
                    # What the migrations seeded (the default workspace) is the source's to say.
                    out.execute(table.delete())
                    rows = read.execution_options(stream_results=True, yield_per=BATCH).execute(
                        sa.select(*[theirs.c[c] for c in columns])
                    )
                    n = 0
                    for batch in rows.partitions(BATCH):
                        out.execute(table.insert(), [dict(zip(columns, row, strict=True)) for row in batch])
                        n += len(batch)
                    if n:
                        progress(f"source: {table.name} {n}")
    finally:
        reader.dispose()
        writer.dispose()


# ---- where artifacts go -----------------------------------------------------------------


def uri_path(uri: str) -> str | None:
    """The local path a file URI or a plain path names (None: not a local location)."""
    if uri.startswith("file:"):
        return unquote(urlparse(uri).path)
    if "://" in uri or uri.startswith(SCHEME) or not uri.startswith("/"):
        return None
    return os.path.normpath(uri)


@dataclass
class Mapping:
    """The source's artifact roots (as its URIs name them) and where their files are here."""

    #: Old root path (as in the source's URIs) -> folder in this container holding its files.
    roots: dict[str, str] = field(default_factory=dict)
    #: The folder that ``mlflow-artifacts:/`` URIs of the source resolve to (None: not given).
    served_root: str | None = None
    kept: dict[str, int] = field(default_factory=dict)
    #: ``mlflow-artifacts:/`` URIs seen without a folder to find their files in.
    unresolved: int = 0
    #: Old root URI (s3://bucket/prefix) -> folder in this container holding a copy of its objects.
    uris: dict[str, str] = field(default_factory=dict)

    def rewrite(self, uri: str | None) -> tuple[str | None, str | None]:
        """(the URI in the kit, the local file or folder holding its bytes) for a source URI.

        A URI whose path climbs out of its root (``..``, or a symlink in the source that
        points elsewhere) is kept as it is and nothing is read for it: a hostile source must
        not copy the job's own files (its secrets) into the store.
        """
        if not uri:
            return uri, None
        if uri.startswith(SCHEME):
            rest = uri[len(SCHEME) :]
            if rest.startswith("//"):  # mlflow-artifacts://host:port/path
                rest = rest[2:].partition("/")[2]
            relative = inside(rest)
            if relative is None:
                return self.keep(uri, LEAVES_ROOT)
            if not self.served_root:
                self.unresolved += 1
                return f"{SCHEME}/{relative}", None
            return f"{SCHEME}/{relative}", within(self.served_root, relative)
        for old, root in self.uris.items():
            if uri == old or uri.startswith(old + "/"):
                relative = inside(uri[len(old) :])
                local = within(root, relative) if relative is not None else None
                if relative is None or local is None:
                    return self.keep(uri, LEAVES_ROOT)
                return f"{SCHEME}/{relative}", local
        path = uri_path(uri)
        if path is not None:
            for old in sorted(self.roots, key=len, reverse=True):
                if path == old or path.startswith(old.rstrip("/") + "/"):
                    relative = inside(path[len(old) :])
                    local = within(self.roots[old], relative) if relative is not None else None
                    if relative is None or local is None:
                        return self.keep(uri, LEAVES_ROOT)
                    return f"{SCHEME}/{relative}", local
        scheme = urlparse(uri).scheme
        if scheme in REFERENCES or (not scheme and not uri.startswith("/")):
            # MLflow's own references (models:/, runs:/, prompts:/) resolve in the kit as they
            # did (the ids are kept); a value that names no place (a prompt's) is no location.
            return uri, None
        return self.keep(uri, scheme or "a path outside the source")

    def keep(self, uri: str, why: str) -> tuple[str, None]:
        self.kept[why] = self.kept.get(why, 0) + 1
        return uri, None


LEAVES_ROOT = "a path that leaves the artifact root"
#: URI schemes that name MLflow objects, not places: kept as they are, and not reported.
REFERENCES = ("models", "runs", "prompts")


def inside(relative: str) -> str | None:
    """``relative`` without `.` and `..` (None when it climbs out of where it starts)."""
    clean = posixpath.normpath(relative.strip("/") or ".")
    if clean == ".." or clean.startswith("../"):
        return None
    return "" if clean == "." else clean


def within(root: str, relative: str) -> str | None:
    """The local path of ``relative`` under ``root``, or None when a symlink takes it elsewhere."""
    local = os.path.join(root, relative) if relative else root
    real, real_root = os.path.realpath(local), os.path.realpath(root)
    if real != real_root and not real.startswith(real_root.rstrip("/") + "/"):
        return None
    return local


def find_roots(
    db: sqlite3.Connection, source_root: str | None, served_root: str | None, mirrored_uri: str | None = None
) -> Mapping:
    """The source's artifact roots: each experiment's location minus its id (MLflow's layout).

    ``mirrored_uri``: the bucket (s3://bucket/prefix) whose objects ``served_root`` holds.
    """
    mapping = Mapping(served_root=served_root)
    if mirrored_uri and served_root:
        mapping.uris[mirrored_uri.rstrip("/")] = served_root
    if source_root is None:
        return mapping
    for experiment_id, location in db.execute("SELECT experiment_id, artifact_location FROM experiments"):
        path = uri_path(location or "")
        if path is None:
            continue
        head, _, tail = path.rstrip("/").rpartition("/")
        if tail == str(experiment_id) and os.path.isdir(os.path.join(source_root, tail)):
            mapping.roots[head or "/"] = source_root
    return mapping


# ---- the artifact store -----------------------------------------------------------------


def sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass
class Copied:
    files: int = 0
    bytes: int = 0
    already_there: int = 0


class LocalStore:
    """The artifacts volume (or NFS export) mounted at MLFLOW_ARTIFACTS_DESTINATION."""

    def __init__(self, root: str) -> None:
        self.root = os.path.realpath(root)

    def target(self, relative: str) -> str:
        full = os.path.realpath(os.path.join(self.root, relative))
        if full != self.root and not full.startswith(self.root + "/"):
            raise SourceError(f"the artifact path {relative} leaves the kit's store: nothing was copied there")
        return full

    def differs(self, local: str, relative: str) -> bool:
        """The store has something else at ``relative`` (another size, or not a file)."""
        target = self.target(relative)
        if not os.path.lexists(target):
            return False
        return not os.path.isfile(target) or os.path.getsize(target) != os.path.getsize(local)

    def copy(self, local: str, relative: str, copied: Copied) -> None:
        """Copy one file (checked by sha256); a file already there with the same bytes stays.

        A file already there with other bytes is the kit's own: never overwritten."""
        target = self.target(relative)
        if os.path.lexists(target):
            if self.differs(local, relative) or sha256(target) != sha256(local):
                raise SourceError(f"the kit's store already has {relative} with other bytes: nothing was overwritten")
            copied.already_there += 1
            return
        os.makedirs(os.path.dirname(target), exist_ok=True)
        partial = target + ".mlops-kit-import"
        # The source's digest is taken from the bytes copied (one read), the copy's from disk.
        digest = hashlib.sha256()
        with open(local, "rb") as reader, open(partial, "wb") as writer:
            while chunk := reader.read(CHUNK):
                digest.update(chunk)
                writer.write(chunk)
        if sha256(partial) != digest.hexdigest():
            os.unlink(partial)
            raise OSError(f"{relative}: the copy's sha256 differs from the source's")
        os.replace(partial, target)
        copied.files += 1
        copied.bytes += os.path.getsize(target)


def walk(local: str) -> Iterator[tuple[str, str]]:
    """(file, path relative to ``local``) for every regular file under ``local`` (or ``local`` itself)."""
    if os.path.isfile(local):
        yield local, ""
        return
    for folder, dirs, files in os.walk(local):
        dirs.sort()
        for name in sorted(files):
            path = os.path.join(folder, name)
            if os.path.isfile(path) and not os.path.islink(path):
                yield path, os.path.relpath(path, local)


def artifact_uris(db: sqlite3.Connection, *, with_experiments: bool = False) -> Iterator[str]:
    """Every artifact location the source's runs, logged models, traces and model versions name."""
    queries = [
        "SELECT artifact_uri FROM runs",
        "SELECT artifact_location FROM logged_models",
        "SELECT value FROM trace_tags WHERE key = 'mlflow.artifactLocation'",
        "SELECT source FROM model_versions",
        "SELECT storage_location FROM model_versions",
    ]
    if with_experiments:
        queries.insert(0, "SELECT artifact_location FROM experiments")
    for query in queries:
        try:
            rows = db.execute(query).fetchall()
        except sqlite3.OperationalError:  # a table this schema does not have
            continue
        yield from (row[0] for row in rows if isinstance(row[0], str) and row[0])


def artifact_clashes(store: LocalStore | BucketStore, folders: dict[str, str]) -> list[str]:
    """Files the kit already has at an imported file's place with another size (--merge refuses)."""
    found: list[str] = []
    for relative, local in folders.items():
        for path, inner in walk(local):
            name = f"{relative}/{inner}" if inner else relative
            if store.differs(path, name):
                found.append(f"artifact {name}")
                if len(found) >= 20:
                    return found
    return found


def artifact_folders(db: sqlite3.Connection, mapping: Mapping) -> dict[str, str]:
    """Every folder (or file) of the source holding artifacts, by its path in the kit's store.

    Only what runs, logged models, traces and model versions name: a file store's own
    bookkeeping (meta.yaml, metric histories) stays behind."""
    found: dict[str, str] = {}
    for uri in artifact_uris(db):
        new, local = mapping.rewrite(uri)
        if local and new and os.path.exists(local):
            found[new[len(SCHEME) :].strip("/")] = local
    # A folder inside another one is copied with it.
    kept: dict[str, str] = {}
    for relative in sorted(found):
        if not any(relative == k or relative.startswith(k + "/") for k in kept):
            kept[relative] = found[relative]
    return kept


def plan_artifacts(folders: dict[str, str]) -> tuple[int, int]:
    files = size = 0
    for local in folders.values():
        for path, _ in walk(local):
            files += 1
            size += os.path.getsize(path)
    return files, size


def copy_artifacts(
    store: LocalStore | BucketStore, folders: dict[str, str], total_files: int, total_bytes: int
) -> Copied:
    copied = Copied()
    done = done_bytes = 0
    shown = time.monotonic()
    for relative, local in folders.items():
        for path, inner in walk(local):
            store.copy(path, f"{relative}/{inner}" if inner else relative, copied)
            done += 1
            done_bytes += os.path.getsize(path)
            if time.monotonic() - shown > 1 or done == total_files:
                shown = time.monotonic()
                progress(f"artifacts: {done}/{total_files} files, {done_bytes >> 20}/{total_bytes >> 20} MiB")
    return copied


class BucketStore:
    """The bucket (s3, minio modes), through the S3 client MLflow's own repository builds.

    Each object carries the sha256 of its bytes as metadata; the copy is read back and
    compared before it counts. An object already there with the same size and sha256 stays.
    """

    def __init__(self, destination: str) -> None:
        from mlflow.store.artifact.s3_artifact_repo import S3ArtifactRepository

        uri = "s3://" + destination.split("://", 1)[1]
        repository = S3ArtifactRepository(uri)
        self.client = repository._get_s3_client()
        self.bucket, prefix = repository.parse_s3_compliant_uri(uri)
        self.prefix = prefix.strip("/")

    def key(self, relative: str) -> str:
        clean = inside(relative)
        if clean is None:
            raise SourceError(f"the artifact path {relative} leaves the kit's store: nothing was copied there")
        return "/".join(p for p in (self.prefix, clean) if p)

    def differs(self, local: str, relative: str) -> bool:
        head = self._existing(self.key(relative))
        return head is not None and int(head.get("ContentLength", -1)) != os.path.getsize(local)

    def _object_sha256(self, key: str) -> str:
        digest = hashlib.sha256()
        body = self.client.get_object(Bucket=self.bucket, Key=key)["Body"]
        while chunk := body.read(CHUNK):
            digest.update(chunk)
        return digest.hexdigest()

    def _existing(self, key: str) -> dict[str, Any] | None:
        try:
            return dict(self.client.head_object(Bucket=self.bucket, Key=key))
        except Exception as error:  # botocore's ClientError: 404 means no such object
            if getattr(error, "response", {}).get("Error", {}).get("Code") not in ("404", "NoSuchKey", "NotFound"):
                raise
            return None

    def copy(self, local: str, relative: str, copied: Copied) -> None:
        key = self.key(relative)
        size = os.path.getsize(local)
        digest = sha256(local)
        head = self._existing(key)
        if head is not None:
            same = (
                int(head.get("ContentLength", -1)) == size
                and (head.get("Metadata", {}).get("sha256") or self._object_sha256(key)) == digest
            )
            if not same:
                raise SourceError(f"the kit's bucket already has {relative} with other bytes: nothing was overwritten")
            copied.already_there += 1
            return
        self.client.upload_file(local, self.bucket, key, ExtraArgs={"Metadata": {"sha256": digest}})
        if self._object_sha256(key) != digest:
            self.client.delete_object(Bucket=self.bucket, Key=key)
            raise OSError(f"{relative}: the bucket's copy has another sha256 than the source's")
        copied.files += 1
        copied.bytes += size


# ---- the rows ---------------------------------------------------------------------------


def new_experiment_ids(db: sqlite3.Connection, target_max: int) -> dict[int, int]:
    """New ids for source experiments whose ids PostgreSQL's integer cannot hold."""
    ids = [row[0] for row in db.execute("SELECT experiment_id FROM experiments ORDER BY experiment_id")]
    fitting = [i for i in ids if i <= MAX_EXPERIMENT_ID]
    following = max([target_max, *fitting, 0]) + 1
    mapping: dict[int, int] = {}
    for old in ids:
        if old > MAX_EXPERIMENT_ID:
            mapping[old] = following
            following += 1
    return mapping


@dataclass
class Target:
    """The kit's database (PostgreSQL), reflected."""

    engine: Any
    metadata: Any

    @classmethod
    def connect(cls, uri: str) -> Target:
        import sqlalchemy as sa

        engine = sa.create_engine(uri)
        metadata = sa.MetaData()
        metadata.reflect(engine)
        return cls(engine, metadata)

    def tables(self) -> list[Any]:
        return [t for t in self.metadata.sorted_tables if t.name != "alembic_version"]


def skipped_tables(target: Target) -> dict[str, str]:
    """Tables whose rows stay behind, with the reason (SKIPPED_TABLES and what refers to them)."""
    reasons = {name: why for name, why in SKIPPED_TABLES.items() if name in target.metadata.tables}
    changed = True
    while changed:
        changed = False
        for table in target.tables():
            if table.name in reasons:
                continue
            behind = sorted({fk.column.table.name for fk in table.foreign_keys} & reasons.keys())
            if behind:
                reasons[table.name] = reasons[behind[0]]
                changed = True
    return reasons


def source_has_default(db: sqlite3.Connection) -> bool:
    return db.execute("SELECT 1 FROM experiments WHERE experiment_id = 0").fetchone() is not None


def target_has_default(target: Target) -> bool:
    import sqlalchemy as sa

    with target.engine.connect() as conn:
        return conn.execute(sa.text("SELECT 1 FROM experiments WHERE experiment_id = 0")).first() is not None


def revision(engine: Any) -> str:
    import sqlalchemy as sa

    with engine.connect() as conn:
        return str(conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar())


def target_state(target: Target) -> tuple[dict[str, int], bool]:
    """Row counts of the kit's tables, and whether it holds nothing but the untouched Default experiment."""
    import sqlalchemy as sa

    counts: dict[str, int] = {}
    with target.engine.connect() as conn:
        for table in target.tables():
            counts[table.name] = int(conn.execute(sa.select(sa.func.count()).select_from(table)).scalar() or 0)
        default_only = (
            counts.get("experiments", 0) <= 1
            and not conn.execute(sa.text("SELECT 1 FROM experiments WHERE experiment_id <> 0")).first()
        )
    busy = [name for name, n in counts.items() if n and name not in ("experiments", "experiment_tags", *SEEDED_TABLES)]
    return counts, default_only and not busy


OURS_EXPERIMENTS = "SELECT experiment_id FROM experiments WHERE experiment_id <> 0"


def collisions(db: sqlite3.Connection, target: Target, join_default: bool = False) -> list[str]:
    """Ids and names the source and the kit both use (--merge refuses on any).

    ``join_default``: the source's Default experiment joins the kit's, so its datasets and
    scorers must not share their keys with the kit's there."""
    import sqlalchemy as sa

    checks = [
        (
            "experiment id",
            "SELECT experiment_id FROM experiments WHERE experiment_id <> 0",
            "experiments",
            "experiment_id",
        ),
        ("experiment name", "SELECT name FROM experiments WHERE experiment_id <> 0", "experiments", "name"),
        ("run id", "SELECT run_uuid FROM runs", "runs", "run_uuid"),
        ("registered model", "SELECT name FROM registered_models", "registered_models", "name"),
        ("logged model id", "SELECT model_id FROM logged_models", "logged_models", "model_id"),
        ("trace id", "SELECT request_id FROM trace_info", "trace_info", "request_id"),
    ]
    found: list[str] = []
    with target.engine.connect() as conn:
        for what, query, table, column in checks:
            try:
                ours = {row[0] for row in db.execute(query)}
            except sqlite3.OperationalError:
                continue
            if not ours or table not in target.metadata.tables:
                continue
            theirs = target.metadata.tables[table]
            listed = sorted(ours, key=str)
            clash: list[Any] = []
            # Every id is checked, in chunks a query can hold; the answer lists the first 20 of each kind.
            for start in range(0, len(listed), 10000):
                chunk = listed[start : start + 10000]
                clash.extend(conn.execute(sa.select(theirs.c[column]).where(theirs.c[column].in_(chunk))).all())
            found.extend(f"{what} {row[0]}" for row in clash[:20])
        if join_default:
            found.extend(default_clashes(db, conn))
    return found


def default_clashes(db: sqlite3.Connection, conn: Any) -> list[str]:
    """Datasets and scorers of both Default experiments with the same key (they would collide on joining)."""
    import sqlalchemy as sa

    checks = (
        ("dataset", "datasets", ("name", "digest")),
        ("scorer", "scorers", ("scorer_name",)),
    )
    found: list[str] = []
    for what, table, columns in checks:
        listed = ", ".join(columns)
        query = f"SELECT {listed} FROM {table} WHERE experiment_id = 0"
        try:
            ours = db.execute(query).fetchall()
        except sqlite3.OperationalError:  # not in this schema (nor, at the same revision, in the kit's)
            continue
        theirs = {tuple(row) for row in conn.execute(sa.text(query))} if ours else set()
        found.extend(f"{what} {'/'.join(map(str, row))} in Default" for row in ours if tuple(row) in theirs)
    return found[:20]


def source_counts(db: sqlite3.Connection, target: Target) -> dict[str, int]:
    names = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    return {
        t.name: int(db.execute(f'SELECT count(*) FROM "{t.name}"').fetchone()[0])
        for t in target.tables()
        if t.name in names
    }


#: A prompt's tag listing the experiments it is linked to (",id,id,"): ids that changed follow.
LINKED_EXPERIMENTS_TAG = "_mlflow_experiment_ids"


def renumber_listed(value: Any, experiment_ids: dict[int, int]) -> Any:
    """``value`` (",1,2,") with each renumbered experiment id replaced by its new one."""
    if not isinstance(value, str) or not experiment_ids:
        return value
    parts = value.split(",")
    return ",".join(str(experiment_ids.get(int(p), p)) if p.isdigit() else p for p in parts)


def insert_rows(out: Any, insert: Any, table: str, batch: list[dict[str, Any]]) -> None:
    import sqlalchemy as sa

    try:
        out.execute(insert, batch)
    except sa.exc.IntegrityError as error:
        why = first_line(error)
        raise SourceError(f"the source's {table} clash with the kit's ({why}): no row was imported") from None
    except sa.exc.DBAPIError as error:
        why = first_line(error)
        raise SourceError(f"the kit's database refused the source's {table} ({why}): no row was imported") from None


def copy_rows(
    staged_uri: str,
    target: Target,
    mapping: Mapping,
    experiment_ids: dict[int, int],
    replace_default: bool,
    skipped: dict[str, str],
    join_default: bool = False,
) -> dict[str, int]:
    """Every row of the staged copy into the kit's database, in one transaction.

    ``replace_default``: the kit's empty Default experiment gives way to the source's.
    ``join_default`` (a merge): the source's Default runs join the kit's Default experiment.
    """
    import sqlalchemy as sa

    source = sa.create_engine(staged_uri)
    source_meta = sa.MetaData()
    source_meta.reflect(source)
    copied: dict[str, int] = {}
    with target.engine.begin() as out, source.connect() as into:
        if replace_default:
            # The kit's own Default experiment (id 0, empty) gives way to the source's.
            out.execute(sa.text("DELETE FROM experiment_tags WHERE experiment_id = 0"))
            out.execute(sa.text("DELETE FROM experiments WHERE experiment_id = 0"))
        for table in target.tables():
            read = source_meta.tables.get(table.name)
            if read is None or table.name in skipped:
                continue
            # Generated columns (spans.duration_ns) are PostgreSQL's to compute.
            columns = [c.name for c in table.columns if c.name in read.columns and c.computed is None]
            uri_columns = [c for c in columns if c in URI_COLUMNS]
            rewrite_values = table.name in TAG_TABLES and "value" in columns
            n = 0
            batch: list[dict[str, Any]] = []
            insert = table.insert()
            if table.name in SEEDED_TABLES:
                from sqlalchemy.dialects.postgresql import insert as pg_insert

                insert = pg_insert(table).on_conflict_do_nothing()
            result = into.execution_options(stream_results=True).execute(sa.select(*[read.c[c] for c in columns]))
            for row in result:
                record = dict(zip(columns, row, strict=True))
                if join_default and table.name in ("experiments", "experiment_tags") and record["experiment_id"] == 0:
                    continue
                if "experiment_id" in record and record["experiment_id"] is not None:
                    old = int(record["experiment_id"])
                    record["experiment_id"] = experiment_ids.get(old, old)
                for column in uri_columns:
                    # Only text: evaluation_dataset_records.source is a JSON document, not a location.
                    if isinstance(record[column], str):
                        record[column] = mapping.rewrite(record[column])[0]
                if rewrite_values and isinstance(record["value"], str) and "/" in record["value"]:
                    new, local = mapping.rewrite(record["value"])
                    if local is not None or record["value"].startswith(SCHEME):
                        record["value"] = new
                if table.name == "registered_model_tags" and record.get("key") == LINKED_EXPERIMENTS_TAG:
                    record["value"] = renumber_listed(record["value"], experiment_ids)
                batch.append(record)
                if len(batch) >= BATCH:
                    insert_rows(out, insert, table.name, batch)
                    n += len(batch)
                    batch = []
                    if n % 100_000 == 0:
                        progress(f"rows: {table.name} {n}")
            if batch:
                insert_rows(out, insert, table.name, batch)
                n += len(batch)
            if n:
                copied[table.name] = n
                progress(f"rows: {table.name} {n}")
        for old, new in experiment_ids.items():
            out.execute(
                sa.text("INSERT INTO experiment_tags (key, value, experiment_id) VALUES (:k, :v, :e)"),
                {"k": ORIGINAL_ID_TAG, "v": str(old), "e": new},
            )
        # The id sequences move past what came in (the next experiment the kit creates).
        for table_name, column in out.execute(
            sa.text(
                "SELECT table_name, column_name FROM information_schema.columns "
                "WHERE table_schema = current_schema() AND (column_default LIKE 'nextval(%' OR is_identity = 'YES')"
            )
        ).all():
            out.execute(
                sa.text(
                    f'SELECT setval(pg_get_serial_sequence(:t, :c), MAX("{column}")) FROM "{table_name}" '
                    f'HAVING MAX("{column}") >= 1'
                ),
                {"t": table_name, "c": column},
            )
    source.dispose()
    return copied


# ---- a source bucket --------------------------------------------------------------------

#: The source bucket's endpoint and CA file (the keys are boto3's own AWS_* variables).
BUCKET_ENDPOINT_VARIABLE = "MLOPS_KIT_IMPORT_S3_ENDPOINT_URL"
BUCKET_MIRROR = "bucket"
#: Which bucket the mirror holds: a mirror of another one is started again.
BUCKET_MARKER = "bucket.source"
FETCH_THREADS = 8


def split_bucket_uri(uri: str) -> tuple[str, str]:
    """(bucket, key prefix without slashes) of ``s3://bucket[/prefix]``."""
    rest = uri.split("://", 1)[1]
    bucket, _, prefix = rest.partition("/")
    return bucket, prefix.strip("/")


def bucket_client() -> Any:
    import boto3
    from botocore.config import Config

    endpoint = os.environ.get(BUCKET_ENDPOINT_VARIABLE) or None
    # On-prem S3 servers want path addressing; AWS itself picks what fits.
    style = "path" if endpoint else "auto"
    config = Config(s3={"addressing_style": style}, retries={"max_attempts": 5, "mode": "standard"})
    return boto3.client("s3", endpoint_url=endpoint, config=config)


def bucket_objects(client: Any, bucket: str, prefix: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """(path below the prefix, the listing's entry) of every object under ``prefix``.

    Folder markers (keys ending in /) are no files; a key that climbs out (``..``) is refused.
    """
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=f"{prefix}/" if prefix else "")
    for page in pages:
        for entry in page.get("Contents", []):
            key = entry["Key"]
            if key.endswith("/"):
                continue
            relative = inside(key[len(prefix) + 1 :] if prefix else key)
            if not relative:
                raise SourceError(f"the object {key} names a path outside the bucket's prefix: nothing was imported")
            yield relative, entry


def plain_md5(entry: dict[str, Any]) -> str | None:
    """The MD5 an object's ETag is, when it is one (not a multipart upload's, not an encrypted object's)."""
    etag = str(entry.get("ETag", "")).strip('"')
    return etag if len(etag) == 32 and all(c in "0123456789abcdef" for c in etag) else None


def read_text(path: str) -> str:
    with open(path) as handle:
        return handle.read()


def fetch_one(client: Any, bucket: str, entry: dict[str, Any], local: str, parts: str) -> None:
    """One object into ``local``: fetched into ``parts`` (outside the mirror: a file cut short
    must never be imported), moved in once its size and MD5 check out."""
    import tempfile

    os.makedirs(os.path.dirname(local), exist_ok=True)
    handle, partial = tempfile.mkstemp(dir=parts)
    os.close(handle)
    client.download_file(bucket, entry["Key"], partial)
    if os.path.getsize(partial) != entry["Size"]:
        raise SourceError(f"{entry['Key']}: {os.path.getsize(partial)} bytes came, the listing said {entry['Size']}")
    expected = plain_md5(entry)
    if expected is not None:
        digest = hashlib.md5(usedforsecurity=False)
        with open(partial, "rb") as handle:
            while chunk := handle.read(CHUNK):
                digest.update(chunk)
        if digest.hexdigest() != expected:
            raise SourceError(f"{entry['Key']}: the bytes that came do not match the object's MD5 (ETag)")
    os.replace(partial, local)


def fetch_bucket(uri: str, work: str, *, list_only: bool) -> dict[str, Any]:
    """Mirror the source's artifact bucket ``uri`` into ``work``/bucket (``list_only``: count it).

    An object already in the mirror with its size is not fetched again, so a rerun after an
    interruption goes on where it stopped; the import then reads the mirror like a folder.
    """
    from concurrent.futures import ThreadPoolExecutor

    from botocore.exceptions import BotoCoreError, ClientError

    bucket, prefix = split_bucket_uri(uri)
    client = bucket_client()
    mirror = os.path.join(work, BUCKET_MIRROR)
    marker = os.path.join(work, BUCKET_MARKER)
    try:
        progress(f"listing {uri}")
        objects = size = missing = 0
        for relative, entry in bucket_objects(client, bucket, prefix):
            objects += 1
            size += entry["Size"]
            local = os.path.join(mirror, relative)
            if not (os.path.isfile(local) and os.path.getsize(local) == entry["Size"]):
                missing += entry["Size"]
        answer: dict[str, Any] = {"uri": uri, "objects": objects, "bytes": size}
        if list_only:
            return answer
        if os.path.exists(marker) and read_text(marker) != uri:
            shutil.rmtree(mirror, ignore_errors=True)
            missing = size
        free = shutil.disk_usage(work).free
        if missing > free:
            raise SourceError(
                f"{work} has {free >> 20} MiB free and the bucket's files need {missing >> 20} MiB there: "
                "free space or point MLOPS_KIT_BACKUP_DIR at a larger disk"
            )
        os.makedirs(mirror, exist_ok=True)
        parts = os.path.join(work, "bucket.parts")
        shutil.rmtree(parts, ignore_errors=True)
        os.makedirs(parts)
        with open(marker, "w") as handle:
            handle.write(uri)
        fetched = fetched_bytes = already = 0
        shown = time.monotonic()
        with ThreadPoolExecutor(FETCH_THREADS) as pool:
            pending = []
            for relative, entry in bucket_objects(client, bucket, prefix):
                local = os.path.join(mirror, relative)
                if os.path.isfile(local) and os.path.getsize(local) == entry["Size"]:
                    already += 1
                    continue
                pending.append((pool.submit(fetch_one, client, bucket, entry, local, parts), entry["Size"]))
                # A bounded window: a listing of millions of keys is never all in memory.
                if len(pending) >= FETCH_THREADS * 4:
                    future, entry_size = pending.pop(0)
                    future.result()
                    fetched, fetched_bytes = fetched + 1, fetched_bytes + entry_size
                if time.monotonic() - shown > 1:
                    shown = time.monotonic()
                    progress(f"bucket: {fetched + already}/{objects} objects, {fetched_bytes >> 20} MiB fetched")
            for future, entry_size in pending:
                future.result()
                fetched, fetched_bytes = fetched + 1, fetched_bytes + entry_size
        shutil.rmtree(parts, ignore_errors=True)
        progress(f"bucket: {objects}/{objects} objects, {fetched_bytes >> 20} MiB fetched")
        return {**answer, "fetched": fetched, "fetched_bytes": fetched_bytes, "already_there": already}
    except ClientError as error:
        code = error.response.get("Error", {}).get("Code", "")
        hints = {
            "NoSuchBucket": "check the bucket's name",
            "AccessDenied": "the keys need s3:ListBucket and s3:GetObject on it",
            "InvalidAccessKeyId": "check AWS_ACCESS_KEY_ID",
            "SignatureDoesNotMatch": "check AWS_SECRET_ACCESS_KEY",
        }
        raise SourceError(
            f"{uri}: {code or 'error'}: {error.response.get('Error', {}).get('Message', '')}".rstrip(": ")
            + (f" ({hints[code]})" if code in hints else "")
        ) from None
    except BotoCoreError as error:
        raise SourceError(f"{uri}: {first_line(error)} (check {BUCKET_ENDPOINT_VARIABLE} and the network)") from None


# ---- the job ----------------------------------------------------------------------------


def peak_memory_mib() -> int:
    """The job's peak resident memory (MiB): the benchmark's figure for "memory bounded"."""
    import resource

    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)


def _fail(message: str, **extra: Any) -> int:
    print(json.dumps({"ok": False, "error": message, **extra}))
    return 1


def _json_answer(step: str, work: Callable[[], dict[str, Any]]) -> int:
    """Run one step outside the stack: its answer (with ``ok`` and ``seconds``) or its failure, as one JSON line."""
    started = time.time()
    try:
        answer = work()
    except SourceError as error:
        return _fail(str(error))
    except Exception as error:
        logger.exception("%s stopped", step)
        return _fail(f"{type(error).__name__}: {first_line(error)}"[:800])
    print(json.dumps({"ok": True, **answer, "seconds": round(time.time() - started, 2)}))
    return 0


def stage_only(args: argparse.Namespace) -> int:
    """--stage-only: another server's PostgreSQL into ``--work``/source.db, nothing else.

    Runs in a container of this image that holds none of the kit's secrets and no mount but
    the scratch folder, on the host's network (the only step that needs one)."""
    if args.kind != "postgresql":
        return _fail("--stage-only is for --kind postgresql")
    target = os.path.join(args.work, STAGED_SOURCE)
    for leftover in (target, target + "-wal", target + "-shm"):
        if os.path.exists(leftover):
            os.unlink(leftover)

    def staged() -> dict[str, Any]:
        stage_postgres(args.source, f"sqlite:///{target}")
        return {"staged": target}

    return _json_answer("staging", staged)


def fetch_only(args: argparse.Namespace) -> int:
    """--fetch-bucket: the source's artifact bucket into ``--work``/bucket (or, --list-only, counted).

    Like --stage-only, in a container with none of the kit's secrets, on the host's network."""
    return _json_answer(
        "fetching the bucket", lambda: {"bucket": fetch_bucket(args.fetch_bucket, args.work, list_only=args.list_only)}
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mlflow-import")
    parser.add_argument("--kind", choices=("filestore", "sqlite", "postgresql"))
    parser.add_argument("--source")
    parser.add_argument("--artifacts", help="the folder the source's artifact URIs point into")
    parser.add_argument("--work", required=True)
    parser.add_argument("--dry-run", action="store_true")
    parser.add_argument("--merge", action="store_true")
    parser.add_argument("--stage-only", action="store_true", help="only copy a PostgreSQL source into --work")
    parser.add_argument("--origin", help="what the source was, for the report (a staged PostgreSQL copy)")
    parser.add_argument("--fetch-bucket", metavar="S3_URI", help="only mirror the source's artifact bucket into --work")
    parser.add_argument("--list-only", action="store_true", help="with --fetch-bucket: only count its objects")
    parser.add_argument("--artifacts-uri", help="the URI (s3://...) the --artifacts folder mirrors")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    if args.fetch_bucket:
        return fetch_only(args)
    if not args.kind or not args.source:
        parser.error("--kind and --source are needed (but with --fetch-bucket)")
    if args.stage_only:
        return stage_only(args)
    if args.kind == "postgresql":
        return _fail("a PostgreSQL source is staged first (--stage-only), then imported as --kind sqlite")

    uri = os.environ.get("MLFLOW_BACKEND_STORE_URI", "")
    destination = os.environ.get("MLFLOW_ARTIFACTS_DESTINATION", "")
    if not uri or not destination:
        return _fail("MLFLOW_BACKEND_STORE_URI and MLFLOW_ARTIFACTS_DESTINATION must be set (the kit's mlflow job)")
    if not destination.startswith(("/", "s3://", "kit-s3://")):
        return _fail(f"unsupported artifact destination {destination!r}")
    started = time.time()
    try:
        if args.artifacts and os.path.isdir(args.artifacts):
            check_source_tree(args.artifacts, "artifacts folder")
        staged_uri = stage(args.kind, args.source, args.work)
        target = Target.connect(uri)
        from mlflow.store.db.utils import create_sqlalchemy_engine_with_retry

        staged_engine = create_sqlalchemy_engine_with_retry(staged_uri)
        if revision(staged_engine) != revision(target.engine):
            return _fail(
                f"the kit's database is at schema {revision(target.engine)}, this MLflow's copy of the source at "
                f"{revision(staged_engine)}: run `mlops-kit upgrade` first"
            )
        staged_engine.dispose()
        db = sqlite3.connect(staged_uri[len("sqlite:///") :])
        source_root = args.source if args.kind == "filestore" else args.artifacts
        if args.kind == "filestore":
            from pathlib import Path

            from mlflow.store.fs2db import _resolve_mlruns

            source_root = str(_resolve_mlruns(Path(args.source)))
        mapping = find_roots(db, source_root, args.artifacts, args.artifacts_uri)
        counts = source_counts(db, target)
        reasons = skipped_tables(target)
        skipped = {name: {"rows": counts.pop(name), "reason": reasons[name]} for name in reasons if counts.get(name)}
        for name in reasons:
            counts.pop(name, None)
        target_counts, empty = target_state(target)
        store = LocalStore(destination) if destination.startswith("/") else BucketStore(destination)
        has_default = source_has_default(db)
        join_default = not empty and has_default and target_has_default(target)
        folders = artifact_folders(db, mapping)
        files, size = plan_artifacts(folders)
        clashes = [] if empty else collisions(db, target, join_default) + artifact_clashes(store, folders)
        with target.engine.connect() as conn:
            import sqlalchemy as sa

            max_target = int(conn.execute(sa.text("SELECT COALESCE(MAX(experiment_id), 0) FROM experiments")).scalar())
        experiment_ids = new_experiment_ids(db, max_target if not empty else 0)
        # Every URI counted once (the rewrite records what it keeps and what it cannot find).
        mapping.kept.clear()
        mapping.unresolved = 0
        for value in artifact_uris(db, with_experiments=True):
            mapping.rewrite(value)
        plan = {
            "source": {
                "kind": args.origin or args.kind,
                "rows": counts,
                "artifact_files": files,
                "artifact_bytes": size,
            },
            "target_empty": empty,
            "collisions": clashes,
            "new_experiment_ids": {str(k): v for k, v in experiment_ids.items()},
            "kept_uris": dict(mapping.kept),
            "unresolved_uris": mapping.unresolved,
            "skipped": skipped,
        }
        if not empty and not args.merge:
            return _fail(
                "the kit already holds data (" + ", ".join(f"{k} {v}" for k, v in target_counts.items() if v) + "): "
                "import into an empty stack, or pass --merge to add to it",
                plan=plan,
            )
        if clashes:
            return _fail(f"the source and the kit both have {', '.join(clashes[:5])}: nothing was imported", plan=plan)
        if args.dry_run:
            print(json.dumps({"ok": True, "dry_run": True, "plan": plan, "seconds": round(time.time() - started, 2)}))
            return 0
        if mapping.unresolved:
            return _fail(
                f"{mapping.unresolved} artifact location(s) are a server's mlflow-artifacts:/ URIs and no --artifacts "
                "folder was given, so their files cannot be found: pass the server's --artifacts-destination "
                "folder (./mlartifacts by default) as --artifacts",
                plan=plan,
            )
        artifacts = copy_artifacts(store, folders, files, size)
        rows = copy_rows(
            staged_uri,
            target,
            mapping,
            experiment_ids,
            replace_default=empty and has_default,
            skipped=reasons,
            join_default=join_default,
        )
        db.close()
    except SourceError as error:
        return _fail(str(error))
    except Exception as error:
        logger.exception("import stopped")
        return _fail(f"{type(error).__name__}: {first_line(error)}"[:800])
    print(
        json.dumps(
            {
                "ok": True,
                "dry_run": False,
                "plan": plan,
                "rows": rows,
                "artifacts": {
                    "files": artifacts.files,
                    "bytes": artifacts.bytes,
                    "already_there": artifacts.already_there,
                },
                "seconds": round(time.time() - started, 2),
                "peak_memory_mib": peak_memory_mib(),
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
