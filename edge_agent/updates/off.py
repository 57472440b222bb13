"""update_model and rollback_model on a device where remote updates cannot run: a refusal that
says why, rather than "unknown command" (kept apart so such a device imports nothing else of
updates/, cryptography and tarfile included)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from edge_agent.publish.commands import CommandRefused, Handler


def refusing_handlers(why: str) -> dict[str, Handler]:
    def refuse(_args: Any) -> Mapping[str, Any]:
        raise CommandRefused(f"remote model updates are off on this device: {why}")

    return {"update_model": refuse, "rollback_model": refuse}
