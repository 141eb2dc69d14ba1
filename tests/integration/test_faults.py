"""Faults at the real boundaries, through the running operator (with the chart's RBAC):
the operator SIGKILLed while Jira holds the answer to a create, or to the recovery
comment; Jira down across a restart; the workload, the policy or the Remediation
deleted mid-incident. Each ends with exactly the tickets and records a user expects."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from selfheal import API_VERSION
from selfheal.clients import kube as k
from selfheal.remediation.records import INITIAL_STATUS
from tests.support.audit import WORKLOAD_WRITES, workload_writes
from tests.support.cluster import Cluster
from tests.support.fixtures.jira import JIRA_PASSWORD, JIRA_USER
from tests.support.jira_server import JiraServer, ProjectSpec
from tests.support.kubelet import Behaviour, Kubelet
from tests.support.operator import OperatorProcess
from tests.support.workloads import (
    deploy,
    deployment,
    eventually,
    jira_secret,
    policy,
    remediations,
    set_image,
)

CREATE = r"/rest/api/2/issue$"
COMMENT = r"/rest/api/2/issue/[^/]+/comment$"
CRASH = "Traceback (most recent call last):\nRuntimeError: payments down\n"


def _spec(
    *, verify: str = "3s", timeout: str = "6s", steps: list[Any] | None = None
) -> dict[str, Any]:
    return {
        "triggers": [{"name": "crashloop", "crashLoop": {"restarts": 2, "within": "10m"}}],
        "remediation": {
            "steps": [{"restart": {}}] if steps is None else steps,
            "verify": {"for": verify, "timeout": timeout},
            "escalate": {
                "jira": {"project": "OPS", "issueType": "Bug", "resolveTransition": "Done"}
            },
        },
    }


async def _crashing(
    kube: k.Kube, kubelet: Kubelet, ns: str, name: str = "pay", *, spec: dict[str, Any]
) -> str:
    """A crash-looping Deployment with a HealingPolicy; returns the Jira secret ref."""
    image = f"registry.local/{ns}/{name}:v1"
    kubelet.behave(image, Behaviour(kind="crashloop", restart_every=1.0, previous_logs=CRASH))
    await kube.create(k.apps(ns, "deployments"), deployment(name, image, replicas=1))
    await kube.create(
        k.group(API_VERSION, ns, "healingpolicies"),
        policy(name, selector={"app": name}, spec=spec),
    )
    return await jira_secret(kube, ns, password=JIRA_PASSWORD)


def _creates(jira: JiraServer) -> int:
    return sum(
        1 for r in jira.requests_received() if r.method == "POST" and r.path.endswith("/issue")
    )


async def _one(
    kube: k.Kube, ns: str, pred: Callable[[dict[str, Any]], bool]
) -> dict[str, Any] | None:
    hits = [r for r in await remediations(kube, ns) if pred(r.get("status") or {})]
    return hits[0] if hits else None


async def _in_phase(kube: k.Kube, ns: str, phase: str) -> dict[str, Any]:
    return await eventually(
        lambda: _one(kube, ns, lambda st: st.get("phase") == phase), timeout=120, what=phase
    )


def _ticket_state(state: str) -> Callable[[dict[str, Any]], bool]:
    return lambda st: (st.get("ticket") or {}).get("state") == state


async def test_killed_while_jira_holds_the_create_answer_files_one_ticket_with_its_evidence(
    kube: k.Kube,
    namespace: str,
    kubelet: Kubelet,
    jira_server: JiraServer,
    operator: Callable[..., OperatorProcess],
    cluster: Cluster,
) -> None:
    ns = namespace
    secret = await _crashing(kube, kubelet, ns, spec=_spec())
    # Jira creates the issue, then holds the answer: the operator dies before it arrives.
    jira_server.delay_next(30, method="POST", path=CREATE)
    first = operator(namespaces=[ns], jira_url=jira_server.url, jira_secret=secret)
    await eventually(
        lambda: _async(jira_server.issues()), timeout=120, what="the issue created in Jira"
    )
    first.kill()
    # What the dead process left: the intent, stored before the create was sent.
    rec = await _one(kube, ns, _ticket_state("Pending"))
    assert rec is not None
    assert rec["status"]["ticket"]["createSent"] is True
    assert rec["status"]["ticket"]["createMarker"]

    operator(namespaces=[ns], jira_url=jira_server.url, jira_secret=secret)
    rec = await eventually(
        lambda: _one(kube, ns, _ticket_state("Filed")), timeout=90, what="the ticket adopted"
    )
    [issue] = jira_server.issues()
    assert _creates(jira_server) == 1  # adopted, never created again
    ticket = rec["status"]["ticket"]
    assert ticket["key"] == issue["key"]
    assert {"pod.yaml", "deployment.yaml"} <= set(issue["attachments"])
    assert sorted(ticket["attached"]) == sorted(issue["attachments"])
    # A filed ticket keeps only what is true of it.
    assert "retryAt" not in ticket
    assert "createSent" not in ticket
    assert workload_writes(cluster, ns) == [("patch", "deployments", "pay")]  # one restart


async def test_jira_down_across_a_restart_files_the_pending_ticket_once(
    kube: k.Kube,
    namespace: str,
    kubelet: Kubelet,
    jira_server: JiraServer,
    operator: Callable[..., OperatorProcess],
    cluster: Cluster,
) -> None:
    ns = namespace
    secret = await _crashing(kube, kubelet, ns, spec=_spec())
    jira_server.down()
    first = operator(namespaces=[ns], jira_url=jira_server.url, jira_secret=secret)
    rec = await eventually(
        lambda: _one(kube, ns, _ticket_state("Pending")), timeout=120, what="a pending ticket"
    )
    assert rec["status"]["ticket"]["lastError"]
    first.kill()
    jira_server.up()
    operator(namespaces=[ns], jira_url=jira_server.url, jira_secret=secret)
    rec = await eventually(
        lambda: _one(kube, ns, _ticket_state("Filed")), timeout=120, what="the ticket filed"
    )
    [issue] = jira_server.issues()
    assert rec["status"]["ticket"]["key"] == issue["key"]
    assert _creates(jira_server) == 1
    assert workload_writes(cluster, ns) == [("patch", "deployments", "pay")]  # one restart


async def test_killed_during_the_recovery_comment_comments_once_and_transitions(
    kube: k.Kube,
    namespace: str,
    kubelet: Kubelet,
    jira_server: JiraServer,
    operator: Callable[..., OperatorProcess],
    cluster: Cluster,
) -> None:
    ns = namespace
    secret = await _crashing(kube, kubelet, ns, spec=_spec())
    first = operator(namespaces=[ns], jira_url=jira_server.url, jira_secret=secret)
    await eventually(
        lambda: _one(kube, ns, _ticket_state("Filed")), timeout=120, what="the ticket filed"
    )
    jira_server.delay_next(30, method="POST", path=COMMENT)
    await set_image(kube, ns, "pay", f"registry.local/{ns}/pay:v2")  # a person fixes it

    async def commented() -> list[Any] | None:
        issues = jira_server.issues()
        return issues[0]["comments"] or None

    await eventually(commented, timeout=120, what="the recovery comment received by Jira")
    first.kill()
    operator(namespaces=[ns], jira_url=jira_server.url, jira_secret=secret)

    async def done() -> dict[str, Any] | None:
        issue = jira_server.issues()[0]
        return issue if issue["status"] == "Done" else None

    issue = await eventually(done, timeout=90, what="the ticket moved to Done")
    assert len(issue["comments"]) == 1  # the comment Jira had taken is not posted again
    rec = await eventually(
        lambda: _one(kube, ns, lambda st: (st.get("resolution") or {}).get("state") == "Done"),
        timeout=30,
        what="the resolution recorded",
    )
    assert rec["status"]["phase"] == "Closed"
    assert workload_writes(cluster, ns) == [("patch", "deployments", "pay")]  # one restart


async def test_a_workload_deleted_mid_incident_closes_it_and_files_nothing(
    kube: k.Kube,
    namespace: str,
    kubelet: Kubelet,
    jira_server: JiraServer,
    operator: Callable[..., OperatorProcess],
    cluster: Cluster,
) -> None:
    ns = namespace
    secret = await _crashing(kube, kubelet, ns, spec=_spec(verify="60s", timeout="120s"))
    op = operator(namespaces=[ns], jira_url=jira_server.url, jira_secret=secret)
    await _in_phase(kube, ns, "Verifying")
    await kube.delete(k.apps(ns, "deployments", "pay"))
    rec = await eventually(
        lambda: _one(kube, ns, lambda st: st.get("phase") == "Closed"), timeout=60, what="Closed"
    )
    assert rec["status"]["closedReason"] == "WorkloadDeleted"
    assert jira_server.issues() == []
    assert "Traceback" not in op.tail(400)  # nothing failed on the way
    assert workload_writes(cluster, ns) == [("patch", "deployments", "pay")]  # one restart


async def test_a_policy_deleted_mid_incident_closes_it_and_frees_its_slot(
    kube: k.Kube,
    namespace: str,
    kubelet: Kubelet,
    jira_server: JiraServer,
    operator: Callable[..., OperatorProcess],
    cluster: Cluster,
) -> None:
    ns = namespace
    secret = await _crashing(kube, kubelet, ns, spec=_spec(verify="60s", timeout="120s"))
    operator(namespaces=[ns], jira_url=jira_server.url, jira_secret=secret)
    await _in_phase(kube, ns, "Verifying")
    await kube.delete(k.group(API_VERSION, ns, "healingpolicies", "pay"))
    rec = await eventually(
        lambda: _one(kube, ns, lambda st: st.get("phase") == "Closed"), timeout=60, what="Closed"
    )
    assert rec["status"]["closedReason"] == "PolicyDeleted"
    assert jira_server.issues() == []
    assert workload_writes(cluster, ns) == [("patch", "deployments", "pay")]  # one restart


async def test_a_remediation_deleted_by_hand_is_forgotten_and_the_policy_keeps_serving(
    kube: k.Kube,
    namespace: str,
    kubelet: Kubelet,
    operator: Callable[..., OperatorProcess],
    cluster: Cluster,
) -> None:
    ns = namespace
    spec = {**_spec(verify="60s", timeout="120s"), "guardrails": {"maxConcurrent": 5}}
    del spec["remediation"]["escalate"]
    image = f"registry.local/{ns}/pay:v1"
    kubelet.behave(image, Behaviour(kind="crashloop", restart_every=1.0, previous_logs=CRASH))
    await kube.create(
        k.apps(ns, "deployments"), deployment("pay", image, replicas=1, labels={"tier": "shop"})
    )
    await kube.create(
        k.group(API_VERSION, ns, "healingpolicies"),
        policy("shop", selector={"tier": "shop"}, spec=spec),
    )
    op = operator(namespaces=[ns])
    first = await _in_phase(kube, ns, "Verifying")
    await kube.delete(k.group(API_VERSION, ns, "remediations", first["metadata"]["name"]))
    # Another workload of the same policy crash-loops: it is still served.
    cart = f"registry.local/{ns}/cart:v1"
    kubelet.behave(cart, Behaviour(kind="crashloop", restart_every=1.0, previous_logs=CRASH))
    await kube.create(
        k.apps(ns, "deployments"), deployment("cart", cart, replicas=1, labels={"tier": "shop"})
    )

    async def cart_remediated() -> dict[str, Any] | None:
        for rec in await remediations(kube, ns):
            steps = rec.get("status", {}).get("steps") or []
            if rec["spec"]["workload"]["name"] == "cart" and steps and steps[0].get("result"):
                return rec
        return None

    rec = await eventually(cart_remediated, timeout=120, what="cart remediated")
    assert rec["status"]["steps"][0]["result"] == "Succeeded"

    async def pay_reopened() -> dict[str, Any] | None:
        for r in await remediations(kube, ns):
            if r["spec"]["workload"]["name"] == "pay" and r.get("status", {}).get("phase"):
                return r
        return None

    # pay still crash-loops: its deleted record is forgotten and a new incident opens.
    again = await eventually(pay_reopened, timeout=60, what="a new record for pay")
    assert again["metadata"]["uid"] != first["metadata"]["uid"]
    assert "NotFound" not in op.tail(400)
    writes = workload_writes(cluster, ns)
    assert writes.count(("patch", "deployments", "cart")) == 1  # cart restarted once
    assert writes[0] == ("patch", "deployments", "pay")  # the first incident's one restart


def _operator_writes(cluster: Cluster, ns: str) -> list[tuple[str, str, str]]:
    """The operator's writes to its records, their Events and the workloads, in order
    (not the HealingPolicy status, which its timer writes on its own schedule)."""
    return workload_writes(
        cluster,
        ns,
        resources={*WORKLOAD_WRITES, "remediations", "remediations/status", "events"},
    )


async def _async(value: Any) -> Any:
    return value or None


async def test_two_replicas_one_acts_and_the_standby_finishes_after_the_leader_is_killed(
    kube: k.Kube,
    namespace: str,
    kubelet: Kubelet,
    cluster: Cluster,
    jira_server: JiraServer,
    operator: Callable[..., OperatorProcess],
) -> None:
    ns = namespace
    # Restart does not heal a bad image: after it, the incident escalates to one ticket.
    secret = await _crashing(kube, kubelet, ns, spec=_spec(verify="10s", timeout="20s"))
    kw = {"namespaces": [ns], "jira_url": jira_server.url, "jira_secret": secret}
    a, b = operator(**kw), operator(**kw)

    def leads(op: OperatorProcess) -> bool:
        try:
            return op.metric("selfheal_leader") == 1
        except OSError:
            return False  # killed

    async def leader() -> OperatorProcess | None:
        leading = [op for op in (a, b) if leads(op)]
        return leading[0] if len(leading) == 1 else None

    first = await eventually(leader, timeout=60, what="exactly one leader")
    standby = b if first is a else a
    await _in_phase(kube, ns, "Verifying")
    assert standby.metric("selfheal_remediations_total") == 0  # the standby never acted
    killed_at = time.monotonic()
    first.kill()
    await eventually(leader, timeout=30, what="the standby leading")
    failover = time.monotonic() - killed_at
    print(f"failover after SIGKILL of the leader: {failover:.1f}s")
    assert failover <= 20
    rec = await eventually(
        lambda: _one(kube, ns, _ticket_state("Filed")), timeout=120, what="the ticket filed"
    )
    assert [s["action"] for s in rec["status"]["steps"]] == ["restart"]  # acted once
    assert standby.metric("selfheal_remediations_total") == 0  # nothing acted twice
    assert workload_writes(cluster, ns) == [("patch", "deployments", "pay")]
    assert len(jira_server.issues()) == 1
    assert _creates(jira_server) == 1
    assert len(await remediations(kube, ns)) == 1


async def test_the_api_server_restarted_mid_incident_resumes_it_without_acting_twice(
    kube: k.Kube,
    namespace: str,
    kubelet: Kubelet,
    cluster: Cluster,
    jira_server: JiraServer,
    operator: Callable[..., OperatorProcess],
) -> None:
    ns = namespace
    secret = await _crashing(kube, kubelet, ns, spec=_spec(verify="10s", timeout="20s"))
    op = operator(namespaces=[ns], jira_url=jira_server.url, jira_secret=secret)
    await _in_phase(kube, ns, "Verifying")
    # From the main thread: the new process is tied to the thread that starts it.
    cluster.restart_apiserver(down_for=5.0)
    # Restart cannot heal a bad image: the incident goes on to one ticket.
    rec = await eventually(
        lambda: _one(kube, ns, _ticket_state("Filed")), timeout=150, what="the ticket filed"
    )
    assert [s["action"] for s in rec["status"]["steps"]] == ["restart"]
    assert op.metric("selfheal_remediations_total") == 1
    assert workload_writes(cluster, ns) == [("patch", "deployments", "pay")]
    assert len(jira_server.issues()) == 1
    assert len(await remediations(kube, ns)) == 1
    assert op.proc is not None
    assert op.proc.poll() is None  # the operator rode out the outage


async def test_on_jira_cloud_a_lost_create_is_adopted_despite_the_lagging_search(
    kube: k.Kube,
    namespace: str,
    kubelet: Kubelet,
    operator: Callable[..., OperatorProcess],
    cluster: Cluster,
) -> None:
    ns = namespace
    secret = await _crashing(kube, kubelet, ns, spec=_spec())
    # Jira Cloud: API v3 with ADF, and a search that shows a new issue only 20 s late.
    with JiraServer(
        users={JIRA_USER: JIRA_PASSWORD},
        projects=(ProjectSpec(key="OPS"),),
        deployment="Cloud",
        search_lag=20.0,
    ) as cloud:
        cloud.delay_next(30, method="POST", path=r"/rest/api/3/issue$")
        first = operator(namespaces=[ns], jira_url=cloud.url, jira_secret=secret)
        await eventually(lambda: _async(cloud.issues()), timeout=120, what="the issue created")
        first.kill()
        operator(namespaces=[ns], jira_url=cloud.url, jira_secret=secret)
        rec = await eventually(
            lambda: _one(kube, ns, _ticket_state("Filed")), timeout=120, what="adopted"
        )
        [issue] = cloud.issues()
        assert rec["status"]["ticket"]["key"] == issue["key"]
        creates = [
            r for r in cloud.requests_received() if r.method == "POST" and r.path.endswith("/issue")
        ]
        assert len(creates) == 1  # the search lagged; no second create was sent
        assert {"pod.yaml", "deployment.yaml"} <= set(issue["attachments"])
        assert workload_writes(cluster, ns) == [("patch", "deployments", "pay")]  # one restart


async def test_ticket_work_past_its_horizon_is_given_up_loudly(
    kube: k.Kube,
    namespace: str,
    kubelet: Kubelet,
    jira_server: JiraServer,
    operator: Callable[..., OperatorProcess],
    cluster: Cluster,
) -> None:
    ns = namespace
    secret = await _crashing(kube, kubelet, ns, spec=_spec())
    jira_server.down()
    op = operator(
        namespaces=[ns],
        jira_url=jira_server.url,
        jira_secret=secret,
        extra_env={"SELFHEAL_TICKET_HORIZON_SECONDS": "20"},
    )
    rec = await eventually(
        lambda: _one(kube, ns, _ticket_state("Failed")), timeout=150, what="the ticket given up"
    )
    ticket = rec["status"]["ticket"]
    assert ticket["gaveUp"] is True
    assert "gave up after" in ticket["lastError"]
    assert op.metric("selfheal_gave_up_total", {"what": "ticket"}) == 1

    async def warned() -> list[dict[str, Any]] | None:
        events = await kube.get(k.core(ns, "events"))
        hits = [
            e
            for e in events.get("items", [])
            if e.get("reason") == "TicketFailed"
            and e["involvedObject"]["name"] == rec["metadata"]["name"]
        ]
        return hits or None

    [event] = await eventually(warned, timeout=30, what="a TicketFailed Event")
    assert event["type"] == "Warning"
    jira_server.up()
    await asyncio.sleep(6)  # a few passes: nothing is retried past the horizon
    assert jira_server.issues() == []
    assert workload_writes(cluster, ns) == [("patch", "deployments", "pay")]  # one restart


async def test_killed_after_the_action_and_before_its_outcome_is_stored_never_acts_again(
    kube: k.Kube,
    namespace: str,
    cluster: Cluster,
    operator: Callable[..., OperatorProcess],
) -> None:
    ns = namespace
    await deploy(kube, ns, "shop", "registry.local/shop:v1")
    spec = {
        "triggers": [{"name": "crashloop", "crashLoop": {"restarts": 2, "within": "10m"}}],
        "remediation": {"steps": [{"rollback": {}}], "verify": {"for": "4s", "timeout": "8s"}},
    }
    await kube.create(
        k.group(API_VERSION, ns, "healingpolicies"),
        policy("shop", selector={"app": "shop"}, spec=spec),
    )
    first = operator(namespaces=[ns], extra_env={"SELFHEAL_FAILPOINT": "after-action"})
    await set_image(kube, ns, "shop", "registry.local/shop:v2-crash")

    async def rolled_back() -> list[tuple[str, str, str]] | None:
        return workload_writes(cluster, ns) or None

    writes = await eventually(rolled_back, timeout=120, what="the rollback's patch")
    first.kill()  # the patch went out; its outcome was never stored
    # The only write before the action was the create: it carries the state decided
    # before the action (Acting, the step in flight); no status was written yet.
    [rec] = await remediations(kube, ns)
    assert "status" not in rec
    initial = json.loads(rec["metadata"]["annotations"][INITIAL_STATUS])
    assert initial["phase"] == "Acting"
    [started] = initial["steps"]
    assert (started["action"], started["result"]) == ("rollback", None)
    assert _operator_writes(cluster, ns)[:2] == [
        ("create", "remediations", rec["metadata"]["name"]),
        ("patch", "deployments", "shop"),
    ]
    second = operator(namespaces=[ns])
    rec = await eventually(
        lambda: _one(kube, ns, lambda st: st.get("phase") in ("Resolved", "Closed")),
        timeout=120,
        what="the incident ended",
    )
    [step] = rec["status"]["steps"]
    assert step["result"] == "Failed"  # no outcome reported: never re-run
    assert "no outcome" in step["message"]
    assert second.metric("selfheal_remediations_total") == 0
    assert workload_writes(cluster, ns) == writes == [("patch", "deployments", "shop")]
    d = await kube.get(k.apps(ns, "deployments", "shop"))
    assert d["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "3"


async def test_jira_answering_503_for_ten_minutes_files_one_ticket_after_it_recovers(
    kube: k.Kube,
    namespace: str,
    kubelet: Kubelet,
    jira_server: JiraServer,
    operator: Callable[..., OperatorProcess],
    cluster: Cluster,
    tmp_path: Path,
) -> None:
    ns = namespace
    secret = await _crashing(kube, kubelet, ns, spec=_spec())
    # Fake time for the driver (tests only): ten minutes pass in well under one.
    clock = tmp_path / "clock-offset"
    clock.write_text("0")
    jira_server.fail_next(10**6, status=503)
    operator(
        namespaces=[ns],
        jira_url=jira_server.url,
        jira_secret=secret,
        extra_env={"SELFHEAL_TEST_CLOCK_FILE": str(clock)},
    )
    await eventually(
        lambda: _one(kube, ns, _ticket_state("Pending")), timeout=120, what="a pending ticket"
    )
    offset = 0.0
    while offset < 600:  # 10 s of fake time every 0.25 s: about a minute of real time
        offset += 10
        clock.write_text(str(offset))
        await asyncio.sleep(0.25)
    rec = await _one(kube, ns, _ticket_state("Pending"))
    assert rec is not None, "the ticket is still pending after ten minutes of 503"
    ticket = rec["status"]["ticket"]
    assert "503" in ticket["lastError"]
    assert not ticket.get("gaveUp")
    # Exponential backoff across the outage (5 s, 10 s, ... about 7 attempts in ten
    # minutes), not one attempt per pass (one every 2 s: about 30 here).
    assert 4 <= ticket["attempts"] <= 12
    assert jira_server.issues() == []

    jira_server.clear_faults()
    clock.write_text(str(offset + 700))  # past the longest backoff: the retry is due
    rec = await eventually(
        lambda: _one(kube, ns, _ticket_state("Filed")), timeout=90, what="the ticket filed"
    )
    [issue] = jira_server.issues()
    assert rec["status"]["ticket"]["key"] == issue["key"]
    assert _creates(jira_server) == 1
    assert {"pod.yaml", "deployment.yaml"} <= set(issue["attachments"])
    assert workload_writes(cluster, ns) == [("patch", "deployments", "pay")]  # one restart


async def test_a_slow_drip_answer_to_the_create_is_abandoned_and_the_issue_adopted_once(
    kube: k.Kube,
    namespace: str,
    kubelet: Kubelet,
    jira_server: JiraServer,
    operator: Callable[..., OperatorProcess],
    cluster: Cluster,
) -> None:
    ns = namespace
    secret = await _crashing(kube, kubelet, ns, spec=_spec())
    # Jira creates the issue, then answers one byte every 0.3 s: each read is quick,
    # so only the client's deadline for the call (4 x 2 s here) ends the wait.
    jira_server.drip_next(0.3, method="POST", path=CREATE)
    op = operator(
        namespaces=[ns],
        jira_url=jira_server.url,
        jira_secret=secret,
        extra_env={"SELFHEAL_JIRA_TIMEOUT": "2"},
    )
    rec = await eventually(
        lambda: _one(kube, ns, lambda st: bool((st.get("ticket") or {}).get("createSent"))),
        timeout=120,
        what="the create sent and its answer not yet read",
    )
    assert op.get("/healthz")[0] == 200  # the event loop is not held by the dripping call
    rec = await eventually(
        lambda: _one(kube, ns, _ticket_state("Filed")), timeout=150, what="the ticket adopted"
    )
    [issue] = jira_server.issues()
    assert _creates(jira_server) == 1  # adopted by its marker, never created again
    assert rec["status"]["ticket"]["key"] == issue["key"]
    assert {"pod.yaml", "deployment.yaml"} <= set(issue["attachments"])
    assert workload_writes(cluster, ns) == [("patch", "deployments", "pay")]  # one restart
