"""``edge-agent run``: run the agent with a config file until its sources end or a signal."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge_agent.backend_logs import quiet_backends
from edge_agent.bundle import BundleError
from edge_agent.cli.common import (
    EXIT_BAD_INPUT,
    EXIT_FAILED,
    EXIT_OK,
    print_config_error,
    stop_on_signals,
)
from edge_agent.cli.signals import relayed_signals
from edge_agent.config import AgentConfig, ConfigError, load_config
from edge_agent.health.watchdog import ReadySink, SdNotifier, SystemdWatchdog, watchdog_interval_s
from edge_agent.logsetup import configure_logging
from edge_agent.runtimes import ModelRuntimeError

if TYPE_CHECKING:
    from edge_agent.pipeline.agent import Agent, ResultHook

log = logging.getLogger("edge_agent")

#: How long exit waits for capture workers still blocked in a camera's backend.
STUCK_CAPTURE_WAIT_S = 0.5
#: Problems of a refused config named in the command's reply (all of them are in the log).
MAX_PROBLEMS_IN_REPLY = 5


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="edge-agent run",
        description="Run the agent: read the sources, run the model, publish results over MQTT. "
        "Stops when every finite source ends, or on SIGINT/SIGTERM.",
    )
    parser.add_argument("--config", "-c", required=True, type=Path, help="YAML config file")
    return parser


def run_agent(
    cfg: AgentConfig, on_result: ResultHook | None = None, config_path: Path | None = None
) -> int:
    """Run until every finite source ends or SIGINT/SIGTERM arrives. With ``config_path`` the
    ``reload_config`` command re-reads that file and, when it checks out, starts the agent
    again with it (a new run id), and so does SIGHUP; a file with problems is refused and the
    agent runs on. Under systemd (``$NOTIFY_SOCKET``) it tells READY/RELOADING/STOPPING and
    earns its watchdog pings (edge_agent/health/watchdog.py). A reloaded config that still
    fails to start (a camera, the runtime) is logged and the previous one started again, so a
    remote reload cannot leave the device dark."""
    from edge_agent.pipeline import Agent
    from edge_agent.publish.outbox import OutboxInUseError
    from edge_agent.sources import SourceError

    watchdog = SystemdWatchdog(SdNotifier.from_env(), watchdog_interval_s())
    watchdog.start()
    previous: AgentConfig | None = None
    signalled = threading.Event()  # SIGTERM wins over a reload that was under way
    current: list[Reload] = []  # this run's reload_config, for SIGHUP
    try:
        # For the whole run: between two agents SIGHUP's default action would end the process.
        with reload_on_sighup(lambda: current[-1] if current else None):
            while True:
                reload = Reload(config_path) if config_path is not None else None
                agent = Agent(
                    cfg,
                    on_result=on_result,
                    sinks=[ReadySink(watchdog)],
                    on_reload=reload.request if reload else None,
                )
                if reload is not None:
                    reload.agent = agent
                    current.append(reload)

                def on_signal(agent: Agent = agent) -> None:
                    signalled.set()
                    watchdog.stopping()
                    agent.stop()

                with stop_on_signals(on_signal):
                    try:
                        with agent:
                            run_id = agent.publisher.run_id if agent.publisher else None
                            watchdog.attach(agent.stats, run_id)
                            agent.wait()
                    except (BundleError, ModelRuntimeError, SourceError, OutboxInUseError) as exc:
                        if previous is None:
                            log.error("%s", exc)
                            return EXIT_BAD_INPUT
                        log.error(
                            "the reloaded config does not start (%s); back to the previous one",
                            exc,
                        )
                        cfg, previous = previous, None
                        continue
                if reload is None or reload.config is None or signalled.is_set():
                    break
                log.info("config reloaded from %s: starting again", config_path)
                watchdog.reloading()
                previous, cfg = cfg, reload.config
                configure_logging(cfg.log_level, cfg.log_format)  # the reloaded file's settings
                quiet_backends()  # OpenCV's level follows the new log_level
    finally:
        watchdog.stopping()
        watchdog.close()
    return EXIT_FAILED if agent.frames_failed() and not agent.frames_done() else EXIT_OK


def reload_on_sighup(current: Callable[[], Reload | None]) -> AbstractContextManager[None]:
    """SIGHUP inside the block does what the ``reload_config`` command does (``systemctl
    reload``, ``kill -HUP``) for the ``current()`` agent; without a config file it is ignored
    with a log line. The check loads the bundle: it runs in the relay thread
    (edge_agent/cli/signals.py), never in the signal handler."""

    def check(_sig: signal.Signals) -> None:
        from edge_agent.publish.commands import CommandRefused

        reload = current()
        if reload is None:
            log.warning("SIGHUP: no config file to reload; ignored")
            return
        log.info("received SIGHUP: reloading the config")
        try:
            reload.request()
        except CommandRefused:
            pass  # request() logged the problems; the agent runs on with its config

    return relayed_signals({signal.SIGHUP: check})


class Reload:
    """The ``reload_config`` command for one run: check the file as ``check-config`` does (the
    bundle loads, the stages fit its labels), then stop the agent (after the reply has had a
    moment to leave) so ``run_agent`` starts it again with the new config."""

    #: Time for the command's reply to be published before the agent stops, s.
    STOP_AFTER_S = 0.5

    def __init__(self, path: Path) -> None:
        self.path = path
        self.config: AgentConfig | None = None
        self.agent: Agent | None = None

    def request(self) -> dict[str, Any]:
        from edge_agent.cli.check_config import checked_config
        from edge_agent.publish.commands import CommandRefused

        try:
            config, _ = checked_config(self.path)
        except ConfigError as exc:
            log.warning("reload_config refused: %s has %d problem(s): %s", self.path,
                        len(exc.issues), "; ".join(str(i) for i in exc.issues))  # fmt: skip
            problems = "; ".join(str(i) for i in exc.issues[:MAX_PROBLEMS_IN_REPLY])
            raise CommandRefused(
                f"{self.path}: {len(exc.issues)} problem(s), not reloaded: {problems}",
                "bad_config",
            ) from None
        except BundleError as exc:
            log.warning("reload_config refused: %s: model.bundle: %s", self.path, exc)
            raise CommandRefused(
                f"{self.path}: model.bundle: {exc}; not reloaded", "bad_config"
            ) from None
        self.config = config
        agent = self.agent
        if agent is not None:
            threading.Timer(self.STOP_AFTER_S, agent.stop).start()
        log.info("reload_config: %s checks out; restarting with it", self.path)
        return {"reloading": True, "file": str(self.path)}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        cfg = load_config(args.config)
    except ConfigError as exc:
        print_config_error(exc)
        return EXIT_BAD_INPUT
    configure_logging(cfg.log_level, cfg.log_format)
    quiet_backends()  # OpenCV's and FFmpeg's own lines into ours, at DEBUG
    status = run_agent(cfg, config_path=args.config)
    exit_now_if_captures_stuck(status)
    return status


def exit_now_if_captures_stuck(status: int) -> None:
    """Leave with os._exit when a camera's capture worker is still inside the backend.

    Measured (docs/capture-guard.md): a worker that comes back from FFmpeg while the
    interpreter finalises aborts the process (status 134), turning a clean SIGTERM during a
    stalled camera into a crash. The log is flushed first; nothing else is left to clean up
    (the agent has closed its sources, model and publisher)."""
    from edge_agent.capture_guard import wait_for_stuck

    stuck = wait_for_stuck(STUCK_CAPTURE_WAIT_S)
    if stuck:
        log.info("%d camera capture(s) still blocked in the backend; exiting without them", stuck)
        logging.shutdown()
        os._exit(status)
