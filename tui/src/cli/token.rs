//! `blixard token create|list|revoke`: the client tokens of the cluster
//! (admin only). A token's secret exists in one answer only, the one to
//! `create`: the cluster keeps its hash, and `list` shows names, roles and
//! expiry, never secrets.

use super::args::TokenCmd;
use super::duration::expiry_word;
use super::output::{print_json, print_table};
use super::CliError;
use blixard_shared::auth::Role;
use blixard_shared::proto::v1 as pb;
use blixard_shared::proto::v1::token_service_client::TokenServiceClient;
use blixard_shared::time::now_ms;
use blixard_shared::BlixardClient;
use serde::Serialize;

/// `ttl_seconds` that means "never expires".
const NEVER: u64 = 0;

/// JSON view of a token without its secret (each element of
/// `token list --json`).
#[derive(Debug, Serialize)]
pub struct TokenView {
    /// Unique name.
    pub name: String,
    /// viewer, operator or admin.
    pub role: String,
    /// When it was created (ms since the Unix epoch).
    pub created_at_ms: u64,
    /// When it stops working (ms since the Unix epoch; 0: never).
    pub expires_at_ms: u64,
    /// Its scoping labels, `key=value`.
    pub labels: Vec<String>,
}

impl From<&pb::TokenInfo> for TokenView {
    fn from(t: &pb::TokenInfo) -> Self {
        Self {
            name: t.name.clone(),
            role: t.role.clone(),
            created_at_ms: t.created_at_ms,
            expires_at_ms: t.expires_at_ms,
            labels: t.labels.clone(),
        }
    }
}

/// JSON view of a new token (`token create --json`): the listing's keys
/// plus the secret, which no other answer carries.
#[derive(Debug, Serialize)]
pub struct CreatedTokenView {
    /// The token's name, role and times.
    #[serde(flatten)]
    pub token: TokenView,
    /// The bearer secret (`blxt_…`).
    pub secret: String,
}

/// Runs one `token` command.
pub async fn run(client: &mut BlixardClient, cmd: TokenCmd, json: bool) -> Result<(), CliError> {
    match cmd {
        TokenCmd::Create {
            role,
            ttl,
            name,
            labels,
        } => {
            let role = Role::from(role);
            let name = name.unwrap_or_else(|| default_name(role, now_ms()));
            blixard_shared::validate::dns_label("name", &name)?;
            if let Some(bad) = labels.iter().find(|l| !l.contains('=')) {
                return Err(CliError::usage(format!(
                    "--label {bad:?}: expected KEY=VALUE"
                )));
            }
            let req = pb::CreateTokenRequest {
                name,
                role: role.as_str().to_string(),
                ttl_seconds: ttl.map_or(NEVER, |t| t.as_secs()),
                labels,
            };
            create(client, req, json).await
        }
        TokenCmd::List => list(client, json).await,
        TokenCmd::Revoke { name } => {
            blixard_shared::validate::dns_label("name", &name)?;
            let req = pb::RevokeTokenRequest { name: name.clone() };
            client
                .call(|ch| {
                    let req = req.clone();
                    async move { TokenServiceClient::new(ch).revoke_token(req).await }
                })
                .await?;
            tracing::info!(token = %name, "token revoked");
            if json {
                print_json(&serde_json::json!({ "revoked": name }));
            } else {
                println!("token {name} revoked");
            }
            Ok(())
        }
    }
}

/// The name of a token created without `--name`: its role and the Unix
/// second, so names sort by age and say what they allow.
fn default_name(role: Role, now_ms: u64) -> String {
    format!("{}-{}", role.as_str(), now_ms / 1000)
}

/// `token create`: prints the secret once, and says it is shown once.
async fn create(
    client: &mut BlixardClient,
    req: pb::CreateTokenRequest,
    json: bool,
) -> Result<(), CliError> {
    let resp = client
        .call(|ch| {
            let req = req.clone();
            async move { TokenServiceClient::new(ch).create_token(req).await }
        })
        .await?;
    let info = resp
        .token
        .ok_or_else(|| CliError::other("the server's answer has no token"))?;
    let view = CreatedTokenView {
        token: TokenView::from(&info),
        secret: resp.secret,
    };
    // Logged without the secret.
    tracing::info!(token = %view.token.name, role = %view.token.role, "token created");
    if json {
        print_json(&view);
        return Ok(());
    }
    println!(
        "token {} created: role {}, expires {}",
        view.token.name,
        view.token.role,
        expiry_word(view.token.expires_at_ms, now_ms())
    );
    println!("secret: {}", view.secret);
    println!(
        "This secret will not be shown again: store it now (a file for --token-file, or BLIXARD_TOKEN)."
    );
    Ok(())
}

/// `token list`: every token, as a JSON array or a table.
async fn list(client: &mut BlixardClient, json: bool) -> Result<(), CliError> {
    let resp = client
        .call(|ch| async move {
            TokenServiceClient::new(ch)
                .list_tokens(pb::ListTokensRequest {})
                .await
        })
        .await?;
    let views: Vec<TokenView> = resp.tokens.iter().map(TokenView::from).collect();
    if json {
        print_json(&views);
        return Ok(());
    }
    let now = now_ms();
    let rows: Vec<Vec<String>> = views
        .iter()
        .map(|t| {
            vec![
                t.name.clone(),
                t.role.clone(),
                expiry_word(t.expires_at_ms, now),
            ]
        })
        .collect();
    print_table(&["NAME", "ROLE", "EXPIRES"], &rows);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(v: &serde_json::Value) -> Vec<String> {
        let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
        k.sort_unstable();
        k
    }

    #[test]
    fn default_names_say_the_role_and_the_second() {
        assert_eq!(
            default_name(Role::Viewer, 1_700_000_000_999),
            "viewer-1700000000"
        );
        assert!(blixard_shared::validate::dns_label("name", &default_name(Role::Admin, 1)).is_ok());
    }

    #[test]
    fn json_keys_are_the_documented_ones() {
        let info = pb::TokenInfo {
            name: "ci".into(),
            role: "operator".into(),
            created_at_ms: 1,
            expires_at_ms: 0,
            labels: vec!["team=web".into()],
        };
        let listed = serde_json::to_value(TokenView::from(&info)).unwrap();
        assert_eq!(
            keys(&listed),
            ["created_at_ms", "expires_at_ms", "labels", "name", "role"]
        );
        let created = serde_json::to_value(CreatedTokenView {
            token: TokenView::from(&info),
            secret: "blxt_s".into(),
        })
        .unwrap();
        assert_eq!(
            keys(&created),
            [
                "created_at_ms",
                "expires_at_ms",
                "labels",
                "name",
                "role",
                "secret"
            ]
        );
        assert_eq!(created["secret"], "blxt_s");
    }
}
