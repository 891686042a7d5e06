"""A redaction rule set, class style: the built-in ``redact`` defaults plus one company's own rules.

Adds, on top of every default rule (tokens, AK/SK, passwords in URLs, e-mail, phones...):

- ``order_id``: ``ORD-`` followed by 8 digits (customer order references);
- ``openid``: WeChat OpenIDs (``o`` plus 27 URL-safe characters);
- ``internal_host``: host names under ``corp.example.com``;
- ``bank_card``: 15 to 19 digit card numbers starting 2-6, written together or in groups of four,
  masked only when the Luhn check digit is right, so ordinary long numbers stay readable.

It runs in the built-in's place: enable ``redact_rules:AcmeRedact`` instead of ``redact``. Its
settings are the built-in's, under the name ``acme_redact`` (``FGEXT_ACME_REDACT_MASK``...).
"""

from __future__ import annotations

import re
from typing import ClassVar, Tuple

from fgext.plugins.redact import RedactPlugin, Rule

# Card numbers start with 2-6 (Mastercard, Amex, Visa, UnionPay, Discover...) and have 15-19 digits;
# that keeps epoch timestamps in milliseconds or microseconds (which start with 1) out of the rule.
_CARD = re.compile(r"(?<![0-9])[2-6][0-9]{3}(?:[ -][0-9]{4}){3}(?:[0-9]{1,3})?(?![0-9])"
                   r"|(?<![0-9])[2-6][0-9]{14,18}(?![0-9])")


def luhn_ok(number: str) -> bool:
    """Whether ``number``'s digits pass the Luhn check that every payment card number passes."""
    digits = [int(c) for c in number if c.isdigit()]
    total = 0
    for index, digit in enumerate(reversed(digits)):
        if index % 2 == 1:
            digit = digit * 2 - 9 if digit > 4 else digit * 2
        total += digit
    return len(digits) >= 15 and total % 10 == 0


class AcmeRedact(RedactPlugin):
    """The default rules, then ACME's; card numbers need a valid check digit to be masked."""

    name: ClassVar[str] = "acme_redact"
    rules: ClassVar[Tuple[Rule, ...]] = (
        *RedactPlugin.rules,
        ("order_id", re.compile(r"\bORD-[0-9]{8}\b")),
        ("openid", re.compile(r"(?<![A-Za-z0-9_-])o[A-Za-z0-9_-]{27}(?![A-Za-z0-9_-])")),
        ("internal_host", re.compile(r"\b(?:[a-z0-9-]+\.)+corp\.example\.com\b")),
    )

    def redact(self, text: str) -> str:
        # Cards first: the default phone rules would otherwise take a slice of a card number.
        mask = self._mask.format(rule="bank_card")
        text = _CARD.sub(lambda m: mask if luhn_ok(m.group(0)) else m.group(0), text)
        return super().redact(text)
