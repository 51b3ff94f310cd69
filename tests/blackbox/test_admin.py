"""The admin API (docs/API.md §6): who may call it, and the CSRF token of a staff session.

Staff status is set here with SQL on the test's database (either backend); the command
line's `otpd user set-staff` has tests of its own."""
import base64
import time
import hashlib
import hmac
import json

import pytest
import requests

import fake_kavenegar
from conftest import assert_problem, cookies_of, db_query, get_code, phone_n

USER = "/api/v1/admin/users/%d"


def claims(token):
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


def set_flags(otpd, user_id, **flags):
    for name, value in flags.items():
        assert name in ("is_staff", "is_active")
        db_query(otpd, "UPDATE users SET %s = ? WHERE id = ?" % name, (value, user_id))


def staff_login(otpd, fake, i):
    """A user made staff, then logged in again (the CSRF cookie comes with a staff login)."""
    phone = phone_n(i)
    uid = otpd.login(fake, phone).json()["user"]["id"]
    set_flags(otpd, uid, is_staff=True)
    return uid, otpd.login(fake, phone)


def expected_csrf(secret_key, sid):
    key = hmac.new(secret_key.encode(), b"otpd/v1/csrf", hashlib.sha256).digest()
    return hmac.new(key, sid.encode(), hashlib.sha256).hexdigest()


def bearer(tok):
    return {"Authorization": "Bearer " + tok}


def test_no_or_bad_token_is_401(otpd, fake):
    uid, r = staff_login(otpd, fake, 1)
    access, refresh = r.json()["access_token"], r.json()["refresh_token"]
    for headers in ({}, bearer("x"), bearer(access[:-2] + "AA"), bearer(refresh),
                    {"Authorization": "Basic " + access}, bearer("")):
        a = otpd.get(USER % uid, headers=headers)
        assert_problem(a, 401, "invalid_token")
        assert a.headers["WWW-Authenticate"] == 'Bearer error="invalid_token"'
    # the right token works, by header and by cookie
    assert otpd.get(USER % uid, headers=bearer(access)).status_code == 200
    assert otpd.get(USER % uid, cookies={"access_token": access}).status_code == 200


def test_not_staff_is_403_and_staff_status_is_read_every_time(otpd, fake):
    r = otpd.login(fake, phone_n(2))
    uid, access = r.json()["user"]["id"], r.json()["access_token"]
    assert_problem(otpd.get(USER % uid, headers=bearer(access)), 403, "forbidden")
    # made staff: the same token is let in at once (nothing is taken from the token) ...
    set_flags(otpd, uid, is_staff=True)
    assert otpd.get(USER % uid, headers=bearer(access)).status_code == 200
    # ... and refused at once when it is taken away
    set_flags(otpd, uid, is_staff=False)
    assert_problem(otpd.get(USER % uid, headers=bearer(access)), 403, "forbidden")


def test_inactive_staff_is_403_user_inactive(otpd, fake):
    uid, r = staff_login(otpd, fake, 3)
    set_flags(otpd, uid, is_active=False)
    assert_problem(otpd.get(USER % uid, headers=bearer(r.json()["access_token"])), 403,
                   "user_inactive")


def test_user_detail(otpd, fake):
    other = otpd.login(fake, phone_n(4)).json()["user"]
    uid, r = staff_login(otpd, fake, 5)
    a = otpd.get(USER % other["id"], headers=bearer(r.json()["access_token"]))
    assert a.status_code == 200, a.text
    u = a.json()
    for k in ("id", "phone_number", "email", "username", "first_name", "last_name"):
        assert u[k] == other[k], k
    assert u["is_active"] is True and u["is_staff"] is False
    for k in ("date_joined", "last_login"):
        assert u[k].endswith("Z") and u[k][10] == "T", (k, u[k])
    assert u["date_joined"] <= u["last_login"]
    # the staff user itself
    me = otpd.get(USER % uid, headers=bearer(r.json()["access_token"])).json()
    assert me["is_staff"] is True and me["phone_number"] == phone_n(5)


@pytest.mark.parametrize("path,status", [
    ("/api/v1/admin/users/999999", 404), ("/api/v1/admin/users/9223372036854775807", 404),
    ("/api/v1/admin/users/0", 400), ("/api/v1/admin/users/abc", 400),
    ("/api/v1/admin/users/-1", 400), ("/api/v1/admin/users/1.5", 400),
    ("/api/v1/admin/users/9223372036854775808", 400), ("/api/v1/admin/users/" + "9" * 40, 400)])
def test_unknown_user_or_bad_id_for_staff_only(otpd, fake, path, status):
    r = otpd.login(fake, phone_n(6))
    uid, access = r.json()["user"]["id"], r.json()["access_token"]
    # not staff: refused before anything about the path is told
    assert_problem(otpd.get(path, headers=bearer(access)), 403, "forbidden")
    assert_problem(otpd.get(path), 401, "invalid_token")
    set_flags(otpd, uid, is_staff=True)
    a = otpd.get(path, headers=bearer(access))
    if status == 404:
        assert_problem(a, 404, "not_found")
    else:
        assert_problem(a, 400, "validation_error")
        assert list(a.json()["errors"]) == ["id"]


def test_user_detail_codes_and_sessions(otpd, fake):
    """recent_codes: the number's codes, newest first, each with its status, never the code or
    its hash; sessions: the live families only."""
    phone = phone_n(9)
    first = otpd.login(fake, phone)                 # code 1: used; session A
    uid = first.json()["user"]["id"]
    assert otpd.send(phone).status_code == 200      # code 2: replaced by code 3
    assert otpd.send(phone).status_code == 200      # code 3: a wrong guess, still valid
    code3 = get_code(fake, phone)
    wrong = "000000" if code3 != "000000" else "111111"
    assert_problem(otpd.verify(phone, wrong), 400, "invalid_code")
    second = otpd.post("/api/v1/usr/token/refresh",
                       json={"refresh_token": first.json()["refresh_token"]})  # A refreshed
    assert second.status_code == 200
    _sid, staff = staff_login(otpd, fake, 10)
    a = otpd.get(USER % uid, headers=bearer(staff.json()["access_token"]))
    assert a.status_code == 200, a.text
    d = a.json()
    codes = d["recent_codes"]
    assert [c["status"] for c in codes] == ["valid", "replaced", "used"], codes
    assert [c["attempts"] for c in codes] == [1, 0, 0]
    assert codes[0]["id"] > codes[1]["id"] > codes[2]["id"]
    assert codes[2]["used_at"] is not None and codes[0]["used_at"] is None
    for c in codes:
        assert c["phone_number"] == phone
        assert c["sms"] is None or set(c["sms"]) == {"message_id", "delivery"}
        assert not set(c) & {"code", "code_hash", "hash"}
    text = a.text
    sent = [fake_kavenegar.extract_code(m) for m in fake.messages(phone)]
    assert len(sent) == 3
    for code in sent:
        assert '"%s"' % code not in text, "a code in the admin answer"
    sessions = d["sessions"]
    assert len(sessions) == 1, sessions
    s = sessions[0]
    assert s["last_used_at"] is not None and s["created_at"] <= s["last_used_at"] < s["expires_at"]
    # a logout ends the session: it is no longer listed
    assert otpd.post("/api/v1/usr/logout",
                     json={"refresh_token": second.json()["refresh_token"]}).status_code == 204
    d = otpd.get(USER % uid, headers=bearer(staff.json()["access_token"])).json()
    assert d["sessions"] == []


def test_csrf_cookie_of_a_staff_session(otpd, fake):
    phone = phone_n(7)
    r = otpd.login(fake, phone)
    assert "csrf_token" not in cookies_of(r), "a user who is not staff gets no CSRF cookie"
    set_flags(otpd, r.json()["user"]["id"], is_staff=True)

    r = otpd.login(fake, phone)
    c = cookies_of(r)
    sid = claims(r.json()["access_token"])["sid"]
    assert claims(r.json()["refresh_token"])["sid"] == sid
    csrf = c["csrf_token"]
    # bound to the session: HMAC of its family under a key derived from SECRET_KEY
    assert csrf["value"] == expected_csrf(otpd.env["SECRET_KEY"], sid)
    assert "httponly" not in csrf["attrs"], "the console's script must read it"
    assert csrf["attrs"]["samesite"] == "Strict"
    assert csrf["attrs"]["path"] == "/"
    assert csrf["attrs"]["max-age"] == c["refresh_token"]["attrs"]["max-age"]

    # a refresh keeps the family, hence the same CSRF token
    f = otpd.post("/api/v1/usr/token/refresh", json={"refresh_token": r.json()["refresh_token"]})
    assert f.status_code == 200, f.text
    assert claims(f.json()["access_token"])["sid"] == sid
    assert cookies_of(f)["csrf_token"]["value"] == csrf["value"]

    # another login is another session: another token
    r2 = otpd.login(fake, phone)
    assert claims(r2.json()["access_token"])["sid"] != sid
    assert cookies_of(r2)["csrf_token"]["value"] != csrf["value"]

    # logout clears it with the others
    o = otpd.post("/api/v1/usr/logout", json={"refresh_token": f.json()["refresh_token"]})
    assert o.status_code == 204
    cleared = cookies_of(o)
    assert cleared["csrf_token"]["value"] == "" and cleared["csrf_token"]["attrs"]["max-age"] == "0"


def test_csrf_token_never_logged(otpd, fake):
    _uid, r = staff_login(otpd, fake, 8)
    csrf = cookies_of(r)["csrf_token"]["value"]
    otpd.get(USER % 1, cookies={"access_token": r.json()["access_token"], "csrf_token": csrf},
             headers={"X-CSRF-Token": csrf})
    assert csrf not in otpd.log_text()


STATS = "/api/v1/admin/stats"
COUNTS = ("sends", "sms_failures", "logins", "new_users", "wrong_guesses", "locks")


def totals(d):
    return {k: sum(b[k] for b in d["buckets"]) for k in COUNTS}


def test_stats_buckets_and_counts(otpd, fake):
    _uid, r = staff_login(otpd, fake, 11)
    h = bearer(r.json()["access_token"])
    a = otpd.get(STATS, headers=h)
    assert a.status_code == 200, a.text
    d = a.json()
    assert d["bucket_seconds"] == 300
    assert len(d["buckets"]) == 24 * 12
    starts = [b["start"] for b in d["buckets"]]
    assert starts == sorted(starts) and len(set(starts)) == len(starts)
    before = totals(d)
    # the staff login: two sends, two logins, one new user so far
    assert before == dict(sends=2, sms_failures=0, logins=2, new_users=1, wrong_guesses=0,
                          locks=0), before

    phone = phone_n(12)
    assert otpd.send(phone).status_code == 200
    code = get_code(fake, phone)
    assert_problem(otpd.verify(phone, "000000" if code != "000000" else "111111"), 400,
                   "invalid_code")
    assert otpd.verify(phone, code).status_code == 200
    after = totals(otpd.get(STATS, headers=h).json())
    assert after == dict(before, sends=3, logins=3, new_users=2, wrong_guesses=1), after

    one = otpd.get(STATS + "?hours=1", headers=h).json()
    assert len(one["buckets"]) == 12
    assert one["buckets"][-1] == otpd.get(STATS, headers=h).json()["buckets"][-1]
    assert len(otpd.get(STATS + "?hours=168", headers=h).json()["buckets"]) == 168 * 12


@pytest.mark.parametrize("hours", ["0", "169", "abc", "-1", "1.5", ""])
def test_stats_bad_hours(otpd, fake, hours):
    _uid, r = staff_login(otpd, fake, 13)
    a = otpd.get(STATS + "?hours=" + hours, headers=bearer(r.json()["access_token"]))
    assert_problem(a, 400, "validation_error")
    assert list(a.json()["errors"]) == ["hours"]


def test_stats_staff_only(otpd, fake):
    r = otpd.login(fake, phone_n(14))
    assert_problem(otpd.get(STATS), 401, "invalid_token")
    assert_problem(otpd.get(STATS, headers=bearer(r.json()["access_token"])), 403, "forbidden")


CODES = "/api/v1/admin/codes"


def wrong_for(code):
    return "000000" if code != "000000" else "111111"


@pytest.mark.otpd_env(OTP_EXPIRY_TIME="2", OTP_MAX_ATTEMPTS="2")
def test_codes_every_status_from_a_real_scenario(otpd, fake):
    """valid, used, replaced, exhausted, expired and cancelled, each reached the way users
    reach it, then found with ?status= and by number in other forms and scripts."""
    _uid, r = staff_login(otpd, fake, 20)      # its own two codes: used
    h = bearer(r.json()["access_token"])
    p_exp, p_exh, p_rep, p_can, p_val = (phone_n(i) for i in range(21, 26))
    assert otpd.send(p_exp).status_code == 200                      # expires in 2 s
    assert otpd.send(p_exh).status_code == 200
    c = get_code(fake, p_exh)
    for _ in range(2):
        otpd.verify(p_exh, wrong_for(c))                            # no attempts left
    assert otpd.send(p_rep).status_code == 200                      # replaced by the next,
    assert otpd.send(p_rep).status_code == 200                      # which then expires
    fake.configure(status=418, fail_next=1)                         # the provider refuses
    assert otpd.send(p_can).status_code == 502                      # cancelled
    time.sleep(2.2)
    assert otpd.send(p_val).status_code == 200

    a = otpd.get(CODES, headers=h)
    assert a.status_code == 200, a.text
    by_phone = {}
    for c in a.json()["items"]:
        by_phone.setdefault(c["phone_number"], []).append(c["status"])
    assert by_phone[p_exp] == ["expired"]
    assert by_phone[p_exh] == ["exhausted"]
    assert by_phone[p_rep] == ["expired", "replaced"]
    assert by_phone[p_can] == ["cancelled"]
    assert by_phone[p_val] == ["valid"]
    assert by_phone[phone_n(20)] == ["used", "used"]
    for status, want in (("valid", {p_val}), ("expired", {p_exp, p_rep}), ("replaced", {p_rep}), ("exhausted", {p_exh}),
                         ("cancelled", {p_can}), ("used", {phone_n(20)})):
        items = otpd.get(CODES + "?status=" + status, headers=h).json()["items"]
        assert {c["phone_number"] for c in items} == want, status
        assert all(c["status"] == status for c in items)
    # by number, in any accepted form and script
    persian = "۰" + "".join("۰۱۲۳۴۵۶۷۸۹"[int(ch)] for ch in p_exh[3:])
    for form in (p_exh, "0" + p_exh[3:], "0098" + p_exh[3:], persian):
        items = otpd.get(CODES, params={"phone": form}, headers=h).json()["items"]
        assert [c["phone_number"] for c in items] == [p_exh], form


def test_codes_paging_and_time_range(otpd, fake):
    _uid, r = staff_login(otpd, fake, 30)
    h = bearer(r.json()["access_token"])
    for i in range(31, 38):
        assert otpd.send(phone_n(i)).status_code == 200
    everything = otpd.get(CODES + "?limit=200", headers=h).json()
    assert everything["next_cursor"] is None
    ids = [c["id"] for c in everything["items"]]
    assert len(ids) == 9 and ids == sorted(ids, reverse=True)
    seen, cursor = [], None
    while True:
        params = {"limit": 2}
        if cursor:
            params["cursor"] = cursor
        page = otpd.get(CODES, params=params, headers=h).json()
        assert len(page["items"]) <= 2
        seen += [c["id"] for c in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == ids
    # since/until bound the creation time
    created = sorted(c["created_at"] for c in everything["items"])
    mid = everything["items"][4]["created_at"]
    newer = otpd.get(CODES, params={"since": mid, "limit": 200}, headers=h).json()["items"]
    older = otpd.get(CODES, params={"until": mid, "limit": 200}, headers=h).json()["items"]
    assert all(c["created_at"] >= mid for c in newer) and all(c["created_at"] < mid for c in older)
    assert len(newer) + len(older) == 9
    assert otpd.get(CODES, params={"since": "2999-01-01T00:00:00Z"}, headers=h).json() == \
        {"items": [], "next_cursor": None}
    assert created[0] >= "2026"


@pytest.mark.parametrize("query,field", [
    ("phone=12345", "phone"), ("status=lost", "status"), ("since=yesterday", "since"),
    ("until=2026-13-01T00:00:00Z", "until"), ("limit=0", "limit"), ("limit=201", "limit"),
    ("cursor=abc", "cursor"), ("cursor=0", "cursor")])
def test_codes_bad_parameters(otpd, fake, query, field):
    _uid, r = staff_login(otpd, fake, 40)
    a = otpd.get(CODES + "?" + query, headers=bearer(r.json()["access_token"]))
    assert_problem(a, 400, "validation_error")
    assert list(a.json()["errors"]) == [field]


def test_codes_staff_only(otpd, fake):
    r = otpd.login(fake, phone_n(41))
    assert_problem(otpd.get(CODES), 401, "invalid_token")
    assert_problem(otpd.get(CODES, headers=bearer(r.json()["access_token"])), 403, "forbidden")


# ---- users: search, change, and the audit log ---------------------------------------------

USERS = "/api/v1/admin/users"
AUDIT = "/api/v1/admin/audit"


def test_users_search_by_number_and_username_prefix(otpd, fake):
    _uid, r = staff_login(otpd, fake, 50)
    h = bearer(r.json()["access_token"])
    phones = [phone_n(i) for i in range(51, 56)]
    ids = [otpd.login(fake, p).json()["user"]["id"] for p in phones]
    p = phones[2]
    persian = "".join("۰۱۲۳۴۵۶۷۸۹"[int(ch)] for ch in "0" + p[3:])
    for form in (p, "0" + p[3:], "0098" + p[3:], persian):
        items = otpd.get(USERS, params={"q": form}, headers=h).json()["items"]
        assert [u["id"] for u in items] == [ids[2]], form
    # every user, newest first, paged
    seen, cursor = [], None
    while True:
        page = otpd.get(USERS, params=dict(limit=2, **({"cursor": cursor} if cursor else {})),
                        headers=h).json()
        seen += [u["id"] for u in page["items"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert seen == sorted(seen, reverse=True) and set(ids) <= set(seen)
    # a username prefix: the users whose username starts with it, paged too
    prefix = phones[0][1:-1]                      # 98935000005 -> 5 usernames share it
    got, cursor = [], None
    while True:
        page = otpd.get(USERS, params=dict(q=prefix, limit=2, **({"cursor": cursor} if cursor else {})),
                        headers=h).json()
        got += [u["username"] for u in page["items"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert sorted(got) == sorted(u for u in (x[1:] for x in phones + [phone_n(50)])
                                 if u.startswith(prefix))
    assert otpd.get(USERS, params={"q": "no-such-user"}, headers=h).json() == \
        {"items": [], "next_cursor": None}
    for q, field in ((dict(limit="0"), "limit"), (dict(cursor="x"), "cursor"),
                     (dict(q=prefix, cursor="12"), "cursor"), (dict(q="a" * 151), "q")):
        a = otpd.get(USERS, params=q, headers=h)
        assert_problem(a, 400, "validation_error")
        assert list(a.json()["errors"]) == [field], q


def test_patch_deactivate_revokes_every_session_and_is_audited(otpd, fake):
    staff_id, r = staff_login(otpd, fake, 60)
    h = bearer(r.json()["access_token"])
    phone = phone_n(61)
    a1 = otpd.login(fake, phone).json()
    a2 = otpd.login(fake, phone).json()            # two sessions
    uid = a1["user"]["id"]
    p = otpd.request("PATCH", USER % uid, json={"is_active": False}, headers=h)
    assert p.status_code == 200, p.text
    assert p.json()["is_active"] is False and p.json()["id"] == uid
    for a in (a1, a2):
        f = otpd.post("/api/v1/usr/token/refresh", json={"refresh_token": a["refresh_token"]})
        assert_problem(f, 401, "invalid_token")
    assert otpd.get(USER % uid, headers=h).json()["sessions"] == []
    # reactivated: active again, no session comes back; then made staff, with a form body
    p = otpd.request("PATCH", USER % uid, data={"is_active": "true"}, headers=h)
    assert p.status_code == 200 and p.json()["is_active"] is True, p.text
    p = otpd.request("PATCH", USER % uid, json={"is_staff": True}, headers=h)
    assert p.json()["is_staff"] is True
    entries = otpd.get(AUDIT, headers=h).json()["items"]
    assert [(e["action"], e["target"], e["actor"]) for e in entries[:3]] == [
        ("user.set_staff", "user:%d" % uid, "user:%d" % staff_id),
        ("user.activate", "user:%d" % uid, "user:%d" % staff_id),
        ("user.deactivate", "user:%d" % uid, "user:%d" % staff_id)]
    assert all(e["client"] == "127.0.0.1" and e["time"].endswith("Z") for e in entries[:3])
    assert entries[0]["id"] > entries[1]["id"] > entries[2]["id"]


def test_patch_refusals(otpd, fake):
    staff_id, r = staff_login(otpd, fake, 62)
    h = bearer(r.json()["access_token"])
    other = otpd.login(fake, phone_n(63)).json()["user"]["id"]
    # a staff user cannot lock itself out
    for body, field in (({"is_active": False}, "is_active"), ({"is_staff": False}, "is_staff")):
        a = otpd.request("PATCH", USER % staff_id, json=body, headers=h)
        assert_problem(a, 400, "validation_error")
        assert list(a.json()["errors"]) == [field]
    for body, field in (({}, "is_active"), ({"is_active": "maybe"}, "is_active"),
                        ({"is_staff": 1}, "is_staff"), ({"is_active": None}, "is_active")):
        a = otpd.request("PATCH", USER % other, json=body, headers=h)
        assert_problem(a, 400, "validation_error")
        assert list(a.json()["errors"]) == [field], body
    assert_problem(otpd.request("PATCH", USER % 999999, json={"is_staff": True}, headers=h),
                   404, "not_found")
    assert_problem(otpd.request("PATCH", "/api/v1/admin/users/x", json={"is_staff": True},
                                headers=h), 400, "validation_error")
    # not staff, no token: refused first, whatever the body
    plain = otpd.login(fake, phone_n(64)).json()["access_token"]
    assert_problem(otpd.request("PATCH", USER % other, json={}, headers=bearer(plain)), 403,
                   "forbidden")
    assert_problem(otpd.request("PATCH", USER % other, data="{", headers={
        "Content-Type": "application/json"}), 401, "invalid_token")
    assert otpd.get(AUDIT, headers=h).json()["items"] == [], "nothing refused is audited"


def test_patch_by_cookie_needs_the_session_csrf_token(otpd, fake):
    staff_id, r = staff_login(otpd, fake, 65)
    other = otpd.login(fake, phone_n(66)).json()["user"]["id"]
    jar = {"access_token": r.json()["access_token"]}
    csrf = cookies_of(r)["csrf_token"]["value"]
    # another session of the same staff user: its CSRF token is not this one's
    r2 = otpd.login(fake, phone_n(65))
    csrf2 = cookies_of(r2)["csrf_token"]["value"]
    body = {"is_staff": True}
    for headers, cookies in (({}, dict(jar, csrf_token=csrf)),                  # no header
                             ({"X-CSRF-Token": csrf}, jar),                       # no cookie
                             ({"X-CSRF-Token": "0" * 64}, dict(jar, csrf_token="0" * 64)),
                             ({"X-CSRF-Token": csrf2}, dict(jar, csrf_token=csrf2)),
                             ({"X-CSRF-Token": csrf}, dict(jar, csrf_token=csrf2)),
                             ({"X-CSRF-Token": csrf, "Origin": "https://evil.example"},
                              dict(jar, csrf_token=csrf))):
        a = otpd.request("PATCH", USER % other, json=body, headers=headers, cookies=cookies)
        assert_problem(a, 403, "forbidden")
    ok = otpd.request("PATCH", USER % other, json=body, headers={"X-CSRF-Token": csrf},
                      cookies=dict(jar, csrf_token=csrf))
    assert ok.status_code == 200, ok.text
    # reads by cookie need no CSRF token; Bearer writes neither
    assert otpd.get(USER % other, cookies=jar).status_code == 200
    assert otpd.request("PATCH", USER % other, json={"is_staff": False},
                        headers=bearer(r.json()["access_token"])).status_code == 200


def test_search_by_code_only_among_ended_codes_and_audited(otpd, fake):
    staff_id, r = staff_login(otpd, fake, 70)
    h = bearer(r.json()["access_token"])
    phone = phone_n(71)
    assert otpd.send(phone).status_code == 200
    live = get_code(fake, phone)
    # a still valid code never matches: the search cannot be used to guess
    a = otpd.get(CODES, params={"phone": phone, "code": live}, headers=h)
    assert a.status_code == 200, a.text
    assert a.json()["items"] == []
    assert otpd.verify(phone, live).status_code == 200          # now used
    persian = "".join("۰۱۲۳۴۵۶۷۸۹"[int(ch)] for ch in live)
    for form in (live, persian):
        items = otpd.get(CODES, params={"phone": "0" + phone[3:], "code": form}, headers=h).json()["items"]
        assert [c["status"] for c in items] == ["used"], form
    assert otpd.get(CODES, params={"phone": phone, "code": wrong_for(live)},
                    headers=h).json()["items"] == []
    entries = otpd.get(AUDIT, headers=h).json()["items"]
    searches = [e for e in entries if e["action"] == "codes.search_by_code"]
    assert len(searches) == 4 and all(e["target"] == phone for e in searches)
    assert live not in json.dumps(entries), "the code is not in the audit log"
    for q, field in (({"code": live}, "code"), ({"phone": phone, "code": "12345"}, "code")):
        a = otpd.get(CODES, params=q, headers=h)
        assert_problem(a, 400, "validation_error")
        assert list(a.json()["errors"]) == [field]


def test_cli_actions_are_in_the_audit_log(otpd, fake):
    staff_id, r = staff_login(otpd, fake, 80)
    h = bearer(r.json()["access_token"])
    res = otpd.factory.run(["user", "set-staff", "0" + phone_n(81)[3:]], cwd=otpd.cwd,
                           env={"OTPD_LOG_LEVEL": None}, phones_ok=True, timeout=30)
    assert res.rc == 0, res
    e = otpd.get(AUDIT, headers=h).json()["items"][0]
    assert e["actor"] == "cli" and e["action"] == "user.set_staff" and e["client"] is None, e
    # the user it made can use the admin API as soon as it logs in
    made = otpd.login(fake, phone_n(81)).json()
    assert otpd.get(STATS, headers=bearer(made["access_token"])).status_code == 200


def test_audit_paging_and_staff_only(otpd, fake):
    staff_id, r = staff_login(otpd, fake, 90)
    h = bearer(r.json()["access_token"])
    other = otpd.login(fake, phone_n(91)).json()["user"]["id"]
    for i in range(5):
        assert otpd.request("PATCH", USER % other, json={"is_staff": i % 2 == 0},
                            headers=h).status_code == 200
    seen, cursor = [], None
    while True:
        page = otpd.get(AUDIT, params=dict(limit=2, **({"cursor": cursor} if cursor else {})),
                        headers=h).json()
        seen += [e["id"] for e in page["items"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert len(seen) == 5 and seen == sorted(seen, reverse=True)
    plain = otpd.login(fake, phone_n(92)).json()["access_token"]
    assert_problem(otpd.get(AUDIT), 401, "invalid_token")
    assert_problem(otpd.get(AUDIT, headers=bearer(plain)), 403, "forbidden")
    assert_problem(otpd.get(USERS, headers=bearer(plain)), 403, "forbidden")
    assert_problem(otpd.get(AUDIT + "?cursor=abc", headers=h), 400, "validation_error")
