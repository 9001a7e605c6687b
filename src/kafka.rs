//! The Kafka side: connecting with bounded retries (over TLS and with SASL
//! when configured), creating the topic (the broker may not auto-create it),
//! and the record type of the pipeline, converted from rskafka's with its
//! size bounded.

use std::{sync::Arc, time::Duration};

use rskafka::{
    BackoffConfig,
    client::{
        Client, ClientBuilder, Credentials, SaslConfig,
        error::{Error as RsError, ProtocolError},
        partition::{Compression, PartitionClient, UnknownTopicHandling},
    },
    record::RecordAndOffset,
};
use time::OffsetDateTime;

use crate::{
    app::config::{KafkaSettings, SaslMechanism},
    tls::{self, TlsError, Verify},
};

/// Errors of the Kafka layer.
#[derive(Debug, thiserror::Error)]
pub enum KafkaError {
    #[error("Kafka request failed: {0}")]
    Client(RsError),
    #[error("Kafka TLS (kafka.ca_file): {0}")]
    Tls(TlsError),
    #[error("topic `{0}` does not exist (set kafka.create_topic = true to create it)")]
    NoTopic(String),
    #[error("topic `{0}` did not appear in the broker's metadata after creation")]
    TopicNotVisible(String),
    #[error("fetch failed on purpose (fault.fail_fetch)")]
    Injected,
}

impl From<RsError> for KafkaError {
    fn from(e: RsError) -> Self {
        KafkaError::Client(e)
    }
}

impl KafkaError {
    /// True when the broker said the requested offset is outside its log.
    pub fn is_offset_out_of_range(&self) -> bool {
        matches!(
            self,
            KafkaError::Client(RsError::ServerError {
                protocol_error: ProtocolError::OffsetOutOfRange,
                ..
            })
        )
    }
}

/// Compression of produced record batches: every codec Kafka defines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Codec {
    None,
    Gzip,
    Snappy,
    Lz4,
    Zstd,
}

impl From<Codec> for Compression {
    fn from(codec: Codec) -> Self {
        match codec {
            Codec::None => Compression::NoCompression,
            Codec::Gzip => Compression::Gzip,
            Codec::Snappy => Compression::Snappy,
            Codec::Lz4 => Compression::Lz4,
            Codec::Zstd => Compression::Zstd,
        }
    }
}

/// Retries inside rskafka end after this long, so that our own loops see the error.
fn backoff() -> BackoffConfig {
    BackoffConfig {
        init_backoff: Duration::from_millis(50),
        max_backoff: Duration::from_secs(2),
        base: 2.0,
        deadline: Some(Duration::from_secs(20)),
    }
}

/// Connects to the bootstrap brokers.
pub async fn connect(settings: &KafkaSettings) -> Result<Arc<Client>, KafkaError> {
    if settings.sasl_mechanism == SaslMechanism::Plain && !settings.tls {
        tracing::warn!(
            "kafka.sasl_mechanism = plain without kafka.tls: the password is sent unencrypted"
        );
    }
    let mut builder = ClientBuilder::new(settings.brokers.clone())
        .client_id("warehouse-monitor")
        .backoff_config(backoff());
    if let Some(tls) = tls_config(settings)? {
        builder = builder.tls_config(tls);
    }
    if let Some(sasl) = sasl_config(settings) {
        builder = builder.sasl_config(sasl);
    }
    Ok(Arc::new(builder.build().await?))
}

/// The TLS of the broker connections, `None` without `kafka.tls`: brokers'
/// certificates are checked against `kafka.ca_file` (or the system's roots),
/// with their host names.
pub fn tls_config(
    settings: &KafkaSettings,
) -> Result<Option<Arc<rustls::ClientConfig>>, KafkaError> {
    if !settings.tls {
        return Ok(None);
    }
    tls::client_config(Verify::Full, settings.ca_file())
        .map(Some)
        .map_err(KafkaError::Tls)
}

/// The SASL authentication of `kafka.sasl_mechanism`, `None` for `none`.
pub fn sasl_config(settings: &KafkaSettings) -> Option<SaslConfig> {
    let credentials = || {
        Credentials::new(
            settings.sasl_username.clone(),
            settings.sasl_password.expose().to_owned(),
        )
    };
    match settings.sasl_mechanism {
        SaslMechanism::None => None,
        SaslMechanism::Plain => Some(SaslConfig::Plain(credentials())),
        SaslMechanism::ScramSha256 => Some(SaslConfig::ScramSha256(credentials())),
        SaslMechanism::ScramSha512 => Some(SaslConfig::ScramSha512(credentials())),
    }
}

/// Connects and makes sure the configured topic exists; returns the client and
/// the topic's partitions. The one place that does both.
pub async fn connect_topic(
    settings: &KafkaSettings,
) -> Result<(Arc<Client>, Vec<i32>), KafkaError> {
    let client = connect(settings).await?;
    let partitions = ensure_topic(&client, settings).await?;
    Ok((client, partitions))
}

/// The partitions of the configured topic, creating it (with
/// `kafka.partitions` partitions and `kafka.replication_factor` replicas) when
/// it is missing and `kafka.create_topic` is true.
pub async fn ensure_topic(
    client: &Client,
    settings: &KafkaSettings,
) -> Result<Vec<i32>, KafkaError> {
    let topic = settings.topic.as_str();
    let partitions = settings.partitions;
    if let Some(found) = partitions_of(client, topic).await? {
        return Ok(found);
    }
    if !settings.create_topic {
        return Err(KafkaError::NoTopic(topic.to_owned()));
    }
    let controller = client.controller_client()?;
    let replicas = settings.replication_factor;
    match controller
        .create_topic(topic, partitions, replicas, 10_000)
        .await
    {
        Ok(()) => tracing::info!(topic, partitions, replicas, "created topic"),
        Err(RsError::ServerError {
            protocol_error: ProtocolError::TopicAlreadyExists,
            ..
        }) => {}
        Err(e) => return Err(e.into()),
    }
    for _ in 0..50 {
        if let Some(found) = partitions_of(client, topic).await? {
            return Ok(found);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(KafkaError::TopicNotVisible(topic.to_owned()))
}

/// The partitions of `topic`, or `None` when the broker does not list it.
pub async fn partitions_of(client: &Client, topic: &str) -> Result<Option<Vec<i32>>, KafkaError> {
    let topics = client.list_topics().await?;
    Ok(topics
        .into_iter()
        .find(|t| t.name == topic && !t.partitions.is_empty())
        .map(|t| t.partitions.into_iter().collect()))
}

/// A client bound to one partition.
pub async fn partition(
    client: &Client,
    topic: &str,
    partition: i32,
) -> Result<PartitionClient, KafkaError> {
    Ok(client
        .partition_client(topic, partition, UnknownTopicHandling::Retry)
        .await?)
}

/// One Kafka record as fetched from a partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub offset: i64,
    pub timestamp: OffsetDateTime,
    pub value: Option<Vec<u8>>,
    /// `Some(n)` when the value was `n` bytes, over `kafka.max_record_bytes`:
    /// `value` then holds only a bounded prefix and the record is rejected as
    /// `too_large`.
    pub truncated_from: Option<usize>,
}

impl Record {
    /// A record whose whole value was kept.
    pub fn new(offset: i64, timestamp: OffsetDateTime, value: Option<Vec<u8>>) -> Self {
        Self {
            offset,
            timestamp,
            value,
            truncated_from: None,
        }
    }

    /// Bytes this record holds in memory (its value, or the kept prefix).
    pub fn size(&self) -> usize {
        self.value.as_ref().map_or(0, Vec::len)
    }
}

/// Bytes kept of a record value over `kafka.max_record_bytes`, stored with its
/// `too_large` rejection so that an operator can see what it was.
pub const KEPT_PREFIX_BYTES: usize = 4096;

/// Converts a fetched rskafka record to the batch's record type. A value over
/// `max_record_bytes` is cut to its first [`KEPT_PREFIX_BYTES`] bytes and
/// marked, so that it is rejected instead of held in memory.
pub fn to_record(r: RecordAndOffset, max_record_bytes: usize) -> Record {
    let nanos = r.record.timestamp.timestamp_nanos_opt().unwrap_or(0);
    let timestamp = OffsetDateTime::from_unix_timestamp_nanos(i128::from(nanos))
        .unwrap_or(OffsetDateTime::UNIX_EPOCH);
    let mut record = Record::new(r.offset, timestamp, r.record.value);
    if let Some(value) = record.value.as_mut().filter(|v| v.len() > max_record_bytes) {
        record.truncated_from = Some(value.len());
        value.truncate(KEPT_PREFIX_BYTES.min(max_record_bytes));
        value.shrink_to_fit();
    }
    record
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{app::config::Settings, redact::Secret, tls::testing::Pki};

    fn settings() -> KafkaSettings {
        let mut settings = Settings::built_in().unwrap().kafka;
        settings.sasl_username = "wm".into();
        settings.sasl_password = Secret::new("pw");
        settings
    }

    /// Mechanism and credentials of a SASL configuration.
    fn shown(sasl: &SaslConfig) -> (&'static str, &str, &str) {
        let (name, c) = match sasl {
            SaslConfig::Plain(c) => ("PLAIN", c),
            SaslConfig::ScramSha256(c) => ("SCRAM-SHA-256", c),
            SaslConfig::ScramSha512(c) => ("SCRAM-SHA-512", c),
            SaslConfig::Oauthbearer(_) => panic!("never configured"),
        };
        (name, c.username.as_str(), c.password.as_str())
    }

    #[test]
    fn each_sasl_mechanism_maps_to_rskafka_with_the_credentials() {
        let cases = [
            (SaslMechanism::Plain, "PLAIN"),
            (SaslMechanism::ScramSha256, "SCRAM-SHA-256"),
            (SaslMechanism::ScramSha512, "SCRAM-SHA-512"),
        ];
        for (mechanism, name) in cases {
            let mut settings = settings();
            settings.sasl_mechanism = mechanism;
            let sasl = sasl_config(&settings).expect("SASL configured");
            assert_eq!(shown(&sasl), (name, "wm", "pw"));
        }
        let mut settings = settings();
        settings.sasl_mechanism = SaslMechanism::None;
        assert!(sasl_config(&settings).is_none());
    }

    #[tokio::test]
    async fn tls_trusts_the_configured_ca_and_checks_the_broker_name() {
        let mut settings = settings();
        assert!(
            tls_config(&settings).unwrap().is_none(),
            "no TLS by default"
        );
        let broker = Pki::new(&["kafka.test"]);
        settings.tls = true;
        settings.ca_file = broker.ca_file().display().to_string();
        let config = tls_config(&settings).unwrap().expect("TLS configured");
        assert_eq!(
            broker.handshake(Arc::clone(&config), "kafka.test").await,
            Ok(())
        );
        let err = broker.handshake(config, "other.test").await.unwrap_err();
        assert!(err.contains("not valid for name"), "{err}");
        let impostor = Pki::new(&["kafka.test"]);
        let config = tls_config(&settings).unwrap().unwrap();
        let err = impostor.handshake(config, "kafka.test").await.unwrap_err();
        assert!(err.contains("UnknownIssuer"), "{err}");
    }
}
