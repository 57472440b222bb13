"""Per-frame counts per label, zeros included."""

import numpy as np

from edge_agent.analytics.counting import frame_counts
from edge_agent.types import Classifications, Detections

LABELS = ["cola", "water", "chips"]
THR = np.array([0.5, 0.5, 0.9], np.float32)


def test_detections_counted_per_class_with_zeros():
    d = Detections(np.zeros((3, 4)), np.ones(3), np.array([0, 0, 2]))
    assert frame_counts(d, LABELS, THR) == {"cola": 2, "water": 0, "chips": 1}
    assert frame_counts(Detections.empty(), LABELS, THR) == dict.fromkeys(LABELS, 0)


def test_multiclass_counts_top_label_only_above_its_threshold():
    assert frame_counts(Classifications(np.array([0.1, 0.8, 0.1])), LABELS, THR)["water"] == 1
    low = frame_counts(Classifications(np.array([0.1, 0.05, 0.85])), LABELS, THR)
    assert low == dict.fromkeys(LABELS, 0)  # chips needs 0.9


def test_multilabel_counts_each_label_above_threshold():
    c = Classifications(np.array([0.6, 0.7, 0.95]), multilabel=True)
    assert frame_counts(c, LABELS, THR) == {"cola": 1, "water": 1, "chips": 1}
