"""The platform's limits on a dependency zip, shared by ``fgext package`` and ``fgext check``."""

from __future__ import annotations

import re

__all__ = ["DEPENDENCY_NAME", "MAX_FILES", "MAX_INLINE_BYTES", "MAX_UNPACKED_BYTES", "MB", "human_size"]

MB = 1024 * 1024
#: a zip up to this size can be uploaded inline (base64 in ``depend_file``); above it, through OBS
MAX_INLINE_BYTES = 40 * MB
#: a private dependency may be at most this large unpacked ...
MAX_UNPACKED_BYTES = 300 * MB
#: ... and hold at most this many files
MAX_FILES = 30_000
#: dependency names: start with a letter, end with a letter or digit, letters/digits/_/./-, <= 96 chars
DEPENDENCY_NAME = re.compile(r"^[A-Za-z](?:[A-Za-z0-9_.\-]{0,94}[A-Za-z0-9])?$")


def human_size(size: int) -> str:
    """``size`` bytes as a short human-readable string (binary units, as the limits are)."""
    if size < 1024:
        return f"{size} B"
    if size < MB:
        return f"{size / 1024:.1f} KB"
    return f"{size / MB:.1f} MB"
