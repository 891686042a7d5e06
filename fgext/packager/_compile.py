"""Byte code for the target: compiled by an interpreter of the target's version, as unchecked-hash .pyc.

The sandbox unpacks the zip with new timestamps and its code directory is read-only. A timestamp-based
``.pyc`` would not match the unpacked sources and could not be rewritten, so every cold start would
compile every module again. An unchecked-hash ``.pyc`` (PEP 552) is used without looking at the source.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

from fgext._errors import PackageError

__all__ = ["compile_tree"]

# Runs under the target interpreter (-s, not -I: -I would ignore PYTHONHASHSEED): compile every .py
# below each root, in a fixed order.
_SCRIPT = r"""
import importlib.util, json, os, py_compile, sys
roots = json.loads(sys.argv[1])
count, failed = 0, []
for root, shown in roots:
    for folder, dirs, files in os.walk(root):
        dirs.sort()
        for name in sorted(files):
            if not name.endswith(".py"):
                continue
            source = os.path.join(folder, name)
            relative = os.path.relpath(source, root)
            try:
                py_compile.compile(source, cfile=importlib.util.cache_from_source(source),
                                   dfile=shown + "/" + relative.replace(os.sep, "/"), doraise=True,
                                   invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH)
                count += 1
            except py_compile.PyCompileError as error:
                failed.append([relative, str(error.exc_value).splitlines()[0] if str(error.exc_value) else ""])
print(json.dumps({"compiled": count, "failed": failed, "tag": sys.implementation.cache_tag}))
"""


def compile_tree(python: str, roots: Sequence[Tuple[Path, str]]) -> Dict[str, object]:
    """Compile the ``.py`` files under each (folder, name shown in tracebacks) root with ``python``."""
    environ = {key: value for key, value in os.environ.items() if not key.startswith("PYTHON")}
    # Constant sets are marshalled in hash order: a fixed seed makes the .pyc bytes reproducible.
    environ["PYTHONHASHSEED"] = "0"
    payload = json.dumps([[str(folder), shown] for folder, shown in roots])
    try:
        done = subprocess.run([python, "-s", "-c", _SCRIPT, payload], capture_output=True, text=True,
                              env=environ, cwd=str(roots[0][0].parent), timeout=600, check=False)
    except (OSError, subprocess.SubprocessError) as error:
        raise PackageError(f"could not run {python} to compile byte code: {error}") from error
    if done.returncode != 0:
        raise PackageError(f"{python} failed to compile byte code:\n{done.stderr.strip()[-2000:]}")
    result: Dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    failed: List[List[str]] = result.get("failed", [])  # type: ignore[assignment]
    result["failed"] = [f"{path}: {message}" for path, message in failed]
    return result
