"""A Nuntiq connector: reads a change feed, GET {api_url}/suppliers/changes?since=TOKEN
({"data": [{"id", "name", "active"}], "next_token": "...", "has_more": bool};
a first run names no token), upserts what changed, and commits the last
next_token as the stream's opaque cursor. The host requires a committed token
to differ from the last one: this feed hands out a new token on every call.

Start here: change read and the URL to your API; pytest runs tests/test_app.py
against the fixtures; build.py builds connector.wasm.
"""
import dataclasses
import json

import wit_world
from componentize_py_types import Err
from wit_world.imports import context, http, logger, supplier_load, types
from wit_world.imports.delta_state import CursorType, DeltaRun

STREAM = "suppliers"
TOKEN = "api_token"  # the secret the host sends as a bearer token; the connector never sees it
FLUSH_EVERY = 500


def setting(value):
    """A types.SettingValue case -> a plain Python value."""
    if value is None:
        return None
    if isinstance(value, types.SettingValue_Json):
        return json.loads(value.value)
    return value.value


def record(cls, **given):
    """WIT records are dataclasses with every field required: the rest are None."""
    return cls(**{f.name: None for f in dataclasses.fields(cls)} | given)


def err_text(e):
    value = getattr(e, "value", e)
    return str(getattr(value, "value", value))


def get(url, query):
    try:
        response = http.get_with_retry(http.Request(url=url, query=query, headers=[], timeout_ms=None,
                                                     bearer_secret=TOKEN), None)
    except Err as e:
        raise Err(f"GET {url}: {type(e.value).__name__}: {err_text(e)}")
    return json.loads(bytes(response.body))


def delta_run(connector, cursor_type, work):
    """Begin, work(run), complete; on an error the run is failed and the cursor stays."""
    try:
        run = DeltaRun.begin(connector, STREAM, cursor_type)
    except Err as e:
        raise Err(f"delta-state begin: {err_text(e)}")
    with run:
        try:
            result = work(run)
            run.complete()
            return result
        except Exception as e:
            message = err_text(e) if isinstance(e, Err) else f"connector error: {e!r}"
            try:
                run.fail(message)
            except Err:
                pass
            raise Err(message)


def settings():
    connector = setting(context.get_config("connector_name"))
    api_url = setting(context.get_config("api_url"))
    if not connector or not api_url or not context.has_secret(TOKEN):
        raise Err(f"config.connector_name, config.api_url and secrets.{TOKEN} are required")
    return connector, api_url.rstrip("/")


class Load:
    """Suppliers handed to the host in batches; complete() writes the rest with the cursor."""

    def __init__(self):
        self.batch = []

    def add(self, supplier):
        self.batch.append(supplier)
        if len(self.batch) >= FLUSH_EVERY:
            supplier_load.queue(self.batch)
            supplier_load.save_all()
            self.batch = []

    def queue(self):
        if self.batch:
            supplier_load.queue(self.batch)
        self.batch = []


def read(row):
    """A row -> supplier; raises ValueError for a row that cannot be read."""
    if not isinstance(row.get("id"), str) or not isinstance(row.get("name"), str):
        raise ValueError("id and name must be strings")
    active = row.get("active", True)
    if not isinstance(active, bool):
        raise ValueError(f"active {active!r} is not a boolean")
    return record(supplier_load.Supplier, supplier_number=row["id"], supplier_name=row["name"],
                  is_active=active, locations=[])


class WitWorld(wit_world.WitWorld):
    def run(self) -> str:
        connector, api_url = settings()
        load = Load()

        def work(run):
            token, fetched = run.lower_bound_cursor(), 0
            while True:
                body = get(f"{api_url}/suppliers/changes", [("since", token)] if token else [])
                for row in body.get("data") or []:
                    fetched += 1
                    try:
                        load.add(read(row))
                    except ValueError as e:
                        run.reject(json.dumps(row), str(e))  # set aside, not a failed run
                token = body["next_token"]
                if not body.get("has_more"):
                    break
            load.queue()  # written by complete(), with the cursor
            run.set_new_cursor(token)
            run.set_records_processed(fetched)
            return {"connector_name": connector, "fetched": fetched, "cursor_committed": token}

        return json.dumps(delta_run(connector, CursorType.OPAQUE_TOKEN, work))
