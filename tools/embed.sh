#!/bin/sh
# embed.sh NAME FILE > OUT.c
# A C source that holds the bytes of FILE: `const unsigned char NAME[]` (followed
# by one NUL that is not counted), `const size_t NAME_len`, and
# `const char NAME_sha256[]`, the file's SHA-256 in lower-case hex (the docs
# files' version tag).  Only POSIX od and awk (no xxd, no extra package), and
# coreutils' sha256sum.  The Makefile turns docs/openapi.json into
# $(BUILD)/gen/openapi_json.c with it, and the docs page's files into
# $(BUILD)/gen/docs/*.c.
set -eu
[ $# -eq 2 ] || { echo "usage: $0 NAME FILE" >&2; exit 2; }
name=$1
file=$2
len=$(wc -c < "$file" | tr -d ' ')
sha=$(sha256sum < "$file" | cut -c1-64)
printf '/* Generated from %s by tools/embed.sh: do not edit. */\n' "$file"
printf '#include <stddef.h>\n\n'
printf 'extern const unsigned char %s[];\n' "$name"
printf 'extern const size_t %s_len;\n' "$name"
printf 'extern const char %s_sha256[];\n\n' "$name"
printf 'const unsigned char %s[] = {\n' "$name"
od -An -v -tx1 "$file" | awk '{
	line = "";
	for (i = 1; i <= NF; i++)
		line = line "0x" $i ",";
	if (line != "")
		print "\t" line;
}'
printf '\t0x00\n};\n\n'
printf 'const size_t %s_len = %s;\n' "$name" "$len"
printf 'const char %s_sha256[] = "%s";\n' "$name" "$sha"
