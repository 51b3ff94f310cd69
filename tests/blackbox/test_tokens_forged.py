"""Every token check refuses, with 401 invalid_token and nothing that tells an attacker why
(issue 4, docs/API.md §3 "Tokens" and §4): missing, malformed, bad signature, tampered payload or
header, alg none, an algorithm other than the configured one (HS384/HS512 with the right key;
with ES256: HS256 signed with the public key, the alg confusion), expired, not yet valid,
missing or ill-typed claims, the wrong token type, wrong or missing kid, an unknown user.

Tokens are forged here by hand (base64url, hmac, cryptography) so that nothing a JWT library
refuses to produce is out of reach; a control forged with the right key and the genuine claims
is accepted, so each refusal is for the reason under test.  Forged refresh tokens reuse the jti
of a live refresh record, and after each refusal the genuine token still rotates: a forgery
neither rotates nor revokes the victim's session."""

import base64
import hashlib
import hmac
import json
import secrets
import time

import jwt
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from conftest import PHONE, assert_problem, phone_n

REFRESH = "/api/v1/usr/token/refresh"
ME = "/api/v1/usr/me"

pytestmark = pytest.mark.otpd_env(OTP_SEND_LIMIT="100")


# ----------------------------------------------------------------------------------------
# forging

def b64u(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def seg(obj):
    if isinstance(obj, (bytes, bytearray)):
        return b64u(bytes(obj))
    return b64u(json.dumps(obj, separators=(",", ":")).encode())


_HS = {"HS256": hashlib.sha256, "HS384": hashlib.sha384, "HS512": hashlib.sha512}


def es256_sig(priv, data):
    r, s = decode_dss_signature(priv.sign(data, ec.ECDSA(hashes.SHA256())))
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


def forge(header, claims, key=None, alg=None, sig=None):
    """header.claims.signature; the signature by alg (default header["alg"]) with key
    (bytes or str for HS*, an EC private key for ES256), or sig as given (bytes or str)."""
    signing_input = seg(header) + "." + seg(claims)
    if sig is None:
        alg = alg or header.get("alg")
        if alg in _HS:
            k = key.encode() if isinstance(key, str) else key
            sig = hmac.new(k, signing_input.encode(), _HS[alg]).digest()
        elif alg == "ES256":
            sig = es256_sig(key, signing_input.encode())
        elif alg == "RS256":
            from cryptography.hazmat.primitives.asymmetric import padding
            sig = key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
        else:
            sig = b""
    if isinstance(sig, str):
        return signing_input + "." + sig
    return signing_input + "." + b64u(sig)


def parts(token):
    h, p, s = token.split(".")
    pad = lambda x: x + "=" * (-len(x) % 4)  # noqa: E731
    return (json.loads(base64.urlsafe_b64decode(pad(h))),
            json.loads(base64.urlsafe_b64decode(pad(p))), s)


def flip(s, i):
    """s with the character at i replaced by another base64url character."""
    c = s[i]
    return s[:i] + ("A" if c != "A" else "B") + s[i + 1:]


# ----------------------------------------------------------------------------------------
# requests

def me(otpd, token):
    return otpd.get(ME, headers={"Authorization": "Bearer %s" % token})


def me_cookie(otpd, token):
    return otpd.get(ME, headers={"Cookie": "access_token=%s" % token})


def refresh(otpd, token):
    return otpd.post(REFRESH, json={"refresh_token": token})


def refresh_cookie(otpd, token):
    return otpd.post(REFRESH, headers={"Cookie": "refresh_token=%s" % token})


def assert_invalid_token(r, what=""):
    assert r.status_code == 401, "%s: expected 401, got %d: %s" % (what, r.status_code, r.text[:300])
    body = assert_problem(r, 401, "invalid_token")
    www = r.headers.get("WWW-Authenticate", "")
    assert www.lower().startswith("bearer") and 'error="invalid_token"' in www, www
    assert not r.raw.headers.getlist("Set-Cookie"), "%s: a refusal sets no cookie" % what
    return body


def refused_everywhere(otpd, token, kind, what=""):
    """Refused on the endpoint of its kind, by header/body and by cookie."""
    if kind == "access":
        assert_invalid_token(me(otpd, token), what + " (bearer)")
        assert_invalid_token(me_cookie(otpd, token), what + " (cookie)")
    else:
        if len(token) < 3000:   # bodies are limited to 4 KiB
            assert_invalid_token(refresh(otpd, token), what + " (body)")
        assert_invalid_token(refresh_cookie(otpd, token), what + " (cookie)")


def still_rotates(otpd, token):
    r = refresh(otpd, token)
    assert r.status_code == 200, "the genuine refresh token must survive the forgeries: %s" % r.text
    return r.json()


class Session:
    """One login: the genuine tokens, their headers and claims."""

    def __init__(self, otpd, fake, phone=PHONE):
        body = otpd.login(fake, phone).json()
        self.user = body["user"]
        self.access = body["access_token"]
        self.refresh = body["refresh_token"]
        self.ah, self.ac, self.asig = parts(self.access)
        self.rh, self.rc, self.rsig = parts(self.refresh)


def now():
    return int(time.time())


# ----------------------------------------------------------------------------------------
# HS256 (the default)

@pytest.fixture
def hs(otpd, fake):
    s = Session(otpd, fake)
    s.key = otpd.env["SECRET_KEY"]
    return s


def test_control_forged_with_the_right_key_is_accepted(otpd, fake, hs):
    """The forging here is right: the genuine claims, signed with SECRET_KEY, pass."""
    assert hs.ah.get("alg") == "HS256"
    r = me(otpd, forge({"alg": "HS256", "typ": "JWT"}, hs.ac, hs.key))
    assert r.status_code == 200 and r.json() == hs.user, r.text
    fresh = dict(hs.ac, jti=secrets.token_hex(16), iat=now(), exp=now() + 60)
    assert me(otpd, forge({"alg": "HS256"}, fresh, hs.key)).status_code == 200
    r = refresh(otpd, forge({"alg": "HS256"}, hs.rc, hs.key))
    assert r.status_code == 200, r.text


MALFORMED = ["garbage", "two-parts", "four-parts", "dots", "empty-parts", "bad-chars",
             "padding", "header-not-json", "header-array", "header-bad-base64",
             "payload-not-json", "payload-array", "payload-bad-base64", "payload-trailing",
             "signature-truncated", "signature-longer", "space-inside", "5kb-garbage",
             "5kb-signed", "utf8-in-token"]


def malformed(name, s, kind):
    tok = s.access if kind == "access" else s.refresh
    h, c, sig = (s.ah, s.ac, s.asig) if kind == "access" else (s.rh, s.rc, s.rsig)
    p0, p1, p2 = tok.split(".")
    key = s.key

    def signed(h_seg, p_seg):
        si = h_seg + "." + p_seg
        return si + "." + b64u(hmac.new(key.encode(), si.encode(), hashlib.sha256).digest())
    return {
        "garbage": "garbage",
        "two-parts": p0 + "." + p1,
        "four-parts": tok + "." + p2,
        "dots": "..",
        "empty-parts": p0 + ".." + p2,
        "bad-chars": "!!!.@@@.###",
        "padding": tok + "=",
        "header-not-json": signed(b64u(b"not json"), p1),
        "header-array": signed(seg(["HS256"]), p1),
        "header-bad-base64": signed("eyJ*bGciOiJIUzI1NiJ9", p1),
        "payload-not-json": signed(p0, b64u(b"{user_id: 1}")),
        "payload-array": signed(p0, seg([c])),
        "payload-bad-base64": signed(p0, "e$" + p1[2:]),
        "payload-trailing": signed(p0, b64u(json.dumps(c).encode() + b" x")),
        "signature-truncated": tok[:-4],
        "signature-longer": tok + "AAAA",
        "space-inside": p0 + "." + p1[:10] + " " + p1[10:] + "." + p2,
        "5kb-garbage": "A" * 5000,
        "5kb-signed": forge({"alg": "HS256"}, dict(c, pad="x" * 5000), key),
        "utf8-in-token": p0 + "." + p1 + "é." + p2,
    }[name]


@pytest.mark.parametrize("kind", ["access", "refresh"])
@pytest.mark.parametrize("name", MALFORMED)
def test_malformed(otpd, hs, name, kind):
    tok = malformed(name, hs, kind)
    if name == "utf8-in-token":
        tok_bytes = tok.encode("utf-8")
        if kind == "access":
            r = otpd.get(ME, headers={"Authorization": b"Bearer " + tok_bytes})
            assert_invalid_token(r, name)
        else:
            assert_invalid_token(refresh(otpd, tok), name)
    else:
        refused_everywhere(otpd, tok, kind, name)
    if kind == "refresh":
        still_rotates(otpd, hs.refresh)
    else:
        assert me(otpd, hs.access).status_code == 200


def test_bad_signature(otpd, hs):
    for kind, tok, h, c in (("access", hs.access, hs.ah, hs.ac), ("refresh", hs.refresh, hs.rh, hs.rc)):
        p0, p1, p2 = tok.split(".")
        other = hs.refresh if kind == "access" else hs.access
        variants = {
            "flipped-middle": p0 + "." + p1 + "." + flip(p2, len(p2) // 2),
            "flipped-first": p0 + "." + p1 + "." + flip(p2, 0),
            "empty": p0 + "." + p1 + ".",
            "other-key": forge(h, c, hs.key + "x"),
            "key-prefix": forge(h, c, hs.key[:-1]),
            "empty-key": forge(h, c, b""),
            "signature-of-other-token": p0 + "." + p1 + "." + other.split(".")[2],
        }
        for name, t in variants.items():
            refused_everywhere(otpd, t, kind, "%s %s" % (kind, name))
    assert me(otpd, hs.access).status_code == 200
    still_rotates(otpd, hs.refresh)


def test_tampered_payload_and_header(otpd, fake, hs):
    other = Session(otpd, fake, phone_n(1))
    assert other.user["id"] != hs.user["id"]
    p0, p1, p2 = hs.access.split(".")
    as_other = dict(hs.ac, user_id=other.user["id"], sub=str(other.user["id"]))
    longer = dict(hs.ac, exp=hs.ac["exp"] + 86400)
    for name, t in {
        "other-user": p0 + "." + seg(as_other) + "." + p2,
        "longer-exp": p0 + "." + seg(longer) + "." + p2,
        "other-payload": p0 + "." + other.access.split(".")[1] + "." + p2,
        "header-kid-added": seg(dict(hs.ah, kid="x")) + "." + p1 + "." + p2,
        "header-reordered": seg(dict(reversed(list(hs.ah.items())))) + "." + p1 + "." + p2,
    }.items():
        if name == "header-reordered" and list(hs.ah) == list(reversed(list(hs.ah))):
            continue
        assert_invalid_token(me(otpd, t), name)
    # refresh: an access token relabelled as refresh, its signature kept
    q0, q1, q2 = hs.refresh.split(".")
    as_refresh = dict(hs.ac, token_type="refresh")
    refused_everywhere(otpd, p0 + "." + seg(as_refresh) + "." + p2, "refresh", "relabelled")
    refused_everywhere(otpd, q0 + "." + seg(dict(hs.rc, user_id=other.user["id"],
                                                 sub=str(other.user["id"]))) + "." + q2,
                       "refresh", "other-user")
    assert me(otpd, hs.access).status_code == 200
    assert me(otpd, other.access).json() == other.user
    still_rotates(otpd, hs.refresh)
    still_rotates(otpd, other.refresh)


NONE_HEADERS = [{"alg": "none"}, {"alg": "None"}, {"alg": "NONE"}, {"alg": "nOnE"},
                {"alg": ""}, {"alg": None}, {}, {"typ": "JWT"}, {"alg": "none", "typ": "JWT"}]


def test_alg_none(otpd, hs):
    for h in NONE_HEADERS:
        for kind, c, sig in (("access", hs.ac, hs.asig), ("refresh", hs.rc, hs.rsig)):
            refused_everywhere(otpd, forge(h, c, sig=""), kind, "%s %r empty sig" % (kind, h))
            refused_everywhere(otpd, forge(h, c, sig=sig), kind, "%s %r genuine sig" % (kind, h))
            refused_everywhere(otpd, forge(h, c, hs.key, alg="HS256"), kind,
                               "%s %r HS256 sig" % (kind, h))
    assert me(otpd, hs.access).status_code == 200
    still_rotates(otpd, hs.refresh)


def test_other_algorithms_with_the_right_key(otpd, hs):
    attacker = ec.generate_private_key(ec.SECP256R1())
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    for kind, c in (("access", hs.ac), ("refresh", hs.rc)):
        for name, t in {
            "HS384": forge({"alg": "HS384", "typ": "JWT"}, c, hs.key),
            "HS512": forge({"alg": "HS512", "typ": "JWT"}, c, hs.key),
            "hs256-lowercase": forge({"alg": "hs256"}, c, hs.key, alg="HS256"),
            "ES256-attacker": forge({"alg": "ES256"}, c, attacker),
            "RS256-attacker": forge({"alg": "RS256"}, c, rsa_key),
            "HS256-labelled-HS512": forge({"alg": "HS512"}, c, hs.key, alg="HS256"),
        }.items():
            refused_everywhere(otpd, t, kind, "%s %s" % (kind, name))
    # PyJWT agrees that HS384 is a different token
    with pytest.raises(jwt.InvalidAlgorithmError):
        jwt.decode(forge({"alg": "HS384"}, hs.ac, hs.key), hs.key, algorithms=["HS256"])
    assert me(otpd, hs.access).status_code == 200
    still_rotates(otpd, hs.refresh)


def test_expired_forged(otpd, hs):
    t = now()
    for kind, c in (("access", hs.ac), ("refresh", hs.rc)):
        for name, claims in {
            "exp-past": dict(c, iat=t - 3600, exp=t - 10),
            "exp-now-minus-1": dict(c, exp=t - 1),
            "exp-epoch": dict(c, iat=0, exp=1),
            "exp-negative": dict(c, exp=-1),
        }.items():
            refused_everywhere(otpd, forge({"alg": "HS256"}, claims, hs.key), kind,
                               "%s %s" % (kind, name))
    still_rotates(otpd, hs.refresh)


def test_not_yet_valid(otpd, hs):
    t = now()
    for kind, c in (("access", hs.ac), ("refresh", hs.rc)):
        for name, claims in {
            "iat-future": dict(c, iat=t + 3600, exp=t + 7200),
            "nbf-future": dict(c, iat=t, nbf=t + 3600),
            "nbf-future-string": dict(c, iat=t, nbf=str(t + 3600)),
        }.items():
            refused_everywhere(otpd, forge({"alg": "HS256"}, claims, hs.key), kind,
                               "%s %s" % (kind, name))
    # an nbf in the past is fine (control)
    assert me(otpd, forge({"alg": "HS256"}, dict(hs.ac, nbf=t - 10), hs.key)).status_code == 200
    still_rotates(otpd, hs.refresh)


def _without(d, k):
    return {x: v for x, v in d.items() if x != k}


BAD_CLAIMS = {
    "no-user_id": lambda c: _without(c, "user_id"),
    "user_id-string": lambda c: dict(c, user_id=str(c["user_id"])),
    "user_id-float": lambda c: dict(c, user_id=float(c["user_id"]) + 0.5),
    "user_id-bool": lambda c: dict(c, user_id=True),
    "user_id-null": lambda c: dict(c, user_id=None),
    "user_id-zero": lambda c: dict(c, user_id=0, sub="0"),
    "user_id-negative": lambda c: dict(c, user_id=-1, sub="-1"),
    "user_id-huge": lambda c: dict(c, user_id=2 ** 64, sub=str(2 ** 64)),
    "user_id-unknown": lambda c: dict(c, user_id=987654, sub="987654"),
    "sub-mismatch": lambda c: dict(c, sub=str(c["user_id"] + 1)),
    "sub-missing": lambda c: _without(c, "sub"),
    "sub-integer": lambda c: dict(c, sub=c["user_id"]),
    "sub-padded": lambda c: dict(c, sub="0" + str(c["user_id"])),
    "no-jti": lambda c: _without(c, "jti"),
    "jti-empty": lambda c: dict(c, jti=""),
    "jti-integer": lambda c: dict(c, jti=12345678),
    "no-token_type": lambda c: _without(c, "token_type"),
    "token_type-refresh": lambda c: dict(c, token_type="refresh"),
    "token_type-Access": lambda c: dict(c, token_type="Access"),
    "token_type-list": lambda c: dict(c, token_type=["access"]),
    "no-exp": lambda c: _without(c, "exp"),
    "exp-string": lambda c: dict(c, exp=str(c["exp"])),
    "no-iat": lambda c: _without(c, "iat"),
    "claims-empty": lambda c: {},
}


@pytest.mark.parametrize("name", list(BAD_CLAIMS))
def test_bad_claims_on_me(otpd, hs, name):
    claims = BAD_CLAIMS[name](dict(hs.ac))
    assert_invalid_token(me(otpd, forge({"alg": "HS256", "typ": "JWT"}, claims, hs.key)), name)


@pytest.mark.parametrize("name", ["no-user_id", "user_id-string", "sub-mismatch", "no-jti",
                                  "token_type-access", "user_id-of-another-user",
                                  "jti-unknown", "no-exp", "user_id-unknown"])
def test_bad_claims_on_refresh(otpd, fake, hs, name):
    """Signed with the right key and carrying the live record's jti: refused all the same."""
    other = Session(otpd, fake, phone_n(2))
    c = dict(hs.rc)
    claims = {
        "token_type-access": lambda: dict(c, token_type="access"),
        "user_id-of-another-user": lambda: dict(c, user_id=other.user["id"],
                                                sub=str(other.user["id"])),
        "jti-unknown": lambda: dict(c, jti=secrets.token_hex(16)),
    }.get(name, lambda: BAD_CLAIMS[name](c))()
    refused_everywhere(otpd, forge({"alg": "HS256", "typ": "JWT"}, claims, hs.key), "refresh", name)
    still_rotates(otpd, hs.refresh)
    still_rotates(otpd, other.refresh)


def test_wrong_token_type(otpd, hs):
    refused_everywhere(otpd, hs.refresh, "access", "refresh token on /me")
    refused_everywhere(otpd, hs.access, "refresh", "access token on refresh")
    assert me(otpd, hs.access).status_code == 200
    still_rotates(otpd, hs.refresh)


def test_refusals_all_look_alike(otpd, fake, hs):
    """No detail that helps an attacker: every kind of refusal is the same problem."""
    t = now()
    r_refresh = still_rotates(otpd, hs.refresh)["refresh_token"]
    refused = [
        me(otpd, "garbage"),
        otpd.get(ME),
        me(otpd, forge({"alg": "none"}, hs.ac)),
        me(otpd, forge({"alg": "HS256"}, hs.ac, "wrong")),
        me(otpd, forge({"alg": "HS256"}, dict(hs.ac, exp=t - 5), hs.key)),
        me(otpd, forge({"alg": "HS256"}, dict(hs.ac, user_id=987654, sub="987654"), hs.key)),
        me(otpd, hs.refresh),
        refresh(otpd, hs.access),
        refresh(otpd, forge({"alg": "HS256"}, dict(hs.rc, jti="0" * 32), hs.key)),
        otpd.post(REFRESH),
    ]
    otpd.post("/api/v1/usr/logout", json={"refresh_token": r_refresh})
    refused.append(refresh(otpd, r_refresh))          # a revoked family
    bodies = [assert_invalid_token(r) for r in refused]
    first = bodies[0]
    for b in bodies[1:]:
        assert b == first, "refusals differ:\n%s\n%s" % (first, b)
    assert set(first) <= {"type", "title", "status", "detail", "code", "instance",
                          "request_id"}, first


# ----------------------------------------------------------------------------------------
# ES256: alg confusion, kid

@pytest.fixture
def es(otpd_factory, fake, tmp_path):
    key = ec.generate_private_key(ec.SECP256R1())
    path = tmp_path / "es256.pem"
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                       serialization.PrivateFormat.TraditionalOpenSSL,
                                       serialization.NoEncryption()))
    otpd = otpd_factory.start({"JWT_ALGORITHM": "ES256", "JWT_PRIVATE_KEY_FILE": str(path),
                               "OTP_SEND_LIMIT": "100"})
    s = Session(otpd, fake)
    s.otpd, s.priv, s.path, s.key = otpd, key, path, otpd.env["SECRET_KEY"]
    s.pub_pem = key.public_key().public_bytes(serialization.Encoding.PEM,
                                              serialization.PublicFormat.SubjectPublicKeyInfo)
    s.pub_der = key.public_key().public_bytes(serialization.Encoding.DER,
                                              serialization.PublicFormat.SubjectPublicKeyInfo)
    s.kid = s.ah.get("kid")
    return s


def test_es256_control_forged_with_the_right_key(es):
    assert es.ah.get("alg") == "ES256" and es.kid
    r = me(es.otpd, forge({"alg": "ES256", "typ": "JWT", "kid": es.kid}, es.ac, es.priv))
    assert r.status_code == 200 and r.json() == es.user, r.text
    r = refresh(es.otpd, forge({"alg": "ES256", "kid": es.kid}, es.rc, es.priv))
    assert r.status_code == 200, r.text


def test_es256_alg_confusion(es):
    """HS256 tokens keyed with the public key (every form of it an attacker can get), and
    with the SECRET_KEY that still keys the code hashes: all refused."""
    pub_numbers = es.priv.public_key().public_numbers()
    raw_point = b"\x04" + pub_numbers.x.to_bytes(32, "big") + pub_numbers.y.to_bytes(32, "big")
    hmac_keys = {
        "pem": es.pub_pem,
        "pem-no-newline": es.pub_pem.rstrip(b"\n"),
        "pem-crlf": es.pub_pem.replace(b"\n", b"\r\n"),
        "der": es.pub_der,
        "point": raw_point,
        "private-pem-file": es.path.read_bytes(),
        "secret-key": es.key.encode(),
    }
    for kind, c in (("access", es.ac), ("refresh", es.rc)):
        for kname, k in hmac_keys.items():
            for alg in ("HS256", "HS384", "HS512"):
                for h in ({"alg": alg, "typ": "JWT", "kid": es.kid}, {"alg": alg}):
                    refused_everywhere(es.otpd, forge(h, c, k), kind,
                                       "%s %s keyed by %s, kid %s" % (kind, alg, kname, "kid" in h))
    # PyJWT would refuse to produce these (it knows the PEM is not an HMAC secret)
    with pytest.raises(jwt.InvalidKeyError):
        jwt.encode(es.ac, es.pub_pem, algorithm="HS256")
    assert me(es.otpd, es.access).status_code == 200
    still_rotates(es.otpd, es.refresh)


def test_es256_kid(es):
    attacker = ec.generate_private_key(ec.SECP256R1())
    an = attacker.public_key().public_numbers()
    att_jwk = {"kty": "EC", "crv": "P-256", "x": b64u(an.x.to_bytes(32, "big")),
               "y": b64u(an.y.to_bytes(32, "big"))}
    att_kid = b64u(hashlib.sha256(json.dumps(att_jwk, sort_keys=True,
                                             separators=(",", ":")).encode()).digest())
    for kind, c in (("access", es.ac), ("refresh", es.rc)):
        for name, t in {
            "no-kid": forge({"alg": "ES256", "typ": "JWT"}, c, es.priv),
            "unknown-kid": forge({"alg": "ES256", "kid": att_kid}, c, es.priv),
            "kid-empty": forge({"alg": "ES256", "kid": ""}, c, es.priv),
            "kid-integer": forge({"alg": "ES256", "kid": 1}, c, es.priv),
            "kid-null": forge({"alg": "ES256", "kid": None}, c, es.priv),
            "kid-case": forge({"alg": "ES256", "kid": es.kid.swapcase()}, c, es.priv),
            "kid-path": forge({"alg": "ES256", "kid": "../../../../dev/null"}, c, es.priv),
            "real-kid-attacker-key": forge({"alg": "ES256", "kid": es.kid}, c, attacker),
            "attacker-kid-attacker-key": forge({"alg": "ES256", "kid": att_kid}, c, attacker),
            "embedded-jwk": forge({"alg": "ES256", "kid": att_kid, "jwk": att_jwk}, c, attacker),
            "embedded-jwk-real-kid": forge({"alg": "ES256", "kid": es.kid, "jwk": att_jwk},
                                           c, attacker),
            "jku": forge({"alg": "ES256", "kid": att_kid,
                          "jku": "http://127.0.0.1:1/jwks.json"}, c, attacker),
            "alg-none-real-kid": forge({"alg": "none", "kid": es.kid}, c, sig=""),
            "signature-flipped": (lambda t: t[:-20] + flip(t[-20:], 5))(
                forge({"alg": "ES256", "kid": es.kid}, c, es.priv)),
            "signature-der": forge({"alg": "ES256", "kid": es.kid}, c, sig=es.priv.sign(
                (seg({"alg": "ES256", "kid": es.kid}) + "." + seg(c)).encode(),
                ec.ECDSA(hashes.SHA256()))),
        }.items():
            refused_everywhere(es.otpd, t, kind, "%s %s" % (kind, name))
    assert me(es.otpd, es.access).status_code == 200
    still_rotates(es.otpd, es.refresh)


def test_es256_expired_and_bad_claims(es):
    t = now()
    h = {"alg": "ES256", "kid": es.kid}
    for name, claims in {
        "expired": dict(es.ac, exp=t - 10),
        "iat-future": dict(es.ac, iat=t + 3600, exp=t + 7200),
        "nbf-future": dict(es.ac, nbf=t + 3600),
        "no-user_id": _without(es.ac, "user_id"),
        "sub-mismatch": dict(es.ac, sub="999"),
        "no-jti": _without(es.ac, "jti"),
        "refresh-type": dict(es.ac, token_type="refresh"),
    }.items():
        assert_invalid_token(me(es.otpd, forge(h, claims, es.priv)), name)
    refused_everywhere(es.otpd, es.refresh, "access", "refresh token on /me")
    refused_everywhere(es.otpd, es.access, "refresh", "access token on refresh")
    still_rotates(es.otpd, es.refresh)
