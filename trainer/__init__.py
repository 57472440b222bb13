"""Off-device trainer: datasets, synthetic data and (later) training, evaluation and export.

Nothing imported from here may pull in torch: dataset tooling must run on a laptop or CI box with
only numpy, OpenCV and PyYAML installed.
"""

__version__ = "0.1.0"
