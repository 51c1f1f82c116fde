#!/usr/bin/env bash
# What `make test` needs beyond Python and PostgreSQL, from Debian's packages, installed
# when missing: Chromium and its driver for the console's browser tests (no browser is
# downloaded: the network may be closed to anything but package registries), and
# valgrind for the instruction count's test. Those tests fail, not skip, without them.
# Installing asks for root: run as root, or with sudo that needs no password; otherwise
# this says what to install and stops.
set -euo pipefail

missing=()
# The browser tests use DEALFLOW_CHROMIUM when it is set, as on a machine without apt.
[ -x "${DEALFLOW_CHROMIUM:-/usr/bin/chromium}" ] || missing+=(chromium chromium-driver)
{ command -v valgrind && command -v callgrind_control; } >/dev/null 2>&1 || missing+=(valgrind)
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -eq 0 ]; then
  as_root=()
elif sudo -n true 2>/dev/null; then
  as_root=(sudo -n)
else
  echo "make test needs Debian's ${missing[*]}: install them (apt-get install ${missing[*]}) and run it again" >&2
  exit 1
fi
echo "installing ${missing[*]} from Debian's packages"
"${as_root[@]}" apt-get update -qq
"${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
