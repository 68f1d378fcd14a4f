"""Seeded input generation for the fuzz tests (tests/test_fuzz.py).

Values follow a JSON schema (a method's params model, a route's body) most
of the time, so calls get past the first check and reach the services,
and are replaced by hostile ones often: NUL characters, numbers past 64
bits, path tricks, wrong types, huge and deeply nested values, unknown
fields. ``BEADHUB_FUZZ_SEED`` picks the sequence (the failure message
names it); ``BEADHUB_FUZZ_SECONDS`` how long each test runs (a few
seconds in ``make test``, minutes under ``make fuzz``).
"""

from __future__ import annotations

import os
import random
from typing import Any

import asyncpg

SEED = int(os.environ.get("BEADHUB_FUZZ_SEED", "15"))
SECONDS = float(os.environ.get("BEADHUB_FUZZ_SECONDS", "3"))

NASTY: list[Any] = [
    "\x00",
    "a\x00b",
    "bob\x00",
    2**63,
    -(2**63) - 1,
    2**64 + 1,
    2**31,
    -(2**31) - 1,
    9.9e307,
    -1,
    0,
    0.5,
    "",
    " ",
    "\t\n",
    "..",
    "../x",
    "..\\x",
    "a\\..\\..\\x",
    "C:\\x",
    "/etc/passwd",
    "src/\x01x",
    "x\x1f",
    "\u202e\u0301",
    "\U0001f600" * 50,
    "x" * 300,
    "y" * 70_000,
    "' OR 1=1 --",
    "%s%n",
    "null",
    "00000000-0000-0000-0000-000000000000",
    "not-a-uuid",
    None,
    True,
    [],
    {},
    [None],
    {"\x00key": 1},
    {"a": {"b": {"c": [1, {"d": "\x00"}]}}},
]


def deep(depth: int) -> Any:
    value: Any = "bottom"
    for _ in range(depth):
        value = [value]
    return value


class Generator:
    def __init__(self, seed: int, known: dict[str, list[Any]]) -> None:
        self.rnd = random.Random(seed)
        #: Real values (aliases, ids) that let calls reach deeper code.
        self.known = known
        #: How often a value is replaced by a nasty one while generating.
        self.chaos = 0.15

    def nasty(self) -> Any:
        if self.rnd.random() < 0.05:
            return deep(self.rnd.choice([50, 400]))
        return self.rnd.choice(NASTY)

    def value(self, schema: dict[str, Any], defs: dict[str, Any], name: str = "") -> Any:
        if self.rnd.random() < self.chaos:
            return self.nasty()
        if name in self.known and self.rnd.random() < 0.6:
            return self.rnd.choice(self.known[name])
        if "$ref" in schema:
            return self.value(defs.get(schema["$ref"].rsplit("/", 1)[-1], {}), defs, name)
        for key in ("anyOf", "oneOf"):
            if key in schema:
                return self.value(self.rnd.choice(schema[key]), defs, name)
        if "enum" in schema:
            return self.rnd.choice(schema["enum"])
        if "const" in schema:
            return schema["const"]
        kind = schema.get("type")
        if isinstance(kind, list):
            kind = self.rnd.choice(kind)
        if kind == "string":
            return self.string(schema, name)
        if kind == "integer":
            low = schema.get("minimum", -5)
            high = schema.get("maximum", low + 1000)
            return self.rnd.randint(int(low), int(min(high, low + 10_000)))
        if kind == "number":
            return self.rnd.uniform(0, 5)
        if kind == "boolean":
            return self.rnd.random() < 0.5
        if kind == "null":
            return None
        if kind == "array":
            items = schema.get("items", {})
            count = self.rnd.randint(schema.get("minItems", 0), min(schema.get("maxItems", 4), 4))
            return [self.value(items, defs, name) for _ in range(count)]
        if kind == "object" or "properties" in schema:
            return self.object(schema, defs)
        return self.nasty()

    def string(self, schema: dict[str, Any], name: str) -> str:
        if "path" in name or name in ("paths", "prefix", "resource_key"):
            return self.rnd.choice(["src/a.py", "src/**", "docs/", "./x//y", "a/../b", "x"])
        low = schema.get("minLength", 1)
        high = min(schema.get("maxLength", 24), 24)
        letters = "abcdefghijklmnopqrstuvwxyz0123456789-_."
        size = self.rnd.randint(low, max(low, high))
        return "".join(self.rnd.choice(letters) for _ in range(size)) or "a"

    def object(self, schema: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = {}
        required = set(schema.get("required", []))
        for key, prop in (schema.get("properties") or {}).items():
            wanted = 0.93 if key in required else 0.5
            if self.rnd.random() < wanted:
                result[key] = self.value(prop, defs, key)
        if self.rnd.random() < 0.1:
            result[self.rnd.choice(["typo", "Paths", "\x00", "prefx"])] = self.nasty()
        return result

    def params(self, schema: dict[str, Any]) -> dict[str, Any]:
        """Half the time a well-formed object with exactly one value made
        nasty (so the fault reaches the code behind the first check), else
        well-formed or chaotic throughout."""
        mode = self.rnd.random()
        self.chaos = 0.0 if mode < 0.7 else 0.15
        value = self.object(schema, schema.get("$defs", {}))
        self.chaos = 0.15
        if mode < 0.5 and value:
            self._mutate_one(value)
        # A wait would hold the fuzzer for minutes without testing anything.
        for key in ("wait", "wait_seconds", "timeout_seconds"):
            if key in value and not isinstance(value[key], bool):
                value[key] = 0
        return value

    def _mutate_one(self, value: dict[str, Any]) -> None:
        key = self.rnd.choice(sorted(value))
        target: Any = value
        while isinstance(target[key], (dict, list)) and target[key] and self.rnd.random() < 0.5:
            target = target[key]
            keys = sorted(target) if isinstance(target, dict) else range(len(target))
            key = self.rnd.choice(keys)
        target[key] = self.nasty()


async def project_tables(conn: asyncpg.Connection) -> list[str]:
    rows = await conn.fetch(
        "SELECT table_name FROM information_schema.columns "
        "WHERE column_name = 'project_id' AND table_schema = 'public' ORDER BY table_name"
    )
    return [r["table_name"] for r in rows]


def _digest_sql(table: str) -> str:
    if table == "reservations":
        return ""  # they expire by themselves
    row = "md5(t::text)"
    where = "t.project_id = $1"
    if table == "agents":
        row = "md5((t.id, t.alias, t.role, t.deleted_at)::text)"  # not liveness
    if table == "mail_deliveries":
        # Pushed and opened are noted in memory and written in batches later
        # (hub/services/delivery.py), whatever call is running then.
        row = "md5((to_jsonb(t) - 'pushed_at' - 'opened_at')::text)"
    if table == "api_keys":
        # A key's use is noted in memory and written in batches too
        # (hub/services/key_use.py): a refused call still used the key.
        row = "md5((to_jsonb(t) - 'last_used_at')::text)"
    if table == "events":
        # Timers announce expiries and lapsed heartbeats by themselves.
        where += " AND t.type NOT IN ('reservation.expired', 'presence')"
    return (
        f"SELECT '{table}' AS name, count(*) AS n, "
        f"md5(string_agg({row}, ',' ORDER BY {row})) AS digest FROM {table} t WHERE {where}"
    )


async def fingerprint(conn: asyncpg.Connection, tables: list[str], project_id: str) -> dict:
    """Rows per table of the project and a digest of them (liveness
    columns and timers' own rows left out): what a refused call must not
    change. One statement."""
    sql = " UNION ALL ".join(filter(None, (_digest_sql(t) for t in tables)))
    rows = await conn.fetch(sql, project_id)
    return {r["name"]: (r["n"], r["digest"]) for r in rows}
