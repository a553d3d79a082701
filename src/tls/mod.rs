//! TLS for pgha: the cluster's certificates ([`pki`]) and the rustls configurations of the Raft
//! transport, the REST API and its clients ([`config`], with pgha's verifiers in `verify`).
//! Inputs are the cluster CA and a node's PEM files; outputs are PEM text, rustls configurations
//! and the [`Identity`] (`pgha://<scope>/member|client/<name>`) of a verified peer. This module
//! never opens a socket, never writes a file, and never accepts a peer that does not verify
//! against the cluster CA (DESIGN.md, "Network and security"). Only the ring crypto provider is
//! used (STACK.md item 1).

pub mod config;
pub mod pki;
mod verify;

pub use config::{
    api_client_config, api_server_config, describe_handshake_error, load_ca, load_client_auth,
    peer_identity_from_certs, peer_identity_from_conn, pinned_client_config, raft_client_config,
    raft_server_config, server_name, NodeTls, TlsError, HTTP11_ALPN, RAFT_ALPN,
};
pub use pki::{CaPem, CertPem, Identity, PkiError, Role};
pub use verify::PinnedCa;
