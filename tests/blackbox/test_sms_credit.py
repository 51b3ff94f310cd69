"""The provider's credit, seen from outside: with the kavenegar backend otpd reads
account/info at start and every KAVENEGAR_CREDIT_INTERVAL seconds on its SMS worker, exports
otpd_sms_credit, warns once per crossing of KAVENEGAR_CREDIT_ALERT (otpd_sms_credit_low), and
logs a failed check once, retries it, and keeps sending."""

import pytest
from prometheus_client.parser import text_string_to_metric_families

from conftest import PHONE, wait_for

FAST = {"KAVENEGAR_CREDIT_INTERVAL": "1"}


def gauges(otpd):
    r = otpd.get("/metrics")
    assert r.status_code == 200
    out = {}
    for fam in text_string_to_metric_families(r.text):
        for s in fam.samples:
            if not s.labels:
                out[s.name] = s.value
    return out


def info_calls(fake):
    return fake.stats()["by_method"].get("account/info", 0)


def events(otpd, name):
    return [o for o in otpd.log_lines() if o.get("event") == name]


def test_credit_read_at_start_and_followed(otpd_factory, fake):
    otpd = otpd_factory.start(FAST)
    wait_for(lambda: gauges(otpd).get("otpd_sms_credit") == 1500000, what="the credit")
    assert gauges(otpd)["otpd_sms_credit_low"] == 0
    fake.configure(credit=777)
    wait_for(lambda: gauges(otpd).get("otpd_sms_credit") == 777, what="the new credit")
    # the calls carry the key in the path only, like every call
    reqs = [r for r in fake.requests() if r["path"].endswith("/account/info.json")]
    assert reqs and all(r["path"] == "/v1/%s/account/info.json" % fake.api_key for r in reqs)
    assert all(fake.api_key not in r["body"] for r in reqs)


def test_credit_read_once_at_start_with_the_default_interval(otpd_factory, fake):
    otpd = otpd_factory.start({"KAVENEGAR_CREDIT_INTERVAL": None})
    wait_for(lambda: gauges(otpd).get("otpd_sms_credit") == 1500000, what="the credit")
    assert info_calls(fake) == 1


def test_alert_once_per_crossing(otpd_factory, fake):
    otpd = otpd_factory.start(dict(FAST, KAVENEGAR_CREDIT_ALERT="5000"))
    wait_for(lambda: gauges(otpd).get("otpd_sms_credit") == 1500000, what="the credit")
    assert not events(otpd, "sms.credit_low")

    fake.configure(credit=1000)
    wait_for(lambda: gauges(otpd).get("otpd_sms_credit_low") == 1, what="the low flag")
    n = info_calls(fake)
    wait_for(lambda: info_calls(fake) >= n + 2, what="two more checks")
    low = events(otpd, "sms.credit_low")
    assert len(low) == 1, low
    assert low[0]["level"] == "warn" and low[0]["credit"] == 1000 and low[0]["alert"] == 5000

    fake.configure(credit=9000)
    wait_for(lambda: gauges(otpd).get("otpd_sms_credit_low") == 0, what="the flag cleared")
    assert len(events(otpd, "sms.credit_ok")) == 1
    fake.configure(credit=10)
    wait_for(lambda: len(events(otpd, "sms.credit_low")) == 2, what="the second crossing")
    assert gauges(otpd)["otpd_sms_credit"] == 10


def test_no_alert_when_off(otpd_factory, fake):
    fake.configure(credit=3)
    otpd = otpd_factory.start(FAST)
    wait_for(lambda: gauges(otpd).get("otpd_sms_credit") == 3, what="the credit")
    n = info_calls(fake)
    wait_for(lambda: info_calls(fake) >= n + 1, what="one more check")
    assert gauges(otpd)["otpd_sms_credit_low"] == 0
    assert not events(otpd, "sms.credit_low")


@pytest.mark.parametrize("knobs", [{"http_status": 500}, {"drop": True}, {"status": 403}],
                         ids=["http-500", "drop", "refused-403"])
def test_failed_check_logged_once_retried_and_sending_goes_on(otpd_factory, fake, knobs):
    fake.configure(fail_methods=["account/info"], **knobs)
    otpd = otpd_factory.start(FAST)
    wait_for(lambda: info_calls(fake) >= 3, what="three failed checks")
    failed = [o for o in events(otpd, "sms.credit_check") if o["level"] == "warn"]
    assert len(failed) == 1, failed
    assert "otpd_sms_credit" not in gauges(otpd)   # never read: absent, not 0
    assert otpd.send(PHONE).status_code == 200      # sending goes on
    fake.configure(fail_methods=None, http_status=None, drop=False, status=None)
    left = fake.config()["credit"]                  # the send was charged
    assert left < 1500000
    wait_for(lambda: gauges(otpd).get("otpd_sms_credit") == left, what="the credit")
    assert [o["level"] for o in events(otpd, "sms.credit_check")] == ["warn", "info"]


def test_answer_without_a_credit_is_a_failed_check(otpd_factory, fake):
    """account/info answered 200 but without entries.remaincredit: a failed check, logged
    once, retried."""
    otpd = otpd_factory.start(FAST)
    wait_for(lambda: gauges(otpd).get("otpd_sms_credit") == 1500000, what="the credit")
    # no knob makes the fake answer a credit that is not a number: set its state directly
    with fake._state.lock:
        fake._state.config["credit"] = "lots"
    n = info_calls(fake)
    wait_for(lambda: info_calls(fake) >= n + 3, what="three more checks")
    failed = [o for o in events(otpd, "sms.credit_check") if o["level"] == "warn"]
    assert len(failed) == 1 and "remaincredit" in failed[0]["msg"], failed
    assert gauges(otpd)["otpd_sms_credit"] == 1500000   # the last good reading stays


def test_console_backend_reads_no_credit(otpd_factory, fake):
    otpd = otpd_factory.start(dict(FAST, SMS_BACKEND="console"))
    assert otpd.send(PHONE).status_code == 200
    assert fake.stats()["requests"] == 0
    assert "otpd_sms_credit" not in gauges(otpd)
