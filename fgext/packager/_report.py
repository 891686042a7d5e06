"""The report a person reads after ``fgext package``, and the one after ``fgext check``."""

from __future__ import annotations

from typing import List, Sequence

from fgext.packager._build import BuildResult
from fgext.packager._check import Finding
from fgext.packager._limits import MAX_FILES, MAX_INLINE_BYTES, MAX_UNPACKED_BYTES, human_size

__all__ = ["render_build", "render_check"]

_TOP = 10


def render_build(result: BuildResult) -> str:
    """The multi-line build report: sizes, largest contributors, distributions, and what to do next."""
    lines: List[str] = [f"Built {result.output} for {result.runtime} ({result.arch})", ""]
    obs = "  -> above the inline limit: upload through OBS" if result.needs_obs else ""
    lines.append(f"  compressed  {human_size(result.compressed):>9}  ({result.compressed:,} bytes; inline "
                 f"upload limit {human_size(MAX_INLINE_BYTES)}){obs}")
    lines.append(f"  unpacked    {human_size(result.unpacked):>9}  in {result.files:,} files (limits "
                 f"{human_size(MAX_UNPACKED_BYTES)}, {MAX_FILES:,} files)")
    code = result.bytecode
    if code.get("python"):
        lines.append(f"  byte code   {code['compiled']:,} modules compiled by {code['python']} "
                     f"({code.get('tag')}, unchecked-hash .pyc)")
    else:
        lines.append("  byte code   none (sources only)")
    lines.append(f"  launcher    {result.launcher} (mode 0755)")
    if result.plugins:
        lines.append(f"  plugins     {', '.join(result.plugins)} in extension/fgext-plugins/")
    if result.config:
        lines.append(f"  config      {result.config}")
    removed = result.removed
    if removed.get("files"):
        lines.append(f"  left out    {removed['files']:,} files, {human_size(removed['bytes'])} "
                     "(tests, docs, stubs, C sources, caches, RECORD files)")
    stripped = removed.get("debug_info_stripped") or {}
    if stripped.get("files"):
        lines.append(f"  stripped    debug info from {stripped['files']} shared libraries "
                     f"({human_size(stripped['saved'])} less)")
    lines.append(f"  sha256      {result.sha256}")
    # One count everywhere: the distributions listed below; the launcher, config and plugins come on top.
    others = len(result.contributors) - len(result.distributions)
    parts = f"{len(result.distributions)} distributions" + (f" + {others} more (launcher, config, plugins)"
                                                           if others > 0 else "")
    lines += ["", f"Largest contributors (top {min(_TOP, len(result.contributors))} of {parts}):",
              f"  {'':40} {'unpacked':>10} {'compressed':>11} {'files':>6}"]
    for item in result.contributors[:_TOP]:
        lines.append(f"  {item.name[:40]:40} {human_size(item.unpacked):>10} "
                     f"{human_size(item.compressed):>11} {item.files:>6}")
    lines += ["", f"Distributions ({len(result.distributions)}):"]
    width = max((len(d["name"]) + len(d["version"]) + 1 for d in result.distributions), default=20)
    for dist in result.distributions:
        lines.append(f"  {(dist['name'] + ' ' + dist['version']):{width}}  {dist['tags']}")
    if result.warnings:
        lines += ["", "Warnings:"] + [f"  ! {warning}" for warning in result.warnings]
    inline = ("depend_type obs with depend_link = the zip's OBS URL (it is above the inline limit)"
              if result.needs_obs else
              "depend_type zip with depend_file = the zip in base64, or depend_type obs with depend_link")
    from fgext.publish._plan import needs_obs  # a signed request's body limit makes OBS needed sooner

    obs_link = " --obs-link <its OBS URL>" if needs_obs(result.compressed) else ""
    lines += [
        "",
        "Add it to a function:",
        f"  fgext publish {result.output} --function <function URN> --region <region>{obs_link}",
        "  (pip install 'fgext[publish]'; docs/packaging.md, \"Publish it\"), or by hand:",
        f"  1. Create a dependency from {result.output}: console FunctionGraph > Functions > Dependencies >",
        f"     Create Dependency (runtime {result.runtime}), or the dependency API with",
        f"     {inline}, runtime {result.runtime}.",
        f"  2. In the function ({result.runtime}, architecture {result.arch}): Code > Dependencies > Add,",
        "     choose that dependency version, and save.",
        f"  3. The platform starts {result.launcher} next to the function; set FGEXT_* environment",
        "     variables on the function to configure the agent (see docs).",
    ]
    return "\n".join(lines)


def render_check(path: str, findings: Sequence[Finding], strict: bool = False) -> str:
    """One line per finding, then a summary line (in strict mode, warnings are what fails)."""
    errors = sum(1 for finding in findings if finding.severity == "error")
    warnings = len(findings) - errors
    lines = [f"{path}: {finding}" for finding in findings]
    if errors:
        lines.append(f"{path}: {errors} problem(s), {warnings} warning(s)")
    elif strict and warnings:
        lines.append(f"{path}: {warnings} warning(s), which fail in --strict mode")
    else:
        lines.append(f"{path}: ok" + (f" ({warnings} warning(s))" if warnings else ""))
    return "\n".join(lines)
