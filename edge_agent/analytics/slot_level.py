"""A shelf slot's debounced count (``SlotLevel``), which a hand in front of the shelf does not
move. The ``slots`` stage (slots.py) keeps one per slot."""

from __future__ import annotations

import math
from collections import deque


class SlotLevel:
    """A slot's debounced count: it drops to X when no frame of the last ``debounce_s`` saw
    more than X, and rises to X when every one saw at least X. A new level must so hold for
    ``debounce_s`` of capture time; a shorter dip or blip changes nothing, and flicker around
    the count (a box missed now and then) keeps it. Each frame's count holds until the next
    frame, so after a gap (a stalled camera) one frame is not enough. The count is None until
    frames have spanned ``debounce_s``; it then starts at the most any of them saw (a missed
    box is likelier than a phantom one).

    Two monotonic queues give the window's maximum and minimum in O(1) per frame (the sliding
    window maximum); on a still shelf each holds one entry.
    """

    def __init__(self, debounce_s: float) -> None:
        self.debounce_s = debounce_s
        self.count: int | None = None
        self._start: float | None = None  # first frame of the current run of frames
        self._last = -math.inf
        self._most: deque[list[float]] = deque()  # [count, held until], counts decreasing
        self._least: deque[list[float]] = deque()  # counts increasing
        self._steady = False  # the count was committed and every frame of the window saw it

    def reset(self) -> None:
        """Forget the frames (not the count): the next change needs a whole window again."""
        self._start, self._last, self._steady = None, -math.inf, False
        self._most.clear()
        self._least.clear()

    def update(self, ts: float, seen: int) -> bool:
        """Add one frame's count; True when the debounced count changed or became known."""
        if self._steady and seen == self.count and ts >= self._last:
            self._last = ts  # a still shelf: the one entry of each queue holds on
            return False
        if ts < self._last:  # the clock or a looping video went back: start over
            self.reset()
        if self._start is None:
            self._start = ts
        self._last = ts
        cutoff = ts - self.debounce_s
        for queue, sign in ((self._most, 1), (self._least, -1)):
            if queue and queue[-1][0] == seen:  # the count goes on: so does its entry, the
                queue[-1][1] = math.inf  # last (counts in a queue are strictly monotonic)
            else:
                if queue:
                    queue[-1][1] = ts  # the previous frame's count held until this frame
                while queue and sign * queue[-1][0] <= sign * seen:
                    queue.pop()  # never again the window's extreme: this frame outlasts it
                queue.append([seen, math.inf])
            while queue[0][1] <= cutoff:
                queue.popleft()
        if self._start > cutoff:
            return False
        most, least = int(self._most[0][0]), int(self._least[0][0])
        self._steady = most == least == seen and len(self._most) == len(self._least) == 1
        if self.count is None or most < self.count:
            new = most
        elif least > self.count:
            new = least
        else:
            return False
        changed = new != self.count
        self.count = new
        return changed
