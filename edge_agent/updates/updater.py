"""The update state machine: downloading → verifying → staged → trial → active, or rejected /
rolled_back, one update at a time in a thread of its own (docs/updates.md).

Each step is a module of its own (download.py, verify.py, trial.py, store.py, probation.py);
this one orders them, says each state on the retained model topic, records the update in
state.json before anything a restart must finish or undo (store.recover reads it), and
calls ``crashpoint(state)`` at each state so a test can SIGKILL the agent there. The old model
keeps serving until the swap, which happens between two frames (ModelSlot); it is kept in
memory through probation so a rollback is one more swap.
"""

from __future__ import annotations

import logging
import queue
import re
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Protocol

from edge_agent.predictor import Predictor
from edge_agent.updates import progress as p
from edge_agent.updates.crashpoint import crashpoint
from edge_agent.updates.device_state import DeviceState, UpdateRecord
from edge_agent.updates.download import DownloadError, DownloadStopped, FetchPolicy, fetch
from edge_agent.updates.probation import Baseline, Probation
from edge_agent.updates.store import TMP_PREFIX, ModelStore
from edge_agent.updates.trial import run_trial
from edge_agent.updates.verify import CandidateError, check_candidate
from edge_agent.updates.watch import ResultWatch

log = logging.getLogger(__name__)

#: Results the new model must make before its latency is judged.
PROBATION_MIN_FRAMES = 20
#: How often the probation verdict is looked at.
PROBATION_POLL_S = 0.25
#: Requests waiting behind the running update; a newer fleet document replaces a waiting one.
QUEUE_LIMIT = 4


@dataclass(frozen=True)
class UpdateRequest:
    url: str
    sha256: str
    size: int
    version: int
    name: str | None = None
    origin: str = "command"  # or "fleet:<group>"
    allow_downgrade: bool = False


class Host(Protocol):
    """What the updater needs of the running agent (wiring.AgentHost)."""

    def running(self) -> tuple[p.ModelRef, str]: ...  # the model in use and its model id
    def task(self) -> str: ...
    def label_problems(self, labels: list[str]) -> list[str]: ...
    def runtime_of(self, bundle_dir: Path) -> tuple[str, Any]: ...
    def load(self, bundle_dir: Path) -> Predictor: ...
    def swap(self, predictor: Predictor) -> Predictor: ...
    def publish_model(self, payload: dict[str, Any]) -> None: ...


class Rejected(Exception):
    """An update refused at some step; the message is the reason in words."""


class Updater:
    def __init__(
        self,
        host: Host,
        store: ModelStore,
        state: DeviceState,
        watch: ResultWatch,
        *,
        policy: FetchPolicy,
        public_keys: list[Any],
        agent_version: str,
        trial_timeout_s: float,
        trial_memory_mb: int,
        probation_s: float,
        keep_models: int,
        group: str | None,
    ) -> None:
        self.host, self.store, self.state, self.watch = host, store, state, watch
        self.policy, self.public_keys, self.agent_version = policy, public_keys, agent_version
        self.trial_timeout_s, self.trial_memory_mb = trial_timeout_s, trial_memory_mb
        self.probation_s, self.keep_models, self.group = probation_s, keep_models, group
        self._queue: queue.Queue[UpdateRequest | None] = queue.Queue(QUEUE_LIMIT)
        self._stop = threading.Event()
        self._busy: UpdateRequest | None = None
        self._old: Predictor | None = None  # the model before the last swap, for a rollback
        self._thread = threading.Thread(target=self._work, name="model-updater", daemon=True)
        self._resume: UpdateRequest | None = None

    # -- outside: commands, the fleet document, the agent -----------------------------------

    def start(self) -> None:
        self._thread.start()

    def close(self, timeout_s: float = 2.0) -> None:
        self._stop.set()
        self.watch.close()
        try:
            self._queue.put_nowait(None)
        except queue.Full:
            pass
        self._thread.join(timeout_s)

    def submit(self, req: UpdateRequest) -> str | None:
        """Queue an update; None when accepted, else why not (the command's error)."""
        running, _ = self.host.running()
        if req.sha256 == running.sha256:
            return f"bundle {req.sha256[:12]} is the model running now"
        if self._busy is not None and self._busy.sha256 == req.sha256:
            return f"bundle {req.sha256[:12]} is being installed already"
        try:
            self._queue.put_nowait(req)
        except queue.Full:
            return f"{QUEUE_LIMIT} updates are waiting already; try again later"
        return None

    def resume(self, record: UpdateRecord) -> None:
        """After a restart during probation (the new model runs): watch it again, with no
        baseline (the old model is not running to compare with): NaN and enough frames."""
        req = UpdateRequest("", record.sha256, 0, record.version, record.name, record.origin)
        self._resume = req

    def rollback_now(self, reason: str) -> str | None:
        """Go back to models/previous (the rollback_model command); None or why not."""
        if self._busy is not None:
            return "an update is under way; roll back when it has ended"
        return self._rollback(reason, origin="command")

    # -- the worker ---------------------------------------------------------------------------

    def _work(self) -> None:
        if self._resume is not None:
            resumed = self._resume
            self._guarded(resumed, lambda: self._probation(resumed, self._ref(resumed), None))
        while not self._stop.is_set():
            req = self._queue.get()
            if req is None:
                return
            self._guarded(req, partial(self._update, req))

    def _guarded(self, req: UpdateRequest, run: Callable[[], None]) -> None:
        """One update (or a resumed probation); an unexpected error is reported, and the
        worker lives on for the next one."""
        self._busy = req
        try:
            run()
        except Exception:
            log.exception("model update of %s failed unexpectedly", req.sha256[:12])
            self._say(p.REJECTED, self._ref(req), req.origin, "internal error (see the log)")
        finally:
            self._busy = None

    def _ref(self, req: UpdateRequest) -> p.ModelRef:
        return p.ModelRef(req.name, req.version, req.sha256)

    def _say(self, state: str, model: p.ModelRef, origin: str, reason: str | None = None) -> None:
        running, _ = self.host.running()
        previous = running if model.sha256 != running.sha256 else None
        payload = p.model_payload(
            state,
            model,
            reason=reason,
            origin=origin,
            group=self.group,
            previous=previous,
        )
        level = logging.WARNING if state in (p.REJECTED, p.ROLLED_BACK) else logging.INFO
        log.log(level, "model update %s@%s: %s%s", model.name, model.version, state,
                f" ({reason})" if reason else "")  # fmt: skip
        self.host.publish_model(payload)

    def _record(self, req: UpdateRequest, ref: p.ModelRef, state: str) -> None:
        """The update in state.json before each state: what a restart must finish or undo."""
        running, _ = self.host.running()
        self.state.set_pending(UpdateRecord(
            sha256=req.sha256, name=ref.name or "", version=ref.version or 0, state=state,
            origin=req.origin, started=time.time(), previous_sha256=running.sha256, boots=0,
        ))  # fmt: skip

    def _update(self, req: UpdateRequest) -> None:
        ref = self._ref(req)
        work = self.store.models / f"{TMP_PREFIX}work-{req.sha256[:16]}"  # cleanup() knows it
        try:
            self._record(req, ref, p.DOWNLOADING)
            self._say(p.DOWNLOADING, ref, req.origin)
            crashpoint(p.DOWNLOADING)
            archive = self._download(req)
            self._record(req, ref, p.VERIFYING)
            self._say(p.VERIFYING, ref, req.origin)
            crashpoint(p.VERIFYING)
            candidate = self._verify(req, archive, work)
            ref = p.ModelRef(candidate.name, candidate.version, req.sha256)
            self._record(req, ref, p.STAGED)
            folder = self.store.stage(req.sha256, candidate.folder)
            self._say(p.STAGED, ref, req.origin)
            crashpoint(p.STAGED)
            self._trial(folder)
        except DownloadStopped:
            self.state.clear_pending()
            return  # shutdown: the next start cleans up; a fleet document asks again
        except Rejected as exc:
            self._reject(req, ref, str(exc))
            return
        finally:
            shutil.rmtree(work, ignore_errors=True)
        self._swap_and_watch(req, ref, folder)

    def _download(self, req: UpdateRequest) -> Path:
        dest = self.store.downloads / f"{req.sha256}.tar.gz"  # <dest>.part until verified
        try:
            return fetch(req.url, dest, size=req.size, sha256=req.sha256, policy=self.policy,
                         stop=self._stop)  # fmt: skip
        except DownloadStopped:
            raise
        except DownloadError as exc:
            raise Rejected(exc.reason) from None

    def _verify(self, req: UpdateRequest, archive: Path, work: Path) -> Any:
        running, _ = self.host.running()
        try:
            return check_candidate(
                archive,
                sha256=req.sha256,
                size=req.size,
                public_keys=self.public_keys,
                highest_version=self.state.highest_version(req.name or running.name or ""),
                allow_downgrade=req.allow_downgrade,
                expected_task=self.host.task(),
                config_labels_problem=self.host.label_problems,
                agent_version=self.agent_version,
                work_dir=work,
            )
        except CandidateError as exc:
            # The words go to the model topic: the device's folders mean nothing there.
            raise Rejected(
                re.sub(rf"{re.escape(str(work))}/?\S*", "the bundle", exc.reason)
            ) from None
        finally:
            archive.unlink(missing_ok=True)

    def _trial(self, folder: Path) -> None:
        runtime, options = self.host.runtime_of(folder)
        report = run_trial(folder, runtime, options, timeout_s=self.trial_timeout_s,
                           memory_mb=self.trial_memory_mb)  # fmt: skip
        if not report.ok:
            raise Rejected(f"trial: {report.reason}")

    def _reject(self, req: UpdateRequest, ref: p.ModelRef, reason: str) -> None:
        """Refused before it ran: remembered with why, and said; the old model serves on."""
        self.state.clear_pending()
        self.state.mark_rejected(req.sha256, reason)
        self._say(p.REJECTED, ref, req.origin, reason)

    def _swap_and_watch(self, req: UpdateRequest, ref: p.ModelRef, folder: Path) -> None:
        _, old_id = self.host.running()
        try:
            new = self.host.load(folder)  # loaded and proven beside the old model
        except Exception as exc:  # a model the child ran but this process cannot
            self._reject(req, ref, f"cannot load: {exc}")
            return
        self._record(req, ref, p.TRIAL)
        self._say(p.TRIAL, ref, req.origin, f"on probation for {self.probation_s:g} s")
        crashpoint(p.TRIAL)
        self.store.activate(req.sha256)
        baseline = self.watch.baseline(old_id)
        self._old = self.host.swap(new)
        if ref.name is not None and ref.version is not None:
            if (self.state.highest_version(ref.name) or -1) < ref.version:
                self.state.accept_version(ref.name, ref.version)
        self._probation(req, ref, baseline)

    def _probation(self, req: UpdateRequest, ref: p.ModelRef, baseline: Baseline | None) -> None:
        """Watch the running new model until a verdict; roll back or make it active."""
        probation = Probation(baseline or Baseline(float("inf"), 0.0), self.probation_s,
                              PROBATION_MIN_FRAMES)  # fmt: skip
        _, model_id = self.host.running()
        self.watch.start(model_id, probation)
        crashpoint("probation")
        # Until a reason holds or the window has passed with enough frames (a camera that is
        # down keeps the model on probation: nothing has been proven yet).
        while not self._stop.is_set():
            if self.watch.decided.wait(PROBATION_POLL_S) or probation.passed(time.monotonic()):
                break
        self.watch.stop()
        if self._stop.is_set() and self.watch.verdict is None and probation.reason is None:
            return  # shutdown during probation: the next start resumes it (store.recover)
        verdict = self.watch.verdict or probation.reason
        if verdict is not None:
            self.state.mark_rejected(req.sha256, verdict)
            self._rollback(verdict, origin=req.origin, failed=ref)
            return
        self.state.clear_pending()
        self._old = None
        self._say(p.ACTIVE, ref, req.origin)
        crashpoint(p.ACTIVE)
        removed = self.store.cleanup(self.keep_models)
        if removed:
            log.info("model store: removed %s", ", ".join(removed))

    def _rollback(self, reason: str, origin: str, failed: p.ModelRef | None = None) -> str | None:
        folder = self.store.previous()
        if folder is None:
            return "there is no previous model to go back to"
        old = self._old
        try:
            predictor = old if old is not None else self.host.load(folder)
        except Exception as exc:
            return f"the previous model does not load: {exc}"
        self.store.rollback()
        self.host.swap(predictor)
        self._old = None
        self.state.clear_pending()
        back, _ = self.host.running()
        self._say(p.ROLLED_BACK, back, origin, reason if failed is None else
                  f"{failed.name}@{failed.version}: {reason}")  # fmt: skip
        return None
