//! The Kafka side, through librdkafka (rust-rdkafka): the client settings
//! shared by every client of the service and its tools (brokers, TLS, SASL),
//! the topic's metadata and creation, and the instance's one consumer
//! (`kafka/consumer.rs`), from which each held partition is read at the
//! offset stored in PostgreSQL (`kafka/partition_reader.rs`). What librdkafka
//! reports is kept by [`Reporter`] (`kafka/reporter.rs`); producing is in
//! `kafka/outgoing.rs`; the workaround for a broker that skips records is in
//! `kafka/offset_probe.rs`.
//!
//! librdkafka reads everything a producer may legally write: headers with
//! null values, any record timestamp, control batches (transaction markers)
//! and every codec, and in `read_committed` mode it drops the records of
//! aborted transactions. Offsets are never committed to Kafka: the consumer
//! has a `group.id` only because librdkafka requires one for `assign`.

pub mod consumer;
pub mod offset_probe;
mod outgoing;
pub mod partition_reader;
pub mod record;
mod reporter;

use std::{sync::Arc, time::Duration};

use rdkafka::{
    ClientConfig,
    admin::{AdminClient, AdminOptions, NewTopic, TopicReplication},
    consumer::Consumer,
    error::{KafkaError as RdError, RDKafkaErrorCode},
    producer::FutureProducer,
};

pub use consumer::STATISTICS_INTERVAL;
pub use outgoing::{Codec, Outgoing, producer, send_all};
pub use partition_reader::PartitionReader;
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
    #[cfg(feature = "faults")]
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

/// How long a metadata or offsets request may take before it counts as failed.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// The instance's client of the cluster: its one consumer, which also
/// answers metadata and log-offset requests, and topic creation. Cheap to
/// clone.
#[derive(Clone)]
pub struct Kafka {
    settings: Arc<KafkaSettings>,
    shared: Arc<consumer::Shared>,
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
    let kafka = Kafka {
        settings: Arc::new(settings.clone()),
        shared: consumer::Shared::create(settings)?,
    };
    let probe = kafka.clone();
    let answer = blocking(move || {
        let answer = probe.shared.client.fetch_metadata(None, patience);
        answer.map(|_| ()).map_err(KafkaError::from)
    })
    .await;
    let Err(e) = answer else {
        return Ok(kafka);
    };
    // A TLS or SASL failure arrives only as an error event, which the
    // consumer's event task hands to the reporter: give it a moment.
    let reporter = kafka.shared.client.context();
    for _ in 0..50 {
        if reporter.last_error().is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Err(KafkaError::Unreachable {
        brokers: settings.brokers.join(","),
        reason: reporter.last_error().unwrap_or(e.to_string()),
    })
}

/// Connects and makes sure the configured topic exists; returns the client and
/// the topic's partitions. The one place that does both.
pub async fn connect_topic(settings: &KafkaSettings) -> Result<(Kafka, Vec<i32>), KafkaError> {
    let kafka = connect(settings).await?;
    let partitions = ensure_topic(&kafka, settings).await?;
    Ok((kafka, partitions))
}

/// Blocking librdkafka calls (metadata, log offsets, seeks) running at
/// once: each takes a thread of tokio's blocking pool, and an instance
/// starting many partitions at once would otherwise start a thread for each.
const BLOCKING_CALLS: usize = 4;

/// Runs a blocking librdkafka call off the async threads, at most
/// [`BLOCKING_CALLS`] at a time.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, KafkaError> + Send + 'static,
) -> Result<T, KafkaError> {
    static CALLS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(BLOCKING_CALLS);
    let _permit = CALLS
        .acquire()
        .await
        .map_err(|e| KafkaError::Join(e.to_string()))?;
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| KafkaError::Join(e.to_string()))?
}

impl Kafka {
    /// The partitions of `topic`, or `None` when the broker does not list it.
    pub async fn partitions_of(&self, topic: &str) -> Result<Option<Vec<i32>>, KafkaError> {
        let (shared, topic) = (Arc::clone(&self.shared), topic.to_owned());
        blocking(move || {
            let metadata = shared
                .client
                .fetch_metadata(Some(&topic), REQUEST_TIMEOUT)?;
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
        let (shared, topic) = (Arc::clone(&self.shared), topic.to_owned());
        blocking(move || {
            Ok(shared
                .client
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

    /// A reader of `partition` of the configured topic, through the
    /// instance's consumer; [`PartitionReader::start_from`] starts it. One
    /// reader per partition at a time.
    pub fn reader(&self, partition: i32) -> Result<PartitionReader, KafkaError> {
        self.shared.reader(partition)
    }

    /// The partitions assigned to the instance's consumer: held by a reader,
    /// and parked (released while their assignment had not started).
    pub fn assigned(&self) -> (Vec<i32>, Vec<i32>) {
        self.shared.assigned()
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
