//! Liveness and readiness: live means the process answers; ready means the
//! database answers and every partition this instance holds is consumed,
//! without a failure or a stall.
//! Redis is reported but does not decide readiness: the service answers
//! correctly without it.

use std::{sync::Arc, time::Duration};

use poem::web::Data;
use poem_openapi::{ApiResponse, Object, OpenApi, Tags, payload::Json};

use super::State;

#[derive(Debug, Tags)]
enum Tag {
    /// Health checks for orchestrators and load balancers.
    Health,
}

/// The health endpoints.
#[derive(Debug)]
pub struct HealthApi;

/// Liveness.
#[derive(Debug, Object)]
pub struct Liveness {
    /// Always `live`.
    pub status: String,
}

/// One partition's consumer.
#[derive(Debug, Object)]
pub struct PartitionHealth {
    /// Partition number.
    pub partition: i32,
    /// True while this instance holds the partition's lease (another instance
    /// consumes it otherwise).
    pub owned: bool,
    /// True while its pipeline is consuming.
    pub running: bool,
    /// Next offset committed to PostgreSQL; null before the first commit.
    #[oai(nullable)]
    pub committed_offset: Option<i64>,
    /// Latest high watermark from the broker; null before the first fetch.
    #[oai(nullable)]
    pub high_watermark: Option<i64>,
    /// Records on the broker not yet committed.
    pub lag: i64,
    /// Last error of its pipeline (SQLSTATE, server message and failing
    /// step for database errors), cleared when it runs again.
    #[oai(nullable)]
    pub last_error: Option<String>,
    /// Seconds since the last commit (or since this instance took the
    /// partition); null when not held here.
    #[oai(nullable)]
    pub seconds_since_commit: Option<f64>,
    /// True when records wait and nothing was committed for
    /// `consumer.stall_after_ms`.
    pub stalled: bool,
}

/// Readiness, with the state of each dependency.
#[derive(Debug, Object)]
pub struct Readiness {
    /// `ready` or `not_ready`.
    pub status: String,
    /// `up` or `down`.
    pub database: String,
    /// `up` or `down` (informational: reads fall back to PostgreSQL).
    pub cache: String,
    /// Rows in the cache outbox at this instance's last look (null before the
    /// first): invalidations Redis has not acknowledged yet, and announcements
    /// of them. While there is any, reads answer from PostgreSQL
    /// (informational, like `cache`).
    #[oai(nullable)]
    pub cache_outbox: Option<i64>,
    /// Consumers, one per partition.
    pub partitions: Vec<PartitionHealth>,
}

#[derive(Debug, ApiResponse)]
pub enum ReadyResponse {
    /// Ready to serve and consuming.
    #[oai(status = 200)]
    Ready(Json<Readiness>),
    /// Not ready: the body says which part is down.
    #[oai(status = 503)]
    NotReady(Json<Readiness>),
}

/// Below `http.request_timeout_ms`'s default, so that readiness answers with its own body.
const CHECK_TIMEOUT: Duration = Duration::from_secs(1);

fn up(ok: bool) -> String {
    if ok { "up" } else { "down" }.to_owned()
}

#[OpenApi(tag = "Tag::Health")]
impl HealthApi {
    /// Liveness: the process answers.
    #[oai(path = "/health/live", method = "get", operation_id = "live")]
    async fn live(&self) -> Json<Liveness> {
        Json(Liveness {
            status: "live".into(),
        })
    }

    /// Readiness: database reachable and every partition held here consumed.
    #[oai(path = "/health/ready", method = "get", operation_id = "ready")]
    async fn ready(&self, Data(state): Data<&Arc<State>>) -> ReadyResponse {
        let db = state.store.ping();
        // Both checks at once: readiness waits for the slower, not the sum.
        let (db, cache) = tokio::join!(tokio::time::timeout(CHECK_TIMEOUT, db), state.cache.ping());
        let database = match db {
            Ok(Ok(())) => true,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "readiness: the database does not answer");
                false
            }
            Err(_) => {
                tracing::warn!(timeout = ?CHECK_TIMEOUT, "readiness: the database did not answer in time");
                false
            }
        };
        // An API-only instance consumes nothing: it has no partitions to report.
        let statuses = if state.role.consumes() {
            state.partitions.snapshot()
        } else {
            Vec::new()
        };
        let partitions: Vec<PartitionHealth> = statuses
            .iter()
            .map(|s| PartitionHealth {
                partition: s.partition,
                owned: s.is_owned(),
                running: s.is_running(),
                committed_offset: s.committed(),
                high_watermark: s.high_watermark(),
                lag: s.lag(),
                last_error: s.last_error(),
                seconds_since_commit: s.since_progress().map(|d| d.as_secs_f64()),
                stalled: s.is_stalled(),
            })
            .collect();
        let settled = statuses.iter().all(|s| s.is_settled());
        // Every partition held here consumes; none is failing (a panicked
        // lease keeper leaves the partition unheld but failing) or stalled.
        let consuming = partitions
            .iter()
            .all(|p| (p.running || !p.owned) && p.last_error.is_none() && !p.stalled);
        let ready = database && settled && consuming;
        let body = Readiness {
            status: if ready { "ready" } else { "not_ready" }.into(),
            database: up(database),
            cache: up(cache),
            cache_outbox: state.cache.outbox_rows(),
            partitions,
        };
        if ready {
            ReadyResponse::Ready(Json(body))
        } else {
            ReadyResponse::NotReady(Json(body))
        }
    }
}
