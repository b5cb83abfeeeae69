//! The proxy's limits and auth, as the CLI (or a library user) sets them.

use std::time::Duration;

use crate::FeedbackLimitSettings;

/// Limits and auth of the proxy.
#[derive(Debug, Clone)]
pub struct ProxySettings {
    /// Accepted client bearer tokens; empty = no auth.
    pub client_keys: Vec<String>,
    /// Bearer tokens of `/admin/*`; empty = admin endpoints refused.
    pub admin_keys: Vec<String>,
    /// Largest request body in bytes.
    pub body_limit: usize,
    /// Concurrent requests per client key; with auth off every caller is anonymous and
    /// they share this one limit (a token that is not checked is not an identity).
    pub per_client_concurrency: usize,
    /// Limit for one routed request, upstream calls included.
    pub request_timeout: Duration,
    /// Open connections at once; a connection past it is closed at accept.
    pub max_connections: usize,
    /// Longest wait for a request's headers (also between requests on a kept-alive
    /// connection): a client that never finishes them is disconnected.
    pub header_read_timeout: Duration,
    /// While a streamed request is being verified, an SSE comment goes out this often so
    /// clients and intermediaries do not time the stream out.
    pub stream_keepalive: Duration,
    /// Longest wait for a request's whole body once its headers are in: a client that
    /// stalls mid-body gets a 408 and its connection is closed.
    pub body_read_timeout: Duration,
    /// How much feedback one client key may send and fold into the shared belief.
    pub feedback: FeedbackLimitSettings,
}

impl Default for ProxySettings {
    fn default() -> Self {
        Self {
            client_keys: Vec::new(),
            admin_keys: Vec::new(),
            body_limit: 1 << 20,
            per_client_concurrency: 64,
            request_timeout: Duration::from_secs(300),
            max_connections: 4096,
            header_read_timeout: Duration::from_secs(10),
            stream_keepalive: Duration::from_secs(2),
            body_read_timeout: Duration::from_secs(30),
            feedback: FeedbackLimitSettings::default(),
        }
    }
}
