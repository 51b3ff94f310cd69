#!/usr/bin/python3
"""A fake Kavenegar REST API for otpd's tests (docs/KAVENEGAR.md §11).

Run it on its own:

    /usr/bin/python3 tools/fake_kavenegar.py --port 9010 --api-key TESTKEY --template otp-login
    /usr/bin/python3 tools/fake_kavenegar.py --port 0      # picks a free port, prints it

or import it (the black-box tests do):

    fake = FakeKavenegar(api_key="TESTKEY").start()   # port 0: a free one
    fake.url, fake.configure(latency_ms=2000), fake.messages("+989123456789"), fake.stop()

Only the standard library; listens on 127.0.0.1 only.

The API (parameters by GET query or POST form body, or both; a name given twice has its
values joined with commas; names are case-insensitive):

    {base}/v1/{API-KEY}/sms/send.json        receptor, message, [sender, date, type, localid, hide, tag]
    {base}/v1/{API-KEY}/verify/lookup.json   receptor, template, token, [token2, token3, token10,
                                             token20, type, tag]
    {base}/v1/{API-KEY}/account/info.json
    {base}/v1/{API-KEY}/sms/status.json      messageid

Every answer is the envelope {"return": {"status": N, "message": "<Persian>"}, "entries": ...},
JSON written as raw UTF-8.  Errors carry `entries: null` and HTTP status = return.status
(`http_200_errors`: HTTP 200).  A key other than --api-key -> 403; an unknown method -> 404; an
HTTP method other than GET/POST -> 405.

This fake's own choices where the docs are silent (they are not Kavenegar facts):
  * a required parameter that is absent -> 400;
  * receptor present but empty or malformed -> 411; receptors accepted: 09XXXXXXXXX,
    9XXXXXXXXX, 989XXXXXXXXX, 00989XXXXXXXXX, +989XXXXXXXXX, ASCII digits only
    (`strict_receptor`: only 09… and 00989…); more than 200 receptors -> 414;
    verify/lookup takes exactly one receptor (a list -> 411);
  * message present but blank, or longer than 900 characters -> 413;
  * a `sender` not in `senders` -> 412 (senders null: any sender);
  * a `date` that is not a number or more than 60 s in the past -> 417; a future date ->
    entry status 2 (scheduled); sms/send `type` other than 0..3 -> 400; `tag` not
    [A-Za-z0-9_-]{1,200} -> 607; `localid` count different from the receptor count -> 400;
  * `localid` already used -> not sent again, its earlier entry comes back (no charge);
  * lookup: template unknown -> 424; template text without %token -> 432; token present
    but empty -> 406; token/token2/token3 longer than 100 characters or holding whitespace,
    `_`, `,`, `;` or `|` -> 431 (token10: at most 5 spaces, token20: at most 8);
    `type` other than sms/call -> 400; type=call with a token that is not digits only -> 428;
  * sms/status: more than 500 ids -> 414; an unknown or non-numeric id -> status 100;
    known ids -> `delivery_status`;
  * parameters that are not valid UTF-8 -> 422;
  * cost = SMS parts x `price` (Rial): GSM text 160 chars (153 per part when split), other
    text 70 (67); not enough `credit` -> 418, nothing charged; accepted messages are charged;
  * lookup entries: an array of one entry with status 5 (`entries_object`: a bare object,
    the shape in the official Node README); account `type` always "master".

Failure injection (knobs below) applies to the /v1/ API only, after `latency_ms`:
`drop` (close the connection without answering) > `http_status` (that HTTP status with an
HTML body, as a gateway would) > `status` (that return.status in the envelope).
`fail_next: N` limits the failure to the next N API requests, after which the failure
knobs are cleared (back to normal); `fail_next: null` keeps it on until changed (setting a
failure knob without `fail_next` sets it to null).  `fail_methods: ["account/info"]` limits
it to those methods (null: all; setting a failure knob without it sets it to null).  A
refused request is recorded too
(accepted: false) with the text it carried, so a test can learn the code of an SMS that
never went out.

Control API (JSON):
    GET  /_fake/messages[?receptor=R][&all=1]  recorded messages, oldest first (newest last);
                                               R in any accepted form; all=1 adds refused ones
    GET  /_fake/requests                       every /v1/ request: method, raw path, query,
                                               headers, body (to check where the key travels)
    GET  /_fake/config                         the knobs
    POST /_fake/config   {"knob": value, ...}  change knobs (unknown knob or bad type -> 400)
    POST /_fake/reset                          knobs back to the start values, records cleared
    GET  /_fake/stats                          request counts, in-flight, max concurrent in-flight
"""

import argparse
import copy
import http.server
import json
import math
import re
import signal
import socket
import socketserver
import sys
import threading
import time
import urllib.parse

DEFAULT_SENDERS = ["10008663", "10004346"]
DEFAULT_TEMPLATE_TEXT = "کد تایید شما: %token"

DEFAULT_CONFIG = {
    "latency_ms": 0,          # delay before answering any /v1/ request
    "status": None,           # failure: answer this return.status (envelope, entries null)
    "http_status": None,      # failure: answer this HTTP status with an HTML body
    "drop": False,            # failure: close the connection without answering
    "fail_next": None,        # N: the failure applies to the next N requests; null: always
    "fail_methods": None,     # ["account/info", ...]: the failure applies to these only; null: all
    "credit": 1500000,        # Rial
    "price": 120,             # Rial per SMS part
    "templates": {},          # lookup templates: name -> text with %token
    "senders": list(DEFAULT_SENDERS),  # lines that belong to the account (null: any)
    "delivery_status": 10,    # sms/status of known message ids
    "http_200_errors": False, # errors answered with HTTP 200 instead of return.status
    "strict_receptor": False, # accept only 09… and 00989… receptors
    "entries_object": False,  # verify/lookup answers entries as a bare object
    "expiredate": 1735689600, # account/info
}

# return.status -> return.message (fixtures' texts where the fixtures have them).
RETURN_MESSAGES = {
    200: "تایید شد",
    400: "پارامترها ناقص هستند",
    401: "حساب کاربری غیرفعال شده است",
    402: "عملیات ناموفق بود",
    403: "کد شناسائی معتبر نمی باشد",
    404: "متد نامشخص است",
    405: "متد Get/Post اشتباه است",
    406: "پارامترهای اجباری خالی ارسال شده اند",
    407: "دسترسی به اطلاعات مورد نظر برای شما امکان پذیر نیست",
    409: "سرور قادر به پاسخگوئی نیست بعدا تلاش کنید",
    411: "دریافت کننده نامعتبر است",
    412: "ارسال کننده نامعتبر است",
    413: "پیام خالی است و یا طول پیام بیش از حد مجاز میباشد",
    414: "حجم درخواست بیشتر از حد مجاز است",
    415: "اندیس شروع بزرگ تر از کل تعداد شماره های مورد نظر است",
    416: "IP سرویس مبدا با تنظیمات مطابقت ندارد",
    417: "تاریخ ارسال اشتباه است و فرمت آن صحیح نمی باشد",
    418: "اعتبار حساب شما کافی نیست",
    419: "طول آرایه متن و گیرنده و فرستنده هم اندازه نیست",
    420: "استفاده از لینک در متن پیام برای شما محدود شده است",
    422: "داده ها به دلیل وجود کاراکتر نامناسب قابل پردازش نیست",
    424: "الگوی مورد نظر پیدا نشد",
    426: "استفاده از این متد نیازمند سرویس پیشرفته میباشد",
    427: "استفاده از این خط نیازمند ایجاد سطح دسترسی میباشد",
    428: "ارسال کد از طریق تماس تلفنی امکان پذیر نیست",
    429: "IP محدود شده است",
    431: "ساختار کد صحیح نمیباشد",
    432: "پارامتر کد در متن پیام پیدا نشد",
    451: "فراخوانی بیش از حد در بازه زمانی مشخص IP محدود شده",
    501: "فقط امکان ارسال پیام تست به شماره صاحب حساب کاربری وجود دارد",
    607: "نام تگ انتخالی اشتباه است",
}
UNKNOWN_RETURN_MESSAGE = "خطای ناشناخته رخ داده است"

# Message status (entries[].status) -> statustext.
STATUS_TEXTS = {
    1: "در صف ارسال",
    2: "زمان بندی شده",
    4: "ارسال به مخابرات",
    5: "ارسال به مخابرات",
    6: "خطا در ارسال پیام",
    10: "رسیده به گیرنده",
    11: "نرسیده به گیرنده",
    13: "ارسال پیام لغو شده",
    14: "بلاک شده",
    100: "شناسه پیامک نامعتبر است",
}

HTML_ERROR = ("<html><head><title>{code} Gateway Error</title></head><body>"
              "<center><h1>{code} Gateway Error</h1></center><hr><center>nginx</center>"
              "</body></html>\n")

_DIGITS = str.maketrans("۰۱۲۳۴۵۶۷۸۹٠١٢٣٤٥٦٧٨٩", "01234567890123456789")
_CODE_RE = re.compile(r"(?<![0-9])([0-9]{6})(?![0-9])")
_TAG_RE = re.compile(r"^[A-Za-z0-9_-]{1,200}$")
_GSM_CHARS = set(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà")


class _Refusal(Exception):
    """A Kavenegar error: answered as the envelope with this return.status."""

    def __init__(self, status):
        super().__init__(status)
        self.status = status


def normalize_receptor(value, strict=False):
    """A receptor in one of the accepted forms -> "+989XXXXXXXXX", else None."""
    v = value.strip()
    if not v:
        return None
    if strict:
        m = re.fullmatch(r"(?:09|00989)([0-9]{9})", v)
    else:
        m = re.fullmatch(r"(?:09|9|989|00989|\+989)([0-9]{9})", v)
    if not m:
        return None
    return "+989" + m.group(1)


def normalize_any_phone(value):
    """For the control API: any phone form, any digit script -> "+989…" (or the input)."""
    v = re.sub(r"[\s\-()]", "", value.translate(_DIGITS))
    return normalize_receptor(v) or value


def extract_code(record):
    """The 6-digit code an SMS record carries: the lookup token, else the one 6-digit
    number in the text (Persian / Arabic-Indic digits read as ASCII).  None if there is
    none; ValueError if the text holds several different 6-digit numbers."""
    token = record.get("token")
    if token:
        t = token.translate(_DIGITS)
        if re.fullmatch(r"[0-9]{6}", t):
            return t
    text = (record.get("message") or "").translate(_DIGITS)
    found = set(_CODE_RE.findall(text))
    if not found:
        return None
    if len(found) > 1:
        raise ValueError("several 6-digit numbers in the SMS text: %r" % sorted(found))
    return found.pop()


def sms_parts(text):
    if all(c in _GSM_CHARS for c in text):
        single, multi = 160, 153
    else:
        single, multi = 70, 67
    n = len(text)
    if n <= single:
        return 1
    return math.ceil(n / multi)


def _check_token(value, max_spaces=0):
    if len(value) > 100:
        raise _Refusal(431)
    if any(c in value for c in "_,;|\t\r\n\v\f"):
        raise _Refusal(431)
    if value.count(" ") > max_spaces:
        raise _Refusal(431)


class _State:
    """Everything the fake remembers; guarded by one lock."""

    def __init__(self, api_key, templates, senders):
        self.lock = threading.Lock()
        self.api_key = api_key
        self.start_config = copy.deepcopy(DEFAULT_CONFIG)
        if templates:
            self.start_config["templates"] = dict(templates)
        if senders is not None:
            self.start_config["senders"] = list(senders)
        self.next_messageid = 8792343
        self.reset()

    def reset(self):
        with self.lock:
            self.config = copy.deepcopy(self.start_config)
            self.messages = []        # every SMS record, accepted or refused, oldest first
            self.requests = []        # every /v1/ request as received
            self.arrivals = []        # message/token of every /v1/ request, read on arrival
            self.localids = {}        # localid -> entry
            self.known_ids = {}       # messageid -> record
            self.stats = {
                "requests": 0, "by_method": {}, "in_flight": 0, "max_in_flight": 0,
                "accepted": 0, "refused": 0, "failures_injected": 0, "drops": 0,
                "control_requests": 0,
            }


def _validate_knobs(knobs):
    if not isinstance(knobs, dict):
        raise ValueError("config must be a JSON object")
    out = {}
    for k, v in knobs.items():
        if k not in DEFAULT_CONFIG:
            raise ValueError("unknown knob %r" % k)
        if k in ("latency_ms", "credit", "price", "delivery_status", "expiredate"):
            if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                raise ValueError("%s: a non-negative integer" % k)
        elif k == "status":
            if v is not None and (not isinstance(v, int) or isinstance(v, bool)
                                  or not 100 <= v <= 999):
                raise ValueError("status: an integer 100..999 or null")
        elif k == "http_status":
            if v is not None and (not isinstance(v, int) or isinstance(v, bool)
                                  or not 100 <= v <= 599):
                raise ValueError("http_status: an integer 100..599 or null")
        elif k == "fail_next":
            if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 0):
                raise ValueError("fail_next: a non-negative integer or null")
        elif k == "fail_methods":
            if v is not None and (not isinstance(v, list)
                                  or not all(isinstance(x, str) for x in v)):
                raise ValueError("fail_methods: a list of method names or null")
            v = list(v) if v is not None else None
        elif k in ("drop", "http_200_errors", "strict_receptor", "entries_object"):
            if not isinstance(v, bool):
                raise ValueError("%s: true or false" % k)
        elif k == "templates":
            if isinstance(v, list):
                v = {name: DEFAULT_TEMPLATE_TEXT for name in v}
            if not isinstance(v, dict) or not all(
                    isinstance(a, str) and isinstance(b, str) for a, b in v.items()):
                raise ValueError("templates: {name: text} or [name, ...]")
            v = dict(v)
        elif k == "senders":
            if v is not None and (not isinstance(v, list)
                                  or not all(isinstance(s, str) for s in v)):
                raise ValueError("senders: a list of strings or null")
            v = list(v) if v is not None else None
        out[k] = v
    return out


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "FakeKavenegar/1.0"
    timeout = 30  # idle keep-alive connections end after this

    # -- plumbing ---------------------------------------------------------------------
    def setup(self):
        super().setup()
        with self.server.conns_lock:
            self.server.conns.add(self.connection)

    def finish(self):
        try:
            super().finish()
        finally:
            with self.server.conns_lock:
                self.server.conns.discard(self.connection)

    def log_message(self, fmt, *args):  # noqa: N802 (stdlib name)
        if self.server.verbose:
            # never the path: it holds the API key
            sys.stderr.write("fake_kavenegar: %s %s\n" % (self.command, args[1:] if args else ""))

    def _read_body(self):
        te = (self.headers.get("Transfer-Encoding") or "").lower()
        if "chunked" in te:
            chunks = []
            while True:
                line = self.rfile.readline(65537)
                size = int(line.split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline(65537)
            return b"".join(chunks)
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n > 0 else b""

    def _send(self, http_status, body, content_type):
        self.send_response(http_status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _send_json(self, http_status, obj):
        body = json.dumps(obj, ensure_ascii=False).encode("utf-8")
        self._send(http_status, body, "application/json; charset=utf-8")

    def _envelope(self, status, entries=None):
        st = self.server.state
        with st.lock:
            http_200 = st.config["http_200_errors"]
        body = {"return": {"status": status,
                           "message": RETURN_MESSAGES.get(status, UNKNOWN_RETURN_MESSAGE)},
                "entries": entries}
        self._send_json(200 if status == 200 or http_200 else status, body)

    # -- HTTP methods -----------------------------------------------------------------
    def do_GET(self):  # noqa: N802
        self._dispatch()

    def do_POST(self):  # noqa: N802
        self._dispatch()

    def do_PUT(self):  # noqa: N802
        self._dispatch()

    def do_DELETE(self):  # noqa: N802
        self._dispatch()

    def do_PATCH(self):  # noqa: N802
        self._dispatch()

    def do_HEAD(self):  # noqa: N802
        self._dispatch()

    def _dispatch(self):
        raw_path = self.path
        path, _, query = raw_path.partition("?")
        try:
            body = self._read_body()
        except (ValueError, OSError):
            self.close_connection = True
            return
        if path.startswith("/_fake/") or path == "/_fake":
            self._control(path, query, body)
        else:
            self._api(raw_path, path, query, body)

    # -- control API ------------------------------------------------------------------
    def _control(self, path, query, body):
        st = self.server.state
        with st.lock:
            st.stats["control_requests"] += 1
        q = urllib.parse.parse_qs(query, keep_blank_values=True)
        cmd = self.command
        if path == "/_fake/messages" and cmd == "GET":
            receptor = q.get("receptor", [None])[0]
            include = q.get("all", ["0"])[0] not in ("0", "", "false")
            self._send_json(200, self.server.fake.messages(receptor, include_refused=include))
        elif path == "/_fake/requests" and cmd == "GET":
            self._send_json(200, self.server.fake.requests())
        elif path == "/_fake/stats" and cmd == "GET":
            self._send_json(200, self.server.fake.stats())
        elif path == "/_fake/config" and cmd == "GET":
            self._send_json(200, self.server.fake.config())
        elif path == "/_fake/config" and cmd == "POST":
            try:
                knobs = json.loads(body.decode("utf-8") or "{}")
                self._send_json(200, self.server.fake.configure(**knobs)
                                if isinstance(knobs, dict) else self.server.fake.configure(knobs))
            except (ValueError, TypeError) as e:
                self._send_json(400, {"error": str(e)})
        elif path == "/_fake/reset" and cmd == "POST":
            self.server.fake.reset()
            self._send_json(200, {"ok": True})
        elif path in ("/_fake/messages", "/_fake/requests", "/_fake/stats",
                      "/_fake/config", "/_fake/reset"):
            self._send_json(405, {"error": "method not allowed"})
        else:
            self._send_json(404, {"error": "no such control endpoint"})

    # -- the Kavenegar API ------------------------------------------------------------
    def _api(self, raw_path, path, query, body):
        st = self.server.state
        with st.lock:
            st.requests.append({
                "time": time.time(),
                "method": self.command,
                "raw_path": raw_path,
                "path": path,
                "query": query,
                "headers": [[k, v] for k, v in self.headers.items()],
                "body": body.decode("utf-8", errors="replace"),
            })
            st.arrivals.append(self._texts(query, body))
            st.stats["requests"] += 1
            st.stats["in_flight"] += 1
            st.stats["max_in_flight"] = max(st.stats["max_in_flight"], st.stats["in_flight"])
            latency = st.config["latency_ms"]
        try:
            if latency:
                time.sleep(latency / 1000.0)
            self._api_inner(path, query, body)
        finally:
            with st.lock:
                st.stats["in_flight"] -= 1

    def _texts(self, query, body):
        """What a request carried that may hold a code (message, token), read on arrival so
        that it is known even if the request never gets an answer."""
        try:
            p = self._params(query, body)
        except (UnicodeDecodeError, ValueError):
            return {}
        return {k: p[k] for k in ("message", "token") if k in p}

    def _take_failure(self, method):
        """The failure to inject into this request, if any (consumes one fail_next)."""
        st = self.server.state
        with st.lock:
            c = st.config
            if c["fail_methods"] is not None and method not in c["fail_methods"]:
                return None
            if c["drop"]:
                kind = ("drop",)
            elif c["http_status"] is not None:
                kind = ("http", c["http_status"])
            elif c["status"] is not None and c["status"] != 200:
                kind = ("status", c["status"])
            else:
                return None
            if c["fail_next"] is not None:
                if c["fail_next"] <= 0:
                    _clear_failure(c)
                    return None
                c["fail_next"] -= 1
                if c["fail_next"] == 0:
                    _clear_failure(c)  # back to normal for the next request
            st.stats["failures_injected"] += 1
            if kind[0] == "drop":
                st.stats["drops"] += 1
            return kind

    def _params(self, query, body):
        """Query + form body -> {lower-case name: value}; repeated names joined by commas."""
        pairs = urllib.parse.parse_qsl(query, keep_blank_values=True,
                                       encoding="utf-8", errors="strict")
        if body:
            ctype = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
            if ctype in ("", "application/x-www-form-urlencoded"):
                text = body.decode("utf-8")  # UnicodeDecodeError -> 422
                pairs += urllib.parse.parse_qsl(text, keep_blank_values=True,
                                                encoding="utf-8", errors="strict")
        params = {}
        for k, v in pairs:
            k = k.lower()
            params[k] = params[k] + "," + v if k in params else v
        return params

    def _api_inner(self, path, query, body):
        st = self.server.state
        m = re.fullmatch(r"/v1/([^/]*)/([^/]+)/([^/]+)\.(json|xml)", path)
        try:
            params = self._params(query, body)
        except (UnicodeDecodeError, ValueError):
            params = None
        method = "%s/%s" % (m.group(2), m.group(3)) if m else None
        failure = self._take_failure(method)
        with st.lock:
            bm = st.stats["by_method"]
            bm[method or "?"] = bm.get(method or "?", 0) + 1

        if failure is not None:
            outcome = "dropped" if failure[0] == "drop" else (
                "http_%d" % failure[1] if failure[0] == "http" else failure[1])
            if params is not None and method in ("sms/send", "verify/lookup"):
                self._record_refused(method, params, outcome)
            if failure[0] == "drop":
                self.close_connection = True
                try:
                    self.connection.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                return
            if failure[0] == "http":
                code = failure[1]
                html = HTML_ERROR.format(code=code).encode()
                self._send(code, html, "text/html")
                return
            self._envelope(failure[1])
            return

        if m is None:
            self._envelope(404)
            return
        key = urllib.parse.unquote(m.group(1))
        if st.api_key is not None and key != st.api_key:
            if params is not None and method in ("sms/send", "verify/lookup"):
                self._record_refused(method, params, 403)
            self._envelope(403)
            return
        if self.command not in ("GET", "POST"):
            self._envelope(405)
            return
        if params is None:
            self._envelope(422)
            return
        handler = {
            "sms/send": self._sms_send,
            "verify/lookup": self._verify_lookup,
            "account/info": self._account_info,
            "sms/status": self._sms_status,
        }.get(method)
        if handler is None or m.group(4) != "json":
            self._envelope(404)
            return
        try:
            entries = handler(params)
        except _Refusal as r:
            if method in ("sms/send", "verify/lookup"):
                self._record_refused(method, params, r.status)
            self._envelope(r.status)
            return
        self._envelope(200, entries)

    # -- records ----------------------------------------------------------------------
    def _record_refused(self, method, params, outcome):
        st = self.server.state
        receptors = [r for r in (params.get("receptor") or "").split(",")] or [""]
        tpl = None
        with st.lock:
            if method == "verify/lookup":
                tpl = st.config["templates"].get(params.get("template", ""))
            for r in receptors:
                rec = self._base_record(method, params, r, tpl)
                rec.update({"accepted": False, "outcome": outcome, "messageid": None})
                st.messages.append(rec)
            st.stats["refused"] += 1

    def _base_record(self, method, params, receptor, template_text=None):
        rec = {
            "time": time.time(),
            "method": method,
            "receptor": receptor,
            "phone": normalize_receptor(receptor) if receptor else None,
            "sender": params.get("sender"),
            "message": params.get("message"),
            "template": params.get("template"),
            "token": params.get("token"),
            "token2": params.get("token2"),
            "token3": params.get("token3"),
            "token10": params.get("token10"),
            "token20": params.get("token20"),
            "type": params.get("type"),
            "localid": params.get("localid"),
            "date": params.get("date"),
        }
        if method == "verify/lookup":
            rec["message"] = _render(template_text, params) if template_text else None
        return rec

    # -- methods ----------------------------------------------------------------------
    def _receptors(self, params, single):
        if "receptor" not in params:
            raise _Refusal(400)
        raw = params["receptor"]
        items = raw.split(",")
        if single and len(items) != 1:
            raise _Refusal(411)
        if len(items) > 200:
            raise _Refusal(414)
        with self.server.state.lock:
            strict = self.server.state.config["strict_receptor"]
        for r in items:
            if normalize_receptor(r, strict=strict) is None:
                raise _Refusal(411)
        return [r.strip() for r in items]

    def _sms_send(self, params):
        st = self.server.state
        receptors = self._receptors(params, single=False)
        if "message" not in params:
            raise _Refusal(400)
        text = params["message"]
        if not text.strip() or len(text) > 900:
            raise _Refusal(413)
        now = int(time.time())
        entry_status = 1
        if params.get("date"):
            try:
                date = int(params["date"])
            except ValueError:
                raise _Refusal(417)
            if date < now - 60:
                raise _Refusal(417)
            if date > now:
                entry_status = 2
        if params.get("type"):
            if params["type"] not in ("0", "1", "2", "3"):
                raise _Refusal(400)
        if params.get("tag") and not _TAG_RE.match(params["tag"]):
            raise _Refusal(607)
        localids = None
        if params.get("localid"):
            localids = params["localid"].split(",")
            if len(localids) != len(receptors):
                raise _Refusal(400)
        with st.lock:
            senders = st.config["senders"]
            sender = params.get("sender") or (senders[0] if senders else DEFAULT_SENDERS[0])
            if params.get("sender") and senders is not None and sender not in senders:
                raise _Refusal(412)
            cost = sms_parts(text) * st.config["price"]
            todo = []
            entries = []
            for i, r in enumerate(receptors):
                lid = localids[i] if localids else None
                if lid and lid in st.localids:
                    entries.append(dict(st.localids[lid]))
                    continue
                entries.append(None)
                todo.append((i, r, lid))
            if cost * len(todo) > st.config["credit"]:
                raise _Refusal(418)
            st.config["credit"] -= cost * len(todo)
            for i, r, lid in todo:
                mid = st.next_messageid
                st.next_messageid += 1
                entry = {"messageid": mid, "message": text, "status": entry_status,
                         "statustext": STATUS_TEXTS[entry_status], "sender": sender,
                         "receptor": r, "date": now, "cost": cost}
                entries[i] = entry
                if lid:
                    st.localids[lid] = dict(entry)
                rec = self._base_record("sms/send", params, r)
                rec.update({"accepted": True, "outcome": 200, "messageid": mid,
                            "sender": sender, "cost": cost})
                st.messages.append(rec)
                st.known_ids[mid] = rec
                st.stats["accepted"] += 1
        return entries

    def _verify_lookup(self, params):
        st = self.server.state
        receptor = self._receptors(params, single=True)[0]
        if "template" not in params or "token" not in params:
            raise _Refusal(400)
        if params["token"] == "":
            raise _Refusal(406)
        _check_token(params["token"])
        for name in ("token2", "token3"):
            if params.get(name):
                _check_token(params[name])
        if params.get("token10"):
            _check_token(params["token10"], max_spaces=5)
        if params.get("token20"):
            _check_token(params["token20"], max_spaces=8)
        kind = (params.get("type") or "sms").lower()
        if kind not in ("sms", "call"):
            raise _Refusal(400)
        if kind == "call" and not re.fullmatch(r"[0-9]+", params["token"]):
            raise _Refusal(428)
        if params.get("tag") and not _TAG_RE.match(params["tag"]):
            raise _Refusal(607)
        with st.lock:
            text = st.config["templates"].get(params["template"])
            if text is None:
                raise _Refusal(424)
            if "%token" not in text:
                raise _Refusal(432)
            message = _render(text, params)
            cost = sms_parts(message) * st.config["price"]
            if cost > st.config["credit"]:
                raise _Refusal(418)
            st.config["credit"] -= cost
            mid = st.next_messageid
            st.next_messageid += 1
            entry = {"messageid": mid, "message": message, "status": 5,
                     "statustext": STATUS_TEXTS[5], "sender": "10004346",
                     "receptor": receptor, "date": int(time.time()), "cost": cost}
            rec = self._base_record("verify/lookup", params, receptor, text)
            rec.update({"accepted": True, "outcome": 200, "messageid": mid,
                        "message": message, "cost": cost})
            st.messages.append(rec)
            st.known_ids[mid] = rec
            st.stats["accepted"] += 1
            as_object = st.config["entries_object"]
        return entry if as_object else [entry]

    def _account_info(self, params):
        st = self.server.state
        with st.lock:
            return {"remaincredit": st.config["credit"],
                    "expiredate": st.config["expiredate"], "type": "master"}

    def _sms_status(self, params):
        st = self.server.state
        if "messageid" not in params:
            raise _Refusal(400)
        ids = [i.strip() for i in params["messageid"].split(",")]
        if len(ids) > 500:
            raise _Refusal(414)
        out = []
        with st.lock:
            delivery = st.config["delivery_status"]
            for i in ids:
                if i.isdigit() and int(i) in st.known_ids:
                    out.append({"messageid": int(i), "status": delivery,
                                "statustext": STATUS_TEXTS.get(delivery, "")})
                else:
                    out.append({"messageid": int(i) if i.isdigit() else i, "status": 100,
                                "statustext": STATUS_TEXTS[100]})
        return out


def _clear_failure(c):
    c["status"] = None
    c["http_status"] = None
    c["drop"] = False
    c["fail_next"] = None


def _render(text, params):
    for name in ("token20", "token10", "token3", "token2", "token"):
        text = text.replace("%" + name, params.get(name) or "")
    return text


class _Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True
    request_queue_size = 1024

    def handle_error(self, request, client_address):
        # a client that gave up (timeout, reset) while we slept is normal here
        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, TimeoutError, OSError)):
            return
        super().handle_error(request, client_address)


class FakeKavenegar:
    """The fake as an object: start() on a thread, configure(), messages(), stop()."""

    def __init__(self, port=0, api_key=None, templates=None, senders=None, verbose=False):
        self.port = port
        self.api_key = api_key
        self.verbose = verbose
        self._state = _State(api_key, templates, senders)
        self._server = None
        self._thread = None

    # lifecycle
    def start(self):
        """Listen on 127.0.0.1:port (0: a free port, kept for later restarts)."""
        srv = _Server(("127.0.0.1", self.port), _Handler)
        srv.state = self._state
        srv.fake = self
        srv.verbose = self.verbose
        srv.conns = set()
        srv.conns_lock = threading.Lock()
        self.port = srv.server_address[1]
        self._server = srv
        self._thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="fake-kavenegar", daemon=True)
        self._thread.start()
        return self

    def stop(self):
        """Stop listening and cut every open connection (a real outage: refused)."""
        srv = self._server
        if srv is None:
            return
        self._server = None
        srv.shutdown()
        srv.server_close()
        with srv.conns_lock:
            conns = list(srv.conns)
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self._thread.join(5)

    @property
    def running(self):
        return self._server is not None

    @property
    def url(self):
        return "http://127.0.0.1:%d" % self.port

    # control
    def configure(self, *args, **knobs):
        if args:
            if len(args) != 1 or not isinstance(args[0], dict):
                raise ValueError("config must be a JSON object")
            knobs = dict(args[0], **knobs)
        clean = _validate_knobs(knobs)
        if "fail_next" not in clean and any(k in clean for k in ("status", "http_status", "drop")):
            clean["fail_next"] = None  # a new failure applies until changed
        if "fail_methods" not in clean and any(k in clean for k in ("status", "http_status", "drop")):
            clean["fail_methods"] = None  # ... and to every method
        with self._state.lock:
            self._state.config.update(clean)
            return copy.deepcopy(self._state.config)

    def config(self):
        with self._state.lock:
            return copy.deepcopy(self._state.config)

    def reset(self):
        self._state.reset()

    def messages(self, receptor=None, include_refused=False):
        """Recorded SMS, oldest first; receptor in any form (compared as +989…)."""
        want = normalize_any_phone(receptor) if receptor else None
        with self._state.lock:
            out = []
            for rec in self._state.messages:
                if not include_refused and not rec["accepted"]:
                    continue
                if want is not None and rec["phone"] != want and rec["receptor"] != receptor:
                    continue
                out.append(dict(rec))
            return out

    def requests(self):
        with self._state.lock:
            return copy.deepcopy(self._state.requests)

    def stats(self):
        with self._state.lock:
            return copy.deepcopy(self._state.stats)

    def codes(self):
        """Every code any SMS request carried (accepted, refused or never answered)."""
        out = set()
        with self._state.lock:
            recs = [dict(r) for r in self._state.messages] + [dict(a) for a in self._state.arrivals]
        for rec in recs:
            try:
                c = extract_code(rec)
            except ValueError:
                text = (rec.get("message") or "").translate(_DIGITS)
                out.update(_CODE_RE.findall(text))
                continue
            if c:
                out.add(c)
        return out


def _parse_template(arg):
    name, sep, text = arg.partition("=")
    if not name:
        raise argparse.ArgumentTypeError("--template NAME[=TEXT]")
    return name, (text if sep else DEFAULT_TEMPLATE_TEXT)


def main(argv=None):
    ap = argparse.ArgumentParser(description="A fake Kavenegar REST API on 127.0.0.1 (tests).")
    ap.add_argument("--port", type=int, default=0,
                    help="port on 127.0.0.1 (0: pick a free one; printed on stdout)")
    ap.add_argument("--api-key", default=None,
                    help="the only API key accepted (default: any key)")
    ap.add_argument("--template", action="append", type=_parse_template, default=[],
                    metavar="NAME[=TEXT]",
                    help="register a verify/lookup template (text with %%token)")
    ap.add_argument("--sender", action="append", default=None,
                    help="a sender line of the account (repeatable; default %s)"
                    % ",".join(DEFAULT_SENDERS))
    ap.add_argument("--verbose", action="store_true", help="one stderr line per request")
    args = ap.parse_args(argv)

    fake = FakeKavenegar(port=args.port, api_key=args.api_key,
                         templates=dict(args.template), senders=args.sender,
                         verbose=args.verbose)
    # The handlers first: whoever reads the port may signal at once.
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    fake.start()
    print(fake.port, flush=True)
    sys.stderr.write("fake_kavenegar: listening on %s\n" % fake.url)
    sys.stderr.flush()

    while not done.wait(0.5):
        pass
    fake.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
