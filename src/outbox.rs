//! The cache outbox watch, run by every instance whatever its role. Every
//! `outbox.poll_ms` it counts the rows of the outbox: an empty outbox gives
//! this instance's reads a *permit* to use the cache for `outbox.permit_ms`,
//! counted from when the look started; rows withdraw it. While rows exist, it
//! delivers them: claims the oldest (`FOR UPDATE SKIP LOCKED`, so that
//! instances do not fight over them), deletes their keys in Redis and
//! deletes them once Redis acknowledged, in one transaction. It does the same
//! once at start-up, before the API serves. Why this keeps stale entries from
//! being served is argued in docs/SPEC.md, section 8.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use tokio_util::sync::CancellationToken;

use crate::{
    cache::Cache,
    config::OutboxSettings,
    metrics::Metrics,
    store::{At, Step, Store, StoreError, outbox},
};

/// Outbox rows claimed per delivery transaction.
const CLAIM_ROWS: i64 = 20;

/// Announcements older than this many permits are deleted by any instance:
/// the consumer that made one has long committed with it, or died.
const ANNOUNCEMENT_PERMITS: u32 = 5;

/// Why a look at the outbox found nothing out.
#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the database did not count the cache outbox within {0:?}")]
    Late(Duration),
}

/// Looks at the outbox and delivers what it holds.
#[derive(Debug, Clone)]
pub struct OutboxWatch {
    store: Store,
    cache: Cache,
    metrics: Arc<Metrics>,
    settings: OutboxSettings,
}

impl OutboxWatch {
    pub fn new(
        store: Store,
        cache: Cache,
        metrics: Arc<Metrics>,
        settings: OutboxSettings,
    ) -> Self {
        Self {
            store,
            cache,
            metrics,
            settings,
        }
    }

    /// Counts the outbox rows: none grants the cache permit until `permit`
    /// after this call started; some withdraw it. A failed or late look
    /// changes nothing, so the permit lapses by itself. Returns the rows.
    pub async fn look(&self) -> Result<i64, OutboxError> {
        let started = Instant::now();
        let permit = self.settings.permit();
        let Ok(rows) = tokio::time::timeout(permit, self.store.outbox_rows()).await else {
            return Err(OutboxError::Late(permit));
        };
        let rows = rows?;
        self.metrics.outbox_rows(rows);
        if rows == 0 {
            self.cache.permit_until(started + permit);
        } else {
            self.cache.withdraw(rows);
        }
        Ok(rows)
    }

    /// Delivers the outbox, oldest rows first, until it is empty of what can
    /// be delivered now or Redis does not acknowledge; returns the rows
    /// delivered. Announcements go once they are old enough.
    pub async fn deliver(&self) -> Result<usize, StoreError> {
        let announcement_age = self.settings.permit() * ANNOUNCEMENT_PERMITS;
        let mut delivered = 0;
        loop {
            let mut client = self.store.client().await?;
            let tx = client.transaction().await.at(Step::Outbox)?;
            let with_keys = self.cache.is_connected();
            let rows = outbox::claim(&tx, with_keys, announcement_age, CLAIM_ROWS).await?;
            if rows.is_empty() {
                return Ok(delivered);
            }
            let keys: Vec<String> = rows.iter().flat_map(|r| r.keys.iter().cloned()).collect();
            if !self.cache.invalidate(keys).await {
                // The rows stay (the transaction rolls back as it is dropped).
                return Ok(delivered);
            }
            let ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
            outbox::delete(&tx, &ids).await?;
            tx.commit().await.at(Step::Outbox)?;
            delivered += rows.len();
            self.metrics.outbox_delivered(rows.len());
            let now = time::OffsetDateTime::now_utc();
            for row in rows.iter().filter(|r| !r.keys.is_empty()) {
                let delay = (now - row.created_at).try_into().unwrap_or_default();
                self.metrics.invalidation_delivered(delay);
            }
            if ids.len() < usize::try_from(CLAIM_ROWS).unwrap_or(usize::MAX) {
                return Ok(delivered);
            }
        }
    }

    /// Delivers and looks once; for start-up, before the API serves.
    pub async fn settle(&self) {
        if let Err(e) = self.deliver().await {
            tracing::warn!(error = %e, "cannot deliver the cache outbox at start-up");
        }
        match self.look().await {
            Ok(0) => {}
            Ok(rows) => {
                tracing::warn!(
                    rows,
                    "the cache outbox is not empty; reads bypass the cache until it is delivered"
                );
            }
            Err(e) => tracing::warn!(error = %e, "cannot look at the cache outbox at start-up"),
        }
    }

    /// Looks every `outbox.poll_ms` and delivers while rows exist, until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(self.settings.poll());
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut failing = false;
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            let result = match self.look().await {
                Ok(0) => Ok(0),
                Ok(_) => match self.deliver().await {
                    // Delivered: look again now, so that the permit returns at once.
                    Ok(delivered) if delivered > 0 => self.look().await.map(|_| delivered),
                    other => other.map_err(OutboxError::from),
                },
                Err(e) => Err(e),
            };
            match result {
                Ok(delivered) => {
                    if failing {
                        tracing::info!("the cache outbox can be read again");
                        failing = false;
                    }
                    if delivered > 0 {
                        tracing::info!(
                            rows = delivered,
                            "delivered cache invalidations from the outbox"
                        );
                    }
                }
                Err(e) if !failing => {
                    tracing::warn!(error = %e, "cannot watch the cache outbox; reads bypass the cache until it can");
                    failing = true;
                }
                Err(_) => {}
            }
        }
    }
}
