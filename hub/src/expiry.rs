//! The background task that expires pending requests at their deadline.
//!
//! It sleeps until the earliest deadline (or until shortly after any change, which may
//! have added an earlier one), then applies each due request's on-timeout outcome through the store, so
//! agents and watchers hear about it like any other change.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use crate::rules;
use crate::service::Hub;
use crate::store::Store;

/// Longest sleep between sweeps, in case a clock jump confuses the deadline maths.
const MAX_SLEEP: Duration = Duration::from_secs(30);
/// Pause after a store failure before trying again.
const RETRY: Duration = Duration::from_secs(1);
/// After a change, wait this long before sweeping, so a burst of changes costs one sweep
/// rather than one per change (a new request's TTL is at least a second anyway).
const DEBOUNCE: Duration = Duration::from_millis(200);

/// Expires due requests until `shutdown` completes or the store goes away.
pub async fn run<S: Store>(hub: Arc<Hub<S>>, shutdown: impl Future<Output = ()>) {
    let mut changes = hub.store.subscribe();
    tokio::pin!(shutdown);
    loop {
        changes.borrow_and_update();
        let now = rules::now_unix_ms();
        let sleep = match sweep(&hub, now).await {
            Ok(Some(next)) => {
                Duration::from_millis(u64::try_from(next.saturating_sub(now)).unwrap_or(0))
                    .min(MAX_SLEEP)
            }
            Ok(None) => MAX_SLEEP,
            Err(err) => {
                tracing::error!(error = %err, "expiry sweep failed");
                RETRY
            }
        };
        tokio::select! {
            () = tokio::time::sleep(sleep) => {}
            changed = changes.changed() => {
                if changed.is_err() {
                    return;
                }
                tokio::select! {
                    () = tokio::time::sleep(DEBOUNCE) => {}
                    () = &mut shutdown => return,
                }
            }
            () = &mut shutdown => return,
        }
    }
}

/// Expires every request due at `now`; returns the next deadline.
async fn sweep<S: Store>(hub: &Hub<S>, now: i64) -> Result<Option<i64>, crate::error::ApiError> {
    let (due, next) = hub.store.due(now).await?;
    for id in due {
        let expired = hub
            .store
            .update(
                &id,
                None,
                crate::store::Note {
                    actor: "hub",
                    action: "expire",
                },
                |r| rules::expire(r, now),
            )
            .await?;
        tracing::info!(id = %expired.id, verdict = expired.decision.as_ref().map(|d| d.verdict), "request expired");
    }
    Ok(next)
}
