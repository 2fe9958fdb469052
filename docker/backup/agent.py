#!/usr/bin/env python3
"""mlops-kit backup agent: runs inside the backup image, on the stack's backend network.

    prepare   one consistent view of the database (an exported snapshot): row counts,
              alembic revision and a pg_dump of every database, all taken from that
              snapshot; then sha256 of every artifact (reusing the previous manifest's
              hash for a file whose size and mtime did not change). Writes manifest.json.
    verify    recompute every checksum of a restored set against its manifest.
    load      pg_restore a restored dump into the (fresh) database and compare row counts
              and the alembic revision with the manifest.
    upload    (s3/minio modes) copy a folder of artifacts into the bucket under a prefix,
              each object read back and compared by sha256; objects already there with
              the same sha256 are skipped (so an interrupted copy resumes).
    download  (s3/minio modes) the other way: the prefix's objects into a folder.
    delete-prefix  remove every object under a prefix (a restore drill's throwaway copy).

In s3/minio modes `prepare --bucket` first mirrors the bucket's prefix into the
artifacts folder (incrementally: only new or changed objects are fetched, removed
ones are removed), so the backup set stores the artifacts as files, as in volume mode.

Output for the kit is one JSON object on stdout; diagnostics go to stderr. Only the
standard library, psycopg2 and boto3 (Debian's python3-psycopg2, python3-boto3) are used.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PASSWORD_FILE = "/run/secrets/postgres_password"
MANIFEST = "manifest.json"
#: MLflow's key-encryption passphrase: a secret of the stack, a file of every backup set.
KEK_FILE = "mlflow_kek_passphrase"
CHUNK = 4 * 2**20
SECRETS = Path("/run/secrets")
#: The s3 store check's probe objects: never artifacts.
CHECK_PREFIX = ".mlops-kit-check"
#: Files written into an artifacts volume belong to the mlflow user (uid/gid 10001).
MLFLOW_UID = 10001


# ---- S3 (s3 and minio modes) ------------------------------------------------------------


def s3_client():  # type: ignore[no-untyped-def]
    """A boto3 client configured as MLflow's: same endpoint, region, addressing, keys and CA."""
    import boto3
    from botocore.config import Config

    ca = SECRETS / "s3_ca"
    verify = None
    if ca.is_file() and "BEGIN CERTIFICATE" in ca.read_text(errors="replace"):
        bundle = Path("/tmp/kit-agent-ca.pem")
        bundle.write_bytes(Path("/etc/ssl/certs/ca-certificates.crt").read_bytes() + b"\n" + ca.read_bytes())
        verify = str(bundle)
    return boto3.client(
        "s3",
        endpoint_url=os.environ.get("MLFLOW_S3_ENDPOINT_URL") or None,
        region_name=os.environ.get("AWS_DEFAULT_REGION", "us-east-1"),
        aws_access_key_id=(SECRETS / "s3_access_key_id").read_text().strip(),
        aws_secret_access_key=(SECRETS / "s3_secret_access_key").read_text().strip(),
        verify=verify,
        config=Config(
            s3={"addressing_style": os.environ.get("MLFLOW_BOTO_CLIENT_ADDRESSING_STYLE", "path")},
            retries={"max_attempts": 5, "mode": "standard"},
        ),
    )


def bucket() -> str:
    return os.environ["MLOPS_KIT_S3_BUCKET"]


def key_of(prefix: str, rel: str) -> str:
    return f"{prefix.strip('/')}/{rel}" if prefix.strip("/") else rel


def list_objects(s3, prefix: str) -> dict[str, dict[str, object]]:  # type: ignore[no-untyped-def]
    """rel path -> size, etag, mtime of every object under ``prefix`` (the check's probes excluded)."""
    base = f"{prefix.strip('/')}/" if prefix.strip("/") else ""
    found: dict[str, dict[str, object]] = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket(), Prefix=base):
        for item in page.get("Contents", []):
            rel = item["Key"][len(base) :]
            if not rel or rel.endswith("/") or rel.startswith(CHECK_PREFIX + "/"):
                continue
            found[rel] = {"size": int(item["Size"]), "etag": item["ETag"], "mtime": item["LastModified"].timestamp()}
    return found


def download_to(s3, key: str, path: Path, mtime: float | None = None) -> str:  # type: ignore[no-untyped-def]
    """Fetch one object to ``path`` (atomically, via a temporary name); returns its sha256."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.kit-partial")
    digest = hashlib.sha256()
    body = s3.get_object(Bucket=bucket(), Key=key)["Body"]
    with tmp.open("wb") as handle:
        while block := body.read(CHUNK):
            digest.update(block)
            handle.write(block)
    if mtime is not None:
        os.utime(tmp, (mtime, mtime))
    os.replace(tmp, path)
    return digest.hexdigest()


def mirror_bucket(root: Path, prefix: str, index_path: Path) -> dict[str, int]:
    """Make ``root`` hold exactly the prefix's objects; fetch only new or changed ones.

    Objects are immutable once MLflow wrote them, so size + ETag identify an unchanged one.
    """
    s3 = s3_client()
    index: dict[str, dict[str, object]] = {}
    if index_path.is_file():
        index = json.loads(index_path.read_text())
    objects = list_objects(s3, prefix)
    fetched = fetched_bytes = 0
    for rel, info in sorted(objects.items()):
        path = root / rel
        old = index.get(rel)
        if old and old.get("etag") == info["etag"] and path.is_file() and path.stat().st_size == info["size"]:
            continue
        download_to(s3, key_of(prefix, rel), path, float(info["mtime"]))  # type: ignore[arg-type]
        fetched += 1
        fetched_bytes += int(info["size"])  # type: ignore[call-overload]
    removed = 0
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        if path.relative_to(root).as_posix() not in objects:
            path.unlink()
            removed += 1
    for folder in sorted((p for p in root.rglob("*") if p.is_dir()), reverse=True):
        if not any(folder.iterdir()):
            folder.rmdir()
    index_path.write_text(json.dumps({rel: {"etag": i["etag"]} for rel, i in objects.items()}))
    log(
        f"mirrored {len(objects)} objects of s3://{bucket()}/{prefix}: {fetched} fetched "
        f"({fetched_bytes} bytes), {removed} removed"
    )
    return {"objects": len(objects), "fetched": fetched, "fetched_bytes": fetched_bytes, "removed": removed}


def upload_verified(s3, path: Path, key: str, digest: str) -> bool:  # type: ignore[no-untyped-def]
    """Put one file unless the same bytes are there; read it back and compare. True if uploaded."""
    from botocore.exceptions import ClientError

    try:
        head = s3.head_object(Bucket=bucket(), Key=key)
        if head.get("Metadata", {}).get("sha256") == digest and int(head["ContentLength"]) == path.stat().st_size:
            return False
    except ClientError as error:
        if error.response.get("Error", {}).get("Code") not in ("404", "NoSuchKey", "NotFound"):
            raise
    s3.upload_file(str(path), bucket(), key, ExtraArgs={"Metadata": {"sha256": digest}})
    check = hashlib.sha256()
    body = s3.get_object(Bucket=bucket(), Key=key)["Body"]
    while block := body.read(CHUNK):
        check.update(block)
    if check.hexdigest() != digest:
        raise RuntimeError(f"s3://{bucket()}/{key} reads back with other bytes than {path}")
    return True


def log(message: str) -> None:
    print(f"kit-backup-agent: {message}", file=sys.stderr, flush=True)


def fail(message: str, code: int = 1) -> None:
    print(json.dumps({"ok": False, "error": message}))
    log(message)
    sys.exit(code)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(CHUNK):
            digest.update(block)
    return digest.hexdigest()


def password() -> str:
    return Path(PASSWORD_FILE).read_text(encoding="utf-8").strip()


def write_pgpass() -> None:
    """libpq password file for pg_dump/pg_restore, so the password never reaches argv."""
    escaped = password().replace("\\", "\\\\").replace(":", "\\:")
    path = Path("/tmp/kit-agent.pgpass")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(f"*:*:*:{os.environ.get('PGUSER', 'mlflow')}:{escaped}\n")
    os.environ["PGPASSFILE"] = str(path)


def connect(database: str):  # type: ignore[no-untyped-def]
    import psycopg2

    return psycopg2.connect(
        host=os.environ.get("PGHOST", "/run/postgresql"),
        port=int(os.environ.get("PGPORT", "5432")),
        user=os.environ.get("PGUSER", "mlflow"),
        password=password(),
        dbname=database,
        connect_timeout=15,
    )


def database_facts(cursor) -> dict[str, object]:  # type: ignore[no-untyped-def]
    """Row count of every table, the alembic revision and the server version, from one snapshot."""
    cursor.execute(
        "SELECT table_name FROM information_schema.tables "
        "WHERE table_schema = 'public' AND table_type = 'BASE TABLE' ORDER BY table_name"
    )
    tables = [row[0] for row in cursor.fetchall()]
    counts: dict[str, int] = {}
    for table in tables:
        cursor.execute(f'SELECT count(*) FROM public."{table}"')
        counts[table] = int(cursor.fetchone()[0])
    revision = None
    # The tracking database's schema table, or the auth database's.
    version_table = next((t for t in ("alembic_version", "alembic_version_auth") if t in tables), None)
    if version_table:
        cursor.execute(f'SELECT version_num FROM public."{version_table}"')
        row = cursor.fetchone()
        revision = row[0] if row else None
    cursor.execute("SHOW server_version")
    return {"row_counts": counts, "alembic_revision": revision, "server_version": cursor.fetchone()[0]}


def hash_artifacts(root: Path, previous: dict[str, dict[str, object]]) -> tuple[dict[str, dict[str, object]], int]:
    """sha256, size and mtime of every file under ``root``; unchanged files reuse their old hash.

    Artifacts are immutable once written, so size + mtime identify an unchanged file.
    Returns the table and how many files had to be read.
    """
    files: dict[str, dict[str, object]] = {}
    hashed = 0
    for path in sorted(p for p in root.rglob("*") if p.is_file() and not p.is_symlink()):
        stat = path.stat()
        rel = path.relative_to(root).as_posix()
        old = previous.get(rel)
        if old and old.get("size") == stat.st_size and old.get("mtime_ns") == stat.st_mtime_ns:
            digest = str(old["sha256"])
        else:
            digest = sha256_file(path)
            hashed += 1
        files[rel] = {"sha256": digest, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    return files, hashed


def cmd_prepare(args: argparse.Namespace) -> None:
    out = Path(args.out)
    (out / "postgres").mkdir(parents=True, exist_ok=True)
    meta = json.loads(args.meta)
    started = time.time()
    write_pgpass()

    databases: dict[str, object] = {}
    for database in args.database:
        conn = connect(database)
        conn.set_session(isolation_level="REPEATABLE READ", readonly=True)
        with conn.cursor() as cursor:
            # Every count and the dump itself see exactly this snapshot.
            cursor.execute("SELECT pg_export_snapshot()")
            snapshot = cursor.fetchone()[0]
            facts = database_facts(cursor)
            dump = out / "postgres" / f"{database}.dump"
            result = subprocess.run(
                ["pg_dump", "--format=custom", f"--snapshot={snapshot}", f"--dbname={database}", f"--file={dump}"],
                capture_output=True,
                text=True,
                check=False,
            )
            if result.returncode != 0:
                fail(f"pg_dump of {database} failed: {result.stderr.strip().splitlines()[-1:]}")
        conn.rollback()
        conn.close()
        databases[database] = {
            **facts,
            "dump": f"postgres/{database}.dump",
            "dump_sha256": sha256_file(dump),
            "dump_size": dump.stat().st_size,
        }
        log(f"dumped {database}: {dump.stat().st_size} bytes, {sum(facts['row_counts'].values())} rows")

    dumped = time.time()
    mirrored: dict[str, int] = {}
    if args.bucket_prefix is not None:
        # After the dump: every artifact a dumped run refers to is in the bucket by now.
        mirrored = mirror_bucket(Path(args.artifacts), args.bucket_prefix, Path(args.bucket_index))
    previous: dict[str, dict[str, object]] = {}
    if args.previous and Path(args.previous).is_file():
        previous = json.loads(Path(args.previous).read_text()).get("artifacts", {}).get("files", {})
    files, hashed = hash_artifacts(Path(args.artifacts), previous)
    # MLflow's key-encryption passphrase travels with the database it protects (AI
    # gateway and webhook secrets): a restore on a new host must still decrypt them.
    kek: dict[str, object] = {}
    kek_source = SECRETS / KEK_FILE
    if kek_source.is_file():
        kek_copy = out / KEK_FILE
        kek_copy.touch(mode=0o600)
        kek_copy.write_bytes(kek_source.read_bytes())
        kek = {"kek_passphrase": {"file": KEK_FILE, "sha256": sha256_file(kek_copy)}}
    manifest = {
        "format": 1,
        **meta,
        **kek,
        "started_at": meta.get("started_at", started),
        "database_dumped_at": dumped,
        "finished_at": time.time(),
        "databases": databases,
        "artifacts": {
            "root": "data/artifacts",
            "file_count": len(files),
            "total_bytes": sum(int(f["size"]) for f in files.values()),
            "files": files,
        },
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True))
    print(
        json.dumps(
            {
                "ok": True,
                "databases": {
                    k: {"rows": sum(v["row_counts"].values()), "dump_size": v["dump_size"]}  # type: ignore[index]
                    for k, v in databases.items()
                },
                "artifact_files": len(files),
                "artifact_bytes": manifest["artifacts"]["total_bytes"],
                "hashed": hashed,
                "mirrored": mirrored,
            }
        )
    )


def cmd_verify(args: argparse.Namespace) -> None:
    set_dir = Path(args.set)
    manifest_path = set_dir / MANIFEST
    if not manifest_path.is_file():
        fail(f"the backup set has no {MANIFEST}")
    manifest = json.loads(manifest_path.read_text())
    problems: list[str] = []
    for name, info in manifest["databases"].items():
        dump = set_dir / info["dump"]
        if not dump.is_file():
            problems.append(f"dump of {name} is missing")
        elif dump.stat().st_size != info["dump_size"] or sha256_file(dump) != info["dump_sha256"]:
            problems.append(
                f"dump of {name} does not match its checksum (size {dump.stat().st_size}, expected {info['dump_size']})"
            )
    kek = manifest.get("kek_passphrase")
    if kek and (not (set_dir / kek["file"]).is_file() or sha256_file(set_dir / kek["file"]) != kek["sha256"]):
        problems.append("MLflow's key-encryption passphrase in the set is missing or does not match its checksum")
    result = verify_artifacts(Path(args.artifacts), manifest["artifacts"]["files"])
    problems += result["problems"]
    print(
        json.dumps(
            {
                "ok": not problems,
                "problems": problems[:20],
                "artifacts_checked": result["checked"],
                "changed_during_backup": result["changed"],
            }
        )
    )
    sys.exit(0 if not problems else 1)


def verify_artifacts(root: Path, files: dict[str, dict[str, object]]) -> dict[str, object]:
    """Compare restored artifacts with the manifest.

    The manifest hashes a file before restic stores it; a file still being written
    then (an upload in progress) is stored with another size or mtime. That is not
    damage (restic authenticates what it stored), so such files are only counted.
    A file with the manifest's size and mtime but other bytes is damage.
    """
    problems: list[str] = []
    changed = 0
    checked = 0
    for rel, info in files.items():
        path = root / rel
        if not path.is_file():
            problems.append(f"artifact {rel} is missing")
        else:
            stat = path.stat()
            if stat.st_size != info["size"] or stat.st_mtime_ns != info["mtime_ns"]:
                changed += 1
            elif sha256_file(path) != info["sha256"]:
                problems.append(f"artifact {rel} does not match its checksum")
            checked += 1
        if len(problems) > 20:
            break
    return {"problems": problems, "checked": checked, "changed": changed}


#: Settings pg_dump 17 writes at the top of every dump that older servers do not know.
_NEWER_SETTINGS = (b"SET transaction_timeout",)


def server_version_num(database: str) -> int:
    conn = connect(database)
    with conn.cursor() as cursor:
        cursor.execute("SHOW server_version_num")
        version = int(cursor.fetchone()[0])
    conn.close()
    return version


def restore_dump(database: str, dump: Path) -> tuple[int, str]:
    """pg_restore ``dump`` into ``database`` in one transaction, stopping at the first error.

    The image's pg_restore (17) replays settings only 17 knows; into an older server
    (a stack on an older PostgreSQL image) the dump goes through psql without them: the
    header's SET lines are filtered, the data never is, and psql commits only when
    pg_restore produced the whole script (else psql is killed: nothing is committed).
    """
    restore = ["pg_restore", "--exit-on-error", "--single-transaction", "--no-owner"]
    if server_version_num(database) >= 170000:
        result = subprocess.run([*restore, f"--dbname={database}", str(dump)], capture_output=True, text=True)
        return result.returncode, result.stderr
    with tempfile.TemporaryFile() as source_err, tempfile.TemporaryFile() as psql_err:
        psql = subprocess.Popen(
            ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "--single-transaction", f"--dbname={database}"],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=psql_err,
        )
        source = subprocess.Popen(
            ["pg_restore", "--no-owner", "--file=-", str(dump)], stdout=subprocess.PIPE, stderr=source_err
        )
        assert source.stdout is not None and psql.stdin is not None
        in_header = True
        try:
            for line in source.stdout:
                if in_header and line.startswith((b"CREATE ", b"COPY ", b"ALTER ", b"SELECT ")):
                    in_header = False
                if not (in_header and line.startswith(_NEWER_SETTINGS)):
                    psql.stdin.write(line)
        except BrokenPipeError:  # psql stopped at an error: its message says which
            source.kill()
        if psql.poll() not in (None, 0):
            source.wait()
            psql_err.seek(0)
            return psql.returncode, psql_err.read().decode(errors="replace")
        if source.wait() != 0:
            psql.kill()  # an incomplete script must not be committed
            psql.wait()
            source_err.seek(0)
            return source.returncode or 1, source_err.read().decode(errors="replace")
        with contextlib.suppress(BrokenPipeError):
            psql.stdin.close()
        code = psql.wait()
        psql_err.seek(0)
        return code, psql_err.read().decode(errors="replace")


def cmd_load(args: argparse.Namespace) -> None:
    set_dir = Path(args.set)
    manifest = json.loads((set_dir / MANIFEST).read_text())
    write_pgpass()
    report: dict[str, object] = {}
    for name, info in manifest["databases"].items():
        returncode, stderr = restore_dump(name, set_dir / info["dump"])
        if returncode != 0:
            fail(f"pg_restore of {name} failed: {' '.join(stderr.strip().splitlines()[-2:])}")
        conn = connect(name)
        with conn.cursor() as cursor:
            facts = database_facts(cursor)
        conn.close()
        expected = info["row_counts"]
        differing = {
            t: (expected.get(t), facts["row_counts"].get(t))  # type: ignore[union-attr]
            for t in set(expected) | set(facts["row_counts"])  # type: ignore[arg-type]
            if expected.get(t) != facts["row_counts"].get(t)
        }  # type: ignore[union-attr]
        if differing or facts["alembic_revision"] != info["alembic_revision"]:
            fail(
                f"restored {name} differs from the manifest: rows {differing}, alembic "
                f"{facts['alembic_revision']} vs {info['alembic_revision']}"
            )
        report[name] = {"rows": sum(expected.values()), "alembic_revision": facts["alembic_revision"]}
    print(json.dumps({"ok": True, "databases": report}))


def cmd_facts(args: argparse.Namespace) -> None:
    conn = connect(args.database)
    with conn.cursor() as cursor:
        facts = database_facts(cursor)
    conn.close()
    print(json.dumps({"ok": True, **facts}))


def files_under(root: Path) -> list[Path]:
    return sorted(
        p for p in root.rglob("*") if p.is_file() and not p.is_symlink() and not p.name.endswith(".kit-partial")
    )


def cmd_upload(args: argparse.Namespace) -> None:
    root = Path(args.source)
    s3 = s3_client()
    files = files_under(root)
    total = sum(p.stat().st_size for p in files)
    if args.dry_run:
        print(json.dumps({"ok": True, "files": len(files), "bytes": total, "copied": 0, "skipped": 0}))
        return
    copied = skipped = 0
    for path in files:
        rel = path.relative_to(root).as_posix()
        if upload_verified(s3, path, key_of(args.prefix, rel), sha256_file(path)):
            copied += 1
        else:
            skipped += 1
    log(f"uploaded {copied} files to s3://{bucket()}/{args.prefix} ({skipped} already there)")
    print(json.dumps({"ok": True, "files": len(files), "bytes": total, "copied": copied, "skipped": skipped}))


def cmd_download(args: argparse.Namespace) -> None:
    root = Path(args.target)
    s3 = s3_client()
    objects = list_objects(s3, args.prefix)
    total = sum(int(i["size"]) for i in objects.values())  # type: ignore[call-overload]
    if args.dry_run:
        print(json.dumps({"ok": True, "files": len(objects), "bytes": total, "copied": 0, "skipped": 0}))
        return
    copied = skipped = 0
    for rel, info in sorted(objects.items()):
        path = root / rel
        key = key_of(args.prefix, rel)
        if path.is_file() and path.stat().st_size == info["size"]:
            # Resuming: a file of the right size was finished (downloads land under a temporary name).
            skipped += 1
            continue
        digest = download_to(s3, key, path, float(info["mtime"]))  # type: ignore[arg-type]
        head = s3.head_object(Bucket=bucket(), Key=key)
        expected = head.get("Metadata", {}).get("sha256")
        if sha256_file(path) != digest or (expected and expected != digest):
            fail(f"{path} does not match s3://{bucket()}/{key} after the copy")
        copied += 1
    for path in [root, *(p for p in root.rglob("*"))]:
        os.chown(path, MLFLOW_UID, MLFLOW_UID, follow_symlinks=False)
    log(f"downloaded {copied} objects from s3://{bucket()}/{args.prefix} ({skipped} already there)")
    print(json.dumps({"ok": True, "files": len(objects), "bytes": total, "copied": copied, "skipped": skipped}))


def cmd_delete_prefix(args: argparse.Namespace) -> None:
    s3 = s3_client()
    keys = [key_of(args.prefix, rel) for rel in list_objects(s3, args.prefix)]
    for start in range(0, len(keys), 1000):
        s3.delete_objects(Bucket=bucket(), Delete={"Objects": [{"Key": k} for k in keys[start : start + 1000]]})
    print(json.dumps({"ok": True, "deleted": len(keys)}))


def cmd_digest(args: argparse.Namespace) -> None:
    """sha256 of every file under a folder, or every object under a prefix (migrate's final check)."""
    table: dict[str, object] = {}
    if args.sizes and args.prefix is not None:
        table = {rel: info["size"] for rel, info in list_objects(s3_client(), args.prefix).items()}
    elif args.sizes:
        root = Path(args.folder)
        table = {p.relative_to(root).as_posix(): p.stat().st_size for p in files_under(root)}
    elif args.prefix is not None:
        s3 = s3_client()
        for rel in list_objects(s3, args.prefix):
            digest = hashlib.sha256()
            body = s3.get_object(Bucket=bucket(), Key=key_of(args.prefix, rel))["Body"]
            while block := body.read(CHUNK):
                digest.update(block)
            table[rel] = digest.hexdigest()
    else:
        root = Path(args.folder)
        table = {p.relative_to(root).as_posix(): sha256_file(p) for p in files_under(root)}
    print(json.dumps({"ok": True, "files": table}))


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="kit-backup-agent", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    prepare = sub.add_parser("prepare")
    prepare.add_argument("--out", required=True)
    prepare.add_argument("--artifacts", required=True)
    prepare.add_argument("--previous")
    prepare.add_argument("--database", action="append", required=True)
    prepare.add_argument("--meta", default="{}")
    prepare.add_argument("--bucket-prefix", help="mirror this prefix of the bucket into --artifacts first")
    prepare.add_argument("--bucket-index", default="/staging/bucket-index.json")
    prepare.set_defaults(func=cmd_prepare)
    verify = sub.add_parser("verify")
    verify.add_argument("--set", required=True)
    verify.add_argument("--artifacts", required=True)
    verify.set_defaults(func=cmd_verify)
    load = sub.add_parser("load")
    load.add_argument("--set", required=True)
    load.set_defaults(func=cmd_load)
    facts = sub.add_parser("facts")
    facts.add_argument("--database", default="mlflow")
    facts.set_defaults(func=cmd_facts)
    upload = sub.add_parser("upload")
    upload.add_argument("--source", required=True)
    upload.add_argument("--prefix", required=True)
    upload.add_argument("--dry-run", action="store_true")
    upload.set_defaults(func=cmd_upload)
    download = sub.add_parser("download")
    download.add_argument("--prefix", required=True)
    download.add_argument("--target", required=True)
    download.add_argument("--dry-run", action="store_true")
    download.set_defaults(func=cmd_download)
    delete_prefix = sub.add_parser("delete-prefix")
    delete_prefix.add_argument("--prefix", required=True)
    delete_prefix.set_defaults(func=cmd_delete_prefix)
    digest = sub.add_parser("digest")
    digest.add_argument("--prefix")
    digest.add_argument("--folder")
    digest.add_argument("--sizes", action="store_true", help="sizes only (no reading)")
    digest.set_defaults(func=cmd_digest)
    args = parser.parse_args()
    try:
        args.func(args)
    except Exception as error:  # boto3 and OS errors: one JSON line for the kit
        fail(f"{error.__class__.__name__}: {error}")


if __name__ == "__main__":
    main()
