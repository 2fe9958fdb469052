"""MLflow users and permissions, through MLflow's basic-auth REST API (as the admin).

Passwords the kit generates are stored as secret files (secrets/users/NAME,
mode 0600) so that `client-env --user NAME` can hand them out; they never
appear in argv, logs or errors.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

from mlops_kit.config.loader import KitConfig
from mlops_kit.config.secrets import (
    check_secret_text,
    check_user_name,
    generate_secret,
    read_secret,
    write_private_file,
)
from mlops_kit.config.settings import PERMISSIONS
from mlops_kit.errors import AuthError, ConfigError
from mlops_kit.masking import mask, register_secret
from mlops_kit.services.mlflow import PROBE_TIMEOUT_SECONDS, ServerAccess
from mlops_kit.workflows.tls import ca_certificate_path, client_ca_path

logger = logging.getLogger(__name__)

USERS_DIR = "users"
ADMIN_SECRET = "mlflow_admin_password"
#: What `users grant` can target, and MLflow's name for it.
RESOURCE_TYPES = {"experiment": "experiment", "model": "registered_model"}
GRANTABLE = tuple(p for p in PERMISSIONS if p != "NO_PERMISSIONS")
API_TIMEOUT_SECONDS = 30.0


@dataclass(frozen=True)
class UserInfo:
    username: str
    is_admin: bool
    #: Whether the kit holds this user's password (secrets/users/NAME or the admin secret).
    password_stored: bool

    def to_dict(self) -> dict[str, Any]:
        return {"username": self.username, "is_admin": self.is_admin, "password_stored": self.password_stored}


def _verify(config: KitConfig) -> str | bool:
    ca = ca_certificate_path(config)
    return str(ca) if ca is not None else True


def anonymous_access(config: KitConfig) -> ServerAccess:
    """The proxy's URL as the CLI reaches it from this host, verified with the stack's CA; no login."""
    return ServerAccess(base_url=config.local_url, verify=_verify(config))


def admin_access(config: KitConfig) -> ServerAccess:
    """The CLI's own access: the configured admin with the password in the secrets folder."""
    password = read_secret(config.secrets_path, ADMIN_SECRET)
    return ServerAccess(
        base_url=config.local_url, verify=_verify(config), username=config.admin_user, password=password
    )


def password_file(config: KitConfig, username: str) -> Path:
    """Where the kit keeps ``username``'s password (the name is validated: it becomes a file name)."""
    check_user_name(username)
    if username == config.admin_user:
        return config.secrets_path / ADMIN_SECRET
    return config.secrets_path / USERS_DIR / username


def stored_password(config: KitConfig, username: str) -> str:
    """The password the kit stored for ``username``. Errors name the file, never a value."""
    path = password_file(config, username)
    if not path.is_file():
        raise ConfigError(
            f"no stored password for user {username!r} ({path} does not exist)",
            hint=f"set one with `mlops-kit users passwd {username}` (or add the user with `mlops-kit users add`)",
        )
    return read_secret(path.parent, path.name)


def client_variables(config: KitConfig, username: str) -> dict[str, str]:
    """What a data scientist exports to use the stack as ``username`` (`client-env --user`)."""
    variables = {
        "MLFLOW_TRACKING_URI": config.tracking_uri,
        "MLFLOW_TRACKING_USERNAME": username,
        "MLFLOW_TRACKING_PASSWORD": stored_password(config, username),
    }
    ca = client_ca_path(config)
    if ca is not None:
        variables["MLFLOW_TRACKING_SERVER_CERT_PATH"] = str(ca)
    return variables


class UserAdmin:
    """User and permission management through MLflow's auth API, as the admin."""

    def __init__(self, config: KitConfig, access: ServerAccess | None = None) -> None:
        self.config = config
        self.access = access or admin_access(config)

    # ---- HTTP ------------------------------------------------------------------

    def _call(self, method: str, path: str, what: str, **kwargs: Any) -> dict[str, Any]:
        kwargs.setdefault("timeout", API_TIMEOUT_SECONDS)
        try:
            response = self.access.request(method, path, **kwargs)
        except requests.exceptions.SSLError:
            raise AuthError(
                f"{what}: the proxy's certificate at {self.access.base_url} is not trusted",
                hint="run `mlops-kit up` (it refreshes the certificate), or check MLOPS_KIT_TLS_CA_FILE",
            ) from None
        except requests.RequestException as exc:
            raise AuthError(
                f"{what}: MLflow does not answer at {self.access.base_url} ({exc.__class__.__name__})",
                hint="is the stack up? mlops-kit status",
            ) from None
        if response.status_code == 401:
            raise AuthError(
                f"{what}: MLflow refused the admin login ({self.config.admin_user})",
                hint=f"the password in {self.config.secrets_path / ADMIN_SECRET} no longer matches; "
                "see docs/security.md, 'Lost admin password'",
            )
        if not response.ok:
            raise AuthError(f"{what}: MLflow answered {response.status_code}: {_api_message(response)}")
        try:
            body = response.json()
        except ValueError:
            return {}
        return body if isinstance(body, dict) else {}

    # ---- users -----------------------------------------------------------------

    def list_users(self) -> list[UserInfo]:
        body = self._call("GET", "/api/2.0/mlflow/users/list", "listing users")
        return [
            UserInfo(
                username=str(u["username"]),
                is_admin=bool(u.get("is_admin")),
                password_stored=password_file(self.config, str(u["username"])).is_file(),
            )
            for u in body.get("users", [])
        ]

    def exists(self, username: str) -> bool:
        try:
            response = self.access.request(
                "GET", "/api/2.0/mlflow/users/get", params={"username": username}, timeout=PROBE_TIMEOUT_SECONDS
            )
        except requests.RequestException:
            return False
        return response.ok

    def add(self, username: str, *, admin: bool = False, password: str | None = None) -> Path:
        """Create ``username`` (generated password unless given) and store the password; returns its file."""
        if self.exists(username):
            raise ConfigError(
                f"user {username!r} already exists",
                hint=f"set a new password with `mlops-kit users passwd {username}`",
            )
        check_user_name(username)
        password = self._new_password(password)
        self._call(
            "POST",
            "/api/2.0/mlflow/users/create",
            f"creating user {username}",
            json={"username": username, "password": password},
        )
        # Stored before anything else can fail: the user exists from here on.
        path = self._store(username, password)
        if admin:
            self._call(
                "PATCH",
                "/api/2.0/mlflow/users/update-admin",
                f"making {username} an admin",
                json={"username": username, "is_admin": True},
            )
        return path

    def set_password(self, username: str, password: str | None = None) -> Path:
        """Give ``username`` a new password (generated unless given) and store it; returns its file."""
        password = self._new_password(password)
        body: dict[str, str] = {"username": username, "password": password}
        if username == self.access.username and self.access.password is not None:
            # MLflow asks for the current password when a user changes their own.
            body["current_password"] = self.access.password
        self._call("PATCH", "/api/2.0/mlflow/users/update-password", f"changing the password of {username}", json=body)
        return self._store(username, password)

    def remove(self, username: str) -> None:
        if username == self.config.admin_user:
            raise ConfigError(
                f"{username!r} is the kit's admin (MLOPS_KIT_ADMIN_USER)",
                hint="the kit manages users through it; make another admin first and change MLOPS_KIT_ADMIN_USER",
            )
        self._call("DELETE", "/api/2.0/mlflow/users/delete", f"removing user {username}", json={"username": username})
        path = password_file(self.config, username)
        path.unlink(missing_ok=True)

    @staticmethod
    def _new_password(chosen: str | None) -> str:
        """A chosen password (checked: it must also be a valid secret file) or a generated one."""
        if chosen is not None:
            register_secret(chosen)
            check_secret_text(chosen, "the password read from stdin")
            return chosen
        password = generate_secret()
        register_secret(password)
        return password

    def _store(self, username: str, password: str) -> Path:
        path = password_file(self.config, username)
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        write_private_file(path, password)
        logger.info("stored the password of %s in %s (mode 0600)", username, path)
        return path

    # ---- permissions -----------------------------------------------------------

    def resolve(self, kind: str, target: str) -> str:
        """The id MLflow's grants use: experiment id (a name is looked up) or model name."""
        if kind == "model" or target.isdigit():
            return target
        body = self._call(
            "GET",
            "/api/2.0/mlflow/experiments/get-by-name",
            f"looking up experiment {target!r}",
            params={"experiment_name": target},
        )
        return str(body["experiment"]["experiment_id"])

    def grant(self, username: str, kind: str, target: str, permission: str) -> str:
        resource_id = self.resolve(kind, target)
        self._call(
            "POST",
            "/api/3.0/mlflow/users/permissions/grant",
            f"granting {permission} on {kind} {target} to {username}",
            json={
                "username": username,
                "resource_type": RESOURCE_TYPES[kind],
                "resource_id": resource_id,
                "permission": permission,
            },
        )
        return resource_id

    def revoke(self, username: str, kind: str, target: str) -> str:
        resource_id = self.resolve(kind, target)
        self._call(
            "POST",
            "/api/3.0/mlflow/users/permissions/revoke",
            f"revoking {username}'s grant on {kind} {target}",
            json={"username": username, "resource_type": RESOURCE_TYPES[kind], "resource_id": resource_id},
        )
        return resource_id

    def permissions(self, username: str) -> list[dict[str, Any]]:
        body = self._call(
            "GET",
            "/api/3.0/mlflow/users/permissions/list",
            f"listing {username}'s permissions",
            params={"username": username},
        )
        return list(body.get("permissions", []))


def _api_message(response: requests.Response) -> str:
    try:
        body = response.json()
        text = str(body.get("message") or body.get("error_code") or body)
    except ValueError:
        text = response.text.strip().splitlines()[0] if response.text.strip() else response.reason
    return mask(text)[:300]
