"""What to check first: a short, cause-specific list for the on-call, from the evidence.

``checklist(bundle, ...)`` is pure: it reads a collected (already redacted) ``Bundle``
and returns at most a handful of ``Check`` items, each with the facts filled in so the
on-call does not have to look them up: the peak memory against the limit for an
OOMKill, the image and whether it ever ran for a pull failure, the missing key by name
for a configuration error, the meaning of the exit code, the failing probe and its
last failure message.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence

from selfheal.evidence import humanize as hz
from selfheal.evidence.collect import Bundle, EventRecord, Revision

EXIT_CODES: dict[int, str] = {
    0: "exited normally: a container of a Deployment is expected to keep running",
    1: "application error: the program failed on its own (see the stack trace and logs)",
    2: "misuse of a shell built-in or bad arguments: check the command and args",
    126: "command found but not executable: file permissions or a non-binary entrypoint",
    127: "command not found: the entrypoint or a binary it calls is missing in the image",
    128: "invalid exit argument",
    134: "SIGABRT: the program aborted itself (an assertion, a failed allocation)",
    137: "SIGKILL: killed from outside: the OOM killer (see OOMKilled) or a liveness probe "
    "that failed and the grace period ran out",
    139: "SIGSEGV: segmentation fault in native code",
    143: "SIGTERM: asked to stop (a probe failure, a rollout, an eviction) and it did",
}


def exit_meaning(code: int | None) -> str:
    """The usual meaning of a container exit code (``128+n``: killed by signal ``n``)."""
    if code is None:
        return ""
    if code in EXIT_CODES:
        return EXIT_CODES[code]
    if 128 < code < 160:
        return f"killed by signal {code - 128}"
    return ""


@dataclasses.dataclass(frozen=True, kw_only=True)
class Check:
    """One thing to check, its facts already looked up."""

    title: str
    detail: str


MAX_CHECKS = 6


def checklist(
    bundle: Bundle,
    *,
    cause: str = "",
    last_healthy: int | None = None,
) -> list[Check]:
    """The checks for this incident, most telling first; at most ``MAX_CHECKS``.

    ``cause``: the remediation's cause (``CrashLoopBackOff``, ``OOMKilled``...).
    ``last_healthy``: the revision number of the last healthy revision when the caller
    knows it (the rollback's choice); ``None``: the newest revision older than the
    current one.
    """
    t = bundle.termination
    w = bundle.waiting
    reasons = {cause, t.reason if t else "", w.reason if w else ""}
    healthy = _last_healthy(bundle, last_healthy)
    out: list[Check] = []

    # A dependency without ready endpoints explains a crash that no rollback will heal.
    for d in bundle.dependencies:
        if d.failing:
            state = "is down" if not d.healthy else "has an open incident"
            out.append(
                Check(
                    title=f"Dependency {d.service}.{d.namespace} {state}",
                    detail=f"{d.line()} (named as {d.seen_as}): fix it first",
                )
            )
    for cc in bundle.config_changes:
        if cc.changed:
            out.append(
                Check(
                    title=f"{cc.kind} {cc.name} changed",
                    detail=f"written at {hz.when(cc.modified)}, after revision "
                    f"{bundle.changes_since} (the last healthy) was created: a rollback "
                    "does not undo it",
                )
            )
    if "OOMKilled" in reasons:
        out.extend(_oom(bundle, healthy))
    if reasons & {"ImagePullBackOff", "ErrImagePull", "InvalidImageName", "ErrImageNeverPull"}:
        out.extend(_image_pull(bundle))
    if reasons & {"CreateContainerConfigError", "CreateContainerError"}:
        out.extend(_config_error(bundle))
    if t is not None and t.exit_code is not None and "OOMKilled" not in reasons:
        meaning = exit_meaning(t.exit_code)
        if meaning:
            out.append(Check(title=f"Exit code {t.exit_code}", detail=meaning))
    out.extend(_probes(bundle))
    return out[:MAX_CHECKS]


def _last_healthy(bundle: Bundle, number: int | None) -> Revision | None:
    history = bundle.rollout_history
    if number is not None:
        return next((r for r in history if r.revision == number), None)
    try:
        current = int(bundle.revision)
    except ValueError:
        return None
    older = [r for r in history if r.revision < current]
    return max(older, key=lambda r: r.revision) if older else None


def _oom(bundle: Bundle, healthy: Revision | None) -> list[Check]:
    container = bundle.container or ""
    res = next((r for r in bundle.resources if r.container == container), None)
    limit = res.limits.get("memory") if res else None
    peak = (res.usage.get("memory_peak") or res.usage.get("memory")) if res else None
    if peak and limit:
        detail = f"container {container} peaked at {peak} against a limit of {limit}"
    elif limit:
        detail = f"container {container} has a memory limit of {limit}; its usage was not measured"
    else:
        detail = (
            f"container {container} has no memory limit: the node ran out of memory; "
            "check the node's other pods"
        )
    out = [Check(title="Peak memory against the limit", detail=detail)]
    if healthy is not None:
        old = (healthy.limits.get(container) or {}).get("memory")
        if old and limit and old != limit:
            note = f"limit was {old} there, {limit} now: the limit changed"
        elif old:
            note = f"limit was {old} there too: the memory use grew, not the limit"
        else:
            note = "no memory limit there"
        out.append(
            Check(
                title=f"Last healthy revision {healthy.revision}",
                detail=f"{', '.join(healthy.images) or 'images unknown'}; {note}",
            )
        )
    return out


_IMAGE_IN_MESSAGE = re.compile(r"image \\?\"?([^\s\"\\]+)")


def _image_pull(bundle: Bundle) -> list[Check]:
    w = bundle.waiting
    events = [e for e in bundle.events if e.reason in ("Failed", "BackOff", "ErrImagePull")]
    image = ""
    for text in [w.message if w else "", *(e.message for e in reversed(events))]:
        m = _IMAGE_IN_MESSAGE.search(text)
        if m:
            image = m.group(1)
            break
    if not image and bundle.images:
        image = bundle.images[0]
    why = _last_message(events, ("pull", "image")) or (w.message if w else "")
    out = [
        Check(
            title="The image reference",
            detail=f"{image or 'unknown'}" + (f": {why}" if why else ""),
        )
    ]
    ran = [r for r in bundle.rollout_history if image and image in r.images]
    current = bundle.revision
    earlier = [r for r in ran if str(r.revision) != current]
    if earlier:
        out.append(
            Check(
                title="Did this tag run before?",
                detail=f"yes, in revision {earlier[-1].revision}: the registry or its "
                "credentials changed, or the tag was deleted or moved",
            )
        )
    elif image:
        repo = _repository(image)
        others = sorted(
            {i for r in bundle.rollout_history for i in r.images if _repository(i) == repo}
            - {image}
        )
        detail = "no earlier revision ran it: check the tag exists (a typo, an unpushed build)"
        if others:
            detail += f"; earlier revisions ran {', '.join(others[-3:])}"
        out.append(Check(title="Did this tag run before?", detail=detail))
    secrets = ", ".join(bundle.pull_secrets)
    out.append(
        Check(
            title="Pull secrets",
            detail=(
                f"the pod uses {secrets}: check they exist in {bundle.namespace} and hold "
                "credentials for this registry"
                if secrets
                else "the pod names no imagePullSecrets: a private registry needs one "
                "(or one on the service account)"
            ),
        )
    )
    return out


def _repository(image: str) -> str:
    name = image.split("@", 1)[0]
    slash = name.rfind("/")
    colon = name.rfind(":")
    return name[:colon] if colon > slash else name


# Messages of the kubelet for a missing reference (pkg/kubelet/kubelet_pods.go).
_MISSING = (
    re.compile(r"couldn't find key (?P<key>\S+) in (?P<kind>ConfigMap|Secret) (?P<name>[\w./-]+)"),
    re.compile(r"(?P<kind>configmap|secret) \"(?P<name>[^\"]+)\" not found", re.I),
)


def _config_error(bundle: Bundle) -> list[Check]:
    w = bundle.waiting
    texts = [w.message if w else "", *(e.message for e in reversed(bundle.events))]
    for text in texts:
        for pattern in _MISSING:
            m = pattern.search(text)
            if m is None:
                continue
            kind = "ConfigMap" if m.group("kind").lower() == "configmap" else "Secret"
            name = m.group("name").split("/")[-1]
            key = m.groupdict().get("key")
            if key:
                detail = (
                    f"key {key} is missing from {kind} {name} in {bundle.namespace}: "
                    f"kubectl -n {bundle.namespace} get {kind.lower()} {name} -o yaml"
                )
                title = f"Missing key {key} in {kind} {name}"
            else:
                detail = (
                    f"{kind} {name} does not exist in {bundle.namespace}: was it renamed, "
                    "or not yet applied?"
                )
                title = f"Missing {kind} {name}"
            return [Check(title=title, detail=detail)]
    msg = w.message if w else ""
    return [
        Check(
            title="The container's configuration",
            detail=msg or "see the pod's events for the missing ConfigMap or Secret",
        )
    ]


def _probes(bundle: Bundle) -> list[Check]:
    out = []
    for kind in ("liveness", "readiness", "startup"):
        failures = [
            e
            for e in bundle.events
            if e.reason == "Unhealthy" and e.message.lower().startswith(kind)
        ]
        if not failures:
            continue
        last = failures[-1]
        probe = bundle.probes.get(kind, "not in the pod spec")
        count = sum(e.count for e in failures)
        out.append(
            Check(
                title=f"{kind.capitalize()} probe failing ({count}x)",
                detail=f"{probe}; last failure: {last.message}",
            )
        )
    return out


def _last_message(events: Sequence[EventRecord], words: Sequence[str]) -> str:
    for e in reversed(events):
        if any(w in e.message.lower() for w in words):
            return e.message
    return ""


__all__ = ["EXIT_CODES", "MAX_CHECKS", "Check", "checklist", "exit_meaning"]
