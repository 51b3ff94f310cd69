"""Delivery, seen from outside: otpd keeps the provider's messageid with each code, polls
sms/status (at most 500 ids a call) every KAVENEGAR_DELIVERY_INTERVAL seconds until each message
reaches a final state, stores that state with the code, counts it in otpd_sms_delivered_total,
warns about a failed delivery (masked number), and gives up on messages past the provider's
48 h window (unknown)."""

import time

import pytest
from prometheus_client.parser import text_string_to_metric_families

from conftest import PHONE, PHONE_MASKED, db_executemany, db_query, phone_n, wait_for

FAST = {"KAVENEGAR_DELIVERY_INTERVAL": "1", "OTP_SEND_LIMIT": "1000"}


def delivered(otpd):
    r = otpd.get("/metrics")
    out = {"delivered": 0, "failed": 0, "unknown": 0}
    for fam in text_string_to_metric_families(r.text):
        for s in fam.samples:
            if s.name == "otpd_sms_delivered_total":
                out[s.labels["status"]] = s.value
    return out


def status_calls(fake):
    return [r for r in fake.requests() if r["path"].endswith("/sms/status.json")]


def ids_of(call):
    import urllib.parse
    form = dict(urllib.parse.parse_qsl(call["body"]))
    return [int(x) for x in form["messageid"].split(",")]


def codes(otpd):
    return db_query(otpd, "SELECT id, phone, sms_message_id, sms_status FROM otp_codes ORDER BY id")


def test_delivered_kept_with_the_code_and_counted(otpd_factory, fake):
    otpd = otpd_factory.start(FAST)
    assert otpd.send(PHONE).status_code == 200
    mid = fake.messages(PHONE)[-1]["messageid"]
    wait_for(lambda: delivered(otpd)["delivered"] == 1, what="the delivery")
    assert codes(otpd) == [(1, PHONE, mid, 10)]
    n = len(status_calls(fake))
    time.sleep(2.5)  # two more intervals
    assert len(status_calls(fake)) == n, "a final state is not asked about again"
    assert all(ids_of(c) == [mid] for c in status_calls(fake))


def test_failed_delivery_warned_once_with_a_masked_number(otpd_factory, fake):
    fake.configure(delivery_status=11)
    otpd = otpd_factory.start(FAST)
    assert otpd.send(PHONE).status_code == 200
    wait_for(lambda: delivered(otpd)["failed"] == 1, what="the failed delivery")
    lines = [o for o in otpd.log_lines() if o.get("event") == "sms.delivery_failed"]
    assert len(lines) == 1 and lines[0]["phone"] == PHONE_MASKED
    assert lines[0]["delivery_status"] == 11 and lines[0]["level"] == "warn"
    assert codes(otpd)[0][3] == 11


def test_in_progress_is_asked_again_until_final(otpd_factory, fake):
    fake.configure(delivery_status=4)    # handed to the operator: not final
    otpd = otpd_factory.start(FAST)
    assert otpd.send(PHONE).status_code == 200
    wait_for(lambda: len(status_calls(fake)) >= 2, what="two polls")
    assert codes(otpd)[0][3] == 4
    assert delivered(otpd) == {"delivered": 0, "failed": 0, "unknown": 0}
    fake.configure(delivery_status=10)
    wait_for(lambda: delivered(otpd)["delivered"] == 1, what="the delivery")
    assert codes(otpd)[0][3] == 10


def test_batches_of_500_and_the_48_hour_window(otpd_factory, fake):
    """1,200 messages the provider does not know (status 100: final, unknown) are asked about
    in calls of at most 500 ids; one accepted 49 h ago is not asked about at all."""
    otpd = otpd_factory.start(dict(FAST, KAVENEGAR_DELIVERY_INTERVAL="3"))
    now = int(time.time() * 1000)
    rows = [(phone_n(i), b"\x00" * 32, now - 60000, now + 240000, 3, 7000000 + i)
            for i in range(1200)]
    rows.append((phone_n(5000), b"\x00" * 32, now - 49 * 3600 * 1000, now, 3, 6999999))
    db_executemany(otpd, "INSERT INTO otp_codes (phone, code_hash, created_ms, expires_ms,"
                   " max_attempts, sms_message_id) VALUES (?, ?, ?, ?, ?, ?)", rows)
    wait_for(lambda: delivered(otpd)["unknown"] == 1201, timeout=15, what="every message judged")
    calls = status_calls(fake)
    asked = [i for c in calls for i in ids_of(c)]
    assert all(len(ids_of(c)) <= 500 for c in calls), [len(ids_of(c)) for c in calls]
    assert sorted(asked) == list(range(7000000, 7001200))
    assert 6999999 not in asked
    assert db_query(otpd, "SELECT count(*) FROM otp_codes WHERE sms_status = 100") == [(1201,)]


def test_console_backend_polls_nothing(otpd_factory, fake):
    otpd = otpd_factory.start(dict(FAST, SMS_BACKEND="console"))
    assert otpd.send(PHONE).status_code == 200
    time.sleep(1.5)
    assert fake.stats()["requests"] == 0
