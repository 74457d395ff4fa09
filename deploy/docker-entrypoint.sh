#!/bin/sh
# The views must be reachable by the other replicas (table_route forwards to the owner of a
# key at the address a worker announces), so "container-ip" becomes this container's address.
set -eu
if [ "${EDGEWISE_WEB_HOST:-}" = "container-ip" ]; then
  EDGEWISE_WEB_HOST=$(hostname -i | cut -d' ' -f1)
  export EDGEWISE_WEB_HOST
fi
exec edgewise "$@"
