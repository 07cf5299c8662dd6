"""Contender 3: the platform's Python connector pattern, as the seed page has it,
written the way a competent Python author would write it.

The seed's shape: requests + tenacity (retry 429/5xx, exponential backoff), walk
next_page, track the watermark, flush every 500, keep the cursor. The storage:
its own natural-key SQLite tables carrying every platform column (WITHOUT ROWID,
no surrogate ids), one `executemany` per table per flush, upserts with
ON CONFLICT on the natural key, the location's addresses deleted and
re-inserted, at most 1000 suppliers per transaction, WAL + synchronous=NORMAL.
`--since` absent: an incremental run from the stored cursor.
Prints {"rows": N, "seconds": S}.
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
FLUSH_EVERY = 500
PER_TRANSACTION = 1000

SCHEMA = """
CREATE TABLE IF NOT EXISTS supplier (
    customer_number           TEXT NOT NULL,
    supplier_number           TEXT NOT NULL,
    organization_code         TEXT NOT NULL,
    supplier_name             TEXT NOT NULL,
    alternative_supplier_name TEXT,
    supplier_type             TEXT,
    is_active                 INTEGER NOT NULL,
    custom_field_1            TEXT,
    custom_field_2            TEXT,
    custom_field_3            TEXT,
    custom_field_4            TEXT,
    custom_field_5            TEXT,
    created_at                TEXT NOT NULL,
    updated_at                TEXT NOT NULL,
    PRIMARY KEY (customer_number, supplier_number, organization_code)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS supplier_location (
    customer_number            TEXT NOT NULL,
    supplier_number            TEXT NOT NULL,
    supplier_organization_code TEXT NOT NULL,
    location_code              TEXT NOT NULL,
    location_name              TEXT,
    organization_code          TEXT,
    default_currency_code      TEXT,
    default_payment_term_code  TEXT,
    default_payment_method     TEXT,
    taxpayer_id                TEXT,
    duns_number                TEXT,
    is_active                  INTEGER NOT NULL,
    custom_field_1             TEXT,
    custom_field_2             TEXT,
    custom_field_3             TEXT,
    custom_field_4             TEXT,
    custom_field_5             TEXT,
    created_at                 TEXT NOT NULL,
    updated_at                 TEXT NOT NULL,
    PRIMARY KEY (customer_number, supplier_number, supplier_organization_code, location_code)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS supplier_address (
    customer_number            TEXT NOT NULL,
    supplier_number            TEXT NOT NULL,
    supplier_organization_code TEXT NOT NULL,
    location_code              TEXT NOT NULL,
    position                   INTEGER NOT NULL,
    street                     TEXT,
    city                       TEXT,
    state                      TEXT,
    postal_code                TEXT,
    country_code               TEXT,
    custom_field_1             TEXT,
    custom_field_2             TEXT,
    custom_field_3             TEXT,
    PRIMARY KEY (customer_number, supplier_number, supplier_organization_code, location_code, position)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS sync_state (
    customer_number TEXT NOT NULL,
    connector_name  TEXT NOT NULL,
    stream_name     TEXT NOT NULL,
    cursor          TEXT NOT NULL,
    updated_at      TEXT NOT NULL,
    PRIMARY KEY (customer_number, connector_name, stream_name)
) WITHOUT ROWID;
"""

UPSERT_SUPPLIER = """
INSERT INTO supplier (customer_number, supplier_number, organization_code, supplier_name,
    alternative_supplier_name, supplier_type, is_active, custom_field_1, custom_field_2, custom_field_3,
    custom_field_4, custom_field_5, created_at, updated_at)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (customer_number, supplier_number, organization_code) DO UPDATE SET
    supplier_name = excluded.supplier_name, alternative_supplier_name = excluded.alternative_supplier_name,
    supplier_type = excluded.supplier_type, is_active = excluded.is_active,
    custom_field_1 = excluded.custom_field_1, custom_field_2 = excluded.custom_field_2,
    custom_field_3 = excluded.custom_field_3, custom_field_4 = excluded.custom_field_4,
    custom_field_5 = excluded.custom_field_5, updated_at = excluded.updated_at"""

UPSERT_LOCATION = """
INSERT INTO supplier_location (customer_number, supplier_number, supplier_organization_code, location_code,
    location_name, organization_code, default_currency_code, default_payment_term_code, default_payment_method,
    taxpayer_id, duns_number, is_active, custom_field_1, custom_field_2, custom_field_3, custom_field_4,
    custom_field_5, created_at, updated_at)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (customer_number, supplier_number, supplier_organization_code, location_code) DO UPDATE SET
    location_name = excluded.location_name, organization_code = excluded.organization_code,
    default_currency_code = excluded.default_currency_code,
    default_payment_term_code = excluded.default_payment_term_code,
    default_payment_method = excluded.default_payment_method, taxpayer_id = excluded.taxpayer_id,
    duns_number = excluded.duns_number, is_active = excluded.is_active,
    custom_field_1 = excluded.custom_field_1, custom_field_2 = excluded.custom_field_2,
    custom_field_3 = excluded.custom_field_3, custom_field_4 = excluded.custom_field_4,
    custom_field_5 = excluded.custom_field_5, updated_at = excluded.updated_at"""

DELETE_ADDRESSES = """
DELETE FROM supplier_address
WHERE customer_number = ? AND supplier_number = ? AND supplier_organization_code = ? AND location_code = ?"""

INSERT_ADDRESS = """
INSERT INTO supplier_address (customer_number, supplier_number, supplier_organization_code, location_code,
    position, street, city, state, postal_code, country_code, custom_field_1, custom_field_2, custom_field_3)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"""

SAVE_CURSOR = """
INSERT INTO sync_state (customer_number, connector_name, stream_name, cursor, updated_at)
VALUES (?, ?, ?, ?, ?)
ON CONFLICT (customer_number, connector_name, stream_name) DO UPDATE SET
    cursor = excluded.cursor, updated_at = excluded.updated_at"""


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


def map_supplier(ext, now):
    """Acme row -> (supplier row, MAIN location row, its one address row), the
    location and address None when the row has no address. Columns Acme has no
    value for are NULL."""
    number = str(ext["number"])
    supplier = (CUSTOMER, number, "", ext["name"], None, None, 1 if ext.get("active", True) else 0,
                None, None, None, None, None, now, now)
    address = ext.get("address")
    if not address:
        return supplier, None, None
    location = (CUSTOMER, number, "", "MAIN", "Headquarters", None, None, None, None, None, None, 1,
                None, None, None, None, None, now, now)
    address = (CUSTOMER, number, "", "MAIN", 0, address.get("street") or "", address.get("city") or "",
               None, None, address.get("country") or "XX", None, None, None)
    return supplier, location, address


def save_all(conn, queue):
    """Upsert the queue: one executemany per table, at most 1000 suppliers per transaction."""
    for start in range(0, len(queue), PER_TRANSACTION):
        chunk = queue[start:start + PER_TRANSACTION]
        locations = [location for _, location, _ in chunk if location]
        with conn:
            conn.executemany(UPSERT_SUPPLIER, [supplier for supplier, _, _ in chunk])
            conn.executemany(UPSERT_LOCATION, locations)
            conn.executemany(DELETE_ADDRESSES, [location[:4] for location in locations])
            conn.executemany(INSERT_ADDRESS, [address for _, _, address in chunk if address])
    queue.clear()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--api-url", required=True)
    ap.add_argument("--token", required=True)
    ap.add_argument("--db", required=True)
    ap.add_argument("--page-size", type=int, default=200)
    ap.add_argument("--since", help="since_override; the stored cursor when absent")
    args = ap.parse_args()
    started = time.perf_counter()

    conn = sqlite3.connect(args.db)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.executescript(SCHEMA)
    row = conn.execute(
        "SELECT cursor FROM sync_state WHERE customer_number=? AND connector_name=? AND stream_name=?",
        (CUSTOMER, CONNECTOR, STREAM),
    ).fetchone()
    since = args.since or (row[0] if row else
                           (datetime.now(timezone.utc) - timedelta(days=7)).strftime("%Y-%m-%dT%H:%M:%SZ"))

    now = datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
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
            queue.append(map_supplier(ext, now))
            count += 1
            if len(queue) >= FLUSH_EVERY:
                save_all(conn, queue)
        next_page = body.get("next_page")
        if not next_page:
            break
        page = next_page
    save_all(conn, queue)
    cursor = watermark.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")
    with conn:
        conn.execute(SAVE_CURSOR, (CUSTOMER, CONNECTOR, STREAM, cursor, now))
    conn.close()
    print(json.dumps({"rows": count, "seconds": round(time.perf_counter() - started, 4)}))


if __name__ == "__main__":
    main()
