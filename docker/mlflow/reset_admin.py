#!/usr/bin/env python
"""Make the configured admin user exist, be an admin, and have the configured password.

Run as a one-shot job (`docker compose run --rm --no-deps mlflow mlflow-reset-admin`):
the entrypoint has written the auth configuration from the secrets, so the
password comes from secrets/mlflow_admin_password and never from argv. It runs with
the image's own MLflow (the first `python` on PATH): another release's user store
would migrate the user database to its own schema. Used
after a restore (the restored user database holds the old host's admin
password) and to recover a lost admin password.
"""

import sys

from mlflow.server.auth.config import read_auth_config
from mlflow.server.auth.sqlalchemy_store import SqlAlchemyStore


def main() -> int:
    config = read_auth_config()
    if not config.admin_username or not config.admin_password:
        print("mlflow-reset-admin: no admin user or password configured", file=sys.stderr)
        return 78
    store = SqlAlchemyStore()
    store.init_db(config.database_uri)  # also brings the auth schema up to date
    try:
        exists = store.has_user(config.admin_username, use_primary=True)
    except TypeError:  # MLflow releases before read replicas take only the name
        exists = store.has_user(config.admin_username)
    if exists:
        store.update_user(config.admin_username, password=config.admin_password, is_admin=True)
        print(f"reset the password of admin user {config.admin_username}")
    else:
        store.create_user(config.admin_username, config.admin_password, is_admin=True)
        print(f"created admin user {config.admin_username}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
