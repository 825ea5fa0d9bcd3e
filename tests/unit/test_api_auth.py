"""JWT checks (pure logic): good tokens pass; expired, forged and misdirected ones are refused."""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from api.auth import AuthError, decode_token, mint_token
from tapmask.settings import Settings

S = Settings(jwt_secret="unit-test-secret-with-enough-length-000")


def claims(**over: object) -> dict:
    # Tokens are built when the parameters are collected, maybe minutes before the test runs
    # (the integration tests go first): keep them valid for a day unless a case says otherwise.
    now = int(time.time())
    return {"sub": "alice", "tier": "free", "region": "eu", "aud": S.jwt_audience, "iss": S.jwt_issuer, "iat": now, "exp": now + 86400} | over


def b64(d: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(d).encode()).rstrip(b"=").decode()


def test_minted_token_gives_the_user() -> None:
    user = decode_token(mint_token(S, "alice", "pro", "us"), S)
    assert (user.id, user.tier, user.region) == ("alice", "pro", "us")


@pytest.mark.parametrize(
    "token, reason",
    [
        (jwt.encode(claims(exp=int(time.time()) - 3600), S.jwt_secret, algorithm="HS256"), "expired"),
        (jwt.encode(claims(), "another-secret-of-sufficient-length-0000", algorithm="HS256"), "signature"),
        (jwt.encode(claims(aud="someone-else"), S.jwt_secret, algorithm="HS256"), "audience"),
        (jwt.encode(claims(iss="evil"), S.jwt_secret, algorithm="HS256"), "issuer"),
        (jwt.encode(claims(tier="platinum"), S.jwt_secret, algorithm="HS256"), "tier"),
        (jwt.encode({k: v for k, v in claims().items() if k != "sub"}, S.jwt_secret, algorithm="HS256"), "sub"),
        (jwt.encode({k: v for k, v in claims().items() if k != "exp"}, S.jwt_secret, algorithm="HS256"), "exp"),
        (jwt.encode(claims(iat=int(time.time()) + 3600, exp=int(time.time()) + 7200), S.jwt_secret, algorithm="HS256"), "iat"),
        (b64({"alg": "none", "typ": "JWT"}) + "." + b64(claims()) + ".", "algorithm"),
        ("not.a.token", "invalid"),
        ("", "invalid"),
    ],
    ids=["expired", "wrong-key", "wrong-audience", "wrong-issuer", "bad-tier", "no-sub", "no-exp", "future-iat", "alg-none", "garbage", "empty"],
)
def test_bad_tokens_are_refused(token: str, reason: str) -> None:
    with pytest.raises(AuthError) as e:
        decode_token(token, S)
    assert reason in str(e.value) or "invalid" in str(e.value)


@pytest.fixture(scope="module")
def rsa_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path, object]:
    d = tmp_path_factory.mktemp("keys")
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    priv = d / "priv.pem"
    priv.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    pub = d / "pub.pem"
    pub.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key())) | {"kid": "k1", "use": "sig", "alg": "RS256"}
    jwks = d / "jwks.json"
    jwks.write_text(json.dumps({"keys": [jwk]}))
    return priv, pub, jwks, key


def test_rs256_with_public_key_and_jwks(rsa_files: tuple) -> None:
    priv, pub, jwks, _ = rsa_files
    s_pub = Settings(jwt_alg="RS256", jwt_public_key_file=pub, jwt_private_key_file=priv)
    token = mint_token(s_pub, "bob", "pro")
    assert decode_token(token, s_pub).id == "bob"
    s_jwks = Settings(jwt_alg="RS256", jwks_file=jwks)
    kid_token = jwt.encode(claims(sub="carol"), priv.read_text(), algorithm="RS256", headers={"kid": "k1"})
    assert decode_token(kid_token, s_jwks).id == "carol"
    unknown_kid = jwt.encode(claims(), priv.read_text(), algorithm="RS256", headers={"kid": "k2"})
    with pytest.raises(AuthError, match="unknown key id"):
        decode_token(unknown_kid, s_jwks)


def test_rs256_refuses_hs256_signed_with_the_public_key_and_other_keys(rsa_files: tuple) -> None:
    priv, pub, _, _ = rsa_files
    s_pub = Settings(jwt_alg="RS256", jwt_public_key_file=pub)
    # The classic algorithm-confusion forgery: HMAC keyed with the public key's PEM.
    import hmac
    import hashlib

    header, body = b64({"alg": "HS256", "typ": "JWT"}), b64(claims())
    sig = base64.urlsafe_b64encode(hmac.new(pub.read_bytes(), f"{header}.{body}".encode(), hashlib.sha256).digest()).rstrip(b"=").decode()
    with pytest.raises(AuthError):
        decode_token(f"{header}.{body}.{sig}", s_pub)
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    with pytest.raises(AuthError, match="signature"):
        decode_token(jwt.encode(claims(), other, algorithm="RS256"), s_pub)
    with pytest.raises(AuthError):  # an HS256 token with the dev secret is no good under RS256
        decode_token(mint_token(S, "alice"), s_pub)
