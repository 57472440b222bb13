"""Field checks more than one config section makes (each section's validator calls these)."""

from __future__ import annotations


def checked_public_keys(value: list[str]) -> list[str]:
    """ed25519 public keys (PEM file paths or the one-line base64 form): each must load, or
    the error lists every one that does not, by index."""
    from edge_agent.bundle.signing import load_public_key  # cryptography only when keys are set

    problems = []
    for i, key in enumerate(value):
        try:
            load_public_key(key)
        except ValueError as exc:  # KeyFormatError names the file and what was expected
            problems.append(f"[{i}] {exc}")
    if problems:
        raise ValueError("; ".join(problems))
    return value


def checked_topic_prefix(value: str) -> str:
    """A topic prefix: not empty, no wildcard, no leading '/'; a trailing '/' is dropped."""
    if not value or any(ch in value for ch in "#+") or value.startswith("/"):
        raise ValueError(f"must be a non-empty topic without '#', '+' or a leading '/': {value!r}")
    return value.rstrip("/")
