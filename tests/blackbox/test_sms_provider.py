"""The Kavenegar backend against the fake (docs/KAVENEGAR.md): the request otpd
makes, sms/send vs verify/lookup, refusals -> 502 sms_rejected, outages -> 503 sms_unavailable,
a code whose SMS was not accepted never verifies, recovery once the provider is back."""

import re
import threading
import time
import urllib.parse

import pytest

from conftest import (PHONE, assert_problem, get_code, new_api_key, retry_after_of, wait_for,
                      wrong_code)

TEMPLATE = "otp-login"


def form_of(req):
    return dict(urllib.parse.parse_qsl(req["body"], keep_blank_values=True))


def header(req, name):
    for k, v in req["headers"]:
        if k.lower() == name.lower():
            return v
    return None


# -- the request itself --------------------------------------------------------------------

def test_sms_send_request(otpd, fake):
    r = otpd.send(PHONE)
    assert r.status_code == 200, r.text
    reqs = fake.requests()
    assert len(reqs) == 1, reqs
    req = reqs[0]
    key = fake.api_key
    assert req["method"] == "POST"
    assert req["path"] == "/v1/%s/sms/send.json" % key
    assert (header(req, "Content-Type") or "").split(";")[0].strip() == "application/x-www-form-urlencoded"
    form = form_of(req)
    assert form.get("receptor") == "09123456789", "Kavenegar documents the 09… form: %s" % form
    assert form.get("sender") == "10008663", "KAVENEGAR_SENDER defaults to 10008663: %s" % form
    code = get_code(fake, PHONE)
    assert code in form["message"]
    # the key travels in the path and nowhere else
    assert key not in req["query"] and key not in req["body"]
    assert all(key not in v for _, v in req["headers"])
    # the code does not travel in the URL
    assert code not in req["raw_path"]


def test_default_message_is_persian(otpd, fake):
    assert otpd.send(PHONE).status_code == 200
    msg = fake.messages(PHONE)[-1]["message"]
    assert re.search("[\u0600-\u06ff]", msg), "default OTP_MESSAGE is Persian: %r" % msg
    assert get_code(fake, PHONE) in msg
    assert "{code}" not in msg


@pytest.mark.parametrize("template", ["Your code is {code}.", "کد ورود شما: {code}",
                                      "{code} & more=100% +1 ;#?/"],
                         ids=["ascii", "persian", "specials"])
def test_otp_message(otpd_factory, fake, template):
    otpd = otpd_factory.start({"OTP_MESSAGE": template})
    assert otpd.send(PHONE).status_code == 200
    code = get_code(fake, PHONE)
    assert fake.messages(PHONE)[-1]["message"] == template.replace("{code}", code)


def test_kavenegar_sender(otpd_factory, fake):
    fake.configure(senders=["10008663", "30004505"])
    otpd = otpd_factory.start({"KAVENEGAR_SENDER": "30004505"})
    assert otpd.send(PHONE).status_code == 200
    assert fake.messages(PHONE)[-1]["sender"] == "30004505"


def test_sender_not_ours_is_rejected(otpd_factory, fake):
    otpd = otpd_factory.start({"KAVENEGAR_SENDER": "99999999"})
    body = assert_problem(otpd.send(PHONE), 502, "sms_rejected")
    assert body.get("provider_status") == 412


def test_strict_receptor(otpd, fake):
    fake.configure(strict_receptor=True)
    r = otpd.send(PHONE)
    assert r.status_code == 200, "otpd must send 09… or 00989…: %s" % r.text


# -- verify/lookup -------------------------------------------------------------------------

def test_template_uses_verify_lookup(otpd_factory, fake):
    fake.configure(templates={TEMPLATE: "کد ورود شما %token است"})
    otpd = otpd_factory.start({"KAVENEGAR_TEMPLATE": TEMPLATE})
    r = otpd.send(PHONE)
    assert r.status_code == 200, r.text
    reqs = fake.requests()
    assert len(reqs) == 1
    req = reqs[0]
    assert req["method"] == "POST"
    assert req["path"] == "/v1/%s/verify/lookup.json" % fake.api_key
    form = form_of(req)
    assert form.get("receptor") == "09123456789"
    assert form.get("template") == TEMPLATE
    assert re.fullmatch(r"[0-9]{6}", form.get("token", "")), form
    assert "message" not in form
    assert fake.api_key not in req["body"] and fake.api_key not in req["query"]
    rec = fake.messages(PHONE)[-1]
    assert rec["method"] == "verify/lookup" and rec["token"] == form["token"]
    r = otpd.verify(PHONE, form["token"])
    assert r.status_code == 200, r.text


def test_template_entries_object(otpd_factory, fake):
    fake.configure(templates=[TEMPLATE], entries_object=True)
    otpd = otpd_factory.start({"KAVENEGAR_TEMPLATE": TEMPLATE})
    assert otpd.send(PHONE).status_code == 200
    assert otpd.verify(PHONE, get_code(fake, PHONE)).status_code == 200


def test_template_unknown_to_provider(otpd_factory, fake):
    otpd = otpd_factory.start({"KAVENEGAR_TEMPLATE": "not-registered"})
    body = assert_problem(otpd.send(PHONE), 502, "sms_rejected")
    assert body.get("provider_status") == 424


# -- refusals: 502 sms_rejected ------------------------------------------------------------

@pytest.mark.parametrize("http_200", [False, True], ids=["http-status", "http-200"])
@pytest.mark.parametrize("status", [418, 411, 401, 412, 501])
def test_provider_refusal(otpd, fake, status, http_200):
    fake.configure(status=status, http_200_errors=http_200)
    body = assert_problem(otpd.send(PHONE), 502, "sms_rejected")
    assert body.get("provider_status") == status
    assert isinstance(body["provider_status"], int)


def test_wrong_api_key(otpd_factory, fake):
    other_key = new_api_key()
    otpd = otpd_factory.start({"KAVENEGAR_API_KEY": other_key})
    r = otpd.send(PHONE)
    body = assert_problem(r, 502, "sms_rejected")
    assert body.get("provider_status") == 403
    assert other_key not in r.text and fake.api_key not in r.text
    assert other_key not in otpd.log_text()


def test_out_of_credit(otpd, fake):
    fake.configure(credit=0)
    body = assert_problem(otpd.send(PHONE), 502, "sms_rejected")
    assert body["provider_status"] == 418


def test_refused_code_never_verifies(otpd, fake):
    fake.configure(status=418)
    assert_problem(otpd.send(PHONE), 502, "sms_rejected")
    code = get_code(fake, PHONE, include_refused=True)  # the fake saw it, the user never got it
    assert_problem(otpd.verify(PHONE, code), 400, "otp_expired")
    assert_problem(otpd.verify(PHONE, wrong_code(code)), 400, "otp_expired")


# -- outages: 503 sms_unavailable ----------------------------------------------------------

OUTAGES = [
    ("busy-409", {"status": 409}),
    ("busy-409-http-200", {"status": 409, "http_200_errors": True}),
    ("http-500-html", {"http_status": 500}),
    ("http-502-html", {"http_status": 502}),
    ("http-504-html", {"http_status": 504}),
    ("http-200-html", {"http_status": 200}),
    ("drop", {"drop": True}),
]


@pytest.mark.parametrize("knobs", [k for _, k in OUTAGES], ids=[i for i, _ in OUTAGES])
@pytest.mark.otpd_env(OTP_SEND_LIMIT="100")
def test_provider_unavailable_then_back(otpd, fake, knobs):
    fake.configure(**knobs)
    r = otpd.send(PHONE)
    assert_problem(r, 503, "sms_unavailable")
    retry_after_of(r, lo=0)
    # the code of the SMS that did not go out never verifies
    refused = fake.messages(PHONE, include_refused=True)
    if refused:
        code = get_code(fake, PHONE, include_refused=True)
        assert_problem(otpd.verify(PHONE, code), 400, "otp_expired")
    # the provider is back: the next send works and its code verifies
    fake.configure(status=None, http_status=None, drop=False, http_200_errors=False)
    r = otpd.send(PHONE)
    assert r.status_code == 200, r.text
    r = otpd.verify(PHONE, get_code(fake, PHONE))
    assert r.status_code == 200, r.text


@pytest.mark.otpd_env(KAVENEGAR_TIMEOUT_MS="500", OTP_SEND_LIMIT="100")
def test_provider_timeout(otpd, fake):
    fake.configure(latency_ms=1500)
    t0 = time.monotonic()
    r = otpd.send(PHONE)
    elapsed = time.monotonic() - t0
    assert_problem(r, 503, "sms_unavailable")
    retry_after_of(r, lo=0)
    assert elapsed < 1.4, "KAVENEGAR_TIMEOUT_MS=500 must bound the wait (took %.2fs)" % elapsed
    # the fake accepts it late; otpd already answered 503, so that code must not work
    wait_for(lambda: fake.messages(PHONE), 3, what="the late SMS at the fake")
    code = get_code(fake, PHONE)
    assert_problem(otpd.verify(PHONE, code), 400, "otp_expired")
    fake.configure(latency_ms=0)
    assert otpd.send(PHONE).status_code == 200
    assert otpd.verify(PHONE, get_code(fake, PHONE)).status_code == 200


@pytest.mark.otpd_env(OTP_SEND_LIMIT="100")
def test_provider_down_connection_refused(otpd, fake):
    fake.stop()
    t0 = time.monotonic()
    r = otpd.send(PHONE)
    assert_problem(r, 503, "sms_unavailable")
    retry_after_of(r, lo=0)
    assert time.monotonic() - t0 < 3.5
    fake.start()  # same port
    r = otpd.send(PHONE)
    assert r.status_code == 200, r.text
    assert otpd.verify(PHONE, get_code(fake, PHONE)).status_code == 200


def test_provider_unreachable_connect_timeout(otpd_factory):
    otpd = otpd_factory.start({"KAVENEGAR_API_URL": "http://10.255.255.1:81",
                               "KAVENEGAR_CONNECT_TIMEOUT_MS": "300",
                               "KAVENEGAR_TIMEOUT_MS": "1000"})
    t0 = time.monotonic()
    r = otpd.send(PHONE)
    assert_problem(r, 503, "sms_unavailable")
    assert time.monotonic() - t0 < 3.0


@pytest.mark.otpd_env(OTP_SEND_LIMIT="100")
def test_one_outage_does_not_poison_others(otpd, fake):
    """While one send waits on a stalled provider, nothing else is held up for good: once the
    provider answers again, new sends go through (the worker is not wedged)."""
    fake.configure(drop=True)
    for _ in range(3):
        assert_problem(otpd.send(PHONE), 503, "sms_unavailable")
    fake.configure(drop=False)
    for i in range(3):
        r = otpd.send(PHONE)
        assert r.status_code == 200, r.text
    assert otpd.verify(PHONE, get_code(fake, PHONE)).status_code == 200


def test_parallel_sends_reach_provider_in_parallel(otpd, fake):
    """Ten sends to ten numbers with a provider that takes 700 ms each finish in well under
    10 x 700 ms: the SMS worker drives them concurrently."""
    fake.configure(latency_ms=700)
    phones = ["+98935%07d" % i for i in range(10)]
    results = {}

    def one(p):
        results[p] = otpd.send(p)
    t0 = time.monotonic()
    ts = [threading.Thread(target=one, args=(p,)) for p in phones]
    for t in ts:
        t.start()
    for t in ts:
        t.join(30)
    elapsed = time.monotonic() - t0
    assert all(results[p].status_code == 200 for p in phones), [results[p].status_code for p in phones]
    assert elapsed < 3.5, "10 sends took %.1fs" % elapsed
    assert fake.stats()["max_in_flight"] >= 5

