"""Makes an identity provider's key pair and tokens for the authentication tests.

Usage: jwt_tokens.py DIR ISSUER AUDIENCE
Writes DIR/jwks.json (the keys are kept in DIR/idp-keys.pem: a second run signs with the same ones) (the public key, ES256, kid "test-key") and DIR/jwks-rotated.json (that key
and a new one, kid "next-key", as after a key rotation), and prints one JSON object of tokens: a
valid one, one of each kind that must be refused, "rotated" (valid, signed by the new key),
"numeric_tenant" (role tenant, a numeric claim), and "short_lived" (expires at
"short_lived_exp", six seconds after it was made).
"""
import base64
import json
import sys
import time

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def es256(key, header: dict, claims: dict) -> str:
    signing_input = f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(claims).encode())}"
    der = key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256()))
    r, s = decode_dss_signature(der)
    return f"{signing_input}.{b64url(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"


def keys(out_dir: str):
    """The provider's keys: made on the first run in DIR, read back on later ones (so that a
    test can mint fresh tokens for a server that already read the JWKS)."""
    path = f"{out_dir}/idp-keys.pem"
    try:
        with open(path, "rb") as f:
            pems = f.read().split(b"\n\n")
        return [serialization.load_pem_private_key(p, password=None) for p in pems]
    except FileNotFoundError:
        made = [ec.generate_private_key(ec.SECP256R1()) for _ in range(3)]
        with open(path, "wb") as f:
            f.write(b"\n\n".join(k.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption()).strip() for k in made))
        return made


def main(out_dir: str, issuer: str, audience: str) -> None:
    key, other, rotated = keys(out_dir)

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
        # A role whose row filter compares a string column with a numeric claim.
        "numeric_tenant": es256(key, header, {**good, "roles": ["tenant"], "tenant": 42}),
        # Valid for six seconds (its exp is printed as "short_lived_exp").
        "short_lived": es256(key, header, {**good, "exp": now + 6}),
        # The right claims with a forged HS256 signature keyed by nothing this server knows.
        "forged_hs256": ".".join([
            b64url(json.dumps({"alg": "HS256", "typ": "JWT"}).encode()),
            b64url(json.dumps({"iss": "sakura", "aud": "sakura", "sub": "mallory",
                               "roles": ["admin"], "iat": now, "exp": now + 600}).encode()),
            b64url(b"not-a-signature-of-this-server-0"),
        ]),
    }
    print(json.dumps({**tokens, "short_lived_exp": now + 6}))


if __name__ == "__main__":
    main(*sys.argv[1:4])
