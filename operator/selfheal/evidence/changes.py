"""What changed between the last healthy revision and the bad one: a pod-template diff.

``template_changes(bad=..., healthy=...)`` is pure: two ReplicaSets (or Deployments, or
bare pod templates) in, a list of ``Change`` out, per container and for the pod:
images, command and args, env names and values, resources, probes, volumes, and the
ConfigMaps and Secrets referenced by name. Values are never shown for env variables
whose name looks secret or that come from a Secret (``secretKeyRef``): those say
"changed" only. Everything shown also passes through a redactor, so a token pasted
into an arg does not leave either.

``to_json(changes)`` is the form that goes into ``status.evidence``.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from selfheal.evidence import humanize as hz
from selfheal.evidence.redact import REDACTED, Redactor, is_secret_key

HIDDEN = "(hidden)"
"""What a secret value reads as: its change is known, its content never shown."""
MAX_VALUE = 200


@dataclasses.dataclass(frozen=True, kw_only=True)
class Change:
    """One difference: ``container`` is ``""`` for pod-level fields."""

    container: str
    field: str
    """``image``, ``args``, ``env FOO``, ``resources.limits.memory``, ``livenessProbe``,
    ``volumes``, ``configMaps``, ``secrets``, ``container`` (added or removed)..."""
    before: str
    after: str

    def line(self) -> str:
        where = f"{self.container}: " if self.container else ""
        return f"{where}{self.field}: {self.before} → {self.after}"


def _pod_spec(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    spec = obj.get("spec") or {}
    if "template" in spec:  # a ReplicaSet or a Deployment
        return (spec.get("template") or {}).get("spec") or {}
    if "containers" in spec:  # a pod template ({metadata, spec})
        return spec
    return obj if "containers" in obj else {}  # a bare pod spec


def template_changes(
    *,
    bad: Mapping[str, Any],
    healthy: Mapping[str, Any],
    redactor: Redactor | None = None,
) -> list[Change]:
    """The differences from ``healthy`` to ``bad``, pod-level last."""
    r = redactor if redactor is not None else Redactor()
    old, new = _pod_spec(healthy), _pod_spec(bad)
    out: list[Change] = []
    old_c = {str(c.get("name")): c for c in _containers(old)}
    new_c = {str(c.get("name")): c for c in _containers(new)}
    for name in [*new_c, *(n for n in old_c if n not in new_c)]:
        a, b = old_c.get(name), new_c.get(name)
        if a is None or b is None:
            out.append(
                Change(
                    container=name,
                    field="container",
                    before="absent" if a is None else "present",
                    after="absent" if b is None else "present",
                )
            )
            continue
        out.extend(_container_changes(name, a, b, r))
    out.extend(_pod_changes(old, new, r))
    return out


def _containers(spec: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    return [
        c
        for kind in ("initContainers", "containers")
        for c in spec.get(kind) or []
        if isinstance(c, Mapping)
    ]


def _container_changes(
    name: str, a: Mapping[str, Any], b: Mapping[str, Any], r: Redactor
) -> list[Change]:
    out: list[Change] = []

    def diff(field: str, before: object, after: object) -> None:
        if before != after:
            out.append(
                Change(container=name, field=field, before=_show(before, r), after=_show(after, r))
            )

    diff("image", a.get("image"), b.get("image"))
    diff("command", a.get("command"), b.get("command"))
    diff("args", a.get("args"), b.get("args"))
    out.extend(_env_changes(name, a, b, r))
    for kind in ("requests", "limits"):
        ra = (a.get("resources") or {}).get(kind) or {}
        rb = (b.get("resources") or {}).get(kind) or {}
        for res in sorted(set(ra) | set(rb)):
            diff(f"resources.{kind}.{res}", ra.get(res), rb.get(res))
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        diff(probe, a.get(probe), b.get(probe))
    diff("volumeMounts", _mounts(a), _mounts(b))
    diff("envFrom", a.get("envFrom"), b.get("envFrom"))
    return out


def _env(c: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    return {str(e.get("name")): e for e in c.get("env") or [] if isinstance(e, Mapping)}


def _env_value(var: Mapping[str, Any] | None) -> tuple[str, bool]:
    """(what to show, whether it is secret)."""
    if var is None:
        return "unset", False
    source = var.get("valueFrom") or {}
    if "secretKeyRef" in source:
        ref = source["secretKeyRef"] or {}
        return f"from Secret {ref.get('name')} key {ref.get('key')}", True
    if "configMapKeyRef" in source:
        ref = source["configMapKeyRef"] or {}
        return f"from ConfigMap {ref.get('name')} key {ref.get('key')}", False
    if "fieldRef" in source:
        return f"from field {(source['fieldRef'] or {}).get('fieldPath')}", False
    if "resourceFieldRef" in source:
        return f"from resource {(source['resourceFieldRef'] or {}).get('resource')}", False
    return json.dumps(var.get("value", "")), False


def _env_changes(
    name: str, a: Mapping[str, Any], b: Mapping[str, Any], r: Redactor
) -> list[Change]:
    ea, eb = _env(a), _env(b)
    out = []
    for key in [*eb, *(k for k in ea if k not in eb)]:
        va, vb = ea.get(key), eb.get(key)
        if va == vb:
            continue
        (sa, secret_a), (sb, secret_b) = _env_value(va), _env_value(vb)
        literal_a = va is not None and "value" in va and "valueFrom" not in va
        literal_b = vb is not None and "value" in vb and "valueFrom" not in vb
        if is_secret_key(key):
            # A literal value under a secret-looking name: its change is the news.
            sa = HIDDEN if literal_a else sa
            sb = HIDDEN if literal_b else sb
        if sa == sb:  # two hidden values, or a reference with other options (optional)
            sb += " (changed)"
        out.append(
            Change(
                container=name,
                field=f"env {key}",
                before=sa if secret_a or sa in (HIDDEN, "unset") else _show(sa, r, raw=True),
                after=sb if secret_b or sb in (HIDDEN, "unset") else _show(sb, r, raw=True),
            )
        )
    return out


def _mounts(c: Mapping[str, Any]) -> list[str]:
    return sorted(
        f"{m.get('name')}:{m.get('mountPath')}"
        for m in c.get("volumeMounts") or []
        if isinstance(m, Mapping)
    )


def _volumes(spec: Mapping[str, Any]) -> dict[str, str]:
    out = {}
    for v in spec.get("volumes") or []:
        if not isinstance(v, Mapping):
            continue
        kinds = [k for k in v if k != "name"]
        kind = kinds[0] if kinds else "unknown"
        src = v.get(kind) if kinds else None
        ref = ""
        if isinstance(src, Mapping):
            ref = str(src.get("name") or src.get("secretName") or src.get("claimName") or "")
        out[str(v.get("name"))] = f"{kind} {ref}".strip()
    return out


def references(spec: Mapping[str, Any]) -> tuple[set[str], set[str]]:
    """(ConfigMap names, Secret names) a pod spec references: volumes, env, envFrom,
    projected volumes and image pull secrets."""
    spec = _pod_spec(spec) or spec
    cms: set[str] = set()
    secrets: set[str] = {
        str(s.get("name")) for s in spec.get("imagePullSecrets") or [] if s.get("name")
    }
    for v in spec.get("volumes") or []:
        if not isinstance(v, Mapping):
            continue
        if isinstance(v.get("configMap"), Mapping):
            cms.add(str(v["configMap"].get("name")))
        if isinstance(v.get("secret"), Mapping):
            secrets.add(str(v["secret"].get("secretName")))
        for src in (v.get("projected") or {}).get("sources") or []:
            if isinstance(src.get("configMap"), Mapping):
                cms.add(str(src["configMap"].get("name")))
            if isinstance(src.get("secret"), Mapping):
                secrets.add(str(src["secret"].get("name")))
    for c in _containers(spec):
        for e in c.get("env") or []:
            vf = e.get("valueFrom") or {}
            if isinstance(vf.get("configMapKeyRef"), Mapping):
                cms.add(str(vf["configMapKeyRef"].get("name")))
            if isinstance(vf.get("secretKeyRef"), Mapping):
                secrets.add(str(vf["secretKeyRef"].get("name")))
        for ef in c.get("envFrom") or []:
            if isinstance(ef.get("configMapRef"), Mapping):
                cms.add(str(ef["configMapRef"].get("name")))
            if isinstance(ef.get("secretRef"), Mapping):
                secrets.add(str(ef["secretRef"].get("name")))
    return cms - {"None"}, secrets - {"None"}


def _pod_changes(old: Mapping[str, Any], new: Mapping[str, Any], r: Redactor) -> list[Change]:
    out: list[Change] = []
    va, vb = _volumes(old), _volumes(new)
    for name in sorted(set(va) | set(vb)):
        if va.get(name) != vb.get(name):
            out.append(
                Change(
                    container="",
                    field=f"volume {name}",
                    before=va.get(name, "absent"),
                    after=vb.get(name, "absent"),
                )
            )
    (ca, sa), (cb, sb) = references(old), references(new)
    if ca != cb:
        out.append(Change(container="", field="configMaps", before=_names(ca), after=_names(cb)))
    if sa != sb:
        out.append(Change(container="", field="secrets", before=_names(sa), after=_names(sb)))
    for field in ("serviceAccountName", "nodeSelector", "tolerations", "affinity"):
        if old.get(field) != new.get(field):
            out.append(
                Change(
                    container="",
                    field=field,
                    before=_show(old.get(field), r),
                    after=_show(new.get(field), r),
                )
            )
    return out


def _names(names: set[str]) -> str:
    return ", ".join(sorted(names)) or "none"


def _show(value: object, r: Redactor, *, raw: bool = False) -> str:
    if value is None:
        return "unset"
    text = value if raw and isinstance(value, str) else _compact(value)
    text = r.redact_text(text)
    return text if len(text) <= MAX_VALUE else text[: MAX_VALUE - 1] + "…"


def _compact(value: object) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        # args and command read as a command line.
        return " ".join(value) if value else "[]"
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def to_json(changes: Sequence[Change]) -> list[dict[str, str]]:
    """For ``status.evidence`` (``whatChanged``): small, already redacted."""
    return [dataclasses.asdict(c) for c in changes]


# --- referenced ConfigMaps and Secrets -------------------------------------------------------


@dataclasses.dataclass(frozen=True, kw_only=True)
class ConfigChange:
    """A ConfigMap or Secret the pod references, by name and key only (never values)."""

    kind: str
    """``ConfigMap`` or ``Secret``."""
    name: str
    keys: tuple[str, ...]
    """Keys the pod uses (``configMapKeyRef``, volume ``items``), or all of a ConfigMap's
    keys when the pod mounts or imports it whole."""
    changed: bool | None
    """Modified after the last healthy revision was created; ``None``: not known (a
    Secret: selfheal never reads Secrets; a ConfigMap it could not read)."""
    modified: str = ""
    """RFC 3339 time of the last write (``metadata.managedFields``), when read."""

    def line(self) -> str:
        keys = f" (keys {', '.join(self.keys)})" if self.keys else ""
        if self.changed is None:
            state = "not read" if self.kind == "Secret" else "unknown"
        else:
            state = f"changed at {hz.when(self.modified)}" if self.changed else "unchanged"
        return f"{self.kind} {self.name}{keys}: {state}"


def referenced_keys(spec: Mapping[str, Any]) -> dict[tuple[str, str], set[str]]:
    """``(kind, name) -> keys`` the pod spec names; an empty set: the whole object."""
    spec = _pod_spec(spec) or spec
    out: dict[tuple[str, str], set[str]] = {}

    def add(kind: str, name: object, keys: Iterable[object] = ()) -> None:
        if name:
            out.setdefault((kind, str(name)), set()).update(str(k) for k in keys if k)

    for v in spec.get("volumes") or []:
        if not isinstance(v, Mapping):
            continue
        if isinstance(v.get("configMap"), Mapping):
            cm = v["configMap"]
            add("ConfigMap", cm.get("name"), (i.get("key") for i in cm.get("items") or []))
        if isinstance(v.get("secret"), Mapping):
            sec = v["secret"]
            add("Secret", sec.get("secretName"), (i.get("key") for i in sec.get("items") or []))
    for c in _containers(spec):
        for e in c.get("env") or []:
            vf = e.get("valueFrom") or {}
            if isinstance(vf.get("configMapKeyRef"), Mapping):
                add(
                    "ConfigMap",
                    vf["configMapKeyRef"].get("name"),
                    [vf["configMapKeyRef"].get("key")],
                )
            if isinstance(vf.get("secretKeyRef"), Mapping):
                add("Secret", vf["secretKeyRef"].get("name"), [vf["secretKeyRef"].get("key")])
        for ef in c.get("envFrom") or []:
            if isinstance(ef.get("configMapRef"), Mapping):
                add("ConfigMap", ef["configMapRef"].get("name"))
            if isinstance(ef.get("secretRef"), Mapping):
                add("Secret", ef["secretRef"].get("name"))
    return out


def last_write(obj: Mapping[str, Any]) -> str:
    """The newest ``managedFields[].time`` (the last write), else ``creationTimestamp``."""
    meta = obj.get("metadata") or {}
    times = [str(f.get("time")) for f in meta.get("managedFields") or [] if f.get("time")]
    return max(times) if times else str(meta.get("creationTimestamp") or "")


def config_change(
    kind: str,
    name: str,
    keys: Iterable[str],
    obj: Mapping[str, Any] | None,
    *,
    since: str,
) -> ConfigChange:
    """Pure: one referenced object, read (``obj``) or not, against the healthy revision's
    creation time ``since`` (RFC 3339; both are UTC ``Z`` strings, so they compare)."""
    used = tuple(sorted(keys))
    if obj is None:
        return ConfigChange(kind=kind, name=name, keys=used, changed=None)
    if not used:  # mounted or imported whole: the keys it has, by name
        used = tuple(sorted({*(obj.get("data") or {}), *(obj.get("binaryData") or {})}))
    modified = last_write(obj)
    changed = bool(modified and since and modified > since)
    return ConfigChange(kind=kind, name=name, keys=used, changed=changed, modified=modified)


__all__ = [
    "HIDDEN",
    "REDACTED",
    "Change",
    "ConfigChange",
    "config_change",
    "last_write",
    "referenced_keys",
    "references",
    "template_changes",
    "to_json",
]
