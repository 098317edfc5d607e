"""The operator's own Kubernetes API calls (Pods, status, Events, one-off reads), as plain dicts.

kopf owns the watches; everything the operator writes goes through this adapter over
kubernetes-asyncio, so there is one place that counts apiserver requests (for metrics and the
status-write cap) and one place that turns API errors into the few outcomes callers care about
(``AlreadyExists``, ``NotFound``). Responses are read as JSON (``_preload_content=False``) so the
rest of the operator sees the same camelCase dicts that kopf hands to handlers.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from collections.abc import Iterable
from typing import Any

from kubernetes_asyncio import client
from kubernetes_asyncio import config
from kubernetes_asyncio.client.exceptions import ApiException

from pyncette_operator.spec import GROUP
from pyncette_operator.spec import PLURAL
from pyncette_operator.spec import VERSION

logger = logging.getLogger(__name__)

FIELD_MANAGER = "pyncette-operator"


class AlreadyExists(Exception):
    """409 on create."""


class NotFound(Exception):
    """404."""


class Conflict(Exception):
    """409 on a write with a ``resourceVersion`` precondition: the object changed since."""


async def make_api_client() -> client.ApiClient:
    """In-cluster credentials if running in a Pod, else the kubeconfig (``$KUBECONFIG``)."""
    try:
        config.load_incluster_config()  # type: ignore[no-untyped-call]
    except config.ConfigException:
        await config.load_kube_config()
    return client.ApiClient()


class Kube:
    """Thin async wrappers; ``on_request(verb, resource)`` is called once per apiserver request."""

    def __init__(self, api_client: client.ApiClient, *, on_request: Callable[[str, str], None] | None = None) -> None:
        self._api = api_client
        self._core = client.CoreV1Api(api_client)
        self._custom = client.CustomObjectsApi(api_client)
        self._on_request = on_request or (lambda verb, resource: None)

    async def close(self) -> None:
        await self._api.close()

    async def _call(self, verb: str, resource: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        uid_guard = kwargs.pop("_uid_guard", False)
        self._on_request(verb, resource)
        try:
            response = await fn(*args, _preload_content=False, **kwargs)
            try:
                data = await response.read()
            finally:
                response.release()
            if not 200 <= response.status <= 299:
                # Without _preload_content the client does not raise on errors; do it here.
                error = ApiException(status=response.status, reason=response.reason)
                error.body = data
                raise error
        except ApiException as e:
            if e.status == 404:
                raise NotFound(_reason(e)) from None
            if e.status == 409 and verb == "create":
                raise AlreadyExists(_reason(e)) from None
            if e.status == 409 and uid_guard and b"UID in precondition" in (e.body or b""):
                raise NotFound(_reason(e)) from None  # a uid precondition failed: that object is gone
            if e.status == 409 and uid_guard:
                raise Conflict(_reason(e)) from None  # a resourceVersion precondition failed
            raise
        return json.loads(data)

    # ---- Pods ----

    async def create_pod(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = await self._call("create", "pods", self._core.create_namespaced_pod, namespace, body)
        return result

    async def get_pod(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            result: dict[str, Any] = await self._call("get", "pods", self._core.read_namespaced_pod, name, namespace)
        except NotFound:
            return None
        return result

    async def delete_pod(self, namespace: str, name: str, *, uid: str | None = None) -> None:
        """Deletes a Pod (only that incarnation when ``uid`` is given); a missing Pod is fine."""
        body: dict[str, Any] = {"propagationPolicy": "Background"}
        if uid:
            body["preconditions"] = {"uid": uid}
        try:
            await self._call("delete", "pods", self._core.delete_namespaced_pod, name, namespace, body=body)
        except NotFound:
            pass
        except ApiException as e:
            if e.status != 409:  # precondition failed: a different Pod by that name now
                raise

    # ---- who am I ----

    async def service_account(self) -> tuple[str, str] | None:
        """(namespace, name) of the ServiceAccount these credentials belong to, or None (another user).

        A SelfSubjectReview (authentication.k8s.io/v1, any authenticated user may create one).
        """
        auth = client.AuthenticationV1Api(self._api)
        body = {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"}
        review = await self._call("create", "selfsubjectreviews", auth.create_self_subject_review, body)
        username = str(((review.get("status") or {}).get("userInfo") or {}).get("username") or "")
        prefix, _, rest = username.partition("system:serviceaccount:")
        namespace, _, name = rest.partition(":")
        return (namespace, name) if not prefix and namespace and name else None

    async def list_pods(self, namespaces: Iterable[str] | None, *, label_selector: str) -> list[dict[str, Any]]:
        """A fresh LIST of the Pods matching ``label_selector`` in ``namespaces`` (None: all), paginated."""
        items: list[dict[str, Any]] = []
        for namespace in [None] if namespaces is None else list(namespaces):
            token: str | None = None
            while True:
                kwargs: dict[str, Any] = {"limit": 500, "label_selector": label_selector}
                if token:
                    kwargs["_continue"] = token
                if namespace is None:
                    page = await self._call("list", "pods", self._core.list_pod_for_all_namespaces, **kwargs)
                else:
                    page = await self._call("list", "pods", self._core.list_namespaced_pod, namespace, **kwargs)
                items.extend(_slim(item) for item in page.get("items") or [])
                token = (page.get("metadata") or {}).get("continue")
                if not token:
                    break
        return items

    # ---- PyncetteTasks ----

    async def get_task(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            result: dict[str, Any] = await self._call(
                "get", PLURAL, self._custom.get_namespaced_custom_object, GROUP, VERSION, namespace, PLURAL, name
            )
        except NotFound:
            return None
        return result

    async def list_tasks(self, namespaces: Iterable[str] | None, *, limit: int | None = None) -> list[dict[str, Any]]:
        """A fresh (quorum) LIST of PyncetteTasks in ``namespaces`` (None: all), paginated, without managedFields."""
        items: list[dict[str, Any]] = []
        for namespace in [None] if namespaces is None else list(namespaces):
            token: str | None = None
            while True:
                kwargs: dict[str, Any] = {"limit": limit or 500}
                if token:
                    kwargs["_continue"] = token
                if namespace is None:
                    page = await self._call(
                        "list", PLURAL, self._custom.list_cluster_custom_object, GROUP, VERSION, PLURAL, **kwargs
                    )
                else:
                    page = await self._call(
                        "list",
                        PLURAL,
                        self._custom.list_namespaced_custom_object,
                        GROUP,
                        VERSION,
                        namespace,
                        PLURAL,
                        **kwargs,
                    )
                items.extend(_slim(item) for item in page.get("items") or [])
                token = (page.get("metadata") or {}).get("continue")
                if not token or limit is not None:
                    break
        return items

    async def apply_status(
        self,
        namespace: str,
        name: str,
        status: dict[str, Any],
        *,
        uid: str | None = None,
        resource_version: str | None = None,
    ) -> str | None:
        """Server-side apply of ``status`` on the status subresource (manager ``pyncette-operator``).

        With ``resource_version`` the write applies only to that version of the object, else
        Conflict: every replica writes under one field manager, so a write built on a stale view
        would remove what the others wrote since, and a same-name successor must never get the
        status of the task it replaced. (The ``uid`` is sent too, but an apply does not check it:
        measured on kube-apiserver 1.34, a status apply with another uid succeeds.) Returns the
        object's new resourceVersion.
        """
        metadata: dict[str, Any] = {"name": name}
        if uid:
            metadata["uid"] = uid
        if resource_version:
            metadata["resourceVersion"] = resource_version
        body = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "PyncetteTask",
            "metadata": metadata,
            "status": status,
        }
        result = await self._call(
            "patch",
            f"{PLURAL}/status",
            self._custom.patch_namespaced_custom_object_status,
            GROUP,
            VERSION,
            namespace,
            PLURAL,
            name,
            body,
            field_manager=FIELD_MANAGER,
            force=True,
            _content_type="application/apply-patch+yaml",
            _uid_guard=bool(uid or resource_version),
        )
        version = (result.get("metadata") or {}).get("resourceVersion") if isinstance(result, dict) else None
        return str(version) if version else None

    # ---- Events ----

    async def create_event(self, namespace: str, body: dict[str, Any]) -> None:
        await self._call("create", "events", self._core.create_namespaced_event, namespace, body)


def _slim(obj: dict[str, Any]) -> dict[str, Any]:
    """A listed object without its managedFields (half of its size at 10k objects, never used)."""
    meta = obj.get("metadata")
    if isinstance(meta, dict) and "managedFields" in meta:
        obj["metadata"] = {k: v for k, v in meta.items() if k != "managedFields"}
    return obj


def _reason(e: ApiException) -> str:
    try:
        return str(json.loads(e.body or b"{}").get("message") or e.reason)
    except Exception:
        return str(e.reason)


def is_transient(e: BaseException) -> bool:
    """Whether ``e`` says "not now" rather than "no": no HTTP answer at all (no connection, a
    timeout), 429 or 5xx; 401, 403, 404 and the other 4xx are the apiserver refusing."""
    status = getattr(e, "status", None)
    return not isinstance(status, int) or status == 429 or status >= 500


def api_error_message(e: BaseException) -> str:
    """One line for an API error (the apiserver's own message where there is one)."""
    if isinstance(e, ApiException):
        return f"{e.status} {_reason(e)}"
    return f"{type(e).__name__}: {e}"
