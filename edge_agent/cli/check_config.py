"""``edge-agent check-config``: validate a config file and its bundle, and say what would run."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from edge_agent.bundle import Bundle, BundleError, load_bundle
from edge_agent.cli.common import EXIT_BAD_INPUT, EXIT_OK, print_config_error
from edge_agent.config import (
    AgentConfig,
    ConfigError,
    ConfigIssue,
    check_files,
    label_problems,
    read_config,
    source_problems,
)
from edge_agent.config.errors import dotted_path


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="edge-agent check-config",
        description="Validate a config file, load its bundle (and signature) and run the model "
        "once on a blank frame to prove it fits its manifest, without opening sources or the "
        "broker; print the device, model, sources and broker it names.",
    )
    parser.add_argument("file", type=Path, help="YAML config file")
    return parser


def checked_config(file: Path) -> tuple[AgentConfig, Bundle]:
    """The config in ``file`` and its bundle, once every file it names exists, the bundle
    loads (and verifies) and the stages fit the model's labels and the sources. Raises
    ConfigError or BundleError naming what is wrong (also what ``reload_config`` checks)."""
    loaded = read_config(file)
    missing = check_files(loaded)
    if missing:
        raise ConfigError(file, missing)
    cfg = loaded.config
    bundle = load_bundle(cfg.model.bundle, cfg.model.public_keys)
    found = label_problems(cfg, bundle.manifest.labels) + source_problems(cfg)
    unknown = [
        ConfigIssue(dotted_path(loc), loaded.line_of(*loc), message) for loc, message in found
    ]
    if unknown:
        raise ConfigError(file, unknown)
    return cfg, bundle


def check_config(file: Path) -> int:
    try:
        cfg, bundle = checked_config(file)
    except ConfigError as exc:
        print_config_error(exc)
        return EXIT_BAD_INPUT
    except BundleError as exc:
        print(f"{file}: model.bundle: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if not prove_model(file, bundle, cfg):
        return EXIT_BAD_INPUT
    m = bundle.manifest
    signed = f", signed by {bundle.signed_by}" if bundle.signed_by else ""
    print(f"{file}: OK")
    print(f"  device   {cfg.device_id}")
    print(
        f"  model    {bundle.model_id} ({m.task}, {len(m.labels)} labels, {m.model.file}, "
        f"runtime {cfg.model.runtime_for(m.model.format)}, {cfg.model.threads} threads{signed})"
    )
    print(f"  bundle   {bundle.source}")
    for s in cfg.sources:
        limit = f", at most {s.fps_limit:g} fps" if s.fps_limit else ""
        stages = " -> ".join(stage.type for stage in s.stages) or "none"
        print(f"  source   {s.id}: {s.uri} ({s.kind}{limit}, on end: {s.on_eof}; stages: {stages})")
    mq = cfg.mqtt
    auth = "with login" if mq.username else "anonymous"
    tls = "TLS" if mq.tls else "plain TCP"
    print(
        f"  mqtt     {mq.host}:{mq.port} ({tls}, {auth}), topics {mq.topic_prefix}/"
        f"{cfg.device_id}/..."
    )
    return EXIT_OK


def prove_model(file: Path, bundle: Bundle, cfg: AgentConfig) -> bool:
    """Run the model once as the config would (runtime, threads, options) and print every way
    it does not fit its manifest under the config file's name; True when it fits."""
    from edge_agent.predictor import describe_problems, prove_bundle  # loads the runtime
    from edge_agent.runtimes import ModelRuntimeError

    runtime = cfg.model.runtime_for(bundle.manifest.model.format)
    try:
        problems = prove_bundle(bundle, runtime, cfg.model.threads, cfg.model.options_for(runtime))
    except (ModelRuntimeError, ValueError) as exc:  # ValueError: the decoder cannot be built
        print(f"{file}: model.bundle: {exc}", file=sys.stderr)
        return False
    if problems:
        print(f"{file}: model.bundle: {describe_problems(bundle, problems)}", file=sys.stderr)
    return not problems


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return check_config(args.file)
