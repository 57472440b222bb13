"""PolygonSet, the polygon test of zones and shelf slots: every (point, polygon) pair must be
answered as ``geometry.points_in_polygon`` answers it, edges, vertices and the tolerance
included, whichever path (rectangle, edge pass, prefiltered edge pass) decides it."""

from __future__ import annotations

from typing import Any
from unittest import mock

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_agent import polygons as polygons_module
from edge_agent.geometry import EDGE_TOLERANCE_PX, points_in_polygon
from edge_agent.polygons import PolygonSet


def assert_agrees(shapes: PolygonSet, points: np.ndarray, polygons: list[Any]) -> None:
    got = shapes.contains(points)
    assert got.shape == (len(points), len(polygons))
    for s, p in enumerate(polygons):
        want = points_in_polygon(points, np.array(p, np.float64))
        assert np.array_equal(got[:, s], want), (p, points[got[:, s] != want])


# --- integer polygons on a half-pixel grid ---------------------------------------------------

vertex = st.tuples(st.integers(0, 6), st.integers(0, 6))
polygon = st.lists(vertex, min_size=3, max_size=6).filter(
    lambda p: len(set(p)) > 1  # a polygon of one point is refused
) | st.builds(
    lambda x, y, w, h: [(x, y), (x + w, y), (x + w, y + h), (x, y + h)],
    *(st.integers(0, 3),) * 2,
    *(st.integers(1, 3),) * 2,
)  # rectangles, which skip the edge test
GRID = np.stack(np.meshgrid(np.arange(-1, 7.5, 0.5), np.arange(-1, 7.5, 0.5)), -1).reshape(-1, 2)


@settings(max_examples=200, deadline=None)
@given(polygons=st.lists(polygon, min_size=1, max_size=4))
def test_agrees_with_points_in_polygon_on_a_grid(polygons: list[list[tuple[int, int]]]) -> None:
    """Half-pixel grid points: on vertices, on edges, inside and out, of concave, repeated,
    flat and self-crossing polygons and of rectangles, each against every polygon."""
    assert_agrees(PolygonSet(polygons), GRID, polygons)


#: Thresholds that force each way of deciding: rectangles apart or in the edge pass, every
#: point in the edge pass or only those in some bounding box.
PATHS = {
    "rectangles apart": (0, 10**9),
    "rectangles apart, prefiltered": (0, 0),
    "all edges": (10**9, 10**9),
    "all edges, prefiltered": (10**9, 0),
}


def forced(path: str) -> Any:
    rectangles, prefilter = PATHS[path]
    return mock.patch.multiple(
        polygons_module, RECTANGLE_PATH_MIN_PAIRS=rectangles, PREFILTER_MIN_PAIRS=prefilter
    )


@settings(max_examples=50, deadline=None)
@given(polygons=st.lists(polygon, min_size=1, max_size=4), path=st.sampled_from(sorted(PATHS)))
def test_every_path_agrees(polygons: list[list[tuple[int, int]]], path: str) -> None:
    with forced(path):
        assert_agrees(PolygonSet(polygons), GRID, polygons)


# --- random star-shaped polygons, points on and beside their edges ----------------------------


def star(rng: np.random.Generator) -> np.ndarray:
    k = int(rng.integers(3, 9))
    angles = np.sort(rng.uniform(0, 2 * np.pi, k))
    radius = rng.uniform(0.1, 0.4, k)  # star-shaped: concave, never self-crossing
    centre = rng.uniform(0.4, 0.6, 2)
    return np.clip(centre + radius[:, None] * np.c_[np.cos(angles), np.sin(angles)], 0, 1)


def edge_points(polys: list[np.ndarray], rng: np.random.Generator) -> np.ndarray:
    """Random points, the vertices, points on the edges and on their lines beyond the ends,
    and points just within and just beyond the tolerance off every edge."""
    points = [rng.uniform(0, 1, (400, 2))]
    for poly in polys:
        t, edge = rng.uniform(0, 1, (len(poly), 1)), np.roll(poly, -1, axis=0) - poly
        normal = edge[:, ::-1] * [1, -1] / np.hypot(*edge.T)[:, None]
        on = poly + t * edge
        points += [poly, on, poly - t * edge, poly + (1 + t) * edge]
        points += [on + k * EDGE_TOLERANCE_PX * normal for k in (-3, -0.5, 0.5, 3)]
    return np.concatenate(points)


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("path", sorted(PATHS))
def test_concave_polygons_and_rectangles_in_one_set(seed: int, path: str) -> None:
    rng = np.random.default_rng(seed)
    polys = [star(rng).round(3) for _ in range(4)]
    polys += [np.array([[0.25, 0.25], [0.75, 0.25], [0.75, 0.75], [0.25, 0.75]])]
    polys += [np.array([[0.1, 0.9], [0.1, 0.2], [0.3, 0.2], [0.3, 0.9]])]  # clockwise
    shapes = PolygonSet(polys)
    assert shapes.rectangle.tolist() == [False] * 4 + [True, True]
    with forced(path):
        assert_agrees(shapes, edge_points(polys, rng), polys)


@pytest.mark.parametrize("path", sorted(PATHS))
def test_each_polygon_tests_the_points_of_its_group(path: str) -> None:
    """Groups: a zone or slot tests its own anchor of each box (here: a point set apiece)."""
    rng = np.random.default_rng(7)
    polys = [star(rng) for _ in range(3)] + [np.array([[0, 0], [0.5, 0], [0.5, 0.5], [0, 0.5]])]
    groups = [1, 0, 1, 0]
    points = np.stack([rng.uniform(0, 1, (300, 2)), rng.uniform(0, 1, (300, 2))])
    with forced(path):
        got = PolygonSet(polys, groups).contains(points)
    for s, (poly, g) in enumerate(zip(polys, groups, strict=True)):
        assert np.array_equal(got[:, s], points_in_polygon(points[g], poly))


def test_no_points_and_pixel_coordinates() -> None:
    shapes = PolygonSet([np.array([[0, 0], [640, 0], [320, 480]]), [[10, 10], [20, 10], [20, 20]]])
    assert shapes.contains(np.zeros((0, 2))).shape == (0, 2)
    got = shapes.contains(
        np.array([[320.0, 0.0], [320.0, 480.0 + 2e-9], [15.0, 12.0], [12.0, 15.0]])
    )
    assert got.tolist() == [[True, False], [False, False], [True, True], [True, False]]


# --- which polygons skip the edge test, and what is refused -----------------------------------


@pytest.mark.parametrize(
    ("polygon", "rectangle"),
    [
        ([(0, 0), (4, 0), (4, 2), (0, 2)], True),
        ([(0, 2), (4, 2), (4, 0), (0, 0)], True),  # the other way round
        ([(0, 0), (4, 0), (4, 2), (0, 2), (0, 2), (0, 2)], True),  # repeated vertices
        ([(0, 0), (2, 0), (4, 0), (4, 2), (0, 2)], False),  # a vertex mid-edge: tested
        ([(0, 0), (4, 0), (4, 2), (0, 2)] * 2, False),  # twice round: even-odd says empty
        ([(0, 0), (4, 0), (0, 0), (0, 2)], False),  # no area
        ([(0, 0), (4, 0), (4, 1), (2, 1), (2, 2), (0, 2)], False),  # an L
        ([(0, 0), (4, 0), (4, 2)], False),
    ],
)
def test_only_true_rectangles_skip_the_edge_test(polygon: list[Any], rectangle: bool) -> None:
    assert PolygonSet([polygon]).rectangle.tolist() == [rectangle]


@pytest.mark.parametrize(
    ("polygons", "groups", "message"),
    [
        ([], (), "at least one polygon"),
        ([[(0, 0), (1, 1)]], (), r"polygon 0 must have shape \(K>=3, 2\), but got \(2, 2\)"),
        ([[(0, 0), (1, 1), (1, 0)], [(2, 2)] * 3], (), "polygon 1 has all its vertices at one"),
        ([[(0, 0), (1, 1), (1, 0)]], (0, 1), "groups must be 1 indices >= 0"),
    ],
)
def test_bad_polygons_are_refused(polygons: list[Any], groups: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        PolygonSet(polygons, groups)


def test_points_of_the_wrong_shape_are_refused() -> None:
    shapes = PolygonSet([[(0, 0), (1, 1), (1, 0)]] * 2, groups=[0, 1])
    with pytest.raises(ValueError, match=r"points must have shape \(2, N, 2\).*got \(5, 2\)"):
        shapes.contains(np.zeros((5, 2)))
