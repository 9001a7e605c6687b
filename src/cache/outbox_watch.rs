//! The cache outbox watch, run by every instance whatever its role. Every
//! `outbox.poll_ms` it looks at the outbox and the cache epoch: an empty
//! outbox gives this instance's reads a *permit* to use the cache, in that
//! epoch, for `outbox.permit_ms` counted from when the look started; rows
//! withdraw it. When this instance found that Redis lost writes of the
//! current epoch, it inserts the *mark*. While rows exist, it delivers them:
//! the mark first, in one step that begins a new epoch (every older entry is
//! unreachable, every waiting key moot), then the waiting keys
//! (`FOR UPDATE SKIP LOCKED`, so that instances do not fight over them),
//! deleted once Redis acknowledged them, in one transaction; announcements
//! go once they are old and nothing else waits. It does the same once at
//! start-up, before the API serves. Why this keeps stale entries from being
//! served is argued in docs/SPEC.md, section 8.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use tokio_util::sync::CancellationToken;

use super::{
    Cache, Epoch,
    announcements::{self, Announcements},
    outbox::{self, OutboxError},
};
use crate::{
    config::OutboxSettings,
    metrics::Metrics,
    store::{At, Step, Store, StoreError},
};

/// Keys claimed per delivery transaction (one pipeline of `DEL`s).
const CLAIM_KEYS: i64 = 5_000;

/// Announcements older than this many permits are deleted by any instance
/// once nothing else waits: the consumer that made one has long committed
/// with it, or died.
const ANNOUNCEMENT_PERMITS: u32 = 5;

/// Looks at the outbox and delivers what it holds.
#[derive(Debug, Clone)]
pub struct OutboxWatch {
    store: Store,
    cache: Cache,
    /// This instance's own announcements (its consumer's).
    announcements: Arc<Announcements>,
    metrics: Arc<Metrics>,
    settings: OutboxSettings,
}

/// What one delivery pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Delivered {
    /// A new epoch began (the mark was delivered).
    pub epoch: bool,
    /// Keys deleted in Redis and from the outbox.
    pub keys: usize,
    /// Announcements deleted (this instance's, or old ones).
    pub announcements: u64,
}

impl OutboxWatch {
    pub fn new(
        store: Store,
        cache: Cache,
        announcements: Arc<Announcements>,
        metrics: Arc<Metrics>,
        settings: OutboxSettings,
    ) -> Self {
        Self {
            store,
            cache,
            announcements,
            metrics,
            settings,
        }
    }

    /// Counts the outbox rows and reads the epoch: no rows grant the cache
    /// permit until `permit` after this call started; rows withdraw it. A
    /// distrusted epoch makes this instance insert the mark (a row, so the
    /// permit is withdrawn). A failed or late look changes nothing, so the
    /// permit lapses by itself. Returns the rows.
    pub async fn look(&self) -> Result<i64, OutboxError> {
        let started = Instant::now();
        let permit = self.settings.permit();
        let look = async { outbox::look(&self.store.outbox_client().await?).await };
        let Ok(look) = tokio::time::timeout(permit, look).await else {
            return Err(OutboxError::Late(permit));
        };
        let look = look?;
        let epoch = Epoch(look.epoch);
        let mut rows = look.rows;
        if self.cache.distrusts(epoch) {
            outbox::mark(&self.store.outbox_client().await?).await?;
            rows = rows.max(1);
        }
        self.metrics.outbox_rows(rows);
        if rows == 0 {
            self.cache.permit_until(started + permit, epoch);
        } else {
            self.cache.withdraw(rows, epoch);
        }
        Ok(rows)
    }

    /// Delivers the outbox while Redis answers: the mark, then the keys,
    /// until none is left or Redis does not acknowledge; then this
    /// instance's announcements once Redis answers it, and anyone's old ones.
    pub async fn deliver(&self) -> Result<Delivered, StoreError> {
        let mut delivered = Delivered::default();
        let mut acknowledged = false;
        if self.cache.is_connected() {
            delivered.epoch = self.deliver_mark().await?;
            loop {
                let Some(keys) = self.deliver_keys().await? else {
                    break;
                };
                delivered.keys += keys;
                if keys < usize::try_from(CLAIM_KEYS).unwrap_or(usize::MAX) {
                    acknowledged = true;
                    break;
                }
            }
        }
        if acknowledged && self.announcements.any() && self.deletes_acknowledged().await? {
            let client = self.store.client().await?;
            delivered.announcements += announcements::withdraw(&self.announcements, &client).await;
        }
        let client = self.store.client().await?;
        let age = self.settings.permit() * ANNOUNCEMENT_PERMITS;
        let expired = outbox::expire_announcements(&client, age).await?;
        self.metrics
            .outbox_delivered(usize::try_from(expired).unwrap_or(usize::MAX));
        delivered.announcements += expired;
        Ok(delivered)
    }

    /// Whether Redis takes deletes now, in the current epoch, with its marker
    /// in place. An empty outbox proves nothing, nor does an answer to PING:
    /// a read-only replica answers both, and refuses every delete.
    async fn deletes_acknowledged(&self) -> Result<bool, StoreError> {
        let epoch = {
            let mut client = self.store.client().await?;
            let tx = client.transaction().await.at(Step::Outbox)?;
            Epoch(outbox::epoch(&tx).await?)
        };
        Ok(self.cache.deletes_acknowledged(epoch).await)
    }

    /// Delivers the mark, if one is pending, in one transaction: waits for
    /// the batches in flight (the exclusive epoch lock), writes a new
    /// epoch's marker to Redis, then commits the epoch and deletes the mark
    /// and every waiting key. A mark younger than `outbox.permit_ms` waits:
    /// an instance that found lost writes marks without an announcement, and
    /// permits granted before the mark must lapse before batches stop
    /// deleting the keys of the old epoch. True when a new epoch began.
    async fn deliver_mark(&self) -> Result<bool, StoreError> {
        let mut client = self.store.client().await?;
        let tx = client.transaction().await.at(Step::Outbox)?;
        if !outbox::claim_mark(&tx, self.settings.permit()).await? {
            return Ok(false);
        }
        let previous = Epoch(outbox::epoch(&tx).await?);
        let epoch = Epoch::random();
        if let Err(e) = self.cache.mark_epoch(epoch, previous).await {
            tracing::debug!(error = %e, "cannot write the new cache epoch's marker");
            return Ok(false); // rolled back as it is dropped
        }
        outbox::begin_epoch(&tx, epoch.0).await?;
        tx.commit().await.at(Step::Outbox)?;
        self.metrics.outbox_delivered(1);
        self.metrics.cache_epoch_begun();
        tracing::info!(%epoch, %previous, "a new cache epoch began: every older entry is unreachable");
        Ok(true)
    }

    /// Deletes up to [`CLAIM_KEYS`] waiting keys in Redis and, once Redis
    /// acknowledged them with the current epoch's marker in place, from the
    /// outbox; returns how many, `None` when Redis did not acknowledge.
    async fn deliver_keys(&self) -> Result<Option<usize>, StoreError> {
        let mut client = self.store.client().await?;
        let tx = client.transaction().await.at(Step::Outbox)?;
        let keys = outbox::claim_keys(&tx, CLAIM_KEYS).await?;
        if keys.is_empty() {
            return Ok(Some(0));
        }
        let epoch = Epoch(outbox::epoch(&tx).await?);
        if !self.cache.invalidate(epoch, keys.clone()).await {
            return Ok(None); // the keys stay (rolled back as it is dropped)
        }
        outbox::delete_keys(&tx, &keys).await?;
        tx.commit().await.at(Step::Outbox)?;
        self.metrics.outbox_delivered(keys.len());
        Ok(Some(keys.len()))
    }

    /// Delivers and looks once, then gives the tracking connection a moment
    /// to believe the epoch; for start-up, before the API serves.
    pub async fn settle(&self) {
        if let Err(e) = self.deliver().await {
            tracing::warn!(error = %e, "cannot deliver the cache outbox at start-up");
        }
        match self.look().await {
            Ok(0) => {
                if !self.cache.wait_usable(Duration::from_secs(1)).await {
                    tracing::debug!("Redis not believed yet at start-up");
                }
            }
            Ok(rows) => {
                tracing::warn!(
                    rows,
                    "the cache outbox is not empty; reads bypass the cache until it is delivered"
                );
            }
            Err(e) => tracing::warn!(error = %e, "cannot look at the cache outbox at start-up"),
        }
    }

    /// Looks every `outbox.poll_ms` and delivers while rows exist, until
    /// `shutdown`. A failed look is followed by the next one at the same
    /// interval, not after a `retry::Backoff`: this is a poll, and waiting
    /// longer would only keep reads off the cache longer (the outbox pool
    /// connects again on demand).
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
                Ok(0) => Ok(Delivered::default()),
                Ok(_) => match self.deliver().await {
                    // Delivered: look again now, so that the permit returns at once.
                    Ok(done) if done != Delivered::default() => self.look().await.map(|_| done),
                    other => other.map_err(OutboxError::from),
                },
                Err(e) => Err(e),
            };
            match result {
                Ok(done) => {
                    if failing {
                        tracing::info!("the cache outbox can be read again");
                        failing = false;
                    }
                    if done.keys > 0 {
                        tracing::info!(
                            keys = done.keys,
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
