"""Redaction at collection: secrets are removed before evidence leaves the collector.

A ``Redactor`` is compiled once (built-in rules plus a policy's ``redactPatterns``)
and then applied to every log, message and snapshot. ``with_literals`` derives a
redactor that also removes known values (a pod's env values), with its own count.

Four layers, in this order: known values (env), the rules below (shapes whose
surroundings matter: headers, URLs, command lines, key/value pairs), detect-secrets'
vendor detectors (``selfheal.evidence.detectors``), then an entropy rule for random
key material the others did not name. A policy's own patterns run last, with the
``regex`` engine and a time limit: a pattern that backtracks catastrophically costs
its text (which is removed, fail closed) and never the operator's event loop.

What the built-in rules remove, and what they keep:

- private-key blocks: PEM, OpenSSH, PGP, PuTTY (also JSON-escaped ones, as in a GCP
  service-account key), and the body of a block whose BEGIN line was cut off;
- ``Authorization`` / ``Proxy-Authorization`` credentials (the scheme stays), ``Cookie``
  and ``Set-Cookie`` values, ``X-Api-Key``-like headers, bare ``Bearer`` tokens;
- the password in ``scheme://user:password@host``, also when it holds ``/`` or ``@``
  (the user and the host stay); Azure SAS signatures (``sig=``);
- command-line secrets: ``--password x``, ``-u user:pw``, ``mysql -pX``,
  ``sshpass -p X``, ``redis-cli -a X``, ``docker login -p X``;
- AWS access key ids, GitHub, GitLab (``glpat-``...), OpenAI (``sk-proj-``...),
  Anthropic, Vault (``hvs.``), Slack, Stripe, Google API and OAuth keys, npm, PyPI,
  Docker Hub, Hugging Face tokens, JWTs, and detect-secrets' other vendor formats;
- the value of ``key=value``, ``key: value``, ``"key": "value"``, ``<key>value</key>``
  and Go's ``%+v`` ``{User:x Password:y}`` when the key looks secret (password, secret,
  token, api_key, private_key, client_secret, credentials, auth... and detect-secrets'
  key words). Quoted values are removed whole, spaces included; ``key: value`` (a
  YAML or header line) to the end of the line. Keys that are exception names
  (``TokenExpiredError: ...``) or references (``secretName``, ``secretKeyRef``) are
  kept, and values that are code (``token = header.split()[1]``) are left alone, so
  stack traces stay intact;
- tokens of 20+ base64 characters that mix cases and digits the way random bytes do
  (``detectors.looks_random``). Hex (git SHAs, checksums, trace ids), UUIDs,
  identifiers, paths, timestamps and Kubernetes names are kept: they are evidence.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import itertools
import re
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

import regex

from selfheal.evidence import detectors
from selfheal.policy.model import PolicyError

REDACTED = "[REDACTED]"
MIN_LITERAL = 6
"""Known values shorter than this are not redacted by value: they would hit ordinary words."""

LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"

POLICY_PATTERN_TIMEOUT = 0.2
"""Seconds one policy pattern may spend on one text before the line-by-line fallback."""
POLICY_FALLBACK_BUDGET = 0.5
"""Seconds the line-by-line fallback may spend on one text; lines past it are removed."""
POLICY_LINE_TIMEOUT = 0.02
"""Seconds the fallback gives one line; a line that takes longer is removed."""

T = TypeVar("T")

_Sub = Callable[[re.Match[str]], str]


@dataclasses.dataclass(frozen=True)
class _Rule:
    name: str
    pattern: re.Pattern[str]
    sub: _Sub | None = None
    """Builds the replacement; ``None``: the whole match becomes ``[REDACTED]``."""
    hints: tuple[str, ...] = ()
    """Substrings (lower case) one of which every match contains: a cheap skip."""
    lines: bool = True
    """Every match lies within one line: the rule runs only on the lines holding a hint
    (a few in a large log) instead of scanning all of it. Key blocks span lines."""


def _keep_groups(*keep: str) -> _Sub:
    """Replace the ``secret`` group, keep the named others around it."""

    def sub(m: re.Match[str]) -> str:
        return (
            "".join(m.group(k) or "" for k in keep[:1])
            + REDACTED
            + "".join(m.group(k) or "" for k in keep[1:])
        )

    return sub


# Key words that make a key secret-looking. Matched against the key's parts (split on
# _ . - and camelCase) so "author" or "passenger" are not mistaken for "auth" / "pass".
_SECRET_PARTS = frozenset(
    {
        "password", "passwd", "passphrase", "pass", "pwd", "pw", "secret", "secrets",
        "token", "auth", "authorization", "credential", "credentials", "creds", "apikey",
        "cookie", "signature", "privatekey", "accesskey", "secretkey", "sessionid", "dsn",
    }
)  # fmt: skip
_SECRET_PAIRS = frozenset(
    {
        ("api", "key"), ("access", "key"), ("private", "key"), ("secret", "key"),
        ("client", "secret"), ("session", "id"), ("account", "key"), ("master", "key"),
        ("encryption", "key"), ("signing", "key"), ("session", "key"), ("sas", "token"),
    }
)  # fmt: skip
_SECRET_SUBSTRINGS = (
    "password", "passwd", "secret", "apikey", "api_key", "privatekey", "private_key",
    "accesskey", "access_key", "credential",
)  # fmt: skip
# Parts that make a key a reference or a description, never a value holder.
_NOT_SECRET_PARTS = frozenset(
    {
        "name",
        "names",
        "ref",
        "file",
        "path",
        "dir",
        "url",
        "uri",
        "type",
        "ttl",
        "length",
        "len",
        "count",
        "counts",
        "used",
        "usage",
        "limit",
        "size",
        "expiry",
        "expires",
        "expiration",
        "seconds",
        "enabled",
        "required",
        "valid",
        "at",
        "version",
    }
)
_SPLIT_KEY = re.compile(r"[_.\-/\s]+|(?<=[a-z0-9])(?=[A-Z])")
# detect-secrets' key words (``db_?pass``, ``contraseña``...) over the key as snake_case.
_DS_KEYWORDS = re.compile("|".join(f"(?:{k})" for k in detectors.KEYWORDS))


@functools.lru_cache(maxsize=4096)
def is_secret_key(key: str) -> bool:
    """Whether ``key`` (an env var name, a JSON key, a log field) names a secret value."""
    k = key.strip("\"'\\")
    if not k or k.endswith(("Exception", "Error", "Warning")):
        return False
    parts = [p.lower() for p in _SPLIT_KEY.split(k) if p]
    if not parts:
        return False
    # "secretName", "tokenFile", "password_path": references to a secret, not secrets.
    if parts[-1] in _NOT_SECRET_PARTS:
        return False
    if any(p in _SECRET_PARTS for p in parts):
        return True
    if any(pair in _SECRET_PAIRS for pair in itertools.pairwise(parts)):
        return True
    if any(p.endswith("token") for p in parts):  # "accesstoken", "githubtoken"
        return True
    low = k.lower()
    if any(s in low for s in _SECRET_SUBSTRINGS):
        return True
    return _DS_KEYWORDS.search("_".join(parts)) is not None


_NOT_VALUES = frozenset({"", REDACTED, "null", "none", "nil", "true", "false", "***", "<redacted>"})
_SCHEMES = frozenset(
    {"bearer", "basic", "digest", "negotiate", "token", "ntlm", "aws4-hmac-sha256"}
)

_KV = re.compile(
    r"(?P<key>(?<![\w.\-/])(?P<q>[\"']?)-{0,2}(?:[A-Za-z_][\w.\-]{0,80})?"
    r"(?i:pass|pwd|pw|secret|token|key|auth|credential|creds|cookie|signature|dsn|contrase)"
    r"[\w.\-]{0,80}\\?(?P=q))"
    r"(?P<sep>\s*(?:=>|=|:)\s*)"
    r"(?P<value>\\\"(?:(?!\\\").){0,4096}\\\"|\"(?:[^\"\\\n]|\\.){0,4096}\"|'(?:[^'\\\n]|\\.){0,4096}'"
    # Possessive: a value that does not end at a separator is code, not a secret, and
    # giving back characters one by one would make "token=token=..." quadratic.
    r"|[^\s,;&'\"()\[\]{}<>]{1,1024}+(?=[\s,;&'\"}\]]|$))",
    re.MULTILINE,
)


_ANNOTATION = re.compile(r"(?:\[[^\]]*\])?(?:\s*\|\s*\w+)*\s*=[^=]")


# Searched in the lower-cased text: an IGNORECASE alternation is ten times slower.
_KV_KEYWORD = re.compile(r"pass|pw|secret|token|key|auth|cred|cookie|signature|dsn|contrase")
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")
_KEY_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-")


def _redact_pairs(text: str, counter: Counter[str]) -> str:
    # Anchored at each key word, walking back to the start of the key: trying the pair
    # pattern at every position of a large log costs ten times more.
    out: list[str] = []
    done = 0
    low = text.lower()
    if len(low) != len(text):  # a few non-ASCII letters lower-case to two characters
        low = text.translate(_ASCII_LOWER)
    for kw in _KV_KEYWORD.finditer(low):
        if kw.start() < done:
            continue
        s = kw.start()
        while s > 0 and text[s - 1] in _KEY_CHARS and kw.start() - s < 80:
            s -= 1
        if s > 0 and text[s - 1] in "\"'":
            s -= 1
        m = _KV.match(text, s)
        if m is None:
            continue
        replaced = _kv_replacement(m)
        if replaced is None:
            continue
        counter["key-value"] += 1
        out.append(text[done : m.start()])
        out.append(replaced)
        done = m.end()
        if _to_line_end(m):
            eol = text.find("\n", done)
            done = len(text) if eol == -1 else eol
    if not out:
        return text
    out.append(text[done:])
    return "".join(out)


# What may precede a Go ``%+v`` field (``{User:shop Password:x}``, ``map[token:x]``).
_FIELD_BEFORE = frozenset("{[, \t\n")
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _kv_replacement(m: re.Match[str]) -> str | None:
    """The redacted pair, or ``None`` when the pair is not a secret (code, a label...)."""
    key, sep, value = m.group("key"), m.group("sep"), m.group("value")
    if not is_secret_key(key):
        return None
    # "key:value" with neither quotes nor a space is mostly a file:line, a host:port or a
    # label; but a bare identifier after "{", "[" or a space is a Go struct or map field.
    if sep == ":" and not m.group("q"):
        before = m.string[m.start() - 1] if m.start() > 0 else "\n"
        if before not in _FIELD_BEFORE or not _IDENT.fullmatch(key):
            return None
    # "token: str = Depends(...)": a type annotation in a traceback's code line.
    if ":" in sep and _ANNOTATION.match(m.string, m.end()):
        return None
    quote = '\\"' if value.startswith('\\"') else value[0] if value[:1] in ("'", '"') else ""
    inner = value[len(quote) : len(value) - len(quote)]
    if inner.lower() in _NOT_VALUES or inner.lower() in _SCHEMES or REDACTED in inner:
        return None
    return f"{key}{sep}{quote}{REDACTED}{quote}"


def _to_line_end(m: re.Match[str]) -> bool:
    """``password: correct horse battery``: an unquoted value after ": " (YAML, a header,
    a message) runs to the end of the line, unless another pair follows on it."""
    sep, value = m.group("sep"), m.group("value")
    if sep.strip() != ":" or sep == ":" or value[:1] in ("'", '"', "\\"):
        return False
    eol = m.string.find("\n", m.end())
    rest = m.string[m.end() : len(m.string) if eol == -1 else eol]
    return bool(rest.strip()) and "=" not in rest and ": " not in rest and '"' not in rest


def _url_password(m: re.Match[str]) -> str:
    secret = m.group("secret")
    # "http://host:8080/a/@b": a port and a path before an "@" in the path, not a password.
    if _PORT_PATH.fullmatch(secret) or secret == REDACTED:
        return m.group(0)
    return m.group("pre") + REDACTED + m.group("at")


_PORT_PATH = re.compile(r"\d{1,5}(?:/.*)?", re.DOTALL)
_QUOTED_OR_WORD = r"(?P<secret>\"[^\"\n]*\"|'[^'\n]*'|[^\s'\"]+)"
_PEM_KIND = r"(?P<kind>(?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?)"

_BUILTIN: tuple[_Rule, ...] = (
    _Rule(
        "private-key",
        re.compile(
            rf"-----BEGIN {_PEM_KIND}-----"
            r"(?:[\s\S]{0,50000}?-----END (?P=kind)-----|(?:\s|\\[nr]|[A-Za-z0-9+/=:,\-])*)"
        ),
        lambda m: f"-----BEGIN {m.group('kind')}-----{REDACTED}-----END {m.group('kind')}-----",
        hints=("private key",),
        lines=False,
    ),
    _Rule(
        # RFC 4716 (SSH2) blocks: four dashes and spaces.
        "private-key",
        re.compile(
            r"---- BEGIN (?P<kind>[A-Z0-9 ]*PRIVATE KEY) ----"
            r"(?:[\s\S]{0,50000}?---- END (?P=kind) ----|(?:\s|\\[nr]|[A-Za-z0-9+/=:,\-\"])*)"
        ),
        lambda m: f"---- BEGIN {m.group('kind')} ----{REDACTED}---- END {m.group('kind')} ----",
        hints=("private key",),
        lines=False,
    ),
    _Rule(
        # The end of a block whose BEGIN line was cut off (a log truncated from the front).
        "private-key",
        re.compile(
            r"(?:^[A-Za-z0-9+/=]{16,}\r?\n)+"
            r"(?=-----END (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----)",
            re.M,
        ),
        lambda m: REDACTED + "\n",
        hints=("private key",),
        lines=False,
    ),
    _Rule(
        "private-key",
        re.compile(r"(?P<pre>Private-Lines: *\d+\r?\n)(?P<secret>(?:[A-Za-z0-9+/=]+\r?\n?)+)"),
        lambda m: m.group("pre") + REDACTED + "\n",
        hints=("private-lines",),
        lines=False,
    ),
    _Rule(
        "authorization-header",
        re.compile(
            r"(?P<pre>\b(?:proxy-)?authorization[\"']?\s*[:=]\s*[\[\"']*"
            r"(?:(?:bearer|basic|digest|negotiate|token|ntlm|aws4-hmac-sha256)\s+)?)"
            r"(?P<secret>[^\s\"',;\]]+(?:,\s*\w+=[^\s\"',;\]]+)*)",
            re.IGNORECASE,
        ),
        _keep_groups("pre"),
        hints=("authorization",),
    ),
    _Rule(
        "cookie-header",
        re.compile(
            r"(?P<pre>\b(?:set-)?cookie[\"']?\s*:\s*[\"']?)(?P<secret>[^\"'\r\n]+)",
            re.IGNORECASE,
        ),
        _keep_groups("pre"),
        hints=("cookie",),
    ),
    _Rule(
        "api-key-header",
        re.compile(
            r"(?P<pre>\bx-(?:api-key|auth-token|amz-security-token|vault-token|access-token"
            r"|goog-api-key|functions-key|shopify-access-token)"
            r"[\"']?\s*:\s*[\"']?)(?P<secret>[^\s\"',;@]+)",
            re.IGNORECASE,
        ),
        _keep_groups("pre"),
        hints=("x-",),
    ),
    _Rule(
        "bearer-token",
        re.compile(r"(?P<pre>\bbearer\s+)(?P<secret>[A-Za-z0-9\-._~+/]{8,}=*)", re.IGNORECASE),
        _keep_groups("pre"),
        hints=("bearer",),
    ),
    _Rule(
        "cli-credentials",
        re.compile(r"(?P<pre>(?:^|(?<=\s))(?:-u|--user)[\s=]+[^\s:]+:)(?P<secret>\S+)", re.M),
        _keep_groups("pre"),
        hints=("-u",),
    ),
    _Rule(
        "cli-secret-flag",
        re.compile(
            r"(?P<pre>(?:^|(?<=\s))--?[\w-]*(?:password|passwd|token|secret|api-key|apikey)"
            r"[\w-]*\s+)(?P<secret>\"[^\"\n]*\"|'[^'\n]*'|[^\s\-\[\"']\S*)",
            re.M | re.IGNORECASE,
        ),
        _keep_groups("pre"),
        hints=("pass", "token", "secret", "api-key", "apikey"),
    ),
    _Rule(
        # mysql's password flag is attached ("-pX"; "-p X" prompts and X is a database).
        "cli-secret-flag",
        re.compile(
            r"(?P<pre>\b(?:mysql\w*|mariadb[\w-]*)\b[^\n|;&]*?\s-p)" + _QUOTED_OR_WORD,
        ),
        _keep_groups("pre"),
        hints=("mysql", "mariadb"),
    ),
    _Rule(
        "cli-secret-flag",
        re.compile(r"(?P<pre>\bsshpass\s+(?:-[a-oq-zA-Z]\S*\s+)*-p\s*)" + _QUOTED_OR_WORD),
        _keep_groups("pre"),
        hints=("sshpass",),
    ),
    _Rule(
        "cli-secret-flag",
        re.compile(
            r"(?P<pre>\b(?:redis-cli\b[^\n|;&]*?\s-a|docker\s+login\b[^\n|;&]*?\s-p)\s+)"
            + _QUOTED_OR_WORD
        ),
        _keep_groups("pre"),
        hints=("redis-cli", "docker"),
    ),
    _Rule(
        # Greedy to the last "@" of the run: passwords may hold "/" and "@" ("p@ss/w").
        "url-password",
        re.compile(
            r"(?P<pre>\b[a-zA-Z][a-zA-Z0-9+.\-]*://[^/\s:@\"'<>]*:)"
            r"(?P<secret>[^\s\"'<>]{1,256})(?P<at>@)(?=[\w\-.\[\]%]+)"
        ),
        _url_password,
        hints=("://",),
    ),
    _Rule(
        # Sentry-style DSNs carry the key as the user: https://<32 hex>@o1.ingest.sentry.io
        "url-password",
        re.compile(r"(?P<pre>\bhttps?://)(?P<secret>[0-9a-f]{32})(?P<at>@)"),
        _keep_groups("pre", "at"),
        hints=("://",),
    ),
    _Rule(
        "azure-sas-signature",
        re.compile(r"(?P<pre>[?&;\s]sig=)(?P<secret>[^&\s\"'<>#]+)", re.IGNORECASE),
        _keep_groups("pre"),
        hints=("sig=",),
    ),
    _Rule(
        "aws-access-key-id",
        re.compile(r"\b(?:AKIA|ASIA|AGPA|AIDA|AROA|ANPA|AIPA|ABIA|ACCA)[A-Z0-9]{16}\b"),
        hints=("akia", "asia", "agpa", "aida", "aroa", "anpa", "aipa", "abia", "acca"),
    ),
    _Rule(
        "github-token",
        re.compile(r"\b(?:gh[pousr]_[A-Za-z0-9]{36,255}|github_pat_[A-Za-z0-9_]{22,255})\b"),
        hints=("ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_"),
    ),
    _Rule(
        "openai-key",
        re.compile(
            r"\bsk-(?:proj|svcacct|admin|None)-[A-Za-z0-9_\-]{20,}"
            r"|\bsk-ant-(?:api|admin|oat)\d{2}-[A-Za-z0-9_\-]{20,}"
            r"|\bsk-[A-Za-z0-9]{32,}\b"
        ),
        hints=("sk-",),
    ),
    _Rule(
        # HashiCorp Vault service, batch and recovery tokens.
        "vault-token",
        re.compile(r"\bhv[sbr]\.[A-Za-z0-9_\-]{20,}"),
        hints=("hvs.", "hvb.", "hvr."),
    ),
    _Rule(
        "package-registry-token",
        re.compile(
            r"\bnpm_[A-Za-z0-9]{36}\b|\bpypi-[A-Za-z0-9_\-]{50,}|\bdckr_pat_[A-Za-z0-9_\-]{20,}"
            r"|\bhf_[A-Za-z0-9]{30,}\b"
        ),
        hints=("npm_", "pypi-", "dckr_pat_", "hf_"),
    ),
    _Rule("slack-token", re.compile(r"\bxox[baprse]-[A-Za-z0-9\-]{10,}"), hints=("xox",)),
    _Rule(
        "slack-webhook",
        re.compile(r"hooks\.slack\.com/services/[A-Za-z0-9/]+"),
        lambda m: f"hooks.slack.com/services/{REDACTED}",
        hints=("hooks.slack.com",),
    ),
    _Rule(
        "stripe-key",
        re.compile(r"\b(?:sk|rk)_(?:live|test)_[A-Za-z0-9]{10,}\b|\bwhsec_[A-Za-z0-9]{16,}\b"),
        hints=("k_live_", "k_test_", "whsec_"),
    ),
    _Rule(
        "google-api-key",
        re.compile(r"\bAIza[0-9A-Za-z_\-]{35}\b|\bya29\.[0-9A-Za-z_\-]{20,}"),
        hints=("aiza", "ya29."),
    ),
    _Rule(
        "jwt",
        re.compile(r"\beyJ[A-Za-z0-9_\-]{5,}\.[A-Za-z0-9_\-]{5,}\.[A-Za-z0-9_\-]{5,}"),
        hints=("eyj",),
    ),
    _Rule(
        "xml-secret",
        re.compile(r"<(?P<tag>[\w:.\-]{1,60})>(?P<secret>[^<\n]{1,4096})</(?P=tag)>"),
        None,
        hints=("</",),
    ),
)


_LINE_MODE_MIN = 16 * 1024
"""Texts shorter than this are scanned whole: finding their hint lines costs more."""


def _lower(text: str) -> str:
    low = text.lower()
    # A few non-ASCII letters lower-case to two characters: keep the offsets aligned.
    return low if len(low) == len(text) else text.translate(_ASCII_LOWER)


def _on_lines(text: str, low: str, hints: tuple[str, ...], sub: Callable[[str], str]) -> str:
    """``sub`` applied to the lines of ``text`` that hold one of ``hints`` (in ``low``),
    each with the line after it: a value may follow its key on the next line
    (``Authorization:\\n  Bearer ...``), as ``\\s*`` in the patterns allows."""
    spans: list[tuple[int, int]] = []
    for h in hints:
        pos = 0
        while (i := low.find(h, pos)) != -1:
            start = text.rfind("\n", 0, i) + 1
            line_end = text.find("\n", i + len(h))
            end = -1 if line_end == -1 else text.find("\n", line_end + 1)
            spans.append((start, len(text) if end == -1 else end))
            if line_end == -1:
                break
            pos = line_end + 1
    if not spans:
        return text
    spans.sort()
    merged = [spans[0]]
    for s, e in spans[1:]:
        if s <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], e))
        else:
            merged.append((s, e))
    out: list[str] = []
    done = 0
    changed = False
    for s, e in merged:
        chunk = text[s:e]
        new = sub(chunk)
        changed = changed or new != chunk
        out.append(text[done:s])
        out.append(new)
        done = e
    if not changed:
        return text
    out.append(text[done:])
    return "".join(out)


@dataclasses.dataclass(frozen=True)
class _Compiled:
    rules: tuple[_Rule, ...]
    extra: tuple[regex.Pattern[str], ...]


class Redactor:
    """Removes secrets from text and Kubernetes objects; counts what it removed.

    Compile once per policy (``Redactor(extra_patterns=policy.redact_patterns)``) and
    derive per-incident redactors with ``with_literals``: each keeps its own count.
    """

    def __init__(
        self, *, extra_patterns: Iterable[str] = (), field: str = "redaction.patterns"
    ) -> None:
        extra: list[regex.Pattern[str]] = []
        for i, p in enumerate(extra_patterns):
            try:
                # The regex engine, not re: its matching honours a timeout (see _policy).
                extra.append(regex.compile(p))
            except (regex.error, re.error) as e:
                raise PolicyError(
                    f"spec.{field}[{i}]", f"not a valid regular expression ({e}); fix or remove it"
                ) from None
        self._compiled = _Compiled(_BUILTIN, tuple(extra))
        self._literals: re.Pattern[str] | None = None
        self._literal_set: frozenset[str] = frozenset()
        self.counts: Counter[str] = Counter()
        """Redactions made by this redactor, by rule name. ``policy[i]-timeout`` counts
        texts on which policy pattern ``i`` ran out of time (those lines were removed)."""

    @classmethod
    def for_policy(cls, patterns: Iterable[str]) -> Redactor:
        """From ``HealingPolicy.redact_patterns``."""
        return cls(extra_patterns=patterns)

    def with_literals(self, values: Iterable[str]) -> Redactor:
        """A redactor with the same rules that also removes each of ``values`` verbatim.

        Values shorter than ``MIN_LITERAL`` are ignored. The new redactor counts from 0.
        """
        new = Redactor.__new__(Redactor)
        new._compiled = self._compiled
        new.counts = Counter()
        lits = {v for v in values if isinstance(v, str) and len(v.strip()) >= MIN_LITERAL}
        lits |= self._literal_set
        new._literal_set = frozenset(lits)
        new._literals = (
            re.compile("|".join(re.escape(v) for v in sorted(lits, key=len, reverse=True)))
            if lits
            else None
        )
        return new

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def redact_text(self, text: str) -> str:
        """``text`` with every secret the rules recognise replaced by ``[REDACTED]``."""
        if not text:
            return text
        if self._literals is not None:
            text = self._count_sub("env-value", self._literals, None, text)
        low = _lower(text)
        for rule in self._compiled.rules:
            if rule.hints and not any(h in low for h in rule.hints):
                continue
            before = text
            if rule.lines and rule.hints and len(text) > _LINE_MODE_MIN:
                text = _on_lines(text, low, rule.hints, functools.partial(self._apply, rule))
            else:
                text = self._apply(rule, text)
            if text is not before:
                low = _lower(text)
        if "=" in text or ":" in text:
            text = _redact_pairs(text, self.counts)
        text = self._vendor(text)
        text = self._entropy(text)
        for i, pattern in enumerate(self._compiled.extra):
            text = self._policy(i, pattern, text)
        return text

    def _apply(self, rule: _Rule, text: str) -> str:
        if rule.name == "xml-secret":
            return rule.pattern.sub(self._xml_sub, text)
        return self._count_sub(rule.name, rule.pattern, rule.sub, text)

    def _count_sub(self, name: str, pattern: re.Pattern[str], sub: _Sub | None, text: str) -> str:
        def repl(m: re.Match[str]) -> str:
            out = sub(m) if sub is not None else REDACTED
            if out != m.group(0):  # a sub may decide the match is no secret after all
                self.counts[name] += 1
            return out

        return pattern.sub(repl, text)

    def _vendor(self, text: str) -> str:
        found: dict[str, str] = {}
        for name, secret in detectors.vendor_secrets(text):
            if REDACTED not in secret:
                found.setdefault(secret, name)
        if not found:
            return text
        by_length = sorted(found, key=len, reverse=True)
        alternation = re.compile("|".join(re.escape(v) for v in by_length))

        def repl(m: re.Match[str]) -> str:
            self.counts[f"detect-secrets:{found[m.group(0)]}"] += 1
            return REDACTED

        return alternation.sub(repl, text)

    def _entropy(self, text: str) -> str:
        spans = list(detectors.high_entropy_tokens(text))
        if not spans:
            return text
        self.counts["high-entropy"] += len(spans)
        out: list[str] = []
        done = 0
        for s, e in spans:
            out.append(text[done:s])
            out.append(REDACTED)
            done = e
        out.append(text[done:])
        return "".join(out)

    def _policy(self, i: int, pattern: regex.Pattern[str], text: str) -> str:
        name = f"policy[{i}]"

        def repl(m: regex.Match[str]) -> str:
            self.counts[name] += 1
            return _policy_sub(m)

        try:
            # concurrent: the engine releases the GIL, so the event loop (collection runs
            # in a worker thread) keeps serving while a slow pattern runs.
            return pattern.sub(repl, text, timeout=POLICY_PATTERN_TIMEOUT, concurrent=True)
        except TimeoutError:
            pass
        # A pattern that backtracks catastrophically on some line: retry line by line, and
        # remove the lines it cannot decide in time. Failing closed: the pattern was meant
        # to remove something, so a line it could not check does not leave.
        self.counts[f"{name}-timeout"] += 1
        deadline = time.monotonic() + POLICY_FALLBACK_BUDGET
        lines = text.split("\n")
        for j, line in enumerate(lines):
            if time.monotonic() > deadline:
                lines[j] = f"[REDACTED: policy pattern {i} timed out]"
                continue
            try:
                lines[j] = pattern.sub(repl, line, timeout=POLICY_LINE_TIMEOUT, concurrent=True)
            except TimeoutError:
                lines[j] = f"[REDACTED: policy pattern {i} timed out]"
        return "\n".join(lines)

    def _xml_sub(self, m: re.Match[str]) -> str:
        if not is_secret_key(m.group("tag")) or m.group("secret") == REDACTED:
            return m.group(0)
        self.counts["key-value"] += 1
        return f"<{m.group('tag')}>{REDACTED}</{m.group('tag')}>"

    def redact_object(self, obj: T) -> T:
        """A deep copy of a Kubernetes object (or any JSON value) with secrets removed.

        Every container's ``env[].value`` becomes ``[REDACTED]`` (names and ``valueFrom``
        references stay, never resolved); ``metadata.managedFields`` is dropped; the
        last-applied-configuration annotation (it repeats env values) is redacted; a
        Secret's ``data`` / ``stringData`` are dropped; values under secret-looking keys
        and every other string go through ``redact_text``.
        """
        return self._walk(copy.deepcopy(obj), key="")  # type: ignore[no-any-return]

    def _walk(self, node: Any, *, key: str) -> Any:
        if isinstance(node, dict):
            meta = node.get("metadata")
            if isinstance(meta, dict):
                meta.pop("managedFields", None)
                ann = meta.get("annotations")
                if isinstance(ann, dict) and LAST_APPLIED in ann:
                    ann[LAST_APPLIED] = REDACTED
                    self.counts["last-applied-configuration"] += 1
            if node.get("kind") == "Secret":
                for k in ("data", "stringData"):
                    if k in node:
                        node[k] = REDACTED
                        self.counts["secret-data"] += 1
            env = node.get("env")
            if isinstance(env, list):
                for var in env:
                    if isinstance(var, dict) and "value" in var and var["value"] not in ("", None):
                        var["value"] = REDACTED
                        self.counts["env-value"] += 1
            for k, v in list(node.items()):
                if isinstance(v, str) and v != REDACTED and is_secret_key(str(k)) and v:
                    node[k] = REDACTED
                    self.counts["key-value"] += 1
                else:
                    node[k] = self._walk(v, key=str(k))
            return node
        if isinstance(node, list):
            out = [self._walk(v, key=key) for v in node]
            if key in ("args", "command"):
                _redact_flag_values(out, self.counts)
            return out
        if isinstance(node, str):
            return self.redact_text(node)
        return node


def _redact_flag_values(argv: list[Any], counts: Counter[str]) -> None:
    """``["--password", "x"]``: the value after a secret-looking flag is a separate item."""
    for i in range(len(argv) - 1):
        flag, value = argv[i], argv[i + 1]
        if (
            isinstance(flag, str)
            and isinstance(value, str)
            and flag.startswith("-")
            and "=" not in flag
            and is_secret_key(flag.lstrip("-"))
            and value != REDACTED
            and not value.startswith("-")
        ):
            argv[i + 1] = REDACTED
            counts["key-value"] += 1


def _policy_sub(m: regex.Match[str]) -> str:
    # A pattern with a group named "value" redacts only that group.
    if "value" in m.re.groupindex and m.group("value") is not None:
        s, e = m.span("value")
        base = m.start()
        whole = m.group(0)
        return whole[: s - base] + REDACTED + whole[e - base :]
    return REDACTED


def env_values(obj: Mapping[str, Any]) -> list[str]:
    """Literal ``env[].value`` strings of every container in a Pod or a workload template."""
    spec = obj.get("spec") or {}
    pod_spec = ((spec.get("template") or {}).get("spec")) if "template" in spec else spec
    out: list[str] = []
    if not isinstance(pod_spec, dict):
        return out
    for kind in ("containers", "initContainers", "ephemeralContainers"):
        for c in pod_spec.get(kind) or []:
            for var in c.get("env") or []:
                v = var.get("value")
                if isinstance(v, str) and v:
                    out.append(v)
    return out
