#!/usr/bin/env python3
"""Structured output against pydantic (v2), the validator OpenAI's Python SDK
parses answers with: writes the JSON schema pydantic makes of a model, or
checks answers with pydantic's own validation of the same model. The models:
"order" (a pattern, bounded numbers and a multipleOf, date, date-time, UUID and
IPv4 fields, a discriminated union of two models, a tuple, an optional bounded
string) and "inventory" (dicts: keys of an Enum, of a Literal, of a pattern
with min and max length, of a max_length: propertyNames, patternProperties,
minProperties and maxProperties; sets and frozensets of bounded strings, the
Enum, ints, floats and optional strings: uniqueItems). Where the jsonschema
package is there, each answer is also validated against the model's JSON schema
itself (it checks uniqueItems, which pydantic does not: it makes a set of a
list with repeats).
Outside ctest (needs pydantic 2):
  python3 scripts/pydantic-schema-check.py schema order.json [MODEL]
  kvplan compile models/tiny.toml --max-seq 2048 -o tiny.kvp
  kvplan run tiny.kvp -p x -n 1900 --temperature 1 --seed 1 --json-schema order.json > out1
  python3 scripts/pydantic-schema-check.py check [--model MODEL] x out1 [out2 ...]
(MODEL: order when not given; "check PROMPT FILE...": each answer is its
file's text after PROMPT.) Prints one line a file; exits 1 when pydantic
refuses an answer that is whole JSON, or one names a key twice in an object
(a parser keeps one of its values)."""
import json
import sys
from datetime import date, datetime
from enum import Enum
from ipaddress import IPv4Address
from typing import Annotated, Dict, FrozenSet, Literal, Optional, Set, Tuple, Union
from uuid import UUID

from pydantic import BaseModel, Field, StringConstraints, ValidationError

try:
    import jsonschema
except ImportError:
    jsonschema = None


class Cat(BaseModel):
    kind: Literal["cat"]
    lives: int = Field(ge=0, le=9)


class Dog(BaseModel):
    kind: Literal["dog"]
    good: bool


class Order(BaseModel):
    sku: str = Field(pattern=r"^[A-Z]{3}-\d{4}$")
    qty: int = Field(ge=1, le=99)
    price: float = Field(gt=0, le=10000, multiple_of=0.25)
    day: date
    when: datetime
    id: UUID
    ip: IPv4Address
    pet: Union[Cat, Dog] = Field(discriminator="kind")
    box: Tuple[int, bool]
    note: Optional[str] = Field(default=None, max_length=40)


class Color(str, Enum):
    red = "red"
    green = "green"
    blue = "blue"


class Inventory(BaseModel):
    stock: Dict[Color, int]
    tags: Dict[Literal["new", "sale"], bool]
    scores: Annotated[Dict[Annotated[str, StringConstraints(pattern=r"^[a-z_]{1,12}$")], int],
                      Field(min_length=1, max_length=4)]
    short: Dict[Annotated[str, StringConstraints(max_length=3)], float]
    labels: Set[Annotated[str, StringConstraints(max_length=4)]]
    colors: FrozenSet[Color]
    ids: Set[int]
    reals: FrozenSet[float]
    maybe: Set[Optional[Annotated[str, StringConstraints(max_length=3)]]]


MODELS = {"order": Order, "inventory": Inventory}


def names_once(pairs):
    """json.loads's object_pairs_hook: a key twice is an error."""
    keys = [k for k, _ in pairs]
    if len(set(keys)) != len(keys):
        raise ValueError(f"a key twice in an object: {keys}")
    return dict(pairs)


def main():
    if len(sys.argv) in (3, 4) and sys.argv[1] == "schema":
        model = MODELS[sys.argv[3] if len(sys.argv) == 4 else "order"]
        with open(sys.argv[2], "w", encoding="utf-8") as f:
            json.dump(model.model_json_schema(), f)
        return 0
    args = sys.argv[2:]
    model = Order
    if len(args) >= 2 and args[0] == "--model":
        model, args = MODELS[args[1]], args[2:]
    if len(args) < 2 or sys.argv[1] != "check":
        print(__doc__, file=sys.stderr)
        return 2
    prompt, refused = args[0], 0
    for path in args[1:]:
        text = open(path, encoding="utf-8").read()[len(prompt):].strip()
        try:
            json.loads(text)
        except ValueError as e:
            print(f"{path}: not JSON (a cut answer?): {e}")
            continue
        try:
            json.loads(text, object_pairs_hook=names_once)
        except ValueError as e:
            refused += 1
            print(f"{path}: REFUSED {e}")
            continue
        if jsonschema is not None:
            errors = list(jsonschema.Draft202012Validator(model.model_json_schema())
                          .iter_errors(json.loads(text)))
            if errors:
                refused += 1
                print(f"{path}: REFUSED by the JSON schema: {errors[0].message}")
                continue
        try:
            value = model.model_validate_json(text)
            print(f"{path}: ok {value.model_dump_json()[:160]}")
        except ValidationError as e:
            refused += 1
            print(f"{path}: REFUSED {e.errors()}")
    return 1 if refused else 0


if __name__ == "__main__":
    sys.exit(main())
