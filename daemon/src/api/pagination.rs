//! Page sizes and page tokens of list calls. A token is the key of the last
//! item of the previous page, so pages stay correct while the list changes.

use blixard_shared::limits::{DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE};
use tonic::Status;

/// The page size to use: 0 means the default, anything above the maximum is clamped.
pub fn page_size(requested: u32) -> usize {
    match requested {
        0 => DEFAULT_PAGE_SIZE as usize,
        n => n.min(MAX_PAGE_SIZE) as usize,
    }
}

/// Parses a node-list token (the last node id of the previous page).
pub fn node_token(token: &str) -> Result<Option<u64>, Status> {
    if token.is_empty() {
        return Ok(None);
    }
    token
        .parse()
        .map(Some)
        .map_err(|_| Status::invalid_argument("page_token: not a token returned by ListNodes"))
}

/// Checks a VM-list token (the last VM name of the previous page).
pub fn vm_token(token: &str) -> Result<Option<&str>, Status> {
    if token.is_empty() {
        return Ok(None);
    }
    blixard_shared::validate::vm_name(token)
        .map_err(|_| Status::invalid_argument("page_token: not a token returned by ListVms"))?;
    Ok(Some(token))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_defaulted_and_clamped() {
        assert_eq!(page_size(0), 100);
        assert_eq!(page_size(5), 5);
        assert_eq!(page_size(1_000_000), 1000);
    }

    #[test]
    fn bad_tokens_are_invalid_arguments() {
        assert_eq!(
            node_token("x").unwrap_err().code(),
            tonic::Code::InvalidArgument
        );
        assert_eq!(
            vm_token("NOT A NAME").unwrap_err().code(),
            tonic::Code::InvalidArgument
        );
        assert_eq!(node_token("").unwrap(), None);
    }
}
