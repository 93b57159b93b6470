"""The OpenAPI document: valid OpenAPI 3.1, every route documented, schemas that follow the
attrs models field for field, limits from the configuration, and real answers that match it."""

from __future__ import annotations

from enum import StrEnum
from typing import Any, Literal
from urllib.parse import quote

import attrs
import jsonschema_rs
import pytest
import schemathesis
from aiohttp import web

# The OpenAPI 3.1 meta-schema as schemathesis bundles it (openapi-spec-validator is not installed).
from schemathesis.core.result import Ok
from schemathesis.specs.openapi.definitions import OPENAPI_31

from aiosvc import models
from aiosvc.app import create_app
from aiosvc.config import Config
from aiosvc.web import bodies, ws_ops
from aiosvc.web.front_door import NO_ROUTE
from aiosvc.web.openapi import document, document_json
from aiosvc.web.operation import Page, metadata, operation
from aiosvc.web.security import STREAM_ROUTES
from tests.conftest import ClientFactory
from tests.helpers import Client, create_session

JSON = {"Content-Type": "application/json"}
RESPONSE_MODELS = [models.Session, models.Message, models.Command, models.Approval]
BODY_MODELS = [
    bodies.SessionCreate,
    bodies.SessionPatch,
    bodies.MessageCreate,
    bodies.ApprovalDecision,
    bodies.HookCreate,
    bodies.LoginCreate,
]


@pytest.fixture
def doc(config: Config) -> dict[str, Any]:
    return document(create_app(config))


def routes(app: web.Application) -> list[tuple[str, str, Any]]:
    """(path, method, handler) of every route but aiohttp's automatic HEAD twins."""
    return [
        (r.resource.canonical, r.method.lower(), r.handler)
        for r in app.router.routes()
        if r.method != "HEAD" and r.resource is not None and r.resource.name != NO_ROUTE
    ]


def undocumented(app: web.Application) -> list[str]:
    """Routes missing from the document, or whose handler has no ``@operation``."""
    paths = document(app)["paths"]
    return [
        f"{method.upper()} {path}"
        for path, method, handler in routes(app)
        if method not in paths.get(path, {}) or metadata(handler) is None
    ]


def refs(node: Any) -> list[str]:
    """Every ``$ref`` in a JSON document."""
    if isinstance(node, dict):
        found = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return found + [r for value in node.values() for r in refs(value)]
    if isinstance(node, list):
        return [r for value in node for r in refs(value)]
    return []


def resolve(doc: dict[str, Any], ref: str) -> Any:
    node: Any = doc
    for part in ref.removeprefix("#/").split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


# The document as a document -----------------------------------------------------------------


def test_the_document_is_valid_openapi_3_1(doc: dict[str, Any]) -> None:
    errors = [str(e) for e in jsonschema_rs.Draft202012Validator(OPENAPI_31).iter_errors(doc)]
    assert errors == []
    assert doc["openapi"] == "3.1.0"
    for ref in refs(doc):
        resolve(doc, ref)  # every reference points at something
    for name, schema in doc["components"]["schemas"].items():
        assert jsonschema_rs.meta.is_valid(schema), name
    ids = [op["operationId"] for ops in doc["paths"].values() for op in ops.values()]
    assert len(ids) == len(set(ids))
    for path, ops in doc["paths"].items():
        for op in ops.values():
            declared = {p["name"] for p in op.get("parameters", []) if p["in"] == "path"}
            assert declared == set(path.replace("}", "{").split("{")[1::2]), path
            assert op["summary"], path
            for status, answer in op["responses"].items():
                assert answer["headers"]["X-Request-ID"] == {
                    "$ref": "#/components/headers/X-Request-ID"
                }
                if int(status) >= 400:
                    assert answer["content"]["application/json"]["schema"]["$ref"] == (
                        "#/components/schemas/Error"
                    )
    # schemathesis reads every operation without complaint
    loaded = schemathesis.openapi.from_dict(doc)
    assert all(isinstance(result, Ok) for result in loaded.get_all_operations())


def test_every_route_is_documented(client: Client) -> None:
    app = client.app
    assert undocumented(app) == []
    documented = {(p, m) for p, ops in document(app)["paths"].items() for m in ops}
    assert documented == {(p, m) for p, m, _ in routes(app)}  # nothing stale either


def test_a_route_without_metadata_is_caught(config: Config) -> None:
    async def shiny(request: web.Request) -> web.Response:
        """Something new."""
        return web.Response()

    app = create_app(config)
    app.router.add_get("/api/v1/shiny", shiny)
    assert undocumented(app) == ["GET /api/v1/shiny"]
    assert document(app)["paths"]["/api/v1/shiny"]["get"]["x-undocumented"] is True


def test_auth_and_streams(config: Config) -> None:
    open_doc = document(create_app(config))
    server = attrs.evolve(config.server, api_keys=("k",))
    keyed = document(create_app(attrs.evolve(config, server=server)))
    schemes = keyed["components"]["securitySchemes"]
    assert set(schemes) == {"apiKey", "bearer", "token", "ticket", "login"}
    assert schemes["login"] | {"description": ""} == {
        "type": "apiKey",
        "in": "cookie",
        "name": "aiosvc_session",
        "description": "",
    }
    signed_in: list[dict[str, list[str]]] = [{"apiKey": []}, {"bearer": []}, {"login": []}]
    assert keyed["security"] == signed_in
    assert open_doc["security"] == [*signed_in, {}]  # no keys: none needed
    paths = keyed["paths"]
    public = {
        (method.upper(), p)
        for p, ops in paths.items()
        for method, op in ops.items()
        if op.get("security") == []
    }
    assert public == {
        ("GET", "/health"),
        ("GET", "/api/v1/login"),
        ("POST", "/api/v1/login"),
        ("POST", "/api/v1/logout"),
        ("GET", "/"),
        ("GET", "/static/{name}"),
    }
    assert "security" not in paths["/api/v1/health"]["get"]  # the same handler, keyed
    streams = {p for p, ops in paths.items() if "token" in str(ops.get("get", {}).get("security"))}
    assert streams == set(STREAM_ROUTES)
    for path in STREAM_ROUTES:
        op = paths[path]["get"]
        if path.endswith("/events"):
            assert set(op["responses"]["200"]["content"]) == {"text/event-stream"}
        else:
            assert "content" not in op["responses"]["101"]
            assert "426" in op["responses"]
            frames = op["x-websocket-client-messages"]["oneOf"]
            assert {resolve(keyed, f["$ref"])["properties"]["op"]["const"] for f in frames} == (
                set(ws_ops.OPS)
            )
    assert keyed["paths"]["/api/v1/openapi.json"]["get"]["responses"]["200"]


# Schemas follow the models ------------------------------------------------------------------


@pytest.mark.parametrize("cls", [*RESPONSE_MODELS, models.ErrorInfo])
def test_response_models_carry_every_field(doc: dict[str, Any], cls: Any) -> None:
    schema = doc["components"]["schemas"][cls.__name__]
    names = [f.name for f in attrs.fields(cls)]
    assert list(schema["properties"]) == names
    assert schema["required"] == names  # answers always carry every field, null or not
    assert schema["additionalProperties"] is False


@pytest.mark.parametrize("cls", BODY_MODELS)
def test_bodies_require_the_fields_without_defaults(doc: dict[str, Any], cls: Any) -> None:
    schema = doc["components"]["schemas"][cls.__name__]
    fields = attrs.fields(cls)
    assert list(schema["properties"]) == [f.name for f in fields]
    assert schema["required"] == [f.name for f in fields if f.default is attrs.NOTHING]
    assert schema["additionalProperties"] is False  # unknown fields are a 400


@pytest.mark.parametrize("name", sorted(ws_ops.bodies()))
def test_websocket_frames_are_the_op_bodies(doc: dict[str, Any], name: str) -> None:
    cls: Any = ws_ops.bodies()[name]
    schema = doc["components"]["schemas"][cls.__name__]
    fields = attrs.fields(cls)
    assert list(schema["properties"]) == ["op", "id", *(f.name for f in fields)]
    assert schema["required"] == ["op", *(f.name for f in fields if f.default is attrs.NOTHING)]


class Colour(StrEnum):
    """A colour."""

    RED = "red"
    BLUE = "blue"


@attrs.frozen(kw_only=True)
class Inner:
    """Nested."""

    n: int


@attrs.frozen(kw_only=True)
class Everything:
    """Every kind of field."""

    s: str
    i: int
    f: float
    b: bool
    nothing: None
    maybe: str | None
    lit: Literal["a", "b"]
    colour: Colour
    many: list[Inner]
    tags: tuple[str, ...]
    table: dict[str, int]
    anything: Any
    inner: Inner | None = None
    seen_at: str = ""


def test_every_kind_of_field(config: Config) -> None:
    @operation(responses={200: Page(Everything)})
    async def handler(request: web.Request) -> web.Response:
        """Everything."""
        return web.Response()

    app = create_app(config)
    app.router.add_get("/api/v1/everything", handler)
    schemas = document(app)["components"]["schemas"]
    ref = {"$ref": "#/components/schemas/Inner"}
    assert schemas["Everything"]["properties"] == {
        "s": {"type": "string"},
        "i": {"type": "integer"},
        "f": {"type": "number"},
        "b": {"type": "boolean"},
        "nothing": {"type": "null"},
        "maybe": {"type": ["string", "null"]},
        "lit": {"type": "string", "enum": ["a", "b"]},
        "colour": {"type": "string", "enum": ["red", "blue"]},
        "many": {"type": "array", "items": ref},
        "tags": {"type": "array", "items": {"type": "string"}},
        "table": {"type": "object", "additionalProperties": {"type": "integer"}},
        "anything": {},
        "inner": {"anyOf": [ref, {"type": "null"}]},
        "seen_at": {"type": "string", "format": "date-time"},
    }
    assert schemas["Everything"]["description"] == "Every kind of field."
    assert schemas["Inner"]["required"] == ["n"]


def test_limits_come_from_the_configuration(config: Config) -> None:
    limits = attrs.evolve(
        config.limits, max_page_size=7, max_title_chars=9, max_content_chars=11, max_body_bytes=99
    )
    doc = document(create_app(attrs.evolve(config, limits=limits)))
    schemas, paths = doc["components"]["schemas"], doc["paths"]
    assert schemas["SessionCreate"]["properties"]["title"]["maxLength"] == 9
    assert schemas["SessionPatch"]["properties"]["title"]["maxLength"] == 9
    assert schemas["MessageCreate"]["properties"]["content"] == {
        "type": "string",
        "minLength": 1,
        "maxLength": 11,
    }
    limit = next(p for p in paths["/api/v1/sessions"]["get"]["parameters"] if p["name"] == "limit")
    assert limit["schema"]["maximum"] == 7
    page = paths["/api/v1/sessions"]["get"]["responses"]["200"]["content"]["application/json"]
    assert page["schema"]["properties"]["data"]["maxItems"] == 7
    assert "99 bytes" in paths["/api/v1/sessions"]["post"]["responses"]["413"]["description"]


# Real answers match it ----------------------------------------------------------------------


class Wire:
    """Checks answers against the document's schema for their path, method and status."""

    def __init__(self, doc: dict[str, Any]) -> None:
        self.doc = doc

    async def check(self, response: Any, path: str, method: str) -> Any:
        """Validate the answer's status, headers and body; return the body."""
        status = str(response.status)
        answer = self.doc["paths"][path][method]["responses"][status]
        for name, header in answer["headers"].items():
            header = resolve(self.doc, header["$ref"]) if "$ref" in header else header
            assert name in response.headers or not header.get("required"), name
        if "content" not in answer:
            assert await response.read() == b""
            return None
        assert response.content_type in answer["content"]
        where = quote(path.replace("~", "~0").replace("/", "~1"), safe="~")
        pointer = "/".join(["#/paths", where, method, "responses", status])
        pointer += "/content/application~1json/schema"
        body = await response.json()
        validator = jsonschema_rs.Draft202012Validator(
            {**self.doc, "$ref": pointer}, validate_formats=True
        )
        errors = [f"{e.instance_path}: {e.message}" for e in validator.iter_errors(body)]
        assert errors == [], body
        return body


async def test_answers_match_the_document(client: Client) -> None:
    wire = Wire(document(client.app))
    sessions, one = "/api/v1/sessions", "/api/v1/sessions/{id}"
    created = await wire.check(await client.post(sessions, json={"title": "t"}), sessions, "post")
    sid = created["data"]["id"]
    await create_session(client)
    listed = await wire.check(await client.get(sessions), sessions, "get")
    assert listed["total"] == 2
    await wire.check(await client.get(f"{sessions}/{sid}"), one, "get")
    messages = f"{sessions}/{sid}/messages"
    sent = await wire.check(
        await client.post(messages, json={"content": "hi"}), one + "/messages", "post"
    )
    reply = await wire.check(
        await client.post(messages + "?wait=true", json={"content": "hey"}),
        one + "/messages",
        "post",
    )
    assert reply["data"]["status"] == "complete"
    await wire.check(await client.get(messages), one + "/messages", "get")
    command = f"/api/v1/commands/{sent['data']['command_id']}"
    await wire.check(await client.get(command), "/api/v1/commands/{id}", "get")
    await wire.check(await client.post(f"{sessions}/{sid}/cancel"), one + "/cancel", "post")
    await wire.check(await client.post(f"{sessions}/{sid}/end"), one + "/end", "post")
    ended = await client.post(messages, json={"content": "late"})
    assert (await wire.check(ended, one + "/messages", "post"))["error"]["code"] == "session_ended"
    await wire.check(await client.delete(f"{sessions}/{sid}"), one, "delete")
    for path in ("/health", "/api/v1/health", "/api/v1/agents", "/api/v1/approvals"):
        await wire.check(await client.get(path), path, "get")
    await wire.check(await client.post("/api/v1/tickets"), "/api/v1/tickets", "post")
    hook = await client.post("/api/v1/hooks", json={"type": "ci.done", "data": {"ok": True}})
    await wire.check(hook, "/api/v1/hooks", "post")


async def test_errors_match_the_document(client: Client) -> None:
    wire = Wire(document(client.app))
    sessions, one = "/api/v1/sessions", "/api/v1/sessions/{id}"
    cases = [
        (await client.get(f"{sessions}/nope"), one, "get", "not_found"),
        (await client.get(f"{sessions}?limit=0"), sessions, "get", "invalid_parameter"),
        (await client.post(sessions, json={"title": 5}), sessions, "post", "validation_error"),
        (await client.post(sessions, data=b"{", headers=JSON), sessions, "post", "invalid_json"),
        (await client.post(sessions, data=b"x"), sessions, "post", "unsupported_media_type"),
        (await client.post(sessions, json={"agent": "x"}), sessions, "post", "unknown_agent"),
        (await client.get(sessions, headers={"Host": "evil"}), sessions, "get", "forbidden_host"),
    ]
    for response, path, method, code in cases:
        body = await wire.check(response, path, method)
        assert body["error"]["code"] == code
        assert body["error"]["status"] == response.status


async def test_the_document_is_served_cached_and_keyed(
    aiohttp_client: ClientFactory, config: Config
) -> None:
    app = create_app(attrs.evolve(config, server=attrs.evolve(config.server, api_keys=("k",))))
    client = await aiohttp_client(app)
    assert (await client.get("/api/v1/openapi.json")).status == 401
    response = await client.get("/api/v1/openapi.json", headers={"X-API-Key": "k"})
    assert response.status == 200
    assert response.content_type == "application/json"
    assert await response.json() == document(app)
    assert document_json(app) is document_json(app)  # built once
    served = await Wire(document(app)).check(
        await client.get("/api/v1/openapi.json", headers={"X-API-Key": "k"}),
        "/api/v1/openapi.json",
        "get",
    )
    assert served["openapi"] == "3.1.0"
