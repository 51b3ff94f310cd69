#!/bin/sh
# embed.sh NAME FILE > OUT.c
# A C source that holds the bytes of FILE: `const unsigned char NAME[]` (followed
# by one NUL that is not counted) and `const size_t NAME_len`.  Only POSIX od and
# awk (no xxd, no extra package).  The Makefile turns docs/openapi.json into
# $(BUILD)/gen/openapi_json.c with it.
set -eu
[ $# -eq 2 ] || { echo "usage: $0 NAME FILE" >&2; exit 2; }
name=$1
file=$2
len=$(wc -c < "$file" | tr -d ' ')
printf '/* Generated from %s by tools/embed.sh: do not edit. */\n' "$file"
printf '#include <stddef.h>\n\n'
printf 'extern const unsigned char %s[];\n' "$name"
printf 'extern const size_t %s_len;\n\n' "$name"
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
