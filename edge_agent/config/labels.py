"""What a config's stages need of the model and of their source, checked before anything runs.

Labels a config names (a line counting only ``person``, a shelf slot holding ``cola``) are
checked against the model's: a label the model does not have would count nothing, silently,
forever. And a stage that only works on some kinds of source (camera-trap exports list an image
folder's pictures) says so: ``source_problem(kind) -> str | None`` on its options model.

A stage's options model says which labels it names with ``labels_named() -> [(loc, label)]``,
``loc`` being the path of the key inside the stage's options. Checked by ``check-config`` (with
the YAML line) and by the agent at start (refused before any frame).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from edge_agent.config.agent import AgentConfig
from edge_agent.config.sources import source_kind

Loc = tuple[Any, ...]


def label_problems(cfg: AgentConfig, labels: Sequence[str]) -> list[tuple[Loc, str]]:
    """``(config path, message)`` for every label a stage names that the model lacks."""
    known = set(labels)
    problems: list[tuple[Loc, str]] = []
    for i, source in enumerate(cfg.sources):
        for j, stage in enumerate(source.stages):
            named = getattr(stage.options(), "labels_named", None)
            for loc, label in named() if named is not None else []:
                if label not in known:
                    import difflib  # only on a failing check

                    near = difflib.get_close_matches(label, list(known), n=1)
                    hint = f" (did you mean {near[0]!r}?)" if near else ""
                    problems.append(
                        (
                            ("sources", i, "stages", j, *loc),
                            f"label {label!r} is not one of the model's labels{hint}; "
                            f"the model has {list(labels)}",
                        )
                    )
    return problems


def source_problems(cfg: AgentConfig) -> list[tuple[Loc, str]]:
    """``(config path, message)`` for every stage that cannot work on its source's kind."""
    problems: list[tuple[Loc, str]] = []
    for i, source in enumerate(cfg.sources):
        kind = source_kind(source)
        for j, stage in enumerate(source.stages):
            check = getattr(stage.options(), "source_problem", None)
            problem = check(kind) if check is not None else None
            if problem:
                problems.append((("sources", i, "stages", j), problem))
    return problems
