"""The relay between the watchers started before kopf and the handlers bound later:
pure, no cluster (the watcher is fed events as its stream would hand them)."""

from __future__ import annotations

from typing import Any

from selfheal.clients import kube as k
from selfheal.clients.podwatch import PodWatcher
from selfheal.handlers.boot import Relay


def _event(kind: str, uid: str, version: str, value: str) -> dict[str, Any]:
    return {
        "type": kind,
        "object": {"metadata": {"uid": uid, "resourceVersion": version, "name": value}},
    }


def _watcher(relay: Relay[str]) -> PodWatcher[str]:
    # Never connects: the test hands the watcher its events directly.
    kube = k.Kube.from_token(host="https://127.0.0.1:9", token="t", ca_file="")
    w: PodWatcher[str] = PodWatcher(
        kube, summarize=lambda obj: str(obj["metadata"]["name"]), on_change=relay
    )
    relay.sources.append(w)
    return w


def test_changes_before_bind_are_replayed_once_as_what_the_watcher_holds() -> None:
    relay: Relay[str] = Relay()
    w = _watcher(relay)
    w._event(_event("ADDED", "a", "1", "a-v1"))
    w._event(_event("MODIFIED", "a", "2", "a-v2"))
    w._event(_event("ADDED", "b", "3", "b-v1"))
    w._event(_event("DELETED", "b", "4", "b-v1"))
    seen: list[tuple[str | None, str | None]] = []
    relay.bind(lambda old, new: seen.append((old, new)))
    # Only the state at bind time: "a" as it is now, "b" never existed for the handlers.
    assert seen == [(None, "a-v2")]
    w._event(_event("MODIFIED", "a", "5", "a-v3"))
    w._event(_event("ADDED", "c", "6", "c-v1"))
    w._event(_event("DELETED", "a", "7", "a-v3"))
    assert seen == [(None, "a-v2"), ("a-v2", "a-v3"), (None, "c-v1"), ("a-v3", None)]


def test_nothing_is_passed_on_before_bind_and_every_source_is_replayed() -> None:
    relay: Relay[str] = Relay()
    first, second = _watcher(relay), _watcher(relay)
    first._event(_event("ADDED", "a", "1", "a"))
    second._event(_event("ADDED", "b", "1", "b"))
    seen: list[tuple[str | None, str | None]] = []
    relay.bind(lambda old, new: seen.append((old, new)))
    assert sorted(new or "" for _, new in seen) == ["a", "b"]
