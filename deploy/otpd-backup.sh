#!/bin/sh
# otpd-backup: an online copy of otpd's SQLite database (sqlite3 .backup, safe while
# otpd runs), checked, kept for OTPD_BACKUP_KEEP_DAYS days.  Run by otpd-backup.service
# (its timer: daily); by hand: OTPD_BACKUP_DB=... OTPD_BACKUP_DIR=... otpd-backup
#   OTPD_BACKUP_DB         the database      [/var/lib/otpd/otpd.db]
#   OTPD_BACKUP_DIR        where copies go   [/var/lib/otpd-backup]
#   OTPD_BACKUP_KEEP_DAYS  older copies are deleted (0: keep all) [14]
set -eu
db=${OTPD_BACKUP_DB:-/var/lib/otpd/otpd.db}
dir=${OTPD_BACKUP_DIR:-/var/lib/otpd-backup}
keep=${OTPD_BACKUP_KEEP_DAYS:-14}
case $keep in ''|*[!0-9]*) echo "otpd-backup: OTPD_BACKUP_KEEP_DAYS: expected a number of days, got '$keep'" >&2; exit 2 ;; esac
[ -f "$db" ] || { echo "otpd-backup: no database at $db" >&2; exit 1; }
umask 077
mkdir -p "$dir"
out="$dir/otpd-$(date -u +%Y%m%dT%H%M%SZ).db"
tmp="$out.partial"
rm -f "$tmp"
# .backup takes a consistent snapshot through SQLite's online backup API (the WAL
# included); the copy is checked before it gets its final name.
sqlite3 -bail "$db" ".timeout 10000" ".backup '$tmp'"
check=$(sqlite3 -bail "$tmp" "PRAGMA quick_check;")
if [ "$check" != ok ]; then
  rm -f "$tmp"
  echo "otpd-backup: the copy of $db failed its check: $check" >&2
  exit 1
fi
mv "$tmp" "$out"
echo "otpd-backup: $db -> $out ($(wc -c <"$out") bytes)"
if [ "$keep" -gt 0 ]; then
  find "$dir" -maxdepth 1 -name 'otpd-*.db' -type f -mtime +"$keep" -print -delete |
    sed 's/^/otpd-backup: removed /'
fi
