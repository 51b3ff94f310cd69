"""The database's files (security review): otpd.db, otpd.db-wal and otpd.db-shm hold code
hashes, sessions and, without SECRET_KEY, the signing secret.  otpd creates them 0600 whatever
the umask, and refuses to start (serve and migrate) on one that other users can read or write,
with one configuration line and exit status 1, unless OTPD_ALLOW_SHARED_DB_FILE=true."""

import os
import stat

import pytest

from conftest import PHONE, log_objects

# all about SQLite's own files (modes, side files, :memory:): no such file with PostgreSQL
pytestmark = pytest.mark.sqlite_only

SIDE = ("", "-wal", "-shm")


def _mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def _refusal(name, mode):
    what = "readable" if mode & 0o044 else "writable"
    return ("otpd: DATABASE_URL: %s is %s by other users (mode %04o); chmod 600 it, "
            "or set OTPD_ALLOW_SHARED_DB_FILE=true" % (name, what, mode))


def _migrated_dir(otpd_factory):
    """A run directory with a migrated otpd.db (DATABASE_URL=sqlite:otpd.db, relative)."""
    d = otpd_factory.new_dir()
    res = otpd_factory.run(["migrate"], {"DATABASE_URL": "sqlite:otpd.db"}, cwd=d)
    assert res.rc == 0, res
    return d


def test_files_are_0600_whatever_the_umask(otpd_factory, fake):
    """Started under umask 000 without SECRET_KEY (the generated secret is in the file): after a
    login the database and both side files are 0600.  -wal and -shm are created by SQLite after
    the start, with the main file's mode; 0644 before the fix."""
    old = os.umask(0)
    try:
        otpd = otpd_factory.start({"SECRET_KEY": None})
    finally:
        os.umask(old)
    otpd.login(fake, PHONE)
    db = otpd.db_path
    for suffix in SIDE:
        f = db.with_name(db.name + suffix)
        assert f.exists(), "%s is expected while otpd runs (WAL mode)" % f.name
        assert _mode(f) == 0o600, "%s is %04o" % (f.name, _mode(f))
    # a restart after a crash (side files left behind) is not refused: they are the owner's
    otpd.kill()
    otpd.restart()
    otpd.login(fake, PHONE)


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o620, 0o602, 0o666],
                         ids=lambda m: "%04o" % m)
@pytest.mark.parametrize("cmd", ["serve", "migrate"])
def test_shared_db_file_refused(otpd_factory, cmd, mode):
    d = _migrated_dir(otpd_factory)
    os.chmod(d / "otpd.db", mode)
    res = otpd_factory.run([cmd], {"DATABASE_URL": "sqlite:otpd.db"}, cwd=d, timeout=8)
    assert not res.timed_out, res
    assert res.rc == 1, res
    assert res.output.strip() == _refusal("otpd.db", mode), res
    assert _mode(d / "otpd.db") == mode, "a refused file is left as it is"


@pytest.mark.parametrize("suffix", ["-wal", "-shm"])
def test_shared_side_file_refused(otpd_factory, fake, suffix):
    """A -wal or -shm left behind (here by a SIGKILL) that others can read is refused too,
    before SQLite reads it."""
    otpd = otpd_factory.start({"DATABASE_URL": "sqlite:otpd.db"})
    otpd.login(fake, PHONE)
    otpd.kill()
    side = otpd.cwd / ("otpd.db" + suffix)
    assert side.exists()
    os.chmod(side, 0o644)
    res = otpd_factory.run(["serve"], {"DATABASE_URL": "sqlite:otpd.db"}, cwd=otpd.cwd, timeout=8)
    assert res.rc == 1, res
    assert res.output.strip() == _refusal("otpd.db" + suffix, 0o644), res


def test_absolute_path_is_named_as_written(otpd_factory):
    d = _migrated_dir(otpd_factory)
    os.chmod(d / "otpd.db", 0o644)
    res = otpd_factory.run(["serve"], {"DATABASE_URL": "sqlite:%s/otpd.db" % d}, cwd=d, timeout=8)
    assert res.rc == 1, res
    assert res.output.strip() == _refusal("%s/otpd.db" % d, 0o644), res


def test_shared_db_file_allowed_by_the_variable(otpd_factory, fake):
    d = _migrated_dir(otpd_factory)
    os.chmod(d / "otpd.db", 0o644)
    res = otpd_factory.run(["migrate"], {"DATABASE_URL": "sqlite:otpd.db",
                                         "OTPD_ALLOW_SHARED_DB_FILE": "true"}, cwd=d)
    assert res.rc == 0, res
    otpd = otpd_factory.start({"DATABASE_URL": "sqlite:otpd.db", "OTPD_ALLOW_SHARED_DB_FILE": "true"},
                              cwd=d)
    otpd.login(fake, PHONE)
    warns = [o for o in log_objects(otpd.log_text())
             if o.get("level") == "warn" and o.get("event") == "store.open"]
    assert len(warns) == 1 and "OTPD_ALLOW_SHARED_DB_FILE" in warns[0]["msg"], warns
    assert _mode(d / "otpd.db") == 0o644, "an allowed file is left as it is"


def test_bad_allow_value_stops_start(otpd_factory):
    res = otpd_factory.run(["serve"], {"OTPD_ALLOW_SHARED_DB_FILE": "sometimes"}, timeout=8)
    assert res.rc == 1, res
    assert [ln for ln in res.output.splitlines() if "OTPD_ALLOW_SHARED_DB_FILE" in ln] == \
        ["otpd: OTPD_ALLOW_SHARED_DB_FILE: expected true or false, got 'sometimes'"], res


def test_memory_database_is_unaffected(otpd_factory, fake):
    """sqlite::memory: has no file to check: it serves (a test database; gone at exit)."""
    otpd = otpd_factory.start({"DATABASE_URL": "sqlite::memory:"})
    otpd.login(fake, PHONE)
    assert not [p.name for p in otpd.cwd.iterdir() if p.name.startswith((":memory:", "otpd.db"))]
