"""The rules hold under concurrency (issue 3): single use, attempt counting, the send limit and
user creation are atomic; a slow provider never holds up verify."""

import collections
import threading
import time

import pytest

from conftest import (PHONE, assert_problem, fake_kavenegar, get_code, parallel, phone_n,
                      wait_for, wrong_code)

FORMS_OF_PHONE = ["+989123456789", "09123456789", "9123456789", "989123456789", "00989123456789",
                  "۰۹۱۲۳۴۵۶۷۸۹", "٠٩١٢٣٤٥٦٧٨٩", "+98 912 345 6789", "0912-345-6789", "09۱۲٣۴5٦7۸9"]




def codes_of(rs):
    out = collections.Counter()
    for r in rs:
        out[r.json().get("code") if r.status_code != 200 else 200] += 1
    return out


def test_parallel_verifies_of_one_code(otpd, fake):
    assert otpd.send(PHONE).status_code == 200
    code = get_code(fake, PHONE)
    rs = parallel(20, lambda i: otpd.verify(PHONE, code))
    ok = [r for r in rs if r.status_code == 200]
    assert len(ok) == 1, codes_of(rs)
    for r in rs:
        if r.status_code != 200:
            assert_problem(r, 400, "otp_expired")
    assert ok[0].json()["is_new_user"] is True


@pytest.mark.otpd_env(OTP_MAX_ATTEMPTS="3")
def test_parallel_wrong_guesses(otpd, fake):
    assert otpd.send(PHONE).status_code == 200
    code = get_code(fake, PHONE)
    bad = wrong_code(code)
    rs = parallel(20, lambda i: otpd.verify(PHONE, bad))
    invalid = [r for r in rs if r.status_code == 400 and r.json().get("code") == "invalid_code"]
    assert len(invalid) == 3, codes_of(rs)
    assert sorted(r.json()["remaining_attempts"] for r in invalid) == [0, 1, 2]
    for r in rs:
        if r not in invalid:
            assert_problem(r, 400, "too_many_attempts")
    assert_problem(otpd.verify(PHONE, code), 400, "too_many_attempts")


@pytest.mark.otpd_env(OTP_SEND_LIMIT="3", OTP_SEND_WINDOW="120")
def test_parallel_sends_one_number(otpd, fake):
    rs = parallel(20, lambda i: otpd.send(FORMS_OF_PHONE[i % len(FORMS_OF_PHONE)]))
    ok = [r for r in rs if r.status_code == 200]
    assert len(ok) == 3, codes_of(rs)
    for r in rs:
        if r.status_code != 200:
            assert_problem(r, 429, "otp_rate_limited")
    msgs = fake.messages(PHONE, include_refused=True)
    assert len(msgs) == 3, "exactly three SMS reach the provider, got %d" % len(msgs)
    # exactly one of the three codes is the current one
    codes = [fake_kavenegar.extract_code(m) for m in msgs]
    wins = 0
    for c in codes:
        r = otpd.verify(PHONE, c)
        wins += r.status_code == 200
    assert wins == 1


def test_parallel_first_logins_one_user(otpd, fake):
    """Ten clients log in as one new number at once (each writes it differently): one wins,
    one user exists, and it was new exactly once."""
    assert otpd.send(PHONE).status_code == 200
    code = get_code(fake, PHONE)
    rs = parallel(10, lambda i: otpd.verify(FORMS_OF_PHONE[i], code))
    ok = [r.json() for r in rs if r.status_code == 200]
    assert len(ok) == 1, codes_of(rs)
    assert ok[0]["is_new_user"] is True
    uid = ok[0]["user"]["id"]
    again = otpd.login(fake, PHONE).json()
    assert again["is_new_user"] is False and again["user"]["id"] == uid


def test_parallel_first_logins_many_numbers(otpd, fake):
    phones = [phone_n(100 + i) for i in range(10)]
    for p in phones:
        assert otpd.send(p).status_code == 200
    codes = {p: get_code(fake, p) for p in phones}
    rs = parallel(10, lambda i: otpd.verify(phones[i], codes[phones[i]]))
    assert all(r.status_code == 200 for r in rs), codes_of(rs)
    users = [r.json()["user"] for r in rs]
    assert all(r.json()["is_new_user"] is True for r in rs)
    assert len({u["id"] for u in users}) == 10, "one user id per number"
    assert [u["phone_number"] for u in users] == phones


@pytest.mark.otpd_env(OTP_SEND_LIMIT="1000")
def test_slow_provider_does_not_block_verify(otpd, fake):
    """200 sends wait on a provider that answers after 2 s; meanwhile verify answers at once."""
    fake.configure(latency_ms=2000)
    phones = [phone_n(1000 + i) for i in range(200)]
    results = {}

    def one(p):
        try:
            results[p] = otpd.send(p, timeout=(5, 60))
        except Exception as e:
            results[p] = e
    t0 = time.monotonic()
    threads = [threading.Thread(target=one, args=(p,)) for p in phones]
    for t in threads:
        t.start()
    wait_for(lambda: fake.stats()["in_flight"] >= 1, 5, what="sends waiting at the provider")
    time.sleep(0.3)
    lat = []
    for i in range(10):
        v0 = time.monotonic()
        r = otpd.verify(PHONE, "%06d" % i)
        lat.append(time.monotonic() - v0)
        assert_problem(r, 400, "otp_expired")
    v0 = time.monotonic()
    assert otpd.get("/healthz").status_code == 200
    lat.append(time.monotonic() - v0)
    in_flight_meanwhile = fake.stats()["in_flight"]
    for t in threads:
        t.join(60)
    elapsed = time.monotonic() - t0
    assert max(lat) < 1.0, "verify/healthz took up to %.2fs while sends waited: %s" % (
        max(lat), ["%.3f" % x for x in lat])
    assert in_flight_meanwhile >= 1, "the verifies were measured while sends were waiting"
    bad = {p: (r if isinstance(r, Exception) else (r.status_code, r.text[:120]))
           for p, r in results.items() if isinstance(r, Exception) or r.status_code != 200}
    assert not bad, "%d of 200 sends failed, e.g. %s" % (len(bad), list(bad.items())[:3])
    assert fake.stats()["max_in_flight"] >= 50, fake.stats()
    assert elapsed < 15, "200 sends took %.1fs" % elapsed
