"""``redact``: mask secrets and personal data in every event before any sink sees it.

A processor (``order`` 20: after ``filter``, before everything else), so no exporter, file or webhook
ever receives the original text. It rewrites a log event's ``logs`` and ``message`` and every string
inside an event's ``raw`` object (the wire form that sinks such as ``jsonl`` write out), and masks
whole values under keys that name a secret (``password``, ``token``, ``secret_key``...).

Default rules, applied in this order (a rule's name appears in the mask, ``[REDACTED:jwt]``):

==================  ==========================================================================
``private_key``     PEM private keys, ``-----BEGIN ... PRIVATE KEY-----`` to its END line
``jwt``             JSON Web Tokens (three base64url parts, the first two starting ``eyJ``)
``bearer``          the token after ``Bearer``/``Basic`` in an Authorization value
``url_password``    the password in ``scheme://user:password@host``
``secret_value``    the value in ``password=...``, ``"secret_key": "..."``, ``sk: ...`` and the like
``huawei_sk``       a 40-character Huawei Cloud secret key (mixed-case letters and digits)
``huawei_ak``       a 20-character Huawei Cloud access key ID (upper-case letters and digits)
``email``           e-mail addresses
``cn_id``           Chinese resident ID numbers (18 characters with a valid date)
``phone_cn``        Chinese mobile numbers ``1[3-9]`` + 9 digits, with or without ``+86``
``phone``           international numbers written with a leading ``+`` and country code
==================  ==========================================================================

Settings (``plugins.redact`` in the config file, or ``FGEXT_REDACT_<KEY>``):

- ``disable``: rule names to turn off (list);
- ``patterns``: extra regular expressions, a list (the config file is the place for patterns with
  commas; an environment value is split at commas), or in the config file an object of
  ``{"name": "regex"}``; a pattern with a group named ``secret`` masks only that group;
- ``keys``: more key names whose values are always masked (list);
- ``mask``: the replacement, ``{rule}`` standing for the rule's name (default ``[REDACTED:{rule}]``);
- ``raw`` (default true): also rewrite the strings inside ``raw``.

Subclass :class:`RedactPlugin` and extend ``rules`` for a rule set of your own (``examples/`` has one).
"""

from __future__ import annotations

import re
from dataclasses import replace
from typing import Any, Callable, ClassVar, Dict, FrozenSet, List, Mapping, Optional, Pattern, Sequence, Tuple

from fgext._errors import PluginError
from fgext._events import AnyEvent, LogEvent
from fgext._plugin import PluginContext, Processor

__all__ = ["DEFAULT_RULES", "SECRET_KEYS", "RedactPlugin", "Rule"]

#: (name, compiled pattern); a named group ``secret`` limits the mask to that group
Rule = Tuple[str, Pattern[str]]

_SECRET_NAMES = (
    r"password|passwd|pwd|pass|secret|secret[_-]?key|secret[_-]?access[_-]?key|access[_-]?key(?:[_-]?id)?|"
    r"api[_-]?key|apikey|token|access[_-]?token|refresh[_-]?token|auth[_-]?token|session[_-]?id|"
    r"client[_-]?secret|private[_-]?key|sk|ak|x[_-]auth[_-]token"
)

DEFAULT_RULES: Tuple[Rule, ...] = (
    ("private_key", re.compile(
        r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY-----[\s\S]*?(?:-----END (?:[A-Z0-9]+ )*PRIVATE KEY-----|\Z)")),
    ("jwt", re.compile(r"\beyJ[A-Za-z0-9_-]{4,}\.eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{8,}")),
    ("bearer", re.compile(r"(?i)\b(?:bearer|basic)\s+(?P<secret>[A-Za-z0-9._~+/=-]{8,})")),
    ("url_password", re.compile(r"(?i)\b[a-z][a-z0-9+.-]{1,15}://[^\s:/?#@]*:(?P<secret>[^\s/?#@]+)@")),
    ("secret_value", re.compile(
        r"(?i)(?<![A-Za-z0-9])[\"']?(?:" + _SECRET_NAMES + r")[\"']?\s*[:=]\s*[\"']?"
        r"(?P<secret>(?!\[REDACTED)[^\s\"',;&}\]]{3,})")),
    ("huawei_sk", re.compile(
        r"(?<![A-Za-z0-9/+])(?=[A-Za-z0-9]{0,39}[a-z])(?=[A-Za-z0-9]{0,39}[A-Z])(?=[A-Za-z0-9]{0,39}[0-9])"
        r"[A-Za-z0-9]{40}(?![A-Za-z0-9/+])")),
    ("huawei_ak", re.compile(
        r"(?<![A-Za-z0-9])(?=[A-Z0-9]{0,19}[A-Z])(?=[A-Z0-9]{0,19}[0-9])[A-Z0-9]{20}(?![A-Za-z0-9])")),
    ("email", re.compile(r"(?<![\w.+-])[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b")),
    ("cn_id", re.compile(
        r"(?<![0-9])[1-9][0-9]{5}(?:18|19|20)[0-9]{2}(?:0[1-9]|1[0-2])(?:0[1-9]|[12][0-9]|3[01])[0-9]{3}[0-9Xx]"
        r"(?![0-9A-Za-z])")),
    ("phone_cn", re.compile(r"(?<![0-9+])(?:(?:\+|00)?86[ -]?)?1[3-9][0-9](?:[ -]?[0-9]{4}){2}(?![0-9])")),
    ("phone", re.compile(r"(?<![\w+])\+[1-9][0-9]{0,2}[ -]?(?:\(?[0-9]{1,4}\)?[ -]?){2,4}[0-9]{2,4}(?![0-9])")),
)

#: keys (compared without case, ``-`` and ``_``) whose values are masked whole, wherever they appear
SECRET_KEYS: FrozenSet[str] = frozenset({
    "password", "passwd", "pwd", "secret", "secretkey", "secretaccesskey", "accesskey", "accesskeyid",
    "apikey", "token", "accesstoken", "refreshtoken", "authtoken", "authorization", "cookie", "setcookie",
    "sessionid", "clientsecret", "privatekey", "sk", "ak", "xauthtoken", "securitytoken",
})


_DIGIT = re.compile(r"[0-9]")
_HINTS: Dict[str, Callable[[str, str, bool], bool]] = {
    "private_key": lambda text, lower, digit: "private key" in lower,
    "jwt": lambda text, lower, digit: "eyJ" in text,
    "bearer": lambda text, lower, digit: "bearer" in lower or "basic" in lower,
    "url_password": lambda text, lower, digit: "://" in text,
    "secret_value": lambda text, lower, digit: "=" in text or ":" in text,
    "huawei_sk": lambda text, lower, digit: digit,
    "huawei_ak": lambda text, lower, digit: digit,
    "email": lambda text, lower, digit: "@" in text,
    "cn_id": lambda text, lower, digit: digit,
    "phone_cn": lambda text, lower, digit: digit,
    "phone": lambda text, lower, digit: digit and "+" in text,
}


def _key(name: str) -> str:
    return name.lower().replace("-", "").replace("_", "")


class RedactPlugin(Processor):
    """Masks secrets and personal data in log text and in every string of an event's raw object."""

    name: ClassVar[str] = "redact"
    order: ClassVar[int] = 20
    # Better an event lost than a secret leaked: if redaction itself fails, the event is dropped.
    on_error: ClassVar[str] = "drop"
    config_schema: ClassVar[Dict[str, type]] = {
        "disable": list, "patterns": object, "keys": list, "mask": str, "raw": bool,
    }
    #: the rule set; subclasses extend it (``rules = RedactPlugin.rules + (("order_id", re.compile(...)),)``)
    rules: ClassVar[Tuple[Rule, ...]] = DEFAULT_RULES
    #: key names masked whole; subclasses may extend it
    secret_keys: ClassVar[FrozenSet[str]] = SECRET_KEYS

    def __init__(self, *, extra_rules: Sequence[Rule] = (), mask: str = "[REDACTED:{rule}]") -> None:
        self._rules: List[Rule] = [*self.rules, *extra_rules]
        self._keys = {_key(k) for k in self.secret_keys}
        self._mask = mask
        self._raw = True
        self._compiled: Optional[List[Tuple[str, Pattern[str], Optional[Callable[[str, str, bool], bool]],
                                            Callable[[re.Match[str]], str]]]] = None

    def start(self, context: PluginContext) -> None:
        self.configure(context.config)

    def configure(self, config: Mapping[str, Any]) -> None:
        """Apply settings (called by ``start``; usable directly when the plugin runs outside the agent)."""
        disable = {str(d).strip() for d in config.get("disable", [])}
        known = {name for name, _ in self._rules}
        unknown = sorted(disable - known)
        if unknown:
            raise PluginError(f"plugin 'redact': setting 'disable' names unknown rule(s) {', '.join(unknown)}; "
                              f"rules are {', '.join(name for name, _ in self._rules)}")
        rules = [(name, pattern) for name, pattern in self._rules if name not in disable]
        rules.extend(self._compile(config.get("patterns")))
        self._rules = rules
        self._keys |= {_key(str(k)) for k in config.get("keys", [])}
        self._mask = str(config.get("mask", self._mask))
        self._raw = bool(config.get("raw", True))
        self._compiled = None
        try:
            self._mask.format(rule="x")
        except (KeyError, IndexError, ValueError) as error:
            raise PluginError(f"plugin 'redact': setting 'mask' {self._mask!r} is not a valid template "
                              f"(only {{rule}} may be used): {error}") from None

    @staticmethod
    def _compile(patterns: Any) -> List[Rule]:
        if patterns is None:
            return []
        items: List[Tuple[str, Any]]
        if isinstance(patterns, str):
            items = [(f"pattern{i + 1}", p.strip()) for i, p in enumerate(patterns.split(",")) if p.strip()]
        elif isinstance(patterns, list):
            items = [(f"pattern{i + 1}", p) for i, p in enumerate(patterns)]
        elif isinstance(patterns, dict):
            items = [(str(k), v) for k, v in patterns.items()]
        else:
            raise PluginError("plugin 'redact': setting 'patterns' must be a list of regular expressions "
                              f"or an object of name: regex, got {type(patterns).__name__}")
        rules: List[Rule] = []
        for name, pattern in items:
            if not isinstance(pattern, str) or not pattern:
                raise PluginError(f"plugin 'redact': pattern {name!r} must be a non-empty string, got {pattern!r}")
            try:
                rules.append((name, re.compile(pattern)))
            except re.error as error:
                raise PluginError(f"plugin 'redact': pattern {name!r} ({pattern!r}) is not a valid "
                                  f"regular expression: {error}") from None
        return rules

    # ------------------------------------------------------------------------------------- work

    def redact(self, text: str) -> str:
        """``text`` with every rule's matches masked."""
        if self._compiled is None:
            self._compiled = [(name, pattern, _HINTS.get(name), self._replacer(name)) for name, pattern in self._rules]
        lower = text.lower()
        has_digit = _DIGIT.search(text) is not None
        for _name, pattern, hint, replacer in self._compiled:
            # Cheap substring tests skip most rules on most lines: each of these needs its marker.
            if hint is not None and not hint(text, lower, has_digit):
                continue
            text = pattern.sub(replacer, text)
        return text

    def _replacer(self, name: str) -> Callable[[re.Match[str]], str]:
        mask = self._mask.format(rule=name)

        def replace_match(match: re.Match[str]) -> str:
            if "secret" in match.re.groupindex and match.group("secret") is not None:
                start, end = match.span("secret")
                whole_start = match.start()
                text = match.group(0)
                return text[: start - whole_start] + mask + text[end - whole_start:]
            return mask

        return replace_match

    def _value(self, value: Any, memo: Dict[str, str], key: Optional[str] = None) -> Any:
        if key is not None and _key(key) in self._keys and isinstance(value, (str, int, float)) \
                and not isinstance(value, bool) and value != "":
            return self._mask.format(rule="key")
        if isinstance(value, str):
            return self._cached(value, memo)
        if isinstance(value, Mapping):
            return {k: self._value(v, memo, str(k)) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [self._value(v, memo) for v in value]
        return value

    def _cached(self, text: str, memo: Dict[str, str]) -> str:
        # A log event holds its text up to three times (message, logs, raw["logs"]): mask it once.
        if text not in memo:
            memo[text] = self.redact(text)
        return memo[text]

    def process(self, event: AnyEvent) -> AnyEvent:
        changes: Dict[str, Any] = {}
        memo: Dict[str, str] = {}
        if isinstance(event, LogEvent):
            message = self._cached(event.message, memo)
            prefix = event.logs[: len(event.logs) - len(event.message)]
            if event.logs.endswith(event.message) and not any(c.isalnum() for c in prefix.replace(event.marker, "")):
                # logs is the marker (and spaces) plus message: its masked form follows from message's.
                memo[event.logs] = prefix + message
            logs = self._cached(event.logs, memo)
            if logs != event.logs:
                changes["logs"] = logs
            if message != event.message:
                changes["message"] = message
        if self._raw:
            raw = self._value(event.raw, memo)
            if raw != event.raw:
                changes["raw"] = raw
        if not changes:
            return event
        return replace(event, **changes)
