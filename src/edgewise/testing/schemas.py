"""A JSON-schema suite for structured outputs: one question and one schema per shape
(nested objects, arrays, enums, required and optional properties, ``$defs``/``$ref``,
``anyOf``, ``const``, string lengths, null unions). Shared by ``tests/test_structured.py``
and ``bench/structured.py``."""

from __future__ import annotations

from typing import Any

__all__ = ["PERSON", "SUITE", "response_format"]

PERSON = {"type": "object", "properties": {
    "name": {"type": "string", "minLength": 1, "maxLength": 24},
    "age": {"type": "integer"},
    "email": {"type": "string"}},
    "required": ["name", "age"], "additionalProperties": False}
#: name -> (question, schema)
SUITE: dict[str, tuple[str, dict[str, Any]]] = {
    "flat": ("Give the name and age of a person called Ann who is 31.", PERSON),
    "nested": ("Describe a clinic with its address.", {
        "type": "object", "properties": {
            "clinic": {"type": "string", "maxLength": 40},
            "address": {"type": "object", "properties": {
                "street": {"type": "string", "maxLength": 40},
                "city": {"type": "string", "maxLength": 30}},
                "required": ["street", "city"], "additionalProperties": False}},
        "required": ["clinic", "address"], "additionalProperties": False}),
    "array_enum": ("List up to three colours of a traffic light.", {
        "type": "object", "properties": {
            "colours": {"type": "array", "items": {"enum": ["red", "amber", "green"]},
                        "minItems": 1, "maxItems": 3}},
        "required": ["colours"], "additionalProperties": False}),
    "defs_ref": ("Two people who work at a bakery.", {
        "$defs": {"person": PERSON},
        "type": "object", "properties": {
            "people": {"type": "array", "items": {"$ref": "#/$defs/person"},
                       "minItems": 2, "maxItems": 2}},
        "required": ["people"], "additionalProperties": False}),
    "any_of": ("Is the shop open? Answer with a reason or an hour.", {
        "type": "object", "properties": {
            "answer": {"anyOf": [{"type": "boolean"}, {"type": "integer"},
                                 {"type": "string", "maxLength": 30}]},
            "kind": {"const": "opening"}},
        "required": ["answer", "kind"], "additionalProperties": False}),
    "booleans_null": ("Is water wet? Give a note or nothing.", {
        "type": "object", "properties": {
            "wet": {"type": "boolean"},
            "note": {"anyOf": [{"type": "string", "maxLength": 30}, {"type": "null"}]},
            "kind": {"type": ["string", "null"]}},
        "required": ["wet", "note"], "additionalProperties": False}),
}



def response_format(schema: dict[str, Any]) -> dict[str, Any]:
    """OpenAI's ``response_format`` for ``schema`` (strict)."""
    return {"type": "json_schema", "json_schema": {"name": "answer", "schema": schema,
                                                    "strict": True}}
