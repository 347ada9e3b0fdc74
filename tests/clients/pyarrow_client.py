"""Plain pyarrow.flight (no Flight SQL library) against sakura: the Flight SQL commands are
hand-encoded protobuf messages wrapped in google.protobuf.Any, as the spec defines them.

Usage: pyarrow_client.py grpc://HOST:PORT
Prints one JSON line: count(*) of raw.telemetry, the tables GetTables lists, the type names
GetXdbcTypeInfo lists, the row count of GetPrimaryKeys, and what a DoGet of a ticket cancelled
with CancelFlightInfo answers.
"""
import json
import sys

import pyarrow.flight as flight

PREFIX = "type.googleapis.com/arrow.flight.protocol.sql."


def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def field_bytes(number: int, value: bytes) -> bytes:
    return varint((number << 3) | 2) + varint(len(value)) + value


def any_command(name: str, body: bytes) -> bytes:
    return field_bytes(1, (PREFIX + name).encode()) + field_bytes(2, body)


def fetch(client: flight.FlightClient, command: bytes):
    info = client.get_flight_info(flight.FlightDescriptor.for_command(command))
    tables = [client.do_get(ep.ticket).read_all() for ep in info.endpoints]
    return info, tables


def main(uri: str) -> None:
    client = flight.FlightClient(uri)
    query = field_bytes(1, b"SELECT count(*) AS n FROM raw.telemetry")
    info, results = fetch(client, any_command("CommandStatementQuery", query))
    count = results[0].column("n")[0].as_py()
    _, tables = fetch(client, any_command("CommandGetTables", b""))
    listed = sorted(
        f"{r['catalog_name']}.{r['db_schema_name']}.{r['table_name']}"
        for t in tables for r in t.to_pylist()
    )
    _, xdbc = fetch(client, any_command("CommandGetXdbcTypeInfo", b""))
    type_names = sorted(r["type_name"] for t in xdbc for r in t.to_pylist())
    keys_cmd = field_bytes(3, b"telemetry")  # CommandGetPrimaryKeys.table = 3
    _, keys = fetch(client, any_command("CommandGetPrimaryKeys", keys_cmd))
    primary_keys = sum(t.num_rows for t in keys)

    # CancelFlightInfo (a core Flight action): the cancelled ticket is refused afterwards.
    slow = field_bytes(1, b"SELECT count(*) AS n FROM raw.telemetry")
    slow_info = client.get_flight_info(
        flight.FlightDescriptor.for_command(any_command("CommandStatementQuery", slow)))
    request = field_bytes(1, slow_info.serialize())  # CancelFlightInfoRequest.info = 1
    results = list(client.do_action(flight.Action("CancelFlightInfo", request)))
    cancel_status = results[0].body.to_pybytes()  # CancelFlightInfoResult: status = 1
    try:
        client.do_get(slow_info.endpoints[0].ticket).read_all()
        after_cancel = "rows"
    except flight.FlightCancelledError as e:
        after_cancel = "cancelled: " + str(e).splitlines()[0]
    print(json.dumps({
        "count": count,
        "schema": info.schema.names,
        "tables": listed,
        "xdbc_types": type_names,
        "primary_keys": primary_keys,
        "cancel_status": list(cancel_status),
        "after_cancel": after_cancel,
    }))


if __name__ == "__main__":
    main(sys.argv[1])
