//! `blixard.v1.TokenService`: client tokens. A new token's secret is made
//! here, returned once and replicated only as its hash; a revocation takes
//! effect on each node as soon as that node applies it.

use crate::core::Core;
use crate::security::authz::Resource;
use crate::security::secrets;
use crate::security::Caller;
use crate::state::model::TokenInfo;
use crate::state::{Action, CommandOutcome, TokenRecord};
use blixard_shared::auth::Role;
use blixard_shared::proto::v1 as pb;
use blixard_shared::proto::v1::token_service_server::TokenService;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tonic::{Request, Response, Status};

/// Longest life a token may be given (`ttl_seconds`); 0 means no expiry.
pub const MAX_TOKEN_TTL: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// Serves the token API of one node.
pub struct TokenApi {
    core: Arc<Core>,
}

impl TokenApi {
    /// A service over `core`.
    pub fn new(core: Arc<Core>) -> Self {
        Self { core }
    }
}

fn info(t: &TokenInfo) -> pb::TokenInfo {
    pb::TokenInfo {
        name: t.name.clone(),
        role: t.role.as_str().to_string(),
        created_at_ms: t.created_ms,
        expires_at_ms: t.expires_ms.unwrap_or(0),
        labels: t.labels.iter().map(|(k, v)| format!("{k}={v}")).collect(),
    }
}

fn record_info(r: &TokenRecord) -> pb::TokenInfo {
    info(&r.info())
}

/// `key=value` strings as a label map, or the field that is wrong.
fn parse_labels(labels: &[String]) -> Result<BTreeMap<String, String>, Status> {
    let mut map = BTreeMap::new();
    for pair in labels {
        let (k, v) = pair.split_once('=').ok_or_else(|| {
            Status::invalid_argument(format!("labels: {pair:?} is not key=value"))
        })?;
        map.insert(k.to_string(), v.to_string());
    }
    let pairs = map.iter().map(|(k, v)| (k.as_str(), v.as_str()));
    blixard_shared::validate::label_pairs("labels", pairs)
        .map_err(|e| Status::invalid_argument(e.to_string()))?;
    Ok(map)
}

/// The request's token, as it will be recorded (creation time aside).
fn parse_create(req: &pb::CreateTokenRequest) -> Result<TokenInfo, Status> {
    blixard_shared::validate::dns_label("name", &req.name)
        .map_err(|e| Status::invalid_argument(e.to_string()))?;
    let role: Role = req
        .role
        .parse()
        .map_err(|e: blixard_shared::auth::UnknownRole| {
            Status::invalid_argument(format!("role: {e}"))
        })?;
    if req.ttl_seconds > MAX_TOKEN_TTL.as_secs() {
        return Err(Status::invalid_argument(format!(
            "ttl_seconds: at most {} (10 years); 0 for no expiry",
            MAX_TOKEN_TTL.as_secs()
        )));
    }
    let now = blixard_shared::time::now_ms();
    Ok(TokenInfo {
        name: req.name.clone(),
        role,
        created_ms: now,
        expires_ms: (req.ttl_seconds > 0).then(|| now + req.ttl_seconds * 1000),
        labels: parse_labels(&req.labels)?,
    })
}

#[tonic::async_trait]
impl TokenService for TokenApi {
    async fn create_token(
        &self,
        req: Request<pb::CreateTokenRequest>,
    ) -> Result<Response<pb::CreateTokenResponse>, Status> {
        self.core
            .metrics
            .observe("CreateToken", async {
                self.core
                    .authorize(&Caller::of(&req), "token.create", Resource::Cluster)?;
                crate::audit::note::target(format!("Token::{:?}", req.get_ref().name));
                let new = parse_create(req.get_ref())?;
                let secret =
                    secrets::new_client_token().map_err(|e| Status::internal(e.to_string()))?;
                let outcome = self
                    .core
                    .propose(Action::CreateToken {
                        name: new.name.clone(),
                        role: new.role,
                        hash: secrets::hash_token(&secret),
                        expires_ms: new.expires_ms,
                        labels: new.labels.clone(),
                    })
                    .await?;
                let token = match outcome {
                    CommandOutcome::Token(t) => info(&t),
                    _ => info(&new),
                };
                tracing::info!(name = %new.name, role = %new.role, "token created");
                Ok(Response::new(pb::CreateTokenResponse {
                    token: Some(token),
                    secret,
                }))
            })
            .await
    }

    async fn list_tokens(
        &self,
        req: Request<pb::ListTokensRequest>,
    ) -> Result<Response<pb::ListTokensResponse>, Status> {
        self.core
            .metrics
            .observe("ListTokens", async {
                self.core
                    .authorize(&Caller::of(&req), "token.list", Resource::Cluster)?;
                self.core
                    .read_barrier(pb::Consistency::Linearizable as i32)
                    .await?;
                let fleet = self.core.view.read();
                let mut tokens: Vec<pb::TokenInfo> = fleet.tokens().map(record_info).collect();
                tokens.sort_by(|a, b| a.name.cmp(&b.name));
                Ok(Response::new(pb::ListTokensResponse { tokens }))
            })
            .await
    }

    async fn revoke_token(
        &self,
        req: Request<pb::RevokeTokenRequest>,
    ) -> Result<Response<pb::RevokeTokenResponse>, Status> {
        self.core
            .metrics
            .observe("RevokeToken", async {
                self.core
                    .authorize(&Caller::of(&req), "token.revoke", Resource::Cluster)?;
                let req = req.into_inner();
                crate::audit::note::target(format!("Token::{:?}", req.name));
                blixard_shared::validate::dns_label("name", &req.name)
                    .map_err(|e| Status::invalid_argument(e.to_string()))?;
                self.core
                    .propose(Action::RevokeToken {
                        name: req.name.clone(),
                    })
                    .await?;
                tracing::info!(name = %req.name, "token revoked");
                Ok(Response::new(pb::RevokeTokenResponse {}))
            })
            .await
    }
}
