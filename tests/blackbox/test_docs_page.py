"""The interactive API docs: GET /api/v1/docs (Swagger UI showing /api/v1/schema) and the files
it loads, GET /api/v1/docs/{file}, all served by otpd itself.

Two kinds of tests:
  - plain HTTP (the harness's helpers, so every answer is also checked against
    docs/openapi.json): the page's headers, that every URL the page references is served with
    its type and version tag, the caching rules, the unknown names;
  - test_docs_page_offline_in_chromium: Debian's headless Chromium, driven by chromedriver
    (python3-selenium), loads the page from an otpd in a network namespace that has only
    loopback (nothing else can be reached, so nothing may come from a CDN), finds every
    operation of the document on it, makes one "Try it out" call, and sees no CSP violation
    and no failed load in the browser.  Screenshots go to the test's tmp dir (paths printed).

tools/deps.sh installs chromium, chromium-driver, python3-selenium and iproute2; the test
installs nothing, and a missing one fails it (this suite never skips).
"""

import contextlib
import ctypes
import errno
import hashlib
import html.parser
import json
import os
import re
import socket
import subprocess
import time
import urllib.parse

from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException, TimeoutException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

import openapi_check
from conftest import REPO, PHONE, assert_problem, console_codes, log_objects

DOCS = "/api/v1/docs"
SCHEMA = "/api/v1/schema"
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; "
       "form-action 'self'; frame-ancestors 'none'")
IMMUTABLE = "public, max-age=31536000, immutable"
TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8",
         ".txt": "text/plain; charset=utf-8", "": "text/plain; charset=utf-8"}

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
IP = "/usr/sbin/ip"


def doc():
    return json.loads((REPO / "docs" / "openapi.json").read_text(encoding="utf-8"))


def source_of(name):
    """The repository file GET /api/v1/docs/NAME serves."""
    for d in (REPO / "third_party" / "swagger-ui-dist", REPO / "src" / "http" / "docs"):
        if (d / name).is_file():
            return d / name
    raise AssertionError("no file %s in third_party/swagger-ui-dist/ or src/http/docs/" % name)


def type_of(name):
    return TYPES[os.path.splitext(name)[1]]


def assert_page_headers(r):
    assert r.headers.get("Content-Security-Policy") == CSP, r.headers
    assert r.headers.get("X-Content-Type-Options") == "nosniff"
    assert r.headers.get("Referrer-Policy") == "no-referrer"
    assert r.headers.get("X-Frame-Options") == "DENY"
    assert re.fullmatch(r"[0-9a-f]{16}", r.headers.get("X-Request-Id", ""))


class PageRefs(html.parser.HTMLParser):
    """Every URL an HTML page references (src and href), and what a strict CSP would block:
    inline scripts, <style> elements, style="" and on*="" attributes."""

    def __init__(self):
        super().__init__()
        self.refs = []          # (tag, attribute, value)
        self.inline = []
        self._script_src = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        for name, value in attrs:
            if name in ("src", "href"):
                self.refs.append((tag, name, value))
            if name == "style" or name.startswith("on"):
                self.inline.append("%s %s=%r" % (tag, name, value))
        if tag == "style":
            self.inline.append("<style>")
        if tag == "script":
            self._script_src = a.get("src")

    def handle_data(self, data):
        if self._script_src is None and self.lasttag == "script" and data.strip():
            self.inline.append("inline script: %r" % data[:80])

    def handle_endtag(self, tag):
        if tag == "script":
            self._script_src = None


def page_refs(text):
    p = PageRefs()
    p.feed(text)
    p.close()
    return p


# -- plain HTTP ------------------------------------------------------------------------------

def test_docs_page_headers(otpd):
    r = otpd.get(DOCS)
    assert r.status_code == 200, r.text[:300]
    assert r.headers["Content-Type"] == "text/html; charset=utf-8"
    assert r.headers.get("Cache-Control") == "no-store"
    assert_page_headers(r)
    assert r.text.startswith("<!doctype html>")
    size = len(r.content)
    r = otpd.request("HEAD", DOCS)
    assert r.status_code == 200 and r.content == b""
    assert int(r.headers["Content-Length"]) == size
    assert r.headers["Content-Type"] == "text/html; charset=utf-8"
    assert_page_headers(r)
    r = otpd.get(DOCS + "/")
    assert r.status_code == 200 and len(r.content) == size
    r = otpd.post(DOCS, json={})
    assert_problem(r, 405, "method_not_allowed")
    assert r.headers.get("Allow") == "GET, HEAD"
    assert "Content-Security-Policy" not in r.headers


def test_docs_page_has_no_inline_script_or_style(otpd):
    r = otpd.get(DOCS)
    p = page_refs(r.text)
    assert p.inline == [], "the CSP would block these: %s" % p.inline
    scripts = [v for tag, attr, v in p.refs if tag == "script"]
    assert len(scripts) == 2 and "swagger-ui-bundle.js" in scripts[0] and "otpd-docs.js" in scripts[1], scripts


def test_every_url_the_page_references_is_served_with_its_type(otpd):
    """Each src/href of the page is on this origin (or a data: URI), and answers 200 with the
    type of its file, the bytes of the repository's file, and (under its version tag, the
    first 16 hex digits of the file's SHA-256) a Cache-Control that keeps it."""
    page = otpd.get(DOCS)
    assert page.status_code == 200
    refs = page_refs(page.text).refs
    assert refs
    files = set()
    for tag, attr, value in refs:
        u = urllib.parse.urlsplit(value)
        if u.scheme == "data":
            assert tag == "link" and value == "data:,", value    # the empty favicon
            continue
        assert not u.scheme and not u.netloc and u.path.startswith("/"), \
            "%s %s=%r: not a path on this origin" % (tag, attr, value)
        if u.path == SCHEMA:
            r = otpd.get(value)
            assert r.status_code == 200 and r.headers["Content-Type"] == "application/json"
            continue
        assert u.path.startswith(DOCS + "/"), value
        name = u.path[len(DOCS) + 1:]
        src = source_of(name)
        want = src.read_bytes()
        tag_ = urllib.parse.parse_qs(u.query).get("v")
        assert tag_ == [hashlib.sha256(want).hexdigest()[:16]], "%s: version tag %r" % (value, tag_)
        r = otpd.get(value)
        assert r.status_code == 200, "%s -> %d" % (value, r.status_code)
        assert r.headers["Content-Type"] == type_of(name), (value, r.headers["Content-Type"])
        assert r.headers.get("Cache-Control") == IMMUTABLE, (value, r.headers.get("Cache-Control"))
        assert_page_headers(r)
        assert r.content == want, "%s: not the bytes of %s" % (value, src.relative_to(REPO))
        want_type = {"script": "text/javascript", "link": "text/css", "a": "text/plain"}[tag]
        assert type_of(name).startswith(want_type + ";"), (tag, value)
        files.add(name)
    # the page loads its files and links the licences; the document lists exactly these
    assert {"swagger-ui-bundle.js", "swagger-ui.css", "otpd-docs.js", "otpd-docs.css",
            "LICENSE", "NOTICE", "swagger-ui-bundle.js.LICENSE.txt"} <= files, files
    enum = doc()["paths"][DOCS + "/{file}"]["parameters"][0]["schema"]["enum"]
    assert set(enum) == files, "the document's {file} names vs the page's files"


def test_docs_files_are_kept_only_under_their_tag(otpd):
    name = "swagger-ui.css"
    want = source_of(name).read_bytes()
    tag = hashlib.sha256(want).hexdigest()[:16]
    for query in ("", "?v=", "?v=0123456789abcdef", "?v=" + tag + "0", "?v=" + tag[:15], "?w=" + tag):
        r = otpd.get("%s/%s%s" % (DOCS, name, query))
        assert r.status_code == 200 and r.content == want, query
        assert r.headers["Cache-Control"] == "no-store", (query, r.headers["Cache-Control"])
        assert r.headers["Content-Type"] == "text/css; charset=utf-8"
        assert_page_headers(r)
    r = otpd.request("HEAD", "%s/%s?v=%s" % (DOCS, name, tag))
    assert r.status_code == 200 and r.content == b""
    assert int(r.headers["Content-Length"]) == len(want)
    assert r.headers["Cache-Control"] == IMMUTABLE
    assert_page_headers(r)
    r = otpd.get("%s/%s/" % (DOCS, name))           # one trailing slash, as on every path
    assert r.status_code == 200 and r.content == want


def test_unknown_docs_files_are_404_and_other_methods_405(otpd):
    for path in ("nope.js", "swagger-ui.js", "index.html", "swagger-ui-bundle.js.map",
                 "swagger-ui.css.map", "LICENSE.txt", "license", "x" * 300, "%2e%2e",
                 "LICENSE/x", "a/b"):
        r = otpd.get("%s/%s" % (DOCS, path))
        assert_problem(r, 404, "not_found")
        assert "Content-Security-Policy" not in r.headers
    r = otpd.post(DOCS + "/LICENSE", json={})
    assert_problem(r, 405, "method_not_allowed")
    assert r.headers.get("Allow") == "GET, HEAD"
    r = otpd.request("DELETE", DOCS + "/nope.js")
    assert_problem(r, 405, "method_not_allowed")
    assert r.headers.get("Allow") == "GET, HEAD"


# -- in a browser, offline -------------------------------------------------------------------

CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


@contextlib.contextmanager
def loopback_only_network():
    """Run the body with this thread in a new network namespace whose only interface is
    loopback, brought up.  Processes and threads started meanwhile (otpd, chromedriver,
    Chromium) stay in it; the thread is moved back at the end.  Needs root (CAP_SYS_ADMIN),
    as the suite has."""
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        if _libc.unshare(CLONE_NEWNET) != 0:
            e = ctypes.get_errno()
            raise AssertionError("unshare(CLONE_NEWNET): %s (the test needs root)" % os.strerror(e))
        try:
            subprocess.run([IP, "link", "set", "lo", "up"], check=True, capture_output=True, timeout=10)
            yield
        finally:
            if _libc.setns(home, CLONE_NEWNET) != 0:
                e = ctypes.get_errno()
                raise AssertionError("setns back to the first network namespace: %s" % os.strerror(e))
    finally:
        os.close(home)


def assert_offline():
    """Only loopback here: no interface but lo, and a connection to an address outside this
    machine fails at once (ENETUNREACH: no route, so no packet is ever sent).  The addresses
    are from the documentation ranges (TEST-NET-1, 2001:db8::/32), which belong to nobody:
    were the namespace wrong, the connection would still reach no one."""
    names = [n for _, n in socket.if_nameindex()]
    assert names == ["lo"], "interfaces in the namespace: %s" % names
    for fam, addr in ((socket.AF_INET, ("192.0.2.1", 80)), (socket.AF_INET6, ("2001:db8::1", 80))):
        try:
            s = socket.socket(fam, socket.SOCK_STREAM)
        except OSError as e:
            assert fam == socket.AF_INET6 and e.errno == errno.EAFNOSUPPORT, e
            continue        # no IPv6 in this kernel: nothing to reach over it either
        with s:
            s.settimeout(2)
            try:
                s.connect(addr)
            except OSError as e:
                assert e.errno == errno.ENETUNREACH, "connect %s: %r" % (addr[0], e)
            else:
                raise AssertionError("connected to %s from the loopback-only namespace" % addr[0])


def chromium(tmp_path):
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
              "--window-size=1280,1024", "--no-proxy-server", "--no-first-run",
              "--disable-background-networking", "--disable-component-update", "--disable-sync",
              "--disable-default-apps", "--disable-extensions", "--password-store=basic",
              "--user-data-dir=%s" % (tmp_path / "chromium-profile")):
        opts.add_argument(a)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    service = Service(CHROMEDRIVER, log_path=str(tmp_path / "chromedriver.log"))
    d = webdriver.Chrome(service=service, options=opts)
    try:
        d.set_page_load_timeout(30)
        # Registered before any page script runs (DevTools scripts are not subject to the
        # CSP): every CSP violation of the page, besides the console's own report of it.
        d.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": """
            window.__otpdViolations = [];
            document.addEventListener("securitypolicyviolation", function (e) {
                window.__otpdViolations.push({directive: e.violatedDirective,
                                              blocked: e.blockedURI, source: e.sourceFile});
            });"""})
    except BaseException:
        d.quit()
        raise
    return d


def page_network(perf_log, page_url):
    """The page's requests from Chromium's performance log: (requests {id: (method, url)},
    responses {id: (status, mimeType)}, failures {id: errorText}), for the requests that the
    page (the document at page_url) made, itself included."""
    events = [json.loads(e["message"])["message"] for e in perf_log]
    reqs, resps, fails = {}, {}, {}
    for m in events:
        p = m.get("params", {})
        if m["method"] == "Network.requestWillBeSent":
            doc_url = p.get("documentURL", "")
            if doc_url.split("#")[0] == page_url or p["request"]["url"] == page_url:
                reqs[p["requestId"]] = (p["request"]["method"], p["request"]["url"])
    for m in events:
        p = m.get("params", {})
        if m["method"] == "Network.responseReceived" and p["requestId"] in reqs:
            resps[p["requestId"]] = (p["response"]["status"], p["response"]["mimeType"])
        if m["method"] == "Network.loadingFailed" and p["requestId"] in reqs:
            fails[p["requestId"]] = p.get("errorText")
    return reqs, resps, fails


def console_problems(entries):
    """Browser console entries that mean something went wrong: anything above INFO, and any
    report of the CSP or of the network (a refused or failed load)."""
    return [e for e in entries
            if e.get("level") not in ("INFO", "DEBUG", "ALL")
            or e.get("source") in ("security", "network")
            or re.search(r"Content Security Policy|Refused to|Failed to load", e.get("message", ""))]


def wait(d, fn, what, timeout=30):
    try:
        return WebDriverWait(d, timeout, ignored_exceptions=(StaleElementReferenceException,)).until(
            lambda d_: fn())
    except TimeoutException:
        raise AssertionError("timed out after %ds waiting for %s" % (timeout, what))


def screenshot(d, path, capsys):
    assert d.save_screenshot(str(path)), path
    with capsys.disabled():
        print("\n[docs page screenshot] %s" % path)


def test_docs_page_offline_in_chromium(otpd_factory, tmp_path, capsys, monkeypatch):
    """The whole page in a real browser with no network but loopback: every operation of the
    document is on it, "Try it out" of POST /api/v1/usr/otp reaches this otpd (console
    backend) and shows its answer, and the browser reports no CSP violation and no failed
    load; everything it loaded came from otpd's origin."""
    for k in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(k, raising=False)
    d = None
    with loopback_only_network():
        assert_offline()
        # In a network of its own with only loopback, otpd cannot reach the suite's
        # PostgreSQL: this test is about the page, so its database is a SQLite file of its
        # run directory on either backend.
        run_dir = otpd_factory.new_dir()
        otpd = otpd_factory.start({"SMS_BACKEND": "console", "KAVENEGAR_API_KEY": None,
                                   "KAVENEGAR_API_URL": None, "OTPD_LOG_FORMAT": "json",
                                   "DATABASE_URL": "sqlite:%s/otpd.db" % run_dir},
                                  cwd=run_dir)
        otpd_factory.phones.add(PHONE)       # the number Try it out sends: never in a log
        page_url = otpd.url + DOCS
        try:
            t0 = time.monotonic()
            d = chromium(tmp_path)
            d.get("about:blank")
            d.get_log("browser")
            d.get_log("performance")
            d.get(page_url)

            # -- every operation of the document is listed ----------------------------------
            checker = openapi_check.Checker(doc())
            served, planned = checker.served_operations(), checker.planned_operations()

            def listed():       # once Swagger UI has rendered them all
                ops = d.execute_script("""
                    return Array.from(document.querySelectorAll('.opblock')).map(function (b) {
                        return [b.querySelector('.opblock-summary-method').textContent,
                                b.querySelector('.opblock-summary-path').getAttribute('data-path'),
                                b.querySelector('.opblock-summary-description') ?
                                    b.querySelector('.opblock-summary-description').textContent : ''];
                    });""")
                return ops if len(ops) >= len(served | planned) else None
            ops = wait(d, listed, "the operations on the page")
            shown = {(p, m.upper()) for m, p, _ in ops}
            assert served - shown == set(), "operations of the document missing from the page"
            assert shown == served | planned, shown ^ (served | planned)
            assert (DOCS, "GET") in served and (DOCS + "/{file}", "GET") in served
            for m, p, summary in ops:
                assert summary.startswith("(planned") == ((p, m.upper()) in planned), (m, p, summary)
            screenshot(d, tmp_path / "docs-page.png", capsys)

            # -- Try it out: POST /api/v1/usr/otp ------------------------------------------
            op = d.find_element(By.ID, "operations-login-sendOtp")
            op.find_element(By.CSS_SELECTOR, ".opblock-summary-control").click()
            wait(d, lambda: op.find_element(By.CSS_SELECTOR, "button.try-out__btn"), "Try it out").click()
            body = wait(d, lambda: op.find_element(By.CSS_SELECTOR, "textarea.body-param__text"),
                        "the request body")
            assert json.loads(body.get_attribute("value")) == {"phone_number": PHONE}
            op.find_element(By.CSS_SELECTOR, "button.execute").click()

            def answer():
                cells = op.find_elements(By.CSS_SELECTOR,
                                         ".live-responses-table tr.response .response-col_status")
                return cells[0].text.strip() if cells and cells[0].text.strip() else None
            assert wait(d, answer, "the answer of Try it out") == "200"
            shown_url = op.find_element(By.CSS_SELECTOR, ".request-url pre").text.strip()
            assert shown_url == otpd.url + "/api/v1/usr/otp", shown_url
            live = op.find_element(By.CSS_SELECTOR, ".live-responses-table tr.response")
            got = json.loads(live.find_element(By.CSS_SELECTOR, ".highlight-code code").text)
            assert got == {"phone_number": PHONE, "message": "OTP sent successfully",
                           "expires_in": 300}, got
            assert checker._errors(openapi_check._pointer(
                "paths", "/api/v1/usr/otp", "post", "responses", "200", "content",
                "application/json", "schema"), got) == []
            headers = live.find_element(By.CSS_SELECTOR, ".response-col_description").text
            rid = re.search(r"x-request-id: ([0-9a-f]{16})", headers)
            assert rid, headers
            d.execute_script("arguments[0].scrollIntoView({block: 'center'});", live)
            screenshot(d, tmp_path / "docs-try-it-out.png", capsys)

            # otpd served it: the access line of that request, and the code the console
            # backend logged for the number
            def access_line():
                for o in log_objects(otpd.log_text()):
                    if o.get("event") == "http.access" and o.get("request_id") == rid.group(1):
                        return o
                return None
            line = wait(d, access_line, "otpd's access line of the Try it out request", 10)
            assert line.get("outcome") == "otp.sent" and line.get("status") == 200, line
            assert console_codes(otpd.log_text()), "no code in the console backend's log"

            # -- nothing failed, nothing was refused, nothing came from elsewhere -----------
            console = d.get_log("browser")
            violations = d.execute_script("return window.__otpdViolations")
            reqs, resps, fails = page_network(d.get_log("performance"), page_url)
            assert console_problems(console) == [], console
            assert violations == [], violations
            assert fails == {}, {reqs[k]: v for k, v in fails.items()}
            origin = otpd.url + "/"
            urls = sorted(u for _, u in reqs.values())
            assert all(u.startswith(origin) or u.startswith("data:") for u in urls), urls
            for rid_, (method, url) in reqs.items():
                if url.startswith(origin):
                    assert rid_ in resps and resps[rid_][0] == 200, (method, url, resps.get(rid_))
            paths = {urllib.parse.urlsplit(u).path for u in urls if u.startswith(origin)}
            assert {DOCS, SCHEMA, DOCS + "/swagger-ui-bundle.js", DOCS + "/swagger-ui.css",
                    DOCS + "/otpd-docs.js", DOCS + "/otpd-docs.css", "/api/v1/usr/otp"} <= paths, paths

            # -- the two detectors above do see a violation (so their silence means something)
            d.execute_script("""var s = document.createElement('script');
                                s.textContent = 'window.__otpdInline = 1';
                                document.head.appendChild(s);""")
            seen = wait(d, lambda: d.execute_script("return window.__otpdViolations") or None,
                        "the report of a deliberate CSP violation", 10)
            assert seen[0]["directive"].startswith("script-src"), seen
            assert d.execute_script("return window.__otpdInline === undefined")
            assert any(e.get("source") == "security" for e in d.get_log("browser"))
            d.execute_script("fetch('/api/v1/docs/nope.js');")
            failed = wait(d, lambda: console_problems(d.get_log("browser")) or None,
                          "the console's report of a deliberate failed load", 10)
            assert any("nope.js" in e.get("message", "") for e in failed), failed
            took = time.monotonic() - t0
            assert took < 60, "the browser test took %.0fs" % took
        finally:
            if d is not None:
                d.quit()
