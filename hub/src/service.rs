//! The gRPC services: thin handlers that read the [`Caller`](crate::identity::Caller),
//! run a rule through the [`Store`], and stream changes.

mod agent;
mod approver;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::store::Store;

pub use agent::AgentApi;
pub use approver::ApproverApi;

/// Hub behaviour fixed at start-up.
#[derive(Clone, Debug)]
pub struct HubConfig {
    /// TTL of requests whose rule sets none.
    pub default_ttl: Duration,
    /// Interval between heartbeats on approver watch streams.
    pub heartbeat: Duration,
}

impl Default for HubConfig {
    fn default() -> Self {
        Self {
            default_ttl: Duration::from_secs(300),
            heartbeat: Duration::from_secs(5),
        }
    }
}

/// State shared by all handlers.
#[derive(Debug)]
pub struct Hub<S> {
    /// Where requests live.
    pub store: S,
    /// Start-up settings.
    pub config: HubConfig,
    /// Flips to `true` when the hub shuts down, ending streams and background tasks
    /// (a graceful server shutdown would otherwise wait forever for open streams).
    stopping: watch::Sender<bool>,
}

impl<S: Store> Hub<S> {
    /// A hub over `store`.
    #[must_use]
    pub fn new(store: S, config: HubConfig) -> Arc<Self> {
        Arc::new(Self {
            store,
            config,
            stopping: watch::Sender::new(false),
        })
    }
}

impl<S> Hub<S> {
    /// Tells streams and background tasks to finish.
    pub fn stop(&self) {
        self.stopping.send_replace(true);
    }

    /// Completes once [`stop`](Self::stop) was called.
    pub fn stopped(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut rx = self.stopping.subscribe();
        async move {
            // An error means the hub is gone, which is as stopped as it gets.
            let _gone = rx.wait_for(|stopping| *stopping).await;
        }
    }
}

/// Requests fetched per `changed_since` call on streams.
const STREAM_BATCH: usize = 512;
/// Messages buffered per stream before the producer waits for the client.
const STREAM_BUFFER: usize = 64;
