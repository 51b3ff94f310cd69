"""What must never leak and who may be throttled: the JSON log (no code outside the console
backend's line, no API key, no SECRET_KEY, phones masked), codes stored only as keyed hashes,
code quality, per-address throttles and X-Forwarded-For behind trusted proxies."""

import collections
import concurrent.futures
import hashlib
import json
import re
import time

import pytest

from conftest import (db_dump, db_query, db_tables, PHONE, PHONE_MASKED, VERIFY, assert_log_clean, assert_problem, get_code,
                      have_ipv6, free_port, phone_n, retry_after_of, wait_for, wrong_code)

XFF = "X-Forwarded-For"
TIME_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:?\d\d)$")


# -- the log -------------------------------------------------------------------------------

def test_log_is_json_lines_with_request_ids(otpd, fake):
    rs = [otpd.send(PHONE), otpd.verify(PHONE, "000000"), otpd.get("/nope"),
          otpd.post("/api/v1/usr/otp", json={})]
    rs.append(otpd.verify(PHONE, get_code(fake, PHONE)))
    # an access line is written once its answer is sent: the client may read it first
    rids = [r.headers.get("X-Request-Id") for r in rs]
    assert all(rids), "no X-Request-Id"
    wait_for(lambda: all(rid in otpd.log_text() for rid in rids), 5, what="every access line")
    text = otpd.log_text()
    lines = [ln for ln in text.splitlines() if ln.strip()]
    assert lines
    objs = []
    for ln in lines:
        obj = json.loads(ln)  # every line is one JSON object
        assert isinstance(obj, dict), ln
        assert TIME_RE.match(str(obj.get("time", ""))), ln
        assert obj.get("level") in ("error", "warn", "info", "debug"), ln
        assert isinstance(obj.get("event"), str) and obj["event"], ln
        objs.append(obj)
    logged_ids = {o.get("request_id") for o in objs}
    for r in rs:
        rid = r.headers.get("X-Request-Id")
        assert rid, "no X-Request-Id"
        assert rid in logged_ids, "no log line (access line) carries request id %s" % rid
    assert PHONE_MASKED in text, "log lines about a number carry it masked"


def test_one_info_line_per_request_with_its_outcome(otpd, fake):
    """At info, a send or a verify writes one line: its access line, which also tells the
    outcome ("outcome" and "msg"), with the number masked."""
    rs = {"otp.sent": otpd.send(PHONE)}
    code = get_code(fake, PHONE)
    rs["otp.invalid_code"] = otpd.verify(PHONE, wrong_code(code))
    rs["auth.login"] = otpd.verify(PHONE, code)
    rs["otp.verify_refused"] = otpd.verify(PHONE, code)      # used up
    assert [r.status_code for r in rs.values()] == [200, 400, 200, 400]
    time.sleep(0.2)
    objs = otpd.log_lines()
    for outcome, r in rs.items():
        rid = r.headers["X-Request-Id"]
        mine = [o for o in objs if o.get("request_id") == rid and o.get("level") == "info"]
        assert len(mine) == 1, (outcome, mine)
        line = mine[0]
        assert line["event"] == "http.access"
        assert line["outcome"] == outcome
        assert line["status"] == r.status_code
        assert PHONE_MASKED in line["msg"] and PHONE not in json.dumps(line)
    login = [o for o in objs if o.get("request_id") == rs["auth.login"].headers["X-Request-Id"]][0]
    assert "logged in (new user)" in login["msg"]
    # A request without an outcome of its own keeps the plain access line.
    r = otpd.get("/nope")
    time.sleep(0.2)
    line = [o for o in otpd.log_lines() if o.get("request_id") == r.headers["X-Request-Id"]]
    assert len(line) == 1 and "outcome" not in line[0] and line[0]["msg"] == "GET /nope 404"


@pytest.mark.otpd_env(OTP_SEND_LIMIT="100", KAVENEGAR_TIMEOUT_MS="400", OTP_MAX_ATTEMPTS="3")
def test_whole_run_log_is_clean(otpd, fake):
    """A run through every path that handles a code, a key or a number; then the whole log."""
    forms = ["+989123456789", "۰۹۱۲۳۴۵۶۷۸۹", "٠٠٩٨٩١٢٣٤٥٦٧٨٩", "0912-345-6789"]
    for f in forms:
        assert otpd.send(f).status_code == 200
    code = get_code(fake, PHONE)
    otpd.verify(forms[1], wrong_code(code))
    assert otpd.verify(forms[2], code).status_code == 200
    otpd.verify(PHONE, code)                                   # used
    fake.configure(status=418)
    otpd.send(PHONE)                                           # refused
    fake.configure(status=None, http_status=500)
    otpd.send(PHONE)                                           # HTML 500
    fake.configure(http_status=None, drop=True)
    otpd.send(PHONE)                                           # dropped
    fake.configure(drop=False, latency_ms=900)
    otpd.send(PHONE)                                           # timed out
    fake.configure(latency_ms=0)
    otpd.post("/api/v1/usr/otp", json={"phone_number": "+98912345678"})   # invalid, near-miss
    otpd.post(VERIFY, json={"phone_number": PHONE, "code": "12345"})
    assert otpd.send(phone_n(5)).status_code == 200
    assert otpd.verify(phone_n(5), get_code(fake, phone_n(5))).status_code == 200
    assert otpd.stop() == 0
    text = otpd.log_text()
    codes = fake.codes()
    assert len(codes) >= 5
    assert_log_clean(text, [fake.api_key, otpd.env["SECRET_KEY"]], codes, {PHONE, phone_n(5)},
                     console_ok=False)
    assert fake.api_key not in text and otpd.env["SECRET_KEY"] not in text
    assert PHONE not in text and "989123456789" not in text and "09123456789" not in text
    assert PHONE_MASKED in text


def test_console_code_only_in_its_line(otpd_factory, fake):
    otpd = otpd_factory.start({"SMS_BACKEND": "console"})
    assert otpd.send("۰۹۱۲۳۴۵۶۷۸۹").status_code == 200
    lines = otpd.log_text().splitlines()
    console = [json.loads(ln) for ln in lines if '"sms.console"' in ln]
    assert len(console) == 1
    code = str(console[0]["code"])
    assert console[0]["phone"] == PHONE_MASKED
    assert otpd.verify(PHONE, code).status_code == 200
    holding = [ln for ln in otpd.log_text().splitlines()
               if re.search(r"(?<![0-9A-Za-z])%s(?![0-9A-Za-z])" % code, ln)]
    assert len(holding) == 1 and '"sms.console"' in holding[0], holding
    assert_log_clean(otpd.log_text(), [otpd.env["SECRET_KEY"]], {code}, {PHONE}, console_ok=True)


def test_key_stays_in_the_path(otpd_factory, fake):
    """Across success, refusal and outage the API key goes only into the request path."""
    fake.configure(templates=["otp-login"])
    for env in ({}, {"KAVENEGAR_TEMPLATE": "otp-login"}):
        otpd = otpd_factory.start(dict(env, OTP_SEND_LIMIT="100"))
        otpd.send(PHONE)
        fake.configure(status=403)
        otpd.send(PHONE)
        fake.configure(status=None)
    reqs = fake.requests()
    assert len(reqs) >= 4
    for q in reqs:
        assert fake.api_key in q["path"]
        assert fake.api_key not in q["query"] and fake.api_key not in q["body"]
        assert all(fake.api_key not in v for _, v in q["headers"])


# -- storage -------------------------------------------------------------------------------

def test_codes_are_stored_only_as_keyed_hashes(otpd, fake):
    phones = [PHONE, phone_n(1), phone_n(2)]
    codes = []
    for p in phones:
        assert otpd.send(p).status_code == 200
        codes.append(get_code(fake, p))
    otpd.verify(phones[1], wrong_code(codes[1]))            # a guess is not stored either
    assert otpd.verify(phones[2], codes[2]).status_code == 200
    dump = db_dump(otpd)
    blobs = []
    tables = db_tables(otpd)
    assert "otp_codes" in tables, tables
    for table in tables:
        for row in db_query(otpd, 'SELECT * FROM "%s"' % table.replace('"', '""')):
            blobs += [v for v in row if isinstance(v, (bytes, str))]
    secret = otpd.env["SECRET_KEY"]
    assert secret not in dump and fake.api_key not in dump
    for p, c in zip(phones, codes):
        guess = wrong_code(c)
        for plain in (c, guess):
            assert not re.search(r"(?<![0-9A-Za-z])%s(?![0-9A-Za-z])" % plain, dump), \
                "a code is stored in clear"
            unkeyed = [hashlib.sha256(x.encode()).digest() for x in
                       (plain, p + plain, p + ":" + plain, p[1:] + ":" + plain)]
            for u in unkeyed:
                for v in blobs:
                    if isinstance(v, bytes):
                        assert u not in v, "a code is stored as an unkeyed SHA-256"
                    else:
                        assert u.hex() not in v.lower(), "a code is stored as an unkeyed SHA-256"


def test_code_quality(otpd, fake):
    """200 codes: six ASCII digits, leading zeros kept, practically no repeats, digits uniform
    (chi-square over 1200 digits, 9 d.f.; the bound 45 fails by chance about once in 10^6)."""
    phones = [phone_n(2000 + i) for i in range(200)]
    with concurrent.futures.ThreadPoolExecutor(16) as ex:
        rs = list(ex.map(otpd.send, phones))
    assert all(r.status_code == 200 for r in rs), collections.Counter(r.status_code for r in rs)
    codes = [get_code(fake, p) for p in phones]
    assert all(re.fullmatch(r"[0-9]{6}", c) for c in codes)
    assert len(set(codes)) >= 195
    assert any(c.startswith("0") for c in codes), "codes below 100000 must occur (zero-padded)"
    counts = collections.Counter("".join(codes))
    n = len(codes) * 6
    chi2 = sum((counts[str(d)] - n / 10) ** 2 / (n / 10) for d in range(10))
    assert chi2 < 45, "digit distribution looks biased: chi2=%.1f %s" % (chi2, sorted(counts.items()))


# -- per-address throttles -----------------------------------------------------------------

@pytest.mark.otpd_env(OTP_THROTTLE_RATE="2/min")
def test_send_throttle(otpd, fake):
    assert otpd.send(phone_n(1)).status_code == 200
    assert otpd.send(phone_n(2)).status_code == 200
    r = otpd.send(phone_n(3))
    body = assert_problem(r, 429, "throttled")
    retry_after_of(r, body, lo=1, hi=60)
    assert fake.messages(phone_n(3), include_refused=True) == []
    # the verify endpoint has its own rate
    assert_problem(otpd.verify(phone_n(4), "123456"), 400, "otp_expired")


@pytest.mark.otpd_env(OTP_VERIFY_THROTTLE_RATE="2/min")
def test_verify_throttle(otpd, fake):
    assert otpd.send(PHONE).status_code == 200
    code = get_code(fake, PHONE)
    for _ in range(2):
        assert_problem(otpd.verify(PHONE, wrong_code(code)), 400, "invalid_code")
    r = otpd.verify(PHONE, code)  # even the right code waits: guessing is throttled
    body = assert_problem(r, 429, "throttled")
    retry_after_of(r, body, lo=1, hi=60)
    assert otpd.send(phone_n(1)).status_code == 200  # the send endpoint has its own rate


@pytest.mark.otpd_env(OTP_THROTTLE_RATE="1/sec")
def test_throttle_window_passes(otpd):
    assert otpd.send(phone_n(1)).status_code == 200
    r = otpd.send(phone_n(2))
    body = assert_problem(r, 429, "throttled")
    wait = retry_after_of(r, body, lo=1, hi=1)
    time.sleep(wait + 0.2)
    assert otpd.send(phone_n(3)).status_code == 200


def _sends(otpd, start, xffs):
    """One send per X-Forwarded-For value (None: no header), distinct numbers; status codes."""
    out = []
    for i, x in enumerate(xffs):
        headers = {XFF: x} if x is not None else None
        r = otpd.send(phone_n(start + i), headers=headers)
        if r.status_code == 429:
            assert_problem(r, 429, "throttled")
            retry_after_of(r, r.json(), lo=1, hi=60)
        else:
            assert r.status_code == 200, r.text
        out.append(r.status_code)
    return out


@pytest.mark.otpd_env(OTP_THROTTLE_RATE="2/min", OTPD_TRUSTED_PROXIES="127.0.0.1")
def test_trusted_proxy_gives_each_client_a_bucket(otpd):
    assert _sends(otpd, 10, ["203.0.113.1"] * 3) == [200, 200, 429]
    assert _sends(otpd, 20, ["203.0.113.2"] * 3) == [200, 200, 429]
    assert _sends(otpd, 30, [None, None, None]) == [200, 200, 429]  # the proxy itself


@pytest.mark.otpd_env(OTP_THROTTLE_RATE="2/min", OTPD_TRUSTED_PROXIES="127.0.0.1")
def test_prepended_entries_do_not_escape_the_bucket(otpd):
    assert _sends(otpd, 10, ["203.0.113.1", "203.0.113.1"]) == [200, 200]
    assert _sends(otpd, 20, ["198.51.100.7, 203.0.113.1", "1.2.3.4, 5.6.7.8, 203.0.113.1",
                             "203.0.113.1", "garbage, 203.0.113.1"]) == [429] * 4
    assert _sends(otpd, 30, ["203.0.113.9"]) == [200]


@pytest.mark.otpd_env(OTP_THROTTLE_RATE="2/min", OTPD_TRUSTED_PROXIES="127.0.0.1, 10.0.0.0/8")
def test_rightmost_untrusted_entry_is_the_client(otpd):
    assert _sends(otpd, 10, ["203.0.113.1, 10.1.2.3", "203.0.113.1, 10.4.5.6, 10.7.8.9"]) == [200, 200]
    assert _sends(otpd, 20, ["203.0.113.1", "9.9.9.9, 203.0.113.1, 10.9.9.9"]) == [429, 429]
    assert _sends(otpd, 30, ["203.0.113.2, 10.1.2.3"]) == [200]


@pytest.mark.otpd_env(OTP_THROTTLE_RATE="2/min")
def test_xff_ignored_without_trusted_proxies(otpd):
    assert _sends(otpd, 10, ["203.0.113.1", "203.0.113.2", "203.0.113.3", None]) == [200, 200, 429, 429]


@pytest.mark.otpd_env(OTP_THROTTLE_RATE="2/min", OTPD_TRUSTED_PROXIES="10.0.0.0/8, 192.168.0.1")
def test_xff_ignored_from_a_peer_not_trusted(otpd):
    assert _sends(otpd, 10, ["203.0.113.1", "203.0.113.2", "203.0.113.3"]) == [200, 200, 429]


@pytest.mark.otpd_env(OTP_VERIFY_THROTTLE_RATE="2/min", OTPD_TRUSTED_PROXIES="127.0.0.1")
def test_trusted_proxy_on_verify(otpd):
    def v(x):
        return otpd.verify(PHONE, "123456", headers={XFF: x}).status_code
    assert [v("203.0.113.1"), v("203.0.113.1"), v("203.0.113.1")] == [400, 400, 429]
    assert [v("8.8.8.8, 203.0.113.1"), v("203.0.113.2")] == [429, 400]


def test_trusted_proxy_ipv6(otpd_factory):
    if not have_ipv6():
        pytest.fail("no IPv6 loopback (::1) on this machine")
    otpd = otpd_factory.start({"OTPD_LISTEN": "[::1]:%d" % free_port("::1"),
                               "OTPD_TRUSTED_PROXIES": "::1, fd00::/8",
                               "OTP_THROTTLE_RATE": "2/min"})
    # clients in different /64s (a daemon may bucket IPv6 clients per /64)
    assert _sends(otpd, 10, ["2001:db8:1::1", "2001:db8:1::1, fd00::5"]) == [200, 200]
    assert _sends(otpd, 20, ["2001:db8:9::99, 2001:db8:1::1", "2001:db8:1::1"]) == [429, 429]
    assert _sends(otpd, 30, ["2001:db8:2::1", "2001:db8:2::1", "2001:db8:2::1"]) == [200, 200, 429]


def _xff_list(n_bytes, last="203.0.113.50"):
    """A plausible X-Forwarded-For value of at least n_bytes, ending with `last`."""
    parts, size = [], len(last)
    i = 0
    while size < n_bytes:
        p = "198.51.100.%d" % (i % 250)
        parts.append(p)
        size += len(p) + 2
        i += 1
    return ", ".join(parts + [last])


def _send_raw_xff(otpd, phone, xff_values):
    """A send with one X-Forwarded-For header per value (http.client: requests merges them);
    returns (status, parsed body)."""
    import http.client
    host, port = otpd.url.rsplit("//", 1)[1].rsplit(":", 1)
    conn = http.client.HTTPConnection(host.strip("[]"), int(port), timeout=10)
    try:
        body = json.dumps({"phone_number": phone}).encode()
        conn.putrequest("POST", "/api/v1/usr/otp")
        conn.putheader("Content-Type", "application/json")
        conn.putheader("Content-Length", str(len(body)))
        for v in xff_values:
            conn.putheader(XFF, v)
        conn.endheaders(body)
        r = conn.getresponse()
        return r.status, r.getheader("Content-Type", ""), json.loads(r.read() or b"null")
    finally:
        conn.close()


def _assert_xff_refused(status, ctype, body):
    assert status == 400, (status, body)
    assert ctype.split(";")[0].strip() == "application/problem+json", ctype
    assert body["code"] == "malformed_request", body
    assert "X-Forwarded-For" in body["detail"], body


@pytest.mark.otpd_env(OTP_THROTTLE_RATE="2/min", OTPD_TRUSTED_PROXIES="127.0.0.1")
def test_oversized_xff_from_trusted_proxy_is_refused(otpd, fake):
    """An X-Forwarded-For too long to read whole (over 2 KiB, in one header or several) from a
    trusted proxy is 400 malformed_request: the client is unknown.  Before, otpd fell back to
    the proxy's address, so such clients shared (and exhausted) the proxy's throttle bucket."""
    one = _xff_list(3000)
    _assert_xff_refused(*_send_raw_xff(otpd, phone_n(1), [one]))
    _assert_xff_refused(*_send_raw_xff(otpd, phone_n(2), [_xff_list(1200), _xff_list(1200)]))
    _assert_xff_refused(*_send_raw_xff(otpd, phone_n(3), [_xff_list(700)] * 4))
    assert fake.stats()["requests"] == 0, "a refused request sends nothing"
    # just under the bound, in two headers, the rightmost entry is still the client
    ok = [_xff_list(900), _xff_list(900, last="203.0.113.77")]
    assert len(", ".join(ok)) < 2040
    assert [_send_raw_xff(otpd, phone_n(10 + i), ok)[0] for i in range(3)] == [200, 200, 429]
    # and the proxy's own bucket (no header) was never touched by the refused requests
    assert _sends(otpd, 20, [None, None, None]) == [200, 200, 429]


@pytest.mark.otpd_env(OTP_THROTTLE_RATE="2/min")
def test_oversized_xff_ignored_without_trusted_proxies(otpd):
    """From a peer that is not a trusted proxy X-Forwarded-For is never read: its size does
    not matter."""
    assert [_send_raw_xff(otpd, phone_n(i), [_xff_list(3000)])[0] for i in range(3)] == [200, 200, 429]
