"""The Kubernetes API server, through the official client (SPIRE's ``k8s/apiserver`` package).

As SPIRE, the client configuration is loaded again for every call: from ``kubeconfig`` when
one is given, else the in-cluster service account (whose token the kubelet rotates). Every
call is bounded by ``REQUEST_TIMEOUT``; every failure is a :class:`KubeAPIError` whose text
says what was asked and what the API server answered. The client blocks: callers run it in a
thread.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator, Optional

from ..errors import SpireError

REQUEST_TIMEOUT = 10.0
CONFLICT_RETRIES = 3


class KubeAPIError(SpireError):
    """The API server could not be reached, refused, or answered without what was asked."""

    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.status = status  # the HTTP status, 0 when none came back


def load_client_config(kubeconfig: str) -> Any:
    """A ``kubernetes.client.Configuration`` from the file or the in-cluster environment."""
    from kubernetes import client, config
    from kubernetes.config.config_exception import ConfigException

    cfg = client.Configuration()
    try:
        if kubeconfig:
            config.load_kube_config(config_file=kubeconfig, client_configuration=cfg, persist_config=False)
        else:
            config.load_incluster_config(client_configuration=cfg)
    except (ConfigException, OSError, ValueError, TypeError, KeyError) as exc:
        raise KubeAPIError(f"unable to create client config: {exc}") from None
    return cfg


def _reason(exc: Exception) -> str:
    from kubernetes.client.exceptions import ApiException

    if isinstance(exc, ApiException):
        body = exc.body.decode(errors="replace") if isinstance(exc.body, bytes) else str(exc.body or "")
        try:
            import json

            message = json.loads(body).get("message") or ""
        except (ValueError, AttributeError):
            message = ""
        return f"{exc.status} {exc.reason}" + (f": {message}" if message else "")
    text = str(exc) or type(exc).__name__
    return text if len(text) <= 300 else text[:300] + "..."


class KubeAPI:
    """One cluster's API server, as a kubeconfig (or in-cluster) names it."""

    def __init__(self, kubeconfig: str = "") -> None:
        self.kubeconfig = kubeconfig
        self._shared: Optional[Any] = None

    @contextmanager
    def session(self) -> Iterator["KubeAPI"]:
        """Several calls over one client (one configuration load, one connection pool)."""
        from kubernetes import client

        bound = KubeAPI(self.kubeconfig)
        bound._shared = client.ApiClient(load_client_config(self.kubeconfig))
        try:
            yield bound
        finally:
            bound._shared.close()

    @contextmanager
    def _api(self) -> Iterator[Any]:
        if self._shared is not None:
            yield self._shared
            return
        from kubernetes import client

        api = client.ApiClient(load_client_config(self.kubeconfig))
        try:
            yield api
        finally:
            api.close()

    def _call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        from kubernetes.client.exceptions import ApiException, OpenApiException

        try:
            return fn(*args, _request_timeout=REQUEST_TIMEOUT, **kwargs)
        except ApiException as exc:
            raise KubeAPIError(f"unable to query {what}: {_reason(exc)}", exc.status or 0) from None
        except (OpenApiException, OSError, ValueError) as exc:
            raise KubeAPIError(f"unable to query {what}: {_reason(exc)}") from None
        except Exception as exc:  # urllib3's errors (MaxRetryError, SSLError, ...)
            if type(exc).__module__.startswith("urllib3"):
                raise KubeAPIError(f"unable to query {what}: {_reason(exc)}") from None
            raise

    # --- TokenReview, pods, nodes (k8s_psat) ---------------------------------------------
    def validate_token(self, token: str, audiences: list[str]) -> Any:
        """The TokenReview status (``authenticated``, ``user``); an error status is an error."""
        from kubernetes import client

        with self._api() as api:
            review = client.V1TokenReview(spec=client.V1TokenReviewSpec(token=token, audiences=audiences or None))
            resp = self._call("token review API", client.AuthenticationV1Api(api).create_token_review, review)
        if resp is None or resp.status is None:
            raise KubeAPIError("token review API response is nil")
        if resp.status.error:
            raise KubeAPIError(f"token review API response contains an error: {resp.status.error}")
        return resp.status

    def get_pod(self, namespace: str, name: str) -> Any:
        from kubernetes import client

        if not namespace:
            raise KubeAPIError("empty namespace")
        if not name:
            raise KubeAPIError("empty pod name")
        with self._api() as api:
            return self._call("pods API", client.CoreV1Api(api).read_namespaced_pod, name, namespace)

    def get_node(self, name: str) -> Any:
        from kubernetes import client

        if not name:
            raise KubeAPIError("empty node name")
        with self._api() as api:
            return self._call("nodes API", client.CoreV1Api(api).read_node, name)

    # --- ConfigMaps (k8s_configmap, k8sbundle) ----------------------------------------------
    def put_configmap_key(self, namespace: str, name: str, key: str, value: str, create: bool = True) -> str:
        """Set one key of a ConfigMap, keeping its other keys: read, then update with the read
        resourceVersion; a concurrent writer (another HA server) makes the update fail with 409
        Conflict, and the read-modify-write is tried again, up to ``CONFLICT_RETRIES`` times. A
        missing ConfigMap is created when ``create``. Returns "created", "updated" or "unchanged"."""
        for attempt in range(CONFLICT_RETRIES + 1):
            try:
                return self._put_configmap_key(namespace, name, key, value, create)
            except KubeAPIError as exc:
                if exc.status != 409 or attempt == CONFLICT_RETRIES:
                    raise
        raise AssertionError("unreachable")

    def _put_configmap_key(self, namespace: str, name: str, key: str, value: str, create: bool) -> str:
        from kubernetes import client

        with self._api() as api:
            core = client.CoreV1Api(api)
            what = f"ConfigMap {namespace}/{name}"
            current: Optional[Any]
            try:
                current = self._call(what, core.read_namespaced_config_map, name, namespace)
            except KubeAPIError as exc:
                if exc.status != 404:
                    raise
                current = None
            if current is None:
                if not create:
                    raise KubeAPIError(f"ConfigMap {namespace}/{name} not found", 404)
                body = client.V1ConfigMap(metadata=client.V1ObjectMeta(name=name, namespace=namespace),
                                          data={key: value})
                self._call(what, core.create_namespaced_config_map, namespace, body)
                return "created"
            data = dict(current.data or {})
            if data.get(key) == value:
                return "unchanged"
            data[key] = value
            current.data = data
            self._call(what, core.replace_namespaced_config_map, name, namespace, current)
            return "updated"
