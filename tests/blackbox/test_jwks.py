"""Asymmetric signing (issue 4, docs/API.md §3 "Tokens"): JWT_ALGORITHM=ES256 with a P-256 key from
JWT_PRIVATE_KEY_FILE, the kid (RFC 7638 thumbprint, computed here independently), the JWK Set at
/.well-known/jwks.json that other services verify with (PyJWT here), sessions under ES256, key
rotation with JWT_PREVIOUS_PUBLIC_KEY_FILE, refused configurations.  With HS256 (the default)
the JWK Set is empty."""

import base64
import hashlib
import json

import jwt
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from conftest import PHONE, assert_problem, phone_n

JWKS = "/.well-known/jwks.json"
REFRESH = "/api/v1/usr/token/refresh"
LOGOUT = "/api/v1/usr/logout"
ME = "/api/v1/usr/me"

JWK_MEMBERS = {"kty", "crv", "x", "y", "kid", "use", "alg"}

# EC PARAMETERS block for prime256v1, as `openssl ecparam -genkey` (without -noout) writes it
EC_PARAMS_P256 = b"-----BEGIN EC PARAMETERS-----\nBggqhkjOPQMBBw==\n-----END EC PARAMETERS-----\n"


# ----------------------------------------------------------------------------------------
# keys

def b64u(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def new_key(curve=None):
    return ec.generate_private_key(curve or ec.SECP256R1())


def private_pem(key, fmt="sec1"):
    if fmt == "pkcs8":
        f = serialization.PrivateFormat.PKCS8
    else:
        f = serialization.PrivateFormat.TraditionalOpenSSL
    pem = key.private_bytes(serialization.Encoding.PEM, f, serialization.NoEncryption())
    return EC_PARAMS_P256 + pem if fmt == "sec1-with-params" else pem


def public_pem(key):
    return key.public_key().public_bytes(serialization.Encoding.PEM,
                                         serialization.PublicFormat.SubjectPublicKeyInfo)


def xy(key):
    n = key.public_key().public_numbers()
    return b64u(n.x.to_bytes(32, "big")), b64u(n.y.to_bytes(32, "big"))


def thumbprint(key):
    """RFC 7638: SHA-256 of the required members in lexicographic order, no white space."""
    x, y = xy(key)
    canon = '{"crv":"P-256","kty":"EC","x":"%s","y":"%s"}' % (x, y)
    return b64u(hashlib.sha256(canon.encode()).digest())


def write(path, data):
    path.write_bytes(data)
    return str(path)


def es256_env(path, previous=None, **extra):
    env = {"JWT_ALGORITHM": "ES256", "JWT_PRIVATE_KEY_FILE": str(path), "OTP_SEND_LIMIT": "100"}
    if previous:
        env["JWT_PREVIOUS_PUBLIC_KEY_FILE"] = str(previous)
    env.update(extra)
    return env


# ----------------------------------------------------------------------------------------
# helpers

def jwks_of(otpd):
    r = otpd.get(JWKS)
    assert r.status_code == 200, r.text
    assert r.headers["Content-Type"].split(";")[0].strip() == "application/json"
    doc = r.json()
    assert isinstance(doc, dict) and isinstance(doc.get("keys"), list), doc
    return doc


def check_jwk(jwk, key):
    assert set(jwk) == JWK_MEMBERS, "members %s (never a private 'd')" % sorted(jwk)
    x, y = xy(key)
    assert jwk["kty"] == "EC" and jwk["crv"] == "P-256", jwk
    assert jwk["use"] == "sig" and jwk["alg"] == "ES256", jwk
    assert (jwk["x"], jwk["y"]) == (x, y), "the JWK is the public half of the configured key"
    assert jwk["kid"] == thumbprint(key), "kid is the RFC 7638 thumbprint"


def by_kid(doc):
    return {k["kid"]: k for k in doc["keys"]}


def verify_with_jwks(doc, token, kind=None):
    """Verify like another service would: pick the JWK by the token's kid."""
    header = jwt.get_unverified_header(token)
    assert header.get("alg") == "ES256", header
    jwk = by_kid(doc).get(header.get("kid"))
    assert jwk is not None, "kid %r not in the JWK Set" % header.get("kid")
    key = jwt.PyJWK(jwk).key
    claims = jwt.decode(token, key, algorithms=["ES256"], leeway=5,
                        options={"require": ["exp", "iat", "jti", "sub"]})
    # the same through the algorithm's own from_jwk
    key2 = jwt.algorithms.ECAlgorithm.from_jwk(json.dumps(jwk))
    assert jwt.decode(token, key2, algorithms=["ES256"], leeway=5) == claims
    if kind:
        assert claims["token_type"] == kind
    return claims


def refresh(otpd, token):
    return otpd.post(REFRESH, json={"refresh_token": token})


def me(otpd, access):
    return otpd.get(ME, headers={"Authorization": "Bearer %s" % access})


def ok_pair(r):
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == {"access_token", "refresh_token"}, body
    return body["access_token"], body["refresh_token"]


def assert_invalid_token(r):
    return assert_problem(r, 401, "invalid_token")


# ----------------------------------------------------------------------------------------
# HS256

def test_hs256_jwks_is_empty(otpd, fake):
    assert jwks_of(otpd) == {"keys": []}
    body = otpd.login(fake, PHONE).json()
    assert "kid" not in jwt.get_unverified_header(body["access_token"])


def test_jwks_method(otpd):
    r = otpd.post(JWKS)
    assert_problem(r, 405, "method_not_allowed")
    assert "GET" in r.headers.get("Allow", "")


# ----------------------------------------------------------------------------------------
# ES256

def test_es256_jwks_tokens_and_session(otpd_factory, fake, tmp_path):
    key = new_key()
    otpd = otpd_factory.start(es256_env(write(tmp_path / "k.pem", private_pem(key))))
    doc = jwks_of(otpd)
    assert len(doc["keys"]) == 1, doc
    check_jwk(doc["keys"][0], key)
    kid = thumbprint(key)

    login = otpd.login(fake, PHONE).json()
    uid = login["user"]["id"]
    for name, ttl in (("access_token", 300), ("refresh_token", 86400)):
        header = jwt.get_unverified_header(login[name])
        assert header["alg"] == "ES256" and header["kid"] == kid, header
        c = verify_with_jwks(doc, login[name], name.split("_")[0])
        assert c["user_id"] == uid and c["sub"] == str(uid) and c["exp"] - c["iat"] == ttl
        # verifies with the PEM public key too, and not with another P-256 key
        jwt.decode(login[name], public_pem(key), algorithms=["ES256"], leeway=5)
        with pytest.raises(jwt.InvalidSignatureError):
            jwt.decode(login[name], public_pem(new_key()), algorithms=["ES256"], leeway=5)

    r = me(otpd, login["access_token"])
    assert r.status_code == 200 and r.json() == login["user"], r.text

    # a session under ES256: rotation, grace (same record again), reuse, logout
    r0 = login["refresh_token"]
    a1, r1 = ok_pair(refresh(otpd, r0))
    c1 = verify_with_jwks(doc, r1, "refresh")
    assert verify_with_jwks(doc, a1, "access")["user_id"] == uid
    a1b, r1b = ok_pair(refresh(otpd, r0))      # inside the grace window: the same pair
    assert verify_with_jwks(doc, r1b)["jti"] == c1["jti"]
    assert verify_with_jwks(doc, a1b)["jti"] == verify_with_jwks(doc, a1)["jti"]
    assert me(otpd, a1).status_code == 200
    _, r2 = ok_pair(refresh(otpd, r1))
    assert_invalid_token(refresh(otpd, r0))    # successor rotated: reuse, family revoked
    assert_invalid_token(refresh(otpd, r2))

    other = otpd.login(fake, phone_n(1)).json()
    _, o1 = ok_pair(refresh(otpd, other["refresh_token"]))
    r = otpd.post(LOGOUT, json={"refresh_token": o1})
    assert r.status_code == 204
    assert_invalid_token(refresh(otpd, o1))

    # the private key never shows: not in the JWK Set, not in any log line
    secret_body = b"".join(private_pem(key).splitlines()[1:-1]).decode()
    d = b64u(key.private_numbers().private_value.to_bytes(32, "big"))
    for blob in (json.dumps(doc), otpd.log_text()):
        assert secret_body[:40] not in blob and d not in blob


@pytest.mark.parametrize("fmt", ["sec1", "pkcs8", "sec1-with-params"])
def test_es256_key_file_formats(otpd_factory, fake, tmp_path, fmt):
    """`openssl ecparam -genkey -noout` (SEC1), PKCS#8, and SEC1 after an EC PARAMETERS
    block (`openssl ecparam -genkey` without -noout)."""
    key = new_key()
    otpd = otpd_factory.start(es256_env(write(tmp_path / "k.pem", private_pem(key, fmt))))
    doc = jwks_of(otpd)
    assert [k["kid"] for k in doc["keys"]] == [thumbprint(key)]
    login = otpd.login(fake, PHONE).json()
    verify_with_jwks(doc, login["access_token"], "access")
    assert me(otpd, login["access_token"]).status_code == 200


def test_key_rotation(otpd_factory, fake, tmp_path):
    key_a, key_b = new_key(), new_key()
    a_path = write(tmp_path / "a.pem", private_pem(key_a))
    a_pub = write(tmp_path / "a.pub.pem", public_pem(key_a))
    b_path = write(tmp_path / "b.pem", private_pem(key_b, "pkcs8"))
    kid_a, kid_b = thumbprint(key_a), thumbprint(key_b)
    assert kid_a != kid_b

    otpd = otpd_factory.start(es256_env(a_path))
    first = otpd.login(fake, PHONE).json()
    second = otpd.login(fake, PHONE).json()
    assert jwt.get_unverified_header(first["access_token"])["kid"] == kid_a

    # B signs, A still verifies
    otpd.restart(env={"JWT_PRIVATE_KEY_FILE": b_path, "JWT_PREVIOUS_PUBLIC_KEY_FILE": a_pub})
    doc = jwks_of(otpd)
    keys = by_kid(doc)
    assert set(keys) == {kid_a, kid_b}, doc
    check_jwk(keys[kid_a], key_a)
    check_jwk(keys[kid_b], key_b)
    r = me(otpd, first["access_token"])
    assert r.status_code == 200 and r.json() == first["user"], r.text
    verify_with_jwks(doc, first["access_token"])
    fresh = otpd.login(fake, PHONE).json()
    for name in ("access_token", "refresh_token"):
        assert jwt.get_unverified_header(fresh[name])["kid"] == kid_b
        verify_with_jwks(doc, fresh[name])
    # a refresh token signed with A rotates into tokens signed with B
    a1, r1 = ok_pair(refresh(otpd, first["refresh_token"]))
    assert jwt.get_unverified_header(a1)["kid"] == kid_b
    assert jwt.get_unverified_header(r1)["kid"] == kid_b
    verify_with_jwks(doc, r1, "refresh")
    assert me(otpd, a1).status_code == 200
    # a token signed with A that claims kid B is refused (kid picks the key, not a hint)
    h, p, _ = first["access_token"].split(".")
    relabelled_h = b64u(json.dumps(dict(jwt.get_unverified_header(first["access_token"]),
                                        kid=kid_b)).encode())
    der = key_a.sign((relabelled_h + "." + p).encode(), ec.ECDSA(hashes.SHA256()))
    rr, ss = decode_dss_signature(der)
    relabelled = relabelled_h + "." + p + "." + b64u(rr.to_bytes(32, "big") + ss.to_bytes(32, "big"))
    assert_invalid_token(me(otpd, relabelled))

    # rotation over: without the previous key, A's tokens are refused
    otpd.restart(env={"JWT_PREVIOUS_PUBLIC_KEY_FILE": None})
    doc = jwks_of(otpd)
    assert [k["kid"] for k in doc["keys"]] == [kid_b], doc
    assert_invalid_token(me(otpd, first["access_token"]))
    assert_invalid_token(refresh(otpd, second["refresh_token"]))
    assert me(otpd, a1).status_code == 200
    assert me(otpd, fresh["access_token"]).status_code == 200
    ok_pair(refresh(otpd, r1))


def _bad_files(tmp_path):
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    rsa_pem = rsa_key.private_bytes(serialization.Encoding.PEM,
                                    serialization.PrivateFormat.TraditionalOpenSSL,
                                    serialization.NoEncryption())
    p384 = new_key(ec.SECP384R1())
    good = new_key()
    return {
        "rsa": write(tmp_path / "rsa.pem", rsa_pem),
        "rsa-pub": write(tmp_path / "rsa.pub.pem", rsa_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)),
        "p384": write(tmp_path / "p384.pem", private_pem(p384)),
        "p384-pub": write(tmp_path / "p384.pub.pem", public_pem(p384)),
        "garbage": write(tmp_path / "garbage.pem", b"-----BEGIN EC PRIVATE KEY-----\nxx\n"),
        "empty": write(tmp_path / "empty.pem", b""),
        "public-only": write(tmp_path / "pub.pem", public_pem(good)),
        "missing": str(tmp_path / "does-not-exist.pem"),
        "good": write(tmp_path / "good.pem", private_pem(good)),
    }


BAD_CONFIGS = [
    ("no-key-file", "JWT_PRIVATE_KEY_FILE", {"JWT_PRIVATE_KEY_FILE": None}),
    ("empty-key-file", "JWT_PRIVATE_KEY_FILE", {"JWT_PRIVATE_KEY_FILE": ""}),
    ("missing", "JWT_PRIVATE_KEY_FILE", {"JWT_PRIVATE_KEY_FILE": "missing"}),
    ("rsa", "JWT_PRIVATE_KEY_FILE", {"JWT_PRIVATE_KEY_FILE": "rsa"}),
    ("p384", "JWT_PRIVATE_KEY_FILE", {"JWT_PRIVATE_KEY_FILE": "p384"}),
    ("garbage", "JWT_PRIVATE_KEY_FILE", {"JWT_PRIVATE_KEY_FILE": "garbage"}),
    ("empty-file", "JWT_PRIVATE_KEY_FILE", {"JWT_PRIVATE_KEY_FILE": "empty"}),
    ("public-only", "JWT_PRIVATE_KEY_FILE", {"JWT_PRIVATE_KEY_FILE": "public-only"}),
    ("previous-rsa", "JWT_PREVIOUS_PUBLIC_KEY_FILE", {"JWT_PREVIOUS_PUBLIC_KEY_FILE": "rsa-pub"}),
    ("previous-p384", "JWT_PREVIOUS_PUBLIC_KEY_FILE", {"JWT_PREVIOUS_PUBLIC_KEY_FILE": "p384-pub"}),
    ("previous-missing", "JWT_PREVIOUS_PUBLIC_KEY_FILE", {"JWT_PREVIOUS_PUBLIC_KEY_FILE": "missing"}),
    ("previous-garbage", "JWT_PREVIOUS_PUBLIC_KEY_FILE", {"JWT_PREVIOUS_PUBLIC_KEY_FILE": "garbage"}),
]


@pytest.mark.parametrize("name,var,env", BAD_CONFIGS, ids=[c[0] for c in BAD_CONFIGS])
def test_es256_bad_config_stops_start(otpd_factory, tmp_path, name, var, env):
    files = _bad_files(tmp_path)
    full = {"JWT_ALGORITHM": "ES256", "JWT_PRIVATE_KEY_FILE": files["good"]}
    for k, v in env.items():
        full[k] = files.get(v, v) if v else v
    res = otpd_factory.run(["serve"], full, timeout=8)
    assert not res.timed_out, "otpd kept running: %r" % res
    assert res.rc == 1, "exit status %r, expected 1: %r" % (res.rc, res)
    naming = [ln for ln in res.output.splitlines() if var in ln]
    assert len(naming) == 1, "expected one line naming %s: %r" % (var, res)
    rsa_body = open(files["rsa"]).read().splitlines()[2]
    assert rsa_body not in res.output, "key material in the output"


@pytest.mark.parametrize("value", ["RS256", "none", "HS512", "ES384"])
def test_unknown_algorithm_stops_start(otpd_factory, value):
    res = otpd_factory.run(["serve"], {"JWT_ALGORITHM": value}, timeout=8)
    assert not res.timed_out and res.rc == 1, res
    assert len([ln for ln in res.output.splitlines() if "JWT_ALGORITHM" in ln]) == 1, res

