"""Attacks on a running sakura, with unmodified pyarrow.flight and ADBC clients, for the security
tests. Each mode prints one JSON object.

Usage:
  security_probe.py chains URI TOKEN SHAPES_FILE
      SHAPES_FILE: a JSON file {"name": "SQL"} (statements too long for a command line). Sends each statement three ways — GetFlightInfo (ADBC's
      execute), DoGet of a hand-made statement ticket, and CreatePreparedStatement — and reports
      "<STATUS>: <message>" or "v:<first value>" for each: {"name": {"info": …, "ticket": …,
      "prepare": …}}.
  security_probe.py prepared URI TOKEN SQL ROWS
      Binds ROWS parameter rows (one int64 column) to SQL with DoPut and runs it (GetFlightInfo,
      DoGet); then sends a hand-made handle carrying ROWS rows straight to DoGet. Reports the
      outcome and seconds of each: {"bind": …, "bind_s": …, "run": …, "run_s": …, "forged": …,
      "forged_s": …}.
  security_probe.py disconnect URI TOKEN SQL ROWS
      Binds ROWS rows (must be allowed), reads the first batch of the result, then cancels the
      stream and closes the connection: {"first_batch_rows": n}.
  security_probe.py concurrently URI TOKEN N SQL
      Runs SQL on N connections at once: {"outcomes": [...]}.
  security_probe.py logins URI USER PASSWORD N
      Times N handshakes each of: the known user with a wrong password, an unknown user:
      {"known_wrong_s": [...], "unknown_s": [...], "known_wrong": outcome, "unknown": outcome}.
  security_probe.py starve URI USER TOKEN ATTACKERS SECONDS
      ATTACKERS threads send wrong passwords for USER for SECONDS seconds while the main thread
      runs a small query with TOKEN over and over: {"query_s": [...], "query_errors": [...],
      "attempts": n, "refused_busy": n, "refused_password": n}.
"""
import json
import statistics
import sys
import threading
import time

import adbc_driver_flightsql.dbapi as flightsql
import pyarrow as pa
import pyarrow.flight as flight

from pyarrow_client import any_command, field_bytes, varint


def status(e: Exception) -> str:
    name = type(e).__name__
    code = {
        "FlightUnauthenticatedError": "UNAUTHENTICATED",
        "FlightUnauthorizedError": "PERMISSION_DENIED",
        "FlightTimedOutError": "DEADLINE_EXCEEDED",
        "FlightCancelledError": "CANCELLED",
        "FlightUnavailableError": "UNAVAILABLE",
        "FlightInternalError": "INTERNAL",
    }.get(name)
    text = str(e)
    if code is None:
        # pyarrow names INVALID_ARGUMENT etc. in the message: "… Detail: InvalidArgument" or
        # as an ArrowInvalid; the Go driver (ADBC) in "(InvalidArgument; …)".
        for grpc, upper in [("InvalidArgument", "INVALID_ARGUMENT"),
                            ("ResourceExhausted", "RESOURCE_EXHAUSTED"),
                            ("Unimplemented", "UNIMPLEMENTED"),
                            ("NotFound", "NOT_FOUND"),
                            ("DeadlineExceeded", "DEADLINE_EXCEEDED"),
                            ("PermissionDenied", "PERMISSION_DENIED"),
                            ("Unauthenticated", "UNAUTHENTICATED"),
                            ("Unavailable", "UNAVAILABLE"),
                            ("Internal", "INTERNAL")]:
            if grpc in text or upper in text:
                code = upper
                break
        if code is None and name in ("ArrowInvalid", "FlightServerError"):
            code = "INVALID_ARGUMENT" if name == "ArrowInvalid" else "SERVER_ERROR"
        if code is None:
            code = name
    return f"{code}: {text.splitlines()[0][:300]}"


def options(token: str, timeout=None):
    return flight.FlightCallOptions(headers=[(b"authorization", f"Bearer {token}".encode())],
                                    timeout=timeout)


def first_value(table) -> str:
    if table.num_rows == 0:
        return "v:None"
    return f"v:{table.column(0)[0].as_py()}"


def prepared_handle(client, opts, sql: str) -> bytes:
    body = any_command("ActionCreatePreparedStatementRequest", field_bytes(1, sql.encode()))
    results = list(client.do_action(flight.Action("CreatePreparedStatement", body), opts))
    # Any{type_url, value: ActionCreatePreparedStatementResult{1: handle, …}}
    return decode_field(decode_field(results[0].body.to_pybytes(), 2), 1)


def decode_field(message: bytes, number: int) -> bytes:
    """The first length-delimited field `number` of a protobuf message."""
    i = 0
    while i < len(message):
        key, i = read_varint(message, i)
        wire = key & 7
        if wire == 2:
            n, i = read_varint(message, i)
            if key >> 3 == number:
                return message[i:i + n]
            i += n
        elif wire == 0:
            _, i = read_varint(message, i)
        else:
            raise ValueError(f"unexpected wire type {wire}")
    return b""


def read_varint(data: bytes, i: int):
    shift = value = 0
    while True:
        b = data[i]
        i += 1
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value, i
        shift += 7


def bind(client, opts, handle: bytes, rows: int) -> bytes:
    command = any_command("CommandPreparedStatementQuery", field_bytes(1, handle))
    table = pa.table({"$1": pa.array(range(rows), type=pa.int64())})
    writer, reader = client.do_put(flight.FlightDescriptor.for_command(command), table.schema, opts)
    writer.write_table(table, max_chunksize=65536)
    writer.done_writing()
    answer = reader.read()
    writer.close()
    # DoPutPreparedStatementResult{1: handle}
    bound = decode_field(answer.to_pybytes(), 1) if answer is not None else b""
    return bound or handle


def run_prepared(client, opts, handle: bytes):
    command = any_command("CommandPreparedStatementQuery", field_bytes(1, handle))
    info = client.get_flight_info(flight.FlightDescriptor.for_command(command), opts)
    return client.do_get(info.endpoints[0].ticket, opts)


def forged_ticket(sql: str, rows: int) -> flight.Ticket:
    sink = pa.BufferOutputStream()
    table = pa.table({"$1": pa.array(range(rows), type=pa.int64())})
    with pa.ipc.new_stream(sink, table.schema) as w:
        w.write_table(table)
    handle = (field_bytes(1, sql.encode()) + field_bytes(2, sink.getvalue().to_pybytes())
              + field_bytes(3, b"forged") + varint((4 << 3) | 0) + varint(1))
    return flight.Ticket(any_command("TicketStatementQuery", field_bytes(1, handle)))


def timed(fn):
    start = time.monotonic()
    try:
        out = fn()
    except Exception as e:  # the outcome is what is reported
        out = status(e)
    return out, round(time.monotonic() - start, 3)


def chains(uri: str, token: str, shapes_file: str) -> None:
    with open(shapes_file) as f:
        shapes = json.load(f)
    client = flight.FlightClient(uri)
    opts = options(token)
    kwargs = {"adbc.flight.sql.authorization_header": f"Bearer {token}"}
    out = {}
    with flightsql.connect(uri, db_kwargs=kwargs) as conn:
        for name, sql in shapes.items():
            r = {}
            try:
                with conn.cursor() as cur:
                    cur.execute(sql)
                    rows = cur.fetchall()
                    r["info"] = f"v:{rows[0][0] if rows else None}"
            except Exception as e:
                r["info"] = status(e)
            ticket = flight.Ticket(any_command(
                "TicketStatementQuery", field_bytes(1, field_bytes(1, sql.encode()))))
            r["ticket"], _ = timed(lambda: first_value(client.do_get(ticket, opts).read_all()))
            r["prepare"], _ = timed(lambda: (prepared_handle(client, opts, sql), "prepared")[1])
            out[name] = r
    print(json.dumps(out))


def prepared(uri: str, token: str, sql: str, rows: str) -> None:
    rows = int(rows)
    client = flight.FlightClient(uri)
    opts = options(token)
    handle = prepared_handle(client, opts, sql)
    out = {}
    bound, out["bind_s"] = timed(lambda: bind(client, opts, handle, rows))
    out["bind"] = bound if isinstance(bound, str) else "ok"
    if isinstance(bound, bytes):
        out["run"], out["run_s"] = timed(
            lambda: first_value(run_prepared(client, opts, bound).read_all()))
    out["forged"], out["forged_s"] = timed(
        lambda: first_value(client.do_get(forged_ticket(sql, rows), opts).read_all()))
    print(json.dumps(out))


def disconnect(uri: str, token: str, sql: str, rows: str) -> None:
    client = flight.FlightClient(uri)
    opts = options(token)
    handle = bind(client, opts, prepared_handle(client, opts, sql), int(rows))
    reader = run_prepared(client, opts, handle)
    chunk = reader.read_chunk()
    reader.cancel()
    client.close()
    print(json.dumps({"first_batch_rows": chunk.data.num_rows}))


def concurrently(uri: str, token: str, n: str, sql: str) -> None:
    outcomes = [None] * int(n)

    def one(i):
        kwargs = {"adbc.flight.sql.authorization_header": f"Bearer {token}"}
        try:
            with flightsql.connect(uri, db_kwargs=kwargs) as conn, conn.cursor() as cur:
                cur.execute(sql)
                outcomes[i] = f"v:{cur.fetchall()[0][0]}"
        except Exception as e:
            outcomes[i] = status(e)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(int(n))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print(json.dumps({"outcomes": outcomes}))


def handshake(uri: str, user: str, password: str):
    client = flight.FlightClient(uri)
    try:
        client.authenticate_basic_token(user, password)
        return "ok"
    finally:
        client.close()


def logins(uri: str, user: str, password: str, n: str) -> None:
    out = {"known_wrong_s": [], "unknown_s": []}
    for _ in range(int(n)):
        out["known_wrong"], s = timed(lambda: handshake(uri, user, password + "x"))
        out["known_wrong_s"].append(s)
        out["unknown"], s = timed(lambda: handshake(uri, "nobody-" + user, password + "x"))
        out["unknown_s"].append(s)
    out["known_wrong_median_s"] = statistics.median(out["known_wrong_s"])
    out["unknown_median_s"] = statistics.median(out["unknown_s"])
    print(json.dumps(out))


def starve(uri: str, user: str, token: str, attackers: str, seconds: str) -> None:
    stop = time.monotonic() + float(seconds)
    counts = {"attempts": 0, "refused_busy": 0, "refused_password": 0, "other": []}
    lock = threading.Lock()

    def attack():
        while time.monotonic() < stop:
            outcome, _ = timed(lambda: handshake(uri, user, "wrong"))
            with lock:
                counts["attempts"] += 1
                if outcome.startswith("RESOURCE_EXHAUSTED") or "retry later" in outcome:
                    counts["refused_busy"] += 1
                elif "wrong password" in outcome:
                    counts["refused_password"] += 1
                elif len(counts["other"]) < 5:
                    counts["other"].append(outcome)

    threads = [threading.Thread(target=attack) for _ in range(int(attackers))]
    for t in threads:
        t.start()
    client = flight.FlightClient(uri)
    opts = options(token)
    query = any_command("CommandStatementQuery", field_bytes(1, b"SELECT count(*) FROM raw.telemetry"))
    query_s, errors = [], []
    time.sleep(0.5)
    while time.monotonic() < stop - 0.5:
        def q():
            info = client.get_flight_info(flight.FlightDescriptor.for_command(query), opts)
            return first_value(client.do_get(info.endpoints[0].ticket, opts).read_all())
        outcome, s = timed(q)
        query_s.append(s)
        if not outcome.startswith("v:"):
            errors.append(outcome)
    for t in threads:
        t.join()
    print(json.dumps({"query_s": query_s, "query_errors": errors[:5], **counts}))


if __name__ == "__main__":
    mode, args = sys.argv[1], sys.argv[2:]
    {"chains": chains, "prepared": prepared, "disconnect": disconnect,
     "concurrently": concurrently, "logins": logins, "starve": starve}[mode](*args)
