"""The suite's own checks, checked: a leak the after-test checks must catch is caught, and
nothing harmless is flagged."""

import json
import os
import re
import subprocess
from urllib.parse import urlsplit

import pytest

import pgcluster
from conftest import (BACKEND, PHONE, PHONE_MASKED, Otpd, PgDatabases, console_codes, is_access_line,
                      log_leaks, mask, normalize_phone, url_secrets, wait_for)


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


# -- the database of each run directory (OTPD_TEST_BACKEND) -----------------------------------

def test_database_url_password_is_a_secret():
    assert url_secrets("postgres://otpd@127.0.0.1:5432/otpd") == set()
    assert url_secrets("sqlite:/tmp/x/otpd.db") == set()
    assert url_secrets("postgres://otpd:Pw0rd%40Pw0rd@db/otpd") == {"Pw0rd%40Pw0rd", "Pw0rd@Pw0rd"}
    assert url_secrets("postgresql://db/otpd?user=otpd&password=S3cr3tPw0rd") == {"S3cr3tPw0rd"}
    assert url_secrets("mysql://user:pass@localhost/otpd") == {":pass@"}
    url = "postgres://otpd:Pw0rdPw0rd@127.0.0.1:5432/otpd"
    sec = url_secrets(url)
    assert log_leaks(line(msg="connecting to %s" % url), sec)
    assert log_leaks("DATABASE_URL: password Pw0rdPw0rd rejected", sec)
    assert log_leaks(line(msg="mysql://user:pass@localhost/otpd"), url_secrets("mysql://user:pass@localhost/otpd"))
    assert not log_leaks(line(msg="DATABASE_URL: mysql://user:(hidden)@localhost/otpd: password or passphrase"),
                         url_secrets("mysql://user:pass@localhost/otpd"))


def test_the_factory_scans_for_the_database_password(otpd_factory):
    res = otpd_factory.run(["serve"], {"DATABASE_URL": "mysql://otpd:S3cr3tPw0rd@db/otpd"}, timeout=8)
    assert res.rc == 1, res
    assert "S3cr3tPw0rd" in otpd_factory.all_secrets()


def test_each_run_directory_has_a_database_of_its_own(otpd_factory, pg):
    d1, d2 = otpd_factory.new_dir(), otpd_factory.new_dir()
    url1, url1_again, url2 = (otpd_factory.env(cwd=d)["DATABASE_URL"] for d in (d1, d1, d2))
    assert url1 == url1_again != url2
    h = Otpd(otpd_factory, otpd_factory.env(cwd=d1), d1)
    assert h.db_url == url1
    if BACKEND == "sqlite":
        assert pg is None
        assert (url1, url2) == ("sqlite:%s/otpd.db" % d1, "sqlite:%s/otpd.db" % d2)
        assert h.db_path == d1 / "otpd.db"
        return
    m1, m2 = (re.fullmatch(r"postgres://otpd@127\.0\.0\.1:%d/(otpd_t[0-9]+)" % pg.cluster.port, u)
              for u in (url1, url2))
    assert m1 and m2, (url1, url2)
    with pytest.raises(AssertionError, match="not SQLite"):
        h.db_path
    # fresh, owned by otpd, reached over TCP as otpd, and isolated from each other
    for u in (url1, url2):
        assert _client_psql(u, "SELECT current_user, pg_get_userbyid(datdba), "
                               "(SELECT count(*) FROM pg_class WHERE relnamespace = 'public'::regnamespace) "
                               "FROM pg_database WHERE datname = current_database()") == "otpd|otpd|0"
    _client_psql(url1, "CREATE TABLE only_here (x int)")
    assert _client_psql(url2, "SELECT to_regclass('only_here') IS NULL") == "t"


def test_migrate_creates_the_schema_in_the_run_directorys_database(otpd_factory, pg):
    """The base environment's DATABASE_URL reaches otpd: migrate fills that database.  (With
    postgres this fails until the PostgreSQL store exists: otpd refuses the URL.)"""
    res = otpd_factory.run(["migrate"])
    assert res.rc == 0, res
    if BACKEND == "sqlite":
        import sqlite3
        con = sqlite3.connect(str(res.cwd / "otpd.db"))
        try:
            tables = con.execute("SELECT count(*) FROM sqlite_master WHERE type = 'table'").fetchone()[0]
        finally:
            con.close()
    else:
        name = urlsplit(res.env["DATABASE_URL"]).path.lstrip("/")
        tables = int(pg.psql("SELECT count(*) FROM pg_tables WHERE tableowner = 'otpd'", db=name))
    assert tables > 0, "migrate created no tables"


def test_released_databases_come_back_like_new_or_are_dropped(pg):
    """After a test its databases are recycled (PgDatabases): what otpd made is gone, and a
    database with anything DROP OWNED BY otpd does not undo is dropped, not handed out."""
    if BACKEND == "sqlite":
        assert pg is None
        return
    dbs = PgDatabases(pg.cluster, ahead=1, prefix="harness_t")

    def exists(name):
        return pg.psql("SELECT count(*) FROM pg_database WHERE datname = '%s'" % name) == "1\n"
    try:
        used, tampered = dbs.take(), dbs.take()
        url = pg.cluster.url(used)
        _client_psql(url, "CREATE TABLE users (id bigserial PRIMARY KEY); INSERT INTO users DEFAULT VALUES; "
                          "ALTER ROLE otpd SET statement_timeout = '5s'")
        pg.psql("ALTER DATABASE %s SET work_mem = '8MB'" % tampered)
        dbs.release([used, tampered])
        wait_for(lambda: used in dbs._ready and not exists(tampered), 20,
                 what="the used database back in the pool and the tampered one dropped")
        assert dbs.dropped == 1
        assert _client_psql(url, "SELECT to_regclass('users') IS NULL, to_regclass('users_id_seq') IS NULL, "
                                 "current_setting('statement_timeout')") == "t|t|0"
        assert pg.psql("SELECT count(*) FROM pg_db_role_setting WHERE setrole = 'otpd'::regrole") == "0\n"
    finally:
        dbs.close()
        for n in pg.psql("SELECT datname FROM pg_database WHERE datname LIKE 'harness\\_t%'").split():
            pg.cluster.drop_database(n)


@pytest.mark.sqlite_only
def test_sqlite_only_runs_with_sqlite():
    assert BACKEND == "sqlite"


@pytest.mark.postgres_only
def test_postgres_only_runs_with_postgres():
    assert BACKEND == "postgres"


def _client_psql(url, sql):
    p = subprocess.run([os.path.join(pgcluster.bindir(), "psql"), "-X", "-At", "-q", "-v", "ON_ERROR_STOP=1",
                        url, "-c", sql], capture_output=True, text=True, env=pgcluster.clean_env(), timeout=30)
    assert p.returncode == 0, p.stderr
    return p.stdout.strip()
