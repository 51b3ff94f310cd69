"""POST /api/v1/usr/otp: the 200 body, JSON and form bodies, every phone form of docs/API.md §2
(ASCII, Persian, Arabic-Indic, mixed) and every rejected class, the per-phone send limit."""

import time

import pytest

from conftest import (PHONE, SEND, assert_problem, assert_validation, get_code, phone_n,
                      retry_after_of)

EXACT_200 = {"phone_number": PHONE, "message": "OTP sent successfully", "expires_in": 300}

# (id, input): all of them are +989123456789
ACCEPTED = [
    ("plus989", "+989123456789"),
    ("00989", "00989123456789"),
    ("989", "989123456789"),
    ("09", "09123456789"),
    ("9", "9123456789"),
    ("spaces", "+98 912 345 6789"),
    ("dashes", "0912-345-6789"),
    ("parens", "(0912) 345 6789"),
    ("all-separators", " +98 (912) 345-67-89 "),
    ("00989-spaced", "0098 912 345 6789"),
    ("fa-plus989", "+۹۸۹۱۲۳۴۵۶۷۸۹"),
    ("fa-00989", "۰۰۹۸۹۱۲۳۴۵۶۷۸۹"),
    ("fa-989", "۹۸۹۱۲۳۴۵۶۷۸۹"),
    ("fa-09", "۰۹۱۲۳۴۵۶۷۸۹"),
    ("fa-9", "۹۱۲۳۴۵۶۷۸۹"),
    ("fa-spaced", "۰۹۱۲ ۳۴۵ ۶۷۸۹"),
    ("ar-plus989", "+٩٨٩١٢٣٤٥٦٧٨٩"),
    ("ar-00989", "٠٠٩٨٩١٢٣٤٥٦٧٨٩"),
    ("ar-989", "٩٨٩١٢٣٤٥٦٧٨٩"),
    ("ar-09", "٠٩١٢٣٤٥٦٧٨٩"),
    ("ar-9", "٩١٢٣٤٥٦٧٨٩"),
    ("ar-dashed", "٠٩١٢-٣٤٥-٦٧٨٩"),
    ("mixed-ascii-fa-ar", "09۱۲٣۴5٦7۸9"),
    ("mixed-plus", "+9٨۹12٣۴56٧۸9"),
]

# (id, input): validation_error on phone_number
REJECTED = [
    ("landline-tehran", "02112345678"),
    ("landline-intl", "+982112345678"),
    ("other-country-us", "+14155552671"),
    ("other-country-uk", "00447911123456"),
    ("other-country-98-prefix-lookalike", "+9989123456789"),
    ("too-short-09", "0912345678"),
    ("too-long-09", "091234567890"),
    ("too-short-plus", "+98912345678"),
    ("too-long-plus", "+9891234567890"),
    ("too-short-9", "912345678"),
    ("letters", "0912345678a"),
    ("letter-o", "09I2345678O"),
    ("words", "my phone"),
    ("empty", ""),
    ("only-spaces", "     "),
    ("only-separators", "()--"),
    ("dots", "0912.345.6789"),
    ("slashes", "0912/345/6789"),
    ("plus-in-middle", "0912+3456789"),
    ("double-plus", "++989123456789"),
    ("fullwidth-digits", "０９１２３４５６７８９"),
    ("devanagari-digits", "०९१२३४५६७८९"),
    ("fa-landline", "۰۲۱۱۲۳۴۵۶۷۸"),
    ("fa-too-short", "۰۹۱۲۳۴۵۶۷۸"),
    ("33-chars", "0912 345 6789" + " " * 20),
    ("way-too-long", "09123456789" * 40),
    ("leading-zero-plus", "+0989123456789"),
]

WRONG_TYPES = [
    ("int", 9123456789),
    ("int-989", 989123456789),
    ("float", 9123456789.0),
    ("list", ["09123456789"]),
    ("empty-list", []),
    ("object", {"number": "09123456789"}),
    ("null", None),
    ("true", True),
]


def test_send_exact_body(otpd, fake):
    r = otpd.send(PHONE)
    assert r.status_code == 200, r.text
    assert r.headers["Content-Type"].split(";")[0].strip() == "application/json"
    assert r.json() == EXACT_200
    msgs = fake.messages(PHONE)
    assert len(msgs) == 1, msgs
    assert len(get_code(fake, PHONE)) == 6


@pytest.mark.otpd_env(OTP_EXPIRY_TIME="120")
def test_send_expires_in_follows_config(otpd):
    r = otpd.send(PHONE)
    assert r.status_code == 200, r.text
    assert r.json() == dict(EXACT_200, expires_in=120)


def test_send_form_body(otpd, fake):
    r = otpd.send("+989123456789", form=True)
    assert r.status_code == 200, r.text
    assert r.json() == EXACT_200
    assert get_code(fake, PHONE)


def test_send_form_body_persian(otpd, fake):
    r = otpd.send("۰۹۱۲ ۳۴۵ ۶۷۸۹", form=True)
    assert r.status_code == 200, r.text
    assert r.json() == EXACT_200


def test_send_json_with_charset(otpd):
    r = otpd.post(SEND, data='{"phone_number": "09123456789"}'.encode(),
                  headers={"Content-Type": "application/json; charset=utf-8"})
    assert r.status_code == 200, r.text
    assert r.json() == EXACT_200


def test_send_form_with_charset(otpd):
    r = otpd.post(SEND, data=b"phone_number=%2B989123456789",
                  headers={"Content-Type": "application/x-www-form-urlencoded; charset=UTF-8"})
    assert r.status_code == 200, r.text
    assert r.json() == EXACT_200


def test_media_type_is_case_insensitive(otpd):
    r = otpd.post(SEND, data=b'{"phone_number": "09123456789"}',
                  headers={"Content-Type": "Application/JSON"})
    assert r.status_code == 200, r.text


@pytest.mark.parametrize("value", [v for _, v in ACCEPTED], ids=[i for i, _ in ACCEPTED])
def test_phone_form_accepted(otpd, fake, value):
    """Each form sends to the one number and logs in as it (verify takes the same form)."""
    r = otpd.send(value)
    assert r.status_code == 200, r.text
    assert r.json() == EXACT_200
    msgs = fake.messages(PHONE)
    assert len(msgs) == 1 and msgs[0]["phone"] == PHONE
    code = get_code(fake, PHONE)
    r = otpd.verify(value, code)
    assert r.status_code == 200, r.text
    assert r.json()["user"]["phone_number"] == PHONE


@pytest.mark.parametrize("value", ["+989123456789", "۰۹۱۲۳۴۵۶۷۸۹", "٠٠٩٨٩١٢٣٤٥٦٧٨٩",
                                   "(۰۹۱۲) 345-٦٧٨٩"], ids=["ascii", "fa", "ar", "mixed"])
def test_phone_form_accepted_in_form_body(otpd, fake, value):
    r = otpd.send(value, form=True)
    assert r.status_code == 200, r.text
    assert r.json() == EXACT_200
    r = otpd.verify(value, get_code(fake, PHONE), form=True)
    assert r.status_code == 200, r.text


def test_all_forms_are_one_number(otpd, fake):
    """Send in one script, verify in another: the same number, the same user."""
    r = otpd.send("09123456789")
    assert r.status_code == 200
    r = otpd.verify("+۹۸۹۱۲۳۴۵۶۷۸۹", get_code(fake, PHONE))
    assert r.status_code == 200, r.text
    uid = r.json()["user"]["id"]
    r = otpd.send("٩١٢٣٤٥٦٧٨٩")
    assert r.status_code == 200
    r = otpd.verify("0098 912 345 6789", get_code(fake, PHONE))
    assert r.status_code == 200, r.text
    assert r.json()["user"]["id"] == uid and r.json()["is_new_user"] is False


@pytest.mark.parametrize("value", [v for _, v in REJECTED], ids=[i for i, _ in REJECTED])
def test_phone_rejected(otpd, fake, value):
    r = otpd.send(value)
    assert_validation(r, "phone_number")
    r = otpd.send(value, form=True)
    assert_validation(r, "phone_number")
    assert fake.stats()["requests"] == 0, "nothing may reach the provider"


@pytest.mark.parametrize("value", [v for _, v in REJECTED[:6]], ids=[i for i, _ in REJECTED[:6]])
def test_phone_rejected_on_verify(otpd, value):
    assert_validation(otpd.verify(value, "123456"), "phone_number")


@pytest.mark.parametrize("value", [v for _, v in WRONG_TYPES], ids=[i for i, _ in WRONG_TYPES])
def test_phone_wrong_type(otpd, fake, value):
    assert_validation(otpd.post(SEND, json={"phone_number": value}), "phone_number")
    assert_validation(otpd.post("/api/v1/usr/otp/verify",
                                json={"phone_number": value, "code": "123456"}), "phone_number")
    assert fake.stats()["requests"] == 0


@pytest.mark.parametrize("body", [{}, {"phone": "09123456789"}, {"phone_number ": "09123456789"},
                                  {"PHONE_NUMBER": "09123456789"}],
                         ids=["empty-object", "other-name", "trailing-space-name", "upper-case-name"])
def test_phone_missing(otpd, body):
    assert_validation(otpd.post(SEND, json=body), "phone_number")


def test_phone_missing_in_form(otpd):
    r = otpd.post(SEND, data={"phone": "09123456789"})
    assert_validation(r, "phone_number")


def test_phone_length_bound_is_32_characters(otpd, fake):
    ascii32 = "0912 345 6789".ljust(32)
    assert len(ascii32) == 32
    r = otpd.send(ascii32)
    assert r.status_code == 200, "32 characters are allowed: %s" % r.text
    assert_validation(otpd.send(ascii32 + " "), "phone_number")
    # characters, not bytes: 32 Persian/Arabic characters are 50+ bytes of UTF-8
    fa32 = "۰۹۱۲ ۳۴۵ ۶۷۸۹".ljust(32)
    assert len(fa32) == 32 and len(fa32.encode()) > 32
    r = otpd.send(fa32)
    assert r.status_code == 200, "32 Persian characters are allowed: %s" % r.text
    assert_validation(otpd.send(fa32 + " "), "phone_number")


# -- the per-phone send limit -------------------------------------------------------------

@pytest.mark.otpd_env(OTP_SEND_LIMIT="3", OTP_SEND_WINDOW="120")
def test_send_limit(otpd, fake):
    for form in ("09123456789", "+۹۸۹۱۲۳۴۵۶۷۸۹", "9123456789"):  # every form is the one number
        r = otpd.send(form)
        assert r.status_code == 200, r.text
    r = otpd.send(PHONE)
    body = assert_problem(r, 429, "otp_rate_limited")
    retry_after_of(r, body, lo=1, hi=120)
    assert len(fake.messages(PHONE, include_refused=True)) == 3, "a limited send must not reach the provider"
    # the limit is per number
    r = otpd.send(phone_n(1))
    assert r.status_code == 200, r.text
    # the code of the third send still works
    r = otpd.verify(PHONE, get_code(fake, PHONE))
    assert r.status_code == 200, r.text


@pytest.mark.otpd_env(OTP_SEND_LIMIT="3", OTP_SEND_WINDOW="120")
def test_send_limit_counts_failed_sms(otpd, fake):
    fake.configure(status=418)            # refused: 502
    r = otpd.send(PHONE)
    assert_problem(r, 502, "sms_rejected")
    fake.configure(status=None, drop=True)  # unreachable: 503
    r = otpd.send(PHONE)
    assert_problem(r, 503, "sms_unavailable")
    fake.configure(drop=False)
    r = otpd.send(PHONE)
    assert r.status_code == 200, r.text
    r = otpd.send(PHONE)
    body = assert_problem(r, 429, "otp_rate_limited")
    retry_after_of(r, body, lo=1, hi=120)


@pytest.mark.otpd_env(OTP_SEND_LIMIT="1", OTP_SEND_WINDOW="2")
def test_send_window_passes(otpd, fake):
    assert otpd.send(PHONE).status_code == 200
    r = otpd.send(PHONE)
    body = assert_problem(r, 429, "otp_rate_limited")
    wait = retry_after_of(r, body, lo=1, hi=2)
    time.sleep(wait + 0.3)
    r = otpd.send(PHONE)
    assert r.status_code == 200, "the window has passed: %s" % r.text
    assert len(fake.messages(PHONE)) == 2


@pytest.mark.otpd_env(OTP_SEND_LIMIT="2", OTP_SEND_WINDOW="120")
def test_invalid_requests_do_not_count(otpd):
    for _ in range(3):
        assert_validation(otpd.post(SEND, json={"phone_number": 9123456789}), "phone_number")
    assert otpd.send(PHONE).status_code == 200
    assert otpd.send(PHONE).status_code == 200
    assert_problem(otpd.send(PHONE), 429, "otp_rate_limited")


@pytest.mark.otpd_env(OTP_SEND_LIMIT="1", OTP_THROTTLE_RATE="2/min")
def test_refusals_name_their_limit(otpd, fake):
    """Every throttled / otp_rate_limited answer says which limit refused it."""
    assert otpd.send(PHONE).status_code == 200
    body = assert_problem(otpd.send(PHONE), 429, "otp_rate_limited")
    assert body["limit"] == "phone_window" and body["retry_after"] > 0
    body = assert_problem(otpd.send(PHONE), 429, "throttled")
    assert body["limit"] == "client_rate" and body["retry_after"] > 0
