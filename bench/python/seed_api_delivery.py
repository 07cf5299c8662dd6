"""The Customer API contender: the platform's Python connector pattern, as the
seed page has it, delivering to Nuntiq the way the platform's SDK does.

requests + tenacity (retry 429/5xx, exponential backoff), walk next_page, track
the watermark; delta-state `begin` first, `SupplierLoad.save_all()`'s shape
(one POST /v1/supplier per 1000 queued suppliers, in the schema's wire names),
then `complete` with the new cursor. One session, one request at a time: what
the SDK's client does. Prints {"rows": N, "seconds": S}.
"""
import argparse
import json
import time
from datetime import datetime, timedelta, timezone

import requests
from tenacity import retry, retry_if_exception_type, stop_after_attempt, wait_exponential

CUSTOMER = "10000001"
CONNECTOR = "acme_eu"
STREAM = "suppliers"
PER_REQUEST = 1000


class TransientHttpError(Exception):
    """Raised for status codes we want tenacity to retry."""


@retry(
    retry=retry_if_exception_type((TransientHttpError, requests.ConnectionError, requests.Timeout)),
    wait=wait_exponential(multiplier=1, min=2, max=30),
    stop=stop_after_attempt(5),
    reraise=True,
)
def call(session, method, url, **kwargs):
    resp = session.request(method, url, timeout=30, **kwargs)
    if resp.status_code in (429, 500, 502, 503, 504):
        raise TransientHttpError(f"{resp.status_code} {resp.text[:200]}")
    resp.raise_for_status()
    return resp.json()


def parse(ts):
    return datetime.fromisoformat(ts.replace("Z", "+00:00"))


def map_supplier(ext):
    """Acme row -> the API's Supplier object."""
    supplier = {
        "supplier_number": str(ext["number"]),
        "supplier_name": ext["name"],
        "is_active": bool(ext.get("active", True)),
    }
    address = ext.get("address")
    if address:
        supplier["supplier_location"] = [{
            "location_code": "MAIN",
            "location_name": "Headquarters",
            "is_active": True,
            "supplier_address": [{
                "street": address.get("street") or "",
                "city": address.get("city") or "",
                "country_code": address.get("country") or "XX",
            }],
        }]
    return supplier


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--api-url", required=True)
    ap.add_argument("--token", required=True)
    ap.add_argument("--nuntiq-url", required=True, help="the Customer API base, …/api")
    ap.add_argument("--nuntiq-key", required=True)
    ap.add_argument("--page-size", type=int, default=200)
    ap.add_argument("--since", help="since_override; the committed cursor when absent")
    args = ap.parse_args()
    started = time.perf_counter()

    nuntiq = requests.Session()
    nuntiq.headers.update({"Authorization": f"Bearer {args.nuntiq_key}", "X-Customer-Number": CUSTOMER})
    stream = f"{args.nuntiq_url}/v1/delta/streams/{CONNECTOR}/{STREAM}"
    state = call(nuntiq, "POST", f"{stream}/begin", json={"cursor_type": "timestamp_utc"})
    since = args.since or state.get("committed_cursor_value") or \
        (datetime.now(timezone.utc) - timedelta(days=7)).strftime("%Y-%m-%dT%H:%M:%SZ")

    source = requests.Session()
    headers = {"Authorization": f"Bearer {args.token}", "Accept": "application/json"}
    watermark = parse(since)
    queue, count, page = [], 0, 1
    while True:
        body = call(source, "GET", f"{args.api_url}/suppliers", headers=headers,
                    params={"updated_after": since, "page": page, "per_page": args.page_size})
        for ext in body.get("data", []):
            ts = parse(ext["updated_at"])
            if ts > watermark:
                watermark = ts
            queue.append(map_supplier(ext))
            count += 1
            if len(queue) >= PER_REQUEST:
                call(nuntiq, "POST", f"{args.nuntiq_url}/v1/supplier", json={"full_load": False, "items": queue})
                queue = []
        next_page = body.get("next_page")
        if not next_page:
            break
        page = next_page
    if queue:
        call(nuntiq, "POST", f"{args.nuntiq_url}/v1/supplier", json={"full_load": False, "items": queue})
    cursor = watermark.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")
    call(nuntiq, "POST", f"{stream}/complete", json={"new_cursor_value": cursor, "records_processed": count})
    print(json.dumps({"rows": count, "seconds": round(time.perf_counter() - started, 4)}))


if __name__ == "__main__":
    main()
