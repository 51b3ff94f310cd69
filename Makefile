# otpd — one Makefile, pkg-config, -> build/otpd
#   make                 build/otpd (gcc; CC=clang works too); needs only the build
#                        packages (tools/deps.sh run): no clang, no cmocka, no python
#   make test            build, unit + store tests (cmocka), black-box tests (pytest)
#   make SAN=1 test      the same under AddressSanitizer + UBSan (into build-asan/)
#   make unit            only the cmocka tests
#   make blackbox        only the pytest suite
#   make WERROR=1 ...    warnings are errors (tools/test.sh, CI)
#   make lint-openapi    lint docs/openapi.json (Spectral, pinned by package-lock.json)
#   make check-vendored  third_party/swagger-ui-dist/ = the npm package of package-lock.json
#   make install         the binary, its man page, the systemd units and the example
#                        configuration, under PREFIX (/usr/local) and DESTDIR (docs/DEPLOYMENT.md)
#   make deb             the Debian package, built in a temporary copy, into build/deb/
#   make test-deploy     the package (lintian, the packaged binary, the unit's checks)

CC      ?= cc
PKGS    := libmicrohttpd jansson sqlite3 libpq libcurl libcrypto libjwt
CSTD    := -std=c17 -D_POSIX_C_SOURCE=200809L -D_DEFAULT_SOURCE
WARN    := -Wall -Wextra -Wshadow -Wstrict-prototypes \
           -Wmissing-prototypes -Wformat=2 -Wno-format-nonliteral
# Warnings are errors in CI and development (tools/test.sh sets WERROR=1), not
# for a user whose newer compiler knows a warning ours does not.
ifeq ($(WERROR),1)
WARN    += -Werror
endif
OPT     ?= -O2 -g
CFLAGS  += $(CSTD) $(WARN) $(OPT) -pthread $(shell pkg-config --cflags $(PKGS))
LDLIBS  += $(shell pkg-config --libs $(PKGS)) -pthread

ifeq ($(SAN),1)
BUILD   ?= build-asan
CFLAGS  += -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer
LDFLAGS += -fsanitize=address,undefined
else
BUILD   ?= build
endif

SRC      := $(shell find src -name '*.c' | sort)
# Files embedded in the binary: generated C sources in the build folder.
# The docs page (GET /api/v1/docs and /api/v1/docs/{file}, src/http/h_docs.c):
# Swagger UI's files as npm publishes them (third_party/, see its README.md),
# the page's own (src/http/docs/), and the page, made from its template.
DOCS_VENDOR := $(addprefix third_party/swagger-ui-dist/,swagger-ui-bundle.js swagger-ui.css \
               LICENSE NOTICE swagger-ui-bundle.js.LICENSE.txt)
DOCS_OWN    := src/http/docs/otpd-docs.js src/http/docs/otpd-docs.css
DOCS_FILES  := $(DOCS_VENDOR) $(DOCS_OWN)
GENSRC   := $(BUILD)/gen/openapi_json.c $(BUILD)/gen/docs/index.html.c \
            $(patsubst %,$(BUILD)/gen/docs/%.c,$(notdir $(DOCS_FILES)))
GENOBJ   := $(GENSRC:$(BUILD)/gen/%.c=$(BUILD)/obj/gen/%.o)
OBJ      := $(SRC:%.c=$(BUILD)/obj/%.o) $(GENOBJ)
LIBOBJ   := $(filter-out $(BUILD)/obj/src/main.o,$(OBJ))
TESTSRC  := $(sort $(wildcard tests/unit/test_*.c tests/store/test_*.c tests/auth/test_*.c))
TESTBIN  := $(TESTSRC:tests/%.c=$(BUILD)/tests/%)
PYTHON   ?= /usr/bin/python3

.PHONY: test-pg test-pgcluster store-pg cluster-pg blackbox-pg all test unit blackbox clean boundaries selfcontained lint-openapi check-vendored FORCE
all: $(BUILD)/otpd

# The version: VERSION, plus the commit when built from a git checkout (or
# OTPD_BUILD_VERSION: make deb builds in a copy without .git and passes it).  The
# stamp file changes only when the version does, so only version.o rebuilds.
VERSION_STR := $(or $(OTPD_BUILD_VERSION),$(shell v=$$(cat VERSION 2>/dev/null || echo 0); \
                 g=$$(git describe --always --dirty --abbrev=7 2>/dev/null); \
                 echo "$$v$${g:++g$$g}"))
$(BUILD)/version.stamp: FORCE
	@mkdir -p $(dir $@)
	@echo '$(VERSION_STR)' | cmp -s - $@ || echo '$(VERSION_STR)' > $@
$(BUILD)/obj/src/version.o: $(BUILD)/version.stamp
$(BUILD)/obj/src/version.o: CFLAGS += -DOTPD_VERSION='"$(VERSION_STR)"'

$(BUILD)/otpd: $(OBJ)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(CFLAGS) -MMD -MP -c -o $@ $<

# docs/openapi.json, served by GET /api/v1/schema (src/http/h_docs.c).
$(BUILD)/gen/openapi_json.c: docs/openapi.json tools/embed.sh
	@mkdir -p $(dir $@)
	sh tools/embed.sh otpd_openapi_json docs/openapi.json > $@.tmp && mv $@.tmp $@

# Kept (made by pattern rules, they would be deleted as intermediate files).
.SECONDARY: $(GENSRC) $(BUILD)/gen/docs/index.html
# Each file of the docs page -> otpd_docs_NAME (NAME: its name, . and - as _).
docs_cname = otpd_docs_$(subst -,_,$(subst .,_,$(1)))
$(BUILD)/gen/docs/%.c: third_party/swagger-ui-dist/% tools/embed.sh
	@mkdir -p $(dir $@)
	sh tools/embed.sh $(call docs_cname,$*) $< > $@.tmp && mv $@.tmp $@
$(BUILD)/gen/docs/%.c: src/http/docs/% tools/embed.sh
	@mkdir -p $(dir $@)
	sh tools/embed.sh $(call docs_cname,$*) $< > $@.tmp && mv $@.tmp $@
# The page links each file with its version tag (tools/docs_page.sh).
$(BUILD)/gen/docs/index.html: src/http/docs/index.html tools/docs_page.sh $(DOCS_FILES) \
                              third_party/swagger-ui-dist/package.json
	@mkdir -p $(dir $@)
	sh tools/docs_page.sh $< third_party/swagger-ui-dist/package.json $(DOCS_FILES) > $@.tmp && mv $@.tmp $@
$(BUILD)/gen/docs/index.html.c: $(BUILD)/gen/docs/index.html tools/embed.sh
	sh tools/embed.sh $(call docs_cname,index.html) $< > $@.tmp && mv $@.tmp $@

$(BUILD)/obj/gen/%.o: $(BUILD)/gen/%.c
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(CFLAGS) -MMD -MP -c -o $@ $<

# cmocka is asked for here, when a test is built, never when the Makefile is read.
$(BUILD)/tests/%: tests/%.c $(LIBOBJ)
	@mkdir -p $(dir $@)
	@pkg-config --exists cmocka || { echo "the unit tests need cmocka (libcmocka-dev): tools/deps.sh installs it" >&2; exit 1; }
	$(CC) $(CFLAGS) -Isrc $(LDFLAGS) -o $@ $< $(LIBOBJ) $(LDLIBS) $(shell pkg-config --libs cmocka)

# The store suites share their fixture, a header (each test binary is one .c).
$(filter $(BUILD)/tests/store/%,$(TESTBIN)): tests/store/store_fixture.h

unit: $(TESTBIN)
	@set -e; for t in $(TESTBIN); do echo "== $$t"; $$t; done

blackbox: $(BUILD)/otpd
	OTPD_BIN=$(abspath $(BUILD)/otpd) $(PYTHON) -m pytest -q tests/blackbox

test: all selfcontained boundaries lint-openapi check-vendored unit blackbox test-pg \
      $(if $(filter 1,$(SAN)),,test-deploy)

# On PostgreSQL 15: each starts a throwaway server of its own (tests/pgcluster.py;
# as root the server runs as the postgres user), on a free port, and leaves
# nothing behind.  test-pg: the harness, the store suite, and the whole
# black-box suite on PostgreSQL (with the tests of several nodes and of faults,
# which only it runs); cluster-pg: those two alone.
test-pg: test-pgcluster store-pg blackbox-pg

cluster-pg: $(BUILD)/otpd
	OTPD_TEST_BACKEND=postgres OTPD_BIN=$(abspath $(BUILD)/otpd) $(PYTHON) -m pytest -q \
		tests/blackbox/test_cluster.py tests/blackbox/test_pg_faults.py

test-pgcluster:
	$(PYTHON) -m pytest -q tests/test_pgcluster.py

store-pg: $(BUILD)/tests/store/test_store
	$(PYTHON) tests/pgcluster.py exec -- $(BUILD)/tests/store/test_store

blackbox-pg: $(BUILD)/otpd
	OTPD_TEST_BACKEND=postgres OTPD_BIN=$(abspath $(BUILD)/otpd) $(PYTHON) -m pytest -q tests/blackbox

# The OpenAPI document must lint clean (errors and warnings; the rules and the
# ones turned off, with why, are in .spectral.yaml).  The linter is the exact
# version of package-lock.json, installed by `npm ci` into node_modules/ (no
# install scripts: it needs none); linting itself needs no network.
NPM     ?= npm
node_modules/.package-lock.json: package.json package-lock.json
	$(NPM) ci --ignore-scripts --no-audit --no-fund
	@touch $@

lint-openapi: node_modules/.package-lock.json
	node_modules/.bin/spectral lint --ruleset .spectral.yaml --fail-severity=warn docs/openapi.json

# The docs viewer's files are kept in third_party/ (a plain `make` needs no node
# nor network); they must be those of the npm package that package-lock.json pins.
check-vendored: node_modules/.package-lock.json
	sh tools/check_vendored.sh

# A clone has nothing beside it: no tracked file may point outside the
# repository (a folder that sits beside one checkout is missing from the next).
selfcontained:
	@! git grep -nI -e '\.\./shared' -- . || (echo "the tracked files above point at a folder beside the checkout, which a clone does not have"; false)

# Module boundaries (STYLE.md): only the backends include their drivers.
boundaries:
	@! grep -rl 'sqlite3.h' src | grep -v '^src/store/sqlite' || (echo "sqlite3.h outside store/sqlite*"; false)
	@! grep -rl 'libpq-fe.h' src | grep -v '^src/store/postgres' || (echo "libpq-fe.h outside store/postgres*"; false)
	@! grep -rl 'curl/curl.h' src | grep -v '^src/sms/' || (echo "curl.h outside sms/"; false)
	@! grep -rlE 'include .*(sqlite|store/sqlite|sms/kavenegar)' src/http || (echo "http/ includes a backend"; false)
	@! grep -rlE '\btime\(|gettimeofday|clock_gettime' src/otp || (echo "otp/ reads the clock"; false)
	@! grep -rnE '\bmemset\(.*(secret|cfg|config)' src || (echo "a secret is wiped with memset, which the compiler may remove: use otp_wipe / OPENSSL_cleanse"; false)

# Installation (docs/DEPLOYMENT.md): `make install PREFIX=/usr DESTDIR=/tmp/stage`.
# The web assets (the docs page, the OpenAPI document) are built into the binary.
# The configuration file is installed only where there is none (never overwritten),
# mode 0600: it holds SECRET_KEY and the provider's key.
PREFIX         ?= /usr/local
SBINDIR        ?= $(PREFIX)/sbin
LIBEXECDIR     ?= $(PREFIX)/lib/otpd
MANDIR         ?= $(PREFIX)/share/man
DOCDIR         ?= $(PREFIX)/share/doc/otpd
SYSCONFDIR     ?= /etc
SYSTEMDUNITDIR ?= $(PREFIX)/lib/systemd/system
INSTALL        ?= install
UNIT_SUBST      = sed -e 's|@SBINDIR@|$(SBINDIR)|g' -e 's|@LIBEXECDIR@|$(LIBEXECDIR)|g' \
                      -e 's|@SYSCONFDIR@|$(SYSCONFDIR)|g'
UNITS          := $(BUILD)/deploy/otpd.service $(BUILD)/deploy/otpd-backup.service

$(BUILD)/deploy/%.service: deploy/%.service.in Makefile
	@mkdir -p $(dir $@)
	$(UNIT_SUBST) $< > $@.tmp && mv $@.tmp $@

.PHONY: install uninstall units deb test-deploy
units: $(UNITS)

install: $(BUILD)/otpd $(UNITS)
	$(INSTALL) -d $(DESTDIR)$(SBINDIR) $(DESTDIR)$(LIBEXECDIR) $(DESTDIR)$(MANDIR)/man8 \
	              $(DESTDIR)$(SYSTEMDUNITDIR) $(DESTDIR)$(DOCDIR)
	$(INSTALL) -m 0755 $(BUILD)/otpd $(DESTDIR)$(SBINDIR)/otpd
	$(INSTALL) -m 0755 deploy/otpd-backup.sh $(DESTDIR)$(LIBEXECDIR)/otpd-backup
	$(INSTALL) -m 0644 deploy/otpd.8 $(DESTDIR)$(MANDIR)/man8/otpd.8
	$(INSTALL) -m 0644 $(UNITS) deploy/otpd-backup.timer $(DESTDIR)$(SYSTEMDUNITDIR)/
	$(INSTALL) -m 0644 deploy/otpd.env $(DESTDIR)$(DOCDIR)/otpd.env.example
	$(INSTALL) -m 0644 docs/DEPLOYMENT.md $(DESTDIR)$(DOCDIR)/DEPLOYMENT.md
	$(INSTALL) -d -m 0755 $(DESTDIR)$(SYSCONFDIR)/otpd
	@if [ -e $(DESTDIR)$(SYSCONFDIR)/otpd/otpd.env ]; then \
	  echo "keeping $(DESTDIR)$(SYSCONFDIR)/otpd/otpd.env (the new example: $(DESTDIR)$(DOCDIR)/otpd.env.example)"; \
	else \
	  echo "$(INSTALL) -m 0600 deploy/otpd.env $(DESTDIR)$(SYSCONFDIR)/otpd/otpd.env"; \
	  $(INSTALL) -m 0600 deploy/otpd.env $(DESTDIR)$(SYSCONFDIR)/otpd/otpd.env; \
	fi

# The Debian package: debian/ built by dpkg-buildpackage in a copy of the tracked files
# (with any uncommitted changes) outside the repository, since it writes beside the
# source folder; the .deb and its .buildinfo/.changes land in build/deb/.
DEB_OUT ?= build/deb
deb:
	@command -v dpkg-buildpackage >/dev/null && command -v dh >/dev/null || \
	  { echo "make deb needs dpkg-dev and debhelper (tools/deps.sh installs them)" >&2; exit 1; }
	@set -e; tmp=$$(mktemp -d /tmp/otpd-deb.XXXXXX); trap 'rm -rf "$$tmp"' EXIT; \
	  mkdir "$$tmp/otpd-$$(cat VERSION)"; src="$$tmp/otpd-$$(cat VERSION)"; \
	  git ls-files -z --cached --others --exclude-standard | \
	    xargs -0 sh -c 'for f; do [ -e "$$f" ] && printf "%s\0" "$$f"; done' sh | \
	    tar --null -T - -cf - | tar -xf - -C "$$src"; \
	  echo "make deb: building in $$src ($(VERSION_STR))"; \
	  (cd "$$src" && OTPD_BUILD_VERSION='$(VERSION_STR)' dpkg-buildpackage -b -us -uc -j2 \
	     >"$$tmp/build.log" 2>&1) || { tail -n 40 "$$tmp/build.log" >&2; exit 1; }; \
	  mkdir -p $(DEB_OUT); rm -f $(DEB_OUT)/otpd*_*; \
	  cp "$$tmp"/otpd*_*.deb "$$tmp"/otpd_*.buildinfo "$$tmp"/otpd_*.changes $(DEB_OUT)/; \
	  cp "$$tmp/build.log" $(DEB_OUT)/build.log; \
	  ls $(DEB_OUT)/otpd_*.deb

# The package's tests (tests/deploy/): lintian, its contents, the packaged binary, the
# unit (systemd-analyze; started for real only where systemd is PID 1).  Part of
# `make test` in the plain build only (not SAN=1: the package is built with the
# distribution's flags, whatever the sanitizer pass builds).
test-deploy: deb
	$(PYTHON) -m pytest -q tests/deploy

# Removes what install put there, except the configuration and the database.
uninstall:
	rm -f $(DESTDIR)$(SBINDIR)/otpd $(DESTDIR)$(LIBEXECDIR)/otpd-backup \
	      $(DESTDIR)$(MANDIR)/man8/otpd.8 $(DESTDIR)$(SYSTEMDUNITDIR)/otpd.service \
	      $(DESTDIR)$(SYSTEMDUNITDIR)/otpd-backup.service $(DESTDIR)$(SYSTEMDUNITDIR)/otpd-backup.timer \
	      $(DESTDIR)$(DOCDIR)/otpd.env.example $(DESTDIR)$(DOCDIR)/DEPLOYMENT.md
	-rmdir $(DESTDIR)$(LIBEXECDIR) $(DESTDIR)$(DOCDIR) 2>/dev/null

clean:
	rm -rf build build-asan

-include $(OBJ:.o=.d)

# Benchmark (bench/run.sh, results in docs/PERFORMANCE.md): builds into
# build-bench/ so that it never mixes flags with build/.  `make bench PROFILE=1`
# adds perf profiles (docs/perf-send.txt, docs/perf-verify.txt); every knob is
# an environment variable, see docs/PERFORMANCE.md.
.PHONY: bench
bench:
	BENCH_CMD='make bench$(if $(PROFILE), PROFILE=$(PROFILE))' PROFILE=$(PROFILE) bench/run.sh

# bench-only: fills a database with known codes before otpd starts.
$(BUILD)/bench/prefill: bench/prefill.c $(LIBOBJ)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -Isrc $(LDFLAGS) -o $@ $< $(LIBOBJ) $(LDLIBS)

# bench-only: the store alone, without HTTP (group commit's ceiling).
$(BUILD)/bench/storebench: bench/storebench.c $(LIBOBJ)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -Isrc $(LDFLAGS) -o $@ $< $(LIBOBJ) $(LDLIBS)
