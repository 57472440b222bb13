"""Each source's chain of stages, the sinks every result goes to, and the registry that builds
stages from config.

After the model's outputs are decoded, a source's result passes through that source's own
stages (``process(result, frame_or_None) -> result``: counting, then tracking, zones, lines,
events as they come), then to every sink (``emit(result, frame_or_None)``: the MQTT publisher,
the demo's table, hooks). A stage or sink declares whether it needs the picture; the capture
thread keeps a frame's picture only when one does. One that raises is counted in the stats
registry and logged once; the chain goes on with the result as it was, and no thread ends.

A stage type is registered with its options model (``register_stage``) in its own module under
``edge_agent/analytics``; ``analytics/__init__.py`` imports the built-in ones, so a new stage is
added without touching ``pipeline/``.
"""

from __future__ import annotations

import importlib
import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol, TypeVar

from pydantic import BaseModel, ValidationError

from edge_agent.health.stats import StageMetrics, StatsRegistry
from edge_agent.types import Detections, Frame, Result

log = logging.getLogger(__name__)

#: The package whose import registers the built-in stage types.
BUILTIN_STAGES = "edge_agent.analytics"


class Stage(Protocol):
    """One step of one source's chain; keeps that source's state (a tracker, zones)."""

    name: str
    needs_frame: bool

    def process(self, result: Result, frame: Frame | None) -> Result: ...

    def close(self) -> None: ...


class Sink(Protocol):
    """Takes every result of every source (the publisher, the demo table, hooks)."""

    name: str
    needs_frame: bool

    def emit(self, result: Result, frame: Frame | None) -> None: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class StageContext:
    """What a stage is built for: its source, the registry to count into, the labels of the
    model loaded at start (a swapped model may bring others: stages read ``result.labels``
    per frame), and ``state_dir``, this source's folder under the agent's state directory
    for what must survive a restart (created by the stage that writes there; None when a
    chain is built without an agent, as tests and tools do: nothing is kept then)."""

    source_id: str
    stats: StatsRegistry
    labels: tuple[str, ...] = ()
    state_dir: Path | None = None
    #: The folder an image-folder source reads (camera-trap exports list its pictures); None
    #: for any other source.
    media_folder: Path | None = None
    #: The agent's device id (config ``device_id``), for what a stage writes that leaves the
    #: device (field data); "" when a chain is built without an agent.
    device_id: str = ""


Options = TypeVar("Options", bound=BaseModel)
Builder = Callable[[Any, StageContext], Stage]


@dataclass(frozen=True)
class StageType:
    name: str
    options: type[BaseModel]
    build: Builder
    #: Stage types that must come earlier in the same chain (lines need ``track``).
    requires: tuple[str, ...] = ()


_STAGE_TYPES: dict[str, StageType] = {}


def register_stage(
    name: str, options: type[Options], requires: tuple[str, ...] = ()
) -> Callable[[Callable[[Options, StageContext], Stage]], Callable[[Options, StageContext], Stage]]:
    """Decorator for a builder ``(options, context) -> Stage``: config ``type: name`` builds it,
    and the stage's config keys are ``options``' fields (unknown keys are an error).
    ``requires`` names stage types that must come before it in a chain (checked at load)."""

    def register(
        build: Callable[[Options, StageContext], Stage],
    ) -> Callable[[Options, StageContext], Stage]:
        if name in _STAGE_TYPES:
            raise ValueError(f"stage type {name!r} is registered twice")
        _STAGE_TYPES[name] = StageType(name, options, build, requires)
        return build

    return register


def stage_types() -> dict[str, StageType]:
    """Every registered stage type (the built-in ones are imported on first use)."""
    importlib.import_module(BUILTIN_STAGES)
    return dict(_STAGE_TYPES)


def stage_options(type_name: str, options: dict[str, Any]) -> BaseModel:
    """Validate one stage's config; ValueError names an unknown type or key."""
    known = stage_types()
    if type_name not in known:
        import difflib  # only on a failing load

        near = difflib.get_close_matches(type_name, known, n=1)
        hint = f" (did you mean {near[0]!r}?)" if near else ""
        raise ValueError(f"unknown stage type {type_name!r}{hint}; choose one of {sorted(known)}")
    model = known[type_name].options
    odd = _not_json(options, ())
    if odd is not None:  # YAML reads 2024-05-01 as a date, not text
        from edge_agent.config.errors import ConfigIssue, StageOptionsError, dotted_path

        loc, value = odd
        message = (
            f"expected text, a number, true/false, a list or a mapping, but YAML read a "
            f"{type(value).__name__} ({value}): quote it"
        )
        raise StageOptionsError(type_name, [ConfigIssue(dotted_path(loc), None, message, loc)])
    text = json.dumps(options)
    try:
        # Strict as the rest of the config ("5" is not 5), in JSON mode: a YAML list is a
        # JSON array, which strict JSON validation accepts for tuple fields too.
        return model.model_validate_json(text, strict=True)
    except ValidationError as exc:
        # The config's own formatter: unknown keys name the nearest known one, and each
        # problem keeps its path inside the stage so the file's line can be found.
        from edge_agent.config.errors import StageOptionsError, validation_issues

        raise StageOptionsError(type_name, validation_issues(exc, model=model)) from None


def _not_json(value: Any, loc: tuple[Any, ...]) -> tuple[tuple[Any, ...], Any] | None:
    """The path and value of the first thing in a stage's options JSON cannot hold (a date,
    a timestamp, a set from a YAML tag), or None."""
    if isinstance(value, dict):
        for key, item in value.items():
            found = _not_json(item, (*loc, key))
            if found:
                return found
        return None
    if isinstance(value, list):
        for i, item in enumerate(value):
            found = _not_json(item, (*loc, i))
            if found:
                return found
        return None
    if value is None or isinstance(value, str | int | float | bool):
        return None
    return loc, value


OnFailure = Callable[[], None]


def _ignore() -> None:
    pass


class _Guard:
    """Counts and times one stage or sink; logs its first failure, then only counts, and tells
    ``on_failure`` every time (the agent's status turns degraded)."""

    def __init__(self, what: str, metrics: StageMetrics, on_failure: OnFailure) -> None:
        self.what = what
        self.metrics = metrics
        self.on_failure = on_failure

    def failed(self, result: Result) -> None:
        first = self.metrics.errors.inc() == 1
        self.on_failure()
        if first:
            log.exception(
                "%s failed on %s frame %d (counted; later failures are not logged)",
                self.what,
                result.source_id,
                result.seq,
            )


class StageChain:
    """One source's stages in order.

    A stage may also have ``finish(result) -> result``: called once when the source ends (a
    file or folder done, the agent stopping) on a frame-less result, so what it holds open (a
    camera-trap sequence) is concluded and published. Every later stage with a ``finish``
    (the snapshot stage) sees that result too.
    """

    def __init__(
        self,
        source_id: str,
        stages: Sequence[Stage],
        stats: StatsRegistry,
        on_failure: OnFailure = _ignore,
    ) -> None:
        self.source_id = source_id
        self.stages = list(stages)
        self._guards = [
            _Guard(
                f"stage {s.name!r} of source {source_id!r}",
                stats.stage(source_id, s.name),
                on_failure,
            )
            for s in self.stages
        ]
        self.needs_frame = any(s.needs_frame for s in self.stages)
        self._last: Result | None = None

    def process(self, result: Result, frame: Frame | None) -> Result:
        for stage, guard in zip(self.stages, self._guards, strict=True):
            t0 = time.perf_counter()
            try:
                result = stage.process(result, frame)
            except Exception:
                guard.failed(result)
            guard.metrics.ms.observe((time.perf_counter() - t0) * 1000)
        self._last = result
        return result

    def finish(self) -> Result | None:
        """Let every stage with a ``finish`` conclude; the frame-less result holding what they
        published, or None when nothing was (or no frame ever came)."""
        last, self._last = self._last, None
        if last is None:
            return None
        result = replace(
            last,
            predictions=Detections.empty() if last.task == "detect" else last.predictions,
            counts={},
            timing_ms={},
            publications=[],
            overlays=[],
            snapshot_requests=[],
        )
        for stage, guard in zip(self.stages, self._guards, strict=True):
            finish = getattr(stage, "finish", None)
            if finish is None:
                continue
            try:
                result = finish(result)
            except Exception:
                guard.failed(result)
        return result if result.publications else None

    def close(self) -> None:
        _close_all(self.stages)


class Sinks:
    """Every sink, each guarded like a stage."""

    def __init__(
        self, sinks: Sequence[Sink], stats: StatsRegistry, on_failure: OnFailure = _ignore
    ) -> None:
        self.sinks = list(sinks)
        self._guards = [
            _Guard(f"sink {s.name!r}", stats.sink(s.name), on_failure) for s in self.sinks
        ]
        self.needs_frame = any(s.needs_frame for s in self.sinks)

    def emit(self, result: Result, frame: Frame | None) -> None:
        for sink, guard in zip(self.sinks, self._guards, strict=True):
            t0 = time.perf_counter()
            try:
                sink.emit(result, frame)
            except Exception:
                guard.failed(result)
            guard.metrics.ms.observe((time.perf_counter() - t0) * 1000)

    def finish(self, result: Result) -> None:
        """A source's concluding publications (``StageChain.finish``) to every sink that has a
        ``finish(result)``: it is not a frame, so ``emit`` (results, tables) never sees it."""
        for sink, guard in zip(self.sinks, self._guards, strict=True):
            finish = getattr(sink, "finish", None)
            if finish is None:
                continue
            try:
                finish(result)
            except Exception:
                guard.failed(result)

    def close(self) -> None:
        _close_all(self.sinks)


def _close_all(parts: Sequence[Stage | Sink]) -> None:
    for part in parts:
        try:
            part.close()
        except Exception:
            log.exception("closing %s failed", part.name)


def order_problem(types: Sequence[str]) -> str | None:
    """Why a chain of these stage types cannot run (a stage before one it needs), or None."""
    known = stage_types()
    for i, name in enumerate(types):
        missing = [r for r in known[name].requires if r not in types[:i]] if name in known else []
        if missing:
            return f"stage {name!r} needs a {missing[0]!r} stage before it in the same source"
    return None


def build_chain(
    source_id: str,
    specs: Sequence[tuple[str, BaseModel]],
    stats: StatsRegistry,
    on_failure: OnFailure = _ignore,
    labels: Sequence[str] = (),
    state_dir: Path | None = None,
    media_folder: Path | None = None,
    device_id: str = "",
) -> StageChain:
    """The chain for one source from its validated ``(type, options)`` specs; ValueError when
    a stage cannot work with this source (say, folder exports on a camera)."""
    known = stage_types()
    context = StageContext(source_id, stats, tuple(labels), state_dir, media_folder, device_id)
    stages = [known[t].build(o, context) for t, o in specs]
    return StageChain(source_id, stages, stats, on_failure)


class HookSink:
    """A plain function as a sink: ``hook(result, frame)``; it gets the picture."""

    needs_frame = True

    def __init__(self, hook: Callable[[Result, Frame], None], name: str = "on_result") -> None:
        self.hook = hook
        self.name = name

    def emit(self, result: Result, frame: Frame | None) -> None:
        if frame is not None:
            self.hook(result, frame)

    def close(self) -> None:
        pass
