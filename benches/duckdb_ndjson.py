"""The peer of the ingest benchmark: DuckDB converting an NDJSON telemetry file to Parquet.

Usage: duckdb_ndjson.py NDJSON OUT_PARQUET THREADS
Prints the seconds the COPY took (the interpreter's start-up and import are not counted).
"""

import sys
import time

import duckdb


def main() -> None:
    src, out, threads = sys.argv[1], sys.argv[2], int(sys.argv[3])
    con = duckdb.connect()
    con.execute(f"SET threads = {threads}")
    # Explicit column types, as our side has a fixed schema: no sampling pass.
    columns = (
        "{ts: 'BIGINT', host: 'VARCHAR', service: 'VARCHAR', region: 'VARCHAR', "
        "metric: 'VARCHAR', value: 'DOUBLE', labels: 'MAP(VARCHAR, VARCHAR)'}"
    )
    started = time.perf_counter()
    con.execute(
        f"""COPY (
              SELECT make_timestamp(ts) AS ts, host, service, region, metric, value, labels
              FROM read_json('{src}', format = 'newline_delimited', columns = {columns})
            ) TO '{out}' (FORMAT parquet, COMPRESSION snappy)"""
    )
    elapsed = time.perf_counter() - started
    rows = con.execute(f"SELECT count(*) FROM read_parquet('{out}')").fetchone()[0]
    print(f"{elapsed:.6f} {rows}")


if __name__ == "__main__":
    main()
