//! The Kafka side, through librdkafka (rust-rdkafka): the client settings
//! shared by every client of the service and its tools (brokers, TLS, SASL),
//! the topic's metadata and creation, and a consumer per partition assigned
//! at the offset stored in PostgreSQL. What librdkafka reports is kept by
//! [`Reporter`] (`kafka/reporter.rs`); producing is in `kafka/outgoing.rs`.
//!
//! librdkafka reads everything a producer may legally write: headers with
//! null values, any record timestamp, control batches (transaction markers)
//! and every codec, and in `read_committed` mode it drops the records of
//! aborted transactions. Offsets are never committed to Kafka: the consumer
//! has a `group.id` only because librdkafka requires one for `assign`.

mod outgoing;
pub mod partition_consumer;
pub mod record;
mod reporter;

use std::{sync::Arc, time::Duration};

use rdkafka::{
    ClientConfig,
    admin::{AdminClient, AdminOptions, NewTopic, TopicReplication},
    consumer::{BaseConsumer, Consumer, StreamConsumer},
    error::{KafkaError as RdError, RDKafkaErrorCode},
    producer::FutureProducer,
};

pub use outgoing::{Codec, Outgoing, producer, send_all};
pub use partition_consumer::PartitionConsumer;
pub use record::{KEPT_PREFIX_BYTES, Record};
pub use reporter::{LogEnds, Reporter};

use crate::config::{KafkaSettings, SaslMechanism};

/// Errors of the Kafka layer.
#[derive(Debug, thiserror::Error)]
pub enum KafkaError {
    #[error("Kafka request failed: {0}")]
    Client(RdError),
    #[error("Kafka brokers {brokers} unreachable: {reason}")]
    Unreachable { brokers: String, reason: String },
    #[error("topic `{0}` does not exist (set kafka.create_topic = true to create it)")]
    NoTopic(String),
    #[error("topic `{0}` did not appear in the broker's metadata after creation")]
    TopicNotVisible(String),
    #[error("fetch failed on purpose (fault.fail_fetch)")]
    Injected,
    #[error("the Kafka client task failed: {0}")]
    Join(String),
}

impl From<RdError> for KafkaError {
    fn from(e: RdError) -> Self {
        KafkaError::Client(e)
    }
}

impl KafkaError {
    /// True when the consumer's position is outside the broker's log
    /// (librdkafka's `auto.offset.reset = error` reports it so).
    pub fn is_offset_out_of_range(&self) -> bool {
        matches!(
            self,
            KafkaError::Client(RdError::MessageConsumption(
                RDKafkaErrorCode::AutoOffsetReset | RDKafkaErrorCode::OffsetOutOfRange
            ))
        )
    }
}

/// The settings every client shares: brokers, client id, TLS and SASL.
pub fn client_config(settings: &KafkaSettings) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", settings.brokers.join(","))
        .set("client.id", "warehouse-monitor")
        .set("socket.nagle.disable", "true")
        .set("log_level", "6");
    let sasl = sasl_mechanism(settings.sasl_mechanism);
    let protocol = match (settings.tls, sasl.is_some()) {
        (false, false) => "plaintext",
        (true, false) => "ssl",
        (false, true) => "sasl_plaintext",
        (true, true) => "sasl_ssl",
    };
    config.set("security.protocol", protocol);
    if settings.tls {
        // Brokers' certificates and host names are checked.
        config.set("ssl.endpoint.identification.algorithm", "https");
        if let Some(ca) = settings.ca_file() {
            config.set("ssl.ca.location", ca.display().to_string());
        }
    }
    if let Some(mechanism) = sasl {
        config
            .set("sasl.mechanism", mechanism)
            .set("sasl.username", &settings.sasl_username)
            .set("sasl.password", settings.sasl_password.expose());
    }
    config
}

/// librdkafka's name of a SASL mechanism, `None` for no SASL.
pub fn sasl_mechanism(mechanism: SaslMechanism) -> Option<&'static str> {
    match mechanism {
        SaslMechanism::None => None,
        SaslMechanism::Plain => Some("PLAIN"),
        SaslMechanism::ScramSha256 => Some("SCRAM-SHA-256"),
        SaslMechanism::ScramSha512 => Some("SCRAM-SHA-512"),
    }
}

/// How often a partition consumer's statistics report the end of the log
/// (for the lag, and to notice a log that ends before the consumer).
pub const STATISTICS_INTERVAL: Duration = Duration::from_secs(1);

/// How long a metadata or offsets request may take before it counts as failed.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// A connection to the cluster for metadata, log offsets and topic creation.
/// Cheap to clone.
#[derive(Clone)]
pub struct Kafka {
    settings: Arc<KafkaSettings>,
    meta: Arc<BaseConsumer<Reporter>>,
}

impl std::fmt::Debug for Kafka {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kafka")
            .field("brokers", &self.settings.brokers)
            .finish_non_exhaustive()
    }
}

/// Connects to the bootstrap brokers and reads their metadata once, so that
/// a broker that cannot be reached (or refuses TLS or SASL) fails here.
pub async fn connect(settings: &KafkaSettings) -> Result<Kafka, KafkaError> {
    connect_within(settings, Duration::from_secs(20)).await
}

/// [`connect`], giving up after `patience`.
pub async fn connect_within(
    settings: &KafkaSettings,
    patience: Duration,
) -> Result<Kafka, KafkaError> {
    if settings.sasl_mechanism == SaslMechanism::Plain && !settings.tls {
        tracing::warn!(
            "kafka.sasl_mechanism = plain without kafka.tls: the password is sent unencrypted"
        );
    }
    let mut config = client_config(settings);
    config.set("group.id", "warehouse-monitor-metadata");
    let meta: BaseConsumer<Reporter> = config.create_with_context(Reporter::default())?;
    let kafka = Kafka {
        settings: Arc::new(settings.clone()),
        meta: Arc::new(meta),
    };
    let probe = kafka.clone();
    let answer = blocking(move || {
        let answer = probe.meta.fetch_metadata(None, patience);
        if answer.is_err() {
            // A TLS or SASL failure arrives only as an error event: serve the
            // queued events so that the reporter sees it (bounded: a refused
            // handshake is retried, and each retry queues another).
            for _ in 0..50 {
                if probe.meta.poll(Duration::from_millis(10)).is_none() {
                    break;
                }
            }
        }
        answer.map(|_| ()).map_err(KafkaError::from)
    })
    .await;
    match answer {
        Ok(()) => Ok(kafka),
        Err(e) => Err(KafkaError::Unreachable {
            brokers: settings.brokers.join(","),
            reason: kafka.meta.context().last_error().unwrap_or(e.to_string()),
        }),
    }
}

/// Connects and makes sure the configured topic exists; returns the client and
/// the topic's partitions. The one place that does both.
pub async fn connect_topic(settings: &KafkaSettings) -> Result<(Kafka, Vec<i32>), KafkaError> {
    let kafka = connect(settings).await?;
    let partitions = ensure_topic(&kafka, settings).await?;
    Ok((kafka, partitions))
}

/// Runs a blocking librdkafka call off the async threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, KafkaError> + Send + 'static,
) -> Result<T, KafkaError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| KafkaError::Join(e.to_string()))?
}

impl Kafka {
    /// The partitions of `topic`, or `None` when the broker does not list it.
    pub async fn partitions_of(&self, topic: &str) -> Result<Option<Vec<i32>>, KafkaError> {
        let (meta, topic) = (Arc::clone(&self.meta), topic.to_owned());
        blocking(move || {
            let metadata = meta.fetch_metadata(Some(&topic), REQUEST_TIMEOUT)?;
            Ok(metadata
                .topics()
                .iter()
                .find(|t| t.name() == topic && t.error().is_none() && !t.partitions().is_empty())
                .map(|t| {
                    let mut ids: Vec<i32> = t.partitions().iter().map(|p| p.id()).collect();
                    ids.sort_unstable();
                    ids
                }))
        })
        .await
    }

    /// The first offset the broker still holds and the end of the log as a
    /// `read_committed` consumer sees it (the last stable offset).
    pub async fn log_bounds(&self, topic: &str, partition: i32) -> Result<(i64, i64), KafkaError> {
        let (meta, topic) = (Arc::clone(&self.meta), topic.to_owned());
        blocking(move || {
            Ok(meta
                .client()
                .fetch_watermarks(&topic, partition, REQUEST_TIMEOUT)?)
        })
        .await
    }

    /// An admin client of the cluster, for one request.
    fn admin(&self) -> Result<AdminClient<Reporter>, KafkaError> {
        Ok(client_config(&self.settings).create_with_context(Reporter::default())?)
    }

    /// Creates `topic` with `partitions` partitions of `replicas` replicas;
    /// a topic that already exists is left as it is.
    pub async fn create_topic(
        &self,
        topic: &str,
        partitions: i32,
        replicas: i16,
    ) -> Result<(), KafkaError> {
        let admin = self.admin()?;
        let new = NewTopic::new(
            topic,
            partitions,
            TopicReplication::Fixed(i32::from(replicas)),
        );
        let options = AdminOptions::new().operation_timeout(Some(REQUEST_TIMEOUT));
        let results = admin.create_topics([&new], &options).await?;
        for result in results {
            match result {
                Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((_, code)) => return Err(RdError::AdminOp(code).into()),
            }
        }
        Ok(())
    }

    /// Deletes `topic` (tools and tests: recreating a topic under its name).
    pub async fn delete_topic(&self, topic: &str) -> Result<(), KafkaError> {
        let admin = self.admin()?;
        let options = AdminOptions::new().operation_timeout(Some(REQUEST_TIMEOUT));
        for result in admin.delete_topics(&[topic], &options).await? {
            if let Err((_, code)) = result {
                return Err(RdError::AdminOp(code).into());
            }
        }
        Ok(())
    }

    /// A consumer of one partition of the configured topic, reading from
    /// `offset` in `read_committed` mode. Its prefetch queue holds at most
    /// half of `kafka.max_buffered_bytes`; the records handed to batches are
    /// bounded by the other half.
    pub fn partition_consumer(
        &self,
        partition: i32,
        offset: i64,
    ) -> Result<PartitionConsumer, KafkaError> {
        let settings = &self.settings;
        let queued_kbytes = (settings.buffered_half() / 1024).max(1);
        let fetch_bytes = settings.fetch_max_bytes.max(1024);
        let mut config = client_config(settings);
        config
            .set("group.id", "warehouse-monitor")
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("enable.partition.eof", "true")
            .set("isolation.level", "read_committed")
            // Our policy (`kafka.offset_out_of_range`) decides, not librdkafka's.
            .set("auto.offset.reset", "error")
            .set("fetch.wait.max.ms", settings.fetch_max_wait_ms.to_string())
            .set("fetch.max.bytes", fetch_bytes.to_string())
            .set("fetch.message.max.bytes", fetch_bytes.to_string())
            // A record larger than a fetch still comes whole (the broker
            // returns at least one record); a response librdkafka refused for
            // its size would be fetched again forever, so none is refused.
            // `kafka.max_record_bytes` then rejects the record as `too_large`.
            .set("receive.message.max.bytes", i32::MAX.to_string())
            .set("queued.max.messages.kbytes", queued_kbytes.to_string())
            .set("fetch.queue.backoff.ms", "10")
            .set("fetch.error.backoff.ms", "100")
            .set(
                "statistics.interval.ms",
                STATISTICS_INTERVAL.as_millis().to_string(),
            );
        let consumer: StreamConsumer<Reporter> = config.create_with_context(Reporter::default())?;
        PartitionConsumer::new(
            consumer,
            &settings.topic,
            partition,
            offset,
            settings.max_record_bytes,
        )
    }

    /// A producer with `codec` compression, whose sends are acknowledged by
    /// all in-sync replicas.
    pub fn producer(&self, codec: Codec) -> Result<FutureProducer<Reporter>, KafkaError> {
        producer(&self.settings, codec)
    }
}

/// The partitions of the configured topic, creating it (with
/// `kafka.partitions` partitions and `kafka.replication_factor` replicas) when
/// it is missing and `kafka.create_topic` is true.
pub async fn ensure_topic(kafka: &Kafka, settings: &KafkaSettings) -> Result<Vec<i32>, KafkaError> {
    let topic = settings.topic.as_str();
    if let Some(found) = kafka.partitions_of(topic).await? {
        return Ok(found);
    }
    if !settings.create_topic {
        return Err(KafkaError::NoTopic(topic.to_owned()));
    }
    let (partitions, replicas) = (settings.partitions, settings.replication_factor);
    kafka.create_topic(topic, partitions, replicas).await?;
    tracing::info!(topic, partitions, replicas, "created topic");
    for _ in 0..50 {
        if let Some(found) = kafka.partitions_of(topic).await? {
            return Ok(found);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(KafkaError::TopicNotVisible(topic.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{config::Settings, redact::Secret};

    fn settings() -> KafkaSettings {
        let mut settings = Settings::built_in().unwrap().kafka;
        settings.sasl_username = "wm".into();
        settings.sasl_password = Secret::new("pw");
        settings
    }

    #[test]
    fn each_sasl_mechanism_maps_to_librdkafka_with_the_credentials() {
        let cases = [
            (SaslMechanism::Plain, "PLAIN"),
            (SaslMechanism::ScramSha256, "SCRAM-SHA-256"),
            (SaslMechanism::ScramSha512, "SCRAM-SHA-512"),
        ];
        for (mechanism, name) in cases {
            for tls in [false, true] {
                let mut settings = settings();
                settings.sasl_mechanism = mechanism;
                settings.tls = tls;
                let config = client_config(&settings);
                assert_eq!(config.get("sasl.mechanism"), Some(name));
                assert_eq!(config.get("sasl.username"), Some("wm"));
                assert_eq!(config.get("sasl.password"), Some("pw"));
                let protocol = if tls { "sasl_ssl" } else { "sasl_plaintext" };
                assert_eq!(config.get("security.protocol"), Some(protocol));
            }
        }
        let mut settings = settings();
        settings.sasl_mechanism = SaslMechanism::None;
        let config = client_config(&settings);
        assert_eq!(config.get("sasl.mechanism"), None);
        assert_eq!(config.get("security.protocol"), Some("plaintext"));
    }

    #[test]
    fn tls_checks_the_broker_against_the_configured_ca_and_its_name() {
        let mut settings = settings();
        settings.sasl_mechanism = SaslMechanism::None;
        settings.tls = true;
        settings.ca_file = "/etc/wm/ca.pem".into();
        let config = client_config(&settings);
        assert_eq!(config.get("security.protocol"), Some("ssl"));
        assert_eq!(config.get("ssl.ca.location"), Some("/etc/wm/ca.pem"));
        assert_eq!(
            config.get("ssl.endpoint.identification.algorithm"),
            Some("https")
        );
        settings.ca_file = String::new();
        assert_eq!(client_config(&settings).get("ssl.ca.location"), None);
    }

    #[tokio::test]
    async fn an_unreachable_broker_fails_the_connection_with_its_reason() {
        let mut settings = settings();
        settings.sasl_mechanism = SaslMechanism::None;
        // A port nothing listens on (reserved, never bound here).
        settings.brokers = vec!["127.0.0.1:1".into()];
        let err = connect_within(&settings, Duration::from_secs(2))
            .await
            .unwrap_err();
        let text = err.to_string();
        assert!(text.contains("127.0.0.1:1"), "{text}");
        assert!(text.contains("unreachable"), "{text}");
    }
}
