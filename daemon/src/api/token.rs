//! `blixard.v1.TokenService`: client tokens. A new token's secret is made
//! here, returned once and replicated only as its hash; a revocation takes
//! effect on each node as soon as that node applies it.

use crate::core::Core;
use crate::security::secrets;
use crate::state::{Action, CommandOutcome, TokenRecord};
use blixard_shared::auth::Role;
use blixard_shared::proto::v1 as pb;
use blixard_shared::proto::v1::token_service_server::TokenService;
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

fn info(name: &str, role: Role, created_ms: u64, expires_ms: Option<u64>) -> pb::TokenInfo {
    pb::TokenInfo {
        name: name.to_string(),
        role: role.as_str().to_string(),
        created_at_ms: created_ms,
        expires_at_ms: expires_ms.unwrap_or(0),
    }
}

fn record_info(r: &TokenRecord) -> pb::TokenInfo {
    info(&r.name, r.role, r.created_ms, r.expires_ms)
}

/// The request's role and expiry, or the field that is wrong.
fn parse_create(req: &pb::CreateTokenRequest) -> Result<(Role, Option<u64>), Status> {
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
    let expires =
        (req.ttl_seconds > 0).then(|| blixard_shared::time::now_ms() + req.ttl_seconds * 1000);
    Ok((role, expires))
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
                let req = req.into_inner();
                let (role, expires_ms) = parse_create(&req)?;
                let secret =
                    secrets::new_client_token().map_err(|e| Status::internal(e.to_string()))?;
                let outcome = self
                    .core
                    .propose(Action::CreateToken {
                        name: req.name.clone(),
                        role,
                        hash: secrets::hash_token(&secret),
                        expires_ms,
                    })
                    .await?;
                let token = match outcome {
                    CommandOutcome::Token(t) => info(&t.name, t.role, t.created_ms, t.expires_ms),
                    _ => info(&req.name, role, blixard_shared::time::now_ms(), expires_ms),
                };
                tracing::info!(name = %req.name, %role, "token created");
                Ok(Response::new(pb::CreateTokenResponse {
                    token: Some(token),
                    secret,
                }))
            })
            .await
    }

    async fn list_tokens(
        &self,
        _req: Request<pb::ListTokensRequest>,
    ) -> Result<Response<pb::ListTokensResponse>, Status> {
        self.core
            .metrics
            .observe("ListTokens", async {
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
                let req = req.into_inner();
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
