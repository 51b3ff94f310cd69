"""Sessions (issue 4, docs/API.md §3 "Tokens"): refresh with rotation, the grace window and reuse
detection (a replayed rotated-out token revokes its whole family), the parallel refresh race,
logout, /me, inactive and deleted users, the cookie-only browser flow, the Origin check on
cookie-authenticated requests, the background purge of expired refresh records, a day of
refreshing.  Forged and malformed tokens: test_tokens_forged.py; ES256 and JWKS: test_jwks.py.

JWT_REFRESH_GRACE (default 10 s): a rotated-out token presented again inside the window, while
its successor is unused, gets the same pair again; the tests of reuse detection set it to 0."""

import time

import jwt
import pytest
import requests

import conftest
from conftest import (PHONE, VERIFY, assert_problem, assert_validation, cookies_of, get_code,
                      parallel, phone_n, wait_for)

REFRESH = "/api/v1/usr/token/refresh"
LOGOUT = "/api/v1/usr/logout"
ME = "/api/v1/usr/me"

USER_KEYS = {"id", "phone_number", "email", "username", "first_name", "last_name"}

# several logins of one number in one test (each login is one send)
pytestmark = pytest.mark.otpd_env(OTP_SEND_LIMIT="100")


# ----------------------------------------------------------------------------------------
# helpers

def refresh(otpd, token, **kw):
    return otpd.post(REFRESH, json={"refresh_token": token}, **kw)


def refresh_cookie(otpd, token, origin=None, **kw):
    headers = {"Cookie": "refresh_token=%s" % token}
    if origin is not None:
        headers["Origin"] = origin
    return otpd.post(REFRESH, headers=headers, **kw)


def logout(otpd, token, **kw):
    return otpd.post(LOGOUT, json={"refresh_token": token}, **kw)


def logout_cookie(otpd, token, origin=None, **kw):
    headers = {"Cookie": "refresh_token=%s" % token}
    if origin is not None:
        headers["Origin"] = origin
    return otpd.post(LOGOUT, headers=headers, **kw)


def me(otpd, access, **kw):
    return otpd.get(ME, headers={"Authorization": "Bearer %s" % access}, **kw)


def ok_pair(r):
    """A 200 refresh: the body is exactly the new pair; returns (access, refresh)."""
    assert r.status_code == 200, "refresh: %d %s" % (r.status_code, r.text[:400])
    assert r.headers["Content-Type"].split(";")[0].strip() == "application/json"
    body = r.json()
    assert set(body) == {"access_token", "refresh_token"}, body
    assert all(isinstance(v, str) and v.startswith("eyJ") for v in body.values()), body
    return body["access_token"], body["refresh_token"]


def assert_invalid_token(r):
    body = assert_problem(r, 401, "invalid_token")
    www = r.headers.get("WWW-Authenticate", "")
    assert www.lower().startswith("bearer") and 'error="invalid_token"' in www, \
        "WWW-Authenticate: %r" % www
    assert "access_token" not in r.raw.headers.get("Set-Cookie", ""), "a refusal sets no cookie"
    return body


def assert_cookies_cleared(r):
    ck = cookies_of(r)
    for name in ("access_token", "refresh_token"):
        assert name in ck, "logout must clear %s: %s" % (name, list(ck))
        c = ck[name]
        assert c["value"] == "", c["raw"]
        assert c["attrs"].get("max-age") == "0", c["raw"]
        assert c["attrs"].get("path") == "/", c["raw"]
        assert c["attrs"].get("httponly") is True, c["raw"]


def assert_logout_ok(r):
    assert r.status_code == 204, "logout: %d %s" % (r.status_code, r.text[:300])
    assert r.content == b"", r.content[:200]
    assert_cookies_cleared(r)


def claims_of(otpd, token):
    return jwt.decode(token, otpd.env["SECRET_KEY"], algorithms=["HS256"], leeway=5,
                      options={"require": ["exp", "iat", "jti", "sub"]})


def db_exec(otpd, sql, args=()):
    conftest.db_query(otpd, sql, args)


FALSE = "false" if conftest.BACKEND == "postgres" else "0"   # is_active: boolean / integer




# ----------------------------------------------------------------------------------------
# refresh: the answer

def test_refresh_rotates_body_and_cookies(otpd, fake):
    login = otpd.login(fake, PHONE).json()
    r = refresh(otpd, login["refresh_token"])
    access, rtok = ok_pair(r)
    assert access != login["access_token"] and rtok != login["refresh_token"]
    uid = login["user"]["id"]
    old_jti = claims_of(otpd, login["refresh_token"])["jti"]
    for token, kind, ttl in ((access, "access", 300), (rtok, "refresh", 86400)):
        c = claims_of(otpd, token)
        assert c["token_type"] == kind
        assert c["user_id"] == uid and c["sub"] == str(uid)
        assert c["exp"] - c["iat"] == ttl
        assert abs(c["iat"] - time.time()) < 5
        assert c["jti"] != old_jti
    ck = cookies_of(r)
    assert set(ck) >= {"access_token", "refresh_token"}, ck
    for name, value, ttl in (("access_token", access, 300), ("refresh_token", rtok, 86400)):
        c = ck[name]
        assert c["value"] == value, "the cookie carries the token of the body"
        a = c["attrs"]
        assert a.get("httponly") is True and a.get("path") == "/", c["raw"]
        assert str(a.get("samesite", "")).lower() == "lax", c["raw"]
        assert "secure" not in a, c["raw"]
        # Max-Age: the lifetime (the refresh cookie: what is left of it, whole seconds)
        assert ttl - 2 <= int(a.get("max-age", "-1")) <= ttl, c["raw"]
    # the new access token works, and names the same user
    r = me(otpd, access)
    assert r.status_code == 200, r.text
    assert r.json() == login["user"]


def test_refresh_form_body(otpd, fake):
    login = otpd.login(fake, PHONE).json()
    r = otpd.post(REFRESH, data={"refresh_token": login["refresh_token"]})
    ok_pair(r)


@pytest.mark.parametrize("how", ["no-body", "empty-json", "null", "form-other-field"])
def test_refresh_from_cookie_when_body_names_none(otpd, fake, how):
    login = otpd.login(fake, PHONE).json()
    headers = {"Cookie": "refresh_token=%s" % login["refresh_token"]}
    kw = {"no-body": {}, "empty-json": {"json": {}}, "null": {"json": {"refresh_token": None}},
          "form-other-field": {"data": {"x": "1"}}}[how]
    access, _ = ok_pair(otpd.post(REFRESH, headers=headers, **kw))
    assert me(otpd, access).status_code == 200


def test_refresh_body_wins_over_cookie(otpd, fake):
    a = otpd.login(fake, PHONE).json()
    b = otpd.login(fake, PHONE).json()
    # body good, cookie garbage: the body is used
    ok_pair(otpd.post(REFRESH, json={"refresh_token": a["refresh_token"]},
                      headers={"Cookie": "refresh_token=garbage"}))
    # body garbage, cookie good: the body is used (and refused), the cookie's token is untouched
    assert_invalid_token(otpd.post(REFRESH, json={"refresh_token": "garbage"},
                                   headers={"Cookie": "refresh_token=%s" % b["refresh_token"]}))
    ok_pair(refresh(otpd, b["refresh_token"]))


@pytest.mark.parametrize("how", ["no-body", "empty-json", "null", "empty-string",
                                 "empty-cookie", "form-empty"])
def test_refresh_missing_token(otpd, how):
    kw = {"no-body": {}, "empty-json": {"json": {}}, "null": {"json": {"refresh_token": None}},
          "empty-string": {"json": {"refresh_token": ""}},
          "empty-cookie": {"headers": {"Cookie": "refresh_token="}},
          "form-empty": {"data": {"refresh_token": ""}}}[how]
    assert_invalid_token(otpd.post(REFRESH, **kw))


@pytest.mark.parametrize("value", [123, 1.5, True, [], ["TOKEN"], {"t": "TOKEN"}],
                         ids=["int", "float", "bool", "empty-list", "list", "object"])
def test_refresh_token_not_a_string(otpd, fake, value):
    login = otpd.login(fake, PHONE).json()
    if value == ["TOKEN"]:
        value = [login["refresh_token"]]
    elif value == {"t": "TOKEN"}:
        value = {"t": login["refresh_token"]}
    headers = {"Cookie": "refresh_token=%s" % login["refresh_token"]}
    assert_validation(otpd.post(REFRESH, json={"refresh_token": value}, headers=headers),
                      "refresh_token")
    ok_pair(refresh(otpd, login["refresh_token"]))  # untouched


def test_refresh_malformed_body(otpd, fake):
    login = otpd.login(fake, PHONE).json()
    for body in (b"{", b"[]", b'"x"'):
        r = otpd.post(REFRESH, data=body, headers={"Content-Type": "application/json",
                                                   "Cookie": "refresh_token=%s" % login["refresh_token"]})
        assert_problem(r, 400, "malformed_request")
    ok_pair(refresh(otpd, login["refresh_token"]))


def test_methods(otpd):
    for method, path, allow in (("GET", REFRESH, "POST"), ("GET", LOGOUT, "POST"),
                                ("POST", ME, "GET")):
        r = otpd.request(method, path)
        assert_problem(r, 405, "method_not_allowed")
        assert allow in r.headers.get("Allow", ""), r.headers


@pytest.mark.otpd_env(COOKIE_SECURE="true", JWT_ACCESS_TTL="120", JWT_REFRESH_TTL="3600")
def test_refresh_and_logout_cookies_secure_and_ttls(otpd, fake):
    login = otpd.login(fake, PHONE).json()
    r = refresh(otpd, login["refresh_token"])
    _, rtok = ok_pair(r)
    ck = cookies_of(r)
    assert ck["access_token"]["attrs"].get("max-age") == "120", ck["access_token"]["raw"]
    assert 3598 <= int(ck["refresh_token"]["attrs"].get("max-age")) <= 3600, ck["refresh_token"]["raw"]
    for c in ck.values():
        assert c["attrs"].get("secure") is True, c["raw"]
    r = logout(otpd, rtok)
    assert_logout_ok(r)
    for c in cookies_of(r).values():
        assert c["attrs"].get("secure") is True, "clearing a Secure cookie: %s" % c["raw"]


# ----------------------------------------------------------------------------------------
# rotation, grace, reuse detection

def test_rotated_token_inside_grace_returns_same_pair(otpd, fake):
    """Default grace (10 s): a client that lost the answer retries and gets the same pair; the
    retry does not end the session."""
    login = otpd.login(fake, PHONE).json()
    r0 = login["refresh_token"]
    first = refresh(otpd, r0)
    a1, r1 = ok_pair(first)
    again = refresh(otpd, r0)
    assert ok_pair(again) == (a1, r1), "inside the grace window: the same pair again"
    assert {k: v["value"] for k, v in cookies_of(again).items()} == \
        {"access_token": a1, "refresh_token": r1}
    # once more from the cookie: still the same pair
    assert ok_pair(refresh_cookie(otpd, r0)) == (a1, r1)
    # the successor is live and rotates normally
    a2, r2 = ok_pair(refresh(otpd, r1))
    assert r2 not in (r0, r1)
    assert me(otpd, a2).status_code == 200
    ok_pair(refresh(otpd, r2))


def test_grace_replay_after_successor_rotated_revokes_family(otpd, fake):
    """Inside the grace window but the successor has been used: that is reuse."""
    login = otpd.login(fake, PHONE).json()
    r0 = login["refresh_token"]
    _, r1 = ok_pair(refresh(otpd, r0))
    _, r2 = ok_pair(refresh(otpd, r1))
    assert_invalid_token(refresh(otpd, r0))
    assert_invalid_token(refresh(otpd, r2))   # the live descendant is revoked
    assert_invalid_token(refresh(otpd, r1))
    assert_invalid_token(refresh(otpd, r0))


@pytest.mark.otpd_env(JWT_REFRESH_GRACE="0")
def test_reuse_revokes_family_only(otpd, fake):
    """The thief refreshes first; the victim's replay of the same token is refused and the
    whole family (the thief's successor and its descendants) dies.  Another login of the same
    user (another family) is untouched."""
    fam_a = otpd.login(fake, PHONE).json()
    fam_b = otpd.login(fake, PHONE).json()
    assert fam_a["user"]["id"] == fam_b["user"]["id"]
    a0 = fam_a["refresh_token"]
    _, a1 = ok_pair(refresh(otpd, a0))
    acc2, a2 = ok_pair(refresh(otpd, a1))
    assert_invalid_token(refresh(otpd, a0))          # replay, no grace
    assert_invalid_token(refresh(otpd, a2))          # the live descendant
    assert_invalid_token(refresh(otpd, a1))
    assert_invalid_token(refresh_cookie(otpd, a2))
    # access tokens are stateless: still valid until they expire
    assert me(otpd, acc2).status_code == 200
    # the other family lives on
    _, b1 = ok_pair(refresh(otpd, fam_b["refresh_token"]))
    ok_pair(refresh(otpd, b1))


@pytest.mark.otpd_env(JWT_REFRESH_GRACE="0")
def test_reuse_of_the_last_rotated_token(otpd, fake):
    login = otpd.login(fake, PHONE).json()
    r0 = login["refresh_token"]
    _, r1 = ok_pair(refresh(otpd, r0))
    assert_invalid_token(refresh(otpd, r0))     # immediately: no grace at all
    assert_invalid_token(refresh(otpd, r1))     # its successor, never used, is dead too


@pytest.mark.otpd_env(JWT_REFRESH_GRACE="1")
def test_grace_window_ends(otpd, fake):
    login = otpd.login(fake, PHONE).json()
    r0 = login["refresh_token"]
    _, r1 = ok_pair(refresh(otpd, r0))
    time.sleep(1.3)
    assert_invalid_token(refresh(otpd, r0))
    assert_invalid_token(refresh(otpd, r1))


@pytest.mark.otpd_env(JWT_REFRESH_GRACE="0")
def test_parallel_refresh_without_grace(otpd, fake):
    """10 parallel refreshes of one token: exactly one wins; the 9 others are replays, so the
    family is revoked and the winner's new token is dead too.  Never two live tokens."""
    login = otpd.login(fake, PHONE).json()
    r0 = login["refresh_token"]
    rs = parallel(10, lambda i: refresh(otpd, r0))
    ok = [r for r in rs if r.status_code == 200]
    assert len(ok) == 1, sorted(r.status_code for r in rs)
    for r in rs:
        if r.status_code != 200:
            assert_invalid_token(r)
    _, winner = ok_pair(ok[0])
    assert_invalid_token(refresh(otpd, winner))
    assert_invalid_token(refresh(otpd, r0))


def test_parallel_refresh_inside_grace(otpd, fake):
    """With the default grace window all 10 get the same pair: one family continues."""
    login = otpd.login(fake, PHONE).json()
    r0 = login["refresh_token"]
    rs = parallel(10, lambda i: refresh(otpd, r0))
    pairs = {ok_pair(r) for r in rs}
    assert len(pairs) == 1, "never two different live tokens: %d pairs" % len(pairs)
    (access, r1), = pairs
    assert me(otpd, access).status_code == 200
    _, r2 = ok_pair(refresh(otpd, r1))
    ok_pair(refresh(otpd, r2))


@pytest.mark.otpd_env(JWT_REFRESH_GRACE="0")
def test_parallel_refresh_of_many_families(otpd, fake):
    """Different families refreshed at the same time do not disturb each other."""
    tokens = [otpd.login(fake, phone_n(i)).json()["refresh_token"] for i in range(8)]
    rs = parallel(8, lambda i: refresh(otpd, tokens[i]))
    nxt = [ok_pair(r)[1] for r in rs]
    rs = parallel(8, lambda i: refresh(otpd, nxt[i]))
    for r in rs:
        ok_pair(r)


def test_a_day_of_refreshing(otpd, fake):
    """A client refreshes all day (each time with the token it got last), then logs out."""
    login = otpd.login(fake, PHONE).json()
    seen = [login["refresh_token"]]
    access = login["access_token"]
    for _ in range(20):
        access, rtok = ok_pair(refresh(otpd, seen[-1]))
        assert rtok not in seen
        seen.append(rtok)
    assert len({claims_of(otpd, t)["jti"] for t in seen}) == len(seen)
    r = me(otpd, access)
    assert r.status_code == 200 and r.json() == login["user"]
    assert_logout_ok(logout(otpd, seen[-1]))
    assert_invalid_token(refresh(otpd, seen[-1]))
    assert_invalid_token(refresh(otpd, seen[0]))
    assert_invalid_token(refresh(otpd, seen[10]))


# ----------------------------------------------------------------------------------------
# logout

def test_logout_revokes_family_and_clears_cookies(otpd, fake):
    login = otpd.login(fake, PHONE).json()
    other = otpd.login(fake, PHONE).json()          # another device of the same user
    r0 = login["refresh_token"]
    a1, r1 = ok_pair(refresh(otpd, r0))
    r = logout(otpd, r1)
    assert_logout_ok(r)
    assert "Content-Type" not in r.headers or r.headers.get("Content-Length") in (None, "0")
    assert_invalid_token(refresh(otpd, r1))
    assert_invalid_token(refresh(otpd, r0))
    assert_invalid_token(refresh_cookie(otpd, r1))
    # documented: access tokens are stateless, valid until they expire even after logout
    r = me(otpd, a1)
    assert r.status_code == 200, r.text
    assert me(otpd, login["access_token"]).status_code == 200
    # the other device is still logged in
    ok_pair(refresh(otpd, other["refresh_token"]))
    # idempotent
    assert_logout_ok(logout(otpd, r1))
    assert_logout_ok(logout(otpd, r0))


def test_logout_with_rotated_out_token_revokes_successor(otpd, fake):
    login = otpd.login(fake, PHONE).json()
    r0 = login["refresh_token"]
    _, r1 = ok_pair(refresh(otpd, r0))
    assert_logout_ok(logout(otpd, r0))
    assert_invalid_token(refresh(otpd, r1))


def test_logout_from_cookie_and_form(otpd, fake):
    a = otpd.login(fake, PHONE).json()
    b = otpd.login(fake, PHONE).json()
    assert_logout_ok(logout_cookie(otpd, a["refresh_token"]))
    assert_invalid_token(refresh(otpd, a["refresh_token"]))
    assert_logout_ok(otpd.post(LOGOUT, data={"refresh_token": b["refresh_token"]}))
    assert_invalid_token(refresh(otpd, b["refresh_token"]))


@pytest.mark.parametrize("how", ["no-body", "empty-json", "null", "empty-string", "garbage",
                                 "two-parts", "forged", "empty-cookie", "garbage-cookie"])
def test_logout_missing_or_bad_token_is_204(otpd, fake, how):
    login = otpd.login(fake, PHONE).json()
    forged = jwt.encode({"token_type": "refresh", "user_id": login["user"]["id"],
                         "sub": str(login["user"]["id"]), "iat": int(time.time()),
                         "exp": int(time.time()) + 600,
                         "jti": claims_of(otpd, login["refresh_token"])["jti"]},
                        "not-the-secret-key", algorithm="HS256")
    kw = {"no-body": {}, "empty-json": {"json": {}}, "null": {"json": {"refresh_token": None}},
          "empty-string": {"json": {"refresh_token": ""}},
          "garbage": {"json": {"refresh_token": "garbage"}},
          "two-parts": {"json": {"refresh_token": "eyJhbGciOiJIUzI1NiJ9.eyJ9"}},
          "forged": {"json": {"refresh_token": forged}},
          "empty-cookie": {"headers": {"Cookie": "refresh_token="}},
          "garbage-cookie": {"headers": {"Cookie": "refresh_token=garbage"}}}[how]
    assert_logout_ok(otpd.post(LOGOUT, **kw))
    # nothing was revoked: a forged token with the real jti must not end the real session
    ok_pair(refresh(otpd, login["refresh_token"]))


JSON_CT = "application/json"
FORM_CT = "application/x-www-form-urlencoded"
UNUSABLE_BODIES = [
    ("truncated-json", b'{"refresh_token": "eyJ', JSON_CT),
    ("not-json", b"refresh_token", JSON_CT),
    ("array", b'["eyJhbGciOiJIUzI1NiJ9.e30.x"]', JSON_CT),
    ("string", b'"eyJhbGciOiJIUzI1NiJ9.e30.x"', JSON_CT),
    ("json-null", b"null", JSON_CT),
    ("number-token", b'{"refresh_token": 123}', JSON_CT),
    ("object-token", b'{"refresh_token": {"a": 1}}', JSON_CT),
    ("duplicate-keys", b'{"refresh_token": "a", "refresh_token": "b"}', JSON_CT),
    ("invalid-utf8", b'{"refresh_token": "\xff"}', JSON_CT),
    ("form-duplicate", b"refresh_token=a&refresh_token=b", FORM_CT),
    ("form-invalid-utf8", b"refresh_token=%FF", FORM_CT),
]


@pytest.mark.parametrize("body,ctype", [(b, c) for _, b, c in UNUSABLE_BODIES],
                         ids=[i for i, _, _ in UNUSABLE_BODIES])
def test_logout_with_unusable_body_is_204_and_uses_the_cookie(otpd, fake, body, ctype):
    """A logout answers 204 with both cookies cleared whatever it is given: a body that cannot
    be used (malformed, not an object, a token that is not a string, a bad form) counts as a
    body that names no token, so the refresh_token cookie is the one revoked, as with no body.
    Refresh still refuses such a body (400)."""
    a = otpd.login(fake, PHONE).json()
    b = otpd.login(fake, PHONE).json()
    assert_logout_ok(otpd.post(LOGOUT, data=body, headers={"Content-Type": ctype}))
    r = otpd.post(LOGOUT, data=body, headers={"Content-Type": ctype,
                                              "Cookie": "refresh_token=%s" % a["refresh_token"]})
    assert_logout_ok(r)
    assert_invalid_token(refresh(otpd, a["refresh_token"]))
    ok_pair(refresh(otpd, b["refresh_token"]))   # never named: untouched
    r = otpd.post(REFRESH, data=body, headers={"Content-Type": ctype})
    assert_problem(r, 400, codes=("malformed_request", "validation_error"))


@pytest.mark.parametrize("body,ctype", [(b'{"refresh_token": "eyJ', JSON_CT),
                                        (b"refresh_token=a&refresh_token=b", FORM_CT)],
                         ids=["json", "form"])
def test_logout_unusable_body_with_cookie_from_foreign_origin_is_403(otpd, fake, body, ctype):
    """The cookie that an unusable body falls back to is still cookie authentication: from a
    foreign Origin it is 403, and nothing is revoked or cleared."""
    rt = otpd.login(fake, PHONE).json()["refresh_token"]
    r = otpd.post(LOGOUT, data=body, headers={"Content-Type": ctype, "Origin": "https://evil.example",
                                              "Cookie": "refresh_token=%s" % rt})
    assert_problem(r, 403, "forbidden")
    assert not cookies_of(r)
    ok_pair(refresh(otpd, rt))


def test_logout_too_large_or_unsupported_body_is_still_refused(otpd, fake):
    """413 and 415 stay as on every endpoint, also for logout."""
    rt = otpd.login(fake, PHONE).json()["refresh_token"]
    cookie = {"Cookie": "refresh_token=%s" % rt}
    big = ('{"refresh_token": "%s"}' % ("x" * 5000)).encode()
    assert_problem(otpd.post(LOGOUT, data=big, headers=dict(cookie, **{"Content-Type": JSON_CT})),
                   413, "payload_too_large")
    assert_problem(otpd.post(LOGOUT, data=b"refresh_token", headers=dict(cookie, **{"Content-Type": "text/plain"})),
                   415, "unsupported_media_type")
    assert_problem(otpd.post(LOGOUT, data=b"refresh_token", headers=cookie), 415, "unsupported_media_type")
    ok_pair(refresh(otpd, rt))   # none of them revoked anything


def test_logout_with_access_token_revokes_nothing(otpd, fake):
    login = otpd.login(fake, PHONE).json()
    assert_logout_ok(logout(otpd, login["access_token"]))
    ok_pair(refresh(otpd, login["refresh_token"]))


def test_logout_of_revoked_family_is_204(otpd, fake):
    login = otpd.login(fake, PHONE).json()
    for _ in range(3):
        assert_logout_ok(logout(otpd, login["refresh_token"]))
    assert_invalid_token(refresh(otpd, login["refresh_token"]))


# ----------------------------------------------------------------------------------------
# /me

def test_me_bearer_and_cookie(otpd, fake):
    login = otpd.login(fake, PHONE).json()
    access = login["access_token"]
    for headers in ({"Authorization": "Bearer %s" % access},
                    {"Authorization": "bearer %s" % access},     # the scheme is case-insensitive
                    {"Cookie": "access_token=%s" % access},
                    {"Cookie": "theme=dark; access_token=%s; other=1" % access}):
        r = otpd.get(ME, headers=headers)
        assert r.status_code == 200, (headers, r.text)
        assert r.headers["Content-Type"].split(";")[0].strip() == "application/json"
        user = r.json()
        assert set(user) == USER_KEYS, user
        assert user == login["user"]
        assert user["phone_number"] == PHONE and user["first_name"] is None \
            and user["last_name"] is None
    assert_invalid_token(otpd.get(ME))
    assert_invalid_token(otpd.get(ME, headers={"Authorization": "Basic %s" % access}))
    assert_invalid_token(otpd.get(ME, headers={"Authorization": "Bearer"}))
    assert_invalid_token(otpd.get(ME, headers={"Authorization": "Bearer "}))
    assert_invalid_token(otpd.get(ME, headers={"Cookie": "access_token="}))
    assert_invalid_token(otpd.get(ME, headers={"Cookie": "refresh_token=%s" % access}))


def test_me_of_two_users(otpd, fake):
    a = otpd.login(fake, phone_n(1)).json()
    b = otpd.login(fake, phone_n(2)).json()
    assert me(otpd, a["access_token"]).json() == a["user"]
    assert me(otpd, b["access_token"]).json() == b["user"]


def test_inactive_user(otpd, fake):
    login = otpd.login(fake, PHONE).json()
    a1, r1 = ok_pair(refresh(otpd, login["refresh_token"]))
    db_exec(otpd, "UPDATE users SET is_active = %s WHERE id = ?" % FALSE, (login["user"]["id"],))
    r = refresh(otpd, r1)
    assert_problem(r, 403, "user_inactive")
    assert not cookies_of(r) and "access_token" not in r.text
    assert_problem(refresh_cookie(otpd, r1), 403, "user_inactive")
    assert_problem(me(otpd, a1), 403, "user_inactive")
    assert_problem(otpd.get(ME, headers={"Cookie": "access_token=%s" % a1}), 403, "user_inactive")
    assert_logout_ok(logout(otpd, r1))


def test_deleted_user(otpd, fake):
    """The row is gone (deleted behind the server's back): the user's tokens are refused, the
    server keeps running, other users are not affected."""
    login = otpd.login(fake, PHONE).json()
    other = otpd.login(fake, phone_n(5)).json()
    a1, r1 = ok_pair(refresh(otpd, login["refresh_token"]))
    db_exec(otpd, "DELETE FROM users WHERE id = ?", (login["user"]["id"],))
    assert_invalid_token(me(otpd, a1))
    assert_invalid_token(me(otpd, login["access_token"]))
    assert_invalid_token(refresh(otpd, r1))
    assert_logout_ok(logout(otpd, r1))
    assert otpd.running()
    assert me(otpd, other["access_token"]).status_code == 200
    ok_pair(refresh(otpd, other["refresh_token"]))


@pytest.mark.otpd_env(JWT_ACCESS_TTL="2", JWT_REFRESH_TTL="2")
def test_expired_tokens(otpd, fake):
    login = otpd.login(fake, PHONE).json()
    access, rtok = login["access_token"], login["refresh_token"]
    assert me(otpd, access).status_code == 200
    exp = max(claims_of(otpd, access)["exp"], claims_of(otpd, rtok)["exp"])
    time.sleep(max(0.0, exp - time.time()) + 0.3)
    assert_invalid_token(me(otpd, access))
    assert_invalid_token(otpd.get(ME, headers={"Cookie": "access_token=%s" % access}))
    assert_invalid_token(refresh(otpd, rtok))
    assert_invalid_token(refresh_cookie(otpd, rtok))
    assert_logout_ok(logout(otpd, rtok))


# ----------------------------------------------------------------------------------------
# cookie-only browser flow

class Browser:
    """A requests.Session that keeps cookies like a browser; responses are checked after the
    test like every other."""

    def __init__(self, otpd):
        self.otpd = otpd
        self.s = requests.Session()

    def request(self, method, path, **kw):
        kw.setdefault("timeout", (3, 30))
        kw.setdefault("allow_redirects", False)
        r = self.s.request(method, self.otpd.url + path, **kw)
        self.otpd.factory.responses.append(r)
        return r

    def cookie(self, name):
        return self.s.cookies.get(name)


def test_cookie_only_browser_flow(otpd, fake):
    b = Browser(otpd)
    assert otpd.send(PHONE).status_code == 200
    r = b.request("POST", VERIFY, json={"phone_number": PHONE, "code": get_code(fake, PHONE)})
    assert r.status_code == 200, r.text
    user = r.json()["user"]
    rt0 = b.cookie("refresh_token")
    assert b.cookie("access_token") and rt0
    # /me with only the cookie
    r = b.request("GET", ME)
    assert r.status_code == 200 and r.json() == user, r.text
    # refresh with only the cookie (no body at all)
    r = b.request("POST", REFRESH)
    _, rt1 = ok_pair(r)
    assert b.cookie("refresh_token") == rt1 and rt1 != rt0
    assert b.request("GET", ME).json() == user
    # same-origin browser requests carry Origin: still fine
    r = b.request("POST", REFRESH, headers={"Origin": otpd.url})
    _, rt2 = ok_pair(r)
    assert b.cookie("refresh_token") == rt2
    # logout with only the cookie
    r = b.request("POST", LOGOUT)
    assert_logout_ok(r)
    assert b.cookie("refresh_token") is None and b.cookie("access_token") is None, \
        "the browser dropped both cookies"
    assert_invalid_token(b.request("POST", REFRESH))
    assert_invalid_token(refresh_cookie(otpd, rt2))
    assert_invalid_token(refresh(otpd, rt1))


# ----------------------------------------------------------------------------------------
# Origin check on cookie-authenticated state-changing requests

FOREIGN = ["https://evil.example", "null", "http://localhost", "http://127.0.0.1:1",
           "https://app.example.evil", "http://app.example"]


@pytest.mark.otpd_env(OTPD_ALLOWED_ORIGINS="https://app.example, https://admin.example:8443")
@pytest.mark.parametrize("origin", FOREIGN)
def test_foreign_origin_refused_with_cookie(otpd, fake, origin):
    login = otpd.login(fake, PHONE).json()
    rt = login["refresh_token"]
    r = refresh_cookie(otpd, rt, origin=origin)
    assert_problem(r, 403, "forbidden")
    assert not cookies_of(r)
    r = logout_cookie(otpd, rt, origin=origin)
    assert_problem(r, 403, "forbidden")
    assert not cookies_of(r), "a refused logout clears nothing"
    # neither rotated nor revoked
    _, r1 = ok_pair(refresh(otpd, rt))
    ok_pair(refresh(otpd, r1))


@pytest.mark.otpd_env(OTPD_ALLOWED_ORIGINS="https://app.example, https://admin.example:8443")
def test_allowed_origins_with_cookie(otpd, fake):
    login = otpd.login(fake, PHONE).json()
    rt = login["refresh_token"]
    for origin in (otpd.url, "https://app.example", "https://admin.example:8443", None):
        _, rt = ok_pair(refresh_cookie(otpd, rt, origin=origin))
    assert_logout_ok(logout_cookie(otpd, rt, origin="https://app.example"))
    assert_invalid_token(refresh(otpd, rt))
    second = otpd.login(fake, PHONE).json()
    assert_logout_ok(logout_cookie(otpd, second["refresh_token"], origin=otpd.url))
    assert_invalid_token(refresh(otpd, second["refresh_token"]))
    third = otpd.login(fake, PHONE).json()
    assert_logout_ok(logout_cookie(otpd, third["refresh_token"]))   # no Origin
    assert_invalid_token(refresh(otpd, third["refresh_token"]))


def test_foreign_origin_does_not_matter_with_token_in_body(otpd, fake):
    login = otpd.login(fake, PHONE).json()
    _, rt = ok_pair(refresh(otpd, login["refresh_token"],
                            headers={"Origin": "https://evil.example"}))
    assert_logout_ok(logout(otpd, rt, headers={"Origin": "https://evil.example"}))
    assert_invalid_token(refresh(otpd, rt))
    # /me with a bearer or cookie and a foreign Origin: a read, not affected
    assert otpd.get(ME, headers={"Cookie": "access_token=%s" % login["access_token"],
                                 "Origin": "https://evil.example"}).status_code == 200


def test_foreign_origin_logout_without_token_is_204(otpd):
    assert_logout_ok(otpd.post(LOGOUT, headers={"Origin": "https://evil.example"}))


# ----------------------------------------------------------------------------------------
# background purge

def refresh_rows(otpd):
    now_ms = int(time.time() * 1000)
    [(total, expired)] = conftest.db_query(
        otpd, "SELECT count(*), count(CASE WHEN expires_ms <= ? THEN 1 END) FROM refresh_tokens", (now_ms,))
    return total, expired


@pytest.mark.otpd_env(JWT_REFRESH_TTL="2", OTPD_PURGE_INTERVAL="1")
def test_expired_refresh_records_are_purged(otpd, fake):
    for i in range(3):
        otpd.login(fake, phone_n(i))
    total, _ = refresh_rows(otpd)
    assert total >= 3, "one refresh record per login"
    # no request from now on: only the background purge can delete them
    wait_for(lambda: refresh_rows(otpd) == (0, 0), timeout=6, interval=0.2,
             what="the purge of expired refresh records")


@pytest.mark.otpd_env(OTPD_PURGE_INTERVAL="1")
def test_purge_keeps_live_records(otpd, fake):
    login = otpd.login(fake, PHONE).json()
    _, r1 = ok_pair(refresh(otpd, login["refresh_token"]))
    time.sleep(1.6)
    total, expired = refresh_rows(otpd)
    assert total >= 2 and expired == 0, (total, expired)
    ok_pair(refresh(otpd, r1))


# ----------------------------------------------------------------------------------------
# configuration

@pytest.mark.parametrize("var,value", [("JWT_REFRESH_GRACE", "-1"), ("JWT_REFRESH_GRACE", "ten"),
                                       ("OTPD_PURGE_INTERVAL", "0"), ("OTPD_PURGE_INTERVAL", "x")])
def test_bad_session_config(otpd_factory, var, value):
    res = otpd_factory.run(["serve"], {var: value}, timeout=8)
    assert not res.timed_out and res.rc == 1, res
    assert len([ln for ln in res.output.splitlines() if var in ln]) == 1, res
