"""``fgext publish``: the real command, the real Huawei Cloud SDK, against tests/fg_api.py on 127.0.0.1.

The API stand-in records what the SDK really sends; every test checks requests, exit code and output.
"""

from __future__ import annotations

import base64
import os
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Dict, Iterator, List, Optional

import pytest

from fgext._errors import ConfigError
from fgext.publish._plan import Attached, attach_version, check_name, inline_body_size, needs_obs, runtime_of_zip
from tests.conftest import ROOT
from tests.fg_api import FunctionGraphApi

AK = "AKPUBLISHTEST0000001"
SK = "SKsecretPublishTest0000000000000000001"
TOKEN = "TOKENtemporaryPublishTest000000000001"

needs_sdk = pytest.mark.skipif(
    subprocess.run([sys.executable, "-c", "import huaweicloudsdkfunctiongraph"], capture_output=True).returncode != 0,
    reason="the publish extra (huaweicloudsdkfunctiongraph) is not installed for this interpreter")


def make_zip(path: Path, *, pyc_tag: Optional[str] = "cpython-39", launcher: bool = True,
             extra_bytes: int = 0) -> Path:
    """A small extension zip the way `fgext package` lays it out, byte code for ``pyc_tag``."""
    with zipfile.ZipFile(path, "w") as archive:
        if launcher:
            info = zipfile.ZipInfo("extension/extensionFgext.sh")
            info.create_system = 3
            info.external_attr = 0o100755 << 16
            archive.writestr(info, "#!/bin/sh\nexec python3 -m fgext run\n")
        archive.writestr("extension/fgext-lib/fgext/__init__.py", "VERSION = 1\n")
        if pyc_tag:
            archive.writestr(f"extension/fgext-lib/fgext/__pycache__/__init__.{pyc_tag}.pyc",
                             b"\x61\x0d\x0d\x0a\x03\x00\x00\x00" + b"\x00" * 8)
        if extra_bytes:
            archive.writestr(zipfile.ZipInfo("extension/fgext-lib/blob.bin"), os.urandom(extra_bytes),
                             compress_type=zipfile.ZIP_STORED)
    return path


def run(*args: str, env: Optional[Dict[str, str]] = None, credentials: bool = True,
        token: bool = False) -> subprocess.CompletedProcess[str]:
    """``fgext publish ARGS`` in a subprocess, with the SDK's credential variables set (or not)."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("HUAWEICLOUD_")}
    base["PYTHONPATH"] = str(ROOT)
    if credentials:
        base.update(HUAWEICLOUD_SDK_AK=AK, HUAWEICLOUD_SDK_SK=SK)
    if token:
        base["HUAWEICLOUD_SDK_SECURITY_TOKEN"] = TOKEN
    base.update(env or {})
    return subprocess.run([sys.executable, "-m", "fgext", "publish", *args], capture_output=True, text=True,
                          env=base, timeout=120, check=False)


def assert_no_secret(done: subprocess.CompletedProcess[str]) -> None:
    output = done.stdout + done.stderr
    for secret in (AK, SK, TOKEN):
        for part in (secret, secret[:8], secret[-8:]):
            assert part not in output, f"a part of a credential was printed: {output}"


@pytest.fixture
def api() -> Iterator[FunctionGraphApi]:
    server = FunctionGraphApi().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def zip39(tmp_path: Path) -> Path:
    return make_zip(tmp_path / "fgext-py39.zip")


def target(api: FunctionGraphApi) -> List[str]:
    return ["--endpoint", api.endpoint, "--project-id", api.project_id]


# -- the plan, without the API ------------------------------------------------------------------------------

def test_runtime_of_zip_reads_byte_code_and_extension_module_tags() -> None:
    """The runtime comes from the zip's .pyc tags and extension module names."""
    found = runtime_of_zip(["extension/fgext-lib/a/__pycache__/b.cpython-310.pyc",
                            "extension/fgext-lib/multidict/_multidict.cpython-310-x86_64-linux-gnu.so"])
    assert list(found) == ["Python3.10"]
    assert runtime_of_zip(["extension/fgext-lib/a/b.py"]) == {}


def test_attach_version_replaces_the_earlier_version_in_place() -> None:
    """An earlier version of the same dependency is replaced where it was; other versions stay in order."""
    attached = [Attached("numpy-v1", "dep-numpy", "numpy"), Attached("fgext-v1", "dep-fgext", "fgext-py39"),
                Attached("other-v4", "dep-other", "other")]
    new = Attached("fgext-v2", "dep-fgext", "fgext-py39")
    result, replaced = attach_version(["numpy-v1", "fgext-v1", "other-v4"], attached, new)
    assert result == ["numpy-v1", "fgext-v2", "other-v4"]
    assert replaced == ["fgext-v1"]


def test_attach_version_matches_by_name_without_dependency_ids_and_keeps_unknown_ids() -> None:
    """Without dependency IDs the name decides; IDs the API did not describe are kept."""
    result, replaced = attach_version(["mystery", "old"], [Attached("old", None, "fgext-py39")],
                                      Attached("new", None, "fgext-py39"))
    assert (result, replaced) == (["mystery", "new"], ["old"])
    assert attach_version(["a"], [], Attached("new", "d", "n")) == (["a", "new"], [])
    assert attach_version(["new"], [Attached("new", "d", "n")], Attached("new", "d", "n")) == (["new"], [])


def test_inline_limit_is_the_signed_request_body_not_only_40_mb() -> None:
    """A zip goes inline only while its base64 body stays within the 12 MB of an AK/SK-signed request."""
    assert inline_body_size(3) == 4 + 1024
    assert not needs_obs(9_400_000)
    assert needs_obs(9_500_000) and needs_obs(41 * 1024 * 1024)


@pytest.mark.parametrize("name", ["9fgext", "fgext-", "fg ext", "a" * 97, "fgext/x"])
def test_check_name_refuses_what_the_api_refuses(name: str) -> None:
    """Names are checked against the API's rule (letter first, letter/digit last, <= 96, [A-Za-z0-9_.-])."""
    with pytest.raises(ConfigError, match="not a valid dependency name"):
        check_name(name)
    assert check_name("fgext_1.2-py39") == "fgext_1.2-py39"


# -- the command against the API ----------------------------------------------------------------------------

@needs_sdk
def test_publish_creates_the_version_and_attaches_it(api: FunctionGraphApi, zip39: Path) -> None:
    """POST the zip inline, then GET, PUT (every other setting and dependency untouched) and GET each function."""
    earlier = api.add_version("fgext-py39")
    numpy = api.add_version("numpy-lib")
    function = api.add_function("hello", depend_version_list=[numpy["id"], earlier["id"]], code_type="zip",
                                code_filename="index.zip", link="https://bucket.obs.example/code/hello.zip")
    done = run(str(zip39), "--function", function.urn, "--description", "fgext 0.1.0", *target(api))
    assert done.returncode == 0, done.stderr
    [post] = api.calls("POST version")
    assert post.path == f"/v2/{api.project_id}/fgs/dependencies/version"
    assert post.body["depend_type"] == "zip" and post.body["runtime"] == "Python3.9"
    assert post.body["name"] == "fgext-py39" and post.body["description"] == "fgext 0.1.0"
    assert base64.b64decode(post.body["depend_file"]) == zip39.read_bytes()
    created = next(v for v in api.versions.values() if v["name"] == "fgext-py39" and v["version"] == 2)
    code_path = f"/v2/{api.project_id}/fgs/functions/{function.urn.replace(':', '%3A')}/code"
    assert [(r.method, r.path) for r in api.requests[1:]] == [("GET", code_path), ("PUT", code_path),
                                                             ("GET", code_path)]
    put = api.calls("PUT code")[0].body
    assert put == {"code_type": "zip", "code_url": "", "code_filename": "index.zip",
                   "func_code": {"file": "", "link": "https://bucket.obs.example/code/hello.zip"},
                   "depend_version_list": [numpy["id"], created["id"]]}
    assert function.depend_version_list == [numpy["id"], created["id"]]
    for request in api.requests:
        assert request.headers["authorization"].startswith(f"SDK-HMAC-SHA256 Access={AK}, SignedHeaders=")
        assert "Signature=" in request.headers["authorization"] and request.headers["x-sdk-date"]
        assert request.headers["x-project-id"] == api.project_id
        assert "x-security-token" not in request.headers
    assert f"id {created['id']}" in done.stdout and "version 2" in done.stdout
    assert f"{zip39.stat().st_size:,} bytes" in done.stdout
    assert f"replacing {earlier['id']}" in done.stdout
    assert_no_secret(done)


@needs_sdk
def test_temporary_security_token_is_sent_as_x_security_token(api: FunctionGraphApi, zip39: Path) -> None:
    """With HUAWEICLOUD_SDK_SECURITY_TOKEN the SDK signs and sends X-Security-Token; nothing is printed."""
    done = run(str(zip39), *target(api), token=True)
    assert done.returncode == 0, done.stderr
    [post] = api.requests
    assert post.headers["x-security-token"] == TOKEN
    assert "x-security-token" in post.headers["authorization"].split("SignedHeaders=")[1].split(",")[0]
    assert_no_secret(done)


@needs_sdk
def test_dry_run_sends_nothing_and_needs_no_credentials(api: FunctionGraphApi, zip39: Path) -> None:
    """--dry-run prints each request in order with its body, sends none, and reads no credential."""
    function = api.add_function("hello")
    done = run(str(zip39), "--function", function.urn, "--dry-run", *target(api), credentials=False)
    assert done.returncode == 0, done.stderr
    assert api.requests == []
    lines = [line for line in done.stdout.splitlines() if line[:2] in ("1.", "2.", "3.", "4.")]
    assert [line.split()[1] for line in lines] == ["POST", "GET", "PUT", "GET"]
    assert f"/v2/{api.project_id}/fgs/dependencies/version" in lines[0]
    assert f"/fgs/functions/{function.urn}/code" in lines[1]
    assert '"runtime": "Python3.9"' in done.stdout and "read from the zip" in done.stdout
    with_creds = run(str(zip39), "--function", function.urn, "--dry-run", *target(api), token=True)
    assert with_creds.returncode == 0 and api.requests == []
    assert_no_secret(with_creds)


@needs_sdk
@pytest.mark.parametrize(("status", "code", "message"), [
    (401, "FSS.0401", "Unauthorized: the signature does not match"),
    (403, "FSS.0403", "Forbidden: no permission fgs:dependencies:create"),
    (404, "FSS.1051", "Not found the dependency"),
    (500, "FSS.0500", "Internal Server Error"),
    (400, "FSS.0409", "dependency quota exceeded: at most 100 dependencies per tenant"),
])
def test_api_error_is_one_line_with_its_code_and_message(api: FunctionGraphApi, zip39: Path, status: int,
                                                        code: str, message: str) -> None:
    """An API error prints the API's error_code and error_msg on one line and exits 1, no traceback."""
    api.fail("POST version", status, code, message)
    function = api.add_function("hello")
    done = run(str(zip39), "--function", function.urn, *target(api))
    assert done.returncode == 1
    assert done.stderr.strip().count("\n") == 0, done.stderr
    assert f"HTTP {status}: {code}: {message}" in done.stderr
    assert "Traceback" not in done.stderr
    assert len(api.requests) == 1  # nothing after a failed create
    assert_no_secret(done)


@needs_sdk
def test_missing_credentials_is_a_configuration_error(api: FunctionGraphApi, zip39: Path) -> None:
    """Without HUAWEICLOUD_SDK_AK/SK the command exits 2, naming the variables, before any request."""
    done = run(str(zip39), *target(api), credentials=False, env={"HUAWEICLOUD_SDK_AK": AK})
    assert done.returncode == 2
    assert "HUAWEICLOUD_SDK_AK and HUAWEICLOUD_SDK_SK" in done.stderr and api.requests == []
    assert_no_secret(done)


@pytest.mark.parametrize(("args", "expected"), [
    (["--runtime", "Python3.10"], "--runtime Python3.10 disagrees with"),
    (["--name", "9-bad-name"], "is not a valid dependency name"),
    (["--function", "hello"], "give the function's full URN"),
    (["--obs-link", "obs://bucket/key.zip"], "https:// URL"),
    (["--description", "x" * 513], "at most 512"),
    (["--attach", "dep-id"], "--attach uses an existing version"),
])
def test_usage_mistakes_exit_2_before_any_request(api: FunctionGraphApi, zip39: Path, args: List[str],
                                                  expected: str) -> None:
    """A wrong flag exits 2 with one line saying what is wrong; the API sees no request."""
    done = run(str(zip39), *args, *target(api))
    assert done.returncode == 2, done.stderr
    assert expected in done.stderr and "Traceback" not in done.stderr
    assert api.requests == []


@needs_sdk
def test_runtime_flag_is_needed_without_byte_code_and_then_used(api: FunctionGraphApi, tmp_path: Path) -> None:
    """A zip without byte code needs --runtime (exit 2 without); with it, that runtime is sent."""
    bare = make_zip(tmp_path / "bare.zip", pyc_tag=None)
    refused = run(str(bare), *target(api))
    assert refused.returncode == 2 and "--runtime" in refused.stderr
    done = run(str(bare), "--runtime", "Python3.10", "--name", "fgext-bare", *target(api))
    assert done.returncode == 0, done.stderr
    assert api.calls("POST version")[0].body["runtime"] == "Python3.10"


def test_zip_that_fails_check_is_refused(api: FunctionGraphApi, tmp_path: Path) -> None:
    """A zip `fgext check` finds errors in is not uploaded: exit 1 with the findings."""
    broken = make_zip(tmp_path / "broken.zip", launcher=False)
    done = run(str(broken), *target(api))
    assert done.returncode == 1 and "no-launcher" in done.stderr
    assert api.requests == []


@needs_sdk
def test_above_40_mb_needs_an_obs_link_which_is_sent_instead(api: FunctionGraphApi, tmp_path: Path) -> None:
    """Above 40 MB the zip cannot go inline: exit 2 without --obs-link; with it, depend_type obs."""
    big = make_zip(tmp_path / "fgext-big.zip", extra_bytes=40 * 1024 * 1024 + 1)
    refused = run(str(big), *target(api))
    assert refused.returncode == 2 and "--obs-link" in refused.stderr and api.requests == []
    link = "https://bucket.obs.cn-north-4.myhuaweicloud.com/fgext/fgext-big.zip"
    done = run(str(big), "--obs-link", link, *target(api))
    assert done.returncode == 0, done.stderr
    [post] = api.requests
    assert post.body == {"depend_type": "obs", "depend_link": link, "runtime": "Python3.9", "name": "fgext-big"}


@needs_sdk
def test_zip_above_the_signed_body_limit_needs_an_obs_link(api: FunctionGraphApi, tmp_path: Path) -> None:
    """A 10 MB zip is below 40 MB but its base64 body is above 12 MB: exit 2 asking for --obs-link."""
    big = make_zip(tmp_path / "fgext-10mb.zip", extra_bytes=10 * 1024 * 1024)
    refused = run(str(big), *target(api))
    assert refused.returncode == 2, refused.stderr
    assert "above the 12.0 MB the API accepts in a request signed with an access key" in refused.stderr
    assert "--obs-link" in refused.stderr and api.requests == []
    done = run(str(big), "--obs-link", "https://bucket.obs.example/fgext-10mb.zip", *target(api))
    assert done.returncode == 0, done.stderr


@needs_sdk
def test_partial_success_says_what_happened_and_the_finish_command_works(api: FunctionGraphApi,
                                                                          zip39: Path) -> None:
    """One function fails to update: exit 1, the version and the attached function are named, and the
    printed finish command attaches the version to the rest."""
    first = api.add_function("first")
    second = api.add_function("second")
    api.fail("PUT code", 500, "FSS.0500", "Internal Server Error")  # the first PUT is the first function's
    done = run(str(zip39), "--function", second.urn, "--function", first.urn, *target(api))
    assert done.returncode == 1
    [created] = api.versions.values()
    assert second.depend_version_list == [] and first.depend_version_list == [created["id"]]
    assert f"dependency version {created['id']}" in done.stderr and "attached to 1 of 2" in done.stderr
    assert f"{second.urn}: PUT {second.urn} code: HTTP 500: FSS.0500: Internal Server Error" in done.stderr
    finish = next(line for line in done.stderr.splitlines() if line.startswith("finish with: "))
    assert finish.split("finish with: ")[1].startswith(
        f"fgext publish --attach {created['dep_id']}:1 --function {second.urn} ")
    command = finish.split("finish with: fgext publish ")[1].split()
    again = run(*command)
    assert again.returncode == 0, again.stderr
    assert second.depend_version_list == [created["id"]]
    assert api.calls("GET version")[0].path == f"/v2/{api.project_id}/fgs/dependencies/{created['dep_id']}/version/1"
    assert_no_secret(done)


@needs_sdk
def test_function_whose_code_is_not_returned_is_left_unchanged(api: FunctionGraphApi, zip39: Path) -> None:
    """An inline function read back with an empty func_code is not written: the API would reset its code."""
    function = api.add_function("inline", code_type="inline", file="", link="")
    done = run(str(zip39), "--function", function.urn, *target(api))
    assert done.returncode == 1
    assert "the API returned no code for this inline function" in done.stderr and api.calls("PUT code") == []


@needs_sdk
def test_function_of_another_runtime_is_left_unchanged(api: FunctionGraphApi, zip39: Path) -> None:
    """A Python3.10 function does not get a Python3.9 version: exit 1 naming both runtimes, no PUT."""
    function = api.add_function("py310", runtime="Python3.10")
    done = run(str(zip39), "--function", function.urn, *target(api))
    assert done.returncode == 1
    assert "the function runs Python3.10 and the dependency version is for Python3.9" in done.stderr
    assert "fgext package --runtime Python3.10" in done.stderr
    assert api.calls("PUT code") == [] and function.depend_version_list == []


@needs_sdk
def test_dropped_connection_on_a_read_is_retried(api: FunctionGraphApi, zip39: Path) -> None:
    """A GET whose connection drops is sent again (with backoff) and the publish completes."""
    function = api.add_function("hello")
    api.fail("GET code", 0)
    api.fail("GET code", 0)
    done = run(str(zip39), "--function", function.urn, *target(api))
    assert done.returncode == 0, done.stderr
    assert len(api.calls("GET code")) == 4 and len(function.depend_version_list) == 1


@needs_sdk
def test_dropped_create_is_not_sent_twice(api: FunctionGraphApi, zip39: Path) -> None:
    """A POST whose connection drops after sending may have been applied: it is reported, not repeated."""
    api.fail("POST version", 0)
    done = run(str(zip39), *target(api))
    assert done.returncode == 1 and "network error" in done.stderr and "after 1 attempt" in done.stderr
    assert len(api.calls("POST version")) == 1


@needs_sdk
def test_unreachable_endpoint_is_retried_a_bounded_number_of_times(zip39: Path) -> None:
    """Nothing listening: a bounded number of attempts, then one line and exit 1."""
    closed = FunctionGraphApi().start()
    endpoint = closed.endpoint
    closed.stop()
    done = run(str(zip39), "--endpoint", endpoint, "--project-id", "p1")
    assert done.returncode == 1, done.stderr
    assert "network error" in done.stderr and "after 4 attempt(s)" in done.stderr
    assert done.stderr.strip().count("\n") == 0 and "Traceback" not in done.stderr


def test_without_the_sdk_the_install_command_is_printed(zip39: Path) -> None:
    """With the SDK not importable, `fgext publish` exits 2 naming `pip install 'fgext[publish]'`."""
    code = ("import sys\n"
            "class Block:\n"
            "    def find_spec(self, name, path=None, target=None):\n"
            "        if name.split('.')[0].startswith('huaweicloudsdk'):\n"
            "            raise ModuleNotFoundError(name, name=name)\n"
            "sys.meta_path.insert(0, Block())\n"
            "from fgext._cli import main\n"
            f"sys.exit(main(['publish', {str(zip39)!r}, '--endpoint', 'http://127.0.0.1:9', '--project-id', 'p']))\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HUAWEICLOUD_SDK_AK": AK, "HUAWEICLOUD_SDK_SK": SK}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60,
                          check=False)
    assert done.returncode == 2, done.stderr
    assert "pip install 'fgext[publish]'" in done.stderr and "Traceback" not in done.stderr


@needs_sdk
def test_region_and_project_come_from_the_environment(zip39: Path) -> None:
    """HUAWEICLOUD_SDK_REGION and HUAWEICLOUD_SDK_PROJECT_ID stand for --region and --project-id."""
    env = {"HUAWEICLOUD_SDK_REGION": "cn-north-4", "HUAWEICLOUD_SDK_PROJECT_ID": "p0123"}
    done = run(str(zip39), "--dry-run", env=env, credentials=False)
    assert done.returncode == 0, done.stderr
    assert "Endpoint https://functiongraph.cn-north-4.myhuaweicloud.com, project p0123." in done.stdout
    assert "POST /v2/p0123/fgs/dependencies/version" in done.stdout


@needs_sdk
@pytest.mark.parametrize("dry_run", [[], ["--dry-run"]])
def test_unknown_region_is_a_configuration_error(zip39: Path, dry_run: List[str]) -> None:
    """A region the SDK has no endpoint for exits 2 with one line, before any request."""
    done = run(str(zip39), "--region", "nowhere-1", "--project-id", "p0123", *dry_run)
    assert done.returncode == 2
    assert "--region 'nowhere-1' is not a region" in done.stderr and "Traceback" not in done.stderr


@needs_sdk
def test_late_answer_to_a_read_is_retried_and_a_late_create_is_not_resent(api: FunctionGraphApi,
                                                                         zip39: Path) -> None:
    """Past --timeout a GET is sent again; a POST, which the API may have applied, is reported instead."""
    function = api.add_function("hello")
    api.slow("GET code", 3.0)
    done = run(str(zip39), "--function", function.urn, "--timeout", "1", *target(api))
    assert done.returncode == 0, done.stderr
    assert len(api.calls("GET code")) == 3 and len(function.depend_version_list) == 1
    api.slow("POST version", 3.0)
    late = run(str(zip39), "--timeout", "1", *target(api))
    assert late.returncode == 1
    assert "timed out" in late.stderr and "after 1 attempt(s)" in late.stderr and "Traceback" not in late.stderr
    assert len(api.calls("POST version")) == 2  # one per run: the late one was not sent again


@needs_sdk
def test_attach_dry_run_lists_the_version_lookup_first(api: FunctionGraphApi) -> None:
    """--attach DEPEND_ID:VERSION --dry-run: GET the version, then GET/PUT/GET each function; nothing sent."""
    function = api.add_function("hello")
    done = run("--attach", "dep-1:3", "--function", function.urn, "--dry-run", *target(api), credentials=False)
    assert done.returncode == 0, done.stderr
    assert f"1. GET /v2/{api.project_id}/fgs/dependencies/dep-1/version/3" in done.stdout
    assert [line.split()[1] for line in done.stdout.splitlines() if line[:2] in ("2.", "3.", "4.")] == \
        ["GET", "PUT", "GET"]
    assert api.requests == []


@needs_sdk
@pytest.mark.parametrize(("args", "expected"), [
    (["--attach", "dep-1"], "give DEPEND_ID:VERSION"),
    (["--attach", "dep-1:x"], "give DEPEND_ID:VERSION"),
    (["ZIP", "--timeout", "0"], "--timeout 0.0: give a positive number of seconds"),
])
def test_bad_attach_or_timeout_is_a_usage_error(api: FunctionGraphApi, zip39: Path, args: List[str],
                                                expected: str) -> None:
    """--attach wants DEPEND_ID:VERSION and --timeout a positive number: exit 2 otherwise, nothing sent."""
    function = api.add_function("hello")
    done = run(*[str(zip39) if arg == "ZIP" else arg for arg in args], "--function", function.urn, *target(api))
    assert done.returncode == 2, done.stderr
    assert expected in done.stderr
    assert api.requests == []
