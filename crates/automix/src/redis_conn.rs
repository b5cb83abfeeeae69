//! The one Redis connection helper: a client opened lazily (a replica starts while Redis is
//! down), one multiplexed connection manager reused by every call, and a time limit on
//! each call, so a stalled Redis costs a caller at most that limit. The belief store and
//! the shadow's row stream both talk to Redis through it.

use std::fmt::Debug;
use std::time::Duration;

use crate::belief_store::StoreError;
use crate::config::AutomixSettings;
use crate::error::{AutomixError, Result};

/// A lazily connected Redis client with a per-call time limit.
pub struct RedisConn {
    client: redis::Client,
    conn: tokio::sync::Mutex<Option<redis::aio::ConnectionManager>>,
    timeout: Duration,
}

impl Debug for RedisConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL may hold a password: never print it.
        f.debug_struct("RedisConn")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl RedisConn {
    /// A client of `url` (`redis://host:port/db`, or `rediss://` over TLS, verified against
    /// `ca_pem` when given, else the system's trust store); connects on first use.
    pub fn new(
        url: &str,
        timeout: Duration,
        ca_pem: Option<Vec<u8>>,
    ) -> std::result::Result<Self, StoreError> {
        // The URL may hold a password: errors are the client's kind, never the URL.
        let invalid = |e: redis::RedisError| StoreError::Unreachable(format!("{:?}", e.kind()));
        let client = match ca_pem {
            Some(root_cert) => redis::Client::build_with_tls(
                url,
                redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(root_cert),
                },
            ),
            None => redis::Client::open(url),
        }
        .map_err(invalid)?;
        Ok(Self {
            client,
            conn: tokio::sync::Mutex::new(None),
            timeout,
        })
    }

    async fn connection(&self) -> std::result::Result<redis::aio::ConnectionManager, StoreError> {
        let mut conn = self.conn.lock().await;
        if let Some(c) = conn.as_ref() {
            return Ok(c.clone());
        }
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(self.timeout)
            .set_response_timeout(self.timeout)
            .set_number_of_retries(1);
        let made = tokio::time::timeout(
            self.timeout * 2,
            self.client.get_connection_manager_with_config(config),
        )
        .await
        .map_err(|_| StoreError::Unreachable("connect timed out".into()))?
        .map_err(|e| StoreError::Unreachable(e.to_string()))?;
        *conn = Some(made.clone());
        Ok(made)
    }

    /// Runs `f` on the connection within the time limit.
    pub async fn run<T>(
        &self,
        f: impl AsyncFnOnce(redis::aio::ConnectionManager) -> redis::RedisResult<T>,
    ) -> std::result::Result<T, StoreError> {
        let conn = self.connection().await?;
        match tokio::time::timeout(self.timeout, f(conn)).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(StoreError::Unreachable(e.to_string())),
            Err(_) => Err(StoreError::Unreachable("request timed out".into())),
        }
    }
}

/// The connection `a.belief_store` names (a Redis URL, checked at load), with its time
/// limit and `belief_store_ca_file`: the belief store's and the row stream's.
pub fn from_settings(a: &AutomixSettings) -> Result<RedisConn> {
    let timeout = Duration::from_millis(a.belief_store_timeout_ms.max(1));
    let ca = match &a.belief_store_ca_file {
        Some(path) => Some(std::fs::read(path).map_err(|e| AutomixError::Setting {
            key: "automix.belief_store_ca_file",
            message: format!("{}: {e}", path.display()),
        })?),
        None => None,
    };
    RedisConn::new(&a.belief_store, timeout, ca).map_err(|e| AutomixError::Setting {
        key: "automix.belief_store",
        message: e.to_string(),
    })
}
