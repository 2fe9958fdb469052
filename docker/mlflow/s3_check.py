#!/opt/mlflow/bin/python
"""mlflow-s3-check: can MLflow use its S3 artifact store? Run before the server starts.

Runs in the MLflow image, on the MLflow container's networks, with its keys and CA
(the entrypoint wrote them), so it sees the endpoint exactly as the server will.
Checks, in order: the endpoint answers (and its certificate is trusted), the keys
are accepted, the bucket exists (minio mode: creates it, private), and the keys may
write, read back and delete an object under the prefix. Prints one JSON line:
{"ok": bool, "problem": <what>, "message": ..., "fix": ..., "checks": [...]}; exit 1
on failure, so Compose does not start MLflow (depends_on: service_completed_successfully).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import uuid

import boto3
from botocore import UNSIGNED
from botocore.config import Config
from botocore.exceptions import (
    ClientError,
    ConnectTimeoutError,
    EndpointConnectionError,
    NoCredentialsError,
    ReadTimeoutError,
    SSLError,
)

CREDENTIAL_ERRORS = ("InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidClientTokenId", "InvalidToken")
REGION_ERRORS = ("AuthorizationHeaderMalformed", "PermanentRedirect", "IllegalLocationConstraintException")
KEYS = "secrets/s3_access_key_id and secrets/s3_secret_access_key"


class Problem(Exception):
    def __init__(self, problem: str, message: str, fix: str) -> None:
        super().__init__(message)
        self.problem, self.message, self.fix = problem, message, fix


def settings() -> dict[str, str]:
    return {
        "endpoint": os.environ.get("MLFLOW_S3_ENDPOINT_URL", ""),
        "bucket": os.environ["MLOPS_KIT_S3_BUCKET"],
        "prefix": os.environ.get("MLOPS_KIT_S3_PREFIX", "").strip("/"),
        "region": os.environ.get("AWS_DEFAULT_REGION", "us-east-1"),
        "addressing": os.environ.get("MLFLOW_BOTO_CLIENT_ADDRESSING_STYLE", "path"),
    }


def client(conf: dict[str, str], *, unsigned: bool = False):  # type: ignore[no-untyped-def]
    config = Config(
        s3={"addressing_style": conf["addressing"]},
        retries={"max_attempts": 2, "mode": "standard"},
        connect_timeout=5,
        read_timeout=30,
        **({"signature_version": UNSIGNED} if unsigned else {}),
    )
    return boto3.client("s3", endpoint_url=conf["endpoint"] or None, region_name=conf["region"], config=config)


def where(conf: dict[str, str]) -> str:
    return conf["endpoint"] or f"AWS S3 ({conf['region']})"


def classify(error: Exception, conf: dict[str, str], doing: str) -> Problem:
    """Turn a botocore error into what is wrong and which setting fixes it."""
    endpoint = where(conf)
    if isinstance(error, SSLError):
        return Problem(
            "tls",
            f"the certificate of {endpoint} is not trusted ({doing})",
            "set MLOPS_KIT_S3_CA_FILE to the PEM of the CA that signed it",
        )
    if isinstance(error, (EndpointConnectionError, ConnectTimeoutError, ReadTimeoutError)):
        return Problem(
            "endpoint",
            f"cannot reach the S3 endpoint {endpoint} ({doing}): {error.__class__.__name__}",
            "check MLOPS_KIT_S3_ENDPOINT_URL (name, port, http/https), and that this host can reach it "
            "(MLOPS_KIT_S3_NETWORK for an S3 server in another Compose project)",
        )
    if isinstance(error, NoCredentialsError):
        return Problem("credentials", "no S3 keys were given", f"write {KEYS} (mode 0600)")
    if isinstance(error, ClientError):
        code = str(error.response.get("Error", {}).get("Code", ""))
        status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if code in CREDENTIAL_ERRORS:
            return Problem(
                "credentials",
                f"{endpoint} refused the S3 keys ({code}, {doing})",
                f"put the right key id and secret in {KEYS}, then run mlops-kit up",
            )
        if code in ("NoSuchBucket",) or (status == 404 and doing.startswith("listing")):
            return Problem(
                "bucket",
                f"bucket {conf['bucket']} does not exist on {endpoint}",
                "create it on the S3 server, or fix MLOPS_KIT_S3_BUCKET",
            )
        if code in REGION_ERRORS:
            return Problem(
                "region",
                f"{endpoint} refused region {conf['region']} for bucket {conf['bucket']} ({code})",
                "set MLOPS_KIT_S3_REGION to the bucket's region",
            )
        if code in ("AccessDenied", "AllAccessDisabled", "Forbidden") or status == 403:
            return Problem(
                "permission",
                f"the S3 keys may not do this on bucket {conf['bucket']}: {doing} ({code or status})",
                "grant the keys s3:ListBucket, s3:GetObject, s3:PutObject and s3:DeleteObject on the bucket",
            )
        return Problem("s3", f"{endpoint} answered {code or status} while {doing}", "see the S3 server's log")
    return Problem("s3", f"{doing} failed: {error.__class__.__name__}: {error}", "see the S3 server's log")


def run(create_bucket: bool) -> list[str]:
    conf = settings()
    s3 = client(conf)
    done: list[str] = []
    try:
        s3.list_objects_v2(Bucket=conf["bucket"], Prefix=conf["prefix"], MaxKeys=1)
        done.append(f"bucket {conf['bucket']} on {where(conf)}: keys accepted")
    except ClientError as error:
        problem = classify(error, conf, f"listing bucket {conf['bucket']}")
        if not (create_bucket and problem.problem == "bucket"):
            raise problem from error
        kwargs = {}
        if conf["region"] != "us-east-1":
            kwargs["CreateBucketConfiguration"] = {"LocationConstraint": conf["region"]}
        try:
            s3.create_bucket(Bucket=conf["bucket"], **kwargs)
        except ClientError as create_error:
            if create_error.response.get("Error", {}).get("Code") != "BucketAlreadyOwnedByYou":
                raise classify(create_error, conf, f"creating bucket {conf['bucket']}") from create_error
        done.append(f"bucket {conf['bucket']} created (private: no bucket policy)")
    except Exception as error:  # connection and TLS errors
        raise classify(error, conf, f"listing bucket {conf['bucket']}") from error

    key = "/".join(p for p in (conf["prefix"], ".mlops-kit-check", f"{socket.gethostname()}-{uuid.uuid4().hex}") if p)
    body = uuid.uuid4().bytes * 64
    try:
        s3.put_object(Bucket=conf["bucket"], Key=key, Body=body)
        if s3.get_object(Bucket=conf["bucket"], Key=key)["Body"].read() != body:
            raise Problem("s3", f"{where(conf)} returned other bytes than written", "see the S3 server's log")
        s3.delete_object(Bucket=conf["bucket"], Key=key)
        done.append("write, read back and delete under the prefix: ok")
    except Problem:
        raise
    except Exception as error:
        raise classify(error, conf, f"writing {key}") from error

    return done


def anonymous_warning(conf: dict[str, str]) -> str:
    """Artifacts are private to MLflow's users: a bucket anyone may list is a leak (a warning)."""
    try:
        client(conf, unsigned=True).list_objects_v2(Bucket=conf["bucket"], MaxKeys=1)
    except Exception:
        return ""
    return (
        f"bucket {conf['bucket']} can be listed without keys (anonymous access): "
        "remove its public policy or ACL on the S3 server"
    )


def main() -> None:
    parser = argparse.ArgumentParser(prog="mlflow-s3-check", description=__doc__)
    parser.add_argument("--create-bucket", action="store_true", help="create the bucket if it is missing (minio)")
    args = parser.parse_args()
    try:
        checks = run(args.create_bucket)
    except Problem as problem:
        print(json.dumps({"ok": False, "problem": problem.problem, "message": problem.message, "fix": problem.fix}))
        print(f"mlflow-s3-check: {problem.message}; {problem.fix}", file=sys.stderr)
        sys.exit(1)
    warning = anonymous_warning(settings())
    print(json.dumps({"ok": True, "checks": checks, "warnings": [warning] if warning else []}))


if __name__ == "__main__":
    main()
