"""``fgext publish``: a zip built by ``fgext package`` becomes a dependency version attached to functions.

A development tool (the ``publish`` extra: the Huawei Cloud SDK); it never runs in the sandbox.

    _plan.py     validation and the plan of requests, pure (``--dry-run`` prints it)
    _client.py   the API through the official SDK: credentials, endpoint, retries, one-line errors
    _cli.py      the sub-command
    _errors.py   ApiError and PartialPublish (exit 1)
"""
