"""The bus's interest in topics (what peers' relays follow) and relayed events: told once
when a topic gains its first interested subscriber and once when it loses its last, never for
a subscriber that is not interested (a peer's relay stream); a relayed event keeps its type,
time and data, gets a local id, and is marked relayed."""

from __future__ import annotations

from pathlib import Path

from aiosvc.bus import ALL, Bus
from tests.test_commands import close_core, open_core


def test_interest_is_told_for_the_first_and_the_last_interested_subscriber() -> None:
    bus = Bus(buffer_size=10)
    told: list[tuple[str, bool]] = []
    bus.on_interest = lambda topic, held: told.append((topic, held))
    first = bus.subscribe(lambda e, t: None, ["sessions"])
    second = bus.subscribe(lambda e, t: None, ["sessions", "session:ses_1"])
    peer = bus.subscribe(lambda e, t: None, ["sessions", "session:ses_2"], interested=False)
    assert told == [("sessions", True), ("session:ses_1", True)]
    assert bus.interested("sessions") and not bus.interested("session:ses_2")
    first.close()
    assert told[2:] == []
    second.close()
    assert sorted(told[2:]) == [("session:ses_1", False), ("sessions", False)]
    peer.close()
    assert len(told) == 4 and not bus.interested("sessions")


def test_a_failing_interest_listener_does_not_fail_the_subscriber() -> None:
    bus = Bus(buffer_size=10)

    def broken(topic: str, held: bool) -> None:
        raise RuntimeError("boom")

    bus.on_interest = broken
    subscription = bus.subscribe(lambda e, t: None, ["sessions"])
    assert subscription.topics == {"sessions"}


def test_a_relayed_event_gets_a_local_id_and_keeps_the_rest() -> None:
    bus = Bus(buffer_size=10)
    seen = []
    bus.subscribe(lambda e, t: seen.append((e, t)), ["session:ses_1"])
    bus.publish_hook("local", ["hooks"], {})
    event = bus.publish_relayed(
        "message.delta", ["session:ses_1"], "2026-12-01T17:45:03.512Z", b'{"delta":"x"}'
    )
    assert (event.id, event.relayed, event.low_priority) == (2, True, True)
    assert (event.ts, event.data_json) == ("2026-12-01T17:45:03.512Z", b'{"delta":"x"}')
    assert seen == [(event, "session:ses_1")]
    replay = bus.since(1)
    assert replay is not None and [e.relayed for e in replay] == [True]


async def test_the_cache_following_every_event_is_no_clients_interest(db_path: Path) -> None:
    core = await open_core(db_path)
    try:
        assert not core.bus.interested(ALL)  # (else every peer's relay would stay open)
        client = core.bus.subscribe(lambda e, t: None, [ALL])
        assert core.bus.interested(ALL)
        client.close()
        assert not core.bus.interested(ALL)
    finally:
        await close_core(core)
