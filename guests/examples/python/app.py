"""Minimal Nuntiq connector in Python (componentize-py): Acme suppliers, delta by updated_at.

Module `app` (must not be called `wit_world`, the generated bindings package).
"""
import dataclasses
import json
from datetime import datetime, timedelta, timezone

import wit_world
from wit_world.imports import context, delta_state, http, logger, supplier_load, types
from wit_world.imports.delta_state import CursorType, DeltaRun
from componentize_py_types import Err

STREAM = "suppliers"


def _setting(value):
    """types.SettingValue (a variant: one dataclass per case) -> plain Python value."""
    if value is None:
        return None
    if isinstance(value, types.SettingValue_Json):
        return json.loads(value.value)
    return value.value  # Text / Integer / Float / Boolean all carry `.value`


# Fields contract 0.3.0 added: left out when app.py is built against an older contract (make
# check-authors builds it against 0.1.0 too, as connectors written before 0.2.0 were).
_SINCE_0_3 = {"bank_accounts"}


def _record(cls, **given):
    """A WIT record is a dataclass whose fields are all required (no defaults): set the rest to None.

    Also keeps the code independent of 0.1.0's `custom_field_1` vs 0.2.0's `custom_field1`."""
    fields = {f.name for f in dataclasses.fields(cls)}
    given = {k: v for k, v in given.items() if k in fields or k not in _SINCE_0_3}
    return cls(**{f: None for f in fields} | given)


def _locations(row):
    """Acme's address -> one MAIN location with it (none without one). Acme sends no bank accounts:
    `bank_accounts=[]` (a list is required; None is not an empty list)."""
    address = row.get("address")
    if not isinstance(address, dict) or not any(isinstance(address.get(k), str) for k in ("street", "city", "country")):
        return []
    text = lambda key: address.get(key) if isinstance(address.get(key), str) else None  # noqa: E731
    return [_record(
        supplier_load.SupplierLocation, location_code="MAIN", location_name="Headquarters", is_active=True,
        addresses=[_record(supplier_load.SupplierAddress, street=text("street") or "", city=text("city") or "",
                           country_code=text("country") or "XX")],
        bank_accounts=[])]


def _log(level, message, step=None, detail=None):
    logger.log(level, message, step, None if detail is None else json.dumps(detail))


def _err_text(err):
    """A WIT `result` error arrives as componentize_py_types.Err(value); value is a variant case."""
    value = err.value
    inner = getattr(value, "value", value)
    if isinstance(value, http.HttpError_Status):
        inner = f"HTTP {inner.status}: {bytes(inner.body[:200]).decode('utf-8', 'replace')}"
    return f"{type(value).__name__}: {inner}"


def _ts(text):
    at = datetime.fromisoformat(text.replace("Z", "+00:00"))  # keeps the offset; compare as instants
    return at if at.tzinfo else at.replace(tzinfo=timezone.utc)


def _iso(at):
    return at.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class WitWorld(wit_world.WitWorld):
    def run(self) -> str:
        # Ok(str) is the return value; Err(str) is raised as componentize_py_types.Err(str).
        name = _setting(context.get_config("connector_name"))
        api_url = _setting(context.get_config("api_url"))
        page_size = _setting(context.get_config("page_size")) or 200
        lookback = _setting(context.get_param("lookback_days"))
        if not name or not api_url or not context.has_secret("acme_token"):
            raise Err("config.connector_name, config.api_url and secrets.acme_token are required")

        try:
            # `static func begin` -> classmethod returning the resource; result<delta-run, _> raises Err.
            run = DeltaRun.begin(name, STREAM, CursorType.TIMESTAMP_UTC)
        except Err as e:
            raise Err(f"delta begin: {_err_text(e)}")

        # `with` drops the resource handle at the end (DeltaRun.__exit__).
        with run:
            try:
                now = datetime.now(timezone.utc)
                lower = run.lower_bound_cursor()
                # Re-read the cursor's own second: updated_after is strictly after, stamps have 1 s precision.
                if lower:
                    since = _ts(lower) - timedelta(seconds=1)
                else:
                    since = now - timedelta(days=7 if lookback is None else lookback)
                watermark, fetched, page = _ts(lower) if lower else since, 0, 1
                while page:
                    resp = http.get_with_retry(
                        http.Request(
                            url=api_url.rstrip("/") + "/suppliers",
                            query=[("updated_after", _iso(since)), ("page", str(page)), ("per_page", str(page_size))],
                            headers=[("accept", "application/json")],
                            timeout_ms=None,
                            bearer_secret="acme_token",
                        ),
                        None,
                    )
                    body = json.loads(bytes(resp.body))
                    rows = body.get("data") or []
                    _log(logger.Level.INFO, f"Fetched page {page} ({len(rows)} rows)", "fetch", {"page": page, "count": len(rows)})
                    suppliers = []
                    for row in rows:
                        suppliers.append(_record(
                            supplier_load.Supplier, supplier_number=str(row["number"]),
                            supplier_name=row["name"], is_active=row.get("active", True), locations=_locations(row)))
                        watermark = max(watermark, min(_ts(row["updated_at"]), now))
                    if suppliers:
                        supplier_load.queue(suppliers)
                    fetched += len(rows)
                    page = body.get("next_page")
                cursor = _iso(watermark)
                run.set_new_cursor(cursor)
                run.set_records_processed(fetched)
                state = run.complete()  # writes the queue + cursor in one transaction
            except Err as e:
                msg = _err_text(e)
                try:
                    run.fail(msg)
                except Err:
                    pass
                raise Err(msg)
            except Exception as e:  # a Python bug: fail the run with a message instead of trapping
                try:
                    run.fail(repr(e))
                except Err:
                    pass
                raise Err(f"connector error: {e!r}")
        _log(logger.Level.INFO, f"Done: {fetched} suppliers, cursor {cursor}", "done", {"count": fetched})
        return json.dumps({"connector_name": name, "fetched": fetched, "cursor_committed": state.committed_cursor_value})
