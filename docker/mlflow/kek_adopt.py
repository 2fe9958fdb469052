#!/opt/mlflow/bin/python
"""Re-wrap the secrets MLflow's public default passphrase protects with the kit's own.

MLflow encrypts AI-gateway and webhook secrets in the tracking database with a
data key per secret, wrapped by a key derived from MLFLOW_CRYPTO_KEK_PASSPHRASE.
Unset, that is a passphrase printed in MLflow's source: anyone with a copy of
the database can decrypt. Stacks made before the kit generated its own
passphrase (secrets/mlflow_kek_passphrase) may hold such secrets. Run by the
MLflow entrypoint before the server starts (no writer is running), this
re-wraps every data key that opens with the default and not with the kit's
passphrase, in one transaction: all or nothing, and nothing to do the next time.
Keys that open with neither are left alone and named on stderr.
"""

from __future__ import annotations

import os
import sys

import psycopg2
from mlflow.utils.crypto import DEFAULT_KEK_PASSPHRASE, KEKManager, unwrap_dek, wrap_dek


def main() -> int:
    passphrase = os.environ.get("MLFLOW_CRYPTO_KEK_PASSPHRASE", "")
    uri = os.environ.get("MLFLOW_BACKEND_STORE_URI", "")
    if not passphrase or not uri.startswith("postgresql"):
        return 0
    dsn = uri.replace("postgresql+psycopg2://", "postgresql://", 1)
    with psycopg2.connect(dsn, connect_timeout=10) as conn, conn.cursor() as cursor:
        cursor.execute("SELECT to_regclass('secrets') IS NOT NULL")
        if not cursor.fetchone()[0]:
            return 0  # a new database: MLflow creates the table with the kit's key in force
        cursor.execute("SELECT secret_id, secret_name, wrapped_dek, kek_version FROM secrets FOR UPDATE")
        rows = cursor.fetchall()
        adopted = 0
        keys: dict[tuple[str, int], bytes] = {}

        def kek(phrase: str, version: int) -> bytes:
            # Each derivation is deliberately slow (PBKDF2): once per passphrase and version.
            if (phrase, version) not in keys:
                keys[(phrase, version)] = KEKManager(passphrase=phrase, kek_version=version).get_kek()
            return keys[(phrase, version)]

        for secret_id, name, wrapped, version in rows:
            kit = kek(passphrase, version)
            try:
                unwrap_dek(bytes(wrapped), kit)
                continue  # already the kit's
            except Exception:
                pass
            try:
                dek = unwrap_dek(bytes(wrapped), kek(DEFAULT_KEK_PASSPHRASE, version))
            except Exception:
                print(f"mlflow-kek-adopt: secret {name!r} opens with neither passphrase; left as it is", file=sys.stderr)
                continue
            cursor.execute("UPDATE secrets SET wrapped_dek = %s WHERE secret_id = %s", (wrap_dek(dek, kit), secret_id))
            adopted += 1
    conn.close()
    if adopted:
        print(f"mlflow-kek-adopt: {adopted} secret(s) re-wrapped from MLflow's default passphrase to the kit's")
    return 0


if __name__ == "__main__":
    sys.exit(main())
