"""The Jira description and summary rendered from a bundle, as the on-call sees them."""

from __future__ import annotations

import re

from selfheal.detect.signal import WorkloadRef
from selfheal.evidence import stacks
from selfheal.evidence.collect import (
    Bundle,
    ContainerResources,
    EventRecord,
    Revision,
    Termination,
)
from selfheal.evidence.redact import Redactor
from selfheal.evidence.render import (
    _signal_facts,
    esc,
    neutralise,
    render_description,
    render_summary,
)
from selfheal.policy.model import HealingPolicy, Mode

NOW = 1_764_316_800.0  # 2025-11-28T08:00:00Z
POLICY = HealingPolicy(namespace="shop", name="checkout", generation=3, mode=Mode.ENFORCE)
WORKLOAD = WorkloadRef(namespace="shop", name="checkout")

CRASH_LOG = """\
starting server
connecting to database at db:5432
Traceback (most recent call last):
  File "/app/main.py", line 42, in <module>
    main()
  File "/app/db.py", line 12, in connect
    raise ConnectionError("connection refused: db:5432")
ConnectionError: connection refused: db:5432
"""


def bundle(logs: str = CRASH_LOG, **kw: object) -> Bundle:
    b = Bundle(
        namespace="shop",
        deployment="checkout",
        pod="checkout-7d9f8-abcde",
        container="app",
        collected_at=NOW,
        revision="4",
        images=("shop/checkout:1.4.2",),
        termination=Termination(
            container="app",
            exit_code=137,
            reason="OOMKilled",
            message="",
            started_at="2025-11-28T07:59:40Z",
            finished_at="2025-11-28T07:59:58Z",
            restart_count=5,
        ),
        logs=logs,
        logs_source="previous",
        stack=stacks.extract_stack(logs),
        snapshots={"pod": "kind: Pod\n", "deployment": "kind: Deployment\n"},
        rollout_history=[
            Revision(
                revision=3,
                replicaset="checkout-5c6b7",
                images=("shop/checkout:1.4.1",),
                change_cause="",
                created="2025-11-27T10:00:00Z",
                replicas=0,
            ),
            Revision(
                revision=4,
                replicaset="checkout-7d9f8",
                images=("shop/checkout:1.4.2",),
                change_cause="kubectl set image deployment/checkout app=shop/checkout:1.4.2",
                created="2025-11-28T07:50:00Z",
                replicas=3,
            ),
        ],
        events=[
            EventRecord(
                time="2025-11-28T07:59:59Z",
                type="Warning",
                reason="BackOff",
                object="Pod/checkout-7d9f8-abcde",
                count=7,
                message="Back-off restarting failed container app in pod checkout-7d9f8-abcde",
            )
        ],
        resources=[
            ContainerResources(
                container="app",
                requests={"cpu": "250m", "memory": "256Mi"},
                limits={"memory": "512Mi"},
                usage={"cpu": "412m", "memory": "511Mi"},
            )
        ],
        usage_source="prometheus",
        steps=[{"action": "rollback", "result": "NotHealed", "startedAt": "2025-11-28T07:52:00Z"}],
        redactions={"env-value": 2},
    )
    for k, v in kw.items():
        setattr(b, k, v)
    return b


def describe(b: Bundle, **kw: object) -> str:
    args: dict[str, object] = {
        "policy": POLICY,
        "workload": WORKLOAD,
        "trigger": "crashloop",
        "cause": "CrashLoopBackOff",
    }
    args.update(kw)
    return render_description(b, **args)  # type: ignore[arg-type]


def blocks(markup: str) -> list[tuple[str, str]]:
    """(opening tag, content) of every code/noformat block, parsed as Jira does."""
    out = []
    pos = 0
    opener = re.compile(r"\{(noformat|code)(?::[^}]*)?\}")
    while (m := opener.search(markup, pos)) is not None:
        end = markup.find("{" + m.group(1) + "}", m.end())
        assert end != -1, f"unclosed {m.group(0)}"
        out.append((m.group(0), markup[m.end() : end]))
        pos = end + len(m.group(1)) + 2
    return out


def test_stack_trace_sits_in_a_code_block_with_its_language() -> None:
    text = describe(bundle())
    code = [c for tag, c in blocks(text) if tag == "{code:python}"]
    assert len(code) == 1
    assert 'raise ConnectionError("connection refused: db:5432")' in code[0]
    assert "ConnectionError: connection refused: db:5432" in code[0]
    # The log tail is there too, literal, in a noformat block.
    logs = [c for tag, c in blocks(text) if tag == "{noformat}"]
    assert any("connecting to database at db:5432" in c for c in logs)


def test_headings_and_facts_table_are_well_formed() -> None:
    text = describe(bundle())
    assert text.startswith("h2. Deployment shop/checkout was not healed\n")
    for heading in ("Facts", "Stack trace", "Resources", "Steps tried", "Rollout history"):
        assert f"\nh3. {heading}" in text
    facts = dict(
        re.findall(r"^\|\|([^|]+)\|(.*)\|$", text.split("h3. Facts")[1].split("h3.")[0], re.M)
    )
    assert facts["Namespace"] == "shop"
    assert facts["Exit code"] == "137 (OOMKilled)"
    assert facts["Revision"] == "4"
    assert facts["Trigger"] == "crashloop"
    assert facts["Restarts"] == "5"


def test_every_table_row_has_as_many_cells_as_its_header() -> None:
    hostile = bundle()
    hostile.events = [
        EventRecord(
            time="t",
            type="Warning",
            reason="Failed|Pipe",
            object="Pod/x",
            count=1,
            message="a | b || c\nnew line [link|http://x] {color:red}",
        )
    ]
    text = describe(hostile)
    lines = text.split("\n")
    for i, line in enumerate(lines):
        if line.startswith("||") and line.endswith("||") and line.count("||") > 2:
            header_cells = line.count("||") - 1
            j = i + 1
            while j < len(lines) and lines[j].startswith("|") and not lines[j].startswith("||"):
                unescaped = re.sub(r"\\.", "", lines[j])
                assert unescaped.count("|") - 1 == header_cells, lines[j]
                j += 1
    assert "a \\| b \\|\\| c new line \\[link\\|http://x\\] \\{color:red\\}" in text


def test_a_hostile_log_cannot_escape_its_block() -> None:
    evil = (
        CRASH_LOG + "{noformat}\nh1. PWNED [click|http://evil]\n{code}\n{NoFormat}\n"
        "{ noformat }{code:java}x{code}\n"
    )
    text = describe(bundle(logs=evil))
    # Outside the blocks, nothing from the log shows.
    outside = text
    for tag, content in blocks(text):
        outside = outside.replace(tag + content, "", 1)
    assert "PWNED" not in outside
    assert "evil" not in outside
    # Inside, the text is still readable.
    assert any("h1. PWNED [click|http://evil]" in c for _, c in blocks(text))


def test_neutralise_breaks_only_macro_tags() -> None:
    assert (
        neutralise('{"a": 1} {noformat} {code:java}')
        == '{"a": 1} {\u200bnoformat} {\u200bcode:java}'
    )


def test_escape_keeps_names_readable() -> None:
    assert esc("checkout-7d9f8") == "checkout-7d9f8"
    assert esc("--api-key *bold* _it_") == "\\-\\-api-key \\*bold\\* \\_it\\_"


def test_resources_table_beside_usage_and_unavailable_usage_is_said() -> None:
    text = describe(bundle())
    assert "|app|250m|-|412m|256Mi|512Mi|511Mi|" in text
    b = bundle()
    b.resources = [
        ContainerResources(container="app", requests={}, limits={"memory": "512Mi"}, usage={})
    ]
    b.usage_source = "unavailable: Prometheus not configured"
    text = describe(b)
    assert "|app|-|-|n/a|-|512Mi|n/a|" in text
    assert "Usage: unavailable: Prometheus not configured." in text


def test_steps_and_commands_for_the_on_call() -> None:
    text = describe(bundle(), remediation="checkout-crashloop-6f2a")
    assert "|1|rollback|NotHealed|2025-11-28 07:52:00 UTC|-|" in text
    cmds = [c for tag, c in blocks(text) if tag == "{noformat}"][-1]
    assert "kubectl -n shop get remediation checkout-crashloop-6f2a -o yaml" in cmds
    assert "kubectl -n shop rollout history deployment/checkout" in cmds
    assert "kubectl -n shop logs checkout-7d9f8-abcde -c app --previous" in cmds
    assert "|4 (current)|checkout-7d9f8|" in text


def test_no_stack_and_unavailable_logs_are_stated() -> None:
    b = bundle(logs="")
    b.stack = None
    b.logs_source = "unavailable"
    b.unavailable = {"previous logs": "403 Forbidden: pods/log is forbidden"}
    text = describe(b)
    assert "No stack trace found in the unavailable logs." in text
    assert "Logs unavailable: 403 Forbidden: pods/log is forbidden" in text
    assert "* previous logs: 403 Forbidden: pods/log is forbidden" in text


def test_description_is_bounded_and_never_leaves_a_block_open() -> None:
    huge = CRASH_LOG + "".join(f"line {i} {'x' * 200}\n" for i in range(2000))
    b = bundle(logs=huge)
    b.events = [
        EventRecord(time=f"t{i}", type="Normal", reason="R", object="Pod/x", count=1,
                    message="m" * 400)
        for i in range(100)
    ]  # fmt: skip
    text = describe(b, max_chars=5000)
    assert len(text) <= 5000
    blocks(text)  # every block is closed
    full = describe(b)
    assert len(full) <= 30_000


def test_summary_line() -> None:
    s = render_summary(
        workload=WORKLOAD,
        trigger="crashloop",
        cause="CrashLoopBackOff",
        outcome="rollback did not heal",
        bundle=bundle(),
    )
    assert s == "[selfheal] shop/checkout: CrashLoopBackOff (OOMKilled) — rollback did not heal"
    long = render_summary(
        workload=WORKLOAD, trigger="t", cause="X" * 400, outcome="o\nwith newline"
    )
    assert len(long) <= 255
    assert "\n" not in long


def test_unix_times_in_steps_read_in_utc() -> None:
    text = describe(bundle(), steps=[{"action": "scale", "result": "Healed", "startedAt": NOW}])
    assert "|1|scale|Healed|2025-11-28 08:00:00 UTC|-|" in text


def test_bundle_attachments_are_bounded_and_logs_keep_their_end() -> None:
    huge = "".join(f"line {i:06d} {'x' * 100}\n" for i in range(20_000)) + CRASH_LOG
    b = bundle(logs=huge)
    b.snapshots = {"pod": "kind: Pod\n" + "a: b\n" * 50_000}
    b.max_total_bytes = 300_000
    files = b.attachments()
    assert sum(len(v) for v in files.values()) <= 300_000
    logs = files["previous-logs.txt"].decode()
    assert logs.startswith("[... ")
    assert "bytes truncated ...]" in logs.splitlines()[0]
    assert logs.endswith("ConnectionError: connection refused: db:5432\n")
    assert files["pod.yaml"].startswith(b"kind: Pod\n")
    assert set(files) >= {"evidence.json", "stack.txt", "events.txt", "rollout-history.txt"}


def test_bundle_summary_is_short_and_says_what_is_missing() -> None:
    b = bundle()
    b.unavailable = {"previous logs": "403 Forbidden: no", "events of Pod": "timeout"}
    s = b.summary()
    assert len(s) <= 600
    assert "exit 137 (OOMKilled) after 5 restarts" in s
    assert "python ConnectionError: connection refused: db:5432" in s
    assert "revision 4 (shop/checkout:1.4.2)" in s
    assert "unavailable: events of Pod, previous logs" in s


def test_steps_passed_at_render_time_are_redacted_too() -> None:
    b = bundle()
    b.redactor = Redactor().with_literals(["s3cr3t-db-pw"])
    steps = [
        {"action": "restart", "result": "Failed", "detail": "env had s3cr3t-db-pw; password=x9"}
    ]
    text = describe(b, steps=steps)
    assert "s3cr3t-db-pw" not in text
    assert "x9" not in text
    assert "|1|restart|Failed|-|env had \\[REDACTED\\]; password=\\[REDACTED\\]|" in text


def test_a_metric_incident_shows_what_the_trigger_saw() -> None:
    rows = dict(
        _signal_facts(
            {
                "query": "sum(rate(errors[1m]))",
                "value": 0.117,
                "threshold": 0.05,
                "for": 4.0,
                "samples": [[1.0, 0.01], [2.0, 0.117]],
            }
        )
    )
    assert rows["Query"] == "sum(rate(errors[1m]))"
    assert rows["Value"] == "0.117"
    assert rows["Threshold"] == "0.05"
    assert rows["Recent samples"] == "0.01, 0.117"
    assert _signal_facts({"pod": "p", "restartCount": 3}) == []


# --- readable for the on-call: times, no None, a headline ---------------------------------


def metric_bundle() -> Bundle:
    b = bundle()
    b.termination = None
    b.stack = None
    b.trigger_evidence = {
        "query": "sum(rate(errors[1m]))",
        "samples": [[NOW - 60, 0.02], [NOW - 30, 0.117]],
        "above": 0.05,
        "below": None,
        "for": 120.0,
        "value": 0.117,
        "since": NOW - 150.8246496,
    }
    return b


def test_a_metric_ticket_has_readable_times_and_no_none() -> None:
    text = describe(metric_bundle(), trigger="error-ratio", cause="ThresholdExceeded")
    rows = dict(re.findall(r"^\|\|([^|]+)\|(.*)\|$", text, re.M))
    assert rows["Since"] == "2025-11-28 07:57:29 UTC (2m 31s before collection)"
    assert rows["For"] == "2m"
    assert rows["Above"] == "0.05"
    assert "Below" not in rows
    assert rows["Recent samples"] == "0.02 at 07:59:00, 0.117 at 07:59:30"
    assert "None" not in text
    # No raw Unix time anywhere.
    assert re.search(r"\b1[0-9]{9}(?:\.[0-9]+)?\b", text) is None


def test_the_first_line_says_what_broke_how_where_and_what_was_tried() -> None:
    first = describe(bundle()).split("\n")[1]
    assert first == (
        "*CrashLoopBackOff: OOMKilled, exit 137 after 5 restarts · python ConnectionError: "
        "connection refused: db:5432 · revision 4 (shop/checkout:1.4.2) · "
        "tried rollback: NotHealed*"
    )
    metric = describe(metric_bundle(), trigger="error-ratio", cause="ThresholdExceeded")
    assert metric.split("\n")[1].startswith("*ThresholdExceeded: 0.117 (above 0.05) · revision 4")


def test_termination_times_read_as_a_span_with_the_run_time() -> None:
    text = describe(bundle())
    assert (
        "||Last termination|2025-11-28 07:59:40 UTC → 07:59:58 "
        "(ran 18s; ended 2s before collection)|"
    ) in text
    assert "||Collected|2025-11-28 08:00:00 UTC|" in text


def test_a_termination_message_shows_its_end() -> None:
    b = bundle()
    b.stack = None
    b.termination = Termination(
        container="app", exit_code=1, reason="Error",
        message="boot\n" + "noise " * 200 + "\nFATAL: the last words",
    )  # fmt: skip
    text = describe(b)
    row = next(line for line in text.split("\n") if line.startswith("||Termination message|"))
    assert row.endswith("FATAL: the last words|")
    assert "||Exit code means|application error" in text
