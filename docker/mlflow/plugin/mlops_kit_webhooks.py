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

Without MLOPS_KIT_WEBHOOK_PROXY no webhook may leave the stack: the session gets an
adapter that refuses every delivery with a message naming the setting. In the disk
modes MLflow has no network anyway; in the bucket modes it has one (to reach the
store) and would otherwise deliver anywhere MLflow's own public-address check allows.
Nothing else in MLflow is touched. A future MLflow that renames these internals makes
deliveries fail, and the kit's tests with them (tests/unit/test_auth_policy.py,
tests/integration/test_webhooks.py).
"""

from __future__ import annotations

import os

import requests

PROXY_VARIABLE = "MLOPS_KIT_WEBHOOK_PROXY"
#: The session ignores REQUESTS_CA_BUNDLE too (trust_env): the CAs are set on it.
CA_BUNDLE_VARIABLE = "MLOPS_KIT_WEBHOOK_CA_BUNDLE"


NO_EGRESS = (
    "webhooks may not leave this stack: name the receivers' hosts in MLOPS_KIT_WEBHOOK_ALLOWED_HOSTS "
    "(.env) and run mlops-kit up"
)


def route_through_egress() -> bool:
    """Give this worker's webhook session the egress proxy, or no way out; True if a proxy is configured."""
    from mlflow.webhooks import delivery

    proxy = os.environ.get(PROXY_VARIABLE, "")
    with delivery._webhook_session_lock:
        session = delivery._create_webhook_session()
        if proxy:
            session.proxies = {"http": proxy, "https": proxy}
            session.verify = os.environ.get(CA_BUNDLE_VARIABLE) or True
        else:
            session.mount("http://", _NoEgress())
            session.mount("https://", _NoEgress())
        delivery._webhook_session = session
    return bool(proxy)


class _NoEgress(requests.adapters.BaseAdapter):
    """Refuses every request: the webhook session's only adapter when no host is allowed."""

    def send(self, request: requests.PreparedRequest, *args: object, **kwargs: object) -> requests.Response:
        raise requests.ConnectionError(NO_EGRESS, request=request)

    def close(self) -> None:
        return None
