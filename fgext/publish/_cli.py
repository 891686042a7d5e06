"""The ``fgext publish`` sub-command (wired up in ``fgext._cli``): zip -> dependency version -> functions.

A development tool, run on the developer's machine or in CI, never in the sandbox: it needs the
``publish`` extra (the Huawei Cloud SDK), which ``fgext package`` never puts into the zip.
"""

from __future__ import annotations

import argparse
import base64
import os
import sys
from pathlib import Path
from typing import List, Optional, Tuple

from fgext._errors import EXIT_OK, ConfigError
from fgext.packager._limits import human_size
from fgext.publish._client import Api, Settings, Version, region_endpoint, require_sdk
from fgext.publish._errors import ApiError, NotAttached, PartialPublish
from fgext.publish._plan import Publication, attach_version, check_function_urn, render_dry_run

__all__ = ["add_arguments", "run_command"]

PROJECT_ENV = "HUAWEICLOUD_SDK_PROJECT_ID"  # the SDK's own name for it
REGION_ENV = "HUAWEICLOUD_SDK_REGION"
# Code types whose code travels in func_code: sending an empty func_code back would replace the
# function's code with the platform's default (the API's rule for an empty ``file``).
_CODE_IN_BODY = {"inline", "zip", "jar"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``fgext publish``."""
    parser.add_argument("zip", nargs="?", type=Path, metavar="ZIP",
                        help="the dependency zip (from `fgext package`, or any zip `fgext check` passes)")
    parser.add_argument("--function", action="append", default=[], metavar="URN",
                        help="attach the new version to this function (its full URN; repeatable)")
    parser.add_argument("--name", metavar="NAME",
                        help="the dependency's name (default: the zip's file name without .zip); a new "
                             "version of the dependency of that name is created")
    parser.add_argument("--description", metavar="TEXT", help="the version's description (at most 512 characters)")
    parser.add_argument("--runtime", metavar="RUNTIME",
                        help="the runtime (default: read from the zip's byte code); must agree with the zip")
    parser.add_argument("--obs-link", metavar="URL",
                        help="create the version from this OBS object (https:// URL) instead of inline; "
                             "required above 40 MB")
    parser.add_argument("--attach", metavar="DEPEND_ID:VERSION",
                        help="attach an existing dependency version instead of creating one (no ZIP)")
    parser.add_argument("--region", metavar="REGION", default=os.environ.get(REGION_ENV),
                        help=f"the region, e.g. cn-north-4 (default ${REGION_ENV})")
    parser.add_argument("--endpoint", metavar="URL",
                        help="the FunctionGraph endpoint, for a private endpoint (instead of --region)")
    parser.add_argument("--project-id", metavar="ID", default=os.environ.get(PROJECT_ENV),
                        help=f"the project ID (default ${PROJECT_ENV})")
    parser.add_argument("--timeout", type=float, default=300.0, metavar="SECONDS",
                        help="seconds to wait for each answer (default 300: an inline upload takes a while)")
    parser.add_argument("--dry-run", action="store_true",
                        help="print every request it would make, and send none (needs no credentials)")


def _attach_target(value: str) -> Tuple[str, str]:
    depend_id, sep, version = value.rpartition(":")
    if not sep or not depend_id or not version.isdigit():
        raise ConfigError(f"--attach {value!r}: give DEPEND_ID:VERSION, e.g. "
                          "edbd67fa-f107-40b3-af75-a85f0577ad61:3")
    return depend_id, version


def run_command(args: argparse.Namespace) -> int:
    """Validate everything, then create the version and attach it; 0, or an error with its exit code."""
    functions = [check_function_urn(urn) for urn in args.function]
    if len(set(functions)) != len(functions):
        raise ConfigError("--function names the same function twice")
    publication: Optional[Publication] = None
    attach: Optional[Tuple[str, str]] = None
    if args.attach is not None:
        if args.zip is not None or args.name or args.runtime or args.obs_link or args.description:
            raise ConfigError("--attach uses an existing version: give no ZIP, --name, --runtime, --obs-link "
                              "or --description with it")
        if not functions:
            raise ConfigError("--attach needs at least one --function")
        attach = _attach_target(args.attach)
    elif args.zip is None:
        raise ConfigError("give the ZIP to publish (or --attach DEPEND_ID:VERSION)")
    else:
        publication = Publication.from_zip(args.zip, runtime=args.runtime, name=args.name,
                                           description=args.description, obs_link=args.obs_link)
    if args.endpoint and not args.endpoint.startswith(("https://", "http://")):
        raise ConfigError(f"--endpoint {args.endpoint!r}: give a URL (https://host[:port])")
    if not args.timeout > 0:
        raise ConfigError(f"--timeout {args.timeout}: give a positive number of seconds")
    if args.dry_run:
        if args.endpoint:
            endpoint = args.endpoint
        elif args.region:
            try:
                require_sdk()
            except ConfigError:  # a dry run without the SDK still prints the plan
                endpoint = f"the FunctionGraph endpoint of {args.region}"
            else:
                endpoint = region_endpoint(args.region)
        else:
            endpoint = "(give --region or --endpoint)"
        print(render_dry_run(publication, attach, functions, endpoint=endpoint, project_id=args.project_id))
        return EXIT_OK
    if not args.endpoint and not args.region:
        raise ConfigError(f"give --region (or set {REGION_ENV}) or --endpoint")
    if not args.project_id:
        raise ConfigError(f"give --project-id (or set {PROJECT_ENV}): the project the function lives in")

    api = Api(Settings(project_id=args.project_id, endpoint=args.endpoint, region=args.region,
                       timeout=args.timeout))
    if publication is not None:
        depend_file = None if publication.obs_link else base64.b64encode(publication.zip.read_bytes()).decode()
        version = api.create_version(publication.body(depend_file))
        size = f"{human_size(version.size)} ({version.size:,} bytes)" if version.size is not None else "size unknown"
        print(f"Created dependency {version.name} version {version.version}: id {version.id}, {size}, "
              f"runtime {version.runtime}")
    else:
        assert attach is not None
        version = api.show_version(*attach)
        print(f"Dependency {version.name} version {version.version}: id {version.id}")

    done: List[str] = []
    failed: List[Tuple[str, str]] = []
    for urn in functions:
        try:
            print(_attach(api, urn, version))
            done.append(urn)
        except (ApiError, NotAttached) as error:
            failed.append((urn, str(error)))
            print(f"  ! {urn}: {error}", file=sys.stderr)
    if failed:
        lines = [f"dependency version {version.id} ({version.name} version {version.version}) exists"
                 + (f" and is attached to {len(done)} of {len(functions)} function(s)" if done else
                    f" but is attached to none of the {len(functions)} function(s)"),
                 "not attached to:"]
        lines += [f"  {urn}: {why}" for urn, why in failed]
        finish = " ".join(f"--function {urn}" for urn, _ in failed)
        where = f"--endpoint {args.endpoint}" if args.endpoint else f"--region {args.region}"
        if version.dep_id and version.version is not None:
            lines.append(f"finish with: fgext publish --attach {version.dep_id}:{version.version} {finish} {where} "
                         f"--project-id {args.project_id}")
        else:  # the API did not say which dependency and version number this is
            lines.append(f"finish in the console: add dependency version {version.id} to each function above")
        raise PartialPublish(lines)
    return EXIT_OK


def _attach(api: Api, urn: str, version: Version) -> str:
    """Read the function's code settings, put ``version`` in its depend_version_list, write, read back."""
    new = version.attached()
    code = api.show_code(urn)
    if code.runtime and version.runtime and code.runtime != version.runtime:
        raise NotAttached(urn, f"the function runs {code.runtime} and the dependency version is for "
                               f"{version.runtime}: its byte code and compiled modules would not load; build one "
                               f"with `fgext package --runtime {code.runtime}` and publish that")
    if (code.code_type or "") in _CODE_IN_BODY and not code.file and not code.link:
        raise NotAttached(urn, f"the API returned no code for this {code.code_type} function; writing it back "
                               "would replace the function's code with the default, so it was left unchanged")
    wanted, replaced = attach_version(code.depend_version_list, code.attached, new)
    if wanted == code.depend_version_list:
        return f"  {urn}: already lists {new.id}, unchanged"
    api.update_code(urn, code, wanted)
    confirmed = api.show_code(urn).depend_version_list
    if new.id not in confirmed or any(old in confirmed for old in replaced):
        raise NotAttached(urn, f"the API accepted the update, but the function now lists {confirmed}, "
                               f"not {wanted}")
    was = f", replacing {', '.join(replaced)}" if replaced else ""
    return f"  {urn}: attached {new.id}{was}; depend_version_list {confirmed}"
