"""nginx in front of otpd with TLS, configured with the nginx block of docs/DEPLOYMENT.md
section 6 as it is: only the ports, the upstream address and the certificate paths are
replaced (PLACEHOLDERS below; each must occur in the block exactly once).  The certificate
is self-signed, made here with `openssl req`.  Clients connect from 127.0.0.2 and 127.0.0.3
(the whole 127/8 is loopback on Linux), nginx reaches otpd from 127.0.0.1, the only trusted
proxy.  Checked: a login through it (the code from the console SMS log), Secure cookies, the
client address otpd logs, a send throttle that trips for one client address and not for
another through the same proxy, and a client-supplied X-Forwarded-For that does not get a
throttled client past it."""

import http.client
import json
import re
import shutil
import signal
import ssl
import subprocess
import time
from pathlib import Path

import pytest

from conftest import REPO, SEND, VERIFY, console_codes, free_port, wait_for

DOC = REPO / "docs" / "DEPLOYMENT.md"
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
SERVER_NAME = "otpd.example.com"
CLIENT_A, CLIENT_B = "127.0.0.2", "127.0.0.3"

# What the test replaces in the documented block: (as written in the doc, the name of
# the test's value).
PLACEHOLDERS = [
    ("listen 443 ssl http2;", "listen 127.0.0.1:{HTTPS_PORT} ssl http2;"),
    ("listen 80;", "listen 127.0.0.1:{HTTP_PORT};"),
    ("server 127.0.0.1:8000;", "server {OTPD_ADDR};"),
    ("/etc/ssl/otpd/fullchain.pem", "{CERT_FILE}"),
    ("/etc/ssl/otpd/privkey.pem", "{KEY_FILE}"),
]


def documented_nginx_block():
    """The first ```nginx block of section 6 of docs/DEPLOYMENT.md."""
    text = DOC.read_text()
    sec = re.search(r"^## 6\. nginx in front, with TLS$(.*?)^## 7\.", text, re.M | re.S)
    assert sec, "docs/DEPLOYMENT.md has no section '## 6. nginx in front, with TLS'"
    m = re.search(r"^```nginx\n(.*?)^```$", sec.group(1), re.M | re.S)
    assert m, "no ```nginx block in section 6 of docs/DEPLOYMENT.md"
    return m.group(1)


def site_config(values):
    block = documented_nginx_block()
    for doc_text, pattern in PLACEHOLDERS:
        n = block.count(doc_text)
        assert n == 1, "the documented nginx block has %r %d times (the test replaces it once)" % (doc_text, n)
        block = block.replace(doc_text, pattern.format(**values))
    return block


def make_cert(d):
    cert, key = d / "cert.pem", d / "key.pem"
    r = subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                        "-nodes", "-days", "2", "-subj", "/CN=%s" % SERVER_NAME,
                        "-addext", "subjectAltName=DNS:%s,IP:127.0.0.1" % SERVER_NAME,
                        "-keyout", str(key), "-out", str(cert)], capture_output=True, timeout=30)
    assert r.returncode == 0, r.stderr.decode()
    return cert, key


class Nginx:
    def __init__(self, d, site):
        self.dir = d
        for sub in ("logs", "tmp"):
            (d / sub).mkdir(exist_ok=True)
        (d / "otpd.conf").write_text(site)
        user = "user root;\n" if hasattr(__import__("os"), "geteuid") and __import__("os").geteuid() == 0 else ""
        (d / "nginx.conf").write_text(
            "%sdaemon off;\nworker_processes 1;\npid %s/nginx.pid;\nerror_log %s/logs/error.log info;\n"
            "events { worker_connections 128; }\n"
            "http {\n  access_log %s/logs/access.log;\n"
            "  client_body_temp_path %s/tmp/body; proxy_temp_path %s/tmp/proxy;\n"
            "  fastcgi_temp_path %s/tmp/fastcgi; uwsgi_temp_path %s/tmp/uwsgi; scgi_temp_path %s/tmp/scgi;\n"
            "  include %s/otpd.conf;\n}\n" % ((user,) + (d,) * 9))
        self.proc = None

    def start(self, port):
        t = subprocess.run([NGINX, "-t", "-p", str(self.dir), "-c", str(self.dir / "nginx.conf")],
                           capture_output=True, timeout=30)
        assert t.returncode == 0, "nginx -t: %s" % t.stderr.decode()
        self.proc = subprocess.Popen([NGINX, "-p", str(self.dir), "-c", str(self.dir / "nginx.conf")],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=open(self.dir / "logs" / "stderr.log", "wb"))

        def up():
            assert self.proc.poll() is None, "nginx exited: %s" % self.log()
            try:
                with __import__("socket").create_connection(("127.0.0.1", port), timeout=0.5):
                    return True
            except OSError:
                return False
        wait_for(up, 10, what="nginx on port %d" % port)

    def log(self):
        out = ""
        for f in ("stderr.log", "error.log"):
            p = self.dir / "logs" / f
            if p.exists():
                out += p.read_text(errors="replace")[-2000:]
        return out

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGQUIT)      # graceful
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


class Client:
    """HTTPS to nginx from a given loopback address, checking nginx's certificate."""

    def __init__(self, port, source, cert):
        self.port = port
        self.source = source
        self.ctx = ssl.create_default_context(cafile=str(cert))

    def request(self, method, path, body=None, headers=None):
        c = http.client.HTTPSConnection("127.0.0.1", self.port, timeout=30, context=self.ctx,
                                        source_address=(self.source, 0))
        try:
            h = {"Host": SERVER_NAME}
            if body is not None:
                body = json.dumps(body).encode()
                h["Content-Type"] = "application/json"
            h.update(headers or {})
            c.request(method, path, body=body, headers=h)
            r = c.getresponse()
            data = r.read()
            return r.status, r.getheaders(), data
        finally:
            c.close()


def set_cookies(headers):
    """Set-Cookie headers -> {name: (value, {lower attribute: value or True})}."""
    out = {}
    for k, v in headers:
        if k.lower() != "set-cookie":
            continue
        parts = [p.strip() for p in v.split(";")]
        name, _, value = parts[0].partition("=")
        attrs = {}
        for p in parts[1:]:
            a, eq, av = p.partition("=")
            attrs[a.lower()] = av if eq else True
        out[name] = (value, attrs)
    return out


@pytest.fixture
def proxied(otpd_factory, tmp_path):
    """otpd (console SMS, trusted proxy 127.0.0.1, Secure cookies, 3 sends per address an
    hour) behind nginx with the documented configuration."""
    otpd = otpd_factory.start({
        "SMS_BACKEND": "console", "KAVENEGAR_API_KEY": None, "KAVENEGAR_API_URL": None,
        "OTPD_TRUSTED_PROXIES": "127.0.0.1", "COOKIE_SECURE": "true",
        "OTP_THROTTLE_RATE": "3/hour", "OTPD_LOG_FORMAT": "json",
    })
    d = tmp_path / "nginx"
    d.mkdir()
    cert, key = make_cert(d)
    https_port, http_port = free_port(), free_port()
    ng = Nginx(d, site_config({"HTTPS_PORT": https_port, "HTTP_PORT": http_port,
                               "OTPD_ADDR": otpd.env["OTPD_LISTEN"],
                               "CERT_FILE": cert, "KEY_FILE": key}))
    ng.start(https_port)
    try:
        yield otpd, ng, https_port, http_port, cert
    finally:
        ng.stop()


def access_lines(otpd, route):
    out = []
    for line in otpd.log_text().splitlines():
        try:
            o = json.loads(line)
        except ValueError:
            continue
        if isinstance(o, dict) and o.get("event") == "http.access" and o.get("path", o.get("route")) == route:
            out.append(o)
    return out


def new_code(otpd, seen):
    def fresh():
        c = console_codes(otpd.log_text()) - seen
        return c if len(c) == 1 else None
    c = wait_for(fresh, 5, what="the console SMS line of a new code")
    seen |= c
    return c.pop()


def test_login_through_nginx_with_tls(proxied):
    otpd, ng, port, http_port, cert = proxied
    a = Client(port, CLIENT_A, cert)
    phone = "+989121110001"
    otpd.factory.phones.add(phone)

    st, _, body = a.request("GET", "/readyz")
    assert st == 200, body
    # plain HTTP on the other server block: a redirect to HTTPS, no otpd
    c = http.client.HTTPConnection("127.0.0.1", http_port, timeout=10)
    c.request("GET", "/api/v1/usr/me", headers={"Host": SERVER_NAME})
    r = c.getresponse()
    assert r.status == 301 and r.getheader("Location") == "https://%s/api/v1/usr/me" % SERVER_NAME
    c.close()

    seen = set()
    st, _, body = a.request("POST", SEND, {"phone_number": "09121110001"})
    assert st == 200, body
    code = new_code(otpd, seen)
    st, headers, body = a.request("POST", VERIFY, {"phone_number": "09121110001", "code": code})
    assert st == 200, body
    assert json.loads(body)["user"]["phone_number"] == phone
    cookies = set_cookies(headers)
    assert set(cookies) == {"access_token", "refresh_token"}, headers
    for name, (value, attrs) in cookies.items():
        assert attrs.get("secure") is True, "%s without Secure: %s" % (name, attrs)
        assert attrs.get("httponly") is True, attrs
    st, headers, body = a.request("GET", "/api/v1/usr/me",
                                  headers={"Cookie": "access_token=%s" % cookies["access_token"][0]})
    assert st == 200, body
    assert json.loads(body)["phone_number"] == phone
    # HSTS from nginx, and /metrics kept from the outside
    assert any(k.lower() == "strict-transport-security" for k, _ in headers), headers
    st, _, _ = a.request("GET", "/metrics")
    assert st == 403

    # otpd saw the client, not nginx
    sends = access_lines(otpd, SEND)
    assert sends and sends[-1].get("client") == CLIENT_A, sends[-1:]


def test_throttle_counts_the_client_not_the_proxy(proxied):
    """3 sends an hour per client address: the 4th from A is throttled, through the same
    proxy B is not, and A naming another address in X-Forwarded-For is still A."""
    otpd, ng, port, _, cert = proxied
    a, b = Client(port, CLIENT_A, cert), Client(port, CLIENT_B, cert)

    def send(client, i, headers=None):
        otpd.factory.phones.add("+98912222%04d" % i)
        st, _, body = client.request("POST", SEND, {"phone_number": "0912222%04d" % i}, headers)
        return st, json.loads(body)

    for i in range(3):
        st, body = send(a, i)
        assert st == 200, body
    st, body = send(a, 3)
    assert st == 429 and body["code"] == "throttled" and body.get("limit") == "client_rate", body

    for spoof in ("203.0.113.7", CLIENT_B, "203.0.113.7, 198.51.100.9"):
        st, body = send(a, 4, {"X-Forwarded-For": spoof})
        assert st == 429 and body["code"] == "throttled", (spoof, body)
    st, body = send(a, 5, {"X-Real-IP": "203.0.113.8", "Forwarded": "for=203.0.113.8"})
    assert st == 429 and body["code"] == "throttled", body

    st, body = send(b, 6)
    assert st == 200, body

    lines = access_lines(otpd, SEND)
    clients = [l.get("client") for l in lines]
    assert clients == [CLIENT_A] * 8 + [CLIENT_B], clients
    assert [l.get("status") for l in lines] == [200] * 3 + [429] * 5 + [200], lines
