"""`mlops-kit doctor`: the preflight checks, the artifact store, and (when the stack runs) its database indexes.

Everything here only reads, except ``fix_indexes`` (CREATE INDEX CONCURRENTLY: the
server keeps running).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from mlops_kit.checks import FAIL, CheckResult
from mlops_kit.config.loader import KitConfig, load_config
from mlops_kit.config.settings import SETTINGS
from mlops_kit.engine.compose import ComposeProject
from mlops_kit.errors import KitError, StackError
from mlops_kit.runner import CommandRunner
from mlops_kit.services.mlflow import MLFLOW
from mlops_kit.stores.check import store_check_result
from mlops_kit.workflows.indexes import index_check, run_index_probe
from mlops_kit.workflows.preflight import run_preflight


@dataclass
class DoctorReport:
    """Every check's result; ``configured`` is False when no `.env` exists yet (defaults were checked)."""

    results: list[CheckResult]
    configured: bool = True
    #: Indexes built by ``fix_indexes``.
    built_indexes: list[str] = field(default_factory=list)

    @property
    def failed(self) -> list[CheckResult]:
        return [r for r in self.results if r.status == FAIL]

    @property
    def ok(self) -> bool:
        return not self.failed


def diagnose(project_dir: Path, env_file: Path, *, dry_run: bool = False, fix_indexes: bool = False) -> DoctorReport:
    """Check the host (and the stack, when it runs); build missing indexes with ``fix_indexes``."""
    configured = env_file.exists()
    config = (
        load_config(project_dir, env_file, require_env_file=False)
        if configured
        else default_config(project_dir, env_file)
    )
    project = ComposeProject(config, CommandRunner(dry_run=dry_run, cwd=project_dir))
    preflight = run_preflight(project)
    report = DoctorReport(list(preflight.results), configured=configured)
    if not preflight.engine.reachable:
        if fix_indexes:
            raise StackError("--fix-indexes needs the running stack", hint="start it: mlops-kit up")
        return report
    if (store_line := store_check_result(project)) is not None:
        report.results.append(store_line)
    try:
        stack_running = project.is_running(MLFLOW.name)
    except KitError:
        stack_running = False
    if stack_running:
        if fix_indexes:
            report.built_indexes = run_index_probe(project, create=True).created
        report.results.append(index_check(run_index_probe(project)))
    elif fix_indexes:
        raise StackError("--fix-indexes needs the running stack", hint="start it: mlops-kit up")
    return report


def default_config(project_dir: Path, env_file: Path) -> KitConfig:
    """A config from defaults only, for doctor before init (checking the host needs no secrets)."""
    return KitConfig(
        project_dir=project_dir,
        env_file=env_file,
        postgres_password="",
        **{s.attr: s.parse(s.default) for s in SETTINGS},
    )
