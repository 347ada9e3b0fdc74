"""Session tokens from the handshake, with unmodified pyarrow.flight, for the session tests.

Usage:
  session_probe.py issue URI JWT USER PASSWORD API_TOKEN
      Exchanges each credential for a session token at the handshake (a JWT and an API token as
      `authorization: Bearer`, the user with Basic), renews the JWT's session once, and runs a
      query with each session: {"jwt"|"renewed"|"basic"|"token": {"session": …, "query": …}}.
  session_probe.py use URI SESSION...
      For each session token: a query with it, and a renewal of it at the handshake:
      {"0": {"query": …, "renew": …}, …}.
"""
import json
import sys

import pyarrow.flight as flight

from pyarrow_client import any_command, field_bytes
from security_probe import first_value, options, status

QUERY = any_command("CommandStatementQuery", field_bytes(1, b"SELECT 1 AS n"))


class Exchange(flight.ClientAuthHandler):
    """A handshake whose credential is the call's `authorization` header."""

    def __init__(self):
        super().__init__()
        self.token = b""

    def authenticate(self, outgoing, incoming):
        # The server answers at once and ends the call: a client message written after that
        # can leave pyarrow waiting forever in its handshake, so send none.
        self.token = incoming.read()

    def get_token(self):
        return b""


def exchange(uri: str, bearer: str) -> str:
    client = flight.FlightClient(uri)
    handler = Exchange()
    client.authenticate(handler, options=flight.FlightCallOptions(
        headers=[(b"authorization", f"Bearer {bearer}".encode())]))
    client.close()
    return handler.token.decode()


def query(uri: str, session: str) -> str:
    client = flight.FlightClient(uri)
    try:
        opts = options(session)
        info = client.get_flight_info(flight.FlightDescriptor.for_command(QUERY), opts)
        first_value(client.do_get(info.endpoints[0].ticket, opts).read_all())
        return "ok"
    except Exception as e:
        return status(e)
    finally:
        client.close()


def outcome(fn):
    try:
        return fn()
    except Exception as e:
        return status(e)


def issue(uri: str, jwt: str, user: str, password: str, api_token: str) -> None:
    out = {}
    out["jwt"] = {"session": exchange(uri, jwt)}
    out["renewed"] = {"session": exchange(uri, out["jwt"]["session"])}
    client = flight.FlightClient(uri)
    header = client.authenticate_basic_token(user, password)
    client.close()
    out["basic"] = {"session": header[1].decode().split(" ", 1)[1]}
    out["token"] = {"session": exchange(uri, api_token)}
    for case in out.values():
        case["query"] = query(uri, case["session"])
    print(json.dumps(out))


def use(uri: str, *sessions: str) -> None:
    out = {}
    for i, s in enumerate(sessions):
        out[str(i)] = {"query": query(uri, s), "renew": outcome(lambda: (exchange(uri, s), "ok")[1])}
    print(json.dumps(out))


if __name__ == "__main__":
    mode, args = sys.argv[1], sys.argv[2:]
    {"issue": issue, "use": use}[mode](*args)
