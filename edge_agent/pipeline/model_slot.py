"""The model the inference thread uses, swappable between two frames without stopping a thread.

Each frame takes the slot's current predictor when it is pre-processed and keeps that one through
inference and decoding, so a frame in flight during a swap finishes on the model that prepared
it: no frame is lost or decoded with the wrong anchors. The slot never closes a model frames may
still use: a swapped-out predictor is returned to the caller (the updater keeps it for a
rollback) and freed by reference counting once the last frame holding it is done.
"""

from __future__ import annotations

import ctypes
import logging
import threading
from collections.abc import Callable

from edge_agent.predictor import Predictor

log = logging.getLogger(__name__)

SwapListener = Callable[[Predictor], None]


class ModelSlot:
    def __init__(self, predictor: Predictor) -> None:
        self._current = predictor
        self._lock = threading.Lock()
        self._listeners: list[SwapListener] = []

    @property
    def current(self) -> Predictor:
        return self._current  # one attribute read: atomic, no lock on the per-frame path

    def subscribe(self, listener: SwapListener) -> None:
        """Call ``listener(new_predictor)`` after every swap (status payloads name the model)."""
        self._listeners.append(listener)

    def swap(self, predictor: Predictor) -> Predictor:
        """Make ``predictor`` the model for every frame prepared from now on; return the old one."""
        with self._lock:
            old, self._current = self._current, predictor
        log.info("model swapped: %s -> %s", old.model_id, predictor.model_id)
        for listener in self._listeners:
            try:
                listener(predictor)
            except Exception:
                log.exception("a model swap listener failed (ignored)")
        return old

    def close(self) -> None:
        self._current.close()


def return_free_heap() -> None:
    """Give the C heap's free pages back to the system (glibc keeps them by default): the
    model's loading and graph optimisation free ~2 MB that would otherwise stay resident."""
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError, TypeError):
        pass  # not glibc: nothing to do
