"""Configuration: one home each for the settings table, the secret files, the loader and `.env`.

- :mod:`~mlops_kit.config.settings`: every variable, its default, parser and help.
- :mod:`~mlops_kit.config.secrets`: generate, read, write (0600) and fingerprint secret files.
- :mod:`~mlops_kit.config.loader`: :class:`KitConfig` and ``load_config`` (CLI > env > .env > default).
- :mod:`~mlops_kit.config.envfile`: write and update `.env` (init, upgrades of an older kit's file).

Import from the submodules; this package re-exports nothing, so that the store
modes (which read secret files) and the loader (which asks the store modes) do not
import each other through it.
"""
