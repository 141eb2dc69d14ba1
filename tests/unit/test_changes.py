"""What changed between two ReplicaSet templates: shown plainly, secrets never."""

from __future__ import annotations

import copy
import dataclasses
import json
from typing import Any

from selfheal.evidence.changes import (
    HIDDEN,
    ConfigChange,
    config_change,
    referenced_keys,
    references,
    template_changes,
    to_json,
)
from selfheal.evidence.checklist import checklist
from selfheal.evidence.collect import Bundle
from selfheal.evidence.redact import REDACTED
from tests.unit.test_render import bundle, describe


def replicaset(**container: Any) -> dict[str, Any]:
    app: dict[str, Any] = {
        "name": "app",
        "image": "shop/checkout:1.4.1",
        "args": ["--port=8080"],
        "env": [
            {"name": "LOG_LEVEL", "value": "info"},
            {"name": "DB_PASSWORD", "value": "old-s3cret-pw"},
            {"name": "API_TOKEN", "valueFrom": {"secretKeyRef": {"name": "api", "key": "tok"}}},
        ],
        "resources": {"limits": {"memory": "512Mi"}, "requests": {"cpu": "250m"}},
        "livenessProbe": {"httpGet": {"path": "/healthz", "port": 8080}},
        "volumeMounts": [{"name": "cfg", "mountPath": "/etc/app"}],
    }
    app.update(container)
    return {
        "kind": "ReplicaSet",
        "spec": {
            "template": {
                "spec": {
                    "containers": [app],
                    "volumes": [{"name": "cfg", "configMap": {"name": "checkout-v1"}}],
                }
            }
        },
    }


def by_field(bad: dict[str, Any], healthy: dict[str, Any]) -> dict[str, tuple[str, str]]:
    return {
        f"{c.container}/{c.field}": (c.before, c.after)
        for c in template_changes(bad=bad, healthy=healthy)
    }


def test_identical_templates_have_no_changes() -> None:
    assert template_changes(bad=replicaset(), healthy=replicaset()) == []


def test_images_args_resources_probes_and_plain_env_values_show() -> None:
    healthy = replicaset()
    bad = replicaset(
        image="shop/checkout:1.4.2",
        args=["--port=8080", "--workers=8"],
        env=[
            {"name": "LOG_LEVEL", "value": "debug"},
            {"name": "DB_PASSWORD", "value": "old-s3cret-pw"},
            {"name": "API_TOKEN", "valueFrom": {"secretKeyRef": {"name": "api", "key": "tok"}}},
            {"name": "FEATURES", "valueFrom": {"configMapKeyRef": {"name": "flags", "key": "f"}}},
        ],
        resources={"limits": {"memory": "256Mi"}, "requests": {"cpu": "250m"}},
        livenessProbe={"httpGet": {"path": "/health", "port": 8080}},
    )
    got = by_field(bad, healthy)
    assert got["app/image"] == ("shop/checkout:1.4.1", "shop/checkout:1.4.2")
    assert got["app/args"] == ("--port=8080", "--port=8080 --workers=8")
    assert got["app/env LOG_LEVEL"] == ('"info"', '"debug"')
    assert got["app/env FEATURES"] == ("unset", "from ConfigMap flags key f")
    assert got["app/resources.limits.memory"] == ("512Mi", "256Mi")
    assert '"/health"' in got["app/livenessProbe"][1]
    # Unchanged: not listed.
    assert "app/env DB_PASSWORD" not in got
    assert "app/resources.requests.cpu" not in got


def test_secret_values_are_never_shown_only_that_they_changed() -> None:
    healthy = replicaset()
    bad = replicaset(
        env=[
            {"name": "LOG_LEVEL", "value": "info"},
            {"name": "DB_PASSWORD", "value": "new-s3cret-pw"},
            {"name": "API_TOKEN", "valueFrom": {"secretKeyRef": {"name": "api-v2", "key": "t"}}},
        ],
        args=["--port=8080", "--api-key=abcdef123456"],
    )
    changes = template_changes(bad=bad, healthy=healthy)
    text = json.dumps(to_json(changes))
    for secret in ("old-s3cret-pw", "new-s3cret-pw", "abcdef123456"):
        assert secret not in text
    got = by_field(bad, healthy)
    assert got["app/env DB_PASSWORD"] == (HIDDEN, f"{HIDDEN} (changed)")
    assert got["app/env API_TOKEN"] == (
        "from Secret api key tok",
        "from Secret api-v2 key t",
    )
    assert REDACTED in got["app/args"][1]
    assert got["/secrets"] == ("api", "api-v2")


def test_volumes_and_referenced_configmaps_by_name() -> None:
    healthy = replicaset()
    bad = copy.deepcopy(healthy)
    bad["spec"]["template"]["spec"]["volumes"] = [
        {"name": "cfg", "configMap": {"name": "checkout-v2"}},
        {"name": "tls", "secret": {"secretName": "checkout-tls"}},
    ]
    got = by_field(bad, healthy)
    assert got["/volume cfg"] == ("configMap checkout-v1", "configMap checkout-v2")
    assert got["/volume tls"] == ("absent", "secret checkout-tls")
    assert got["/configMaps"] == ("checkout-v1", "checkout-v2")
    assert got["/secrets"] == ("api", "api, checkout-tls")
    assert references(bad) == ({"checkout-v2"}, {"api", "checkout-tls"})


def test_an_added_container_is_one_change() -> None:
    bad = replicaset()
    bad["spec"]["template"]["spec"]["containers"].append({"name": "proxy", "image": "envoy:1"})
    assert by_field(bad, replicaset()) == {"proxy/container": ("absent", "present")}


def test_the_ticket_shows_what_changed_since_the_last_healthy_revision() -> None:
    b: Bundle = bundle()
    b.changes = template_changes(
        bad=replicaset(image="shop/checkout:1.4.2", env=[]), healthy=replicaset()
    )
    b.changes_since = 3
    text = describe(b)
    section = text.split("h3. What changed since revision 3 (the last healthy)\n")[1]
    rows = section.split("\n\n")[0].split("\n")
    assert rows[0] == "||Container||Field||Revision 3||Revision 4||"
    assert "|app|image|shop/checkout:1.4.1|shop/checkout:1.4.2|" in rows
    assert '|app|env LOG\\_LEVEL|"info"|unset|' in rows
    assert "old-s3cret-pw" not in text
    evidence = json.loads(b.attachments()["evidence.json"])
    assert evidence["whatChanged"]["since"] == 3
    assert {"container": "app", "field": "image", "before": "shop/checkout:1.4.1",
            "after": "shop/checkout:1.4.2"} in evidence["whatChanged"]["changes"]  # fmt: skip


def test_referenced_configmaps_and_secrets_by_name_and_key() -> None:
    rs = replicaset(
        env=[
            {"name": "F", "valueFrom": {"configMapKeyRef": {"name": "flags", "key": "f"}}},
            {"name": "T", "valueFrom": {"secretKeyRef": {"name": "api", "key": "tok"}}},
        ],
        envFrom=[{"secretRef": {"name": "db"}}],
    )
    assert referenced_keys(rs) == {
        ("ConfigMap", "flags"): {"f"},
        ("ConfigMap", "checkout-v1"): set(),
        ("Secret", "api"): {"tok"},
        ("Secret", "db"): set(),
    }


def test_a_configmap_written_after_the_healthy_revision_is_changed() -> None:
    cm = {
        "metadata": {
            "creationTimestamp": "2025-11-27T09:00:00Z",
            "managedFields": [
                {"manager": "kubectl", "time": "2025-11-27T09:00:00Z"},
                {"manager": "kubectl-edit", "time": "2025-11-28T07:55:00Z"},
            ],
        },
        "data": {"FEATURES": "a,b", "LIMIT": "3"},
    }
    since = "2025-11-27T10:00:00Z"
    whole = config_change("ConfigMap", "checkout-v1", set(), cm, since=since)
    assert whole == ConfigChange(
        kind="ConfigMap", name="checkout-v1", keys=("FEATURES", "LIMIT"), changed=True,
        modified="2025-11-28T07:55:00Z",
    )  # fmt: skip
    assert (
        whole.line()
        == "ConfigMap checkout-v1 (keys FEATURES, LIMIT): changed at 2025-11-28 07:55:00 UTC"
    )
    older = config_change("ConfigMap", "x", {"LIMIT"}, cm, since="2025-11-29T00:00:00Z")
    assert older.changed is False
    assert older.line() == "ConfigMap x (keys LIMIT): unchanged"
    secret = config_change("Secret", "api", {"tok"}, None, since=since)
    assert secret.line() == "Secret api (keys tok): not read"
    # Values are never part of it.
    assert "a,b" not in json.dumps(dataclasses.asdict(whole))


def test_a_changed_configmap_is_in_the_checklist_and_the_ticket() -> None:
    b = bundle()
    b.changes_since = 3
    b.config_changes = [
        ConfigChange(kind="ConfigMap", name="flags", keys=("f",), changed=True,
                     modified="2025-11-28T07:55:00Z"),
        ConfigChange(kind="Secret", name="api", keys=("tok",), changed=None),
    ]  # fmt: skip
    checks = checklist(b)
    assert checks[0].title == "ConfigMap flags changed"
    assert "after revision 3" in checks[0].detail
    text = describe(b)
    assert "h3. Referenced ConfigMaps and Secrets (since revision 3)" in text
    assert "* Secret api (keys tok): not read" in text
