//! The state every request is handled against. A leaf: it names the parts (configuration,
//! store, fault injection, TPM challenges) and depends on no handler, so the API, transport and
//! authentication modules can all use it without a cycle.

use std::sync::Arc;
use zeroize::Zeroizing;

use crate::auth::tpm::Challenges;
use crate::config::EmulatorConfig;
use crate::faults::Faults;
use crate::store::Store;

/// Everything a handler needs.
#[derive(Debug)]
pub(crate) struct AppState {
    pub config: EmulatorConfig,
    pub hubs: Vec<String>,
    pub store: Store,
    pub faults: Faults,
    pub service_key_b64: Zeroizing<String>,
    pub tpm: Challenges,
    /// The names this service answers to (those in its server certificate), lowercase: a
    /// service-API token must be minted for one of them.
    pub host_names: Vec<String>,
    /// The port it listens on (a token's host may carry it).
    pub port: u16,
    /// Bumped whenever hub records changed that connected devices may need (a queued
    /// cloud-to-device message, a desired-properties update), in this process or another.
    pub hub_changes: tokio::sync::watch::Sender<u64>,
    /// The connected hub devices, so a new connection of a device closes its old one.
    pub hub_sessions: crate::hub::session::Sessions,
    /// The dev issuing CA for CSRs, loaded or created on first need.
    pub issuing_ca: crate::issuance::IssuingCa,
    /// The client custom allocation webhooks are called with.
    pub webhooks: crate::custom_allocation::WebhookClient,
}

/// The per-connection facts: the client's certificate chain, leaf first (empty without mTLS).
pub(crate) type PeerChain = Arc<Vec<Vec<u8>>>;
