"""Runs SQL statements through the unmodified ADBC Flight SQL driver and prints the results.

Usage: adbc_query.py grpc://HOST:PORT TABLE SQL [SQL ...]
Prints one JSON line: {"columns": {name: arrow type} of TABLE (schema raw) as
adbc_get_table_schema reports it, "results": [rows of each statement, each row a list]}.
"""
import json
import sys

import adbc_driver_flightsql.dbapi as flightsql


def main(uri: str, table: str, statements: list[str]) -> None:
    with flightsql.connect(uri) as conn:
        schema = conn.adbc_get_table_schema(table, catalog_filter="sakura", db_schema_filter="raw")
        results = []
        with conn.cursor() as cur:
            for sql in statements:
                cur.execute(sql)
                results.append([list(row) for row in cur.fetchall()])
    print(json.dumps({
        "columns": {f.name: str(f.type) for f in schema},
        "results": results,
    }, default=str))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3:])
