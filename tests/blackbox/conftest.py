"""Black-box fixtures for otpd: the fake Kavenegar server, build/otpd as a subprocess, and the
checks every test gets for free.

Fixtures
  fake          tools/fake_kavenegar.FakeKavenegar on a free 127.0.0.1 port, with a fresh
                64-char upper-case hex API key (fake.api_key); stopped after the test.
  otpd_factory  .start(env=None, ...) -> Otpd handle (a fresh temp dir per server, so otpd.db
                lands there; pty=True: stderr is a pseudo-terminal, copied into the same log
                file), .run(args, env, ...) for one-shot commands, .env(...) the base
                environment.  After the test every server still running is stopped with
                SIGTERM (it must exit 0), and every log, command output and response seen is
                checked: no API key, no SECRET_KEY, no code, no full phone number, no 500, and
                every response as docs/openapi.json documents it (status, content type, body,
                headers: openapi_check.py, with its list of exceptions).
  otpd          otpd_factory.start() with the env of @pytest.mark.otpd_env(NAME="value", ...)
  pg            OTPD_TEST_BACKEND=postgres: the session's PostgreSQL cluster (tests/pgcluster.py)
                and its fresh databases (PgDatabases); None with the default backend, sqlite.

The backend (OTPD_TEST_BACKEND: sqlite, the default, or postgres)
  sqlite        each run directory's DATABASE_URL is sqlite:DIR/otpd.db.
  postgres      one throwaway PostgreSQL 15 cluster for the whole pytest run, and each run
                directory (OtpdFactory.new_dir(), or a cwd= given again) a database of its own,
                fresh (made ahead by a thread; after the test recycled only if it is again
                like a fresh one, else dropped: PgDatabases); DATABASE_URL is
                postgres://otpd@127.0.0.1:PORT/otpd_tN.  A restart of a handle keeps its
                directory and so its database.
  Markers sqlite_only / postgres_only: a test for the other backend is deselected (not
  skipped: a skip fails here).  Otpd.db_url is the URL either way; Otpd.db_path (the SQLite
  file) fails with PostgreSQL.

Helpers (import them: `from conftest import ...`)
  get_code(fake, phone)                the 6-digit code of the newest SMS for that number
  assert_problem(r, status, code)      RFC 9457 body, content type, type/title/status/detail/code
  assert_log_clean(text, ...)          the log rules of docs/API.md §4, on JSON and text logs
  console_codes(text)                  the codes the console backend logged (JSON or CODE lines)
  cookies_of(r)                        Set-Cookie headers parsed
  db_query(otpd, sql, params=())       one statement on the handle's database, either backend
                                       (? placeholders; PostgreSQL: psql, literals substituted),
                                       the rows as tuples; db_executemany(otpd, sql, rows)
  db_dump(otpd), db_tables(otpd)       the database as text (iterdump / pg_dump), its tables
  PgTableLock(otpd, tables)            PostgreSQL: another session holds ACCESS EXCLUSIVE locks
"""

import json
import os
import pty
import re
import secrets
import signal
import socket
import statistics
import string
import subprocess
import sys
import threading
import time
import tty
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

import pytest
import requests

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tools"))
sys.path.insert(1, str(REPO / "tests"))
import fake_kavenegar  # noqa: E402
import openapi_check  # noqa: E402
import pgcluster  # noqa: E402

OTPD_BIN = Path(os.environ.get("OTPD_BIN") or (REPO / "build" / "otpd")).absolute()

BACKENDS = ("sqlite", "postgres")
BACKEND = os.environ.get("OTPD_TEST_BACKEND") or "sqlite"

SEND = "/api/v1/usr/otp"
VERIFY = "/api/v1/usr/otp/verify"

PHONE = "+989123456789"          # the number most tests use
PHONE_MASKED = "+98912***6789"

HTTP_TIMEOUT = (3, 30)

_DIGITS = str.maketrans("۰۱۲۳۴۵۶۷۸۹٠١٢٣٤٥٦٧٨٩", "01234567890123456789")


# ----------------------------------------------------------------------------------------
# small helpers

def new_api_key():
    return secrets.token_hex(32).upper()


def new_secret(n=48):
    alphabet = string.ascii_letters + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(n))


def free_port(host="127.0.0.1"):
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(fam, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def port_is_free(host, port):
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(fam, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
        return True


def have_ipv6():
    try:
        free_port("::1")
        return True
    except OSError:
        return False


def normalize_phone(value):
    """Reference normaliser (docs/API.md §2) used by the tests: +989XXXXXXXXX or None."""
    if not isinstance(value, str) or len(value) > 32:
        return None
    v = re.sub(r"[ \-()]", "", value.translate(_DIGITS))
    m = re.fullmatch(r"(?:\+989|00989|989|09|9)([0-9]{9})", v)
    return "+989" + m.group(1) if m else None


def mask(phone):
    """+989123456789 -> +98912***6789 (the contract's masked form)."""
    return phone[:6] + "***" + phone[-4:]


def phone_n(i):
    """A distinct valid number per index: +98935XXXXXXX."""
    return "+98935%07d" % i


def wrong_code(code):
    return "%06d" % ((int(code) + 1) % 1000000)


def url_secrets(url):
    """What of a DATABASE_URL must never be logged: its password, from the user info or a
    password= parameter, as written and percent-decoded (and so the whole URL with it).  One
    shorter than 8 characters is looked for as ":password@" only, since a short word ("pass")
    is in ordinary text."""
    if not url or "://" not in url:
        return set()
    try:
        parts = urlsplit(url)
        pws = [parts.password] if parts.password else []
        pws += parse_qs(parts.query).get("password", [])
    except ValueError:
        return set()
    out = set()
    for pw in pws:
        for form in {pw, unquote(pw)}:
            if len(form) >= 8:
                out.add(form)
            elif form:
                out.add(":%s@" % form)
    return out


def _pg_literal(v):
    """v as a PostgreSQL literal: None, bool, int, bytes (bytea) or a plain str only."""
    if v is None:
        return "NULL"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(int(v))
    if isinstance(v, (bytes, bytearray)):
        return "'\\x%s'::bytea" % bytes(v).hex()
    if isinstance(v, str):
        if "\0" in v or not v.isprintable():
            raise AssertionError("db_query: a parameter with control characters: %r" % v[:40])
        return "'%s'" % v.replace("'", "''")
    raise AssertionError("db_query: parameters are None, bool, int, bytes or str, not %r" % type(v))


def _pg_substitute(sql, params):
    """sql with each ? (outside quotes) replaced by the next of params as a literal."""
    out, it, quote = [], iter(params), None
    n = 0
    for ch in sql:
        if quote:
            quote = None if ch == quote else quote
            out.append(ch)
        elif ch in "'\"":
            quote = ch
            out.append(ch)
        elif ch == "?":
            try:
                out.append(_pg_literal(next(it)))
            except StopIteration:
                raise AssertionError("db_query: more ? than parameters in %r" % sql) from None
            n += 1
        else:
            out.append(ch)
    if n != len(params):
        raise AssertionError("db_query: %d parameters for %d ? in %r" % (len(params), n, sql))
    return "".join(out)


def pg_dbname(otpd):
    """The PostgreSQL database of the handle's DATABASE_URL (OTPD_TEST_BACKEND=postgres)."""
    url = urlsplit(otpd.db_url)
    assert url.scheme in ("postgres", "postgresql"), "not a PostgreSQL URL: %s" % url.scheme
    return unquote(url.path.lstrip("/"))


def db_query(otpd, sql, params=()):
    """Run one SQL statement on the handle's database, whatever the backend, with ?
    placeholders (SQLite: sqlite3 on otpd.db_path; PostgreSQL: psql as the superuser on the
    database of otpd.db_url, the parameters substituted as literals: None, bool, int,
    bytes, printable str).  Returns the rows as tuples (SELECT / WITH / ... RETURNING; []
    for other statements), committed.  PostgreSQL gives booleans as True/False and bytea
    as bytes."""
    return db_executemany(otpd, sql, [params])


def db_executemany(otpd, sql, rows):
    """db_query for each parameter tuple of rows, in one transaction; the rows of them all."""
    if BACKEND != "postgres":
        import sqlite3
        con = sqlite3.connect(str(otpd.db_path), timeout=5)
        try:
            out = []
            for params in rows:
                out += [tuple(r) for r in con.execute(sql, tuple(params)).fetchall()]
            con.commit()
            return out
        finally:
            con.close()
    stmt = sql.strip().rstrip(";")
    returns = bool(re.match(r"(?is)\s*(select|with|values)\b", stmt)) or \
        bool(re.search(r"(?is)\breturning\b", stmt))
    parts = ["BEGIN;"]
    for params in rows:
        one = _pg_substitute(stmt, tuple(params))
        if returns:
            if re.match(r"(?is)\s*(select|with|values)\b", one):
                one = "SELECT row_to_json(q) FROM (%s) AS q" % one   # keeps the column order
            else:
                one = "WITH q AS (%s) SELECT row_to_json(q) FROM q" % one
        parts.append(one + ";")
    parts.append("COMMIT;")
    text = otpd.factory.pg.psql("\n".join(parts), db=pg_dbname(otpd))
    if not returns:
        return []
    out = []
    for line in text.splitlines():
        if not line.strip():
            continue
        obj = json.loads(line, object_pairs_hook=lambda kv: [v for _k, v in kv])
        out.append(tuple(bytes.fromhex(v[2:]) if isinstance(v, str) and re.fullmatch(r"\\x(?:[0-9a-f]{2})*", v)
                         else v for v in obj))
    return out


def db_dump(otpd):
    """The handle's whole database as text (SQLite: iterdump; PostgreSQL: pg_dump)."""
    if BACKEND != "postgres":
        import sqlite3
        con = sqlite3.connect(str(otpd.db_path), timeout=5)
        try:
            return "\n".join(con.iterdump())
        finally:
            con.close()
    c = otpd.factory.pg.cluster
    p = subprocess.run([os.path.join(c.bindir, "pg_dump"), "-h", str(c.sockdir), "-p", str(c.port),
                        "-U", pgcluster.SUPERUSER, "-d", pg_dbname(otpd)],
                       capture_output=True, env=pgcluster.clean_env(), cwd=str(c.dir), timeout=60)
    assert p.returncode == 0, "pg_dump: %s" % p.stderr.decode(errors="replace")
    return p.stdout.decode()


def db_tables(otpd):
    """The names of the handle's tables (sqlite_master / information_schema)."""
    if BACKEND != "postgres":
        return [t for (t,) in db_query(otpd, "SELECT name FROM sqlite_master WHERE type='table'")]
    return [t for (t,) in db_query(otpd, "SELECT table_name FROM information_schema.tables"
                                         " WHERE table_schema = 'public' AND table_type = 'BASE TABLE'")]


class PgTableLock:
    """OTPD_TEST_BACKEND=postgres: a psql in the background (the superuser, on the database
    of otpd.db_url) holds LOCK TABLE ... IN ACCESS EXCLUSIVE MODE on tables in an open
    transaction: every statement of otpd on them waits (lock_timeout: OTPD_DB_BUSY_TIMEOUT_MS).
    A context manager: the lock is held (pg_locks says granted) on entry, rolled back on exit."""

    def __init__(self, otpd, tables=("otp_codes",), timeout=10.0):
        self.otpd = otpd
        self.tables = list(tables)
        self.timeout = timeout
        self.proc = None

    def _held(self):
        names = ", ".join(_pg_literal(t) for t in self.tables)
        rows = db_query(self.otpd, "SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation"
                                   " WHERE l.granted AND l.mode = 'AccessExclusiveLock'"
                                   " AND l.database = (SELECT oid FROM pg_database"
                                   " WHERE datname = current_database())"
                                   " AND c.relname IN (%s)" % names)
        return rows == [(len(self.tables),)]

    def __enter__(self):
        c = self.otpd.factory.pg.cluster
        cmd = [os.path.join(c.bindir, "psql"), "-X", "-At", "-q", "-v", "ON_ERROR_STOP=1",
               "-h", str(c.sockdir), "-p", str(c.port), "-U", pgcluster.SUPERUSER,
               "-d", pg_dbname(self.otpd), "-f", "-"]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, env=pgcluster.clean_env(), cwd=str(c.dir))
        tables = ", ".join('"%s"' % t.replace('"', '""') for t in self.tables)
        self.proc.stdin.write(("BEGIN;\nLOCK TABLE %s IN ACCESS EXCLUSIVE MODE;\n" % tables).encode())
        self.proc.stdin.flush()
        try:
            wait_for(lambda: self.proc.poll() is not None or self._held(), self.timeout,
                     what="psql's lock on %s" % tables)
            assert self.proc.poll() is None, "psql exited: %s" % self.proc.stderr.read().decode(errors="replace")
        except BaseException:
            self._end()
            raise
        return self

    def _end(self):
        if self.proc is None:
            return
        try:
            self.proc.stdin.write(b"ROLLBACK;\n")
            self.proc.stdin.close()
        except OSError:
            pass
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        self.proc = None

    def __exit__(self, *exc):
        self._end()


def verify_into_a_store_error(otpd, fake, phone):
    """Log phone in, then give its user a username longer than the store ever writes (behind
    otpd's back), so that its next login is an internal error of the store.  Returns that
    verify's answer, sent outside the harness (which fails every 500 it records)."""
    otpd.login(fake, phone)
    db_query(otpd, "UPDATE users SET username = ? WHERE phone_number = ?", ("u" * 400, phone))
    assert otpd.send(phone).status_code == 200
    return requests.post(otpd.url + VERIFY, json={"phone_number": phone,
                                                  "code": get_code(fake, phone)}, timeout=30)


def wait_for(pred, timeout=5.0, interval=0.02, what="condition"):
    end = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > end:
            raise AssertionError("timed out after %.1fs waiting for %s" % (timeout, what))
        time.sleep(interval)


def get_code(fake, phone, include_refused=False, timeout=2.0):
    """The 6-digit code of the newest SMS the fake recorded for phone (any form)."""
    def latest():
        msgs = fake.messages(phone, include_refused=include_refused)
        return msgs[-1] if msgs else None
    rec = wait_for(latest, timeout, what="an SMS to %s at the fake" % mask(normalize_phone(phone) or phone))
    code = fake_kavenegar.extract_code(rec)
    assert code and re.fullmatch(r"[0-9]{6}", code), "no 6-digit code in the SMS: %r" % rec
    return code


def assert_problem(r, status, code=None, codes=None):
    """An RFC 9457 problem with the contract's members; returns the body."""
    assert r.status_code == status, "expected %d, got %d: %s" % (status, r.status_code, r.text[:600])
    ctype = r.headers.get("Content-Type", "")
    assert ctype.split(";")[0].strip().lower() == "application/problem+json", \
        "content type %r (body %s)" % (ctype, r.text[:300])
    body = r.json()
    assert isinstance(body, dict), body
    want = [code] if code else list(codes)
    assert body.get("code") in want, "code %r, expected %s: %s" % (body.get("code"), want, body)
    assert body.get("status") == status, body
    assert body.get("type") == "urn:otpd:error:%s" % body["code"], body
    assert isinstance(body.get("title"), str) and body["title"].strip(), body
    assert isinstance(body.get("detail"), str) and body["detail"].strip(), body
    return body


def assert_validation(r, field):
    body = assert_problem(r, 400, "validation_error")
    errors = body.get("errors")
    assert isinstance(errors, dict), "errors must be an object: %s" % body
    assert field in errors, "errors must name %r: %s" % (field, body)
    msgs = errors[field]
    assert isinstance(msgs, list) and msgs and all(isinstance(m, str) and m for m in msgs), body
    return body


def retry_after_of(r, body=None, lo=1, hi=None):
    """The Retry-After header (and body retry_after when given) as integers in [lo, hi]."""
    h = r.headers.get("Retry-After")
    assert h is not None and re.fullmatch(r"[0-9]+", h.strip()), "Retry-After header: %r" % h
    h = int(h)
    assert h >= lo and (hi is None or h <= hi), "Retry-After %d not in [%s, %s]" % (h, lo, hi)
    if body is not None:
        ra = body.get("retry_after")
        assert isinstance(ra, int) and not isinstance(ra, bool), "retry_after: %r" % body
        assert ra >= lo and (hi is None or ra <= hi), "retry_after %d not in [%s, %s]" % (ra, lo, hi)
        assert abs(ra - h) <= 1, "retry_after %d vs Retry-After %d" % (ra, h)
    return h


def cookies_of(r):
    """Every Set-Cookie header -> {name: {"value": v, "attrs": {lower name: value or True}}}."""
    out = {}
    for raw in r.raw.headers.getlist("Set-Cookie"):
        parts = [p.strip() for p in raw.split(";")]
        name, _, value = parts[0].partition("=")
        attrs = {}
        for p in parts[1:]:
            if not p:
                continue
            k, eq, v = p.partition("=")
            attrs[k.strip().lower()] = v.strip() if eq else True
        assert name not in out, "Set-Cookie %s twice" % name
        out[name] = {"value": value, "attrs": attrs, "raw": raw}
    return out


# ----------------------------------------------------------------------------------------
# the log rules (docs/API.md §4): every test module relies on these

_NUM_KEY_OK = re.compile(r"code|otp|token|pin", re.I)


def _scrub_numbers(obj, key=""):
    """Replace JSON numbers whose member name has nothing to do with codes by 0, so that a
    duration or a pid that happens to equal a code is not mistaken for a leak."""
    if isinstance(obj, dict):
        return {k: _scrub_numbers(v, k) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_scrub_numbers(v, key) for v in obj]
    if isinstance(obj, (int, float)) and not isinstance(obj, bool) and not _NUM_KEY_OK.search(key):
        return 0
    return obj


# The text format (OTPD_LOG_FORMAT=text) writes the console backend's code on a line of its
# own, "CODE +98912***6789 → 496570  [req …]", instead of the JSON "sms.console" line.
TEXT_CODE_LINE = re.compile(r"^CODE (\S+) → ([0-9۰-۹٠-٩]+)(?![0-9A-Za-z])")
# A text access line: "06:13:12 info  POST /api/v1/usr/otp 200 1.2ms  otp.sent  …  [req …]".
TEXT_ACCESS_LINE = re.compile(r"^[0-9]{2}:[0-9]{2}:[0-9]{2} info  \S+ \S+ [0-9]{3} \S+  ")


def console_codes(text):
    """Codes written by the console SMS backend: "event":"sms.console" JSON lines (member
    "code") and, in the text format, CODE lines."""
    out = set()
    for line in text.splitlines():
        try:
            obj = json.loads(line)
        except ValueError:
            m = TEXT_CODE_LINE.match(line)
            if m:
                out.add(m.group(2).translate(_DIGITS))
            continue
        if isinstance(obj, dict) and obj.get("event") == "sms.console" and obj.get("code") is not None:
            out.add(str(obj["code"]).translate(_DIGITS))
    return out


def is_access_line(line):
    return '"http.access"' in line or TEXT_ACCESS_LINE.match(line) is not None


def log_leaks(text, secrets_=(), codes=(), phones=(), console_ok=True, where="log"):
    """Problems with a log: a secret, a code (outside the console backend's own line) or a
    full phone number (+989…, 989…, 09…: its 10 national digits) anywhere in it.  A log may
    be JSON lines or text lines (OTPD_LOG_FORMAT=text), or both: each line is judged as what
    it is.  The console backend's own line is the JSON "sms.console" line without its "code"
    member, or the text CODE line without the code after its arrow (and nothing more)."""
    problems = []
    code_re = None
    codes = sorted({c for c in codes if c})
    if codes:
        code_re = re.compile(r"(?<![0-9A-Za-z])(%s)(?![0-9A-Za-z])" % "|".join(map(re.escape, codes)))
    cores = sorted({p[-10:] for p in phones if p})
    for n, line in enumerate(text.splitlines(), 1):
        for i, s in enumerate(secrets_):
            if s and s in line:
                problems.append("%s line %d holds secret #%d (API key / SECRET_KEY / database password)"
                                % (where, n, i))
        scan = line
        try:
            obj = json.loads(line)
        except ValueError:
            obj = None
        if isinstance(obj, dict):
            if console_ok and obj.get("event") == "sms.console":
                obj = {k: v for k, v in obj.items() if k != "code"}
            scan = json.dumps(_scrub_numbers(obj), ensure_ascii=False)
        elif obj is None and console_ok:
            m = TEXT_CODE_LINE.match(line)
            if m:
                scan = line[:m.start(2)] + line[m.end(2):]
        scan = scan.translate(_DIGITS)
        if code_re is not None:
            m = code_re.search(scan)
            if m:
                problems.append("%s line %d holds a code: %s" % (where, n, line[:300]))
        raw = line.translate(_DIGITS)
        for core in cores:
            if core in raw:
                problems.append("%s line %d holds an unmasked phone number: %s" % (where, n, line[:300]))
    return problems


def assert_log_clean(text, secrets_=(), codes=(), phones=(), console_ok=True, where="log"):
    problems = log_leaks(text, secrets_, codes, phones, console_ok, where)
    assert not problems, "\n".join(problems[:20])


def log_objects(text):
    out = []
    for line in text.splitlines():
        try:
            obj = json.loads(line)
        except ValueError:
            obj = {"_raw": line}
        out.append(obj if isinstance(obj, dict) else {"_raw": line})
    return out


# ----------------------------------------------------------------------------------------
# one otpd process

def _listen_url(listen):
    host, _, port = listen.rpartition(":")
    if host in ("0.0.0.0", ""):
        host = "127.0.0.1"
    if host in ("[::]",):
        host = "[::1]"
    return "http://%s:%s" % (host, port)


class Result:
    def __init__(self, rc, stdout, stderr, timed_out=False):
        self.rc, self.stdout, self.stderr, self.timed_out = rc, stdout, stderr, timed_out

    @property
    def output(self):
        return self.stdout + self.stderr

    def __repr__(self):
        return "Result(rc=%r, stdout=%r, stderr=%r)" % (self.rc, self.stdout[-800:], self.stderr[-1500:])


class Otpd:
    """A running build/otpd.  .url, .env, .cwd, .db_url, .db_path (SQLite), .log_text(),
    .stop(sig), .kill(), .restart(), and request helpers that remember every response for the
    final checks."""

    def __init__(self, factory, env, cwd, args=("serve",), pty=False):
        self.factory = factory
        self.pty = pty
        self._pump = None
        self.env = dict(env)
        self.cwd = Path(cwd)
        self.args = list(args)
        self.log_path = self.cwd / "otpd.stderr.log"
        self.out_path = self.cwd / "otpd.stdout.log"
        self.proc = None
        self.stopped = True
        self.returncodes = []

    # -- process ----------------------------------------------------------------------
    @property
    def url(self):
        return _listen_url(self.env.get("OTPD_LISTEN", "127.0.0.1:8000"))

    @property
    def db_url(self):
        """The DATABASE_URL otpd gets (its default, sqlite:otpd.db, when it gets none)."""
        return self.env.get("DATABASE_URL", "sqlite:otpd.db")

    @property
    def db_path(self):
        """The SQLite file of db_url; an error with any other database (a test that reaches
        into the file is sqlite_only, or needs a PostgreSQL counterpart)."""
        url = self.db_url
        if not url.startswith("sqlite:"):
            raise AssertionError("otpd.db_path: DATABASE_URL is %s://..., not SQLite (OTPD_TEST_BACKEND=%s); "
                                 "mark the test sqlite_only or reach the database with otpd_factory.pg"
                                 % (url.split(":", 1)[0], BACKEND))
        path = url.split(":", 1)[1]
        if path.startswith("//"):
            path = path[2:]
        p = Path(path)
        return p if p.is_absolute() else self.cwd / p

    def start(self, wait=True, timeout=10.0):
        if not OTPD_BIN.exists():
            pytest.fail("%s is not built (make)" % OTPD_BIN)
        if self.pty:
            self._start_on_pty()
        else:
            with open(self.log_path, "ab") as err, open(self.out_path, "ab") as out:
                self.proc = subprocess.Popen([str(OTPD_BIN)] + self.args, cwd=str(self.cwd),
                                             env=self.env, stdin=subprocess.DEVNULL,
                                             stdout=out, stderr=err)
        self.stopped = False
        if wait:
            self.wait_healthy(timeout)
        return self

    def _start_on_pty(self):
        """stderr = the slave of a new pseudo-terminal (isatty(2) is true in otpd); a thread
        copies what otpd writes there into log_path, byte for byte (raw mode: no CR added),
        until otpd has exited.  log_text() may lag behind otpd by a moment: read it with
        wait_for()."""
        master, slave = pty.openpty()
        tty.setraw(slave)
        try:
            with open(self.out_path, "ab") as out:
                self.proc = subprocess.Popen([str(OTPD_BIN)] + self.args, cwd=str(self.cwd),
                                             env=self.env, stdin=subprocess.DEVNULL,
                                             stdout=out, stderr=slave)
        except BaseException:
            os.close(master)
            raise
        finally:
            os.close(slave)

        def pump(path=self.log_path):
            try:
                with open(path, "ab", buffering=0) as f:
                    while True:
                        try:
                            data = os.read(master, 65536)
                        except OSError:      # EIO: the last slave is closed (otpd exited)
                            break
                        if not data:
                            break
                        f.write(data)
            finally:
                os.close(master)
        self._pump = threading.Thread(target=pump, daemon=True)
        self._pump.start()

    def _join_pump(self):
        if self._pump is not None:
            self._pump.join(10)
            self._pump = None

    def wait_healthy(self, timeout=10.0):
        end = time.monotonic() + timeout
        while True:
            rc = self.proc.poll()
            if rc is not None:
                self.stopped = True
                self.returncodes.append(rc)
                self._join_pump()
                raise AssertionError("otpd exited with %s before it was healthy; log:\n%s"
                                     % (rc, self.log_text()[-3000:]))
            try:
                r = requests.get(self.url + "/healthz", timeout=1)
                if r.status_code == 200:
                    return
            except requests.RequestException:
                pass
            if time.monotonic() > end:
                raise AssertionError("otpd not healthy within %.0fs; log:\n%s"
                                     % (timeout, self.log_text()[-3000:]))
            time.sleep(0.02)

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def send_signal(self, sig):
        self.proc.send_signal(sig)

    def wait(self, timeout=15.0):
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
            self.stopped = True
            self._join_pump()
            raise AssertionError("otpd did not exit within %.0fs" % timeout)
        self.stopped = True
        self.returncodes.append(rc)
        self._join_pump()
        return rc

    def stop(self, sig=signal.SIGTERM, timeout=15.0):
        """Send sig (SIGTERM by default) and return the exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.wait(timeout)

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
        return self.wait(5)

    def restart(self, env=None, wait=True, new_port=True):
        """Start again on the same directory, database and log (SIGTERM first if running)."""
        if self.running():
            self.stop()
        if env:
            for k, v in env.items():
                if v is None:
                    self.env.pop(k, None)
                else:
                    self.env[k] = str(v)
        if new_port and "OTPD_LISTEN" in self.env:
            host = self.env["OTPD_LISTEN"].rpartition(":")[0]
            self.env["OTPD_LISTEN"] = "%s:%d" % (host, free_port(host.strip("[]")))
        return self.start(wait=wait)

    def log_text(self):
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    def stdout_text(self):
        try:
            return self.out_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    def log_lines(self):
        return log_objects(self.log_text())

    # -- requests ---------------------------------------------------------------------
    def request(self, method, path, **kw):
        kw.setdefault("timeout", HTTP_TIMEOUT)
        kw.setdefault("allow_redirects", False)
        r = requests.request(method, self.url + path, **kw)
        self.factory.responses.append(r)
        return r

    def get(self, path, **kw):
        return self.request("GET", path, **kw)

    def post(self, path, **kw):
        return self.request("POST", path, **kw)

    def send(self, phone, form=False, headers=None, **kw):
        p = normalize_phone(phone)
        if p:
            self.factory.phones.add(p)
        body = {"phone_number": phone}
        if form:
            return self.post(SEND, data=body, headers=headers, **kw)
        return self.post(SEND, json=body, headers=headers, **kw)

    def verify(self, phone, code, form=False, headers=None, **kw):
        p = normalize_phone(phone)
        if p:
            self.factory.phones.add(p)
        body = {"phone_number": phone, "code": code}
        if form:
            return self.post(VERIFY, data=body, headers=headers, **kw)
        return self.post(VERIFY, json=body, headers=headers, **kw)

    def login(self, fake, phone):
        """send + code from the fake + verify; returns the verify response (asserted 200)."""
        r = self.send(phone)
        assert r.status_code == 200, r.text
        code = get_code(fake, phone)
        r = self.verify(phone, code)
        assert r.status_code == 200, r.text
        return r


# ----------------------------------------------------------------------------------------
# PostgreSQL (OTPD_TEST_BACKEND=postgres): the session's cluster and a database per run dir

# What a database holds beyond a fresh one: objects made after initdb (every per-database
# catalog's oid >= 16384: tables, sequences, types, functions, schemas, large objects...),
# settings (ALTER DATABASE / ALTER ROLE otpd ... SET), and changes to what initdb made (the
# schemas' owners and ACLs, the database's row, comments).  Equal to a fresh database's
# signature = as good as a fresh database for the next test.
PG_SIGNATURE = r"""
SELECT concat_ws(' | ',
  (SELECT sum((xpath('/row/n/text()', query_to_xml(format(
            'SELECT count(*) AS n FROM %s WHERE oid >= 16384', c.oid::regclass), false, true, '')))[1]::text::int)
     FROM pg_class c JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = 'oid'
    WHERE c.relnamespace = 'pg_catalog'::regnamespace AND c.relkind = 'r' AND NOT c.relisshared),
  (SELECT count(*) FROM pg_db_role_setting s WHERE s.setdatabase = d.oid OR s.setrole = 'otpd'::regrole),
  (SELECT md5(string_agg(format('%s %s %s', nspname, nspowner::regrole, nspacl), ',' ORDER BY nspname))
     FROM pg_namespace),
  format('%s %s %s %s %s %s', d.datdba::regrole, d.datconnlimit, d.datacl, d.datallowconn,
         d.datistemplate, d.encoding),
  (SELECT count(*) FROM pg_description),
  (SELECT count(*) FROM pg_shdescription WHERE objoid = d.oid))
FROM pg_database d WHERE d.datname = current_database();
"""

# Back to fresh: end the test's sessions, drop what otpd made (it is no superuser: all it
# makes in a database it owns), forget settings otpd gave itself; then the signature.
PG_RECYCLE = """
SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
 WHERE datname = current_database() AND pid <> pg_backend_pid();
DROP OWNED BY otpd;
ALTER ROLE otpd RESET ALL;
""" + PG_SIGNATURE


class PgDatabases:
    """Fresh databases of one cluster (tests/pgcluster.py), each used by one run directory.
    A thread keeps `ahead` of them ready.  After the test a database is recycled: DROP OWNED
    BY otpd in it, and back in the pool only if it then has the signature of a fresh
    database (PG_SIGNATURE), else dropped.  A fresh one costs CREATE DATABASE + DROP
    DATABASE, some 200-300 ms with fsync on (the drop's checkpoint writes the copies of
    template1); a recycled one some 40 ms.  .take() -> a name, .release(names),
    .psql(sql, db) (as the superuser), .cluster; .stats() for the run's summary."""

    AHEAD = 2

    def __init__(self, cluster, ahead=AHEAD, prefix="otpd_t"):
        self.cluster = cluster
        self.ahead = ahead
        self.prefix = prefix
        self.fresh_signature = None
        self._ready = []
        self._used = []
        self._n = 0
        self._error = None
        self._closed = False
        self._cv = threading.Condition()
        self.create_ms = []           # each CREATE DATABASE (the thread's view, with psql)
        self.recycle_ms = []          # each recycle, kept or not
        self.dropped = 0              # recycled databases that were not like new (dropped)
        self.wait_ms = []             # what each take() waited
        self._thread = threading.Thread(target=self._run, name="pg-databases", daemon=True)
        self._thread.start()

    def psql(self, sql, db="postgres"):
        return self.cluster.psql(sql, db=db)

    def take(self, timeout=60.0):
        t0 = time.monotonic()
        with self._cv:
            ok = self._cv.wait_for(lambda: self._ready or self._error or self._closed, timeout)
            if self._error is not None:
                raise AssertionError("PostgreSQL test database: %s" % self._error)
            if not ok or not self._ready:
                raise AssertionError("no fresh PostgreSQL database within %.0fs" % timeout)
            name = self._ready.pop(0)
            self._cv.notify_all()
        self.wait_ms.append((time.monotonic() - t0) * 1000)
        return name

    def release(self, names):
        with self._cv:
            self._used.extend(names)
            self._cv.notify_all()

    def close(self):
        with self._cv:
            self._closed = True
            self._cv.notify_all()
        self._thread.join(60)

    def _next(self):
        """The thread's next job: ("recycle", name), ("create", name) or None (closed)."""
        with self._cv:
            self._cv.wait_for(lambda: self._closed or self._used or len(self._ready) < self.ahead)
            if self._closed:
                return None
            if self._used:
                return "recycle", self._used.pop(0)
            self._n += 1
            return "create", "%s%d" % (self.prefix, self._n)

    def _create(self, name):
        self.cluster.create_database(name)
        if self.fresh_signature is None:
            self.fresh_signature = self.cluster.psql(PG_SIGNATURE, db=name).strip()
        return True

    def _recycle(self, name):
        """True: like new again; False: dropped."""
        try:
            out = self.cluster.psql(PG_RECYCLE, db=name).strip().splitlines()
            like_new = bool(out) and out[-1] == self.fresh_signature
        except pgcluster.PgError:
            like_new = False
        if not like_new:
            self.cluster.drop_database(name)
            self.dropped += 1
        return like_new

    def _run(self):
        while True:
            job = self._next()
            if job is None:
                return
            what, name = job
            t0 = time.monotonic()
            try:
                ready = self._create(name) if what == "create" else self._recycle(name)
            except Exception as e:  # reported by take()
                with self._cv:
                    self._error = e
                    self._cv.notify_all()
                return
            (self.create_ms if what == "create" else self.recycle_ms).append((time.monotonic() - t0) * 1000)
            with self._cv:
                if ready:
                    self._ready.append(name)
                self._cv.notify_all()

    def stats(self):
        def summary(xs):
            if not xs:
                return "none"
            xs = sorted(xs)
            return "n=%d, median %.0f ms, p90 %.0f ms, max %.0f ms" % (
                len(xs), statistics.median(xs), xs[int(len(xs) * 0.9)], xs[-1])
        return ["CREATE DATABASE (with psql): %s" % summary(self.create_ms),
                "recycle (DROP OWNED, signature; with psql): %s; %d not like new, dropped"
                % (summary(self.recycle_ms), self.dropped),
                "a test waited for its database: %s; in all %.1f s"
                % (summary(self.wait_ms), sum(self.wait_ms) / 1000)]


# ----------------------------------------------------------------------------------------
# the factory and its after-test checks

class OtpdFactory:
    def __init__(self, fake, tmp_path, pg=None):
        self.fake = fake
        self.pg = pg                      # PgDatabases with OTPD_TEST_BACKEND=postgres
        self.databases = {}               # run directory -> its PostgreSQL database
        self.tmp = Path(tmp_path)
        self.secret_key = new_secret()
        self.handles = []
        self.runs = []
        self.responses = []
        self.phones = set()
        self.extra_secrets = set()
        self.extra_codes = set()
        self._n = 0
        self._lock = threading.Lock()

    def new_dir(self):
        with self._lock:
            self._n += 1
            d = self.tmp / ("run%d" % self._n)
        d.mkdir(parents=True, exist_ok=True)
        return d

    def database_url(self, cwd):
        """The run directory's database: sqlite:DIR/otpd.db, or (postgres) a fresh database
        of the session's cluster, the same one each time for the same directory."""
        if self.pg is None:
            return "sqlite:%s/otpd.db" % cwd
        key = str(Path(cwd).resolve()) if cwd is not None else None
        with self._lock:
            name = self.databases.get(key)
        if name is None:
            name = self.pg.take()
            with self._lock:
                name = self.databases.setdefault(key, name)
        return self.pg.cluster.url(name)

    def release_databases(self):
        """After the test: its PostgreSQL databases go back to PgDatabases (recycled or
        dropped by its thread)."""
        with self._lock:
            names, self.databases = list(self.databases.values()), {}
        if self.pg is not None and names:
            self.pg.release(names)

    def env(self, overrides=None, cwd=None, base=True):
        """The per-test environment: a free port, the run directory's database (SQLite in
        it, or its PostgreSQL database: database_url), the fake, a random SECRET_KEY, relaxed
        per-address throttles, debug logs."""
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
        for k in ("ASAN_OPTIONS", "UBSAN_OPTIONS", "LSAN_OPTIONS", "LD_LIBRARY_PATH"):
            if k in os.environ:
                env[k] = os.environ[k]
        if base:
            env.update({
                "OTPD_LISTEN": "127.0.0.1:%d" % free_port(),
                # a test that sets its own DATABASE_URL costs no PostgreSQL database
                "DATABASE_URL": (overrides["DATABASE_URL"] if "DATABASE_URL" in (overrides or {})
                                 else self.database_url(cwd)),
                "SMS_BACKEND": "kavenegar",
                "KAVENEGAR_API_KEY": self.fake.api_key,
                "KAVENEGAR_API_URL": self.fake.url,
                "SECRET_KEY": self.secret_key,
                "OTP_THROTTLE_RATE": "10000/min",
                "OTP_VERIFY_THROTTLE_RATE": "10000/min",
                "OTPD_LOG_LEVEL": "debug",
                # the credit check (account/info at start and every interval) would add
                # calls to the fake's request log; its own tests turn it on
                "KAVENEGAR_CREDIT_INTERVAL": "0",
                # the same for the delivery poller (sms/status); its tests turn it on
                "KAVENEGAR_DELIVERY_INTERVAL": "0",
            })
        for k, v in (overrides or {}).items():
            if v is None:
                env.pop(k, None)
            else:
                env[k] = str(v)
        return env

    def start(self, env=None, *, cwd=None, wait=True, base=True, args=("serve",), pty=False):
        """Start build/otpd serve with the base env + overrides (value None removes one);
        pty=True: its stderr is a pseudo-terminal (Otpd._start_on_pty)."""
        cwd = Path(cwd) if cwd else self.new_dir()
        h = Otpd(self, self.env(env, cwd=cwd, base=base), cwd, args, pty=pty)
        self.handles.append(h)
        return h.start(wait=wait)

    def run(self, args, env=None, *, cwd=None, base=True, timeout=10.0, phones_ok=False):
        """Run build/otpd ARGS to completion (help, migrate, a refused start, the operator's
        commands).  phones_ok: its output may hold full phone numbers (the operator's
        commands print the numbers they are asked about); secrets and codes never."""
        if not OTPD_BIN.exists():
            pytest.fail("%s is not built (make)" % OTPD_BIN)
        cwd = Path(cwd) if cwd else self.new_dir()
        full_env = self.env(env, cwd=cwd, base=base)
        for k in ("SECRET_KEY", "KAVENEGAR_API_KEY"):
            if full_env.get(k):
                self.extra_secrets.add(full_env[k])
        self.extra_secrets |= url_secrets(full_env.get("DATABASE_URL"))
        try:
            p = subprocess.run([str(OTPD_BIN)] + list(args), cwd=str(cwd), env=full_env,
                               stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout)
            res = Result(p.returncode, p.stdout.decode("utf-8", "replace"),
                         p.stderr.decode("utf-8", "replace"))
        except subprocess.TimeoutExpired as e:
            res = Result(None, (e.stdout or b"").decode("utf-8", "replace"),
                         (e.stderr or b"").decode("utf-8", "replace"), timed_out=True)
        res.cwd = cwd
        res.env = full_env
        res.phones_ok = phones_ok
        self.runs.append(res)
        return res

    # -- the checks -------------------------------------------------------------------
    def all_secrets(self):
        out = {self.fake.api_key, self.secret_key} | self.extra_secrets
        for h in self.handles:
            for k in ("SECRET_KEY", "KAVENEGAR_API_KEY", "OTPD_METRICS_TOKEN"):
                if h.env.get(k):
                    out.add(h.env[k])
            out |= url_secrets(h.env.get("DATABASE_URL"))
        return {s for s in out if s}

    def all_codes(self):
        codes = set(self.fake.codes()) | self.extra_codes
        for h in self.handles:
            codes |= console_codes(h.log_text())
        for r in self.runs:
            codes |= console_codes(r.stderr)
        return codes

    def all_phones(self):
        phones = set(self.phones)
        for m in self.fake.messages(include_refused=True):
            if m.get("phone"):
                phones.add(m["phone"])
        return phones

    def finish(self):
        problems = []
        for h in self.handles:
            if h.proc is None:
                continue
            if not h.stopped:
                rc = h.proc.poll()
                if rc is not None:
                    h.stopped = True
                    h._join_pump()
                    problems.append("otpd died during the test (exit status %s); log tail:\n%s"
                                    % (rc, h.log_text()[-2000:]))
                    continue
                try:
                    rc = h.stop(signal.SIGTERM, timeout=15)
                except AssertionError as e:
                    problems.append("after the test: %s" % e)
                    continue
                if rc != 0:
                    # why: the last lines other than access lines (an abort
                    # message, e.g. a libmicrohttpd panic, is on stderr too)
                    tail = [l for l in h.log_text().splitlines() if not is_access_line(l)]
                    problems.append("otpd exited %s on SIGTERM after the test; log tail:\n%s"
                                    % (rc, "\n".join(tail[-25:])))
        sec = sorted(self.all_secrets())
        codes = self.all_codes()
        phones = self.all_phones()
        for i, h in enumerate(self.handles):
            problems += log_leaks(h.log_text(), sec, codes, phones, where="otpd#%d stderr" % i)
            problems += log_leaks(h.stdout_text(), sec, codes, phones, where="otpd#%d stdout" % i)
        for i, r in enumerate(self.runs):
            problems += log_leaks(r.stdout + "\n" + r.stderr, sec, codes,
                                  () if getattr(r, "phones_ok", False) else phones,
                                  where="run#%d output" % i)
        code_re = None
        if codes:
            code_re = re.compile(r"(?<![0-9A-Za-z])(%s)(?![0-9A-Za-z])" % "|".join(sorted(codes)))
        for r in self.responses:
            blob = "%s\n%s" % ("\n".join("%s: %s" % kv for kv in r.headers.items()), r.text)
            if r.status_code >= 500 and r.status_code not in (502, 503):
                problems.append("HTTP %d for %s %s: %s" % (r.status_code, r.request.method,
                                                         r.request.path_url, r.text[:300]))
            for s in sec:
                if s in blob:
                    problems.append("a response to %s %s holds the API key, SECRET_KEY or a database password"
                                    % (r.request.method, r.request.path_url))
            if code_re is not None and code_re.search(blob.translate(_DIGITS)):
                problems.append("a response to %s %s holds a code: %s"
                                % (r.request.method, r.request.path_url, r.text[:300]))
            problems += ["not as docs/openapi.json says: %s" % p
                         for p in openapi_check.check_response(r)]
        if problems:
            pytest.fail("after-test checks:\n" + "\n".join(problems[:30]), pytrace=False)


# ----------------------------------------------------------------------------------------
# fixtures

def pytest_configure(config):
    config.addinivalue_line("markers", "otpd_env(**vars): environment for the otpd fixture")
    config.addinivalue_line("markers", "sqlite_only: only with OTPD_TEST_BACKEND=sqlite (the default); "
                                       "deselected with postgres")
    config.addinivalue_line("markers", "postgres_only: only with OTPD_TEST_BACKEND=postgres; "
                                       "deselected with sqlite")
    if BACKEND not in BACKENDS:
        raise pytest.UsageError("OTPD_TEST_BACKEND=%s: one of %s" % (BACKEND, ", ".join(BACKENDS)))


def pytest_report_header(config):
    return "otpd backend: %s (OTPD_TEST_BACKEND)" % BACKEND


def pytest_collection_modifyitems(config, items):
    """A test marked for the other backend is deselected (a skip would fail, see below)."""
    other = "postgres_only" if BACKEND == "sqlite" else "sqlite_only"
    keep, drop = [], []
    for item in items:
        (drop if item.get_closest_marker(other) else keep).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


_PG_STATS = []


def pytest_terminal_summary(terminalreporter):
    if _PG_STATS:
        terminalreporter.write_sep("-", "PostgreSQL test databases")
        for line in _PG_STATS:
            terminalreporter.write_line(line)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """No test of this suite is ever skipped: a skip would hide a missing input (a file, a
    tool, a build).  Whatever skips it (pytest.skip, a skip mark, importorskip) fails."""
    outcome = yield
    rep = outcome.get_result()
    if rep.skipped and not hasattr(rep, "wasxfail"):
        reason = rep.longrepr[2] if isinstance(rep.longrepr, tuple) else str(rep.longrepr)
        rep.outcome = "failed"
        rep.longrepr = "skipped, which this suite counts as a failure: %s" % reason


@pytest.fixture
def fake():
    f = fake_kavenegar.FakeKavenegar(api_key=new_api_key()).start()
    yield f
    f.stop()


@pytest.fixture(scope="session")
def pg():
    """OTPD_TEST_BACKEND=postgres: one throwaway cluster for the whole run (PgDatabases);
    None with sqlite."""
    if BACKEND != "postgres":
        yield None
        return
    with pgcluster.Cluster.start() as cluster:
        dbs = PgDatabases(cluster)
        try:
            yield dbs
        finally:
            dbs.close()
            _PG_STATS[:] = dbs.stats()


@pytest.fixture
def otpd_factory(fake, tmp_path, pg):
    factory = OtpdFactory(fake, tmp_path, pg)
    yield factory
    try:
        factory.finish()
    finally:
        for h in factory.handles:
            if h.proc is not None and h.proc.poll() is None:
                h.proc.kill()
                h.proc.wait(5)
            h._join_pump()
        factory.release_databases()


@pytest.fixture
def otpd(otpd_factory, request):
    env = {}
    for m in reversed(list(request.node.iter_markers("otpd_env"))):
        env.update(m.kwargs)
    return otpd_factory.start(env)

def parallel(n, fn, timeout=60):
    """Run fn(i) for i in range(n) on n threads released together; return the results."""
    barrier = threading.Barrier(n)
    results = [None] * n
    errors = []

    def run(i):
        try:
            barrier.wait(10)
            results[i] = fn(i)
        except Exception as e:  # reported below
            errors.append(repr(e))
    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout)
    assert not errors, errors
    assert all(not t.is_alive() for t in threads), "requests still hanging"
    return results
