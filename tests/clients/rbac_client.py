"""Runs queries with the unmodified ADBC Flight SQL driver under a bearer token and reports each
result, for the RBAC tests.

Usage: rbac_client.py grpc://HOST:PORT TOKEN QUERIES_JSON
QUERIES_JSON: {"name": "SQL" | ["SQL with ?", [params]] | {"update": "SQL"}}. Prints one JSON
object: name → the first column of the first row of the whole result ("v:<value>"; for an
update run with the driver's execute_update — a Flight SQL CommandStatementUpdate over DoPut —
the rows it reports), or "<gRPC status>: <message>"; plus "_tables": the tables
adbc_get_objects lists.
"""
import json
import re
import sys

import adbc_driver_flightsql.dbapi as flightsql


def status(e: Exception) -> str:
    """The gRPC status of a driver error: the Go driver names it in a trailing
    "(PermissionDenied; Prepare)" (its own prefix says e.g. UNAUTHORIZED)."""
    text = str(e)
    m = re.search(r"\((\w+); [^)]*\)", text)
    code = re.sub(r"(?<!^)([A-Z])", r"_\1", m.group(1)).upper() if m else type(e).__name__
    return f"{code}: {text.splitlines()[0]}"


def main(uri: str, token: str, queries_json: str) -> None:
    queries = json.loads(queries_json)
    out = {}
    kwargs = {"adbc.flight.sql.authorization_header": f"Bearer {token}"}
    with flightsql.connect(uri, db_kwargs=kwargs) as conn:
        try:
            objects = conn.adbc_get_objects(depth="tables").read_all().to_pylist()
            out["_tables"] = sorted(
                f'{s["db_schema_name"]}.{t["table_name"]}'
                for c in objects for s in c["catalog_db_schemas"] or []
                for t in s["db_schema_tables"] or [])
        except Exception as e:
            out["_tables"] = status(e)
        for name, q in queries.items():
            if isinstance(q, dict):
                try:
                    with conn.cursor() as cur:
                        cur.adbc_statement.set_sql_query(q["update"])
                        out[name] = f"v:{cur.adbc_statement.execute_update()}"
                except Exception as e:
                    out[name] = status(e)
                continue
            sql, params = (q, None) if isinstance(q, str) else q
            try:
                with conn.cursor() as cur:
                    cur.execute(sql, params)
                    rows = cur.fetchall()  # the whole result: limits may end it mid-stream
                    out[name] = f"v:{rows[0][0] if rows else None}"
            except Exception as e:
                out[name] = status(e)
    print(json.dumps(out))


if __name__ == "__main__":
    main(*sys.argv[1:4])
