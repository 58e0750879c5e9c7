//! daprd's gRPC API (`dapr.proto.runtime.v1.Dapr`, proto/ in this crate) for what the
//! sidecar does: publish and bulk publish, state (get, bulk get, save, delete, bulk
//! delete, transactions with the outbox), metadata and shutdown — the same operations as
//! the HTTP API (api.rs), so the checks, resiliency, outbox and errors are one. Errors
//! are daprd's gRPC statuses: its code for each failure, its message, and the
//! ErrorInfo / ResourceInfo details. DAPR_API_TOKEN is checked on every call, as daprd's
//! gRPC interceptor does. Any other Dapr method answers UNIMPLEMENTED.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use tonic::{Code, Request, Response, Status};
use tonic_types::{ErrorDetail, ErrorDetails, ErrorInfo, ResourceInfo, StatusExt};

use crate::Sidecar;
use crate::api::{BulkEntry, ItemReq, request_options, trace_context};
use crate::errors::ApiError;

/// The generated messages and services, in their protobuf packages.
#[allow(missing_docs, clippy::all, clippy::unwrap_used, clippy::expect_used)]
pub mod pb {
    /// `dapr.proto.*`
    pub mod dapr {
        /// `dapr.proto.*`
        pub mod proto {
            /// `dapr.proto.common.*`
            pub mod common {
                /// `dapr.proto.common.v1`
                pub mod v1 {
                    tonic::include_proto!("dapr.proto.common.v1");
                }
            }
            /// `dapr.proto.runtime.*`
            pub mod runtime {
                /// `dapr.proto.runtime.v1`
                pub mod v1 {
                    tonic::include_proto!("dapr.proto.runtime.v1");
                }
            }
        }
    }
    pub use dapr::proto::common::v1 as common;
    pub use dapr::proto::runtime::v1 as runtime;
}

use pb::common::{StateItem, state_options};
use pb::runtime as rt;

/// The gRPC status daprd answers for an API error: its code for the failure, the same
/// message, and its details — dapr/kit errors carry their `DAPR_*` ErrorInfo (and the
/// pubsub's ResourceInfo); the others (`messages.APIError`, kit's `Basic`) an ErrorInfo
/// whose reason is the `ERR_*` code.
pub(crate) fn status(e: &ApiError) -> Status {
    let code = match e.code {
        "ERR_PUBSUB_EMPTY"
        | "ERR_TOPIC_NAME_EMPTY"
        | "ERR_PUBSUB_NOT_FOUND"
        | "ERR_PUBSUB_REQUEST_METADATA"
        | "ERR_PUBSUB_EVENTS_SER"
        | "ERR_PUBSUB_CLOUD_EVENTS_SER" => Code::InvalidArgument,
        "ERR_PUBSUB_FORBIDDEN" => Code::PermissionDenied,
        "ERR_STATE_STORE_NOT_CONFIGURED" => Code::FailedPrecondition,
        "ERR_STATE_STORE_NOT_FOUND" | "ERR_MALFORMED_REQUEST" => Code::InvalidArgument,
        "ERR_NOT_SUPPORTED_STATE_OPERATION" => Code::Unimplemented,
        // ETag failures: daprd's getStateErrorCode.
        "ERR_STATE_SAVE" | "ERR_STATE_DELETE" | "ERR_STATE_BULK_DELETE" if e.status == http::StatusCode::CONFLICT => Code::Aborted,
        "ERR_STATE_SAVE" | "ERR_STATE_DELETE" | "ERR_STATE_BULK_DELETE" if e.status == http::StatusCode::BAD_REQUEST => {
            Code::InvalidArgument
        }
        "ERR_HEALTH_NOT_READY" => Code::Unavailable,
        _ => Code::Internal,
    };
    // daprd's order: a ResourceInfo (when there is one), then the ErrorInfo.
    let mut details = Vec::new();
    match e.reason {
        Some(reason) => {
            // Not-found and not-configured carry no metadata over gRPC.
            let metadata: std::collections::HashMap<String, String> = match e.code {
                "ERR_PUBSUB_NOT_FOUND" | "ERR_STATE_STORE_NOT_FOUND" | "ERR_STATE_STORE_NOT_CONFIGURED" => Default::default(),
                _ => e.metadata.clone().unwrap_or_default().into_iter().collect(),
            };
            if let Some((kind, name)) = e.resource.as_deref() {
                details.push(ErrorDetail::ResourceInfo(ResourceInfo::new(*kind, name.clone(), "", e.message.clone())));
            }
            details.push(ErrorDetail::ErrorInfo(ErrorInfo::new(reason, "dapr.io", metadata)));
        }
        None => details.push(ErrorDetail::ErrorInfo(ErrorInfo::new(e.code, "dapr.io", std::collections::HashMap::new()))),
    }
    Status::with_error_details_vec(code, e.message.clone(), details)
}

fn err(e: ApiError) -> Status {
    status(&e)
}

/// daprd's gRPC server takes `--max-body-size` as its largest message: a larger request
/// is RESOURCE_EXHAUSTED, worded as grpc-go words it.
fn check_size<T: prost::Message>(req: &Request<T>, limit: u64) -> Result<(), Status> {
    let len = req.get_ref().encoded_len() as u64;
    if limit > 0 && len > limit {
        return Err(Status::resource_exhausted(format!("grpc: received message larger than max ({len} vs. {limit})")));
    }
    Ok(())
}

/// The caller's `traceparent` / `tracestate` from the call's metadata, normalised.
fn trace<T>(req: &Request<T>) -> (String, String) {
    let get = |k: &str| req.metadata().get(k).and_then(|v| v.to_str().ok()).map(str::to_owned);
    trace_context(get("traceparent"), get("tracestate"))
}

fn concurrency(o: Option<&pb::common::StateOptions>) -> Option<&'static str> {
    match o.map(|o| o.concurrency()) {
        Some(state_options::StateConcurrency::ConcurrencyFirstWrite) => Some("first-write"),
        Some(state_options::StateConcurrency::ConcurrencyLastWrite) => Some("last-write"),
        _ => None,
    }
}

fn consistency(o: Option<&pb::common::StateOptions>) -> Option<&'static str> {
    match o.map(|o| o.consistency()) {
        Some(state_options::StateConsistency::ConsistencyEventual) => Some("eventual"),
        Some(state_options::StateConsistency::ConsistencyStrong) => Some("strong"),
        _ => None,
    }
}

/// A gRPC state item as the save/transaction core takes it: its value as bytes.
fn item(s: StateItem) -> ItemReq {
    let (concurrency, options_error) = request_options(concurrency(s.options.as_ref()), consistency(s.options.as_ref()));
    ItemReq {
        key: s.key,
        value: serde_json::Value::Null,
        raw: Some(Bytes::from(s.value)),
        etag: s.etag.map(|e| e.value).filter(|e| !e.is_empty()),
        concurrency,
        metadata: s.metadata.into_iter().collect(),
        options_error,
    }
}

/// The service, over the sidecar.
pub struct DaprGrpc(pub Arc<Sidecar>);

#[tonic::async_trait]
impl rt::dapr_server::Dapr for DaprGrpc {
    async fn get_state(&self, req: Request<rt::GetStateRequest>) -> Result<Response<rt::GetStateResponse>, Status> {
        check_size(&req, self.0.cfg.max_body_size)?;
        let r = req.into_inner();
        let item = self.0.get_item(&r.store_name, &r.key).await.map_err(err)?;
        Ok(Response::new(match item {
            Some(i) => {
                rt::GetStateResponse { data: i.data.to_vec(), etag: i.etag.unwrap_or_default(), metadata: i.metadata.into_iter().collect() }
            }
            None => rt::GetStateResponse::default(),
        }))
    }

    async fn get_bulk_state(&self, req: Request<rt::GetBulkStateRequest>) -> Result<Response<rt::GetBulkStateResponse>, Status> {
        check_size(&req, self.0.cfg.max_body_size)?;
        let r = req.into_inner();
        let items = self
            .0
            .bulk_get(&r.store_name, r.keys)
            .await
            .map_err(err)?
            .into_iter()
            .map(|(key, got)| match got {
                Ok(Some(i)) => rt::BulkStateItem {
                    key,
                    data: i.data.to_vec(),
                    etag: i.etag.unwrap_or_default(),
                    error: String::new(),
                    metadata: i.metadata.into_iter().collect(),
                },
                Ok(None) => rt::BulkStateItem { key, ..Default::default() },
                Err(e) => rt::BulkStateItem { key, error: e, ..Default::default() },
            })
            .collect();
        Ok(Response::new(rt::GetBulkStateResponse { items }))
    }

    async fn save_state(&self, req: Request<rt::SaveStateRequest>) -> Result<Response<()>, Status> {
        check_size(&req, self.0.cfg.max_body_size)?;
        let r = req.into_inner();
        self.0.store_entry(&r.store_name).map_err(err)?;
        let mut items = Vec::with_capacity(r.states.len());
        for s in r.states {
            if s.key.is_empty() {
                // kit's Basic(InvalidArgument, ERR_STATE_SAVE): an ErrorInfo with that reason.
                return Err(err(ApiError::new(http::StatusCode::BAD_REQUEST, "ERR_STATE_SAVE", "state key cannot be empty")));
            }
            let json = s.metadata.get("contentType").is_some_and(|c| c == "application/json");
            let mut i = item(s);
            // daprd decodes a value sent as exactly `application/json` (stored as JSON).
            if json && let Some(raw) = i.raw.take() {
                i.value = serde_json::from_slice(&raw).map_err(|e| Status::unknown(e.to_string()))?;
            }
            items.push(i);
        }
        self.0.save_items(&r.store_name, items, &BTreeMap::new()).await.map_err(err)?;
        Ok(Response::new(()))
    }

    async fn delete_state(&self, req: Request<rt::DeleteStateRequest>) -> Result<Response<()>, Status> {
        check_size(&req, self.0.cfg.max_body_size)?;
        let r = req.into_inner();
        let etag = r.etag.map(|e| e.value).filter(|e| !e.is_empty());
        self.0
            .delete_item(&r.store_name, &r.key, etag, concurrency(r.options.as_ref()), consistency(r.options.as_ref()))
            .await
            .map_err(err)?;
        Ok(Response::new(()))
    }

    async fn delete_bulk_state(&self, req: Request<rt::DeleteBulkStateRequest>) -> Result<Response<()>, Status> {
        check_size(&req, self.0.cfg.max_body_size)?;
        let r = req.into_inner();
        self.0.store_entry(&r.store_name).map_err(err)?;
        // As daprd's bulk delete: every key is checked before any item is deleted; then
        // every item is attempted, one failing stops none, and an ETag failure among them
        // decides the code.
        if let Some(bad) = r.states.iter().find(|s| s.key.contains("||")) {
            return Err(err(ApiError::malformed(format!("input key/keyPrefix '{}' can't contain '||'", bad.key))));
        }
        let mut failed: Vec<ApiError> = Vec::new();
        for s in r.states {
            let etag = s.etag.map(|e| e.value).filter(|e| !e.is_empty());
            let opts = s.options.as_ref();
            // The store and every key were checked above: what fails here is the delete.
            if let Err(e) = self.0.delete_item(&r.store_name, &s.key, etag, concurrency(opts), consistency(opts)).await {
                failed.push(e);
            }
        }
        if failed.is_empty() {
            return Ok(Response::new(()));
        }
        let http_status = failed
            .iter()
            .map(|e| e.status)
            .find(|s| *s == http::StatusCode::CONFLICT || *s == http::StatusCode::BAD_REQUEST)
            .unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR);
        let joined: Vec<&str> = failed.iter().map(|e| e.message.as_str()).collect();
        let message = format!("failed deleting state in state store {}: {}", r.store_name, joined.join("\n"));
        Err(status(&ApiError::new(http_status, "ERR_STATE_BULK_DELETE", message)))
    }

    async fn execute_state_transaction(&self, req: Request<rt::ExecuteStateTransactionRequest>) -> Result<Response<()>, Status> {
        check_size(&req, self.0.cfg.max_body_size)?;
        let (tp, ts) = trace(&req);
        let r = req.into_inner();
        let ops = r.operations.into_iter().map(|op| (op.operation_type, Ok(item(op.request.unwrap_or_default())))).collect();
        // gRPC's request metadata goes to the store, not into each operation's (HTTP merges).
        self.0.transact(&r.store_name, ops, &BTreeMap::new(), (&tp, &ts)).await.map_err(err)?;
        Ok(Response::new(()))
    }

    async fn publish_event(&self, req: Request<rt::PublishEventRequest>) -> Result<Response<()>, Status> {
        check_size(&req, self.0.cfg.max_body_size)?;
        let (tp, ts) = trace(&req);
        let r = req.into_inner();
        let ct = (!r.data_content_type.is_empty()).then_some(r.data_content_type.as_str());
        self.0.publish(&r.pubsub_name, &r.topic, r.metadata.into_iter().collect(), ct, &tp, &ts, &r.data).await.map_err(err)?;
        Ok(Response::new(()))
    }

    async fn bulk_publish_event_alpha1(&self, req: Request<rt::BulkPublishRequest>) -> Result<Response<rt::BulkPublishResponse>, Status> {
        self.bulk_publish(req).await
    }

    async fn bulk_publish_event(&self, req: Request<rt::BulkPublishRequest>) -> Result<Response<rt::BulkPublishResponse>, Status> {
        self.bulk_publish(req).await
    }

    async fn get_metadata(&self, _req: Request<rt::GetMetadataRequest>) -> Result<Response<rt::GetMetadataResponse>, Status> {
        Ok(Response::new(self.0.metadata_proto().await))
    }

    async fn set_metadata(&self, req: Request<rt::SetMetadataRequest>) -> Result<Response<()>, Status> {
        check_size(&req, self.0.cfg.max_body_size)?;
        let r = req.into_inner();
        self.0.put_metadata(&r.key, r.value.as_bytes()).await;
        Ok(Response::new(()))
    }

    async fn shutdown(&self, req: Request<rt::ShutdownRequest>) -> Result<Response<()>, Status> {
        let force = req.metadata().get_all("dapr-force-shutdown").iter().any(|v| v.to_str().is_ok_and(|v| v.eq_ignore_ascii_case("true")));
        if force {
            self.0.force_shutdown();
        } else {
            self.0.request_shutdown();
        }
        Ok(Response::new(()))
    }
}

impl DaprGrpc {
    async fn bulk_publish(&self, req: Request<rt::BulkPublishRequest>) -> Result<Response<rt::BulkPublishResponse>, Status> {
        check_size(&req, self.0.cfg.max_body_size)?;
        let (tp, ts) = trace(&req);
        let r = req.into_inner();
        // A gRPC entry's event is bytes already (no conversion by content type).
        let (topic, pubsub) = (r.topic.clone(), r.pubsub_name.clone());
        let entries = r
            .entries
            .into_iter()
            .map(|e| BulkEntry {
                entry_id: e.entry_id,
                event: Ok(e.event),
                content_type: e.content_type,
                metadata: (!e.metadata.is_empty()).then(|| e.metadata.into_iter().collect()),
            })
            .collect();
        let failed =
            self.0.bulk_publish_entries(&pubsub, &topic, r.metadata.into_iter().collect(), entries, &tp, &ts).await.map_err(err)?;
        // As daprd's: any failed entry fails the call (its list of failed entries is dropped).
        if let Some((_, first)) = failed.first() {
            return Err(err(ApiError::pubsub_publish(&topic, &pubsub, first)));
        }
        Ok(Response::new(rt::BulkPublishResponse { failed_entries: Vec::new() }))
    }
}

/// daprd's gRPC API-token check: every call carries `dapr-api-token` equal to
/// DAPR_API_TOKEN, else UNAUTHENTICATED.
pub fn token_check(token: Option<String>) -> impl FnMut(Request<()>) -> Result<Request<()>, Status> + Clone {
    move |mut req: Request<()>| {
        let Some(t) = &token else { return Ok(req) };
        let why = match req.metadata().get("dapr-api-token").map(|v| v.to_str().ok()) {
            None => "missing api token in request metadata",
            Some(Some(given)) if given == t => {
                req.metadata_mut().remove("dapr-api-token");
                return Ok(req);
            }
            Some(_) => "authentication error: api token mismatch",
        };
        let md = [("http.code".to_string(), "401".to_string()), ("http.error_message".to_string(), why.to_string())];
        Err(Status::with_error_details(Code::Unauthenticated, "Unauthorized", ErrorDetails::with_error_info("Unauthorized", "dapr.io", md)))
    }
}

impl Sidecar {
    /// `GetMetadata`'s answer: what `GET /v1.0/metadata` shows, as daprd's messages.
    pub(crate) async fn metadata_proto(&self) -> rt::GetMetadataResponse {
        let registered_components = self
            .resources
            .components
            .iter()
            .map(|c| rt::RegisteredComponents {
                name: c.name.clone(),
                r#type: c.type_.clone(),
                version: c.version.clone(),
                capabilities: crate::api::capabilities(&c.type_).iter().map(|s| s.to_string()).collect(),
            })
            .collect();
        let extended_metadata = self.extended_metadata().await.into_iter().collect();
        let subscriptions = self
            .subscriptions
            .read()
            .await
            .iter()
            .map(|s| {
                let mut rules: Vec<rt::PubsubSubscriptionRule> = s
                    .rules
                    .iter()
                    .map(|r| rt::PubsubSubscriptionRule { r#match: r.match_.trim().to_string(), path: r.path.clone() })
                    .collect();
                if let Some(d) = &s.default_path {
                    rules.push(rt::PubsubSubscriptionRule { r#match: String::new(), path: d.clone() });
                }
                rt::PubsubSubscription {
                    pubsub_name: s.pubsub.clone(),
                    topic: s.topic.clone(),
                    metadata: s.metadata.clone().into_iter().collect(),
                    rules: Some(rt::PubsubSubscriptionRules { rules }),
                    dead_letter_topic: s.dead_letter_topic.clone().unwrap_or_default(),
                    r#type: if s.declarative { rt::PubsubSubscriptionType::Declarative } else { rt::PubsubSubscriptionType::Programmatic }
                        as i32,
                }
            })
            .collect();
        rt::GetMetadataResponse {
            id: self.cfg.app_id.clone(),
            runtime_version: crate::DAPR_VERSION.into(),
            enabled_features: crate::api::ENABLED_FEATURES.iter().map(|f| f.to_string()).collect(),
            registered_components,
            extended_metadata,
            subscriptions,
            app_connection_properties: Some(rt::AppConnectionProperties {
                port: self.cfg.app_port.map(i32::from).unwrap_or_default(),
                protocol: self.cfg.app_protocol.as_str().into(),
                channel_address: self.cfg.app_host.clone(),
                ..Default::default()
            }),
            // No placement service: daprd's actor runtime reports itself disabled.
            actor_runtime: Some(rt::ActorRuntime {
                runtime_status: rt::actor_runtime::ActorRuntimeStatus::Disabled as i32,
                placement: "placement: disconnected".into(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// Serves the gRPC API on `listener` until `shutdown` resolves (and its calls end).
    pub(crate) async fn serve_grpc(
        self: Arc<Self>,
        listener: tokio::net::TcpListener,
        shutdown: impl std::future::Future<Output = ()>,
    ) -> anyhow::Result<()> {
        // Messages over --max-body-size are refused in each handler with grpc-go's status;
        // this bound keeps the decoder from buffering far more than that.
        let limit = match self.cfg.max_body_size {
            0 => usize::MAX,
            n => usize::try_from(n.saturating_mul(2).saturating_add(1 << 20)).unwrap_or(usize::MAX),
        };
        let service = rt::dapr_server::DaprServer::new(DaprGrpc(self.clone())).max_decoding_message_size(limit);
        let service = tonic::service::interceptor::InterceptedService::new(service, token_check(self.cfg.api_token.clone()));
        let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
        tonic::transport::Server::builder().add_service(service).serve_with_incoming_shutdown(incoming, shutdown).await?;
        Ok(())
    }
}
