"""Unmodified pyarrow.flight and ADBC clients against a sakura that requires authentication.

Usage: auth_client.py grpc://HOST:PORT USER PASSWORD API_TOKEN TOKENS_JSON
Tries each way of calling in, good and bad, and prints one JSON object: for each case either
"ok" (the query ran) or "<gRPC status>: <message>".
"""
import json
import sys

import adbc_driver_flightsql.dbapi as flightsql
import pyarrow.flight as flight

from pyarrow_client import any_command, field_bytes

QUERY = any_command("CommandStatementQuery", field_bytes(1, b"SELECT count(*) AS n FROM raw.telemetry"))


def outcome(fn) -> str:
    try:
        fn()
        return "ok"
    except flight.FlightUnauthenticatedError as e:
        return "UNAUTHENTICATED: " + str(e).splitlines()[0]
    except flight.FlightUnauthorizedError as e:
        return "PERMISSION_DENIED: " + str(e).splitlines()[0]
    except flight.FlightError as e:
        return f"{type(e).__name__}: " + str(e).splitlines()[0]
    except Exception as e:  # ADBC's errors
        return f"{type(e).__name__}: " + str(e).splitlines()[0]


def pyarrow_query(client: flight.FlightClient, headers=None):
    options = flight.FlightCallOptions(headers=headers or [])
    info = client.get_flight_info(flight.FlightDescriptor.for_command(QUERY), options)
    client.do_get(info.endpoints[0].ticket, options).read_all()


def bearer(token: str):
    return [(b"authorization", f"Bearer {token}".encode())]


def adbc_query(uri: str, **kwargs):
    with flightsql.connect(uri, db_kwargs=kwargs) as conn, conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM raw.telemetry")
        cur.fetchone()


def main(uri: str, user: str, password: str, api_token: str, tokens_json: str) -> None:
    tokens = json.loads(tokens_json)
    client = flight.FlightClient(uri)
    cases = {}
    cases["pyarrow_no_credentials"] = outcome(lambda: pyarrow_query(client))
    cases["pyarrow_list_flights_no_credentials"] = outcome(lambda: list(client.list_actions()))

    def basic_then_query():
        header = client.authenticate_basic_token(user, password)
        pyarrow_query(client, [header])
    cases["pyarrow_basic_handshake"] = outcome(basic_then_query)
    cases["pyarrow_basic_wrong_password"] = outcome(
        lambda: client.authenticate_basic_token(user, password + "x"))
    cases["pyarrow_basic_unknown_user"] = outcome(
        lambda: client.authenticate_basic_token("nobody", password))
    cases["pyarrow_basic_header_on_a_call"] = outcome(lambda: pyarrow_query(
        client, [(b"authorization", b"Basic " + __import__("base64").b64encode(f"{user}:{password}".encode()))]))
    cases["pyarrow_api_token"] = outcome(lambda: pyarrow_query(client, bearer(api_token)))
    cases["pyarrow_wrong_api_token"] = outcome(lambda: pyarrow_query(client, bearer(api_token + "x")))
    cases["pyarrow_unknown_scheme"] = outcome(
        lambda: pyarrow_query(client, [(b"authorization", b"Digest abc")]))
    for name, token in tokens.items():
        if not isinstance(token, str):
            continue
        cases[f"pyarrow_jwt_{name}"] = outcome(lambda t=token: pyarrow_query(client, bearer(t)))

    cases["adbc_no_credentials"] = outcome(lambda: adbc_query(uri))
    cases["adbc_username_password"] = outcome(
        lambda: adbc_query(uri, username=user, password=password))
    cases["adbc_wrong_password"] = outcome(
        lambda: adbc_query(uri, username=user, password=password + "x"))
    cases["adbc_api_token"] = outcome(lambda: adbc_query(
        uri, **{"adbc.flight.sql.authorization_header": f"Bearer {api_token}"}))
    cases["adbc_jwt"] = outcome(lambda: adbc_query(
        uri, **{"adbc.flight.sql.authorization_header": f"Bearer {tokens['valid']}"}))
    cases["adbc_expired_jwt"] = outcome(lambda: adbc_query(
        uri, **{"adbc.flight.sql.authorization_header": f"Bearer {tokens['expired']}"}))
    print(json.dumps(cases))


if __name__ == "__main__":
    main(*sys.argv[1:6])
