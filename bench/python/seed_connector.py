"""Contender 3: the platform's Python connector pattern, as the seed page has it.

requests + tenacity (retry 429/5xx, exponential backoff), walk next_page,
track the watermark, flush every 500 — upserting the same nested rows into the
same SQLite schema with sqlite3, 1000 suppliers per transaction, and keeping
the cursor in delta_stream_state. Prints {"rows": N, "seconds": S}.
"""
import argparse
import json
import sqlite3
import time
from datetime import datetime, timedelta, timezone

import requests
from tenacity import retry, retry_if_exception_type, stop_after_attempt, wait_exponential

CUSTOMER = "10000001"
CONNECTOR = "acme_eu"
STREAM = "suppliers"


class TransientHttpError(Exception):
    """Raised for status codes we want tenacity to retry."""


@retry(
    retry=retry_if_exception_type((TransientHttpError, requests.ConnectionError, requests.Timeout)),
    wait=wait_exponential(multiplier=1, min=2, max=30),
    stop=stop_after_attempt(5),
    reraise=True,
)
def http_get(session, url, headers, params):
    resp = session.get(url, headers=headers, params=params, timeout=30)
    if resp.status_code in (429, 500, 502, 503, 504):
        raise TransientHttpError(f"{resp.status_code} {resp.text[:200]}")
    resp.raise_for_status()
    return resp.json()


def parse(ts):
    return datetime.fromisoformat(ts.replace("Z", "+00:00"))


UPSERT_SUPPLIER = """
INSERT INTO supplier (customer_number, supplier_number, organization_code, supplier_name, is_active,
                      created_at, updated_at)
VALUES (?, ?, '', ?, ?, ?, ?)
ON CONFLICT (customer_number, supplier_number, organization_code) DO UPDATE SET
    supplier_name = excluded.supplier_name, is_active = excluded.is_active, updated_at = excluded.updated_at
RETURNING supplier_id"""
UPSERT_LOCATION = """
INSERT INTO supplier_location (supplier_id, location_code, location_name, is_active, created_at, updated_at)
VALUES (?, 'MAIN', 'Headquarters', 1, ?, ?)
ON CONFLICT (supplier_id, location_code) DO UPDATE SET
    location_name = excluded.location_name, is_active = excluded.is_active, updated_at = excluded.updated_at
RETURNING supplier_location_id"""


def save_all(conn, queue):
    """Upsert the queue, 1000 suppliers per transaction (the platform's request size)."""
    now = datetime.now(timezone.utc).isoformat()
    for start in range(0, len(queue), 1000):
        with conn:
            for s in queue[start:start + 1000]:
                (supplier_id,) = conn.execute(
                    UPSERT_SUPPLIER, (CUSTOMER, s["number"], s["name"], 1 if s["active"] else 0, now, now)
                ).fetchone()
                if s["address"]:
                    (location_id,) = conn.execute(UPSERT_LOCATION, (supplier_id, now, now)).fetchone()
                    conn.execute("DELETE FROM supplier_address WHERE supplier_location_id = ?", (location_id,))
                    a = s["address"]
                    conn.execute(
                        "INSERT INTO supplier_address (supplier_location_id, street, city, country_code) VALUES (?, ?, ?, ?)",
                        (location_id, a["street"], a["city"], a["country"]),
                    )
    queue.clear()


def map_supplier(ext):
    address = ext.get("address")
    return {
        "number": ext["number"],
        "name": ext["name"],
        "active": ext.get("active", True),
        "address": {
            "street": address.get("street", ""),
            "city": address.get("city", ""),
            "country": address.get("country", "XX"),
        } if address else None,
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--api-url", required=True)
    ap.add_argument("--token", required=True)
    ap.add_argument("--db", required=True)
    ap.add_argument("--page-size", type=int, default=1000)
    ap.add_argument("--since", help="since_override")
    args = ap.parse_args()
    started = time.perf_counter()

    conn = sqlite3.connect(args.db, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    row = conn.execute(
        "SELECT committed_cursor_value FROM delta_stream_state WHERE customer_number=? AND connector_name=? AND stream_name=?",
        (CUSTOMER, CONNECTOR, STREAM),
    ).fetchone()
    since = args.since or (row[0] if row and row[0] else
                           (datetime.now(timezone.utc) - timedelta(days=7)).strftime("%Y-%m-%dT%H:%M:%SZ"))

    session = requests.Session()
    headers = {"Authorization": f"Bearer {args.token}", "Accept": "application/json"}
    watermark = parse(since)
    queue, count, page = [], 0, 1
    while True:
        body = http_get(session, f"{args.api_url}/suppliers", headers,
                        {"updated_after": since, "page": page, "per_page": args.page_size})
        for ext in body.get("data", []):
            ts = parse(ext["updated_at"])
            if ts > watermark:
                watermark = ts
            queue.append(map_supplier(ext))
            count += 1
            if count % 500 == 0:
                save_all(conn, queue)
        next_page = body.get("next_page")
        if not next_page:
            break
        page = next_page
    save_all(conn, queue)
    cursor = watermark.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S") + "Z"
    with conn:
        conn.execute(
            """INSERT INTO delta_stream_state (customer_number, connector_name, stream_name, cursor_type,
                   committed_cursor_value, status) VALUES (?, ?, ?, 'timestamp_utc', ?, 'succeeded')
               ON CONFLICT (customer_number, connector_name, stream_name) DO UPDATE SET
                   committed_cursor_value = excluded.committed_cursor_value, status = 'succeeded'""",
            (CUSTOMER, CONNECTOR, STREAM, cursor),
        )
    print(json.dumps({"rows": count, "seconds": round(time.perf_counter() - started, 4)}))


if __name__ == "__main__":
    main()
