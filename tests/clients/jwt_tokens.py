"""Makes an identity provider's key pair and tokens for the authentication tests.

Usage: jwt_tokens.py DIR ISSUER AUDIENCE
Writes DIR/jwks.json (the public key, ES256, kid "test-key") and DIR/jwks-rotated.json (that key
and a new one, kid "next-key", as after a key rotation), and prints one JSON object of tokens: a
valid one, one of each kind that must be refused, and "rotated" (valid, signed by the new key).
"""
import base64
import json
import sys
import time

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def es256(key, header: dict, claims: dict) -> str:
    signing_input = f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(claims).encode())}"
    der = key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256()))
    r, s = decode_dss_signature(der)
    return f"{signing_input}.{b64url(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"


def main(out_dir: str, issuer: str, audience: str) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    other = ec.generate_private_key(ec.SECP256R1())
    rotated = ec.generate_private_key(ec.SECP256R1())

    def public_jwk(k, kid):
        numbers = k.public_key().public_numbers()
        return {
            "kty": "EC", "crv": "P-256", "kid": kid, "use": "sig", "alg": "ES256",
            "x": b64url(numbers.x.to_bytes(32, "big")),
            "y": b64url(numbers.y.to_bytes(32, "big")),
        }

    jwk = public_jwk(key, "test-key")
    with open(f"{out_dir}/jwks.json", "w") as f:
        json.dump({"keys": [jwk]}, f)
    with open(f"{out_dir}/jwks-rotated.json", "w") as f:
        json.dump({"keys": [jwk, public_jwk(rotated, "next-key")]}, f)

    now = int(time.time())
    header = {"alg": "ES256", "typ": "JWT", "kid": "test-key"}
    good = {"iss": issuer, "aud": audience, "sub": "alice@example.com", "roles": ["analyst"],
            "project_id": "p-1", "service": "svc-3", "iat": now, "exp": now + 600}
    tokens = {
        "valid": es256(key, header, good),
        "rotated": es256(rotated, {**header, "kid": "next-key"}, good),
        "expired": es256(key, header, {**good, "exp": now - 3600}),
        "wrong_issuer": es256(key, header, {**good, "iss": "https://evil.example.com/"}),
        "wrong_audience": es256(key, header, {**good, "aud": "someone-else"}),
        "bad_signature": es256(other, header, good),
        "unknown_kid": es256(key, {**header, "kid": "rotated-away"}, good),
        "not_yet_valid": es256(key, header, {**good, "nbf": now + 3600}),
        "no_expiry": es256(key, header, {k: v for k, v in good.items() if k != "exp"}),
        "no_service_claim": es256(key, header, {k: v for k, v in good.items() if k != "service"}),
        # The right claims with a forged HS256 signature keyed by nothing this server knows.
        "forged_hs256": ".".join([
            b64url(json.dumps({"alg": "HS256", "typ": "JWT"}).encode()),
            b64url(json.dumps({"iss": "sakura", "aud": "sakura", "sub": "mallory",
                               "roles": ["admin"], "iat": now, "exp": now + 600}).encode()),
            b64url(b"not-a-signature-of-this-server-0"),
        ]),
    }
    print(json.dumps(tokens))


if __name__ == "__main__":
    main(*sys.argv[1:4])
