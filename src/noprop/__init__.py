"""noprop: training neural networks without back-propagation across blocks (NoProp, arXiv 2503.24322)."""

__version__ = "0.1.0"
