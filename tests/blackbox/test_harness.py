"""The suite's own checks, checked: a leak the after-test checks must catch is caught, and
nothing harmless is flagged."""

import json

from conftest import PHONE, PHONE_MASKED, log_leaks, mask, normalize_phone


def line(**kw):
    base = {"time": "2026-01-01T00:00:00.000Z", "level": "info", "event": "x", "msg": "m"}
    base.update(kw)
    return json.dumps(base, ensure_ascii=False)


def test_leaks_are_caught():
    key, secret, code = "AB" * 32, "s3cr3t" * 8, "482913"
    cases = [
        line(msg="url http://h/v1/%s/sms/send.json" % key),
        line(msg="secret is %s" % secret),
        line(msg="code %s sent" % code),
        line(msg="code ۴۸۲۹۱۳ sent"),
        line(code=int(code)),
        line(otp=code),
        line(msg="sent to %s" % PHONE),
        line(phone=989123456789),
        line(msg="user 09123456789"),
        line(msg="user ۰۹۱۲۳۴۵۶۷۸۹"),
        line(event="sms.rendered", code=code),
        "plain text with %s in it" % code,
    ]
    for text in cases:
        assert log_leaks(text, [key, secret], {code}, {PHONE}), text


def test_harmless_lines_pass():
    code = "482913"
    cases = [
        line(msg="sent to %s" % PHONE_MASKED, phone=PHONE_MASKED),
        line(duration_us=482913, pid=482913),
        line(request_id="a482913b"),
        line(msg="messageid 14829130"),
        line(event="sms.console", phone=PHONE_MASKED, code=code),
        line(time="2026-11-25T19:45:48.061Z"),
    ]
    for text in cases:
        assert not log_leaks(text, ["AB" * 32], {code}, {PHONE}), text
    assert log_leaks(line(event="sms.console", phone=PHONE_MASKED, code=code), [], {code}, {PHONE},
                     console_ok=False)


def test_reference_normaliser():
    assert normalize_phone("۰۹۱۲ ۳۴۵ ۶۷۸۹") == PHONE
    assert normalize_phone("(0912) 345-6789") == PHONE
    assert normalize_phone("0912.345.6789") is None
    assert normalize_phone("09123456789".ljust(33)) is None
    assert mask(PHONE) == PHONE_MASKED
