"""Keep secret values out of logs, error messages and printed commands."""

from __future__ import annotations

from collections.abc import Iterable

MASK = "******"

_registered: set[str] = set()

# Short values would mask unrelated text (a password "1" would star every digit).
_MIN_SECRET_LENGTH = 6


def register_secret(value: str | None) -> None:
    """Remember a secret value so that :func:`mask` hides it everywhere."""
    if value and len(value) >= _MIN_SECRET_LENGTH:
        _registered.add(value)


def register_secrets(values: Iterable[str | None]) -> None:
    for value in values:
        register_secret(value)


def mask(text: str) -> str:
    """Return ``text`` with every registered secret replaced by a fixed mask."""
    # Longest first, so a secret that contains another is masked whole.
    for secret in sorted(_registered, key=len, reverse=True):
        if secret in text:
            text = text.replace(secret, MASK)
    return text


def clear_registered_secrets() -> None:
    """Forget all registered secrets (tests use this between cases)."""
    _registered.clear()
