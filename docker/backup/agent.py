#!/usr/bin/env python3
"""mlops-kit backup agent: runs inside the backup image, on the stack's backend network.

    prepare   one consistent view of the database (an exported snapshot): row counts,
              alembic revision and a pg_dump of every database, all taken from that
              snapshot; then sha256 of every artifact (reusing the previous manifest's
              hash for a file whose size and mtime did not change). Writes manifest.json.
    verify    recompute every checksum of a restored set against its manifest.
    load      pg_restore a restored dump into the (fresh) database and compare row counts
              and the alembic revision with the manifest.

Output for the kit is one JSON object on stdout; diagnostics go to stderr. Only the
standard library and psycopg2 (Debian's python3-psycopg2) are used.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

PASSWORD_FILE = "/run/secrets/postgres_password"
MANIFEST = "manifest.json"
CHUNK = 4 * 2**20


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
                capture_output=True, text=True, check=False,
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
    previous: dict[str, dict[str, object]] = {}
    if args.previous and Path(args.previous).is_file():
        previous = json.loads(Path(args.previous).read_text()).get("artifacts", {}).get("files", {})
    files, hashed = hash_artifacts(Path(args.artifacts), previous)
    manifest = {
        "format": 1,
        **meta,
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
    print(json.dumps({
        "ok": True, "databases": {k: {"rows": sum(v["row_counts"].values()), "dump_size": v["dump_size"]}  # type: ignore[index]
                                  for k, v in databases.items()},
        "artifact_files": len(files), "artifact_bytes": manifest["artifacts"]["total_bytes"], "hashed": hashed,
    }))


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
            problems.append(f"dump of {name} does not match its checksum (size {dump.stat().st_size}, "
                            f"expected {info['dump_size']})")
    result = verify_artifacts(Path(args.artifacts), manifest["artifacts"]["files"])
    problems += result["problems"]
    print(json.dumps({"ok": not problems, "problems": problems[:20], "artifacts_checked": result["checked"],
                      "changed_during_backup": result["changed"]}))
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


def cmd_load(args: argparse.Namespace) -> None:
    set_dir = Path(args.set)
    manifest = json.loads((set_dir / MANIFEST).read_text())
    write_pgpass()
    report: dict[str, object] = {}
    for name, info in manifest["databases"].items():
        result = subprocess.run(
            ["pg_restore", "--exit-on-error", "--single-transaction", "--no-owner", f"--dbname={name}",
             str(set_dir / info["dump"])],
            capture_output=True, text=True, check=False,
        )
        if result.returncode != 0:
            fail(f"pg_restore of {name} failed: {' '.join(result.stderr.strip().splitlines()[-2:])}")
        conn = connect(name)
        with conn.cursor() as cursor:
            facts = database_facts(cursor)
        conn.close()
        expected = info["row_counts"]
        differing = {t: (expected.get(t), facts["row_counts"].get(t))  # type: ignore[union-attr]
                     for t in set(expected) | set(facts["row_counts"])  # type: ignore[arg-type]
                     if expected.get(t) != facts["row_counts"].get(t)}  # type: ignore[union-attr]
        if differing or facts["alembic_revision"] != info["alembic_revision"]:
            fail(f"restored {name} differs from the manifest: rows {differing}, alembic "
                 f"{facts['alembic_revision']} vs {info['alembic_revision']}")
        report[name] = {"rows": sum(expected.values()), "alembic_revision": facts["alembic_revision"]}
    print(json.dumps({"ok": True, "databases": report}))


def cmd_facts(args: argparse.Namespace) -> None:
    conn = connect(args.database)
    with conn.cursor() as cursor:
        facts = database_facts(cursor)
    conn.close()
    print(json.dumps({"ok": True, **facts}))


def main() -> None:
    parser = argparse.ArgumentParser(prog="kit-backup-agent", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    prepare = sub.add_parser("prepare")
    prepare.add_argument("--out", required=True)
    prepare.add_argument("--artifacts", required=True)
    prepare.add_argument("--previous")
    prepare.add_argument("--database", action="append", required=True)
    prepare.add_argument("--meta", default="{}")
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
    args = parser.parse_args()
    args.func(args)


if __name__ == "__main__":
    main()
