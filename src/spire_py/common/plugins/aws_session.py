"""AWS clients for the aws_iid, awssecret and aws_pca plugins, configured as any AWS user does.

Credentials come from the plugin's keys when both are set, else boto3's default chain
(environment, shared files, instance role); the endpoint from boto3's own settings
(``AWS_ENDPOINT_URL``, ``AWS_ENDPOINT_URL_<SERVICE>``, the config file) unless a plugin
has an ``endpoint`` key. ``assume_role_arn`` wraps them in STS AssumeRole credentials,
refreshed before they expire. boto3 is imported on first use: a server that does not
configure an AWS plugin does not pay for it.
"""

from __future__ import annotations

from typing import Any, Optional

from ..errors import SpireError

SESSION_NAME = "spire-server"
CONNECT_TIMEOUT = 10
READ_TIMEOUT = 20


class AWSConfigError(SpireError, ValueError):
    """Credential keys that do not go together."""


def check_static_credentials(access_key_id: str, secret_access_key: str) -> None:
    """As SPIRE: one key without the other is a configuration error."""
    if access_key_id and not secret_access_key:
        raise AWSConfigError("configuration missing secret access key, but has access key id")
    if secret_access_key and not access_key_id:
        raise AWSConfigError("configuration missing access key id, but has secret access key")


def _client_config() -> Any:
    from botocore.config import Config

    return Config(connect_timeout=CONNECT_TIMEOUT, read_timeout=READ_TIMEOUT,
                  retries={"max_attempts": 3, "mode": "standard"})


def new_session(region: str = "", access_key_id: str = "", secret_access_key: str = "",
                session_token: str = "", assume_role_arn: str = "") -> Any:
    """A boto3 Session; with ``assume_role_arn`` its credentials are the assumed role's."""
    import boto3

    kwargs: dict[str, Any] = {}
    if region:
        kwargs["region_name"] = region
    if access_key_id and secret_access_key:
        kwargs.update(aws_access_key_id=access_key_id, aws_secret_access_key=secret_access_key)
        if session_token:
            kwargs["aws_session_token"] = session_token
    session = boto3.Session(**kwargs)
    if not assume_role_arn:
        return session
    return _assumed(session, assume_role_arn, region)


def _assumed(base: Any, role_arn: str, region: str) -> Any:
    import boto3
    from botocore.credentials import DeferredRefreshableCredentials
    from botocore.session import get_session

    sts = base.client("sts", config=_client_config())

    def refresh() -> dict[str, str]:
        creds = sts.assume_role(RoleArn=role_arn, RoleSessionName=SESSION_NAME)["Credentials"]
        return {"access_key": creds["AccessKeyId"], "secret_key": creds["SecretAccessKey"],
                "token": creds["SessionToken"], "expiry_time": creds["Expiration"].isoformat()}

    core = get_session()
    # botocore has no public setter for a session's credential provider; this is the documented
    # pattern for refreshable assume-role credentials.
    core._credentials = DeferredRefreshableCredentials(refresh_using=refresh, method="sts-assume-role")
    if region:
        core.set_config_variable("region", region)
    return boto3.Session(botocore_session=core)


def client(session: Any, service: str, region: str = "", endpoint: Optional[str] = None) -> Any:
    kwargs: dict[str, Any] = {"config": _client_config()}
    if region:
        kwargs["region_name"] = region
    if endpoint:
        kwargs["endpoint_url"] = endpoint if "://" in endpoint else "https://" + endpoint
    return session.client(service, **kwargs)


def error_message(exc: BaseException) -> str:
    """One line for an AWS failure: the service's code and message when it answered."""
    response = getattr(exc, "response", None)
    if isinstance(response, dict) and isinstance(response.get("Error"), dict):
        err = response["Error"]
        code, message = err.get("Code", ""), err.get("Message", "")
        op = getattr(exc, "operation_name", "")
        return f"{op}: {code}: {message}" if op else f"{code}: {message}"
    return str(exc) or type(exc).__name__
