"""What every service module declares."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ServiceSpec:
    """A service of the stack, as the kit knows it.

    ``name`` is the Compose service name; ``image_setting`` the variable that
    names its image; ``dockerfile`` where the kit builds it (build context
    `docker/`); ``healthcheck`` the command its container runs to report health
    (empty for jobs).
    """

    name: str
    image_setting: str
    dockerfile: str
    healthcheck: str
    description: str
    #: False for one-shot job images (run with `docker compose run`, not started by `up`).
    long_running: bool = True
    #: What to do when building the image fails (beyond reading the build output).
    build_hint: str = ""
