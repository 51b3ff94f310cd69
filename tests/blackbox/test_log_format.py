"""OTPD_LOG_FORMAT=auto|json|text.  text: short lines for a person, the console backend's code on
a CODE line of its own (and nowhere else), client bytes escaped, no secret and no full number;
json: the lines as they always were; auto (the default): text only when stderr is a terminal and
OTPD_ENV=development.  The terminal is a real pseudo-terminal (otpd_factory.start(pty=True)).
The after-test checks of conftest read text logs as well as JSON ones."""

import json
import re

from conftest import (PHONE, PHONE_MASKED, SEND, VERIFY, assert_log_clean, console_codes,
                      get_code, log_objects, wait_for)

TIME = r"[0-9]{2}:[0-9]{2}:[0-9]{2}"
CODE_LINE = re.compile(r"^CODE (\S+) → ([0-9]{6})(?:  \[req ([0-9a-f]{16})\])?$")
TEXT_LINE = re.compile(r"^%s (error|warn |info |debug) \S" % TIME)
ACCESS_LINE = re.compile(r"^%s info  (?P<method>\S+) (?P<path>\S+) (?P<status>[0-9]{3}) "
                         r"(?P<duration>[0-9.]+(?:µs|ms|s))  (?:(?P<outcome>[a-z_.]+)  (?P<msg>.*?)  )?"
                         r"client=(?P<client>\S+)(?: completed=false)?  \[req (?P<rid>[0-9a-f]{16})\]$"
                         % TIME)

CONSOLE = {"SMS_BACKEND": "console"}


def is_json_object(line):
    try:
        return isinstance(json.loads(line), dict)
    except ValueError:
        return False


def lines_of(text):
    return [ln for ln in text.splitlines() if ln]


def assert_text_log(text):
    """Every line is a text line or a CODE line; none is JSON."""
    lines = lines_of(text)
    assert lines, "empty log"
    for ln in lines:
        assert not is_json_object(ln), "a JSON line in a text log: %s" % ln
        assert TEXT_LINE.match(ln) or CODE_LINE.match(ln), "not a text line: %r" % ln


def assert_json_log(text):
    """Every line is a JSON object with the members of docs/API.md §4; no CODE line."""
    lines = lines_of(text)
    assert lines, "empty log"
    for ln in lines:
        obj = json.loads(ln)
        assert isinstance(obj, dict), ln
        for k in ("time", "level", "event", "msg"):
            assert k in obj, "%s missing: %s" % (k, ln)
        assert not ln.startswith("CODE "), ln


def code_lines(text):
    return [CODE_LINE.match(ln) for ln in lines_of(text) if CODE_LINE.match(ln)]


def access_lines(text):
    return [ACCESS_LINE.match(ln) for ln in lines_of(text) if ACCESS_LINE.match(ln)]


def wait_log(otpd, pred, what):
    """The log once pred(text) holds (a pty-backed log arrives through a thread)."""
    return wait_for(lambda: (lambda t: t if pred(t) else None)(otpd.log_text()), 10, what=what)


def login_with_code_line(otpd, phone=PHONE):
    """send; the code from the CODE line (exactly one new one, for the masked number, with
    the send's request id); verify with it."""
    before = len(code_lines(otpd.log_text()))
    r = otpd.send(phone)
    assert r.status_code == 200, r.text
    text = wait_log(otpd, lambda t: len(code_lines(t)) > before, "a CODE line")
    new = code_lines(text)[before:]
    assert len(new) == 1, [m.group(0) for m in new]
    m = new[0]
    assert m.group(1) == PHONE_MASKED, m.group(0)
    assert m.group(3) == r.headers["X-Request-Id"], (m.group(0), r.headers["X-Request-Id"])
    v = otpd.verify(phone, m.group(2))
    assert v.status_code == 200, v.text
    return m.group(2), r, v


def test_text_format(otpd_factory):
    """OTPD_LOG_FORMAT=text (stderr a file): text lines, the CODE line whose code verifies,
    the access lines with method, path, status, outcome, message, request id."""
    otpd = otpd_factory.start(dict(CONSOLE, OTPD_LOG_FORMAT="text"))
    code, sent, verified = login_with_code_line(otpd)
    otpd.stop()
    text = otpd.log_text()
    assert_text_log(text)
    assert re.search(r"^%s warn  config\.development  DEVELOPMENT MODE" % TIME, text, re.M), text
    by_rid = {m.group("rid"): m for m in access_lines(text)}
    a = by_rid[sent.headers["X-Request-Id"]]
    assert (a.group("method"), a.group("path"), a.group("status"), a.group("outcome")) == \
        ("POST", SEND, "200", "otp.sent"), a.group(0)
    assert PHONE_MASKED in a.group("msg"), a.group(0)
    a = by_rid[verified.headers["X-Request-Id"]]
    assert (a.group("method"), a.group("path"), a.group("status"), a.group("outcome")) == \
        ("POST", VERIFY, "200", "auth.login"), a.group(0)
    # logged once: the code only on its CODE line, no JSON sms.console line beside it
    assert len([ln for ln in lines_of(text) if code in ln]) == 1
    assert "sms.console" not in text
    # no API key (the base environment sets the fake's), no SECRET_KEY, no full number
    assert otpd.env["KAVENEGAR_API_KEY"] not in text and otpd.env["SECRET_KEY"] not in text
    assert PHONE not in text and PHONE[-10:] not in text
    # and the harness reads it: the code is known, the log passes the same rules
    assert console_codes(text) == {code}
    assert_log_clean(text, [otpd.env["KAVENEGAR_API_KEY"], otpd.env["SECRET_KEY"]], {code}, {PHONE})


def test_text_format_escapes_client_bytes(otpd_factory):
    """A path with an ESC sequence, a newline and a forged line, a byte that is not UTF-8 and
    a bidi override reaches the log escaped: no control byte, valid UTF-8, one line."""
    otpd = otpd_factory.start({"OTPD_LOG_FORMAT": "text"})
    r = otpd.get("/x%1b[31mred%ff%0a06:00:00%20info%20%20FAKE%e2%80%aeend")
    assert r.status_code == 404
    rid = r.headers["X-Request-Id"]
    otpd.stop()
    raw = otpd.log_path.read_bytes()
    text = raw.decode("utf-8")                       # strict: every byte is UTF-8
    bad = sorted({b for b in raw if (b < 0x20 and b != 0x0a) or b == 0x7f})
    assert not bad, "control bytes reach the terminal: %r" % bad
    assert "\u202e" not in text and "\x85" not in text
    mine = [ln for ln in lines_of(text) if rid in ln]
    assert len(mine) == 1, mine
    assert "GET /x\\x1b[31mred\\xff\\n06:00:00\\x20info\\x20\\x20FAKE\\u202eend 404 " in mine[0], mine[0]
    assert not [ln for ln in lines_of(text) if ln.startswith("06:00:00 info  FAKE")]
    assert_text_log(text)


def test_text_format_in_production_when_asked(otpd_factory, fake):
    """OTPD_LOG_FORMAT=text is taken as asked, in production too: the real provider's code
    never appears in the text log (the after-test checks know it from the fake)."""
    otpd = otpd_factory.start({"OTPD_ENV": "production", "OTPD_LOG_FORMAT": "text"})
    otpd.login(fake, PHONE)
    code = get_code(fake, PHONE)
    otpd.stop()
    text = otpd.log_text()
    assert_text_log(text)
    assert not code_lines(text) and code not in text
    assert not re.search(r"DEVELOPMENT MODE", text)


def test_auto_on_a_terminal_in_development_is_text(otpd_factory):
    """No OTPD_LOG_FORMAT, stderr a terminal, OTPD_ENV unset (development): text, CODE line."""
    otpd = otpd_factory.start(dict(CONSOLE, OTPD_LOG_FORMAT=None, OTPD_ENV=None), pty=True)
    login_with_code_line(otpd)
    otpd.stop()
    text = otpd.log_text()
    assert_text_log(text)
    assert len(code_lines(text)) == 1


def test_auto_on_a_terminal_in_production_is_json(otpd_factory, fake):
    """No OTPD_LOG_FORMAT, stderr a terminal, OTPD_ENV=production (SECRET_KEY of 48 bytes,
    the Kavenegar fake): JSON lines."""
    otpd = otpd_factory.start({"OTPD_ENV": "production", "OTPD_LOG_FORMAT": None}, pty=True)
    v = otpd.login(fake, PHONE)
    rid = v.headers["X-Request-Id"]
    otpd.stop()
    text = otpd.log_text()
    assert_json_log(text)
    assert any(o.get("event") == "http.access" and o.get("request_id") == rid and
               o.get("outcome") == "auth.login" for o in log_objects(text)), text[-2000:]


def test_auto_not_on_a_terminal_is_json(otpd_factory):
    """No OTPD_LOG_FORMAT, development, stderr a file: JSON, and the lines as they always
    were: the sms.console line with its code (which verifies), members in their order."""
    otpd = otpd_factory.start(dict(CONSOLE, OTPD_LOG_FORMAT=None))
    r = otpd.send(PHONE)
    assert r.status_code == 200
    objs = log_objects(otpd.log_text())
    console = [o for o in objs if o.get("event") == "sms.console"]
    assert len(console) == 1, console
    assert list(console[0]) == ["time", "level", "request_id", "event", "msg", "phone", "code"]
    assert console[0]["phone"] == PHONE_MASKED
    assert otpd.verify(PHONE, console[0]["code"]).status_code == 200
    otpd.stop()
    text = otpd.log_text()
    assert_json_log(text)
    access = [o for o in log_objects(text) if o.get("event") == "http.access" and o.get("outcome")]
    assert access and all(list(o) == ["time", "level", "request_id", "event", "msg", "method", "path",
                                      "status", "duration_us", "client", "completed", "outcome"]
                          for o in access), access
    assert not code_lines(text)


def test_json_on_a_terminal_is_json(otpd_factory):
    """OTPD_LOG_FORMAT=json wins over the terminal in development."""
    otpd = otpd_factory.start(dict(CONSOLE, OTPD_LOG_FORMAT="json", OTPD_ENV=None), pty=True)
    r = otpd.send(PHONE)
    assert r.status_code == 200
    text = wait_log(otpd, lambda t: '"sms.console"' in t, "the sms.console line")
    console = [o for o in log_objects(text) if o.get("event") == "sms.console"]
    assert otpd.verify(PHONE, console[0]["code"]).status_code == 200
    otpd.stop()
    assert_json_log(otpd.log_text())


def test_bad_log_format_stops_start(otpd_factory):
    res = otpd_factory.run(["serve"], {"OTPD_LOG_FORMAT": "xml"}, timeout=8)
    assert not res.timed_out and res.rc == 1, res
    assert res.stdout == "", res
    assert res.stderr == "otpd: OTPD_LOG_FORMAT: expected one of auto, json, text, got 'xml'\n", res


def test_help_names_log_format(otpd_factory):
    res = otpd_factory.run(["--help"], {}, base=False, timeout=5)
    assert res.rc == 0, res
    assert re.search(r"^  OTPD_LOG_FORMAT +.*\[auto\]$", res.stdout, re.M), res.stdout
