"""``fgext package`` and ``fgext check``: build and validate FunctionGraph dependency zips.

A build tool: it runs on the developer's machine or in CI, never inside the sandbox, and is left out
of the zips it builds.
"""

from __future__ import annotations

from fgext.packager._build import BuildOptions, BuildResult, Contributor, build
from fgext.packager._check import Finding, check_zip
from fgext.packager._runtimes import ARCHITECTURES, RUNTIMES, Runtime, get_runtime

__all__ = [
    "ARCHITECTURES",
    "RUNTIMES",
    "BuildOptions",
    "BuildResult",
    "Contributor",
    "Finding",
    "Runtime",
    "build",
    "check_zip",
    "get_runtime",
]
