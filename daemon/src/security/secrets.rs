//! Client and join token secrets: made from the OS's random source, shown
//! once, and kept only as a SHA-256 hash (the replicated state, snapshots
//! and backups never hold a usable secret).

use blixard_shared::auth::{JOIN_TOKEN_PREFIX, TOKEN_PREFIX};
use ring::rand::{SecureRandom, SystemRandom};
use sha2::{Digest, Sha256};

/// Random bytes in a secret: 256 bits, beyond guessing.
const SECRET_BYTES: usize = 32;

/// The OS random source failed (it does not, on Linux, once booted).
#[derive(Debug, thiserror::Error)]
#[error("the system random source failed")]
pub struct RandomFailed;

fn random_hex() -> Result<String, RandomFailed> {
    let mut bytes = [0u8; SECRET_BYTES];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| RandomFailed)?;
    Ok(hex(&bytes))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A new client token secret (`blxt_` and 64 hex digits).
pub fn new_client_token() -> Result<String, RandomFailed> {
    Ok(format!("{TOKEN_PREFIX}{}", random_hex()?))
}

/// A new join token secret (`blxj_` and 64 hex digits).
pub fn new_join_token() -> Result<String, RandomFailed> {
    Ok(format!("{JOIN_TOKEN_PREFIX}{}", random_hex()?))
}

/// The hash under which the state keeps a token: SHA-256, lowercase hex.
/// A 256-bit random secret needs no salt or slow hash: it cannot be
/// guessed, only stolen, and the hash does not give it back.
pub fn hash_token(secret: &str) -> String {
    hex(&Sha256::digest(secret.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_fresh_prefixed_and_hashed_to_hex() {
        let a = new_client_token().unwrap();
        let b = new_client_token().unwrap();
        assert_ne!(a, b);
        assert!(a.starts_with(TOKEN_PREFIX) && a.len() == TOKEN_PREFIX.len() + 64);
        assert!(new_join_token().unwrap().starts_with(JOIN_TOKEN_PREFIX));
        let h = hash_token(&a);
        assert_eq!(h.len(), 64);
        assert!(h
            .bytes()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
        assert_ne!(h, hash_token(&b));
    }
}
