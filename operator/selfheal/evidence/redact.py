"""Redaction at collection: secrets are removed before evidence leaves the collector.

A ``Redactor`` is compiled once (built-in rules plus a policy's ``redactPatterns``)
and then applied to every log, message and snapshot. ``with_literals`` derives a
redactor that also removes known values (a pod's env values), with its own count.

What the built-in rules remove, and what they keep:

- PEM private-key blocks (also JSON-escaped ones, as in a GCP service-account key);
- ``Authorization`` / ``Proxy-Authorization`` credentials (the scheme stays), ``Cookie``
  and ``Set-Cookie`` values, ``X-Api-Key``-like headers, bare ``Bearer`` tokens;
- the password in ``scheme://user:password@host`` (the user stays);
- AWS access key ids (``AKIA``/``ASIA``...), GitHub (``ghp_``, ``github_pat_``...),
  Slack (``xox?-``, webhook URLs), Stripe (``sk_live_``...), Google API keys, JWTs;
- the value of ``key=value``, ``key: value``, ``"key": "value"`` and ``<key>value</key>``
  when the key looks secret (password, passwd, secret, token, api_key, access_key,
  private_key, client_secret, credentials, auth...). Keys that are exception names
  (``TokenExpiredError: ...``) or references (``secretName``, ``secretKeyRef``) are kept,
  and values that are code (``token = header.split()[1]``) are left alone, so stack
  traces stay intact.

There is no generic high-entropy rule: hashes, ids and addresses in stack traces
would drown in false positives.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import itertools
import re
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

from selfheal.policy.model import PolicyError

REDACTED = "[REDACTED]"
MIN_LITERAL = 6
"""Known values shorter than this are not redacted by value: they would hit ordinary words."""

LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"

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
    return any(s in low for s in _SECRET_SUBSTRINGS)


_NOT_VALUES = frozenset({"", REDACTED, "null", "none", "nil", "true", "false", "***", "<redacted>"})
_SCHEMES = frozenset(
    {"bearer", "basic", "digest", "negotiate", "token", "ntlm", "aws4-hmac-sha256"}
)

_KV = re.compile(
    r"(?P<key>(?<![\w.\-/])(?P<q>[\"']?)-{0,2}(?:[A-Za-z_][\w.\-]{0,80})?"
    r"(?i:pass|pwd|pw|secret|token|key|auth|credential|creds|cookie|signature|dsn)"
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
_KV_KEYWORD = re.compile(r"pass|pw|secret|token|key|auth|cred|cookie|signature|dsn")
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")
_KEY_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-")


def _redact_pairs(text: str, sub: _Sub) -> str:
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
        out.append(text[done : m.start()])
        out.append(sub(m))
        done = m.end()
    if not out:
        return text
    out.append(text[done:])
    return "".join(out)


def _kv_sub(counter: Counter[str]) -> _Sub:
    def sub(m: re.Match[str]) -> str:
        key, sep, value = m.group("key"), m.group("sep"), m.group("value")
        if not is_secret_key(key):
            return m.group(0)
        # "key:value" with neither quotes nor a space is a file:line, a host:port, a label.
        if sep == ":" and not m.group("q"):
            return m.group(0)
        # "token: str = Depends(...)": a type annotation in a traceback's code line.
        if ":" in sep and _ANNOTATION.match(m.string, m.end()):
            return m.group(0)
        quote = '\\"' if value.startswith('\\"') else value[0] if value[:1] in ("'", '"') else ""
        inner = value[len(quote) : len(value) - len(quote)]
        if inner.lower() in _NOT_VALUES or inner.lower() in _SCHEMES or REDACTED in inner:
            return m.group(0)
        counter["key-value"] += 1
        return f"{key}{sep}{quote}{REDACTED}{quote}"

    return sub


_BUILTIN: tuple[_Rule, ...] = (
    _Rule(
        "private-key",
        re.compile(
            r"-----BEGIN (?P<kind>(?:[A-Z0-9]+ )*PRIVATE KEY)-----"
            r"(?:[\s\S]{0,20000}?-----END (?P=kind)-----|(?:\s|\\[nr]|[A-Za-z0-9+/=:,\-])*)"
        ),
        lambda m: f"-----BEGIN {m.group('kind')}-----{REDACTED}-----END {m.group('kind')}-----",
        hints=("private key-----",),
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
            r"(?P<pre>\bx-(?:api-key|auth-token|amz-security-token|vault-token|access-token)"
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
            r"[\w-]*\s+)(?P<secret>[^\s\-\[]\S*)",
            re.M | re.IGNORECASE,
        ),
        _keep_groups("pre"),
        hints=("pass", "token", "secret", "api-key", "apikey"),
    ),
    _Rule(
        "url-password",
        re.compile(
            r"(?P<pre>\b[a-zA-Z][a-zA-Z0-9+.\-]*://[^/\s:@\"']*:)(?P<secret>[^/\s@\"']+)(?P<at>@)"
        ),
        _keep_groups("pre", "at"),
        hints=("://",),
    ),
    _Rule(
        "aws-access-key-id",
        re.compile(r"\b(?:AKIA|ASIA|AGPA|AIDA|AROA|ANPA|AIPA)[A-Z0-9]{16}\b"),
        hints=("akia", "asia", "agpa", "aida", "aroa", "anpa", "aipa"),
    ),
    _Rule(
        "github-token",
        re.compile(r"\b(?:gh[pousr]_[A-Za-z0-9]{36,255}|github_pat_[A-Za-z0-9_]{22,255})\b"),
        hints=("ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_"),
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
    _Rule("google-api-key", re.compile(r"\bAIza[0-9A-Za-z_\-]{35}\b"), hints=("aiza",)),
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


@dataclasses.dataclass(frozen=True)
class _Compiled:
    rules: tuple[_Rule, ...]
    extra: tuple[re.Pattern[str], ...]


class Redactor:
    """Removes secrets from text and Kubernetes objects; counts what it removed.

    Compile once per policy (``Redactor(extra_patterns=policy.redact_patterns)``) and
    derive per-incident redactors with ``with_literals``: each keeps its own count.
    """

    def __init__(
        self, *, extra_patterns: Iterable[str] = (), field: str = "redactPatterns"
    ) -> None:
        extra: list[re.Pattern[str]] = []
        for i, p in enumerate(extra_patterns):
            try:
                extra.append(re.compile(p))
            except re.error as e:
                raise PolicyError(
                    f"spec.{field}[{i}]", f"not a valid regular expression ({e}); fix or remove it"
                ) from None
        self._compiled = _Compiled(_BUILTIN, tuple(extra))
        self._literals: re.Pattern[str] | None = None
        self._literal_set: frozenset[str] = frozenset()
        self.counts: Counter[str] = Counter()
        """Redactions made by this redactor, by rule name."""

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
        counts = self.counts
        if self._literals is not None:
            text = self._count_sub("env-value", self._literals, None, text)
        low = text.lower()
        for rule in self._compiled.rules:
            if rule.hints and not any(h in low for h in rule.hints):
                continue
            if rule.name == "xml-secret":
                text = rule.pattern.sub(self._xml_sub, text)
                continue
            text = self._count_sub(rule.name, rule.pattern, rule.sub, text)
        if "=" in text or ":" in text:
            text = _redact_pairs(text, _kv_sub(counts))
        for i, pattern in enumerate(self._compiled.extra):
            text = self._count_sub(f"policy[{i}]", pattern, _policy_sub, text)
        return text

    def _count_sub(self, name: str, pattern: re.Pattern[str], sub: _Sub | None, text: str) -> str:
        def repl(m: re.Match[str]) -> str:
            self.counts[name] += 1
            return sub(m) if sub is not None else REDACTED

        return pattern.sub(repl, text)

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


def _policy_sub(m: re.Match[str]) -> str:
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
