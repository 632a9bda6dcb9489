"""The OpenAPI 3.1 description of the JSON API (``/api/v1``), built from the code that serves it.

Every view under ``/api/v1`` carries one line above it (below ``@bp.get(...)``)::

    @bp.get("/lots/<lot_id>")
    @operation(LotAvailability, errors=(403,))
    def lot(lot_id: str) -> Response: ...

That line says what the view answers (a pydantic model, its schema taken with
``model_json_schema`` and its refs moved to ``components/schemas``), its query parameters
(:func:`query`), its request body (a pydantic model) and the error statuses it adds to the usual
ones. Everything else comes from Flask: the path and its parameters from the URL rule (an
``..._id`` parameter is a ParkGate id unless declared otherwise with :func:`path`), the summary
and description from the view's docstring, the security from the prefix (``/api/v1/ops/`` needs the
session cookie, and the CSRF header on anything but GET). :func:`build_spec` assembles the document
served at ``GET /api/v1/openapi.json``; ``tests/test_openapi.py`` fails while a ``/api/v1`` route
has no ``@operation``, and runs schemathesis against the document.

The usual errors, all in the API's one shape ``{"error": {"status", "message"}}``
(dashboard/api.py ``error_response``): 400 on every operation, since the same declarations check
each request — a query parameter that is not declared, given twice, empty, not a number where a
number is due, out of range or malformed, and a path parameter that does not match, is refused
with a 400 naming it before the view runs; 404 where the path has parameters; 401 and 503 (no
database, so no accounts) under ``/api/v1/ops/``. Others (403, 404, 429, 503) are declared per
operation with ``errors=``.
"""

from __future__ import annotations

import functools
import inspect
import math
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from importlib import metadata
from typing import Any, Literal, TypeVar

from flask import Blueprint, Flask, current_app, jsonify, request
from flask.typing import ResponseReturnValue
from pydantic import BaseModel, ConfigDict, Field
from pydantic.json_schema import JsonSchemaMode, models_json_schema
from werkzeug.routing import IntegerConverter, Rule

from protocol.topics import ID_PATTERN

PREFIX = "/api/v1"
OPS_PREFIX = "/api/v1/ops"
ATTR = "__parkgate_operation__"
SPEC_KEY = "parkgate.openapi"
ID_HINT = "1-64 of A-Z a-z 0-9 _ . -, starting with a letter or digit"
CSRF_HEADER = "X-CSRFToken"
UNSAFE = ("POST", "PUT", "PATCH", "DELETE")
V = TypeVar("V", bound=Callable[..., Any])

bp = Blueprint("openapi", __name__, url_prefix=PREFIX)

ERRORS: dict[int, tuple[str, str]] = {  # status: (component name, when)
    400: ("BadRequest", "A query or path parameter or the body cannot be used; the message names it."),
    401: ("Unauthorized", "Not logged in (or the session has ended): log in at /login."),
    403: ("Forbidden", "The account's role or lot/station scope does not allow this."),
    404: ("NotFound", "Nothing with that id is known."),
    409: ("Conflict", "The item is not in a state that allows this (already handled)."),
    429: ("TooManyRequests", "Over a rate limit; Retry-After says when to try again."),
    503: ("ServiceUnavailable", "A part this needs is not configured or not reachable right now."),
}
TAGS = {
    "api": ("public", "Free spaces and guidance-screen content for drivers' apps and signs."),
    "inspection_api": (
        "inspection",
        "Inspection stations for logged-in operators: intruder alerts (review, unlock), stations, "
        "pass rates, live stream.",
    ),
    "lots_api": (
        "operator lots",
        "For logged-in operators: lots' occupancy and flows, gates, vehicles, live stream.",
    ),
    "opendata": ("drivers", "Lots near a place, free-space forecasts and the DATEX II export."),
    "openapi": ("meta", "This description."),
    "ops_api": ("operators", "For logged-in operators: session cookie, and the CSRF header on writes."),
}


# -- the uniform error shape -------------------------------------------------------------------------
class ErrorDetail(BaseModel):
    model_config = ConfigDict(extra="forbid")

    status: int = Field(description="the HTTP status, repeated")
    message: str = Field(description="what went wrong, in English, naming the parameter or id")


class ErrorBody(BaseModel):
    """Every error of the API (dashboard/api.py ``error_response``)."""

    model_config = ConfigDict(extra="forbid")

    error: ErrorDetail


# -- declarations ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Param:
    """A query, path or header parameter: its JSON schema, and what a malformed one is told."""

    name: str
    location: Literal["query", "path", "header"]
    schema: dict[str, Any]
    description: str = ""
    required: bool = False
    hint: str = ""  # for a pattern: what it means, in the 400's message


def query(
    name: str,
    kind: Literal["string", "integer", "number"] = "string",
    description: str = "",
    *,
    required: bool = False,
    hint: str = "",
    **schema: Any,
) -> Param:
    """A query parameter; ``schema`` holds JSON Schema keywords (``minimum``, ``maximum``,
    ``exclusiveMinimum``, ``maxLength``, ``pattern``, ``enum``, ``default``)."""
    if kind == "string":
        schema.setdefault("minLength", 1)  # an empty value is refused ("is empty")
    return Param(name, "query", {"type": kind, **schema}, description, required, hint)


def path(name: str, description: str = "", *, hint: str = "", **schema: Any) -> Param:
    """A path parameter other than a ParkGate id (which ``..._id`` parameters are by default)."""
    return Param(name, "path", {"type": "string", **schema}, description, True, hint)


def header(name: str, description: str = "", **schema: Any) -> Param:
    """A request header the view reads (documented; not checked here)."""
    return Param(name, "header", {"type": "string", **schema}, description)


def _id_param(name: str) -> Param:
    what = name.removesuffix("_id").replace("_", " ")
    return Param(name, "path", {"type": "string", "pattern": ID_PATTERN}, f"the {what}'s id", True, ID_HINT)


@dataclass(frozen=True)
class Operation:
    response: type[BaseModel] | dict[str, Any] | None
    status: int
    params: tuple[Param, ...]
    body: type[BaseModel] | None
    errors: tuple[int, ...]
    summary: str | None
    events: dict[str, type[BaseModel]] | None  # text/event-stream: event name -> payload model
    cache: str | None  # GET answered with ETag and this Cache-Control; If-None-Match gives a 304
    media_type: str  # of a success
    files: tuple[str, ...]  # a multipart/form-data body with these file fields


def operation(
    response: type[BaseModel] | dict[str, Any] | None = None,
    *,
    status: int = 200,
    params: tuple[Param, ...] = (),
    body: type[BaseModel] | None = None,
    errors: tuple[int, ...] = (),
    summary: str | None = None,
    events: dict[str, type[BaseModel]] | None = None,
    cache: str | None = None,
    media_type: str = "application/json",
    files: tuple[str, ...] = (),
) -> Callable[[V], V]:
    """Register the view below as an operation of the API (see the module docstring).

    ``response``: the model of a success (or a JSON Schema dict); ``status``: its code;
    ``params``: query parameters (:func:`query`), headers (:func:`header`) and path parameters that
    are not ids (:func:`path`); ``body``: the model of a JSON request body; ``errors``: statuses
    beyond the usual; ``summary``: else the docstring's first line; ``events``: for a Server-Sent
    Events stream, the payload model of each event name; ``cache``: the Cache-Control of a GET
    answered with an ETag (304 to a matching If-None-Match); ``media_type``: of a success other
    than JSON (``text/csv``: ``response`` may then be None, a string); ``files``: the file fields of a
    ``multipart/form-data`` upload body.
    """
    for code in errors:
        if code not in ERRORS:
            raise ValueError(f"error status {code} has no uniform response (one of {sorted(ERRORS)})")
    declared = Operation(
        response, status, tuple(params), body, tuple(errors), summary, events, cache, media_type, tuple(files)
    )

    def register(view: V) -> V:
        setattr(view, ATTR, declared)
        return view

    return register


def operation_of(app: Flask, endpoint: str | None) -> Operation | None:
    view = app.view_functions.get(endpoint or "")
    found: Operation | None = getattr(view, ATTR, None)
    return found


def api_rules(app: Flask) -> Iterator[Rule]:
    """The URL rules under /api/v1, in path order."""
    for rule in sorted(app.url_map.iter_rules(), key=lambda r: (r.rule, r.endpoint)):
        if rule.rule == PREFIX or rule.rule.startswith(PREFIX + "/"):
            yield rule


def undocumented(app: Flask) -> list[str]:
    """``METHOD /path (endpoint)`` of every /api/v1 route without an ``@operation``."""
    return [
        f"{','.join(sorted(_methods(rule)))} {rule.rule} ({rule.endpoint})"
        for rule in api_rules(app)
        if operation_of(app, rule.endpoint) is None
    ]


def _methods(rule: Rule) -> set[str]:
    return set(rule.methods or ()) - {"HEAD", "OPTIONS"}


# -- checking requests against the declarations ------------------------------------------------------
class ParamError(ValueError):
    """A request parameter that cannot be used; the message says which and why."""


def _params_of(op: Operation, rule: Rule | None) -> list[Param]:
    declared = {(p.location, p.name): p for p in op.params}
    converters = getattr(rule, "_converters", {})
    for name in sorted(rule.arguments if rule else ()):
        if ("path", name) in declared:
            continue
        if isinstance(converters.get(name), IntegerConverter):
            declared[("path", name)] = Param(
                name, "path", {"type": "integer", "minimum": 0}, f"the {name.replace('_', ' ')}", True
            )
        elif name.endswith("_id"):
            declared[("path", name)] = _id_param(name)
        else:
            declared[("path", name)] = path(name, f"the {name.replace('_', ' ')}")
    return list(declared.values())


def _bound_text(schema: dict[str, Any]) -> str:
    low, high = schema.get("exclusiveMinimum", schema.get("minimum")), schema.get("maximum")
    opened = "exclusiveMinimum" in schema
    if low is not None and high is not None:
        return f"{'more than' if opened else 'from'} {low:g} {'up to' if opened else 'to'} {high:g}"
    if low is not None:
        return f"{'more than' if opened else 'at least'} {low:g}"
    return f"at most {high:g}"


def _in_range(value: float, schema: dict[str, Any]) -> bool:
    if "minimum" in schema and value < schema["minimum"]:
        return False
    if "exclusiveMinimum" in schema and value <= schema["exclusiveMinimum"]:
        return False
    return not ("maximum" in schema and value > schema["maximum"])


@functools.cache
def _pattern(pattern: str) -> re.Pattern[str]:
    """A JSON Schema ``pattern`` (a search, not a full match) as Python runs it; a final ``$`` ends
    the text as in ECMA-262, not before a trailing newline as Python's would."""
    if pattern.endswith("$") and not pattern.endswith("\\$"):
        pattern = pattern[:-1] + r"\Z"
    return re.compile(pattern)


def check_value(param: Param, raw: str) -> None:
    """Raise ParamError unless ``raw`` is a value of ``param``'s schema."""
    schema, name = param.schema, param.name
    kind = schema.get("type")
    if kind == "integer":
        if not re.fullmatch(r"[+-]?[0-9]{1,30}", raw.strip()):
            raise ParamError(f"{name} must be a whole number, not {raw[:40]!r}")
        number: float = int(raw)
    elif kind == "number":
        try:
            if not raw.isascii() or "_" in raw:
                raise ValueError(raw)
            number = float(raw)
        except ValueError:
            raise ParamError(f"{name} must be a number, not {raw[:40]!r}") from None
        if not math.isfinite(number):
            raise ParamError(f"{name} must be {_bound_text(schema)}; got {raw.strip()}")
    else:
        label = name.replace("_", " ") if param.location == "path" else name
        if "enum" in schema and raw not in schema["enum"]:
            raise ParamError(
                f"{label} must be one of {', '.join(map(str, schema['enum']))}, not {raw[:40]!r}"
            )
        if len(raw) > schema.get("maxLength", math.inf):
            raise ParamError(f"{label} is too long: at most {schema['maxLength']} characters")
        if "pattern" in schema and not _pattern(schema["pattern"]).search(raw):
            hint = f" ({param.hint})" if param.hint else ""
            raise ParamError(f"{label} {raw[:80]!r} is malformed{hint}")
        return
    if not _in_range(number, schema):
        raise ParamError(f"{name} must be {_bound_text(schema)}; got {raw.strip()}")


def check_request(op: Operation, rule: Rule | None) -> None:
    """Raise ParamError for the first unusable query or path parameter of this request."""
    params = _params_of(op, rule)
    accepted = [p for p in params if p.location == "query"]
    names = [p.name for p in accepted]
    unknown = sorted(set(request.args) - set(names))
    if unknown:
        known = ", ".join(names) if names else "none"
        raise ParamError(f"unknown query parameter(s): {', '.join(unknown)} (accepted: {known})")
    for param in accepted:
        values = request.args.getlist(param.name)
        if not values:
            if param.required:
                raise ParamError(f"{param.name} is missing")
            continue
        if len(values) > 1:
            raise ParamError(f"{param.name} given {len(values)} times; give it once")
        if not (values[0] if param.schema.get("type") == "string" else values[0].strip()):
            raise ParamError(f"{param.name} is empty")  # a blank string is its pattern's to judge
        check_value(param, values[0])
    for param in params:
        if param.location == "path" and request.view_args and param.name in request.view_args:
            check_value(param, str(request.view_args[param.name]))


def _check_this_request() -> ResponseReturnValue | None:
    """``before_request``: a request to a declared operation with a bad parameter gets a 400."""
    op = operation_of(current_app, request.endpoint)
    if op is None:
        return None
    try:
        check_request(op, request.url_rule)
    except ParamError as err:
        from dashboard.api import error_response

        return error_response(400, str(err))
    return None


# -- the document ------------------------------------------------------------------------------------
def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


class _Models:
    """Every model the operations name, turned into components/schemas in one go."""

    def __init__(self) -> None:
        self.wanted: list[tuple[type[BaseModel], JsonSchemaMode]] = [(ErrorBody, "serialization")]
        self.refs: dict[tuple[Any, JsonSchemaMode], dict[str, Any]] = {}

    def add(self, model: type[BaseModel], mode: JsonSchemaMode) -> None:
        if (model, mode) not in self.wanted:
            self.wanted.append((model, mode))

    def build(self) -> dict[str, Any]:
        keyed, top = models_json_schema(self.wanted, ref_template="#/components/schemas/{model}")
        self.refs = dict(keyed)
        defs: dict[str, Any] = top.get("$defs", {})
        return defs

    def schema(self, item: type[BaseModel] | dict[str, Any], mode: JsonSchemaMode) -> dict[str, Any]:
        return dict(item) if isinstance(item, dict) else self.refs[(item, mode)]


def _path_template(rule: Rule) -> str:
    return re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule.rule)


def _texts(view: Callable[..., Any], op: Operation) -> tuple[str, str]:
    """(summary, description): the declared summary and the whole docstring, or the docstring's
    first line and the rest."""
    text = inspect.cleandoc(inspect.getdoc(view) or "")
    if op.summary:
        return op.summary, text
    first, _, rest = text.partition("\n")
    return first.strip(), rest.strip()


def _json_content(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


def _event_schema(events: dict[str, type[BaseModel]], models: _Models) -> dict[str, Any]:
    """One Server-Sent Event (OpenAPI 3.1 has ``schema`` describe each event of a stream)."""
    return {
        "oneOf": [
            {
                "type": "object",
                "required": ["event", "data"],
                "properties": {
                    "event": {"const": name},
                    "id": {"type": "string", "pattern": "^[0-9]+$"},
                    "data": {
                        "type": "string",
                        "contentMediaType": "application/json",
                        "contentSchema": models.schema(model, "serialization"),
                    },
                    "retry": {"type": "integer"},
                },
            }
            for name, model in events.items()
        ]
    }


def _responses(op: Operation, params: list[Param], ops: bool, models: _Models) -> dict[str, Any]:
    success: dict[str, Any] = {"description": "OK" if op.status == 200 else "Created"}
    if op.events:
        success["content"] = {"text/event-stream": {"schema": _event_schema(op.events, models)}}
    elif op.response is not None:
        success["content"] = {op.media_type: {"schema": models.schema(op.response, "serialization")}}
    elif op.media_type != "application/json":
        success["content"] = {op.media_type: {"schema": {"type": "string"}}}
    responses: dict[str, Any] = {str(op.status): success}
    if op.cache:
        success["headers"] = {
            "ETag": {"description": "the version of this answer", "schema": {"type": "string"}},
            "Cache-Control": {"description": op.cache, "schema": {"type": "string"}},
        }
        responses["304"] = {
            "description": "Not Modified: If-None-Match named the current ETag",
            "headers": {"ETag": {"schema": {"type": "string"}}},
        }
    codes = {400, *op.errors}
    if any(p.location == "path" for p in params):
        codes.add(404)
    if ops:
        codes |= {401, 503}
    for code in sorted(codes):
        responses[str(code)] = {"$ref": f"#/components/responses/{ERRORS[code][0]}"}
    return responses


def _parameter(param: Param) -> dict[str, Any]:
    out: dict[str, Any] = {"name": param.name, "in": param.location, "schema": param.schema}
    if param.required or param.location == "path":
        out["required"] = True
    if param.description:
        out["description"] = param.description
    return out


def build_spec(app: Flask) -> dict[str, Any]:
    """The OpenAPI 3.1 document of every declared /api/v1 operation of ``app``."""
    models = _Models()
    found: list[tuple[Rule, Operation]] = []
    for rule in api_rules(app):
        op = operation_of(app, rule.endpoint)
        if op is None:
            continue  # tests/test_openapi.py names it
        found.append((rule, op))
        for item in (op.response, *(op.events or {}).values()):
            if isinstance(item, type):
                models.add(item, "serialization")
        if op.body is not None:
            models.add(op.body, "validation")
    schemas = models.build()
    paths: dict[str, dict[str, Any]] = {}
    used_tags: set[str] = set()
    for rule, op in found:
        view = app.view_functions[rule.endpoint]
        summary, description = _texts(view, op)
        ops = rule.rule.startswith(OPS_PREFIX + "/") or rule.rule == OPS_PREFIX
        params = _params_of(op, rule)
        if op.cache:
            params.append(header("If-None-Match", "an ETag from before: 304 if the answer is unchanged"))
        blueprint = rule.endpoint.partition(".")[0]
        tag = TAGS.get(blueprint, (blueprint, ""))[0]
        used_tags.add(blueprint)
        methods = sorted(_methods(rule))
        for method in methods:
            entry: dict[str, Any] = {
                "operationId": rule.endpoint if len(methods) == 1 else f"{rule.endpoint}.{method.lower()}",
                "summary": summary or rule.endpoint,
                "tags": [tag],
                "responses": _responses(op, params, ops, models),
            }
            if description:
                entry["description"] = description
            if params:
                entry["parameters"] = [_parameter(p) for p in params]
            if op.body is not None:
                entry["requestBody"] = {
                    "required": True, "content": _json_content(models.schema(op.body, "validation"))
                }  # fmt: skip
            elif op.files:
                entry["requestBody"] = {"required": True, "content": {"multipart/form-data": {"schema": {
                    "type": "object", "required": list(op.files),
                    "properties": {name: {"type": "string", "format": "binary"} for name in op.files},
                }}}}  # fmt: skip
            if ops:
                entry["security"] = [{"session": [], "csrf": []} if method in UNSAFE else {"session": []}]
            paths.setdefault(_path_template(rule), {})[method.lower()] = entry
    title = app.config["PARKGATE"].title
    error_schema = _ref("ErrorBody")
    return {
        "openapi": "3.1.0",
        "info": {
            "title": f"{title} API",
            "version": _version(),
            "description": "Free parking spaces, guidance-screen content, forecasts and open data for "
            "drivers' apps and signs, and the operators' API. Errors always have the shape "
            '{"error": {"status", "message"}}.',
        },
        "tags": [{"name": TAGS[b][0], "description": TAGS[b][1]} for b in sorted(used_tags) if b in TAGS],
        "paths": paths,
        "components": {
            "schemas": schemas,
            "responses": {
                name: {"description": when, "content": _json_content(error_schema)}
                for name, when in ERRORS.values()
            },
            "securitySchemes": {
                "session": {
                    "type": "apiKey",
                    "in": "cookie",
                    "name": app.config["SESSION_COOKIE_NAME"],
                    "description": "The session cookie an operator gets by logging in at /login.",
                },
                "csrf": {
                    "type": "apiKey",
                    "in": "header",
                    "name": CSRF_HEADER,
                    "description": "The CSRF token of the session (the csrf-token meta tag of any operator "
                    "page); needed on POST, PUT, PATCH and DELETE.",
                },
            },
        },
    }


def _version() -> str:
    try:
        return metadata.version("parkgate")
    except metadata.PackageNotFoundError:
        return "0"


def spec(app: Flask) -> dict[str, Any]:
    """The document, built once per app (after every blueprint is registered)."""
    built: dict[str, Any] | None = app.extensions.get(SPEC_KEY)
    if built is None:
        built = app.extensions[SPEC_KEY] = build_spec(app)
    return built


@bp.get("/openapi.json")
@operation({"type": "object", "description": "an OpenAPI 3.1 document"})
def openapi_json() -> ResponseReturnValue:
    """This description of the API (OpenAPI 3.1)."""
    return jsonify(spec(current_app))


def configure(app: Flask) -> None:
    """Serve the document and check every declared operation's parameters before its view."""
    app.register_blueprint(bp)
    app.before_request(_check_this_request)
