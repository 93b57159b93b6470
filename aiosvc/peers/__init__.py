"""Computers: this machine and (to come) its peers, other aiosvc daemons reached over their
HTTP API (``[peers.NAME]``)."""
