"""users: MLflow logins and their grants, through MLflow's auth API as the admin."""

from __future__ import annotations

import sys

import click
from rich.table import Table

from mlops_kit import console as ui
from mlops_kit.cli.app import AppContext, confirm, pass_app, print_json
from mlops_kit.cli.options import json_option, yes_option
from mlops_kit.errors import ConfigError
from mlops_kit.workflows.users import GRANTABLE, RESOURCE_TYPES, UserAdmin


@click.group()
def users() -> None:
    """Manage MLflow users and their permissions (through MLflow's auth API, as the admin)."""


def _read_password_stdin(password_stdin: bool) -> str | None:
    """A password piped on stdin (never on the command line, where `ps` would show it)."""
    if not password_stdin:
        return None
    password = sys.stdin.readline().strip()
    if not password:
        raise ConfigError("--password-stdin was given but stdin had no password", hint="pipe the password in")
    return password


_password_stdin_option = click.option(
    "--password-stdin",
    is_flag=True,
    help="Read the password from stdin instead of generating one (it is never taken as an argument).",
)


@users.command("add")
@click.argument("username")
@click.option("--admin", is_flag=True, help="Make the user an MLflow admin (every permission).")
@_password_stdin_option
@pass_app
def users_add(app: AppContext, username: str, admin: bool, password_stdin: bool) -> None:
    """Create USERNAME with a generated password (stored in secrets/users/USERNAME, mode 0600)."""
    config = app.config()
    path = UserAdmin(config).add(username, admin=admin, password=_read_password_stdin(password_stdin))
    ui.success(f"user {username} created{' (admin)' if admin else ''}; password stored in {path} (mode 0600)")
    ui.info(f"give them: mlops-kit client-env --user {username}  (and the CA: mlops-kit tls export-ca)")


@users.command("list")
@json_option
@pass_app
def users_list(app: AppContext, as_json: bool) -> None:
    """List MLflow's users."""
    found = UserAdmin(app.config()).list_users()
    if as_json:
        print_json([u.to_dict() for u in found])
        return
    table = Table(title="MLflow users", title_justify="left")
    for column in ("user", "admin", "password stored by the kit"):
        table.add_column(column)
    for u in found:
        table.add_row(u.username, "yes" if u.is_admin else "", "yes" if u.password_stored else "")
    ui.out.print(table)


@users.command("passwd")
@click.argument("username")
@_password_stdin_option
@pass_app
def users_passwd(app: AppContext, username: str, password_stdin: bool) -> None:
    """Give USERNAME a new password (generated unless piped in) and store it."""
    config = app.config()
    path = UserAdmin(config).set_password(username, _read_password_stdin(password_stdin))
    ui.success(f"password of {username} changed; stored in {path} (mode 0600)")


@users.command("remove")
@click.argument("username")
@yes_option
@pass_app
def users_remove(app: AppContext, username: str, yes: bool) -> None:
    """Delete USERNAME from MLflow (their experiments and runs stay)."""
    config = app.config()
    confirm(f"Delete MLflow user {username}? Their experiments and runs stay.", yes=yes)
    UserAdmin(config).remove(username)
    ui.success(f"user {username} removed")


_kind_argument = click.argument("kind", type=click.Choice(sorted(RESOURCE_TYPES)))


@users.command("grant")
@click.argument("username")
@click.argument("permission", type=click.Choice(GRANTABLE, case_sensitive=False))
@_kind_argument
@click.argument("target")
@pass_app
def users_grant(app: AppContext, username: str, permission: str, kind: str, target: str) -> None:
    """Give USERNAME PERMISSION on an experiment (id or name) or a registered model (name).

    \b
    READ: see it · USE: see and use it · EDIT: also change it · MANAGE: also grant others.
    Example: mlops-kit users grant alice EDIT experiment churn-model
    """
    resource_id = UserAdmin(app.config()).grant(username, kind, target, permission.upper())
    ui.success(
        f"{username} has {permission.upper()} on {kind} {target}"
        + (f" (id {resource_id})" if resource_id != target else "")
    )


@users.command("revoke")
@click.argument("username")
@_kind_argument
@click.argument("target")
@pass_app
def users_revoke(app: AppContext, username: str, kind: str, target: str) -> None:
    """Remove USERNAME's grant on an experiment (id or name) or a registered model (name)."""
    UserAdmin(app.config()).revoke(username, kind, target)
    ui.success(f"{username}'s grant on {kind} {target} removed")


@users.command("permissions")
@click.argument("username")
@json_option
@pass_app
def users_permissions(app: AppContext, username: str, as_json: bool) -> None:
    """Show USERNAME's grants."""
    rows = UserAdmin(app.config()).permissions(username)
    if as_json:
        print_json(rows)
        return
    table = Table(title=f"grants of {username}", title_justify="left")
    for column in ("resource", "id", "permission"):
        table.add_column(column)
    for row in rows:
        table.add_row(
            str(row.get("resource_type", "")), str(row.get("resource_pattern", "")), str(row.get("permission", ""))
        )
    ui.out.print(table)
