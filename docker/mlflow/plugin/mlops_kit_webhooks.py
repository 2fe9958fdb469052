"""Route MLflow's webhook deliveries through the kit's egress proxy.

MLflow has no network in the kit. With MLOPS_KIT_WEBHOOK_ALLOWED_HOSTS set, its
one way out is the egress proxy (Squid with an allowlist), offered inside MLflow's
container on loopback (the entrypoint sets MLOPS_KIT_WEBHOOK_PROXY). MLflow's
webhook session ignores proxy environment variables on purpose (``trust_env =
False``: a proxy would hide the destination from its connect-time SSRF check), so
the kit gives that one session an explicit proxy instead: MLflow's own session,
with its retries and adapter, plus ``proxies`` (and ``verify``: the CAs of the
receivers, MLOPS_KIT_WEBHOOK_CA_FILE's among them). The SSRF check then sees the local
proxy, which is why the entrypoint also sets MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS; the
proxy's allowlist of exact host and port pairs takes its place, and is stricter.

Nothing else in MLflow is touched, and without MLOPS_KIT_WEBHOOK_PROXY this does
nothing. A future MLflow that renames these internals makes deliveries fail, and
the kit's webhook test with them (tests/integration/test_webhooks.py).
"""

from __future__ import annotations

import os

PROXY_VARIABLE = "MLOPS_KIT_WEBHOOK_PROXY"
#: The session ignores REQUESTS_CA_BUNDLE too (trust_env): the CAs are set on it.
CA_BUNDLE_VARIABLE = "MLOPS_KIT_WEBHOOK_CA_BUNDLE"


def route_through_egress() -> bool:
    """Install the proxied webhook session in this worker; True if a proxy is configured."""
    proxy = os.environ.get(PROXY_VARIABLE, "")
    if not proxy:
        return False
    from mlflow.webhooks import delivery

    with delivery._webhook_session_lock:
        session = delivery._create_webhook_session()
        session.proxies = {"http": proxy, "https": proxy}
        session.verify = os.environ.get(CA_BUNDLE_VARIABLE) or True
        delivery._webhook_session = session
    return True
