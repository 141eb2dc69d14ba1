"""The linear-time replacement of kopf's ToggleSet (found by the scale benchmark) keeps
kopf's semantics: same on/off state after any sequence of changes, waiters wake on flips."""

from __future__ import annotations

import asyncio
import random

import pytest
from kopf._cogs.aiokits import aiotoggles

from selfheal.handlers.watch import CountingToggleSet

KopfToggleSet = CountingToggleSet.__mro__[1]


def test_the_operator_installs_it_for_kopf() -> None:
    assert aiotoggles.ToggleSet is CountingToggleSet
    assert KopfToggleSet.__module__ == "kopf._cogs.aiokits.aiotoggles"


@pytest.mark.parametrize("fn", [all, any])
@pytest.mark.parametrize("seed", range(20))
async def test_same_state_as_kopfs_own_set_after_random_changes(fn: object, seed: int) -> None:
    rnd = random.Random(seed)
    ours, theirs = CountingToggleSet(fn), KopfToggleSet(fn)
    pairs: list[tuple[object, object]] = []
    assert ours.is_on() == theirs.is_on()
    for _ in range(200):
        op = rnd.choice(["make", "make", "turn", "drop", "drop_many"])
        if op == "make" or not pairs:
            value = rnd.random() < 0.5
            pairs.append((await ours.make_toggle(value), await theirs.make_toggle(value)))
        elif op == "turn":
            a, b = rnd.choice(pairs)
            value = rnd.random() < 0.5
            await a.turn_to(value)  # type: ignore[attr-defined]
            await b.turn_to(value)  # type: ignore[attr-defined]
        elif op == "drop":
            a, b = pairs.pop(rnd.randrange(len(pairs)))
            await ours.drop_toggle(a)
            await theirs.drop_toggle(b)
        else:
            picked = rnd.sample(pairs, k=min(len(pairs), rnd.randint(1, 3)))
            for pair in picked:
                pairs.remove(pair)
            await ours.drop_toggles([a for a, _ in picked])
            await theirs.drop_toggles([b for _, b in picked])
        assert ours.is_on() == theirs.is_on(), op
        assert len(ours) == len(theirs)


async def test_waiters_wake_when_the_last_object_is_indexed() -> None:
    indexed = CountingToggleSet(all)
    toggles = [await indexed.make_toggle(name=f"pod-{i}") for i in range(1000)]
    waiters = [asyncio.create_task(indexed.wait_for(True)) for _ in range(1000)]
    await asyncio.sleep(0)
    for t in toggles[:-1]:
        await indexed.drop_toggle(t)
    await asyncio.sleep(0)
    assert not any(w.done() for w in waiters)
    await indexed.drop_toggle(toggles[-1])
    await asyncio.wait_for(asyncio.gather(*waiters), timeout=5)
    assert indexed.is_on()
    # Already in the wanted state: returns at once.
    await asyncio.wait_for(indexed.wait_for(True), timeout=1)


async def test_a_paused_set_waits_for_off_again() -> None:
    paused = CountingToggleSet(any)
    peer = await paused.make_toggle(name="peering")
    assert not paused.is_on()
    await peer.turn_to(True)
    assert paused.is_on()
    waiter = asyncio.create_task(paused.wait_for(False))
    await asyncio.sleep(0)
    assert not waiter.done()
    await peer.turn_to(False)
    await asyncio.wait_for(waiter, timeout=1)
