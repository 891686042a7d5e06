"""The FunctionGraph API through the official Huawei Cloud SDK: signing, endpoints and errors are the SDK's.

Only this module imports the SDK (``fgext[publish]``). Credentials come from the SDK's own environment
provider (``HUAWEICLOUD_SDK_AK``, ``HUAWEICLOUD_SDK_SK``, optionally ``HUAWEICLOUD_SDK_SECURITY_TOKEN``),
so a temporary security token is signed the SDK's way. The SDK's logger is given a null handler: nothing
of a request (headers, signature, token) reaches the terminal except the one line fgext prints.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, TypeVar

from fgext._errors import ConfigError
from fgext._retry import Backoff
from fgext.publish._errors import ApiError
from fgext.publish._plan import Attached

__all__ = ["INSTALL_HINT", "Api", "Code", "Settings", "Version", "region_endpoint", "require_sdk"]

INSTALL_HINT = "pip install 'fgext[publish]'"
_T = TypeVar("_T")
#: attempts per request when the network fails, and the pause before each retry (doubled every time)
ATTEMPTS = 4
FIRST_BACKOFF = 0.5


def require_sdk() -> None:
    """ConfigError (exit 2) with the install command when the ``publish`` extra is missing."""
    try:
        import huaweicloudsdkcore  # noqa: F401
        import huaweicloudsdkfunctiongraph  # noqa: F401
    except ImportError as error:
        raise ConfigError(f"fgext publish needs the Huawei Cloud SDK, which is not installed ({error.name}): "
                          f"{INSTALL_HINT}") from None


def region_endpoint(region: str) -> str:
    """The public FunctionGraph endpoint of ``region`` from the SDK's table; ConfigError for an unknown one."""
    require_sdk()
    from huaweicloudsdkfunctiongraph.v2.region.functiongraph_region import FunctionGraphRegion

    try:
        return str(FunctionGraphRegion.value_of(region).endpoints[0])
    except (KeyError, ValueError, IndexError):
        raise ConfigError(f"--region {region!r} is not a region the SDK knows a FunctionGraph endpoint for: "
                          "check the name (e.g. cn-north-4), or give --endpoint") from None


@dataclass(frozen=True)
class Settings:
    """Where to send requests: an endpoint URL, or a region whose public endpoint the SDK knows."""

    project_id: str
    endpoint: Optional[str] = None
    region: Optional[str] = None
    #: seconds to wait for an answer (a 40 MB inline body takes a while to upload)
    timeout: float = 300.0


@dataclass(frozen=True)
class Version:
    """A dependency version as the API described it."""

    id: str
    dep_id: Optional[str]
    name: Optional[str]
    version: Optional[int]
    size: Optional[int]
    runtime: Optional[str]

    def attached(self) -> Attached:
        return Attached(id=self.id, dep_id=self.dep_id, name=self.name)


@dataclass(frozen=True)
class Code:
    """A function's code settings as read: what UpdateFunctionCode must be sent back unchanged."""

    runtime: Optional[str]
    code_type: Optional[str]
    code_url: Optional[str]
    code_filename: Optional[str]
    file: Optional[str]
    link: Optional[str]
    depend_version_list: List[str]
    attached: List[Attached]


def _with_retries(label: str, call: Callable[[], _T], *, resend_safe: bool) -> _T:
    """``call()``, retried with exponential backoff when the network fails; ApiError when it never answers.

    An answer with an error status is not retried: the API decided. ``resend_safe`` False (creating a
    version) retries only when the connection was never made, so a request the API may have received
    is not sent twice. The one place publish retries; the delays are fgext's one backoff policy.
    """
    from huaweicloudsdkcore.exceptions import exceptions
    from requests.exceptions import Timeout

    backoff = Backoff(FIRST_BACKOFF, FIRST_BACKOFF * 2 ** (ATTEMPTS - 2))
    for attempt in range(1, ATTEMPTS + 1):
        try:
            return call()
        except exceptions.ServiceResponseException as error:
            raise ApiError(label, status=error.status_code, error_code=str(error.error_code),
                           error_msg=str(error.error_msg)) from None
        # The SDK wraps connection errors; a read timeout reaches us as requests' own exception.
        except (exceptions.ConnectionException, exceptions.RequestTimeoutException, Timeout) as error:
            never_sent = "Failed to establish a new connection" in str(error) or isinstance(
                error, exceptions.HostUnreachableException)
            if attempt == ATTEMPTS or not (resend_safe or never_sent):
                timed_out = isinstance(error, (exceptions.RequestTimeoutException, Timeout))
                raise ApiError(label, status=None, error_code="timed out" if timed_out else "network error",
                               error_msg=f"{_short(error)} (after {attempt} attempt(s))") from None
            time.sleep(backoff.next_delay())
        except exceptions.SdkException as error:
            raise ApiError(label, status=None, error_code="SDK error", error_msg=_short(error)) from None
    raise AssertionError("unreachable")  # the loop returns or raises


def _short(error: Exception) -> str:
    text = str(getattr(error, "error_msg", "") or error)
    return text if len(text) <= 300 else text[:297] + "..."


class Api:
    """The four calls ``fgext publish`` makes, each one line of error on failure."""

    def __init__(self, settings: Settings) -> None:
        require_sdk()
        from huaweicloudsdkcore.auth.provider import EnvCredentialProvider
        from huaweicloudsdkcore.http.http_config import HttpConfig
        from huaweicloudsdkfunctiongraph.v2 import FunctionGraphClient
        from huaweicloudsdkfunctiongraph.v2.region.functiongraph_region import FunctionGraphRegion

        # The SDK logs connection errors with their request; our one-line error says what matters.
        logging.getLogger(f"HuaweiCloud-SDK-{FunctionGraphClient.__name__}").addHandler(logging.NullHandler())
        try:
            credentials = EnvCredentialProvider.get_basic().get_credentials()
        except Exception:  # the SDK raises ApiValueError; its message names no value, but ours says what to set
            raise ConfigError("no credentials: set HUAWEICLOUD_SDK_AK and HUAWEICLOUD_SDK_SK (and "
                              "HUAWEICLOUD_SDK_SECURITY_TOKEN with a temporary access key)") from None
        credentials.with_project_id(settings.project_id)
        config = HttpConfig.get_default_config()
        config.timeout = (min(10.0, settings.timeout), settings.timeout)  # (connect, read)
        config.retry_times = 0  # retries are ours (_with_retries), with backoff and the resend rule
        builder = FunctionGraphClient.new_builder().with_http_config(config).with_credentials(credentials)
        if settings.endpoint:
            builder = builder.with_endpoints([settings.endpoint])
        else:
            region_endpoint(str(settings.region))  # the one line for an unknown region
            builder = builder.with_region(FunctionGraphRegion.value_of(settings.region))
        self._client: Any = builder.build()

    def create_version(self, body: Dict[str, Any]) -> Version:
        from huaweicloudsdkfunctiongraph.v2 import CreateDependencyRequestBody, CreateDependencyVersionRequest

        request = CreateDependencyVersionRequest(body=CreateDependencyRequestBody(**body))
        answer = _with_retries("POST dependencies/version", lambda: self._client.create_dependency_version(request),
                               resend_safe=False)
        return _version(answer)

    def show_version(self, depend_id: str, version: str) -> Version:
        from huaweicloudsdkfunctiongraph.v2 import ShowDependencyVersionRequest

        request = ShowDependencyVersionRequest(depend_id=depend_id, version=version)
        answer = _with_retries(f"GET dependencies/{depend_id}/version/{version}",
                               lambda: self._client.show_dependency_version(request), resend_safe=True)
        return _version(answer)

    def show_code(self, urn: str) -> Code:
        from huaweicloudsdkfunctiongraph.v2 import ShowFunctionCodeRequest

        request = ShowFunctionCodeRequest(function_urn=urn)
        answer = _with_retries(f"GET {urn} code", lambda: self._client.show_function_code(request),
                               resend_safe=True)
        func_code = answer.func_code
        return Code(
            runtime=answer.runtime, code_type=answer.code_type, code_url=answer.code_url,
            code_filename=answer.code_filename,
            file=getattr(func_code, "file", None), link=getattr(func_code, "link", None),
            depend_version_list=list(answer.depend_version_list or []),
            attached=[Attached(id=d.id, dep_id=d.dep_id, name=d.name) for d in answer.dependencies or [] if d.id])

    def update_code(self, urn: str, code: Code, depend_version_list: List[str]) -> None:
        from huaweicloudsdkfunctiongraph.v2 import FuncCode, UpdateFunctionCodeRequest, UpdateFunctionCodeRequestBody

        body = UpdateFunctionCodeRequestBody(
            code_type=code.code_type, code_url=code.code_url, code_filename=code.code_filename,
            func_code=FuncCode(file=code.file, link=code.link), depend_version_list=depend_version_list)
        request = UpdateFunctionCodeRequest(function_urn=urn, body=body)
        _with_retries(f"PUT {urn} code", lambda: self._client.update_function_code(request), resend_safe=True)


def _version(answer: Any) -> Version:
    if not answer.id:
        raise ApiError("dependency version", status=None, error_code="no id",
                       error_msg="the API answered without the version's id")
    return Version(id=answer.id, dep_id=answer.dep_id, name=answer.name, version=answer.version, size=answer.size,
                   runtime=answer.runtime)
