"""The one place that builds Azure clients: credential, endpoint, retries, transport.

Nothing here runs at import time; clients are built on first use and reused, because the
Functions worker keeps the process (and so the connection pools and tokens) warm between calls.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

import requests
from azure.core.configuration import Configuration
from azure.core.credentials import TokenCredential
from azure.core.exceptions import ResourceExistsError
from azure.core.pipeline.policies import (
    CustomHookPolicy,
    HeadersPolicy,
    NetworkTraceLoggingPolicy,
    ProxyPolicy,
    RedirectPolicy,
    RetryPolicy,
    UserAgentPolicy,
)
from azure.core.pipeline.transport import HttpTransport, RequestsTransport
from azure.data.tables import TableClient, TableServiceClient
from azure.storage.queue import LinearRetry, QueueClient, QueueServiceClient, TextBase64EncodePolicy

from handlers.adapters.pacing import PacedTransport
from handlers.adapters.retries import ThrottleAwareRetryPolicy
from handlers.core.clock import SYSTEM_CLOCK, Clock
from handlers.core.errors import SettingsError

if TYPE_CHECKING:
    from azure.mgmt.compute import ComputeManagementClient
    from azure.mgmt.core import ARMPipelineClient
    from azure.mgmt.hybridcompute import HybridComputeManagementClient
    from azure.mgmt.resource.resources import ResourceManagementClient
    from azure.mgmt.resourcegraph import ResourceGraphClient
    from azure.storage.blob import ContainerClient
from handlers.core.settings import Settings

USER_AGENT = "update-manager-maintenance-toolkit/0.1"
# Storage calls fail within seconds when the service is down (the SDKs' defaults retry for about
# 85 s, and Event Grid redelivers after about 30 s while the first invocation still waits):
# three attempts about 1 s apart, each connecting within 3 s and answered within 5 s.
STORAGE_TIMEOUTS = {"connection_timeout": 3, "read_timeout": 5}
_TABLE_RETRIES = {"retry_total": 2, "retry_backoff_factor": 0.5, "retry_backoff_max": 3}
# The management SDKs and azure-identity are imported where a client is first built: the Event
# Grid acknowledgement path needs only the storage SDKs, and cold starts pay for every import.


class ClientFactory:
    """Builds and caches every Azure client from one credential, endpoint and transport.

    `transport` and `credential` are injectable (the emulator plugs in here); by default the
    credential is `DefaultAzureCredential`: managed identity in Azure (App Service's
    IDENTITY_ENDPOINT/IDENTITY_HEADER, AZURE_CLIENT_ID for a user-assigned identity), `az login`
    on a laptop.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        transport: HttpTransport | None = None,
        credential: TokenCredential | None = None,
        clock: Clock | None = None,
    ) -> None:
        self._settings = settings
        self.clock: Clock = clock or SYSTEM_CLOCK
        self._transport = transport
        self._pooled_transport: HttpTransport | None = None
        self._credential = credential
        self._storage_credential: TokenCredential | None = None
        self._lock = threading.Lock()
        self._compute: dict[str, ComputeManagementClient] = {}
        self._hybrid: dict[str, HybridComputeManagementClient] = {}
        self._resources: dict[str, ResourceManagementClient] = {}
        self._graph: ResourceGraphClient | None = None
        self._arm: ARMPipelineClient | None = None
        self._table: TableClient | None = None
        self._queues: dict[str, QueueClient] = {}
        self._channels: dict[tuple[str, str], Any] = {}

    @property
    def settings(self) -> Settings:
        return self._settings

    @property
    def credential(self) -> TokenCredential:
        with self._lock:
            if self._credential is None:
                from azure.identity import DefaultAzureCredential

                self._credential = DefaultAzureCredential(
                    managed_identity_client_id=self._settings.client_id, **self._transport_kwargs()
                )
            return self._credential

    def retry_policy(self) -> RetryPolicy:
        """Retry-After honoured on every attempt; dropped connections too get the setting's count
        of retries (azure-core alone stops after 3)."""
        n = self._settings.arm_retries
        return ThrottleAwareRetryPolicy(retry_total=n, retry_status=n, retry_connect=n, retry_read=n,
                                        retry_backoff_factor=0.8, retry_backoff_max=60)

    def compute(self, subscription_id: str) -> ComputeManagementClient:
        key = subscription_id.lower()
        credential = self.credential
        with self._lock:
            client = self._compute.get(key)
            if client is None:
                from azure.mgmt.compute import ComputeManagementClient

                client = ComputeManagementClient(
                    credential,
                    subscription_id,
                    polling_interval=self._settings.poll_interval_seconds,
                    **self._arm_kwargs(),
                )
                self._compute[key] = client
            return client

    def hybrid_compute(self, subscription_id: str) -> HybridComputeManagementClient:
        """Arc-enabled servers (their run commands)."""
        key = subscription_id.lower()
        credential = self.credential
        with self._lock:
            client = self._hybrid.get(key)
            if client is None:
                from azure.mgmt.hybridcompute import HybridComputeManagementClient

                client = HybridComputeManagementClient(
                    credential, subscription_id, polling_interval=self._settings.poll_interval_seconds,
                    **self._arm_kwargs())
                self._hybrid[key] = client
            return client

    def resources(self, subscription_id: str) -> ResourceManagementClient:
        """Azure Resource Manager's own operations (the Tags API)."""
        key = subscription_id.lower()
        credential = self.credential
        with self._lock:
            client = self._resources.get(key)
            if client is None:
                from azure.mgmt.resource.resources import ResourceManagementClient

                client = ResourceManagementClient(credential, subscription_id, **self._arm_kwargs())
                self._resources[key] = client
            return client

    def blob_container(self, name: str, *, quick: bool = False) -> ContainerClient:
        """A blob container of the app's storage; `quick`: 2 retries 2 s apart (not 15 s and more)."""
        from azure.storage.blob import BlobServiceClient, LinearRetry  # (its own, not the queue SDK's)

        storage = self._settings.storage
        options: dict[str, Any] = dict(STORAGE_TIMEOUTS)
        if quick:
            options["retry_policy"] = LinearRetry(backoff=2, retry_total=2, random_jitter_range=1)
        if storage.connection_string:
            service = BlobServiceClient.from_connection_string(storage.connection_string, **options)
        else:
            uri = _service_uri(storage.blob_service_uri, "blob")
            with self._lock:
                credential = self._storage_cred()
            service = BlobServiceClient(uri, credential=credential, **options)
        return service.get_container_client(name)

    def channel(self, kind: str, endpoint: str = "") -> Any:
        """A notification channel's client: "eventgrid" (EventGridPublisherClient on the topic),
        "email" (ACS EmailClient), "webhook" (a bare pipeline for Teams). They talk to their own
        endpoints over the default transport, with the app's credential and a short retry."""
        credential = self.credential
        with self._lock:
            client = self._channels.get((kind, endpoint))
            if client is None:
                options: dict[str, Any] = {"retry_total": 3, "retry_backoff_factor": 0.8, "retry_backoff_max": 8,
                                           "connection_timeout": 5, "read_timeout": 20, "user_agent": USER_AGENT}
                if kind == "eventgrid":
                    from azure.eventgrid import EventGridPublisherClient

                    client = EventGridPublisherClient(endpoint, credential, **options)
                elif kind == "email":
                    from azure.communication.email import EmailClient

                    client = EmailClient(endpoint, credential, **options)
                else:
                    from azure.core import PipelineClient

                    client = PipelineClient(base_url="", policies=[
                        UserAgentPolicy(USER_AGENT), RetryPolicy(retry_total=2, retry_backoff_factor=0.8)])
                self._channels[(kind, endpoint)] = client
            return client

    def resource_graph(self) -> ResourceGraphClient:
        credential = self.credential
        with self._lock:
            if self._graph is None:
                from azure.mgmt.resourcegraph import ResourceGraphClient

                self._graph = ResourceGraphClient(credential, **self._arm_kwargs())
            return self._graph

    def arm(self) -> ARMPipelineClient:
        """A bare ARM pipeline (same credential, retries, logging) for calls no SDK offers."""
        credential = self.credential
        with self._lock:
            if self._arm is None:
                from azure.mgmt.core import ARMPipelineClient
                from azure.mgmt.core.policies import ARMChallengeAuthenticationPolicy, ARMHttpLoggingPolicy

                config: Configuration[Any, Any] = Configuration()
                config.user_agent_policy = UserAgentPolicy(sdk_moniker=USER_AGENT)
                config.headers_policy = HeadersPolicy()
                config.proxy_policy = ProxyPolicy()
                config.logging_policy = NetworkTraceLoggingPolicy()
                config.http_logging_policy = ARMHttpLoggingPolicy()
                config.redirect_policy = RedirectPolicy()
                config.custom_hook_policy = CustomHookPolicy()
                config.retry_policy = self.retry_policy()
                config.authentication_policy = ARMChallengeAuthenticationPolicy(credential, self._settings.arm_scope)
                self._arm = ARMPipelineClient(
                    base_url=self._settings.arm_endpoint, config=config, transport=self._arm_transport()
                )
            return self._arm

    def ledger_table(self) -> TableClient:
        with self._lock:
            if self._table is None:
                storage = self._settings.storage
                name = self._settings.ledger_table
                options: dict[str, Any] = {**STORAGE_TIMEOUTS, **_TABLE_RETRIES}
                if storage.connection_string:
                    service = TableServiceClient.from_connection_string(storage.connection_string, **options)
                else:
                    uri = _service_uri(storage.table_service_uri, "table")
                    service = TableServiceClient(uri, credential=self._storage_cred(), **options)
                self._table = service.create_table_if_not_exists(name)
            return self._table

    def queue(self, name: str) -> QueueClient:
        """A queue client whose messages the Functions host decodes (base64, its default)."""
        with self._lock:
            client = self._queues.get(name)
            if client is None:
                storage = self._settings.storage
                encode = TextBase64EncodePolicy()
                settings: dict[str, Any] = {
                    **STORAGE_TIMEOUTS, "message_encode_policy": encode,
                    "retry_policy": LinearRetry(backoff=1, retry_total=2, random_jitter_range=1),
                }
                if storage.connection_string:
                    service = QueueServiceClient.from_connection_string(storage.connection_string, **settings)
                else:
                    uri = _service_uri(storage.queue_service_uri, "queue")
                    service = QueueServiceClient(uri, credential=self._storage_cred(), **settings)
                client = service.get_queue_client(name, message_encode_policy=encode)
                _ensure_queue(client)
                self._queues[name] = client
            return client

    def _storage_cred(self) -> TokenCredential:
        # Called with the lock held. The Functions host may use a different identity for its
        # storage (AzureWebJobsStorage__clientId); follow it so one role assignment covers both.
        if self._storage_credential is None:
            from azure.identity import DefaultAzureCredential

            client_id = self._settings.storage.client_id or self._settings.client_id
            self._storage_credential = DefaultAzureCredential(managed_identity_client_id=client_id)
        return self._storage_credential

    def _transport_kwargs(self) -> dict[str, Any]:
        return {"transport": self._transport} if self._transport is not None else {}

    def _arm_transport(self) -> HttpTransport:
        # Called with the lock held. One paced transport for every ARM client, so the pacing
        # buckets are shared; underneath, one pooled session: requests' default pool of 10 would
        # discard (and log about) connections once parallelism exceeds it.
        if self._pooled_transport is None:
            inner = self._transport
            if inner is None:
                session = requests.Session()
                adapter = requests.adapters.HTTPAdapter(pool_maxsize=self._settings.parallelism + 8)
                session.mount("https://", adapter)
                inner = RequestsTransport(session=session, session_owner=False)
            self._pooled_transport = PacedTransport(inner, self.clock)
        return self._pooled_transport

    def _arm_kwargs(self) -> dict[str, Any]:
        return {"base_url": self._settings.arm_endpoint, "credential_scopes": [self._settings.arm_scope],
                "retry_policy": self.retry_policy(), "user_agent": USER_AGENT, "transport": self._arm_transport()}


def _service_uri(uri: str | None, service: str) -> str:
    """A storage endpoint for identity-based access (settings require the table and queue ones)."""
    if uri is None:
        raise SettingsError(f"AzureWebJobsStorage__{service}ServiceUri", "required when AzureWebJobsStorage is not set")
    return uri


def _ensure_queue(client: QueueClient) -> None:
    try:
        client.create_queue()
    except ResourceExistsError:
        pass
