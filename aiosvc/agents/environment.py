"""The environment of a program the daemon spawns: a minimal base, never the daemon's own.

The daemon's environment holds its API keys, other agents' upstream keys and systemd's
sockets (``NOTIFY_SOCKET``, ``LISTEN_FDS``); a spawned program's output reaches every
subscriber, so it gets only what a program needs to run, plus what its config names.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

#: Variables passed through from the daemon's environment, besides the ``LC_*`` ones.
PASSED = frozenset({"PATH", "HOME", "LANG", "TERM"})


def child_environment(
    extra: Mapping[str, str], *, inherited: Mapping[str, str] | None = None
) -> dict[str, str]:
    """PATH, HOME, LANG, LC_* and TERM from ``inherited`` (the daemon's), then ``extra``."""
    source = os.environ if inherited is None else inherited
    env = {k: v for k, v in source.items() if k in PASSED or k.startswith("LC_")}
    env.setdefault("PATH", os.defpath)  # where a program finds its own helpers
    env.update(extra)
    return env
