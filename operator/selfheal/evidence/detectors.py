"""Secret detectors maintained elsewhere: detect-secrets' plugins, and an entropy rule.

detect-secrets (Yelp) keeps a curated set of vendor formats (GitLab, OpenAI, Twilio,
SendGrid, Discord, PyPI, npm, Azure storage keys...). Its scanner works on files, line
by line; here only its regex detectors' ``analyze_string`` is used, on whole texts, so
a 1 MiB log costs a few dozen regex scans and no per-line Python work.

Left out on purpose:

- ``IPPublicDetector``: addresses are evidence, not secrets;
- ``KeywordDetector``: its key list is used by ``redact.is_secret_key`` instead, whose
  key/value rule knows stack traces (``token = header.split()``) from assignments;
- the high-entropy plugins: they look only at quoted strings and flag every git SHA
  and checksum; ``high_entropy_tokens`` below is stricter.

This module is the only one that imports ``detect_secrets`` (an import-linter contract).
"""

from __future__ import annotations

import functools
import math
import re
from collections import Counter
from collections.abc import Iterable, Iterator
from typing import Any

from detect_secrets.core.plugins.util import get_mapping_from_secret_type_to_class
from detect_secrets.plugins.base import RegexBasedDetector
from detect_secrets.plugins.keyword import DENYLIST as KEYWORD_DENYLIST

# PrivateKeyDetector finds the "BEGIN ... PRIVATE KEY" marker, not the key: redact.py
# removes whole blocks instead.
_EXCLUDED = frozenset({"IPPublicDetector", "KeywordDetector", "PrivateKeyDetector"})

KEYWORDS: tuple[str, ...] = tuple(KEYWORD_DENYLIST)
"""detect-secrets' secret key words, as regexes over a ``snake_case`` key (``api_?key``)."""


@functools.cache
def _detectors() -> tuple[RegexBasedDetector, ...]:
    classes: Iterable[type[Any]] = get_mapping_from_secret_type_to_class().values()
    found = [
        cls()
        for cls in sorted(classes, key=lambda c: c.__name__)
        if issubclass(cls, RegexBasedDetector) and cls.__name__ not in _EXCLUDED
    ]
    return tuple(found)


def detector_names() -> list[str]:
    """The detect-secrets plugins in use (for the tests and the README)."""
    return [type(d).__name__ for d in _detectors()]


# Some detectors' patterns include the delimiter around the value (``(?:\s|=|"|^)AKC...``).
_DELIMITERS = " \t\r\n=:\"'"


# Substrings one of which every match of a plugin contains (in the text as it is, or
# lower-cased for the plugins whose patterns ignore case): a plugin whose hints are all
# absent is skipped. Plugins not listed always run, so a new plugin is never missed.
_HINTS: dict[str, tuple[str, ...]] = {
    "AWSKeyDetector": ("AKIA", "ASIA", "A3T", "ABIA", "ACCA", "aws", "AWS", "Aws"),
    "ArtifactoryDetector": ("AKC", "AP"),
    "AzureStorageKeyDetector": ("AccountKey=",),
    "BasicAuthDetector": ("://",),
    "GitHubTokenDetector": ("ghp_", "gho_", "ghu_", "ghs_", "ghr_"),
    "GitLabTokenDetector": (
        "glpat-",
        "gldt-",
        "glft-",
        "glsoat-",
        "glrt-",
        "GR1348941",
        "glcbt-",
        "glimt-",
        "glptt-",
        "glagent-",
        "gloas-",
    ),
    "JwtTokenDetector": ("eyJ",),
    "MailchimpDetector": ("-us",),
    "NpmDetector": ("_authToken",),
    "OpenAIDetector": ("T3BlbkFJ",),
    "PypiTokenDetector": ("pypi-",),
    "SendGridDetector": ("SG.",),
    "SquareOAuthDetector": ("sq0csp-",),
    "StripeDetector": ("k_live_",),
    "TwilioKeyDetector": ("AC", "SK"),
}
_LOWER_HINTS: dict[str, tuple[str, ...]] = {
    "SlackDetector": ("xox", "hooks.slack.com"),
}
# Plugins of the form "<vendor>_<key word> = '<value>'" on one line: they run only on
# the lines that hold a key word, which are few in a log (their patterns are slow).
_KEYWORD_LINE_PLUGINS = frozenset(
    {"CloudantDetector", "IbmCloudIamDetector", "IbmCosHmacDetector", "SoftlayerDetector"}
)
_LINE_KEYWORD = re.compile(r"key|pw|pass|token|secret|cloudant\.com|softlayer\.com")


def _keyword_lines(text: str, low: str) -> str:
    """The lines of ``text`` holding a key word (searched in the lower-cased ``low``)."""
    lines: list[str] = []
    pos = 0
    while (m := _LINE_KEYWORD.search(low, pos)) is not None:
        start = text.rfind("\n", 0, m.start()) + 1
        end = text.find("\n", m.end())
        end = len(text) if end == -1 else end
        lines.append(text[start:end])
        pos = end + 1
    return "\n".join(lines)


def vendor_secrets(text: str) -> Iterator[tuple[str, str]]:
    """``(detector, secret)`` for each value a detect-secrets regex plugin finds in ``text``.

    The plugins' own ``denylist`` patterns, scanned with ``finditer``: ``analyze_string``
    returns ``findall`` results, which for a pattern whose only group is the prefix
    (GitLab's ``(glpat|...)-...``) is the prefix, not the token.
    """
    low = text.lower()
    keyword_lines: str | None = None
    for d in _detectors():
        name = type(d).__name__
        hints = _HINTS.get(name)
        if hints is not None and not any(h in text for h in hints):
            continue
        lower_hints = _LOWER_HINTS.get(name)
        if lower_hints is not None and not any(h in low for h in lower_hints):
            continue
        scanned = text
        if name in _KEYWORD_LINE_PLUGINS:
            if keyword_lines is None:
                keyword_lines = _keyword_lines(text, low)
            scanned = keyword_lines
        for pattern in d.denylist:
            for m in pattern.finditer(scanned):
                groups = [g for g in m.groups() if g and len(g) >= 8]
                value = max(groups, key=len) if groups else m.group(0).strip(_DELIMITERS)
                if len(value) >= 8:
                    yield name, value


# --- entropy --------------------------------------------------------------------------------

ENTROPY_MIN_LENGTH = 20
ENTROPY_MIN_BITS = 3.5
"""Shannon entropy per character, over the token's own characters."""
ENTROPY_MIN_SWITCHES = 0.45
"""Share of adjacent letter/digit pairs that switch class (lower, upper, digit).

Random base62/64 switches about 62% of the time; identifiers (``S3ClientV2Factory``),
ARNs and paths switch far less, so they stay readable."""

# Runs of base64 / base64url characters. Dots, colons and ``@`` end a token, so Java
# frames, timestamps, host:port and e-mail addresses never form one.
_TOKEN = re.compile(r"(?<![A-Za-z0-9+/_\-])[A-Za-z0-9+/_\-]{20,}={0,2}(?![A-Za-z0-9+/_\-=])")
_HEX_OR_UUID = re.compile(r"[0-9a-fA-F\-]+")


def _classes(s: str) -> tuple[int, float]:
    switches = 0
    pairs = 0
    prev = ""
    for ch in s:
        if ch.islower():
            c = "l"
        elif ch.isupper():
            c = "u"
        elif ch.isdigit():
            c = "d"
        else:
            continue
        if prev:
            pairs += 1
            switches += c != prev
        prev = c
    return pairs, (switches / pairs if pairs else 0.0)


def shannon(s: str) -> float:
    """Bits per character of ``s`` over its own character frequencies."""
    n = len(s)
    return -sum(c / n * math.log2(c / n) for c in Counter(s).values())


def looks_random(token: str) -> bool:
    """Whether ``token`` reads like key material rather than a word, id, hash or path."""
    core = token.rstrip("=")
    if len(core) < ENTROPY_MIN_LENGTH:
        return False
    # Git SHAs, checksums, UUIDs, trace ids: hex, never redacted (they are evidence).
    if _HEX_OR_UUID.fullmatch(core):
        return False
    if not (
        any(c.islower() for c in core)
        and any(c.isupper() for c in core)
        and any(c.isdigit() for c in core)
    ):
        return False
    pairs, switch_rate = _classes(core)
    if pairs < ENTROPY_MIN_LENGTH - 2 or switch_rate < ENTROPY_MIN_SWITCHES:
        return False
    return shannon(core) >= ENTROPY_MIN_BITS


def high_entropy_tokens(text: str) -> Iterator[tuple[int, int]]:
    """Spans of tokens in ``text`` that look like random key material."""
    for m in _TOKEN.finditer(text):
        if looks_random(m.group(0)):
            yield m.span()


__all__ = [
    "KEYWORDS",
    "detector_names",
    "high_entropy_tokens",
    "looks_random",
    "shannon",
    "vendor_secrets",
]
