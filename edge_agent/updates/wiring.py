"""Updates inside the agent: which bundle a start loads, the commands, the fleet document, and
the Host the updater drives (load, prove, swap, publish).

At start the store decides (store.recover, after a crash during an update), and ``models/
current`` is what runs; the config's ``model.bundle`` is copied into the store the first time,
and again whenever the config names another bundle (an operator's local change wins).
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge_agent import __version__
from edge_agent.bundle import load_bundle
from edge_agent.bundle.signing import load_public_key
from edge_agent.config.labels import label_problems
from edge_agent.fsutil import sha256_file
from edge_agent.predictor import Predictor
from edge_agent.publish.commands import CommandRefused, UpdateModelArgs
from edge_agent.updates import progress as p
from edge_agent.updates.desired import DesiredError, verify_desired
from edge_agent.updates.device_state import DeviceState, UpdateRecord
from edge_agent.updates.download import FetchPolicy
from edge_agent.updates.store import ModelStore
from edge_agent.updates.updater import Updater, UpdateRequest
from edge_agent.updates.watch import ResultWatch

if TYPE_CHECKING:
    from edge_agent.config import AgentConfig
    from edge_agent.pipeline.agent import Agent

log = logging.getLogger(__name__)

#: Names the sha256 of the config bundle last copied into the store.
CONFIG_MARK = ".config-bundle"


def bundle_sha256(path: Path) -> str:
    """An archive's sha256, or a folder's manifest.json's (it pins every other file)."""
    return sha256_file(path / "manifest.json" if path.is_dir() else path)


class Updates:
    """The agent's updates: ``boot()`` before the model loads, ``start(agent)`` after the
    publisher, ``close()``; ``watch`` is a sink, ``handlers()`` the commands."""

    def __init__(self, cfg: AgentConfig) -> None:
        self.cfg = cfg
        self.store = ModelStore(cfg.state_dir)
        self.state = DeviceState(cfg.state_dir / "state.json")
        self.state.load()
        self.watch = ResultWatch()
        self.updater: Updater | None = None
        self._keys: list[Any] = []  # the pinned keys, loaded by start()
        self.boot_words: str | None = None
        self.interrupted: UpdateRecord | None = None
        self.running_ref = p.ModelRef(None, None, None)

    def boot(self) -> Path:
        """The bundle folder this start runs: the store's current model after recovery."""
        self.interrupted = self.state.pending  # the update a crash cut short, if any
        self.boot_words = self.store.recover(self.state)
        if self.boot_words:
            log.warning("model store: %s", self.boot_words)
        removed = self.store.cleanup(self.cfg.updates.keep_models)
        if removed:
            log.info("model store: removed leftovers %s", ", ".join(removed))
        configured = Path(self.cfg.model.bundle)
        sha = bundle_sha256(configured)
        mark = self.store.models / CONFIG_MARK
        known = mark.read_text().strip() if mark.exists() else None
        if self.store.current() is None or known != sha:
            self._adopt(configured, sha)
            mark.write_text(sha + "\n")
        current = self.store.current()
        assert current is not None
        # Still the configured bundle: load it from where the config names it (an archive
        # through the bundle cache, as before updates existed); else the store's copy.
        return configured if self.store.current_sha256() == sha else current

    def _adopt(self, configured: Path, sha: str) -> None:
        """Copy the config's bundle into the store and make it current."""
        if not self.store.is_complete(sha):
            bundle = load_bundle(configured, self.cfg.model.public_keys)
            with tempfile.TemporaryDirectory(dir=self.store.models) as tmp:
                copy = Path(tmp) / "bundle"
                shutil.copytree(bundle.path, copy, symlinks=False)
                self.store.stage(sha, copy)
        if self.store.current_sha256() != sha:
            self.store.activate(sha)
            log.info("model store: the configured bundle %s is the current model", configured)

    def handlers(self) -> dict[str, Any]:
        return {"update_model": self._cmd_update, "rollback_model": self._cmd_rollback}

    def start(self, agent: Agent) -> None:
        """Publish the running model, listen for the fleet document, start the worker."""
        cfg = self.cfg.updates
        keys = [load_public_key(k) for k in self.cfg.model.public_keys]
        self.updater = Updater(
            AgentHost(agent, self),
            self.store,
            self.state,
            self.watch,
            policy=FetchPolicy(
                allow_http=cfg.allow_http,
                allow_private=cfg.allow_private_addresses,
                max_bytes=cfg.max_bundle_bytes,
                read_gap_s=cfg.read_gap_s,
                deadline_s=cfg.deadline_s,
            ),
            public_keys=keys,
            agent_version=__version__,
            trial_timeout_s=cfg.trial_timeout_s,
            trial_memory_mb=cfg.trial_memory_mb,
            probation_s=cfg.probation_s,
            keep_models=cfg.keep_models,
            group=cfg.group,
        )
        self._keys = keys
        manifest = agent.bundle.manifest if agent.bundle else None
        self.running_ref = p.ModelRef(
            manifest.name if manifest else None,
            manifest.version if manifest else None,
            self.store.current_sha256(),
        )
        name, version = self.running_ref.name, self.running_ref.version
        if name and version is not None and (self.state.highest_version(name) or -1) < version:
            self.state.accept_version(name, version)  # what runs now: no update goes below it
        self.publish(agent, self._boot_payload())
        pending = self.state.pending  # still set: restarted during probation, the model runs
        if pending is not None and pending.sha256 == self.running_ref.sha256:
            self.updater.resume(pending)
        self.updater.start()
        if cfg.group and agent.publisher is not None:
            topic = f"{agent.publisher.topics.prefix}/fleet/{cfg.group}/desired"
            agent.publisher.watch(topic, self._on_desired)

    def _boot_payload(self) -> dict[str, Any]:
        """The model topic at start: the running model, or what became of an update a crash
        cut short (the same shape as when it ends without a crash)."""
        group, words, cut = self.cfg.updates.group, self.boot_words, self.interrupted
        if cut is None or not words:
            return p.model_payload(p.ACTIVE, self.running_ref, group=group)
        if words.startswith(p.TRIAL):  # the new model runs and its probation goes on
            return p.model_payload(p.TRIAL, self.running_ref, reason=words.partition(": ")[2],
                                   origin=cut.origin, group=group)  # fmt: skip
        state, _, reason = words.partition(": ")
        if state == p.ROLLED_BACK:
            return p.model_payload(state, self.running_ref, reason=f"{cut.name}@{cut.version}: "
                                   f"{reason}", origin=cut.origin, group=group)  # fmt: skip
        candidate = p.ModelRef(cut.name or None, cut.version, cut.sha256)
        return p.model_payload(p.REJECTED, candidate, reason=reason, origin=cut.origin,
                               group=group, previous=self.running_ref)  # fmt: skip

    def publish(self, agent: Agent, payload: dict[str, Any]) -> None:
        if agent.publisher is not None:
            agent.publisher.publish_control(agent.publisher.topics.model(), payload)

    def close(self) -> None:
        if self.updater is not None:
            self.updater.close()

    # -- triggers -----------------------------------------------------------------------------

    def _cmd_update(self, args: UpdateModelArgs) -> Mapping[str, Any]:
        if self.updater is None:
            raise CommandRefused("updates are not running")
        sha = args.sha256.lower()
        req = UpdateRequest(args.url, sha, args.size, args.version, args.name, "command")
        self.state.forget_rejected(sha)  # an operator asks again: try again
        problem = self.updater.submit(req)
        if problem:
            raise CommandRefused(problem)
        return {"state": p.DOWNLOADING, "sha256": sha}

    def _cmd_rollback(self, _args: Any) -> Mapping[str, Any]:
        if self.updater is None:
            raise CommandRefused("updates are not running")
        problem = self.updater.rollback_now("rolled back by command")
        if problem:
            raise CommandRefused(problem)
        return {"state": p.ROLLED_BACK}

    def _on_desired(self, raw: bytes) -> None:
        """paho's thread: verify, and hand a new document to the worker (never blocks)."""
        group = self.cfg.updates.group
        if not raw or self.updater is None or group is None:
            return
        try:
            doc = verify_desired(raw, self._keys)
        except DesiredError as exc:
            log.warning("fleet %s: desired model refused: %s", group, exc)
            return
        if doc.group != group:
            log.warning("fleet %s: desired document is for group %r; ignored", group, doc.group)
            return
        seen = self.state.desired_seq(group)
        if seen is not None and doc.seq <= seen:
            return  # handled before (a retained message again after a reconnect)
        self.state.accept_seq(group, doc.seq)
        if why := self.state.rejected(doc.sha256):
            log.warning("fleet %s: desired %s@%s was rejected here before: %s", group, doc.name,
                        doc.version, why)  # fmt: skip
            return
        req = UpdateRequest(doc.url, doc.sha256, doc.size, doc.version, doc.name,
                            f"fleet:{group}", allow_downgrade=doc.rollback)  # fmt: skip
        problem = self.updater.submit(req)
        if problem:
            log.info("fleet %s: desired %s@%s: %s", group, doc.name, doc.version, problem)


class AgentHost:
    """The updater's view of the running agent."""

    def __init__(self, agent: Agent, updates: Updates) -> None:
        self.agent, self.updates = agent, updates

    def running(self) -> tuple[p.ModelRef, str]:
        slot = self.agent.slot
        assert slot is not None
        return self.updates.running_ref, slot.current.model_id

    def task(self) -> str:
        return self.agent.slot.current.bundle.manifest.task if self.agent.slot else ""

    def label_problems(self, labels: list[str]) -> list[str]:
        """Labels the config's stages name, and every label of the running model: counts
        topics, Home Assistant sensors and dashboards are keyed by them."""
        problems = [f"{'.'.join(map(str, loc))}: {msg}" for loc, msg in
                    label_problems(self.agent.cfg, labels)]  # fmt: skip
        running = self.agent.slot.current.bundle.manifest.labels if self.agent.slot else []
        lost = [label for label in running if label not in labels]
        if lost:
            problems.append(f"labels of the running model missing: {', '.join(lost)}")
        return problems

    def runtime_of(self, bundle_dir: Path) -> tuple[str, Any]:
        model = self.agent.cfg.model
        fmt = json.loads((bundle_dir / "manifest.json").read_text())["model"]["format"]
        runtime = model.runtime_for(fmt)
        return runtime, model.options_for(runtime)

    def load(self, bundle_dir: Path) -> Predictor:
        model = self.agent.cfg.model
        bundle = load_bundle(bundle_dir, model.public_keys)
        runtime = model.runtime_for(bundle.manifest.model.format)
        options = model.options_for(runtime)
        return Predictor.proven(bundle, runtime, model.threads, model.score_threshold, options)

    def swap(self, predictor: Predictor) -> Predictor:
        slot = self.agent.slot
        assert slot is not None
        old = slot.swap(predictor)
        m = predictor.bundle.manifest
        self.updates.running_ref = p.ModelRef(
            m.name, m.version, self.updates.store.current_sha256()
        )
        return old

    def publish_model(self, payload: dict[str, Any]) -> None:
        self.updates.publish(self.agent, payload)
