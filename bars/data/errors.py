"""Errors raised by data preparation and loading. Messages carry values: file, line, key, expectation."""

from __future__ import annotations


class DataError(ValueError):
    """Bad raw input, a checksum mismatch, a bad config key or a prepared folder that does not verify."""
