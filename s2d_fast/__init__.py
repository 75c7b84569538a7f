"""s2d-fast: Synopsis-to-Detail Networks (S2DNet, ECCV 2022) for video recognition."""

__version__ = "0.1.0"
