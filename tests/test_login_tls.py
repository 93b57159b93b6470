"""The login cookie over TLS: ``Secure`` is added, and the daemon's own origin is https."""

from __future__ import annotations

import ssl
import subprocess
from pathlib import Path

import attrs
from aiohttp.test_utils import TestServer

from aiosvc.app import create_app
from aiosvc.config import Config
from tests.conftest import ClientFactory

KEY = "k-secret-123"


def tls_context(folder: Path) -> ssl.SSLContext:
    """A server context with a fresh self-signed certificate for 127.0.0.1."""
    cert, key = folder / "cert.pem", folder / "key.pem"
    argv = ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"]
    argv += ["-subj", "/CN=127.0.0.1", "-keyout", str(key), "-out", str(cert)]
    subprocess.run(argv, check=True, capture_output=True)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    return context


async def test_over_tls_the_cookie_is_secure(
    aiohttp_client: ClientFactory, config: Config, tmp_path: Path
) -> None:
    keyed = attrs.evolve(config.server, api_keys=(KEY,))
    app = create_app(attrs.evolve(config, server=keyed))
    server = TestServer(app)
    await server.start_server(ssl=tls_context(tmp_path))  # (TestServer's own kwargs drop ssl)
    client = await aiohttp_client(server)
    assert str(client.make_url("/")).startswith("https://")
    response = await client.post("/api/v1/login", json={"key": KEY}, ssl=False)
    assert response.status == 204
    name_value, *attributes = response.headers["Set-Cookie"].split("; ")
    assert name_value.startswith("aiosvc_session=")
    assert sorted(attributes) == ["HttpOnly", "Path=/", "SameSite=Strict", "Secure"]
    token = name_value.split("=", 1)[1]
    headers = {"Cookie": f"aiosvc_session={token}"}
    own = f"https://127.0.0.1:{client.port}"
    plain = f"http://127.0.0.1:{client.port}"  # another scheme is another origin
    response = await client.post(
        "/api/v1/sessions", json={}, headers=headers | {"Origin": plain}, ssl=False
    )
    assert response.status == 403
    assert (await response.json())["error"]["code"] == "forbidden_origin"
    response = await client.post(
        "/api/v1/sessions", json={}, headers=headers | {"Origin": own}, ssl=False
    )
    assert response.status == 201
    response = await client.post("/api/v1/logout", headers=headers | {"Origin": own}, ssl=False)
    assert response.status == 204
    assert "Secure" in response.headers["Set-Cookie"].split("; ")
    assert "Max-Age=0" in response.headers["Set-Cookie"].split("; ")
