"""Unmodified ADBC Flight SQL driver (the Go client Grafana's data source also uses) against sakura.

Usage: adbc_client.py grpc://HOST:PORT
Prints one JSON line: tables listed by adbc_get_objects, count(*) of raw.telemetry, the
columns and types adbc_get_table_schema reports for it, the types of a `SELECT *` result, and the results of prepared statements with bound
parameters (DB-API `?` placeholders).
"""
import json
import sys

import adbc_driver_flightsql.dbapi as flightsql


def main(uri: str) -> None:
    with flightsql.connect(uri) as conn:
        objects = conn.adbc_get_objects(depth="tables").read_all().to_pylist()
        tables = []
        for catalog in objects:
            for schema in catalog["catalog_db_schemas"] or []:
                for table in schema["db_schema_tables"] or []:
                    tables.append(
                        f'{catalog["catalog_name"]}.{schema["db_schema_name"]}.{table["table_name"]}'
                    )
        schema = conn.adbc_get_table_schema("telemetry", catalog_filter="sakura", db_schema_filter="raw")
        with conn.cursor() as cur:
            cur.execute("SELECT count(*) AS n FROM raw.telemetry")
            (count,) = cur.fetchone()
            # The types a result arrives in (clients on older Arrow releases, Grafana's among
            # them, cannot read view types).
            cur.execute("SELECT * FROM raw.telemetry LIMIT 5")
            result_types = {f.name: str(f.type) for f in cur.fetch_arrow_table().schema}
            # A Grafana-style time-bucketed aggregate over a time range.
            cur.execute(
                "SELECT date_bin(INTERVAL '5 minutes', ts) AS time, service, avg(value) AS avg_cpu "
                "FROM raw.telemetry WHERE metric = 'cpu_pct' "
                "AND ts >= now() - INTERVAL '2 days' AND ts <= now() "
                "GROUP BY 1, 2 ORDER BY 1 LIMIT 20"
            )
            buckets = cur.fetchall()
            # Prepared statements: parameters bound through DoPut, executed, re-executed with
            # other values, and the parameter schema the server reports.
            cur.execute("SELECT CAST(? AS BIGINT) + 1 AS x, upper(?) AS s", (41, "abc"))
            constants = list(cur.fetchone())
            per_service = {}
            for service in ("web", "db", "no-such-service"):
                cur.execute(
                    "SELECT count(*) FROM raw.telemetry WHERE service = ? AND value >= ?",
                    (service, 0.0),
                )
                per_service[service] = cur.fetchone()[0]
            params = cur.adbc_prepare("SELECT host FROM raw.telemetry WHERE service = ? LIMIT 1")
            param_schema = [[f.name, str(f.type)] for f in params]
    print(json.dumps({
        "tables": sorted(tables),
        "count": count,
        "schema_fields": schema.names,
        "schema_types": {f.name: str(f.type) for f in schema},
        "result_types": result_types,
        "buckets": len(buckets),
        "prepared_constants": constants,
        "prepared_per_service": per_service,
        "prepared_parameter_schema": param_schema,
    }))


if __name__ == "__main__":
    main(sys.argv[1])
