"""What ``fgext publish`` will do, decided before any request: the zip, its runtime, the name, the requests.

Everything here is pure (no SDK, no network), so a mistake on the command line is found and reported
before anything is created, and ``--dry-run`` prints exactly the plan the real run follows.
"""

from __future__ import annotations

import json
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Set, Tuple

from fgext._errors import ConfigError, PackageError, UrnError
from fgext._urn import parse_urn
from fgext.packager._limits import DEPENDENCY_NAME, MAX_INLINE_BYTES, MB, human_size
from fgext.packager._runtimes import RUNTIMES, get_runtime

__all__ = [
    "CODE_PATH",
    "CREATE_PATH",
    "Attached",
    "Publication",
    "attach_version",
    "check_function_urn",
    "check_name",
    "inline_body_size",
    "needs_obs",
    "render_dry_run",
    "runtime_of_zip",
]

CREATE_PATH = "/v2/{project_id}/fgs/dependencies/version"
SHOW_VERSION_PATH = "/v2/{project_id}/fgs/dependencies/{depend_id}/version/{version}"
CODE_PATH = "/v2/{project_id}/fgs/functions/{function_urn}/code"
MAX_DESCRIPTION = 512  # the API's limit on a dependency's description
#: the API takes AK/SK-signed requests (the SDK's way) with bodies up to 12 MB (spec 4.2): with the
#: zip in base64, that is a zip of about 9 MB, below the 40 MB an inline dependency may have
MAX_SIGNED_BODY = 12 * MB
_BODY_OVERHEAD = 1024  # the JSON around depend_file: keys, runtime, name, a description of <= 512 chars


def inline_body_size(zip_size: int) -> int:
    """The size of a CreateDependencyVersion body that carries a zip of ``zip_size`` bytes in base64."""
    return 4 * ((zip_size + 2) // 3) + _BODY_OVERHEAD


def needs_obs(zip_size: int) -> bool:
    """True when a zip this large cannot go inline in a signed request and must be uploaded to OBS."""
    return zip_size > MAX_INLINE_BYTES or inline_body_size(zip_size) > MAX_SIGNED_BODY

# `fgext package` compiles byte code with an interpreter of the target runtime, and the wheels it
# resolves carry the target's ABI in their extension modules' names: both say which runtime it is for.
_PYC_TAG = re.compile(r"/__pycache__/[^/]+\.cpython-(\d)(\d+)(?:\.opt-\d)?\.pyc$")
_SO_TAG = re.compile(r"\.cpython-(\d)(\d+)[^/]*\.so$")
_NAME_RULE = ("dependency names start with a letter, end with a letter or digit, use only letters, digits, "
              "'_', '.' and '-', and have at most 96 characters")


def runtime_of_zip(names: Sequence[str]) -> Dict[str, str]:
    """The runtimes the zip's byte code and extension modules were built for: {runtime: evidence}."""
    found: Dict[str, str] = {}
    for name in names:
        for pattern, kind, verb in ((_PYC_TAG, "byte code", "is"), (_SO_TAG, "extension modules", "are")):
            match = pattern.search("/" + name)
            if match:
                runtime = f"Python{match.group(1)}.{match.group(2)}"
                found.setdefault(runtime, f"its {kind} {verb} cpython-{match.group(1)}{match.group(2)}")
    return found


def check_name(name: str) -> str:
    """``name`` if the API will take it as a dependency name, else a ConfigError with the rule."""
    if not DEPENDENCY_NAME.match(name):
        raise ConfigError(f"--name {name!r} is not a valid dependency name: {_NAME_RULE}")
    return name


def check_function_urn(value: str) -> str:
    """``value`` if it is a full function URN (urn:fss:...), which the code API takes in its path."""
    try:
        urn = parse_urn(value)
    except UrnError as error:
        raise ConfigError(f"--function {value!r}: {error}") from None
    if urn.form != "public":
        raise ConfigError(f"--function {value!r}: give the function's full URN "
                          "(urn:fss:<region>:<project_id>:function:<package>:<name>[:<version>]), "
                          "as the console shows it")
    return value


@dataclass(frozen=True)
class Publication:
    """The dependency version to create: from a zip inline, or from the OBS link the user gave."""

    zip: Path
    size: int
    runtime: str
    runtime_source: str
    name: str
    description: Optional[str]
    obs_link: Optional[str]

    @property
    def depend_type(self) -> str:
        return "obs" if self.obs_link else "zip"

    def body(self, depend_file: Optional[str]) -> Dict[str, Any]:
        """The CreateDependencyVersion body; ``depend_file`` is the base64 zip (None in a dry run)."""
        body: Dict[str, Any] = {"depend_type": self.depend_type, "runtime": self.runtime, "name": self.name}
        if self.obs_link:
            body["depend_link"] = self.obs_link
        else:
            body["depend_file"] = depend_file
        if self.description is not None:
            body["description"] = self.description
        return body

    @classmethod
    def from_zip(cls, path: Path, *, runtime: Optional[str], name: Optional[str], description: Optional[str],
                 obs_link: Optional[str]) -> Publication:
        """Validate every input against the zip and the API's rules; ConfigError (exit 2) or PackageError."""
        from fgext.packager._check import check_zip

        if not path.is_file():
            raise ConfigError(f"{path}: no such file")
        chosen_name = check_name(name if name is not None else path.stem)
        if description is not None and len(description) > MAX_DESCRIPTION:
            raise ConfigError(f"--description has {len(description)} characters; the API takes at most "
                              f"{MAX_DESCRIPTION}")
        if obs_link is not None and not obs_link.startswith("https://"):
            raise ConfigError(f"--obs-link {obs_link!r}: give the object's https:// URL as OBS shows it")
        findings = check_zip(path, dependency_name=chosen_name)
        errors = [finding for finding in findings if finding.severity == "error"]
        if errors:
            raise PackageError(f"{path} does not pass `fgext check`, so it would not start as an extension: "
                               + "; ".join(str(finding) for finding in errors))
        with zipfile.ZipFile(path) as archive:
            built_for = runtime_of_zip(archive.namelist())
        chosen, source = _choose_runtime(path, runtime, built_for)
        size = path.stat().st_size
        if obs_link is None and size > MAX_INLINE_BYTES:
            raise ConfigError(f"{path} is {human_size(size)}, above the API's {human_size(MAX_INLINE_BYTES)} "
                              "inline limit: upload it to OBS and give its URL with --obs-link")
        if obs_link is None and inline_body_size(size) > MAX_SIGNED_BODY:
            raise ConfigError(f"{path} is {human_size(size)}: inline, in base64, it makes a "
                              f"{human_size(inline_body_size(size))} request, above the "
                              f"{human_size(MAX_SIGNED_BODY)} the API accepts in a request signed with an "
                              "access key (as the SDK signs): upload it to OBS and give its URL with --obs-link")
        return cls(zip=path, size=size, runtime=chosen, runtime_source=source, name=chosen_name,
                   description=description, obs_link=obs_link)


def _choose_runtime(path: Path, flag: Optional[str], built_for: Mapping[str, str]) -> Tuple[str, str]:
    wanted = get_runtime(flag).name if flag is not None else None
    known = {runtime: why for runtime, why in built_for.items() if runtime in RUNTIMES}
    if wanted is not None:
        if known and wanted not in known:
            built = ", ".join(f"{runtime} ({why})" for runtime, why in sorted(known.items()))
            raise ConfigError(f"--runtime {wanted} disagrees with {path}, built for {built}: rebuild it with "
                              f"`fgext package --runtime {wanted}`, or drop --runtime")
        return wanted, "--runtime"
    if len(known) == 1:
        [(runtime, why)] = known.items()
        return runtime, f"read from the zip: {why}"
    if known:
        raise ConfigError(f"{path} holds byte code or modules for several runtimes ({', '.join(sorted(known))}): "
                          "say which one with --runtime")
    raise ConfigError(f"{path} has no byte code or extension modules that name a Python version: say which "
                      f"runtime it is for with --runtime ({', '.join(RUNTIMES)})")


@dataclass(frozen=True)
class Attached:
    """One dependency version a function's code settings list (from the code API's ``dependencies``)."""

    id: str
    dep_id: Optional[str]
    name: Optional[str]


def attach_version(current: Sequence[str], attached: Sequence[Attached], new: Attached) -> Tuple[List[str], List[str]]:
    """``depend_version_list`` with ``new`` in place of every earlier version of the same dependency.

    Returns (the new list, the version IDs it replaced). A version is "of the same dependency" when its
    dependency ID is ``new``'s (or, when either side does not say, its name is). The first replaced
    entry's position is kept, so the order of the function's other dependencies does not change; every
    ID the function lists that is not of this dependency is kept as it is.
    """
    def same(entry: Attached) -> bool:
        if entry.id == new.id:
            return True
        if entry.dep_id and new.dep_id:
            return entry.dep_id == new.dep_id
        return bool(entry.name) and entry.name == new.name

    earlier: Set[str] = {entry.id for entry in attached if same(entry)}
    result: List[str] = []
    replaced: List[str] = []
    for version_id in current:
        if version_id in earlier or version_id == new.id:
            if new.id not in result:
                result.append(new.id)
            if version_id != new.id:
                replaced.append(version_id)
        else:
            result.append(version_id)
    if new.id not in result:
        result.append(new.id)
    return result, replaced


def render_dry_run(publication: Optional[Publication], attach: Optional[Tuple[str, str]], functions: Sequence[str],
                   *, endpoint: str, project_id: Optional[str]) -> str:
    """Every request the real run makes, in order, with the bodies it sends; no credentials involved."""
    project = project_id or "{project_id}"
    lines = [f"Dry run: no request is sent. Endpoint {endpoint}, project {project}.", ""]
    step = 0

    def request(method: str, path: str, note: str = "") -> None:
        nonlocal step
        step += 1
        lines.append(f"{step}. {method} {path.replace('{project_id}', project)}" + (f"   ({note})" if note else ""))

    if publication is not None:
        body = publication.body(f"<the {publication.size:,} bytes of {publication.zip.name}, base64>")
        request("POST", CREATE_PATH, f"create dependency version; runtime {publication.runtime_source}")
        lines.append("   " + json.dumps(body, ensure_ascii=False))
        new_version = "<the new version's id>"
        dependency = f"dependency {publication.name!r}"
    else:
        assert attach is not None
        depend_id, version = attach
        request("GET", SHOW_VERSION_PATH.replace("{depend_id}", depend_id).replace("{version}", version),
                "the existing version's id and dependency")
        new_version = f"<the id of {depend_id} version {version}>"
        dependency = f"dependency {depend_id}"
    for urn in functions:
        path = CODE_PATH.replace("{function_urn}", urn)
        request("GET", path, "read the function's code settings")
        request("PUT", path, "write them back unchanged but for depend_version_list")
        lines.append('   {"code_type", "code_url", "code_filename", "func_code": as read, "depend_version_list": '
                     f"as read, with {new_version} in place of earlier versions of {dependency}" "}")
        request("GET", path, "confirm the function lists the new version")
    if not functions:
        lines.append("(no --function: the version is created and attached to no function)")
    return "\n".join(lines)
