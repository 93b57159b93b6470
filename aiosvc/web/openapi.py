"""The OpenAPI 3.1 document, generated from the route table, handler metadata and attrs models.

A handler declares what the route table cannot know with ``@operation(...)``
(:mod:`aiosvc.web.operation`); JSON Schemas come from the attrs models by introspection, and
limits from the running configuration.
"""

from __future__ import annotations

import inspect
import re
import sys
import types
import weakref
from collections import Counter
from collections.abc import Mapping, Sequence
from enum import Enum
from http import HTTPStatus
from typing import Any, Literal, Union, cast, get_args, get_origin

import attrs
import orjson
from aiohttp import web

from aiosvc import __version__
from aiosvc.config import Config, LimitsConfig
from aiosvc.models import ID_PATTERN
from aiosvc.rules import (
    HOOK_TYPE,
    MAX_EXTERNAL_TIMEOUT_S,
    MAX_MODEL_CHARS,
    MAX_PROJECT_CHARS,
    MAX_SYSTEM_PROMPT_CHARS,
    MAX_TOOL_CHARS,
    MIN_PROJECT_CHARS,
)
from aiosvc.web.bodies import (
    ApprovalCreate,
    HookCreate,
    MessageCreate,
    SendMessageOp,
    SessionCreate,
    SessionPatch,
)
from aiosvc.web.front_door import NO_ROUTE, WAITING_ROUTES
from aiosvc.web.keys import ACCESS_GATE, SETTINGS
from aiosvc.web.operation import Limit, Operation, Page, Param, Raw, Text, metadata
from aiosvc.web.security import COOKIE, STATE_CHANGING, STREAM_ROUTES

JSON = "application/json"
SCALARS: dict[Any, str] = {str: "string", int: "integer", float: "number", bool: "boolean"}


#: Constraints the handlers check beyond the type, by (body class, field).
FIELD_KEYWORDS: dict[tuple[type, str], dict[str, Any]] = {
    (SessionCreate, "title"): {"maxLength": Limit("max_title_chars")},
    (SessionCreate, "project"): {"minLength": MIN_PROJECT_CHARS, "maxLength": MAX_PROJECT_CHARS},
    (SessionCreate, "model"): {"minLength": 1, "maxLength": MAX_MODEL_CHARS},
    (SessionCreate, "system_prompt"): {"maxLength": MAX_SYSTEM_PROMPT_CHARS},
    (SessionPatch, "title"): {"maxLength": Limit("max_title_chars")},
    (SessionPatch, "model"): {"minLength": 1, "maxLength": MAX_MODEL_CHARS},
    (SessionPatch, "system_prompt"): {"maxLength": MAX_SYSTEM_PROMPT_CHARS},
    (ApprovalCreate, "tool"): {"minLength": 1, "maxLength": MAX_TOOL_CHARS},
    (ApprovalCreate, "timeout_s"): {"exclusiveMinimum": 0, "maximum": MAX_EXTERNAL_TIMEOUT_S},
    (MessageCreate, "content"): {"minLength": 1, "maxLength": Limit("max_content_chars")},
    (SendMessageOp, "content"): {"minLength": 1, "maxLength": Limit("max_content_chars")},
    (HookCreate, "type"): {"pattern": f"^{HOOK_TYPE.pattern}$"},
}
HEADERS: dict[str, dict[str, Any]] = {
    "X-Request-ID": {
        "description": "The request's id: echoed from the request when valid, else generated.",
        "required": True,
        "schema": {"type": "string", "pattern": "^[A-Za-z0-9._:-]{1,128}$"},
    },
    "Location": {"description": "Where the new resource is.", "schema": {"type": "string"}},
    "Retry-After": {"description": "Seconds to wait.", "schema": {"type": "integer"}},
    "WWW-Authenticate": {
        "description": "How to authenticate.",
        "required": True,
        "schema": {"type": "string", "enum": ["Bearer"]},
    },
}
SECURITY_SCHEMES = {
    "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
    "bearer": {"type": "http", "scheme": "bearer"},
    "token": {"type": "apiKey", "in": "query", "name": "token", "description": "Streams only."},
    "ticket": {"type": "apiKey", "in": "query", "name": "ticket", "description": "Streams only."},
    "login": {
        "type": "apiKey",
        "in": "cookie",
        "name": COOKIE,
        "description": "Set by `POST /api/v1/login`; a write it alone authenticates needs an "
        "allowed `Origin`.",
    },
}
DESCRIPTION = """\
Success answers `{"data": ...}` (lists add `total`, `limit`, `offset`); every failure answers
the `Error` envelope, whose `status` is the HTTP status; every answer carries `X-Request-ID`.
A method a path does not support is `405 method_not_allowed` with `Allow`. When API keys are
configured every route but `GET /health` needs one (`X-API-Key` or `Authorization: Bearer`);
streams also take `?token=` or a single-use `?ticket=` from `POST /api/v1/tickets`. A browser
signs in with `POST /api/v1/login`: its cookie then authenticates every route like a key."""

_documents: weakref.WeakKeyDictionary[web.Application, tuple[Config, bytes]] = (
    weakref.WeakKeyDictionary()
)


def document_json(app: web.Application) -> bytes:
    """The app's document as JSON, built once per configuration (a reload may change limits
    and keys, which the document states)."""
    config = app[SETTINGS].config
    found = _documents.get(app)
    if found is None or found[0] is not config:
        found = _documents[app] = (config, orjson.dumps(document(app)))
    return found[1]


def document(app: web.Application) -> dict[str, Any]:
    """Build the OpenAPI 3.1 document of every route in the app's router."""
    config = app[SETTINGS].config
    public = frozenset(app[ACCESS_GATE].public)
    return _Builder(config.limits, keys=bool(config.server.api_keys), public=public).build(app)


class _Builder:
    """Builds one document; collects the component schemas on the way."""

    def __init__(
        self, limits: LimitsConfig, *, keys: bool, public: frozenset[tuple[str, str]]
    ) -> None:
        self.limits = limits
        self.keys = keys
        self.public = public
        self.schemas: dict[str, Any] = {"Error": _error_schema()}
        self.output: dict[str, bool] = {}  # a model's name: whether it is a response model
        self.security: list[dict[str, list[str]]] = [{"apiKey": []}, {"bearer": []}, {"login": []}]
        # {}: with no key configured, none is needed
        self.optional: list[dict[str, list[str]]] = [] if keys else [{}]

    def build(self, app: web.Application) -> dict[str, Any]:
        found = sorted(
            (
                (r.resource.canonical, r.method.lower(), inspect.unwrap(r.handler))
                for r in app.router.routes()
                if r.method != "HEAD" and r.resource and r.resource.name != NO_ROUTE
            ),
            key=lambda r: r[:2],
        )
        shared = Counter(handler for _, _, handler in found)
        paths: dict[str, dict[str, Any]] = {}
        tags: dict[str, str] = {}
        for path, method, handler in found:
            op = paths.setdefault(path, {})[method] = self.operation(path, method, handler)
            if shared[handler] > 1:  # one handler on several paths: keep operation ids unique
                op["operationId"] += "_" + "_".join(re.findall(r"[A-Za-z0-9]+", path))
            module = sys.modules.get(handler.__module__)
            tags.setdefault(op["tags"][0], _first_line(module.__doc__ if module else None))
        return {
            "openapi": "3.1.0",
            "info": {"title": "aiosvc", "version": __version__, "description": DESCRIPTION},
            "tags": [{"name": n, "description": d} for n, d in sorted(tags.items())],
            "security": [*self.security, *self.optional],
            "paths": paths,
            "components": {
                "schemas": dict(sorted(self.schemas.items())),
                "headers": HEADERS,
                "securitySchemes": SECURITY_SCHEMES,
            },
        }

    # Operations --------------------------------------------------------------------------------

    def operation(self, path: str, method: str, handler: Any) -> dict[str, Any]:
        """The Operation Object of one route."""
        meta = metadata(handler) or Operation(responses={})
        op: dict[str, Any] = {
            "operationId": handler.__name__,
            "tags": [handler.__module__.rsplit(".", 1)[-1]],
            "summary": _first_line(inspect.getdoc(handler)),
        }
        if meta.stream is not None:
            kind = "an event stream (SSE)" if meta.stream == "sse" else "a WebSocket"
            op["description"] = f"Opens {kind}; also authenticated by `?token=` or `?ticket=`."
        ids = {"type": "string", "pattern": f"^{ID_PATTERN.pattern}$"}
        # A path's parameters are ids unless the operation describes them (where="path")
        described = {p.name: p for p in meta.params if p.where == "path"}
        parameters = [
            self.path_param(described[name]) if name in described else _path(name, ids)
            for name in re.findall(r"{(\w+)}", path)
        ]
        for param in meta.params:
            if param.where == "path":
                continue
            schema = self.keywords(self.schema(param.type, output=False), param.keywords)
            item = {"name": param.name, "in": param.where, "description": param.description}
            parameters.append({**item, "required": False, "schema": schema})
        if parameters:
            op["parameters"] = parameters
        if meta.body is not None:
            schema = self.schema(meta.body, output=False)
            op["requestBody"] = {"required": True, "content": {JSON: {"schema": schema}}}
        responses = {str(s): self.success(s, meta, shape) for s, shape in meta.responses.items()}
        for status, codes in sorted(self.errors(path, method, meta).items()):
            responses[str(status)] = self.error(status, codes)
        op["responses"] = responses
        if (method.upper(), path) in self.public:
            op["security"] = []
        elif path in STREAM_ROUTES:
            op["security"] = [*self.security, {"token": []}, {"ticket": []}, *self.optional]
        if meta.messages:
            refs = [self.message(name, cls) for name, cls in sorted(meta.messages.items())]
            op["x-websocket-client-messages"] = {"oneOf": refs}
        if metadata(handler) is None:
            op["x-undocumented"] = True
        return op

    def path_param(self, param: Param) -> dict[str, Any]:
        """A path parameter the operation describes (not an id)."""
        schema = self.keywords(self.schema(param.type, output=False), param.keywords)
        return {**_path(param.name, schema), "description": param.description}

    def success(self, status: int, meta: Operation, shape: Any) -> dict[str, Any]:
        """A success answer: its body and headers."""
        headers: dict[str, Any] = {"X-Request-ID": _header("X-Request-ID")}
        if status in meta.located:
            headers["Location"] = _header("Location")
        answer: dict[str, Any] = {"description": HTTPStatus(status).phrase, "headers": headers}
        if meta.stream == "sse" and status == 200:
            answer["content"] = {"text/event-stream": {"schema": {"type": "string"}}}
        elif isinstance(shape, Text):
            types = (shape.media_type, *shape.also)
            answer["content"] = {t: {"schema": {"type": "string"}} for t in types}
        elif shape is not None:
            answer["content"] = {JSON: {"schema": self.answer(shape)}}
        return answer

    def errors(self, path: str, method: str, meta: Operation) -> dict[int, list[str]]:
        """Every error status the operation can answer, with its codes."""
        found = {401: ["unauthorized"], 403: ["forbidden_host"], 500: ["internal_error"]}
        # (answered by the connection itself: a head over the size limit, no place left)
        found |= {431: ["header_too_large"], 503: ["database_unavailable", "too_many_connections"]}
        writes = method.upper() in STATE_CHANGING
        if writes or meta.stream == "websocket":
            found[403].append("forbidden_origin")
        if writes:
            found |= {413: ["payload_too_large"], 415: ["unsupported_media_type"]}
            found |= {408: ["request_timeout"], 429: ["rate_limited"]}
            found |= {507: ["insufficient_storage"]}
            found[503].append("shutting_down")
        if meta.body is not None:
            found[400] = ["invalid_json", "missing_body", "validation_error"]
        if any(p.where != "path" for p in meta.params):
            found.setdefault(400, []).append("invalid_parameter")
        if "{" in path:
            found[404] = ["not_found"]
        if meta.stream == "websocket":
            found[426] = ["upgrade_required"]
        if path in STREAM_ROUTES or (method.upper(), path) in WAITING_ROUTES:
            # long-lived: no place left for its credential (429), or for any (503)
            found.setdefault(429, []).append("too_many_streams")
            found[503].append("too_many_streams")
        for status, codes in meta.errors.items():
            found.setdefault(status, []).extend(c.strip() for c in codes.split(","))
        return {status: sorted(set(codes)) for status, codes in found.items()}

    def error(self, status: int, codes: Sequence[str]) -> dict[str, Any]:
        """An error answer: the envelope, with this status and these codes."""
        headers: dict[str, Any] = {"X-Request-ID": _header("X-Request-ID")}
        if status == 401:
            headers["WWW-Authenticate"] = _header("WWW-Authenticate")
        elif status in (429, 503):
            headers["Retry-After"] = {**HEADERS["Retry-After"], "required": status == 429}
        text = ", ".join(f"`{c}`" for c in codes)
        if status == 413:
            text += f" (over {self.limits.max_body_bytes} bytes)"
        error = {"properties": {"status": {"const": status}, "code": {"enum": list(codes)}}}
        schema = {"$ref": "#/components/schemas/Error", "properties": {"error": error}}
        return {
            "description": f"{HTTPStatus(status).phrase}: {text}",
            "headers": headers,
            "content": {JSON: {"schema": schema}},
        }

    # Schemas -----------------------------------------------------------------------------------

    def answer(self, shape: Any) -> dict[str, Any]:
        """The schema of a success body: ``{"data": shape}``, a page, or raw."""
        if isinstance(shape, Raw):
            return self.schema(shape.shape, output=True)
        if not isinstance(shape, Page):
            return _object(data=self.schema(shape, output=True))
        most = self.limits.max_page_size
        fields: dict[str, Any] = {
            "data": {
                "type": "array",
                "items": self.schema(shape.item, output=True),
                "maxItems": most,
            },
            "total": {"type": "integer", "minimum": 0},
            "limit": {"type": "integer", "minimum": 1, "maximum": most},
            "offset": {"type": "integer", "minimum": 0},
        }
        if shape.cursors:
            fields["offset"] = {"type": ["integer", "null"], "minimum": 0}
            fields["next"] = fields["prev"] = {"type": ["string", "null"]}
        return _object(**fields)

    def schema(self, tp: Any, *, output: bool) -> dict[str, Any]:
        """The JSON Schema of a Python type; attrs classes become components."""
        origin, args = get_origin(tp), get_args(tp)
        if attrs.has(tp):
            return {"$ref": "#/components/schemas/" + self.model(tp, output=output)}
        if isinstance(tp, dict):
            return _object(**{k: self.schema(v, output=output) for k, v in tp.items()})
        if tp is Any:
            return {}
        if tp is None or tp is type(None):
            return {"type": "null"}
        if origin in (Union, types.UnionType):
            return _union([self.schema(a, output=output) for a in args])
        if origin is Literal:
            kinds = {SCALARS.get(type(a), "null") for a in args}
            return {"enum": list(args), **({"type": kinds.pop()} if len(kinds) == 1 else {})}
        if isinstance(tp, type) and issubclass(tp, Enum):
            return {"type": "string", "enum": [member.value for member in tp]}
        if tp in SCALARS:
            return {"type": SCALARS[tp]}
        if args and (origin in (list, Sequence) or (origin is tuple and args[1:] == (...,))):
            return {"type": "array", "items": self.schema(args[0], output=output)}
        if origin in (dict, Mapping) and args:
            values = self.schema(args[1], output=output)
            return {"type": "object", **({"additionalProperties": values} if values else {})}
        raise TypeError(f"no JSON Schema for {tp!r}")

    def model(self, cls: type, *, output: bool) -> str:
        """Add an attrs class to the components; answer its name."""
        name = cls.__name__
        if self.output.setdefault(name, output) != output:
            raise TypeError(f"{name} is used both as a request body and as a response")
        if name not in self.schemas:
            self.schemas[name] = self.object_of(cls, output=output)
        return name

    def object_of(self, cls: type, *, output: bool, extra: Mapping[str, Any] | None = None) -> Any:
        """An attrs class as a closed object: answers carry every field, bodies need some."""
        fields = attrs.fields(attrs.resolve_types(cast("type[attrs.AttrsInstance]", cls)))
        extra = extra or {}
        properties = dict(extra)
        for field in fields:
            schema = self.schema(field.type, output=output)
            if field.name.endswith("_at"):
                schema["format"] = "date-time"
            properties[field.name] = self.keywords(schema, FIELD_KEYWORDS.get((cls, field.name)))
        required = [*extra, *(f.name for f in fields if output or f.default is attrs.NOTHING)]
        return {
            "title": cls.__name__,
            "description": _first_line(cls.__doc__),
            **_object(**properties),
            "required": required,
        }

    def message(self, name: str, cls: type) -> dict[str, str]:
        """A WebSocket op frame: the op's body with ``op`` and the client's optional ``id``."""
        frame = {"op": {"const": name}, "id": {"type": ["string", "integer"], "maxLength": 128}}
        schema = self.object_of(cls, output=False, extra=frame)
        schema["required"].remove("id")
        self.schemas[cls.__name__] = schema
        return {"$ref": "#/components/schemas/" + cls.__name__}

    def keywords(self, schema: dict[str, Any], more: Mapping[str, Any] | None) -> dict[str, Any]:
        """Add JSON Schema keywords, reading :class:`Limit` values from the configuration."""
        for key, value in (more or {}).items():
            schema[key] = getattr(self.limits, value.name) if isinstance(value, Limit) else value
        return schema


def _path(name: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": schema}


def _object(**properties: Any) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": properties,
        "required": list(properties),
        "additionalProperties": False,
    }


def _error_schema() -> dict[str, Any]:
    error = _object(
        code={"type": "string", "pattern": "^[a-z0-9_]+$"},
        message={"type": "string"},
        status={"type": "integer", "minimum": 400, "maximum": 599},
        details={"type": "object", "description": "What went wrong where: fields, parameter."},
    )
    error["required"].remove("details")
    return {"description": "The envelope of every error.", **_object(error=error)}


def _union(members: list[dict[str, Any]]) -> dict[str, Any]:
    """``X | None`` as one schema with a list of types where it can be, else ``anyOf``."""
    rest = [m for m in members if m != {"type": "null"}]
    if len(rest) == 1 and len(members) == 2 and isinstance(rest[0].get("type"), str):
        merged = {**rest[0], "type": [rest[0]["type"], "null"]}
        if "enum" in merged:
            merged["enum"] = [*merged["enum"], None]
        return merged
    return {"anyOf": members}


def _header(name: str) -> dict[str, str]:
    return {"$ref": "#/components/headers/" + name}


def _first_line(doc: str | None) -> str:
    return (doc or "").strip().split("\n\n")[0].replace("\n", " ").replace("``", "`")
