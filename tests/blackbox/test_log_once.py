"""Log once: a failure is logged where it is translated (the SMS backend, the store, the
session use case), and never again on the way up.  Each test finds the lines of one request
by its X-Request-Id and counts those above info."""

import pytest

from conftest import PHONE, PHONE_MASKED, assert_problem, verify_into_a_store_error, wait_for

REFRESH = "/api/v1/usr/token/refresh"


def lines_of(otpd, r):
    """The request's lines, once its access line (written after the answer) is there."""
    rid = r.headers["X-Request-Id"]

    def mine():
        return [o for o in otpd.log_lines() if o.get("request_id") == rid]
    wait_for(lambda: any(o.get("event") == "http.access" for o in mine()),
             what="the access line of request %s" % rid)
    return mine()


def loud(lines):
    return [o for o in lines if o.get("level") in ("warn", "error")]


def access_line(lines):
    acc = [o for o in lines if o.get("event") == "http.access"]
    assert len(acc) == 1, lines
    return acc[0]


@pytest.mark.parametrize("knobs,status,code,event", [
    ({"status": 418}, 502, "sms_rejected", "sms.rejected"),
    ({"status": 409}, 503, "sms_unavailable", "sms.unavailable"),
    ({"http_status": 502}, 503, "sms_unavailable", "sms.unavailable"),
    ({"drop": True}, 503, "sms_unavailable", "sms.unavailable"),
], ids=["refused-418", "busy-409", "http-502", "drop"])
def test_sms_failure_logged_once_with_status_phone_latency(otpd, fake, knobs, status, code,
                                                           event):
    fake.configure(**knobs)
    r = otpd.send(PHONE)
    assert_problem(r, status, code)
    lines = lines_of(otpd, r)
    bad = loud(lines)
    assert [o["event"] for o in bad] == [event], lines
    line = bad[0]
    assert line["phone"] == PHONE_MASKED
    assert isinstance(line["duration_ms"], int) and line["duration_ms"] >= 0
    if code == "sms_rejected":
        assert line["provider_status"] == 418
    # the request's own line tells the outcome, at info
    acc = access_line(lines)
    assert acc["level"] == "info" and acc["status"] == status
    assert acc["outcome"] == "otp." + code


@pytest.mark.otpd_env(JWT_REFRESH_GRACE="0", OTP_SEND_LIMIT="100")
def test_token_reuse_logged_once(otpd, fake):
    tok = otpd.login(fake, PHONE).json()["refresh_token"]
    assert otpd.post(REFRESH, json={"refresh_token": tok}).status_code == 200
    r = otpd.post(REFRESH, json={"refresh_token": tok})  # the replay
    assert_problem(r, 401, "invalid_token")
    bad = loud(lines_of(otpd, r))
    assert [o["event"] for o in bad] == ["auth.token_reuse"], bad
    assert "revoked" in bad[0]["msg"]


@pytest.mark.otpd_env(OTP_SEND_LIMIT="100")
def test_store_error_logged_once(otpd, fake):
    """A row the store cannot read (a username longer than any it writes, put there behind
    otpd's back) is an internal error: one error line, from the store, with the request id;
    the 500 itself is not logged again."""
    r = verify_into_a_store_error(otpd, fake, PHONE)
    assert r.status_code == 500 and r.json()["code"] == "internal_error", r.text
    lines = lines_of(otpd, r)
    bad = loud(lines)
    assert len(bad) == 1 and bad[0]["level"] == "error", lines
    assert bad[0]["event"] == "store.error", bad
    assert access_line(lines)["status"] == 500
