"""Discord's OpenAPI spec as a request router and body validator.

The spec (``tests/discord_openapi/openapi.json``, OpenAPI 3.1, so plain JSON Schema 2020-12) is
loaded once per process. Every ``$ref`` inside it points into the same document, so the whole
document is registered as one ``referencing`` resource and each validator starts from a ``$ref``
to the schema it checks. Validators are compiled lazily, one per (method, route, direction), and
cached: validating a body is then a plain ``iter_errors`` call.
"""

from __future__ import annotations

import copy
import functools
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator, validators
from jsonschema.exceptions import ValidationError
from jsonschema.protocols import Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

SPEC_PATH = Path(__file__).resolve().parent.parent / "discord_openapi" / "openapi.json"
_SPEC_URI = "urn:discord-openapi"
_HTTP_METHODS = ("get", "put", "post", "patch", "delete")


@dataclass(frozen=True)
class RouteMatch:
    template: str  # e.g. "/channels/{channel_id}/messages"
    params: dict[str, str]


def _pointer(*parts: str) -> str:
    """A JSON pointer fragment, escaping "~" and "/" as RFC 6901 says."""
    return "/".join(part.replace("~", "~0").replace("/", "~1") for part in parts)


class OpenAPISpec:
    """Routes concrete paths to spec templates and validates JSON bodies against the spec."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = spec
        resource = Resource.from_contents(spec, default_specification=DRAFT202012)
        self._registry: Registry[Any] = Registry().with_resource(_SPEC_URI, resource)
        request_spec = accept_numeric_snowflakes(spec)
        self._request_spec = request_spec
        request_resource = Resource.from_contents(request_spec, default_specification=DRAFT202012)
        self._request_registry: Registry[Any] = Registry().with_resource(_SPEC_URI, request_resource)
        # Templates grouped by segment count; literal segments win over parameters when sorting,
        # so "/users/@me" beats "/users/{user_id}" and ".../messages/@original" beats "{message_id}".
        # Keyed by segment count and first segment as well (every template starts with a literal), so a request
        # tries a handful of templates, not hundreds: the fake stands for Discord and must not be the bottleneck.
        self._templates: dict[tuple[int, str], list[tuple[str, tuple[str, ...]]]] = {}
        for template in spec["paths"]:
            segments = tuple(template.strip("/").split("/"))
            if segments[0].startswith("{"):
                raise ValueError(f"{template}: a template starting with a parameter cannot be indexed")
            self._templates.setdefault((len(segments), segments[0]), []).append((template, segments))
        for group in self._templates.values():
            group.sort(key=lambda item: tuple(seg.startswith("{") for seg in item[1]))
        self._validators: dict[tuple[str, str, str], Validator | None] = {}
        self._validator_class = _with_discriminated_unions(spec)

    def match(self, path: str) -> RouteMatch | None:
        """The spec template for a concrete path (without the ``/api/v10`` prefix)."""
        segments = path.strip("/").split("/")
        for template, template_segments in self._templates.get((len(segments), segments[0]), []):
            params: dict[str, str] = {}
            for seg, tseg in zip(segments, template_segments, strict=True):
                if tseg.startswith("{"):
                    if not seg:
                        break
                    params[tseg[1:-1]] = seg
                elif seg != tseg:
                    break
            else:
                return RouteMatch(template, params)
        return None

    def has_operation(self, method: str, template: str) -> bool:
        return method.lower() in self.spec["paths"].get(template, {})

    def operation(self, method: str, template: str) -> dict[str, Any]:
        return self.spec["paths"][template][method.lower()]

    def methods(self, template: str) -> list[str]:
        return [m.upper() for m in self.spec["paths"].get(template, {}) if m in _HTTP_METHODS]

    def body_required(self, method: str, template: str) -> bool:
        body = self.operation(method, template).get("requestBody")
        return bool(body and body.get("required"))

    def validate_request(self, method: str, template: str, body: Any) -> str | None:
        """None when ``body`` matches the JSON request schema, else a readable error message."""
        validator = self._validator(method, template, "request")
        return None if validator is None else _first_error(validator, body)

    def validate_response(self, method: str, template: str, status: int, body: Any) -> str | None:
        """None when ``body`` matches the spec's JSON response schema for ``status``."""
        validator = self._validator(method, template, f"response {status}")
        return None if validator is None else _first_error(validator, body)

    def validate_schema(self, schema_name: str, instance: Any) -> str | None:
        """Checks ``instance`` against ``#/components/schemas/<schema_name>`` (used by self-tests)."""
        validator = self._compile(("components", "schemas", schema_name))
        return _first_error(validator, instance)

    def _validator(self, method: str, template: str, direction: str) -> Validator | None:
        key = (method.lower(), template, direction)
        if key not in self._validators:
            self._validators[key] = self._build(*key)
        return self._validators[key]

    def _build(self, method: str, template: str, direction: str) -> Validator | None:
        operation = self.spec["paths"][template][method]
        if direction == "request":
            content = (operation.get("requestBody") or {}).get("content", {})
            if "application/json" not in content:
                return None
            where = ("requestBody", "content", "application/json", "schema")
        else:
            status = direction.split()[1]
            response = operation.get("responses", {}).get(status, {})
            if "application/json" not in response.get("content", {}):
                return None
            where = ("responses", status, "content", "application/json", "schema")
        if direction == "request":
            return self._compile(("paths", template, method, *where), self._request_spec, self._request_registry)
        return self._compile(("paths", template, method, *where), self.spec, self._registry)

    def _compile(
        self, where: tuple[str, ...], document: dict[str, Any] | None = None, registry: Registry[Any] | None = None
    ) -> Validator:
        """A validator for the schema at `where`, with its $refs inlined once (recursive ones stay refs):
        resolving refs on every validation is what made validation slow."""
        document = document or self.spec
        node: Any = document
        for part in where:
            node = node[part]
        return self._validator_class(inline_refs(document, node), registry=registry or self._registry)


def inline_refs(document: dict[str, Any], node: Any, stack: tuple[str, ...] = ()) -> Any:
    """`node` with every local $ref replaced by its target, except a ref back into a schema being
    inlined (a recursive schema), which becomes an absolute ref the registry resolves."""
    if isinstance(node, list):
        return [inline_refs(document, item, stack) for item in node]
    if not isinstance(node, dict):
        return node
    ref = node.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/"):
        if ref in stack:
            return {**node, "$ref": f"{_SPEC_URI}{ref}"}
        target: Any = document
        for part in ref[2:].split("/"):
            target = target[part.replace("~1", "/").replace("~0", "~")]
        siblings = {key: value for key, value in node.items() if key != "$ref"}
        inlined = inline_refs(document, target, (*stack, ref))
        return {**inlined, **inline_refs(document, siblings, stack)} if siblings else inlined
    return {key: inline_refs(document, value, stack) for key, value in node.items()}


_SNOWFLAKE_REF = {"$ref": "#/components/schemas/SnowflakeType"}
_NUMERIC_SNOWFLAKE = {"anyOf": [_SNOWFLAKE_REF, {"type": "integer", "minimum": 0}]}

# The one exception to the spec, for request bodies only, and only at these fields: discord.py 2.x
# serialises these snowflakes as JSON numbers (File.to_dict's attachment index, message references,
# allowed-mention lists, select default values) and Discord's API accepts numbers for snowflakes,
# while the spec's SnowflakeType is a string. Responses stay strict, as does every other field.
NUMERIC_SNOWFLAKE_FIELDS: dict[str, tuple[str, ...]] = {
    "MessageAttachmentRequest": ("id",),
    "MessageReferenceRequest": ("message_id", "channel_id", "guild_id"),
    "MessageAllowedMentionsRequest": ("users", "roles"),
    "UserSelectDefaultValue": ("id",),
    "RoleSelectDefaultValue": ("id",),
    "ChannelSelectDefaultValue": ("id",),
}


def _widen_snowflake_refs(node: Any) -> Any:
    if node == _SNOWFLAKE_REF:
        return copy.deepcopy(_NUMERIC_SNOWFLAKE)
    if isinstance(node, dict):
        return {key: _widen_snowflake_refs(value) for key, value in node.items()}
    if isinstance(node, list):
        return [_widen_snowflake_refs(value) for value in node]
    return node


def accept_numeric_snowflakes(spec: dict[str, Any]) -> dict[str, Any]:
    """A copy of the spec in which the fields of NUMERIC_SNOWFLAKE_FIELDS also accept integers."""
    patched = dict(spec)
    schemas = dict(spec["components"]["schemas"])
    for name, fields in NUMERIC_SNOWFLAKE_FIELDS.items():
        schema = copy.deepcopy(schemas[name])
        for field_name in fields:
            schema["properties"][field_name] = _widen_snowflake_refs(schema["properties"][field_name])
        schemas[name] = schema
    patched["components"] = {**spec["components"], "schemas": schemas}
    return patched


@functools.cache
def load_spec() -> OpenAPISpec:
    """The spec shipped with the tests, parsed once per process."""
    with SPEC_PATH.open(encoding="utf-8") as fh:
        return OpenAPISpec(json.load(fh))


def _with_discriminated_unions(spec: dict[str, Any]) -> type[Validator]:
    """A 2020-12 validator whose anyOf/oneOf only descend into the branch the body's ``type`` picks.

    Discord's unions (the seven callback kinds, the message component kinds) are told apart by a
    ``type`` property with an ``enum``. Every other branch fails on that enum, so checking only
    the branch whose enum admits the value gives the same verdict, several times faster, and its
    errors name the real problem. Same for ``oneOf: [null, X]`` with a non-null value. Anything
    else falls back to the standard keyword.
    """
    tables: dict[int, dict[Any, list[int]] | None] = {}

    def lookup(ref: str) -> Any:
        node: Any = spec
        for part in ref[2:].split("/"):
            node = node[part.replace("~1", "/").replace("~0", "~")]
        return node

    def type_values(branch: Any) -> list[Any] | None:
        while isinstance(branch, dict) and "#/" in str(branch.get("$ref", "")):
            branch = lookup(branch["$ref"][branch["$ref"].index("#/") :])
        if not isinstance(branch, dict):
            return None
        prop = branch.get("properties", {}).get("type")
        if not isinstance(prop, dict):
            return None
        if "const" in prop:
            return [prop["const"]]
        enum = prop.get("enum")
        return list(enum) if isinstance(enum, list) else None

    def table_for(branches: list[Any]) -> dict[Any, list[int]] | None:
        key = id(branches)
        if key not in tables:
            table: dict[Any, list[int]] | None = {}
            for index, branch in enumerate(branches):
                values = type_values(branch)
                if values is None:
                    table = None
                    break
                for value in values:
                    table.setdefault(value, []).append(index)
            tables[key] = table
        return tables[key]

    def fast(standard: Any) -> Any:
        def keyword(
            validator: Draft202012Validator, branches: list[Any], instance: Any, schema: Any
        ) -> Iterator[ValidationError]:
            pick: int | None = None
            if len(branches) == 2 and branches[0] == {"type": "null"} and instance is not None:
                pick = 1
            elif isinstance(instance, dict) and type(instance.get("type")) in (int, str):  # not bool: True == 1
                table = table_for(branches)
                chosen = None if table is None else table.get(instance["type"])
                if chosen is not None and len(chosen) == 1:
                    pick = chosen[0]
            if pick is None:
                yield from standard(validator, branches, instance, schema)
            else:
                yield from validator.descend(instance, branches[pick], schema_path=pick)

        return keyword

    keywords = Draft202012Validator.VALIDATORS
    return validators.extend(Draft202012Validator, {"anyOf": fast(keywords["anyOf"]), "oneOf": fast(keywords["oneOf"])})


def _first_error(validator: Validator, instance: Any) -> str | None:
    error = next(iter(validator.iter_errors(instance)), None)
    return None if error is None else _describe(_narrow(error))


def _ruled_out(errors: list[ValidationError]) -> bool:
    """True when a union branch fails on what tells the branches apart (its JSON type or ``type``)."""
    for error in errors:
        if error.validator == "type" and not error.relative_path:
            return True
        if list(error.relative_path) == ["type"] and error.validator in ("enum", "const"):
            return True
    return False


def _narrow(error: ValidationError) -> ValidationError:
    """Descend into anyOf/oneOf failures while exactly one branch fits the body's shape.

    Discord's unions (message components, callback kinds, nullable refs) are told apart by the
    JSON type or a ``type`` field; "not valid under any of the given schemas" says nothing, the
    errors of the one branch that fits do.
    """
    while error.validator in ("anyOf", "oneOf") and error.context:
        branches: dict[Any, list[ValidationError]] = {}
        for sub in error.context:
            branches.setdefault(sub.relative_schema_path[0], []).append(sub)
        fitting = [errors for errors in branches.values() if not _ruled_out(errors)]
        if len(fitting) != 1:
            break
        error = fitting[0][0]
    return error


def _describe(error: ValidationError) -> str:
    where = "".join(f"[{p!r}]" for p in error.absolute_path) or "<body>"
    message = error.message
    if len(message) > 500:
        message = message[:500] + "..."
    return f"{where}: {message}"


def discord_error_tree(message: str) -> dict[str, Any]:
    """The ``errors`` object of a 50035 answer, shaped like Discord's (one ``_errors`` leaf)."""
    match = re.match(r"^((?:\[[^\]]*\])*): ", message)
    keys = re.findall(r"\[([^\]]*)\]", match.group(1)) if match else []
    leaf: dict[str, Any] = {"_errors": [{"code": "BASE_TYPE_INVALID", "message": message}]}
    for key in reversed(keys):
        leaf = {key.strip("'\""): leaf}
    return leaf
