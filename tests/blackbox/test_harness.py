"""The suite's own checks, checked: a leak the after-test checks must catch is caught, and
nothing harmless is flagged."""

import json

from conftest import PHONE, PHONE_MASKED, console_codes, is_access_line, log_leaks, mask, normalize_phone


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


# the text format (OTPD_LOG_FORMAT=text)
def text(event="x", msg="m", extra="", rid="0123456789abcdef"):
    return "06:13:12 info  %s  %s%s  [req %s]" % (event, msg, extra, rid)


def code_line(code, rest="  [req 0123456789abcdef]"):
    return "CODE %s → %s%s" % (PHONE_MASKED, code, rest)


def test_text_leaks_are_caught():
    key, secret, code = "AB" * 32, "s3cr3t" * 8, "482913"
    cases = [
        text(msg="url http://h/v1/%s/sms/send.json" % key),
        text(msg="secret is %s" % secret),
        text(msg="code %s sent" % code),
        text(extra="  code=%s" % code),
        text(extra="  otp=۴۸۲۹۱۳"),
        text(msg="sent to %s" % PHONE),
        text(extra="  phone=989123456789"),
        text(msg="user ۰۹۱۲۳۴۵۶۷۸۹"),
        "06:13:12 info  POST /api/v1/usr/otp 200 1.2ms  otp.sent  code sent to %s  [req 1]" % PHONE,
        code_line(code, "  [req %s]" % code),          # the code twice on its line
        code_line(code, "  %s" % key),
        "CODE %s → %s" % (PHONE, code),                # a full number on the CODE line
    ]
    for t in cases:
        assert log_leaks(t, [key, secret], {code}, {PHONE}), t
    # the CODE line is the console backend's own line only where that is allowed
    assert log_leaks(code_line(code), [], {code}, {PHONE}, console_ok=False)
    # and a code on it is known: the same code anywhere else in the log is a leak
    log = "\n".join([code_line(code), text(msg="hello %s" % code)])
    assert console_codes(log) == {code}
    assert log_leaks(log, [], console_codes(log), {PHONE})


def test_text_harmless_lines_pass():
    code = "482913"
    cases = [
        code_line(code),
        code_line(code, ""),
        text(msg="sent to %s" % PHONE_MASKED, extra="  phone=%s" % PHONE_MASKED),
        text(rid="a482913b"),
        text(msg="messageid 14829130"),
        "06:13:12 info  POST /api/v1/usr/otp 200 482µs  otp.sent  code sent to %s  client=127.0.0.1  [req 1]"
        % PHONE_MASKED,
        "48:29:13 info  x  m",
    ]
    for t in cases:
        assert not log_leaks(t, ["AB" * 32], {code}, {PHONE}), t


def test_text_lines_recognised():
    assert console_codes(code_line("482913")) == {"482913"}
    assert console_codes(code_line("482913", "")) == {"482913"}
    assert console_codes(text(msg="CODE %s → 482913" % PHONE_MASKED)) == set()
    assert is_access_line("06:13:12 info  POST /api/v1/usr/otp 200 1.2ms  otp.sent  m  client=::1  [req 1]")
    assert is_access_line("06:13:12 info  GET /x 404 53µs  client=::1  [req 1]")
    assert not is_access_line(text())
    assert is_access_line(line(event="http.access"))


def test_reference_normaliser():
    assert normalize_phone("۰۹۱۲ ۳۴۵ ۶۷۸۹") == PHONE
    assert normalize_phone("(0912) 345-6789") == PHONE
    assert normalize_phone("0912.345.6789") is None
    assert normalize_phone("09123456789".ljust(33)) is None
    assert mask(PHONE) == PHONE_MASKED
