"""Unmodified pyarrow.flight and ADBC clients against a sakura serving Flight SQL over TLS with
mTLS (client certificates required) and authentication.

Usage: tls_client.py HOST:PORT CERT_DIR API_TOKEN
CERT_DIR holds ca.pem, client.pem, client.key, rogue.pem, rogue.key. Prints one JSON object: for
each case "ok" (the query ran) or the error class and its first line.
"""
import json
import sys

import adbc_driver_flightsql.dbapi as flightsql
import pyarrow.flight as flight

from auth_client import QUERY, bearer, outcome


def read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def pyarrow_query(uri: str, token: str, **kwargs):
    client = flight.FlightClient(uri, **kwargs)
    try:
        options = flight.FlightCallOptions(headers=bearer(token), timeout=10)
        info = client.get_flight_info(flight.FlightDescriptor.for_command(QUERY), options)
        client.do_get(info.endpoints[0].ticket, options).read_all()
    finally:
        client.close()


def adbc_query(uri: str, **kwargs):
    with flightsql.connect(uri, db_kwargs=kwargs) as conn, conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM raw.telemetry")
        cur.fetchone()


def main(addr: str, certs: str, token: str) -> None:
    ca = read(f"{certs}/ca.pem")
    client_cert, client_key = read(f"{certs}/client.pem"), read(f"{certs}/client.key")
    rogue_cert, rogue_key = read(f"{certs}/rogue.pem"), read(f"{certs}/rogue.key")
    tls = f"grpc+tls://{addr}"
    cases = {
        "pyarrow_mtls": outcome(lambda: pyarrow_query(
            tls, token, tls_root_certs=ca, cert_chain=client_cert, private_key=client_key)),
        "pyarrow_mtls_without_token": outcome(lambda: pyarrow_query(
            tls, "", tls_root_certs=ca, cert_chain=client_cert, private_key=client_key)),
        "pyarrow_plaintext_to_tls_port": outcome(lambda: pyarrow_query(f"grpc://{addr}", token)),
        "pyarrow_no_client_certificate": outcome(lambda: pyarrow_query(
            tls, token, tls_root_certs=ca)),
        "pyarrow_untrusted_client_certificate": outcome(lambda: pyarrow_query(
            tls, token, tls_root_certs=ca, cert_chain=rogue_cert, private_key=rogue_key)),
        "pyarrow_server_not_trusted": outcome(lambda: pyarrow_query(
            tls, token, tls_root_certs=rogue_cert, cert_chain=client_cert, private_key=client_key)),
        "adbc_mtls": outcome(lambda: adbc_query(tls, **{
            "adbc.flight.sql.client_option.tls_root_certs": ca.decode(),
            "adbc.flight.sql.client_option.mtls_cert_chain": client_cert.decode(),
            "adbc.flight.sql.client_option.mtls_private_key": client_key.decode(),
            "adbc.flight.sql.authorization_header": f"Bearer {token}",
        })),
        "adbc_no_client_certificate": outcome(lambda: adbc_query(tls, **{
            "adbc.flight.sql.client_option.tls_root_certs": ca.decode(),
            "adbc.flight.sql.authorization_header": f"Bearer {token}",
        })),
    }
    print(json.dumps(cases))


if __name__ == "__main__":
    main(*sys.argv[1:4])
