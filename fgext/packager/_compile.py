"""Byte code for the target: compiled by an interpreter of the target's version, as unchecked-hash .pyc.

The sandbox unpacks the zip with new timestamps and its code directory is read-only. A timestamp-based
``.pyc`` would not match the unpacked sources and could not be rewritten, so every cold start would
compile every module again. An unchecked-hash ``.pyc`` (PEP 552) is used without looking at the source.

The libraries' byte code leaves out docstrings (as ``python -OO`` does, but keeping ``assert`` statements):
the agent imports them once and holds them for its life, and their docstrings were ~0.6 MB of its resident
memory. The interpreter is not run with ``-OO`` instead: that looks for ``.opt-2.pyc`` files, which the
runtime's own standard library may not have, and it would also strip ``assert`` statements. The user's
plugins (fgext-plugins) are compiled as written.

The byte code of the agent's own libraries (fgext and what its runtime pulls in, not a ``--requirement``'s)
also leaves out the annotations of functions' parameters and return values: on Python 3.9 every annotated
function holds a dict of them (~0.8 MB of the agent's resident memory), and nothing the agent runs reads
them. Annotations of class and module variables stay: dataclasses and attrs build their fields from them.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Collection, Dict, List, Sequence, Tuple

from fgext._errors import PackageError

__all__ = ["compile_tree"]

# Runs under the target interpreter (-s, not -I: -I would ignore PYTHONHASHSEED): compile every .py
# below each root, in a fixed order.
_SCRIPT = r"""
import ast, importlib.util, json, marshal, os, sys

def without_docstrings(tree):
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) \
                    and isinstance(first.value.value, str):
                # A module may start with an empty body; a def or class needs a statement. A module keeps
                # no placeholder: "from __future__" must stay its first statement.
                node.body[:1] = [] if isinstance(node, ast.Module) or len(node.body) > 1 \
                    else [ast.copy_location(ast.Pass(), first)]
    return tree

def without_annotations(tree):
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            node.returns = None
            arguments = node.args
            for arg in (*arguments.posonlyargs, *arguments.args, *arguments.kwonlyargs, arguments.vararg,
                        arguments.kwarg):
                if arg is not None:
                    arg.annotation = None
    return tree

roots = json.loads(sys.argv[1])
bare = set(json.loads(sys.stdin.read() or "[]"))  # hundreds of paths: too many for one argument
count, failed = 0, []
for root, shown, strip in roots:
    for folder, dirs, files in os.walk(root):
        dirs.sort()
        for name in sorted(files):
            if not name.endswith(".py"):
                continue
            source = os.path.join(folder, name)
            relative = os.path.relpath(source, root)
            with open(source, "rb") as file:
                data = file.read()
            shown_as = shown + "/" + relative.replace(os.sep, "/")
            try:
                tree = ast.parse(data, shown_as)
                if strip:
                    tree = without_docstrings(tree)
                    if relative.replace(os.sep, "/") in bare:
                        tree = without_annotations(tree)
                code = compile(tree, shown_as, "exec", dont_inherit=True)
            except Exception as error:  # what py_compile reports as PyCompileError: the module ships as source
                failed.append([relative, str(error).splitlines()[0] if str(error) else ""])
                continue
            # PEP 552: magic, flags 0b01 (hash-based, unchecked), the source's hash, the marshalled code.
            pyc = importlib.util.MAGIC_NUMBER + (0b01).to_bytes(4, "little") + importlib.util.source_hash(data) \
                + marshal.dumps(code)
            target = importlib.util.cache_from_source(source)
            os.makedirs(os.path.dirname(target), exist_ok=True)
            with open(target, "wb") as file:
                file.write(pyc)
            count += 1
print(json.dumps({"compiled": count, "failed": failed, "tag": sys.implementation.cache_tag}))
"""


def compile_tree(python: str, roots: Sequence[Tuple[Path, str, bool]],
                 bare: Collection[str] = ()) -> Dict[str, object]:
    """Compile the ``.py`` files under each (folder, name shown in tracebacks, strip docstrings) root with
    ``python``; in a stripped root, the files at the paths in ``bare`` (relative to their root, with ``/``)
    also lose their functions' annotations."""
    environ = {key: value for key, value in os.environ.items() if not key.startswith("PYTHON")}
    # Constant sets are marshalled in hash order: a fixed seed makes the .pyc bytes reproducible.
    environ["PYTHONHASHSEED"] = "0"
    payload = json.dumps([[str(folder), shown, strip] for folder, shown, strip in roots])
    if os.sep in python:  # runs in another folder (below): --python .venv39/bin/python was not found there
        python = os.path.abspath(python)
    try:
        done = subprocess.run([python, "-s", "-c", _SCRIPT, payload], input=json.dumps(sorted(bare)),
                              capture_output=True, text=True, env=environ, cwd=str(roots[0][0].parent),
                              timeout=600, check=False)
    except (OSError, subprocess.SubprocessError) as error:
        raise PackageError(f"could not run {python} to compile byte code: {error}") from error
    if done.returncode != 0:
        raise PackageError(f"{python} failed to compile byte code:\n{done.stderr.strip()[-2000:]}")
    result: Dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    failed: List[List[str]] = result.get("failed", [])  # type: ignore[assignment]
    result["failed"] = [f"{path}: {message}" for path, message in failed]
    return result
