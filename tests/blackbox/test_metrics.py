"""GET /metrics (docs/API.md §5): the Prometheus text exposition, read with a real parser
(python3-prometheus-client).  Every family is there with its type, each counter moves with
the event it counts, labels come from bounded sets and never carry a number, code or token,
and OTPD_METRICS_TOKEN guards the endpoint."""

import secrets

import pytest
from prometheus_client.parser import text_string_to_metric_families

from conftest import PHONE, assert_problem, get_code, verify_into_a_store_error, wait_for

SEND = "/api/v1/usr/otp"
REFRESH = "/api/v1/usr/token/refresh"

FAMILIES = {
    "otpd_build_info": "gauge",
    "otpd_http_requests_total": "counter",
    "otpd_http_request_duration_seconds": "histogram",
    "otpd_otp_sends_total": "counter",
    "otpd_otp_verifies_total": "counter",
    "otpd_users_created_total": "counter",
    "otpd_token_refreshes_total": "counter",
    "otpd_sms_requests_total": "counter",
    "otpd_sms_provider_status_total": "counter",
    "otpd_sms_duration_seconds": "histogram",
    "otpd_sms_in_flight": "gauge",
    "otpd_sms_credit": "gauge",
    "otpd_sms_credit_low": "gauge",
    "otpd_sms_delivered_total": "counter",
    "otpd_sms_circuit_open": "gauge",
    "otpd_test_number_logins_total": "counter",
    "otpd_store_errors_total": "counter",
}


class Scrape:
    def __init__(self, text):
        self.text = text
        self.families = {}
        self.samples = {}
        for fam in text_string_to_metric_families(text):
            # the parser names a counter's family without its _total suffix
            name = fam.name + "_total" if fam.type == "counter" else fam.name
            self.families[name] = fam.type
            for s in fam.samples:
                self.samples[(s.name, tuple(sorted(s.labels.items())))] = s.value

    def value(self, name, **labels):
        return self.samples.get((name, tuple(sorted(labels.items()))), 0.0)


def scrape(otpd, **kw):
    r = otpd.get("/metrics", **kw)
    assert r.status_code == 200, r.text
    assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    return Scrape(r.text)


def delta(before, after, name, **labels):
    return after.value(name, **labels) - before.value(name, **labels)


def test_every_family_with_its_type(otpd):
    m = scrape(otpd)
    for name, typ in FAMILIES.items():
        assert m.families.get(name) == typ, (name, m.families.get(name))
    builds = [k for k in m.samples if k[0] == "otpd_build_info"]
    assert len(builds) == 1 and m.samples[builds[0]] == 1
    version = dict(builds[0][1])["version"]
    assert version == otpd_version(otpd)


def otpd_version(otpd):
    import subprocess
    from conftest import OTPD_BIN
    return subprocess.run([str(OTPD_BIN), "--version"], capture_output=True, text=True,
                          check=True).stdout.split()[1]


@pytest.mark.otpd_env(OTP_SEND_LIMIT="100", JWT_REFRESH_GRACE="0")
def test_counters_move_with_what_they_count(otpd, fake):
    m0 = scrape(otpd)
    assert otpd.send(PHONE).status_code == 200
    m1 = scrape(otpd)
    assert delta(m0, m1, "otpd_otp_sends_total", result="sent", channel="sms") == 1
    assert delta(m0, m1, "otpd_sms_requests_total", backend="kavenegar", result="accepted") == 1
    assert delta(m0, m1, "otpd_sms_provider_status_total", status="200") == 1
    assert delta(m0, m1, "otpd_sms_duration_seconds_count", backend="kavenegar") == 1
    assert delta(m0, m1, "otpd_http_requests_total", route=SEND, status="200") == 1
    assert delta(m0, m1, "otpd_http_request_duration_seconds_count", route=SEND) == 1
    assert m1.value("otpd_sms_in_flight") == 0

    code = get_code(fake, PHONE)
    wrong = "%06d" % ((int(code) + 1) % 1000000)
    assert_problem(otpd.verify(PHONE, wrong), 400, "invalid_code")
    m2 = scrape(otpd)
    assert delta(m1, m2, "otpd_otp_verifies_total", result="invalid_code") == 1
    assert delta(m1, m2, "otpd_otp_verifies_total", result="ok") == 0

    r = otpd.verify(PHONE, code)
    assert r.status_code == 200 and r.json()["is_new_user"]
    m3 = scrape(otpd)
    assert delta(m2, m3, "otpd_otp_verifies_total", result="ok") == 1
    assert delta(m2, m3, "otpd_users_created_total") == 1

    tok = r.json()["refresh_token"]
    assert otpd.post(REFRESH, json={"refresh_token": tok}).status_code == 200
    m4 = scrape(otpd)
    assert delta(m3, m4, "otpd_token_refreshes_total", result="ok") == 1
    assert_problem(otpd.post(REFRESH, json={"refresh_token": tok}), 401, "invalid_token")
    m5 = scrape(otpd)
    assert delta(m4, m5, "otpd_token_refreshes_total", result="reuse_detected") == 1
    assert delta(m4, m5, "otpd_token_refreshes_total", result="invalid") == 0
    assert_problem(otpd.post(REFRESH, json={"refresh_token": "not-a-token"}), 401,
                   "invalid_token")
    m6 = scrape(otpd)
    assert delta(m5, m6, "otpd_token_refreshes_total", result="invalid") == 1

    # a second login of the same number creates nobody
    assert otpd.send(PHONE).status_code == 200
    assert otpd.verify(PHONE, get_code(fake, PHONE)).status_code == 200
    m7 = scrape(otpd)
    assert delta(m6, m7, "otpd_users_created_total") == 0
    assert delta(m6, m7, "otpd_otp_verifies_total", result="ok") == 1


@pytest.mark.otpd_env(OTP_SEND_LIMIT="100")
def test_sms_refused_and_provider_down(otpd, fake):
    m0 = scrape(otpd)
    fake.configure(status=418)
    assert_problem(otpd.send(PHONE), 502, "sms_rejected")
    m1 = scrape(otpd)
    assert delta(m0, m1, "otpd_otp_sends_total", result="rejected", channel="sms") == 1
    assert delta(m0, m1, "otpd_sms_requests_total", backend="kavenegar", result="rejected") == 1
    assert delta(m0, m1, "otpd_sms_provider_status_total", status="418") == 1

    fake.configure(status=None, drop=True)
    assert_problem(otpd.send(PHONE), 503, "sms_unavailable")
    m2 = scrape(otpd)
    assert delta(m1, m2, "otpd_otp_sends_total", result="unavailable", channel="sms") == 1
    assert delta(m1, m2, "otpd_sms_requests_total", backend="kavenegar",
                 result="unavailable") == 1
    assert m2.value("otpd_sms_in_flight") == 0
    assert delta(m0, m2, "otpd_otp_sends_total", result="sent", channel="sms") == 0


@pytest.mark.otpd_env(OTP_SEND_LIMIT="1", OTP_THROTTLE_RATE="3/min")
def test_refusals_counted(otpd, fake):
    m0 = scrape(otpd)
    assert otpd.send(PHONE).status_code == 200
    assert_problem(otpd.send(PHONE), 429, "otp_rate_limited")
    assert_problem(otpd.send("not a number"), 400, "validation_error")
    assert_problem(otpd.send(PHONE), 429, "throttled")
    assert_problem(otpd.verify(PHONE, "12"), 400, "validation_error")
    m1 = scrape(otpd)
    for result, n in (("sent", 1), ("rate_limited", 1), ("invalid", 1), ("throttled", 1)):
        assert delta(m0, m1, "otpd_otp_sends_total", result=result, channel="sms") == n, result
    assert delta(m0, m1, "otpd_otp_verifies_total", result="invalid") == 1
    assert delta(m0, m1, "otpd_http_requests_total", route=SEND, status="429") == 2


def test_console_backend_label(otpd_factory):
    otpd = otpd_factory.start({"SMS_BACKEND": "console"})
    assert otpd.send(PHONE).status_code == 200
    m = scrape(otpd)
    assert m.value("otpd_sms_requests_total", backend="console", result="accepted") == 1


def test_labels_bounded_and_clean(otpd, fake):
    """Unknown paths all count as route="other"; no phone number, code or key is in any
    label or value."""
    m0 = scrape(otpd)
    for i in range(20):
        otpd.get("/no/such/%s" % secrets.token_hex(4))
    otpd.login(fake, PHONE)
    m1 = scrape(otpd)
    routes = {dict(k[1]).get("route") for k in m1.samples if k[0] == "otpd_http_requests_total"}
    assert "other" in routes
    assert all(r == "other" or r.startswith("/") and "/no/such" not in r for r in routes), routes
    assert delta(m0, m1, "otpd_http_requests_total", route="other", status="404") == 20
    text = m1.text
    for secret in (PHONE, PHONE[3:], get_code(fake, PHONE), fake.api_key):
        assert secret not in text


@pytest.mark.otpd_env(OTP_SEND_LIMIT="100")
def test_store_errors_counted(otpd, fake):
    m0 = scrape(otpd)
    r = verify_into_a_store_error(otpd, fake, PHONE)
    assert r.status_code == 500
    m1 = wait_for(lambda: (lambda m: m if delta(m0, m, "otpd_otp_verifies_total",
                                                result="error") else None)(scrape(otpd)),
                  what="the verify counted")
    assert delta(m0, m1, "otpd_store_errors_total") == 1
    assert delta(m0, m1, "otpd_otp_verifies_total", result="error") == 1


def test_metrics_token(otpd_factory):
    token = secrets.token_urlsafe(24)
    otpd = otpd_factory.start({"OTPD_METRICS_TOKEN": token})
    assert_problem(otpd.get("/metrics"), 401, "invalid_token")
    assert_problem(otpd.get("/metrics", headers={"Authorization": "Bearer " + token[:-1]}),
                   401, "invalid_token")
    assert_problem(otpd.get("/metrics", headers={"Authorization": "Basic " + token}),
                   401, "invalid_token")
    m = scrape(otpd, headers={"Authorization": "Bearer " + token})
    assert m.families["otpd_build_info"] == "gauge"
    assert token not in otpd.log_text()


def test_metrics_methods(otpd):
    r = otpd.post("/metrics", data="x")
    assert_problem(r, 405, "method_not_allowed")
    assert "GET" in r.headers["Allow"]
    r = otpd.request("HEAD", "/metrics")
    assert r.status_code == 200 and not r.content
