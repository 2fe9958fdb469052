#!/bin/bash
# Write Alertmanager's configuration from the kit's settings (MLOPS_KIT_ALERT_*), copy the
# secret files it reads (webhook URL, SMTP password) into the private /tmp, and run it as
# its own user. No secret is ever written into the configuration or onto argv.
set -euo pipefail
secrets_dir="${MLOPS_KIT_SECRETS_MOUNT:-/run/secrets}"
die() { echo "alertmanager-entrypoint: $1" >&2; exit 78; }

if [[ "$(id -u)" == "0" ]]; then
    [[ "$(stat -c %u /alertmanager)" == "$(id -u alertmanager)" ]] || chown -R alertmanager:alertmanager /alertmanager
    as_am() { setpriv --reuid=alertmanager --regid=alertmanager --init-groups "$@"; }
    as_am mkdir -p -m 0700 /tmp/secrets
    [[ -s "${secrets_dir}/alertmanager_password" ]] || die "cannot read ${secrets_dir}/alertmanager_password; run \`mlops-kit up\` (it generates it)"
    # The API's login: Prometheus (and amtool, the healthcheck) use it; its bcrypt hash
    # (cost 10) is made here from stdin, never from argv.
    hash="$(htpasswd -niBC 10 prometheus <"${secrets_dir}/alertmanager_password" | cut -d: -f2-)"
    printf 'basic_auth_users:\n  prometheus: %s\n' "${hash}" | as_am sh -c 'umask 077 && cat >/tmp/web.yml'
    password="$(head -n 1 "${secrets_dir}/alertmanager_password" | tr -d '\r\n')"
    printf 'machine 127.0.0.1 login prometheus password %s\n' "${password}" | as_am sh -c 'umask 077 && cat >/tmp/secrets/netrc'
    unset password
    printf 'basic_auth:\n  username: prometheus\n  password_file: /tmp/secrets/alertmanager_password\n' \
        | as_am sh -c 'umask 077 && cat >/tmp/amtool.yml'
    for name in alert_webhook_url alert_smtp_password alertmanager_password; do
        if [[ -r "${secrets_dir}/${name}" ]]; then
            # One line, no trailing newline: Alertmanager reads the file's whole content.
            head -n 1 "${secrets_dir}/${name}" | tr -d '\r\n' | as_am sh -c 'umask 077 && cat >"$1"' sh "/tmp/secrets/${name}"
        fi
    done
    exec setpriv --reuid=alertmanager --regid=alertmanager --init-groups "$0" "$@"
fi

webhook="${MLOPS_KIT_ALERT_WEBHOOK:-none}"
email_to="${MLOPS_KIT_ALERT_EMAIL_TO:-}"
url_file=/tmp/secrets/alert_webhook_url
password_file=/tmp/secrets/alert_smtp_password
if [[ "${webhook}" != "none" && ! -s "${url_file}" ]]; then
    die "MLOPS_KIT_ALERT_WEBHOOK=${webhook} but the secret file alert_webhook_url is empty; set its URL with \`mlops-kit monitoring webhook ${webhook}\`"
fi

{
    echo "# Written at every start by alertmanager-entrypoint (edits are lost): see docs/monitoring.md."
    echo "route:"
    echo "  receiver: kit"
    echo "  group_by: [alertname, service, volume]"
    echo "  group_wait: ${MLOPS_KIT_ALERT_GROUP_WAIT:-30s}"
    echo "  group_interval: 5m"
    echo "  repeat_interval: 4h"
    echo "receivers:"
    echo "  - name: kit"
    case "${webhook}" in
        generic)
            echo "    webhook_configs:"
            echo "      - url_file: ${url_file}"
            echo "        send_resolved: true"
            ;;
        slack)
            echo "    slack_configs:"
            echo "      - api_url_file: ${url_file}"
            echo "        send_resolved: true"
            echo "        title: '{{ if eq .Status \"firing\" }}[FIRING]{{ else }}[RESOLVED]{{ end }} {{ .CommonLabels.alertname }}'"
            echo "        text: '{{ range .Alerts }}{{ .Annotations.summary }}: {{ .Annotations.description }}{{ \"\\n\" }}{{ end }}'"
            ;;
        teams)
            echo "    msteamsv2_configs:"
            echo "      - webhook_url_file: ${url_file}"
            echo "        send_resolved: true"
            ;;
        none) ;;
        *) die "MLOPS_KIT_ALERT_WEBHOOK=${webhook} is not one of: none, generic, slack, teams" ;;
    esac
    if [[ -n "${email_to}" ]]; then
        [[ -n "${MLOPS_KIT_ALERT_SMTP_HOST:-}" ]] || die "MLOPS_KIT_ALERT_EMAIL_TO is set but MLOPS_KIT_ALERT_SMTP_HOST is empty; set it to host:port in .env"
        [[ -n "${MLOPS_KIT_ALERT_EMAIL_FROM:-}" ]] || die "MLOPS_KIT_ALERT_EMAIL_TO is set but MLOPS_KIT_ALERT_EMAIL_FROM is empty; set the sender address in .env"
        echo "    email_configs:"
        echo "      - to: '${email_to}'"
        echo "        from: '${MLOPS_KIT_ALERT_EMAIL_FROM}'"
        echo "        smarthost: '${MLOPS_KIT_ALERT_SMTP_HOST}'"
        echo "        send_resolved: true"
        # Port 25 (a relay inside the site) may be plain; any other port needs STARTTLS.
        [[ "${MLOPS_KIT_ALERT_SMTP_HOST}" == *:25 ]] && echo "        require_tls: false" || echo "        require_tls: true"
        if [[ -n "${MLOPS_KIT_ALERT_SMTP_USER:-}" ]]; then
            [[ -s "${password_file}" ]] || die "MLOPS_KIT_ALERT_SMTP_USER is set but the secret file alert_smtp_password is empty; set it with \`mlops-kit monitoring smtp-password\`"
            echo "        auth_username: '${MLOPS_KIT_ALERT_SMTP_USER}'"
            echo "        auth_password_file: ${password_file}"
        fi
    fi
} >/tmp/alertmanager.yml
amtool check-config /tmp/alertmanager.yml >/dev/null || die "the generated configuration is invalid; check MLOPS_KIT_ALERT_* in .env"

exec prometheus-alertmanager \
    --config.file=/tmp/alertmanager.yml \
    --web.config.file=/tmp/web.yml \
    --storage.path=/alertmanager \
    --web.listen-address=0.0.0.0:9093 \
    --cluster.listen-address= \
    --log.level=warn \
    "$@"
