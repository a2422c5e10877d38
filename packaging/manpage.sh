#!/bin/sh
# Writes vdiskfs(1) to standard output: packaging/vdiskfs.1.in with its @...@ lines filled in from
# the binary's own description of its commands (--experimental-dump-help through manpage.jq), its
# --version, and the install paths. Usage: manpage.sh VDISKFS_BINARY UNITDIR DOCDIR
set -eu
bin=$1 unitdir=$2 docdir=$3
here=$(dirname "$0")
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$bin" --experimental-dump-help > "$work/help.json"
for part in synopsis commands exit; do
  jq -r --arg part "$part" -f "$here/manpage.jq" "$work/help.json" > "$work/$part"
done
version=$("$bin" --version | cut -d' ' -f1)
# The commit's date, so that the same commit gives the same page.
date=$(git -C "$here" log -1 --format=%cs 2>/dev/null || date -u +%Y-%m-%d)
awk -v version="$version" -v date="$date" -v unitdir="$unitdir" -v docdir="$docdir" -v work="$work" '
  /^@SYNOPSIS@$/ { while ((getline line < (work "/synopsis")) > 0) print line; next }
  /^@COMMANDS@$/ { while ((getline line < (work "/commands")) > 0) print line; next }
  /^@EXIT_STATUS@$/ { while ((getline line < (work "/exit")) > 0) print line; next }
  { gsub(/@VERSION@/, version); gsub(/@DATE@/, date); gsub(/@UNITDIR@/, unitdir); gsub(/@DOCDIR@/, docdir); print }
' "$here/vdiskfs.1.in"
