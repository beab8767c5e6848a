//! `blixard policy reload|get`: the cluster's Cedar policies (admin). A
//! reload is judged by the daemon: a text that does not parse or validate
//! against the schema comes back as a usage error naming the line, and
//! the policies in force stay.

use super::args::PolicyCmd;
use super::output::print_json;
use super::CliError;
use blixard_shared::limits::MAX_POLICY_BYTES;
use blixard_shared::proto::v1 as pb;
use blixard_shared::proto::v1::policy_service_client::PolicyServiceClient;
use blixard_shared::BlixardClient;
use std::path::Path;

/// Reads a policy or schema file, refusing one the daemon would refuse for
/// its size before it is sent.
fn read(path: &Path, flag: &str) -> Result<String, CliError> {
    let len = std::fs::metadata(path)
        .map_err(|e| CliError::usage(format!("{flag} {}: {e}", path.display())))?
        .len();
    if len > MAX_POLICY_BYTES as u64 {
        return Err(CliError::usage(format!(
            "{flag} {}: larger than {MAX_POLICY_BYTES} bytes",
            path.display()
        )));
    }
    std::fs::read_to_string(path)
        .map_err(|e| CliError::usage(format!("{flag} {}: {e}", path.display())))
}

/// Runs one `policy` command.
pub async fn run(client: &mut BlixardClient, cmd: PolicyCmd, json: bool) -> Result<(), CliError> {
    match cmd {
        PolicyCmd::Reload { files, schema } => {
            let mut policies = String::new();
            for f in &files {
                policies.push_str(&read(f, "--file")?);
                policies.push('\n');
            }
            let schema = match &schema {
                Some(s) => read(s, "--schema")?,
                None => String::new(),
            };
            let req = pb::ReloadPoliciesRequest { policies, schema };
            let resp = client
                .call(|ch| {
                    let req = req.clone();
                    async move { PolicyServiceClient::new(ch).reload_policies(req).await }
                })
                .await?;
            if json {
                print_json(&serde_json::json!({ "revision": resp.revision }));
            } else {
                println!("policies in force from revision {}", resp.revision);
            }
            Ok(())
        }
        PolicyCmd::Get => {
            let resp = client
                .call(|ch| async move {
                    PolicyServiceClient::new(ch)
                        .get_policies(pb::GetPoliciesRequest {})
                        .await
                })
                .await?;
            if json {
                print_json(&serde_json::json!({
                    "revision": resp.revision,
                    "policies": resp.policies,
                    "schema": resp.schema,
                }));
            } else {
                print!("{}", resp.policies);
            }
            Ok(())
        }
    }
}
