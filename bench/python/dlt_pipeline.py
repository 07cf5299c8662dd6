"""Contender 4: dlt's rest_api source into DuckDB.

Cursor paginator on `next_page` (passed back as `page`), bearer auth,
incremental `updated_after` on `updated_at`, merge on the supplier number.
Prints {"rows": N, "seconds": S}. Telemetry is off: nothing leaves loopback.
"""
import argparse
import json
import os
import time

os.environ.setdefault("RUNTIME__DLTHUB_TELEMETRY", "false")
os.environ.setdefault("RUNTIME__LOG_LEVEL", "WARNING")

import dlt  # noqa: E402
from dlt.sources.rest_api import rest_api_source  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--api-url", required=True)
    ap.add_argument("--token", required=True)
    ap.add_argument("--db", required=True, help="DuckDB file")
    ap.add_argument("--pipelines-dir", required=True)
    ap.add_argument("--page-size", type=int, default=200)
    ap.add_argument("--since", required=True, help="initial value of updated_after")
    args = ap.parse_args()
    started = time.perf_counter()

    source = rest_api_source({
        "client": {
            "base_url": args.api_url + "/",
            "auth": {"type": "bearer", "token": args.token},
            "paginator": {"type": "cursor", "cursor_path": "next_page", "cursor_param": "page"},
        },
        "resources": [{
            "name": "suppliers",
            "primary_key": "number",
            "write_disposition": "merge",
            "endpoint": {
                "path": "suppliers",
                "data_selector": "data",
                "params": {
                    "per_page": args.page_size,
                    "updated_after": {
                        "type": "incremental",
                        "cursor_path": "updated_at",
                        "initial_value": args.since,
                    },
                },
            },
        }],
    })
    pipeline = dlt.pipeline(
        pipeline_name="acme_bench",
        destination=dlt.destinations.duckdb(args.db),
        dataset_name="acme",
        pipelines_dir=args.pipelines_dir,
    )
    info = pipeline.run(source)
    trace = pipeline.last_trace
    normalized = trace.last_normalize_info.row_counts if trace and trace.last_normalize_info else {}
    count = normalized.get("suppliers", 0)
    info.raise_on_failed_jobs()
    print(json.dumps({"rows": count, "seconds": round(time.perf_counter() - started, 4)}))


if __name__ == "__main__":
    main()
