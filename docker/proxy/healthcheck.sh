#!/bin/bash
# Healthy = HTTPS answers and MLflow answers behind it (/health needs no login).
# -k: this checks the path, not the certificate (an operator's certificate
# need not name localhost).
set -euo pipefail
exec curl --silent --show-error --fail --insecure --max-time 4 --output /dev/null \
    'https://localhost:8443/health?probe=proxy'
