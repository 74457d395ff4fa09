#!/usr/bin/env bash
# Install the system packages the tests need: args are tool:debian-package pairs.
# As root, missing ones are installed with apt-get; otherwise one line says what to install.
set -euo pipefail
missing=()
for pair in "$@"; do
  tool=${pair%%:*}; pkg=${pair##*:}
  if ! command -v "$tool" >/dev/null 2>&1 && ! ls /usr/lib/postgresql/*/bin/"$tool" >/dev/null 2>&1 \
     && ! test -x "/usr/sbin/$tool"; then
    missing+=("$pkg")
  fi
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "installing system packages: ${missing[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
else
  echo "missing system packages, install them first: sudo apt-get install ${missing[*]}" >&2
  exit 1
fi
