#!/bin/sh
# docs_page.sh TEMPLATE PACKAGE_JSON FILE... > PAGE
# The docs page (GET /api/v1/docs) from its template (src/http/docs/index.html):
# each {{NAME}}, NAME the base name of one of the FILEs, becomes the URL otpd
# serves that file at with its version tag, /api/v1/docs/NAME?v=TAG (TAG: the
# first 16 hex digits of the file's SHA-256, as src/http/h_docs.c compares
# them), and {{swagger-ui-version}} the "version" of PACKAGE_JSON.  A {{...}}
# left over fails.  The Makefile runs it; POSIX sh, sed, grep, and sha256sum.
set -eu
[ $# -ge 3 ] || { echo "usage: $0 TEMPLATE PACKAGE_JSON FILE..." >&2; exit 2; }
template=$1
pkgjson=$2
shift 2
version=$(sed -n 's/^  "version": "\([0-9A-Za-z.+-]*\)",*$/\1/p' "$pkgjson")
[ -n "$version" ] || { echo "$0: no version in $pkgjson" >&2; exit 1; }
script="s|{{swagger-ui-version}}|$version|g"
for f in "$@"; do
	name=${f##*/}
	case $name in
	*[!A-Za-z0-9._-]*) echo "$0: $name: unexpected characters in a file name" >&2; exit 1 ;;
	esac
	tag=$(sha256sum "$f" | cut -c1-16)
	pattern=$(printf '%s' "$name" | sed 's/\./\\./g')
	script="$script
s|{{$pattern}}|/api/v1/docs/$name?v=$tag|g"
done
page=$(sed -e "$script" "$template")
if printf '%s\n' "$page" | grep -n '{{' >&2; then
	echo "$0: $template: the placeholders above name no file" >&2
	exit 1
fi
printf '%s\n' "$page"
