"""The terminal client: ``aiosvc chat`` over the REST API and a session's WebSocket.

It uses aiohttp's client only (never ``aiohttp.web``) and nothing of the server's core, so it
runs against any aiosvc that speaks API version 1.
"""
