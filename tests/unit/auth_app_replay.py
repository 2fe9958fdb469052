"""Replay one sequence of requests against MLflow's basic-auth app or the kit's kit-auth app.

    python tests/unit/auth_app_replay.py stock|kit FOLDER

Real MLflow (this checkout's release), real SQLite databases in FOLDER (tracking and users),
Flask's test client: no server, no Docker. Prints one JSON line: every request's answer
(status and MLflow's error code, ids replaced by names) and the SQL statements run by a
normal user's log-metric once warm. tests/unit/test_auth_app.py compares the two modes.
"""

from __future__ import annotations

import base64
import json
import os
import sys
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "admin-password-1234"


def configure(folder: Path) -> None:
    ini = folder / "auth.ini"
    ini.write_text(
        "[mlflow]\n"
        "default_permission = NO_PERMISSIONS\n"
        f"database_uri = sqlite:///{folder / 'users.db'}\n"
        "admin_username = admin\n"
        f"admin_password = {PASSWORD}\n"
        "auth_cache_ttl_seconds = 60\n"
    )
    os.environ.update(
        {
            "MLFLOW_AUTH_CONFIG_PATH": str(ini),
            "MLFLOW_FLASK_SERVER_SECRET_KEY": "replay-secret-key",
            "_MLFLOW_SERVER_FILE_STORE": f"sqlite:///{folder / 'mlflow.db'}",
            "_MLFLOW_SERVER_ARTIFACT_ROOT": str(folder / "artifacts"),
            "_MLFLOW_SERVER_SERVE_ARTIFACTS": "false",
            "MLOPS_KIT_AUTH_GENERATION_FILE": str(folder / "generation"),
            "MLFLOW_DISABLE_TELEMETRY": "true",
        }
    )


def shape(value: Any) -> Any:
    """Which fields an answer holds, and how many items each list: not the values (ids, times)."""
    if isinstance(value, dict):
        return {key: shape(item) for key, item in sorted(value.items())}
    if isinstance(value, list):
        return [shape(item) for item in value]
    return type(value).__name__


def main() -> None:
    mode, folder = sys.argv[1], Path(sys.argv[2])
    configure(folder)
    import sqlalchemy as sa
    from sqlalchemy import event

    statements: list[str] = []
    event.listen(sa.engine.Engine, "before_cursor_execute", lambda *a: statements.append(a[2]))

    if mode == "kit":
        sys.path.insert(0, str(REPO_ROOT / "docker" / "mlflow" / "plugin"))
        import mlops_kit_auth_app

        app = mlops_kit_auth_app.create_app()
        assert mlops_kit_auth_app.STATE["fast_paths"], mlops_kit_auth_app.STATE
    else:
        from mlflow.server import auth

        app = auth.create_app()
    client = app.test_client()
    names: dict[str, str] = {}
    answers: list[Any] = []
    passwords = {"admin": PASSWORD, "alice": "alice-password-1", "bob": "bob-password-123"}

    def call(
        user: str, method: str, path: str, body: dict[str, Any] | None = None, *, password: str | None = None
    ) -> Any:
        token = base64.b64encode(f"{user}:{password or passwords[user]}".encode()).decode()

        def real(value: Any) -> Any:
            if isinstance(value, list):
                return [real(v) for v in value]
            if isinstance(value, dict):
                return {key: real(v) for key, v in value.items()}
            return names.get(value, value) if isinstance(value, str) else value

        sent = {key: real(value) for key, value in (body or {}).items()}
        kwargs: dict[str, Any] = {"headers": {"Authorization": f"Basic {token}"}}
        if method == "GET":
            kwargs["query_string"] = sent
        else:
            kwargs["json"] = sent
        response = client.open(path, method=method, **kwargs)
        payload = response.get_json(silent=True) or {}
        # What was asked (by the names of what it names) and what came back; for a run
        # answer also its shape (which fields it holds), which any redaction changes.
        answer = [user, method, path, body, response.status_code, payload.get("error_code")]
        if path.endswith("/runs/get"):
            answer.append(shape(payload))
        elif path.endswith("/runs/search"):
            # Runs with the same start time come in the order of their (random) ids.
            answer.append(sorted(json.dumps(shape(run), sort_keys=True) for run in payload.get("runs", [])))
        answers.append(answer)
        return payload

    def remember(real_id: str, name: str) -> None:
        names[name] = str(real_id)

    api = "/api/2.0/mlflow"
    for user in ("alice", "bob"):
        call("admin", "POST", f"{api}/users/create", {"username": user, "password": passwords[user]})
    for name in ("E1", "E2"):
        remember(call("admin", "POST", f"{api}/experiments/create", {"name": f"exp-{name}"})["experiment_id"], name)
    for run, experiment in (("R1", "E1"), ("R2", "E2")):
        created = call("admin", "POST", f"{api}/runs/create", {"experiment_id": experiment, "start_time": 1})
        remember(created["run"]["info"]["run_id"], run)
    remember("f" * 32, "NO_SUCH_RUN")
    # Runs that name a logged model (a model output, a metric's model id): the answers
    # MLflow parses to withhold them from users who may not see the model.
    model = call("admin", "POST", f"{api}/logged-models", {"experiment_id": "E1", "source_run_id": "R1"})
    remember(model["model"]["info"]["model_id"], "M1")
    for run in ("R1", "R2"):
        linked = {"run_id": run, "key": "linked", "value": 1.0, "timestamp": 1, "step": 0, "model_id": "M1"}
        call("admin", "POST", f"{api}/runs/log-metric", linked)
    call("admin", "POST", f"{api}/runs/outputs", {"run_id": "R1", "models": [{"model_id": "M1", "step": 0}]})
    # A run that names no model: its answers are not parsed at all by kit-auth.
    created = call("admin", "POST", f"{api}/runs/create", {"experiment_id": "E1", "start_time": 1})
    remember(created["run"]["info"]["run_id"], "R3")
    call("admin", "POST", f"{api}/runs/log-metric", {"run_id": "R3", "key": "m", "value": 1.0, "timestamp": 1})

    def grant(user: str, experiment: str, permission: str) -> None:
        body = {"username": user, "resource_type": "experiment", "resource_id": experiment, "permission": permission}
        call("admin", "POST", "/api/3.0/mlflow/users/permissions/grant", body)

    def revoke(user: str, experiment: str) -> None:
        body = {"username": user, "resource_type": "experiment", "resource_id": experiment}
        call("admin", "POST", "/api/3.0/mlflow/users/permissions/revoke", body)

    def run_calls(user: str, run: str) -> None:
        call(
            user, "POST", f"{api}/runs/log-metric", {"run_id": run, "key": "m", "value": 1.0, "timestamp": 1, "step": 0}
        )
        metrics = [{"key": "b", "value": 2.0, "timestamp": 2, "step": 1}]
        call(user, "POST", f"{api}/runs/log-batch", {"run_id": run, "metrics": metrics})
        call(user, "POST", f"{api}/runs/log-parameter", {"run_id": run, "key": f"p-{user}", "value": "1"})
        call(user, "POST", f"{api}/runs/set-tag", {"run_id": run, "key": "t", "value": user})
        call(user, "GET", f"{api}/runs/get", {"run_id": run})
        call(user, "GET", f"{api}/metrics/get-history", {"run_id": run, "metric_key": "m"})
        call(user, "POST", f"{api}/runs/update", {"run_id": run, "status": "RUNNING"})

    def everything(user: str) -> None:
        for run in ("R1", "R2", "R3", "NO_SUCH_RUN"):
            run_calls(user, run)
        call(user, "GET", f"{api}/experiments/get", {"experiment_id": "E1"})
        call(user, "GET", f"{api}/experiments/get", {"experiment_id": "E2"})
        call(user, "POST", f"{api}/runs/search", {"experiment_ids": ["E1", "E2"]})
        call(user, "POST", f"{api}/runs/create", {"experiment_id": "E1", "start_time": 2})
        call(user, "POST", f"{api}/runs/delete", {"run_id": "R1"})
        call(user, "POST", f"{api}/runs/restore", {"run_id": "R1"})

    everything("alice")
    grant("alice", "E1", "EDIT")
    everything("alice")
    everything("bob")
    grant("bob", "E1", "READ")
    everything("bob")
    revoke("alice", "E1")
    everything("alice")
    grant("alice", "E1", "READ")
    everything("alice")
    revoke("alice", "E1")
    grant("alice", "E1", "MANAGE")
    everything("alice")
    # Passwords, admin rights and users changing: the very next request sees the change.
    call("admin", "PATCH", f"{api}/users/update-password", {"username": "alice", "password": "alice-password-2"})
    call("alice", "GET", f"{api}/runs/get", {"run_id": "R1"})
    passwords["alice"] = "alice-password-2"
    call("alice", "GET", f"{api}/runs/get", {"run_id": "R1"})
    call("admin", "PATCH", f"{api}/users/update-admin", {"username": "bob", "is_admin": True})
    everything("bob")
    call("admin", "PATCH", f"{api}/users/update-admin", {"username": "bob", "is_admin": False})
    everything("bob")
    call("bob", "GET", f"{api}/runs/get", {"run_id": "R1"}, password="wrong-password")
    call("admin", "DELETE", f"{api}/users/delete", {"username": "bob"})
    call("bob", "GET", f"{api}/runs/get", {"run_id": "R1"})
    call("alice", "POST", "/api/2.0/mlflow/registered-models/create", {"name": "alice-model"})
    call("alice", "GET", "/api/2.0/mlflow/registered-models/get", {"name": "alice-model"})

    # Once warm: what a normal user's log-metric costs in SQL statements.
    revoke("alice", "E1")
    grant("alice", "E1", "EDIT")
    run_calls("alice", "R1")
    statements.clear()
    call(
        "alice", "POST", f"{api}/runs/log-metric", {"run_id": "R1", "key": "m", "value": 3.0, "timestamp": 3, "step": 2}
    )
    assert answers[-1][4] == 200, answers[-1]
    print(json.dumps({"answers": answers, "log_metric_statements": statements}))


if __name__ == "__main__":
    main()
