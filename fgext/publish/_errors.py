"""The errors of ``fgext publish``: an answer of the FunctionGraph API, and a publish that went part way."""

from __future__ import annotations

from typing import List, Optional

from fgext._errors import FgextError

__all__ = ["ApiError", "NotAttached", "PartialPublish"]


class ApiError(FgextError):
    """The API answered with an error (or could not be reached after the retries): exit 1.

    ``str()`` is the one line the user sees: the request, the HTTP status, and the API's own
    ``error_code`` and ``error_msg``.
    """

    def __init__(self, request: str, *, status: Optional[int], error_code: str, error_msg: str) -> None:
        self.request = request
        self.status = status
        self.error_code = error_code
        self.error_msg = error_msg
        where = f"HTTP {status}" if status is not None else "no answer"
        super().__init__(f"{request}: {where}: {error_code}: {error_msg}")


class NotAttached(FgextError):
    """fgext refused to write a function's code settings (or could not confirm the write): exit 1."""

    def __init__(self, urn: str, reason: str) -> None:
        self.urn = urn
        super().__init__(reason)


class PartialPublish(FgextError):
    """The dependency version exists, but at least one function was not updated: exit 1.

    The message says what was done, what failed and the command that finishes the job.
    """

    def __init__(self, lines: List[str]) -> None:
        super().__init__("\n".join(lines))
