#!/bin/sh
# cdk.json's "app": run app.py with the repo's venv when there is one, else python3 from PATH.
root=$(CDPATH= cd -- "$(dirname -- "$0")/.." && pwd)
if [ -x "$root/.venv/bin/python" ]; then
  exec "$root/.venv/bin/python" "$root/app.py" "$@"
fi
exec python3 "$root/app.py" "$@"
