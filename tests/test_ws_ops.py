"""The WebSocket ops' table: each op registered once, with the attrs class its frames are
validated into before it runs."""

from __future__ import annotations

from typing import Any

import attrs
import pytest

from aiosvc.web import ws_ops
from aiosvc.web.bodies import PingOp


def test_every_op_has_an_attrs_body_and_a_handler_named_after_it() -> None:
    assert sorted(ws_ops.OPS) == [
        "approve",
        "cancel",
        "ping",
        "send_message",
        "subscribe",
        "unsubscribe",
    ]
    for name, op in ws_ops.OPS.items():
        assert (op.name, op.handler.__name__) == (name, name)
        assert attrs.has(op.body)


def test_an_op_registered_twice_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ws_ops, "OPS", dict(ws_ops.OPS))

    async def again(stream: ws_ops.OpStream, op: PingOp, client_id: object) -> Any:
        return {}

    with pytest.raises(ValueError, match="the op 'ping' is registered twice"):
        ws_ops.websocket_op("ping", PingOp)(again)
    ws_ops.websocket_op("pong", PingOp)(again)
    assert ws_ops.bodies()["pong"] is PingOp
