#!/usr/bin/env python3
"""Structured output against pydantic (v2), the validator OpenAI's Python SDK
parses answers with: writes the JSON schema pydantic makes of an order (a
pattern, bounded numbers and a multipleOf, date, date-time, UUID and IPv4
fields, a discriminated union of two models, a tuple, an optional bounded
string), or checks answers with pydantic's own validation of the same model.
Outside ctest (needs pydantic 2):
  python3 scripts/pydantic-schema-check.py schema order.json
  kvplan compile models/tiny.toml --max-seq 2048 -o tiny.kvp
  kvplan run tiny.kvp -p x -n 1900 --temperature 1 --seed 1 --json-schema order.json > out1
  python3 scripts/pydantic-schema-check.py check x out1 [out2 ...]
("check PROMPT FILE...": each answer is its file's text after PROMPT.) Prints
one line a file; exits 1 when pydantic refuses an answer that is whole JSON."""
import json
import sys
from datetime import date, datetime
from ipaddress import IPv4Address
from typing import Literal, Optional, Tuple, Union
from uuid import UUID

from pydantic import BaseModel, Field, ValidationError


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


def main():
    if len(sys.argv) >= 3 and sys.argv[1] == "schema":
        with open(sys.argv[2], "w", encoding="utf-8") as f:
            json.dump(Order.model_json_schema(), f)
        return 0
    if len(sys.argv) < 4 or sys.argv[1] != "check":
        print(__doc__, file=sys.stderr)
        return 2
    prompt, refused = sys.argv[2], 0
    for path in sys.argv[3:]:
        text = open(path, encoding="utf-8").read()[len(prompt):].strip()
        try:
            json.loads(text)
        except ValueError as e:
            print(f"{path}: not JSON (a cut answer?): {e}")
            continue
        try:
            order = Order.model_validate_json(text)
            print(f"{path}: ok {order.model_dump_json()[:160]}")
        except ValidationError as e:
            refused += 1
            print(f"{path}: REFUSED {e.errors()}")
    return 1 if refused else 0


if __name__ == "__main__":
    sys.exit(main())
