"""Examples in /openapi.json, taken from a recorded session with the service.

scripts/record_api_examples.py runs the README's sweep and study through the app and keeps
what each operation was sent and answered (examples.json, beside this file). `attach` puts
those into the document FastAPI generates: the request body, the parameters and one answer
per documented status of every operation, and, for every field of every schema, values the
field held in those bodies. A field no recorded body reached falls back to its enum's first
value or its default; tests/service/test_openapi.py fails if one is left without an example
or if a recorded body no longer matches the schema (then record again).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path
from typing import Any

from fastapi import FastAPI

EXAMPLES = Path(__file__).with_name("examples.json")
MAX_ITEMS = 3  # list items kept of a recorded body (figure specs hold thousands of points)
MAX_FIELD_EXAMPLES = 2  # distinct values kept per field
METHODS = ("get", "post", "put", "patch", "delete")
MISSING = object()


def trim(value: Any) -> Any:
    """A recorded body made small: every list cut to its first MAX_ITEMS items."""
    if isinstance(value, list):
        return [trim(v) for v in value[:MAX_ITEMS]]
    if isinstance(value, dict):
        return {k: trim(v) for k, v in value.items()}
    return value


@lru_cache(maxsize=1)
def recorded() -> dict[str, Any]:
    """examples.json's operations, keyed "METHOD /path/{template}"."""
    if not EXAMPLES.exists():
        return {}
    operations: dict[str, Any] = json.loads(EXAMPLES.read_text())["operations"]
    return operations


def install(app: FastAPI) -> None:
    """Serve the app's document with the examples attached (built once, on first use)."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            attach(generate())  # FastAPI keeps the document it generates in openapi_schema
        return app.openapi_schema or {}

    app.openapi = openapi  # type: ignore[method-assign]


def attach(document: dict[str, Any]) -> dict[str, Any]:
    """Add the recorded examples to an OpenAPI document (in place; returned for chaining)."""
    components = document.get("components", {}).get("schemas", {})
    fields = FieldExamples(components)
    for path, item in document["paths"].items():
        for method, operation in item.items():
            if method not in METHODS:
                continue
            seen = recorded().get(f"{method.upper()} {path}")
            if seen is None:
                continue
            _attach_operation(operation, seen, fields)
    fields.fill()
    return document


def _attach_operation(
    operation: dict[str, Any], seen: dict[str, Any], fields: FieldExamples
) -> None:
    for parameter in operation.get("parameters", []):
        value = seen.get("parameters", {}).get(parameter["name"], MISSING)
        if value is MISSING:
            value = parameter.get("schema", {}).get("default", MISSING)
        if value is not MISSING and value is not None:
            parameter["example"] = value
    body = operation.get("requestBody", {}).get("content", {}).get("application/json")
    if body is not None and "request" in seen:
        body["example"] = seen["request"]
        for request in [seen["request"], *seen.get("more_requests", [])]:
            fields.visit(body.get("schema", {}), request)
    for status, answer in operation.get("responses", {}).items():
        value = seen["responses"].get(status, MISSING)
        if value is MISSING:
            continue
        for media, content in answer.get("content", {}).items():
            if media == "application/json" or isinstance(value, str):
                content["example"] = value
                fields.visit(content.get("schema", {}), value)


class FieldExamples:
    """Collects, field by field, the values recorded bodies held there, walking each body
    alongside its schema ($ref, anyOf/oneOf by the option the value matches, arrays, maps)."""

    def __init__(self, components: dict[str, Any]) -> None:
        self.components = components
        self.values: dict[int, tuple[dict[str, Any], list[Any]]] = {}

    def visit(self, schema: dict[str, Any], value: Any) -> None:
        if value is MISSING or not isinstance(schema, dict):
            return
        if "$ref" in schema:
            self.visit(_resolve(schema, self.components), value)
        for key in ("anyOf", "oneOf", "allOf"):
            for option in schema.get(key, []):
                if key == "allOf" or self._matches(option, value):
                    self.visit(option, value)
        if isinstance(value, dict):
            properties = schema.get("properties", {})
            for name, item in value.items():
                if name in properties:
                    self._keep(properties[name], item)
                    self.visit(properties[name], item)
                elif isinstance(schema.get("additionalProperties"), dict):
                    self.visit(schema["additionalProperties"], item)
        elif isinstance(value, list) and isinstance(schema.get("items"), dict):
            for item in value:
                self.visit(schema["items"], item)

    def _matches(self, schema: dict[str, Any], value: Any) -> bool:
        """Whether `value` fits this option of a union, by type and discriminating const."""
        if "$ref" in schema:
            return self._matches(_resolve(schema, self.components), value)
        kind = schema.get("type")
        if kind is None:
            options = schema.get("anyOf")
            return options is None or any(self._matches(o, value) for o in options)
        if kind == "null":
            return value is None
        if kind == "object":
            if not isinstance(value, dict):
                return False
            for name, prop in schema.get("properties", {}).items():
                if "const" in prop and name in value and value[name] != prop["const"]:
                    return False
            extra = set(value) - set(schema.get("properties", {}))
            return not extra or schema.get("additionalProperties", True) is not False
        return _json_type(value) == kind or (kind == "number" and _json_type(value) == "integer")

    def _keep(self, prop: dict[str, Any], value: Any) -> None:
        entry = self.values.setdefault(id(prop), (prop, []))
        if value not in entry[1]:
            entry[1].append(value)

    def fill(self) -> None:
        """Write the collected values as each field's `examples` (non-null ones first),
        leaving examples a schema already gives; then the fallbacks for unreached fields."""
        for prop, values in self.values.values():
            if "examples" in prop:
                continue
            ordered = [v for v in values if v is not None] or values
            prop["examples"] = ordered[:MAX_FIELD_EXAMPLES]
        for prop in _properties(self.components):
            if "examples" not in prop:
                fallback = _fallback(prop, self.components)
                if fallback is not MISSING:
                    prop["examples"] = [fallback]


def _resolve(ref: dict[str, Any], components: dict[str, Any]) -> dict[str, Any]:
    """The component a {"$ref": "#/components/schemas/Name"} names."""
    found: dict[str, Any] = components.get(ref["$ref"].rsplit("/", 1)[-1], {})
    return found


def _properties(schema: Any) -> Iterator[dict[str, Any]]:
    if isinstance(schema, dict):
        yield from (p for p in (schema.get("properties") or {}).values() if isinstance(p, dict))
        for value in schema.values():
            yield from _properties(value)
    elif isinstance(schema, list):
        for value in schema:
            yield from _properties(value)


def _fallback(prop: dict[str, Any], components: dict[str, Any]) -> Any:
    """An example a field's schema implies: its enum's first value, its const, its default."""
    if "$ref" in prop:
        target = _resolve(prop, components)
        if "enum" in target:
            return target["enum"][0]
    if "enum" in prop:
        return prop["enum"][0]
    if "const" in prop:
        return prop["const"]
    for option in prop.get("anyOf", []):
        value = _fallback(option, components)
        if value is not MISSING:
            return value
    if prop.get("default") is not None:
        return prop["default"]
    return MISSING


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"
