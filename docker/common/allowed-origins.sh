# Sourced by the mlflow and proxy entrypoints: the browser origins the stack
# accepts, from one list of names (MLFLOW_SERVER_ALLOWED_HOSTS, fnmatch patterns)
# and the published port (MLOPS_KIT_PUBLIC_PORT). Wildcard entries are skipped:
# an origin is always a name clients really use, over https.

# Prints the origins, comma-separated: https://<name>:<port> (and https://<name>
# when the port is 443).
allowed_origins() {
    local origins=() host
    local -a allowed
    IFS=',' read -r -a allowed <<<"${MLFLOW_SERVER_ALLOWED_HOSTS:-}"
    for host in "${allowed[@]}"; do
        [[ -z "${host}" || "${host}" == *[*?]* ]] && continue
        host="${host//\[\[\]/[}"
        origins+=("https://${host}:${MLOPS_KIT_PUBLIC_PORT}")
        [[ "${MLOPS_KIT_PUBLIC_PORT}" != "443" ]] || origins+=("https://${host}")
    done
    (IFS=','; echo "${origins[*]}")
}
