"""The `mlops-kit` command line: one module per command group, each command thin.

A command parses its options, builds the config and calls one core function in
:mod:`mlops_kit.workflows`; only this package prints errors and chooses exit codes
(see :mod:`mlops_kit.cli.app`).
"""

from __future__ import annotations

import logging
import sys

import click

from mlops_kit import console as ui
from mlops_kit.cli import artifacts, backup, bench, gc, health, importing, monitoring, stack, tls, upgrade, users
from mlops_kit.cli.app import cli
from mlops_kit.errors import KitError

logger = logging.getLogger("mlops_kit.cli")

for command in (
    stack.init,
    stack.up,
    stack.build,
    stack.down,
    stack.status,
    stack.logs,
    health.check,
    health.client_env,
    health.doctor,
    bench.bench,
    users.users,
    tls.tls,
    backup.backup,
    backup.restore,
    gc.gc,
    importing.import_,
    monitoring.monitoring,
    artifacts.artifacts,
    upgrade.upgrade,
):
    cli.add_command(command)


def main() -> None:
    """Console-script entry: run the CLI, turning kit errors into one line and an exit code."""
    try:
        cli.main(standalone_mode=False)
    except KitError as exc:
        ui.error_line(exc.message, exc.hint)
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        ui.error_line("cancelled")
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        ui.error_line("interrupted")
        sys.exit(130)
    except Exception as exc:  # last resort: one line, never a traceback (unless -vv)
        logger.debug("unexpected error", exc_info=True)
        ui.error_line(
            f"internal error: {exc.__class__.__name__}: {exc}", "run again with -vv for details and report it"
        )
        sys.exit(1)
    sys.exit(0)


__all__ = ["cli", "main"]
