//! The crate both sides of Blixard use: the generated `blixard.v1` API,
//! the limits every component enforces, the validation rules for requests
//! (so the CLI can fail fast with the same words the daemon would use), and
//! a client that follows the leader across a list of endpoints.

pub mod auth;
pub mod backoff;
pub mod backup;
pub mod client;
pub mod constraint;
pub mod credentials;
pub mod leader_hint;
pub mod limits;
pub mod ops;
pub mod paging;
pub mod request_id;
pub mod sim_hooks;
pub mod telemetry;
pub mod text;
pub mod time;
pub mod validate;
pub mod words;

/// The generated `blixard.v1` protobuf types, clients and servers.
pub mod proto {
    /// Version 1 of the public API (package `blixard.v1`).
    #[allow(clippy::all, missing_docs)]
    pub mod v1 {
        tonic::include_proto!("blixard.v1");

        /// Encoded descriptor set of every `blixard.v1` file, served through
        /// gRPC reflection so grpcurl works without the `.proto` files.
        pub const FILE_DESCRIPTOR_SET: &[u8] =
            tonic::include_file_descriptor_set!("blixard_descriptor");
    }
}

pub use client::{BlixardClient, ClientError};
pub use credentials::{ApiChannel, Credentials};
