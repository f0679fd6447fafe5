"""bars: open benchmarking for CTR prediction."""

__version__ = "0.1.0"
