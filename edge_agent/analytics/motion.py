"""Where each track's box should be now: a constant-velocity Kalman filter in seconds, one
independent filter per box coordinate (cx, cy, w, h), vectorised over every track.

ByteTrack's filter (and the roboflow/supervision copies of it) steps once per *frame*, with
noise per frame: the same scene filmed at 5 and at 30 fps is then tracked with different
motion models, and a dropped frame looks like a halted object. Here time is the frames' capture
time: the process noise is the continuous white-noise-acceleration model (Bar-Shalom, Li and
Kirubarajan, *Estimation with Applications to Tracking*, 6.2.2), whose covariance over ``dt``
is ``q * [[dt^3/3, dt^2/2], [dt^2/2, dt]]``. Two steps of ``dt/2`` give exactly one step of
``dt``, so the frame rate and dropped frames change nothing but how often we look.

Each coordinate's 2x2 covariance is kept as three arrays, so predict and correct are a dozen
elementwise numpy operations on (T, 4) arrays, with no per-track Python and no 8x8 matrices.
Noise scales with the box's size (x and width with the width, y and height with the height),
as ByteTrack scales it with the height: a near, large person moves more pixels per second.
"""

from __future__ import annotations

import numpy as np

#: Std of a detector's box coordinates around the truth, as a fraction of the box's size
#: (ByteTrack uses 1/20 of the height).
MEASUREMENT_STD = 0.05
#: Std of the white-noise acceleration, in box sizes per s^1.5: how far from straight lines at
#: constant speed objects wander. 1.0 is ByteTrack's per-frame velocity noise (h/160 at 30 fps)
#: converted to seconds; the tracking oracle (bench/bench_tracking.py) agrees.
ACCELERATION_STD = 1.0
#: Std of a new track's unknown velocity, in box sizes per second (a person walks about one
#: to two body widths per second).
INITIAL_VELOCITY_STD = 2.0
#: Smallest width or height a predicted box keeps, in pixels, when a shrinking box is
#: extrapolated through a long gap.
MIN_SIZE_PX = 1.0

# Rows of the state array, shape (5, T, 4): per track, per coordinate (cx, cy, w, h), each
# row contiguous so every operation below runs on whole (T, 4) blocks.
X, V, P00, P01, P11 = range(5)
STATE_ROWS = 5
#: The size each coordinate's noise scales with: cx and w with w, cy and h with h.
_SIZE_COLUMNS = np.array([2, 3, 2, 3])


def _cxcywh(xyxy: np.ndarray) -> np.ndarray:
    boxes = np.asarray(xyxy, np.float64)
    out = np.empty_like(boxes)
    size = np.subtract(boxes[:, 2:], boxes[:, :2], out=out[:, 2:])
    np.add(boxes[:, :2], size / 2, out=out[:, :2])
    return out


def _variance(x: np.ndarray, std: float) -> np.ndarray:
    """(T, 4) variance of a noise whose std is ``std`` times the size (w, h, w, h)."""
    scaled = x[:, _SIZE_COLUMNS]
    np.maximum(scaled, MIN_SIZE_PX, out=scaled)
    scaled *= std
    scaled *= scaled
    return scaled


def empty_state() -> np.ndarray:
    return np.zeros((STATE_ROWS, 0, 4))


def initial_state(xyxy: np.ndarray) -> np.ndarray:
    """(5, N, 4) states for new tracks at these boxes: at rest, with velocity unknown."""
    state = np.zeros((STATE_ROWS, len(xyxy), 4))
    state[X] = _cxcywh(xyxy)
    state[P00] = _variance(state[X], MEASUREMENT_STD)
    state[P11] = _variance(state[X], INITIAL_VELOCITY_STD)
    return state


def predict(state: np.ndarray, dt: float) -> None:
    """Move every track ``dt`` seconds ahead, in place: position by velocity, uncertainty by
    the covariance propagation plus the process noise accumulated over ``dt``."""
    if dt <= 0 or state.shape[1] == 0:
        return
    x, v, p00, p01, p11 = state
    q = _variance(x, ACCELERATION_STD)
    x += v * dt
    p00 += 2 * dt * p01 + dt * dt * p11 + q * (dt**3 / 3)
    p01 += dt * p11 + q * (dt * dt / 2)
    p11 += q * dt


def correct(state: np.ndarray, rows: np.ndarray, xyxy: np.ndarray) -> None:
    """Fold the measured boxes ``xyxy`` (M, 4) into the tracks at ``rows`` (M,), in place.

    Runs on every track at once: an unmatched track gets an infinitely noisy measurement of
    where it already is, so its gain is 0 and nothing changes (cheaper than gathering and
    scattering the matched rows, and in most frames every track is matched).
    """
    if len(rows) == 0:
        return
    x, v, p00, p01, p11 = state
    z = x.copy()
    z[rows] = _cxcywh(xyxy)
    noise = _variance(x, MEASUREMENT_STD)
    if len(rows) < len(x):
        unmatched = np.ones(len(x), bool)
        unmatched[rows] = False
        noise[unmatched] = np.inf
    innovation_var = p00 + noise
    k0 = p00 / innovation_var
    k1 = p01 / innovation_var
    z -= x  # the residual
    x += k0 * z
    v += k1 * z
    p11 -= k1 * p01  # uses P01 before its own update
    k0 = 1 - k0
    p01 *= k0
    p00 *= k0


def boxes(state: np.ndarray) -> np.ndarray:
    """(T, 4) float64 xyxy boxes where the tracks are predicted to be."""
    centre = state[X, :, :2]
    half = np.maximum(state[X, :, 2:], MIN_SIZE_PX) / 2
    return np.concatenate([centre - half, centre + half], axis=1)
