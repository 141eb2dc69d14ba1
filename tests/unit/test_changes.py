"""What changed between two ReplicaSet templates: shown plainly, secrets never."""

from __future__ import annotations

import copy
import json
from typing import Any

from selfheal.evidence.changes import HIDDEN, references, template_changes, to_json
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
