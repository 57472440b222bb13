"""What one doctor check says, and the run of every check against one config.

A check never raises for what it finds: a broker that is down, a camera or a file that is
missing, a bundle that fails its hashes is a ``fail`` with advice, so one problem never hides
the next. Only a config that is wrong in itself stops the run (``ConfigError``, exit 2 in the
CLI): one that does not parse, or whose stages do not fit the bundle's labels. So the steps of
check-config's ``checked_config`` run here one by one, with a missing file (config/files.py)
reported by the check it belongs to rather than refusing the config.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

from edge_agent.bundle import Bundle, BundleError, load_bundle
from edge_agent.config import (
    AgentConfig,
    ConfigError,
    ConfigIssue,
    LoadedConfig,
    check_files,
    label_problems,
    read_config,
    source_problems,
)
from edge_agent.config.errors import dotted_path
from edge_agent.health.system import SystemSensors

Status = Literal["ok", "warn", "fail"]
#: Longest a camera, the broker or the model may take to answer, s (``--timeout``).
DEFAULT_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class Check:
    """One verdict: what was checked, ok | warn | fail, what was found, and what to do."""

    name: str
    status: Status
    found: str
    advice: str = ""

    def as_dict(self) -> dict[str, str]:
        return asdict(self)


@dataclass(frozen=True)
class Report:
    """Every check of one run, in the order they ran."""

    checks: list[Check]

    @property
    def ok(self) -> bool:
        """No check failed (warnings allowed)."""
        return all(c.status != "fail" for c in self.checks)

    def as_dict(self) -> dict[str, object]:
        return {"ok": self.ok, "checks": [c.as_dict() for c in self.checks]}


def missing_under(missing: list[ConfigIssue], key: str) -> list[ConfigIssue]:
    """The missing-file issues at or below the dotted config ``key`` (``sources[0]``)."""
    return [i for i in missing if i.path == key or i.path.startswith((f"{key}.", f"{key}["))]


def check_bundle(loaded: LoadedConfig, missing: list[ConfigIssue]) -> tuple[Check, Bundle | None]:
    """The bundle loads, its files match the manifest's hashes and its signature verifies.
    Raises ConfigError when the config's stages or sources do not fit the bundle."""
    cfg = loaded.config
    gone = missing_under(missing, "model")
    if gone:
        found = "; ".join(str(i) for i in gone)
        advice = "copy the bundle to the path model.bundle names (or fix model.bundle)"
        return Check("bundle", "fail", found, advice), None
    try:
        bundle = load_bundle(cfg.model.bundle, cfg.model.public_keys)
    except BundleError as exc:
        advice = (
            "the bundle on disk is not the one that was made or signed: copy it again (or "
            "push the model again); check-bundle says the same without a config"
        )
        return Check("bundle", "fail", str(exc), advice), None
    unfit = label_problems(cfg, bundle.manifest.labels) + source_problems(cfg)
    if unfit:
        issues = [ConfigIssue(dotted_path(loc), loaded.line_of(*loc), msg) for loc, msg in unfit]
        raise ConfigError(loaded.file, issues)
    m = bundle.manifest
    signed = f", signed by {bundle.signed_by}" if bundle.signed_by else ", unsigned"
    found = f"{bundle.model_id} ({m.task}, {len(m.labels)} labels) at {bundle.source}{signed}"
    return Check("bundle", "ok", found), bundle


def check_model_runs(cfg: AgentConfig, bundle: Bundle) -> Check:
    """The model runs once on a blank frame as the config would run it, and every output its
    decoder reads fits the manifest (what check-config proves)."""
    from edge_agent.predictor import describe_problems, prove_bundle  # loads the runtime
    from edge_agent.runtimes import ModelRuntimeError

    runtime = cfg.model.runtime_for(bundle.manifest.model.format)
    started = time.monotonic()
    try:
        problems = prove_bundle(bundle, runtime, cfg.model.threads, cfg.model.options_for(runtime))
    except (ModelRuntimeError, BundleError, ValueError) as exc:  # ValueError: the decoder
        return Check("model", "fail", str(exc), "run check-bundle on it; re-export the model")
    took_ms = (time.monotonic() - started) * 1000
    if problems:
        advice = "the model and its manifest disagree: re-export the bundle from the trainer"
        return Check("model", "fail", describe_problems(bundle, problems), advice)
    found = f"{runtime} loaded and ran it once in {took_ms:.0f} ms; outputs fit the manifest"
    return Check("model", "ok", found)


def run_checks(
    file: Path,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    clock: Callable[[], float] = time.time,
    sensors: SystemSensors | None = None,
) -> Report:
    """Every check for the config in ``file``. Raises ConfigError when the config itself is
    wrong; everything else is a Check. ``clock`` and ``sensors`` (a SystemSensors) are
    parameters so a 1970 clock or a throttling Pi can be shown where there is none."""
    from edge_agent.doctor.broker import check_broker
    from edge_agent.doctor.camera import check_source
    from edge_agent.doctor.system import check_clock, check_disk, check_runtime, check_thermal

    loaded = read_config(file)
    cfg = loaded.config
    missing = check_files(loaded)
    bundle_check, bundle = check_bundle(loaded, missing)
    checks = [bundle_check, guarded("runtime", check_runtime, cfg, bundle)]
    if bundle is not None:
        checks.append(guarded("model", check_model_runs, cfg, bundle))
    for i, source in enumerate(cfg.sources):
        gone = missing_under(missing, f"sources[{i}]")
        checks.append(guarded(f"source {source.id}", check_source, source, timeout_s, gone))
    gone = missing_under(missing, "mqtt")
    checks.append(guarded("broker", check_broker, cfg, timeout_s, gone))
    checks.append(guarded("disk", check_disk, cfg))
    checks.append(guarded("clock", check_clock, clock(), bundle))
    checks.append(guarded("thermal", check_thermal, cfg.health.thermal, sensors))
    return Report(checks)


def guarded(name: str, check: Callable[..., Check], *args: object) -> Check:
    """``check(*args)``, or a fail naming the error it raised: one check that breaks on
    something unforeseen (a folder it may not list) must not hide the others' verdicts."""
    try:
        return check(*args)
    except Exception as exc:
        found = f"the check itself failed: {type(exc).__name__}: {exc}"
        return Check(name, "fail", found, "a bug in doctor: please report it with this line")
