#!/bin/sh
# The Prometheus rules of dashboards/prometheus: promtool checks the rule file
# and the example configuration, and runs the rules' unit tests (every alert
# firing and not firing). Exit 77 (skipped) when promtool is missing.
set -e
dir=$1
if ! command -v promtool >/dev/null 2>&1; then
  echo "skipped: promtool is missing (Debian package prometheus)"
  exit 77
fi
cd "$dir"
promtool check rules stackaudit.rules.yml
promtool check config prometheus.yml
promtool test rules stackaudit.rules.test.yml
