"""Reads a sakura Delta table with tools that are not sakura: the `deltalake` package opens it,
and DuckDB reads exactly the Parquet files the Delta log lists (replayed here from the JSON
commits, independently of any Delta library).

Usage: delta_check.py TABLE_URI [S3_ENDPOINT]
  TABLE_URI: a local directory, or s3://bucket/prefix/table with S3_ENDPOINT (any keys).
Prints one JSON line with the counts each tool sees.
"""
import json
import os
import sys
import tempfile

import duckdb
from deltalake import DeltaTable


def log_files(uri: str, endpoint: str | None):
    """(list of (name, bytes) of _delta_log/*.json, reader of table-relative paths)."""
    if uri.startswith("s3://"):
        import boto3

        bucket, _, prefix = uri[5:].partition("/")
        prefix = prefix.rstrip("/")
        s3 = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="test",
                          aws_secret_access_key="test", region_name="us-east-1")
        pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=f"{prefix}/_delta_log/")
        keys = sorted(o["Key"] for p in pages for o in p.get("Contents", []) if o["Key"].endswith(".json"))
        logs = [(k, s3.get_object(Bucket=bucket, Key=k)["Body"].read()) for k in keys]

        def read(rel: str) -> bytes:
            return s3.get_object(Bucket=bucket, Key=f"{prefix}/{rel}")["Body"].read()

        return logs, read
    log_dir = os.path.join(uri, "_delta_log")
    names = sorted(n for n in os.listdir(log_dir) if n.endswith(".json"))
    logs = [(n, open(os.path.join(log_dir, n), "rb").read()) for n in names]

    def read(rel: str) -> bytes:
        return open(os.path.join(uri, rel), "rb").read()

    return logs, read


def active_files(logs) -> list[str]:
    from urllib.parse import unquote

    files: dict[str, int] = {}
    for _, data in logs:
        for line in data.decode().splitlines():
            if not line.strip():
                continue
            action = json.loads(line)
            if "add" in action:
                files[unquote(action["add"]["path"])] = action["add"]["size"]
            elif "remove" in action:
                files.pop(unquote(action["remove"]["path"]), None)
    return sorted(files)


def main(uri: str, endpoint: str | None) -> None:
    options = None
    if uri.startswith("s3://"):
        options = {
            "AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
            "AWS_REGION": "us-east-1", "AWS_ALLOW_HTTP": "true", "AWS_S3_ALLOW_UNSAFE_RENAME": "true",
        }
    dt = DeltaTable(uri, storage_options=options)
    deltalake_rows = dt.to_pyarrow_dataset().count_rows()

    logs, read = log_files(uri, endpoint)
    files = active_files(logs)
    with tempfile.TemporaryDirectory() as tmp:
        local = []
        for i, rel in enumerate(files):
            path = os.path.join(tmp, f"{i}.parquet")
            with open(path, "wb") as f:
                f.write(read(rel))
            local.append(path)
        con = duckdb.connect()
        if local:
            rows, pairs = con.execute(
                "SELECT count(*), count(DISTINCT (_partition, _offset)) FROM read_parquet(?)", [local]
            ).fetchone()
        else:
            rows, pairs = 0, 0
    print(json.dumps({
        "deltalake_rows": deltalake_rows,
        "deltalake_version": dt.version(),
        "log_commits": len(logs),
        "files": len(files),
        "duckdb_rows": rows,
        "duckdb_distinct_pairs": pairs,
    }))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else None)
