"""Problem responses (docs/API.md §4) and hostile input: every bad body gets a clear 4xx
problem+json, never a 500 and never a crash (the after-test checks also fail on any 500 and on
a server that died)."""

import json
import select
import socket
import time

import pytest
import requests

from conftest import PHONE, SEND, VERIFY, assert_problem, assert_validation, get_code

JSON = {"Content-Type": "application/json"}
FORM = {"Content-Type": "application/x-www-form-urlencoded"}
BOTH = [SEND, VERIFY]


def raw_post(otpd, path, body, headers=JSON):
    return otpd.post(path, data=body, headers=headers)


# -- routing -------------------------------------------------------------------------------

@pytest.mark.parametrize("method,path", [
    ("GET", "/"), ("GET", "/nope"), ("GET", "/api/v1/usr"), ("POST", "/api/v1/usr/otpx"),
    ("POST", "/api/v1/usr/otp/verify/extra"), ("GET", "/api/v2/usr/otp"), ("DELETE", "/x"),
])
def test_not_found(otpd, method, path):
    assert_problem(otpd.request(method, path), 404, "not_found")


@pytest.mark.parametrize("method,path,allowed", [
    ("GET", SEND, "POST"), ("PUT", SEND, "POST"), ("DELETE", SEND, "POST"), ("PATCH", SEND, "POST"),
    ("GET", VERIFY, "POST"), ("PUT", VERIFY, "POST"),
    ("POST", "/healthz", "GET"), ("DELETE", "/healthz", "GET"), ("POST", "/readyz", "GET"),
])
def test_method_not_allowed(otpd, method, path, allowed):
    r = otpd.request(method, path)
    assert_problem(r, 405, "method_not_allowed")
    allow = [m.strip().upper() for m in r.headers.get("Allow", "").split(",") if m.strip()]
    assert allowed in allow, "Allow header: %r" % r.headers.get("Allow")
    assert method not in allow


# -- sizes ---------------------------------------------------------------------------------

@pytest.mark.parametrize("path", BOTH)
def test_payload_too_large_json(otpd, path):
    body = ('{"phone_number": "09123456789", "pad": "%s"}' % ("x" * 10240)).encode()
    assert_problem(raw_post(otpd, path, body), 413, "payload_too_large")


def test_payload_too_large_form(otpd):
    body = ("phone_number=09123456789&pad=" + "x" * 10240).encode()
    assert_problem(raw_post(otpd, SEND, body, FORM), 413, "payload_too_large")


def _addr(otpd):
    host, port = otpd.url.rsplit("//", 1)[1].rsplit(":", 1)
    return host.strip("[]"), int(port)


def _read_answer(s, timeout):
    """Everything the server sends until it closes (or timeout): (bytes, closed)."""
    s.settimeout(timeout)
    data = b""
    try:
        while True:
            d = s.recv(65536)
            if not d:
                return data, True
            data += d
    except socket.timeout:
        return data, False
    except OSError:            # reset after the answer: closed too
        return data, True


@pytest.mark.parametrize("pad_chunks", [0, 40], ids=["small", "past-4-KiB"])
def test_chunked_body_is_length_required(otpd, fake, pad_chunks):
    """A chunked body (no Content-Length) is refused at the headers, whatever its size:
    411 length_required with Connection: close; nothing is sent.  (Before, a chunked body was
    read to its end, however long, and only then refused with 413, or served when small.)
    A raw socket: the whole request is written before the answer is read, as a client that
    reads no early answer would (requests then fails on its next write instead)."""
    parts = [b'{"phone_number": "09123456789", "pad": "'] + [b"x" * 512] * pad_chunks + [b'"}']
    body = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in parts) + b"0\r\n\r\n"
    with socket.create_connection(_addr(otpd), timeout=5) as s:
        s.sendall(("POST %s HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                   "Transfer-Encoding: chunked\r\n\r\n" % SEND).encode() + body)
        answer, closed = _read_answer(s, 5)
    head, _, text = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 411 "), answer[:300]
    assert b"\r\nconnection: close" in head.lower(), head
    assert b"\r\ncontent-type: application/problem+json" in head.lower(), head
    problem = json.loads(text)
    assert problem["code"] == "length_required" and problem["status"] == 411, problem
    assert "Content-Length" in problem["detail"], problem
    assert closed, "the connection is closed after the 411"
    assert fake.stats()["requests"] == 0
    assert otpd.send(PHONE).status_code == 200, "the same request with a Content-Length is served"


def test_streamed_chunked_body_is_not_read(otpd, fake):
    """A client that streams a chunked body without end is answered (411) and its connection
    closed at the headers: the server never accepts more than a bounded amount (here: the client
    stops at 1 MiB, which the old code read and dropped without answering)."""
    with socket.create_connection(_addr(otpd), timeout=5) as s:
        s.sendall(("POST %s HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                   "Transfer-Encoding: chunked\r\n\r\n" % SEND).encode())
        s.sendall(b'1f\r\n{"phone_number": "09123456789",\r\n')
        sent, answer, closed = 0, b"", False
        chunk = b"1000\r\n" + b" " * 4096 + b"\r\n"
        for i in range(256):              # 256 x 4 KiB = 1 MiB at most
            ready, _, _ = select.select([s], [], [], 5.0 if i == 0 else 0.01)
            if ready:
                answer, closed = _read_answer(s, 5)
                break
            try:
                s.sendall(chunk)
            except OSError:               # closed under us: stopped reading
                answer, closed = _read_answer(s, 5)
                closed = True
                break
            sent += 4096
        assert answer.startswith(b"HTTP/1.1 411 "), \
            "no answer after %d bytes of body: %r" % (sent, answer[:200])
        assert sent < 1024 * 1024
        head, _, body = answer.partition(b"\r\n\r\n")
        assert b"\r\nconnection: close" in head.lower(), head
        assert b'"code":"length_required"' in body, body
        if not closed:
            _, closed = _read_answer(s, 5)
        assert closed, "the connection must be closed after the 411"
    assert fake.stats()["requests"] == 0, "no code was issued"
    assert otpd.get("/healthz").status_code == 200


def test_get_with_a_body_is_bounded_too(otpd):
    """Routes without a body drop one, but read at most 4 KiB of it: a chunked one is 411, a
    Content-Length past 4 KiB is 413 at once (before, both were read to the end)."""
    with socket.create_connection(_addr(otpd), timeout=5) as s:
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n1000\r\n")
        answer, _ = _read_answer(s, 5)
        assert answer.startswith(b"HTTP/1.1 411 "), answer[:200]
    with socket.create_connection(_addr(otpd), timeout=5) as s:
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000000\r\n\r\nx")
        answer, _ = _read_answer(s, 5)
        assert answer.startswith(b"HTTP/1.1 413 "), answer[:200]
    r = otpd.get("/healthz", data=b"x" * 100)   # a small body is still dropped and served
    assert r.status_code == 200


def test_payload_too_large_announced_only(otpd):
    """A huge Content-Length is refused at once, without waiting for (or reading) the body."""
    host, port = otpd.url.rsplit("//", 1)[1].rsplit(":", 1)
    with socket.create_connection((host.strip("[]"), int(port)), timeout=5) as s:
        s.sendall(("POST %s HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                   "Content-Length: 1000000000\r\n\r\n{" % SEND).encode())
        t0 = time.monotonic()
        s.settimeout(3)
        data = b""
        try:
            while b"\r\n\r\n" not in data:
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
        except socket.timeout:
            pass
        assert data.startswith(b"HTTP/1.1 413"), "got %r after %.1fs" % (data[:200], time.monotonic() - t0)
    assert otpd.get("/healthz").status_code == 200


def test_big_header_is_refused_not_fatal(otpd):
    try:
        r = otpd.post(SEND, json={"phone_number": PHONE}, headers={"X-Big": "a" * 65536})
        assert 400 <= r.status_code < 500, r.status_code
    except Exception as e:  # the server may also just close the connection
        assert "Connection" in type(e).__name__ or "connection" in str(e).lower(), e
    assert otpd.get("/healthz").status_code == 200


def test_headers_up_to_7_kib_are_served(otpd, fake):
    """Request headers of 7 KiB (big cookies, long tokens) are served: a whole login answers with
    both tokens, in the body and in its cookies."""
    big = {"X-Big": "a" * 5120, "Cookie": "other=" + "b" * 2048}
    assert otpd.get("/healthz", headers=big).status_code == 200
    assert otpd.post(SEND, json={"phone_number": PHONE}, headers=big).status_code == 200
    r = otpd.post(VERIFY, json={"phone_number": PHONE, "code": get_code(fake, PHONE)}, headers=big)
    assert r.status_code == 200, r.text
    assert r.json()["access_token"] and r.json()["refresh_token"]
    assert len(r.headers.get("Set-Cookie", "")) > 2 * 200


@pytest.mark.otpd_env(OTP_VERIFY_THROTTLE_RATE="1000/sec", OTP_THROTTLE_RATE="1000/sec")
def test_big_headers_never_cost_a_code_without_an_answer(otpd, fake):
    """Headers past 8 KiB are refused before any work (400 malformed_request, or libmicrohttpd's
    own 431, or a closed connection near its 16 KiB limit): the code is still unused afterwards.
    Before the limit, a verify with ~15 KiB of headers used the code and then closed the
    connection without an answer (no room left for the response's headers)."""
    for i, size in enumerate([8300, 12000, 14500, 15000, 15250, 15500, 15750, 20000]):
        phone = "0912%07d" % (3000 + i)
        assert otpd.send(phone).status_code == 200
        code = get_code(fake, "+98" + phone[1:])
        try:
            r = otpd.post(VERIFY, json={"phone_number": phone, "code": code},
                          headers={"X-Big": "a" * size})
            assert r.status_code in (400, 431), (size, r.status_code)
            if r.status_code == 400:
                assert_problem(r, 400, "malformed_request")
        except requests.exceptions.ConnectionError:
            pass
        r = otpd.verify(phone, code)
        assert r.status_code == 200, (size, r.text)


def test_long_url_is_refused_not_fatal(otpd):
    try:
        r = otpd.get("/" + "a" * 65536)
        assert 400 <= r.status_code < 500, r.status_code
    except Exception as e:
        assert "Connection" in type(e).__name__ or "connection" in str(e).lower(), e
    assert otpd.get("/healthz").status_code == 200


@pytest.mark.parametrize("path,field", [(SEND, "phone_number"), (VERIFY, "phone_number"), (VERIFY, "code")])
def test_long_field_is_validation_error(otpd, path, field):
    body = {"phone_number": PHONE, "code": "123456"}
    body[field] = "9" * 1500
    assert_validation(otpd.post(path, json=body), field)


# -- media types ---------------------------------------------------------------------------

@pytest.mark.parametrize("ctype", ["text/plain", "application/xml", "multipart/form-data; boundary=x",
                                   "application/octet-stream", "text/json-ish"])
@pytest.mark.parametrize("path", BOTH)
def test_unsupported_media_type(otpd, fake, path, ctype):
    r = raw_post(otpd, path, b'{"phone_number": "09123456789", "code": "123456"}', {"Content-Type": ctype})
    assert_problem(r, 415, "unsupported_media_type")
    assert fake.stats()["requests"] == 0


# -- malformed bodies ----------------------------------------------------------------------

MALFORMED = [
    ("truncated", b'{"phone_number": "09123456789"'),
    ("unterminated-string", b'{"phone_number": "0912'),
    ("trailing-comma", b'{"phone_number": "09123456789",}'),
    ("single-quotes", b"{'phone_number': '09123456789'}"),
    ("bare-word", b"phone_number"),
    ("two-objects", b'{"phone_number": "09123456789"}{"phone_number": "09123456789"}'),
    ("comment", b'{"phone_number": "09123456789" /* hi */}'),
    ("nan", b'{"phone_number": NaN}'),
    ("invalid-escape", b'{"phone_number": "\\x39"}'),
]

NOT_OBJECT = [
    ("array", b"[]"), ("array-of-phone", b'["09123456789"]'), ("string", b'"09123456789"'),
    ("number", b"9123456789"), ("null", b"null"), ("true", b"true"),
]


@pytest.mark.parametrize("body", [b for _, b in MALFORMED], ids=[i for i, _ in MALFORMED])
@pytest.mark.parametrize("path", BOTH)
def test_malformed_json(otpd, path, body):
    assert_problem(raw_post(otpd, path, body), 400, "malformed_request")


@pytest.mark.parametrize("body", [b for _, b in NOT_OBJECT], ids=[i for i, _ in NOT_OBJECT])
@pytest.mark.parametrize("path", BOTH)
def test_json_not_an_object(otpd, path, body):
    assert_problem(raw_post(otpd, path, body), 400, "malformed_request")


@pytest.mark.parametrize("path", BOTH)
def test_empty_body(otpd, path):
    """An empty JSON body is not a JSON object (malformed_request); reporting the missing field
    instead (validation_error) is accepted too."""
    body = assert_problem(raw_post(otpd, path, b""), 400, codes=("malformed_request", "validation_error"))
    if body["code"] == "validation_error":
        assert "phone_number" in body["errors"]


@pytest.mark.parametrize("path", BOTH)
def test_duplicate_keys(otpd, fake, path):
    body = b'{"phone_number": "09123456789", "phone_number": "09350000000", "code": "123456"}'
    assert_problem(raw_post(otpd, path, body), 400, codes=("malformed_request", "validation_error"))
    assert fake.stats()["requests"] == 0


def test_duplicate_keys_in_form(otpd, fake):
    r = raw_post(otpd, SEND, b"phone_number=09123456789&phone_number=09350000000", FORM)
    assert_problem(r, 400, codes=("malformed_request", "validation_error"))
    assert fake.stats()["requests"] == 0


@pytest.mark.parametrize("body", [
    b'{"phone_number": "0912345\\u00006789"}',
    b'{"phone_number": "09123456789\\u0000"}',
    b'{"phone_\\u0000number": "09123456789"}',
    b'{"phone_number": "09123456789", "code": "123\\u0000456"}',
], ids=["in-value", "at-end", "in-key", "in-code"])
def test_nul_in_json(otpd, fake, body):
    path = VERIFY if b"code" in body else SEND
    assert_problem(raw_post(otpd, path, body), 400, codes=("malformed_request", "validation_error"))
    assert fake.stats()["requests"] == 0


def test_nul_in_form(otpd, fake):
    r = raw_post(otpd, SEND, b"phone_number=0912345%006789", FORM)
    assert_problem(r, 400, codes=("malformed_request", "validation_error"))
    r = raw_post(otpd, SEND, b"phone_number=09123456789%00", FORM)
    assert_problem(r, 400, codes=("malformed_request", "validation_error"))
    assert fake.stats()["requests"] == 0


@pytest.mark.parametrize("body", [
    b'{"phone_number": "\xff\xfe09123456789"}',
    b'{"phone_number": "0912\xc0\xaf3456789"}',            # overlong '/'
    b'{"phone_number": "\xed\xa0\x80"}',                   # UTF-8 encoded surrogate
    b'{"phone_number": "\\ud800"}',                         # lone surrogate escape
    b'{"phone_\xffnumber": "09123456789"}',
    b'\xef\xbb\xbf\xff{"phone_number": "09123456789"}',
], ids=["ff-fe", "overlong", "surrogate-bytes", "surrogate-escape", "in-key", "junk-after-bom"])
def test_invalid_utf8_json(otpd, fake, body):
    assert_problem(raw_post(otpd, SEND, body), 400, codes=("malformed_request", "validation_error"))
    assert fake.stats()["requests"] == 0


def test_invalid_utf8_form(otpd, fake):
    for body in (b"phone_number=%FF%FE09123456789", b"phone_number=\xff09123456789",
                 b"phone_number=09123456789&code=%C0%AF"):
        r = raw_post(otpd, SEND if b"code" not in body else VERIFY, body, FORM)
        assert_problem(r, 400, codes=("malformed_request", "validation_error"))
    assert fake.stats()["requests"] == 0


@pytest.mark.parametrize("number", [b"1e999999", b"-1e999999", b"123456789012345678901234567890",
                                    b"9" * 400, b"1.7976931348623157e309", b"0.%s1" % (b"0" * 400)],
                         ids=["1e999999", "-1e999999", "30-digits", "400-digits", "over-double", "tiny"])
@pytest.mark.parametrize("path,field", [(SEND, "phone_number"), (VERIFY, "code")])
def test_huge_numbers(otpd, fake, path, field, number):
    other = "phone_number" if field == "code" else "code"
    body = b'{"%s": %s, "%s": "09123456789"}' % (field.encode(), number, other.encode())
    if path == VERIFY:
        body = b'{"phone_number": "09123456789", "code": %s}' % number
    assert_problem(raw_post(otpd, path, body), 400, codes=("malformed_request", "validation_error"))
    assert fake.stats()["requests"] == 0


@pytest.mark.parametrize("depth", [50, 900])
def test_deep_nesting_as_value(otpd, depth):
    body = b'{"phone_number": ' + b"[" * depth + b"]" * depth + b"}"
    assert_problem(raw_post(otpd, SEND, body), 400, codes=("malformed_request", "validation_error"))


def test_deep_object_nesting(otpd):
    body = b'{"phone_number": ' + b'{"a":' * 300 + b"1" + b"}" * 300 + b"}"
    assert_problem(raw_post(otpd, SEND, body), 400, codes=("malformed_request", "validation_error"))


def test_unterminated_deep_nesting(otpd):
    """3000 open brackets: a recursive parser without a depth bound would overflow its stack."""
    r = raw_post(otpd, SEND, b"[" * 3000)
    if r.status_code == 413:
        assert_problem(r, 413, "payload_too_large")
    else:
        assert_problem(r, 400, "malformed_request")


@pytest.mark.parametrize("path", BOTH)
def test_wrong_types_everywhere(otpd, fake, path):
    for value in (9123456789, ["09123456789"], None, {"x": 1}, True, 1.5):
        body = {"phone_number": value, "code": "123456"}
        assert_validation(otpd.post(path, json=body), "phone_number")
    if path == VERIFY:
        for value in (123456, ["123456"], None, {"x": 1}, False):
            assert_validation(otpd.post(path, json={"phone_number": PHONE, "code": value}), "code")
    assert fake.stats()["requests"] == 0


def test_server_survives_a_barrage(otpd):
    """All of the above back to back on one server; it must still serve."""
    bodies = [b for _, b in MALFORMED + NOT_OBJECT] + [
        b"", b"\x00" * 100, b'{"phone_number": "\xff"}', b"[" * 3000, b'{"a":' * 500,
        b'{"phone_number": 1e999999}', b'{"phone_number": "\\u0000"}']
    for body in bodies:
        for path in BOTH:
            for headers in (JSON, FORM):
                r = raw_post(otpd, path, body, headers)
                assert 400 <= r.status_code < 500, (body[:40], headers, r.status_code, r.text[:200])
    assert otpd.get("/healthz").status_code == 200
    r = otpd.send(PHONE)
    assert r.status_code == 200, r.text


# -- request id ----------------------------------------------------------------------------

def test_every_response_has_a_request_id(otpd):
    rs = [otpd.get("/healthz"), otpd.get("/readyz"), otpd.get("/nope"), otpd.get(SEND),
          raw_post(otpd, SEND, b"x", {"Content-Type": "text/plain"}), raw_post(otpd, SEND, b"{"),
          otpd.post(SEND, json={}), otpd.verify(PHONE, "123456"), otpd.send(PHONE),
          raw_post(otpd, SEND, b"x" * 10240)]
    ids = [r.headers.get("X-Request-Id") for r in rs]
    assert all(ids), list(zip([r.status_code for r in rs], ids))
    assert len(set(ids)) == len(ids), "request ids must be unique: %s" % ids
