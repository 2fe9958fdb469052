"""kit-auth (docker/mlflow/plugin/mlops_kit_auth_app.py): MLflow's basic-auth decisions, fewer queries.

The replay runs real MLflow (this checkout's release) on SQLite through Flask's test client,
once with MLflow's basic-auth app and once with kit-auth, in fresh processes: every answer
must be the same. The integration suites (test_security.py, test_attacks.py) run against
kit-auth in the real stack.
"""

from __future__ import annotations

import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from tests.conftest import REPO_ROOT, load_plugin_module

REPLAY = REPO_ROOT / "tests" / "unit" / "auth_app_replay.py"


def replay(mode: str, folder: Path) -> dict[str, Any]:
    folder.mkdir()
    result = subprocess.run(
        [sys.executable, str(REPLAY), mode, str(folder)], capture_output=True, text=True, check=False, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return dict(json.loads(result.stdout.strip().splitlines()[-1]))


@pytest.fixture(scope="module")
def replays(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    folder = tmp_path_factory.mktemp("auth-replay")
    with ThreadPoolExecutor(2) as pool:
        stock, kit = pool.map(lambda mode: replay(mode, folder / mode), ("stock", "kit"))
    return {"stock": stock, "kit": kit}


def test_every_request_gets_the_answer_mlflows_basic_auth_gives(replays: dict[str, dict[str, Any]]) -> None:
    stock, kit = replays["stock"]["answers"], replays["kit"]["answers"]
    assert len(kit) == len(stock) > 200
    for asked, (ours, theirs) in enumerate(zip(kit, stock, strict=True)):
        assert ours == theirs, f"request {asked}: kit-auth {ours[4:]}, basic-auth {theirs[4:]} for {theirs[:4]}"
    # The sequence covers allowed, refused, unknown-run and failed-login answers.
    assert {tuple(answer[4:6]) for answer in stock} >= {(200, None), (403, None), (401, None)}
    # Run answers (compared by their shape) that name a logged model and that do not.
    run_answers = [json.dumps(answer[6]) for answer in stock if len(answer) > 6 and answer[4] == 200]
    assert any("model_outputs" in a for a in run_answers) and any("model_outputs" not in a for a in run_answers)


def test_run_answers_are_parsed_only_when_they_name_a_model(app_module: ModuleType) -> None:
    """kit-auth hands MLflow's redaction only the answers it could change."""
    from types import SimpleNamespace

    redacted: list[bytes] = []

    def redact_get_run_model_links(response: Any) -> None:
        redacted.append(response.get_data())

    def redact_search_runs_model_links(response: Any) -> None:
        redacted.append(response.get_data())

    def other(response: Any) -> None:
        redacted.append(b"other")

    auth = SimpleNamespace(
        redact_get_run_model_links=redact_get_run_model_links,
        redact_search_runs_model_links=redact_search_runs_model_links,
        AFTER_REQUEST_HANDLERS={("/r/get", "GET"): redact_get_run_model_links, ("/x", "GET"): other},
        PARAMETERIZED_AFTER_REQUEST_HANDLERS={("/r/search", "POST"): redact_search_runs_model_links},
    )
    app_module.parse_only_runs_naming_a_model(auth)
    get, search = (
        auth.AFTER_REQUEST_HANDLERS[("/r/get", "GET")],
        auth.PARAMETERIZED_AFTER_REQUEST_HANDLERS[("/r/search", "POST")],
    )
    assert auth.AFTER_REQUEST_HANDLERS[("/x", "GET")] is other
    answer = lambda body: SimpleNamespace(get_data=lambda: body)  # noqa: E731
    get(answer(b'{"run": {"data": {"metrics": [{"key": "model_id_like", "value": 1}]}}}'))
    search(answer(b'{"runs": [{"info": {"run_id": "r"}}]}'))
    assert redacted == []
    named = [
        b'{"run": {"outputs": {"model_outputs": [{"model_id": "m-1"}]}}}',
        b'{"runs": [{"inputs": {"modelInputs": [{"modelId": "m-1"}]}}]}',
        b'{"runs": [{"data": {"metrics": [{"key": "k", "model_id": "m-1"}]}}]}',
    ]
    get(answer(named[0]))
    search(answer(named[1]))
    search(answer(named[2]))
    assert redacted == named


def test_a_normal_users_log_metric_runs_only_mlflows_own_handler_queries(replays: dict[str, dict[str, Any]]) -> None:
    stock, kit = replays["stock"]["log_metric_statements"], replays["kit"]["log_metric_statements"]
    # Once warm: no user, grant or role lookups, and no loading of the whole run's params and tags.
    assert not [s for s in kit if any(table in s for table in ("users", "roles", "role_", "params", "tags"))], kit
    assert len(kit) < len(stock) / 2, (len(kit), len(stock))


@pytest.fixture
def app_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    monkeypatch.setenv("MLOPS_KIT_AUTH_GENERATION_FILE", str(tmp_path / "generation"))
    return load_plugin_module("mlops_kit_auth_app")


def test_a_change_anywhere_drops_every_cached_answer(app_module: ModuleType) -> None:
    cache = app_module.TimedCache(ttl=3600)
    loads: list[int] = []
    load = lambda: loads.append(1) or len(loads)  # noqa: E731
    assert cache.get("alice", load) == 1 and cache.get("alice", load) == 1
    # Another worker changed a grant: the stamp moved, the next answer is loaded again.
    app_module.bump_generation()
    assert cache.get("alice", load) == 2 and cache.get("alice", load) == 2
    stamp = app_module.generation()
    app_module.bump_generation()
    assert app_module.generation() > stamp


def test_answers_expire_even_without_a_change(app_module: ModuleType) -> None:
    cache = app_module.TimedCache(ttl=0)
    loads: list[int] = []
    assert cache.get("alice", lambda: loads.append(1)) is None and cache.get("alice", lambda: loads.append(1)) is None
    assert len(loads) == 2


def test_writes_of_the_auth_store_move_the_stamp_reads_do_not(app_module: ModuleType) -> None:
    class Store:
        def get_user(self, username: str) -> str:
            return username

        def list_grants(self, user_id: int, workspace: str, types: Any) -> list[str]:
            return ["grant"]

        def update_user(self, username: str) -> None:
            return None

        def assign_role_to_user(self, user_id: int, role_id: int) -> None:
            raise RuntimeError("failed half-way")

    auth = ModuleType("auth")
    auth.store = Store()  # type: ignore[attr-defined]
    auth._authenticate_cached = lambda username, password: username  # type: ignore[attr-defined]
    auth._USER_AUTH_CACHE = None  # type: ignore[attr-defined]
    app_module.cache_user_and_grants(auth)
    stamp = app_module.generation()
    auth.store.get_user("alice")  # type: ignore[attr-defined]
    assert auth.store.list_grants(1, "default", {"experiment"}) == ["grant"]  # type: ignore[attr-defined]
    assert app_module.generation() == stamp
    auth.store.update_user("alice")  # type: ignore[attr-defined]
    assert app_module.generation() > stamp
    stamp = app_module.generation()
    with pytest.raises(RuntimeError):
        auth.store.assign_role_to_user(1, 2)  # type: ignore[attr-defined]
    assert app_module.generation() > stamp


def test_another_mlflow_release_gets_mlflows_own_code_paths(
    app_module: ModuleType, caplog: pytest.LogCaptureFixture
) -> None:
    auth = ModuleType("auth")
    untouched = object()
    auth._run_requirement = untouched  # type: ignore[attr-defined]
    assert app_module.install_fast_paths(auth, "3.18.0") is False
    assert auth._run_requirement is untouched  # type: ignore[attr-defined]
    assert "MLflow 3.18.0 (verified: 3.17.2)" in caplog.text and "own code paths" in caplog.text
    assert app_module.STATE == {"fast_paths": False, "reason": "MLflow 3.18.0 (verified: 3.17.2)"}
