"""tools/deps.sh's modes and tools/run.sh, hermetically: both scripts are copied into a
temporary tree whose Makefile is a stand-in, with fake dpkg-query, apt-get and sudo first on
PATH (nothing is installed, nothing real is built).  run.sh installs only the build+run set,
keeps apt's and the compiler's output in build/run-setup.log, prints one line per step, shows
the log's last lines when a step fails, and execs build/otpd serve in the tree's root with the
environment passed through."""

import os
import shutil
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

RUN_SET = {"build-essential", "pkg-config", "libmicrohttpd-dev", "libjansson-dev",
           "libsqlite3-dev", "libpq-dev", "libcurl4-openssl-dev", "libssl-dev", "libjwt-dev",
           "sqlite3", "curl", "openssl", "ca-certificates"}
TEST_ONLY = {"clang", "libclang-rt-14-dev", "libcmocka-dev", "python3", "python3-pytest",
             "python3-requests", "python3-jwt", "python3-cryptography",
             "python3-prometheus-client", "python3-jsonschema",
             # the docs page in a browser (test_docs_page.py)
             "chromium", "chromium-driver", "python3-selenium", "iproute2", "fonts-dejavu-core",
             # the suites on PostgreSQL (tests/pgcluster.py)
             "postgresql-15",
             # make test-deploy (the package, the unit) and test_nginx.py (TLS in front)
             "dpkg-dev", "debhelper", "lintian", "systemd", "nginx-light"}
CLUSTER_SET = {"postgresql-15", "nginx-light"}

LOG = "build/run-setup.log"

# A build that talks a lot, like the real one, and leaves a build/otpd that says how it ran.
NOISY_MAKEFILE = """\
all:
\t@echo "cc -O2 -c -o build/obj/src/main.o src/main.c"
\t@echo "src/main.c:1: warning: noise on stderr" >&2
\t@mkdir -p build
\t@printf '#!/bin/sh\\necho "otpd-stand-in $$* cwd=$$(pwd) X=$$OTPD_X"\\n' > build/otpd
\t@chmod +x build/otpd
"""

FAILING_MAKEFILE = """\
all:
\t@echo "cc -O2 -c -o build/obj/src/log.o src/log.c"
\t@echo "src/log.c:12:1: error: expected ';' before '}' token" >&2
\t@exit 1
"""


def tree(tmp_path, makefile=NOISY_MAKEFILE, installed=True, apt_fails=False):
    """A copy of tools/run.sh and tools/deps.sh in tmp_path/otpd, and fake package tools."""
    root = tmp_path / "otpd"
    (root / "tools").mkdir(parents=True)
    for name in ("run.sh", "deps.sh"):
        shutil.copy2(REPO / "tools" / name, root / "tools" / name)
    (root / "Makefile").write_text(makefile)
    fake = tmp_path / "fakebin"
    fake.mkdir()
    calls = tmp_path / "apt.calls"
    scripts = {
        "dpkg-query": "#!/bin/sh\n%s\n" % ("printf 'install ok installed'" if installed else "exit 1"),
        "apt-get": ("#!/bin/sh\necho \"apt-get $*\" >> %s\n"
                    "echo \"Reading package lists... (apt noise)\"\n"
                    "case \"$*\" in *install*) %s;; esac\n"
                    % (calls, "echo 'E: Unable to locate package libjwt-dev' >&2; exit 100"
                       if apt_fails else "echo 'Setting up libjwt-dev ... (apt noise)'")),
        "sudo": "#!/bin/sh\nexec \"$@\"\n",
        # a node on PATH: deps.sh then leaves Debian's nodejs and npm out, whatever this
        # machine has (test_deps_adds_node_where_there_is_none covers the other case)
        "node": "#!/bin/sh\nexit 0\n",
    }
    for name, text in scripts.items():
        (fake / name).write_text(text)
        (fake / name).chmod(0o755)
    env = {"PATH": "%s:%s" % (fake, os.environ.get("PATH", "/usr/bin:/bin")),
           "OTPD_X": "42", "OTPD_LISTEN": "127.0.0.1:9999"}
    return root, env, calls


def run(cmd, env, cwd=None):
    p = subprocess.run(cmd, env=env, cwd=cwd, stdin=subprocess.DEVNULL, capture_output=True,
                       timeout=60)
    return p.returncode, p.stdout.decode(), p.stderr.decode()


def missing(root, env, *args):
    rc, out, err = run([str(root / "tools" / "deps.sh")] + list(args) + ["--missing"], env)
    assert rc == 0, err
    return set(out.split())


def test_deps_modes(tmp_path):
    root, env, _ = tree(tmp_path, installed=False)
    assert missing(root, env, "run") == RUN_SET
    assert missing(root, env, "--run") == RUN_SET
    assert missing(root, env) == RUN_SET | TEST_ONLY            # the default: tools/test.sh
    assert missing(root, env, "--bench") >= RUN_SET | TEST_ONLY | {"wrk", "nginx-light", "linux-perf"}
    assert missing(root, env, "cluster") == RUN_SET | CLUSTER_SET  # tools/cluster.sh
    rc, _, err = run([str(root / "tools" / "deps.sh"), "everything"], env)
    assert rc == 2 and "usage" in err


def test_deps_adds_node_where_there_is_none(tmp_path):
    """Without a node on PATH, the test set has Debian's nodejs and npm (the OpenAPI lint);
    the run set never has them."""
    root, env, _ = tree(tmp_path, installed=False)
    (tmp_path / "fakebin" / "node").unlink()
    # a PATH with no node: the fake tools plus links to what deps.sh itself runs
    tools = tmp_path / "tools"
    tools.mkdir()
    for name in ("bash", "sh", "grep", "id", "cat", "tr", "sed", "printf", "env", "dirname"):
        real = shutil.which(name)
        if real:
            os.symlink(real, tools / name)
    env["PATH"] = "%s:%s" % (tmp_path / "fakebin", tools)
    assert missing(root, env) == RUN_SET | TEST_ONLY | {"nodejs", "npm"}
    assert missing(root, env, "run") == RUN_SET


def test_run_quiet_when_installed(tmp_path):
    root, env, calls = tree(tmp_path, installed=True)
    rc, out, err = run([str(root / "tools" / "run.sh")], env, cwd=tmp_path)
    assert rc == 0, (out, err)
    assert err.splitlines() == [
        "otpd: building (log: %s)…" % LOG,
        "otpd: serving on http://127.0.0.1:9999 (Ctrl-C stops)",
    ]
    # exec'd in the tree's root (otpd.db lands there), as "serve", environment passed through
    assert out.splitlines() == ["otpd-stand-in serve cwd=%s X=42" % root]
    log = (root / LOG).read_text()
    assert "warning: noise on stderr" in log and "cc -O2" in log
    assert not calls.exists(), "nothing to install, apt must not run"


def test_run_installs_only_the_run_set(tmp_path):
    root, env, calls = tree(tmp_path, installed=False)
    rc, out, err = run([str(root / "tools" / "run.sh")], env, cwd=tmp_path)
    assert rc == 0, (out, err)
    assert err.splitlines() == [
        "otpd: installing build packages (log: %s)…" % LOG,
        "otpd: building (log: %s)…" % LOG,
        "otpd: serving on http://127.0.0.1:9999 (Ctrl-C stops)",
    ]
    installs = [ln.split()[1:] for ln in calls.read_text().splitlines() if " install " in ln]
    assert len(installs) == 1
    assert set(installs[0]) - {"install", "-y", "-qq", "--no-install-recommends"} == RUN_SET
    assert "apt noise" in (root / LOG).read_text() and "apt noise" not in out + err


def test_run_install_failure_shows_the_log(tmp_path):
    root, env, _ = tree(tmp_path, installed=False, apt_fails=True)
    rc, out, err = run([str(root / "tools" / "run.sh")], env, cwd=tmp_path)
    assert rc == 1, (out, err)
    assert "otpd: installing the packages failed" in err
    assert "E: Unable to locate package libjwt-dev" in err
    assert str(root / LOG) in err
    assert "serving" not in err and "otpd-stand-in" not in out


def test_run_build_failure_shows_the_log(tmp_path):
    root, env, _ = tree(tmp_path, makefile=FAILING_MAKEFILE, installed=True)
    rc, out, err = run([str(root / "tools" / "run.sh")], env, cwd=tmp_path)
    assert rc == 1, (out, err)
    assert "otpd: building failed" in err
    assert "error: expected ';' before '}' token" in err
    assert str(root / LOG) in err
    assert "serving" not in err
