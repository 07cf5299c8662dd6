"""A Nuntiq connector: pulls the suppliers changed since the last run from
GET {api_url}/suppliers?updated_after=...&page=N&per_page=M
({"data": [{"id", "name", "active", "updated_at"}], "next_page": N | null}),
upserts them, and commits the newest updated_at as the stream's cursor.

Start here: change fetch_page, read and the URL to your API; pytest runs
tests/test_app.py against the fixtures; build.py builds connector.wasm.
"""
from datetime import datetime, timedelta, timezone

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


def stamp(text):
    at = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if at.tzinfo is None:
        raise ValueError(f"updated_at {text!r} has no time zone")
    return at


def iso(at):
    return at.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def read(row):
    """A row -> (updated_at, supplier); raises ValueError for a row that cannot be read."""
    try:
        updated_at = stamp(row["updated_at"])
    except (KeyError, TypeError, ValueError):
        raise ValueError(f"updated_at {row.get('updated_at')!r} is not a timestamp")
    if not row.get("id") or not row.get("name"):
        raise ValueError("id and name are required")
    return updated_at, record(supplier_load.Supplier, supplier_number=str(row["id"]), supplier_name=row["name"],
                              is_active=row.get("active", True), locations=[])


class WitWorld(wit_world.WitWorld):
    def run(self) -> str:
        connector, api_url = settings()
        page_size = setting(context.get_config("page_size")) or 100
        load = Load()

        def work(run):
            now = datetime.now(timezone.utc)
            lower = run.lower_bound_cursor()
            override = setting(context.get_param("since_override"))
            if override:
                since = stamp(override)
            elif lower:
                since = stamp(lower) - timedelta(seconds=1)  # re-read the cursor's own second
            else:
                since = now - timedelta(days=setting(context.get_param("lookback_days")) or 7)
            cursor, fetched, page = stamp(lower) if lower else since, 0, 1
            while page:
                body = get(f"{api_url}/suppliers",
                           [("updated_after", iso(since)), ("page", str(page)), ("per_page", str(page_size))])
                for row in body.get("data") or []:
                    fetched += 1
                    try:
                        updated_at, supplier = read(row)
                    except ValueError as e:
                        run.reject(json.dumps(row), f"page {page}: {e}")  # set aside, not a failed run
                        continue
                    load.add(supplier)
                    if cursor < updated_at <= now:  # never past the moment this run began
                        cursor = updated_at
                page = body.get("next_page")
            load.queue()  # written by complete(), with the cursor
            run.set_new_cursor(iso(cursor))
            run.set_records_processed(fetched)
            return {"connector_name": connector, "fetched": fetched, "cursor_committed": iso(cursor)}

        return json.dumps(delta_run(connector, CursorType.TIMESTAMP_UTC, work))
