#!/bin/sh
# check_vendored.sh: the files under third_party/swagger-ui-dist/ (embedded in
# build/otpd, served by GET /api/v1/docs/{file}) are byte for byte those of
# the npm package swagger-ui-dist at the exact version of package-lock.json,
# as `npm ci --ignore-scripts` installs it into node_modules/ (npm checks the
# package's sha512 from the lockfile).  `make check-vendored` runs it after
# npm ci; `make test` runs that.  Needs node (to read the lockfile), no network.
set -eu
cd "$(dirname "$0")/.."
dir=third_party/swagger-ui-dist
pkg=node_modules/swagger-ui-dist
fail() { echo "check_vendored: $*" >&2; exit 1; }

[ -f node_modules/.package-lock.json ] || fail "node_modules/ is not installed (npm ci --ignore-scripts)"
locked=$(node -e 'const l = require("./package-lock.json");
const p = l.packages["node_modules/swagger-ui-dist"];
if (!p || !p.integrity) process.exit(1);
process.stdout.write(p.version);') || fail "package-lock.json pins no swagger-ui-dist"
wanted=$(node -e 'process.stdout.write(require("./package.json").devDependencies["swagger-ui-dist"] || "")')
[ "$wanted" = "$locked" ] || fail "package.json asks for swagger-ui-dist '$wanted', package-lock.json has $locked (pin it exactly)"
installed=$(node -e 'process.stdout.write(require("./'"$pkg"'/package.json").version)')
[ "$installed" = "$locked" ] || fail "node_modules has swagger-ui-dist $installed, package-lock.json $locked: run npm ci --ignore-scripts"

n=0
for f in "$dir"/*; do
	name=${f#"$dir"/}
	[ -f "$pkg/$name" ] || fail "$f: swagger-ui-dist $locked has no file $name"
	cmp -s "$f" "$pkg/$name" || fail "$f differs from $name of swagger-ui-dist $locked (copy it from $pkg/)"
	n=$((n + 1))
done
[ "$n" -gt 0 ] || fail "$dir is empty"
echo "check_vendored: $n files of $dir are those of swagger-ui-dist $locked"
