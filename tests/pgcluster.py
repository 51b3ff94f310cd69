#!/usr/bin/env python3
"""A throwaway PostgreSQL 15 cluster for the tests: initdb into a fresh temp dir, a server
on a free 127.0.0.1 port (its unix socket in that dir), a role otpd, and nothing left
behind when it is destroyed (no process, no directory).  Standard library only.

    from pgcluster import Cluster
    with Cluster.start() as pg:          # or pg = Cluster.start() ... pg.destroy()
        pg.create_database("t1")
        url = pg.url("t1")               # postgres://otpd@127.0.0.1:PORT/t1
        pg.psql("SELECT 1", db="t1")     # as the superuser, over the unix socket
        pg.stop("immediate"); pg.start_again()   # a crash, then crash recovery

Durability is what the tests check, so fsync and synchronous_commit stay on; only the data
directory's initdb skips its fsync (--no-sync).  Authentication is trust, on the unix socket
(whose directory only its owner can enter) and on 127.0.0.1; otpd, the C store tests and a
developer connect over TCP as otpd (LOGIN CREATEDB, no password), the harness itself as the
superuser postgres over the socket.

initdb and postgres refuse to run as root: as root (CI, a fresh Debian machine) they run as
the postgres system user (runuser -u postgres --), which owns the data and socket
directories; the temp dir above them is 0711 so that it can reach them.  Otherwise they run
as the current user.

A cluster is destroyed by .destroy(), at the end of a `with`, by an atexit hook (an
interrupted pytest run) and, should this process be killed outright, by a small reaper
process that waits for this one to go (the end of a pipe) and then stops the server and
removes the directory.

Command line
  python3 tests/pgcluster.py serve [--db NAME] [--set NAME=VALUE ...]
        start one (with these server settings over SETTINGS), create database NAME (otpd),
        print DATABASE_URL=... and PGCLUSTER_DIR=...,
        stay in the foreground until SIGTERM or SIGINT, then destroy it
  python3 tests/pgcluster.py exec [--db NAME] -- CMD [ARGS...]
        start one, create database NAME (otpd_test), run CMD with DATABASE_URL and
        OTPD_TEST_DATABASE_URL set to its URL, destroy the cluster, exit with CMD's status
"""

import argparse
import atexit
import glob
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PG_MAJOR = "15"
ROLE = "otpd"
SUPERUSER = "postgres"
SYSTEM_USER = "postgres"          # who runs initdb and the server when we are root
HOST = "127.0.0.1"
START_TIMEOUT = 60                # seconds pg_ctl waits for a start or a stop

SETTINGS = {
    "listen_addresses": "'127.0.0.1'",
    "max_connections": "200",
    "shared_buffers": "16MB",
    # what the tests are about: a commit is on disk when it is acknowledged
    "fsync": "on",
    "synchronous_commit": "on",
    "full_page_writes": "on",
    "unix_socket_permissions": "0700",
    "log_line_prefix": "'%m [%p] %q%u@%d '",
    "log_min_messages": "warning",
}

_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}\Z")


class PgError(RuntimeError):
    """A command of the cluster failed; the message has its output."""


def bindir():
    """The PostgreSQL 15 server binaries: $PG_BINDIR, Debian's /usr/lib/postgresql/15/bin,
    or else the newest /usr/lib/postgresql/*/bin."""
    cands = [os.environ.get("PG_BINDIR"), "/usr/lib/postgresql/%s/bin" % PG_MAJOR]
    cands += sorted(glob.glob("/usr/lib/postgresql/*/bin"),
                    key=lambda p: [int(x) for x in re.findall(r"[0-9]+", p)], reverse=True)
    for d in cands:
        if d and os.path.exists(os.path.join(d, "initdb")):
            return d
    raise PgError("no PostgreSQL server binaries (initdb) in $PG_BINDIR or /usr/lib/postgresql/*/bin: "
                  "install postgresql-%s" % PG_MAJOR)


def free_port(host=HOST):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def clean_env(extra=None):
    """os.environ without the libpq variables (PGHOST, PGPASSWORD, PGOPTIONS...), which
    would otherwise steer the harness's own psql and pg_ctl; plus extra."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env.update(extra or {})
    return env


def quote_ident(name):
    return '"%s"' % name.replace('"', '""')


def _check_name(name):
    if not _NAME.match(name):
        raise ValueError("database name %r: lower-case letters, digits and _ only" % name)
    return name


def _pid_alive(pid):
    """pid runs (a zombie does not: the postmaster's parent is init, which in a container may
    be slow to reap it)."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rpartition(")")[2].split()[0] != "Z"
    except (OSError, IndexError):
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return not os.path.isdir("/proc") or os.path.exists("/proc/%d" % pid)


def _reachable_tmp():
    """A temp root the postgres user can traverse when we are root (TMPDIR may be somewhere
    under /root): tempfile's choice if every ancestor lets others through, else /tmp."""
    base = Path(tempfile.gettempdir()).resolve()
    for p in [base] + list(base.parents):
        if not os.stat(p).st_mode & 0o001:
            return "/tmp"
    return str(base)


class Cluster:
    """One throwaway cluster.  Cluster.start() makes and starts it; then .port, .host,
    .dir, .url(db), .create_database(), .drop_database(), .psql(), .stop(mode),
    .start_again(), .destroy()."""

    def __init__(self, settings=None, reaper=True):
        self.bindir = bindir()
        self.as_root = os.geteuid() == 0
        self.host = HOST
        self.port = None
        self.settings = dict(SETTINGS, **(settings or {}))
        self.dir = None
        self.data = None
        self.sockdir = None
        self.logfile = None
        self.running = False
        self._reaper = None
        self._want_reaper = reaper
        self._atexit = False

    # -- life cycle -------------------------------------------------------------------
    @classmethod
    def start(cls, settings=None, reaper=True):
        """initdb + start + role otpd; the cluster is destroyed again if any step fails."""
        c = cls(settings, reaper)
        try:
            c._init()
            for attempt in range(3):         # the free port may be taken before we bind it
                c._set_port(free_port())
                try:
                    c.start_again()
                    break
                except PgError:
                    if attempt == 2 or not re.search(r"could not bind|already in use", c.log_text()):
                        raise
            c.psql("CREATE ROLE %s LOGIN CREATEDB" % ROLE)
        except BaseException:
            c.destroy()
            raise
        return c

    def _init(self):
        if self.as_root:
            try:
                import pwd
                pw = pwd.getpwnam(SYSTEM_USER)
            except KeyError:
                raise PgError("running as root, and there is no %s system user to run initdb and "
                              "the server as (postgresql-common creates it)" % SYSTEM_USER)
            if not shutil.which("runuser"):
                raise PgError("running as root, and there is no runuser (util-linux) to drop to %s"
                              % SYSTEM_USER)
        self.dir = Path(tempfile.mkdtemp(prefix="otpd-pg-", dir=_reachable_tmp() if self.as_root else None))
        self._atexit = True
        atexit.register(self.destroy)
        if self._want_reaper:
            self._start_reaper()
        self.data = self.dir / "data"
        self.sockdir = self.dir / "sock"
        self.logfile = self.dir / "postgres.log"
        for d in (self.data, self.sockdir):
            d.mkdir(mode=0o700)
        self.logfile.touch(mode=0o600)
        if self.as_root:
            os.chmod(self.dir, 0o711)
            for p in (self.data, self.sockdir, self.logfile):
                os.chown(p, pw.pw_uid, pw.pw_gid)
        self._server_cmd(["initdb", "-D", str(self.data), "-U", SUPERUSER, "-E", "UTF8",
                          "--locale=C.UTF-8", "-A", "trust", "--auth-local=trust", "--no-sync",
                          "--no-instructions"], "initdb")
        # trust on the socket and on 127.0.0.1 only (initdb's file also has ::1 and replication)
        (self.data / "pg_hba.conf").write_text(
            "# pgcluster.py: a throwaway test cluster\n"
            "local all all trust\n"
            "host  all all 127.0.0.1/32 trust\n")
        self.settings["unix_socket_directories"] = "'%s'" % self.sockdir

    def _set_port(self, port):
        """Written into postgresql.conf, so start_again() comes back on the same port."""
        self.port = port
        self.settings["port"] = str(port)
        lines = ["", "# pgcluster.py"] + ["%s = %s" % kv for kv in sorted(self.settings.items())]
        conf = self.data / "postgresql.conf"
        text = conf.read_text()
        mark = text.find("\n# pgcluster.py\n")
        if mark >= 0:
            text = text[:mark]
        conf.write_text(text + "\n".join(lines) + "\n")

    def start_again(self):
        """Start the server on the same data directory and port (after stop(); after
        stop('immediate') it runs crash recovery first).  Returns self."""
        self._server_cmd([os.path.join(self.bindir, "pg_ctl"), "start", "-w", "-t", str(START_TIMEOUT),
                          "-D", str(self.data), "-l", str(self.logfile)], "pg_ctl start")
        self.running = True
        return self

    def stop(self, mode="fast"):
        """pg_ctl stop -m fast|smart|immediate, waiting until the postmaster is gone.
        immediate: a crash as far as the data is concerned (no shutdown checkpoint)."""
        if mode not in ("fast", "smart", "immediate"):
            raise ValueError("stop mode %r" % mode)
        pid = self.postmaster_pid()
        self._server_cmd([os.path.join(self.bindir, "pg_ctl"), "stop", "-w", "-t", str(START_TIMEOUT),
                          "-m", mode, "-D", str(self.data)], "pg_ctl stop")
        self.running = False
        if pid is not None:
            end = time.monotonic() + 10
            while _pid_alive(pid) and time.monotonic() < end:
                time.sleep(0.02)
        return self

    def destroy(self):
        """Stop the server (fast, else immediate, else SIGKILL) if it runs and remove the temp
        dir.  Safe to call more than once."""
        if self.dir is None:
            return
        try:
            pid = self.postmaster_pid()
            if pid is not None and _pid_alive(pid):
                for mode in ("fast", "immediate"):
                    try:
                        self.stop(mode)
                        break
                    except PgError:
                        pass
                if _pid_alive(pid):
                    os.kill(pid, signal.SIGKILL)
            self.running = False
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None
            if self._atexit:
                atexit.unregister(self.destroy)
                self._atexit = False
            self._stop_reaper()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.destroy()
        return False

    # -- use --------------------------------------------------------------------------
    def url(self, dbname="postgres", user=ROLE):
        return "postgres://%s@%s:%d/%s" % (user, self.host, self.port, dbname)

    def create_database(self, name, template=None, strategy=None):
        """CREATE DATABASE name OWNER otpd [TEMPLATE template] [STRATEGY strategy]; returns
        name."""
        sql = "CREATE DATABASE %s OWNER %s" % (quote_ident(_check_name(name)), ROLE)
        if template:
            sql += " TEMPLATE %s" % quote_ident(_check_name(template))
        if strategy:
            sql += " STRATEGY %s" % {"wal_log": "WAL_LOG", "file_copy": "FILE_COPY"}[strategy.lower()]
        self.psql(sql)
        return name

    def drop_database(self, name):
        """DROP DATABASE IF EXISTS, ending its sessions first (WITH (FORCE))."""
        self.psql("DROP DATABASE IF EXISTS %s WITH (FORCE)" % quote_ident(_check_name(name)))

    def psql(self, sql, db="postgres", user=SUPERUSER, timeout=60):
        """Run sql (one or more statements, each committed on its own) with psql -X -At
        -v ON_ERROR_STOP=1 over the unix socket; returns its stdout.  PgError on failure."""
        cmd = [os.path.join(self.bindir, "psql"), "-X", "-At", "-q", "-v", "ON_ERROR_STOP=1",
               "-h", str(self.sockdir), "-p", str(self.port), "-U", user, "-d", db, "-f", "-"]
        p = subprocess.run(cmd, input=sql.encode(), capture_output=True, env=clean_env(),
                           cwd=str(self.dir), timeout=timeout)
        if p.returncode != 0:
            raise PgError("psql (%s on %s) failed with %d: %s\nSQL: %s"
                          % (user, db, p.returncode, p.stderr.decode(errors="replace").strip(), sql[:500]))
        return p.stdout.decode()

    def postmaster_pid(self):
        try:
            first = (self.data / "postmaster.pid").read_text().split("\n", 1)[0]
            return int(first)
        except (OSError, ValueError, TypeError):
            return None

    def log_text(self):
        try:
            return self.logfile.read_text(errors="replace")
        except (OSError, TypeError, AttributeError):
            return ""

    # -- internals --------------------------------------------------------------------
    def _server_cmd(self, argv, what):
        """Run initdb / pg_ctl as the owner of the data directory (postgres when we are
        root), from the temp dir (the caller's cwd may be closed to that user)."""
        if not os.path.isabs(argv[0]):
            argv = [os.path.join(self.bindir, argv[0])] + argv[1:]
        if self.as_root:
            argv = ["runuser", "-u", SYSTEM_USER, "--"] + argv
        p = subprocess.run(argv, capture_output=True, env=clean_env({"LC_ALL": "C.UTF-8"}),
                           cwd=str(self.dir), stdin=subprocess.DEVNULL, timeout=START_TIMEOUT + 30)
        if p.returncode != 0:
            raise PgError("%s failed with %d: %s\n%s\nserver log tail:\n%s"
                          % (what, p.returncode, p.stdout.decode(errors="replace")[-2000:],
                             p.stderr.decode(errors="replace")[-2000:], self.log_text()[-3000:]))
        return p

    def _start_reaper(self):
        """A process of its own session (a Ctrl-C at the terminal does not reach it) that
        reads a pipe from us; at its end (we exited, however) it stops the server and
        removes the dir, unless destroy() did already."""
        self._reaper = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "_reap", str(self.dir)],
            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True, env=clean_env(), cwd="/")

    def _stop_reaper(self):
        r, self._reaper = self._reaper, None
        if r is not None:
            try:
                r.stdin.close()
                r.wait(10)
            except (OSError, subprocess.TimeoutExpired):
                r.kill()
                r.wait(5)


def _reap(dirname):
    """The reaper (see Cluster._start_reaper): block until the pipe closes, then clean up
    whatever destroy() did not."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        sys.stdin.buffer.read()
    except OSError:
        pass
    d = Path(dirname)
    if not d.exists():
        return 0
    c = Cluster.__new__(Cluster)
    Cluster.__init__(c, reaper=False)
    c.dir, c.data, c.sockdir, c.logfile = d, d / "data", d / "sock", d / "postgres.log"
    c.destroy()
    return 0


# ----------------------------------------------------------------------------------------
# command line

def _serve(args):
    stop = []

    def on_signal(sig, _frame):
        stop.append(sig)
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    settings = {}
    for kv in args.set or []:
        name, sep, value = kv.partition("=")
        if not sep or not re.match(r"[a-z_][a-z0-9_.]*\Z", name):
            raise PgError("--set wants NAME=VALUE, not %r" % kv)
        settings[name] = value
    with Cluster.start(settings) as pg:
        pg.create_database(args.db)
        print("DATABASE_URL=%s" % pg.url(args.db))
        print("PGCLUSTER_DIR=%s" % pg.dir)
        print("# superuser: psql -h %s -p %d -U %s   (stop with Ctrl-C or SIGTERM)"
              % (pg.sockdir, pg.port, SUPERUSER))
        sys.stdout.flush()
        while not stop:
            time.sleep(0.2)
    return 0


def _exec(args):
    cmd = list(args.cmd)
    if cmd and cmd[0] == "--":
        cmd = cmd[1:]
    if not cmd:
        print("pgcluster.py exec: no command (exec -- CMD ARGS...)", file=sys.stderr)
        return 2
    with Cluster.start() as pg:
        pg.create_database(args.db)
        url = pg.url(args.db)
        env = dict(os.environ, DATABASE_URL=url, OTPD_TEST_DATABASE_URL=url,
                   PGCLUSTER_DIR=str(pg.dir))
        # a Ctrl-C reaches the command (same process group); we wait for it and clean up
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            child = subprocess.Popen(cmd, env=env, restore_signals=True,
                                     preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        except OSError as e:
            print("pgcluster.py exec: %s: %s" % (cmd[0], e), file=sys.stderr)
            return 127
        signal.signal(signal.SIGTERM, lambda sig, _f: child.send_signal(sig))
        rc = child.wait()
    return 128 - rc if rc < 0 else rc


def main(argv=None):
    ap = argparse.ArgumentParser(prog="pgcluster.py", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="what", required=True)
    s = sub.add_parser("serve", help="start a cluster and keep it until SIGTERM/SIGINT")
    s.add_argument("--db", default="otpd", type=_check_name, help="database to create (otpd)")
    s.add_argument("--set", action="append", metavar="NAME=VALUE",
                   help="a server setting over the defaults (e.g. shared_buffers=256MB); repeatable")
    e = sub.add_parser("exec", help="run a command against a fresh cluster and database")
    e.add_argument("--db", default="otpd_test", type=_check_name, help="database to create (otpd_test)")
    e.add_argument("cmd", nargs=argparse.REMAINDER, help="-- CMD ARGS...")
    r = sub.add_parser("_reap")
    r.add_argument("dir")
    args = ap.parse_args(argv)
    try:
        if args.what == "serve":
            return _serve(args)
        if args.what == "exec":
            return _exec(args)
        return _reap(args.dir)
    except PgError as err:
        print("pgcluster.py: %s" % err, file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
