//! The settings of secure connections (PostgreSQL's `sslmode`, Kafka's SASL
//! mechanism) and the checks that keep them consistent, so that a CA file or
//! a password that would be silently ignored is an error instead.

use serde::{Deserialize, Serialize};

use super::{ConfigError, Settings};

/// TLS to PostgreSQL, with libpq's names and meanings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PgSslMode {
    /// Plain connections.
    Disable,
    /// TLS when the server offers it, certificate not checked; plain otherwise.
    Prefer,
    /// TLS or no connection; certificate not checked.
    Require,
    /// TLS, certificate signed by a trusted CA (whatever host it names).
    VerifyCa,
    /// TLS, certificate signed by a trusted CA and issued for the host.
    VerifyFull,
}

impl PgSslMode {
    /// True when the server's certificate is checked against a CA.
    pub fn verifies(self) -> bool {
        matches!(self, PgSslMode::VerifyCa | PgSslMode::VerifyFull)
    }
}

/// How the service authenticates to Kafka.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SaslMechanism {
    /// No SASL.
    None,
    /// SASL/PLAIN (the password travels as is: use it with TLS).
    Plain,
    /// SASL/SCRAM-SHA-256.
    #[serde(rename = "scram-sha-256")]
    ScramSha256,
    /// SASL/SCRAM-SHA-512.
    #[serde(rename = "scram-sha-512")]
    ScramSha512,
}

/// Checks the security settings against one another.
pub(super) fn validate(settings: &Settings) -> Result<(), ConfigError> {
    let invalid = |setting: &'static str, reason: &str| {
        Err(ConfigError::Invalid {
            setting,
            reason: reason.to_owned(),
        })
    };
    let kafka = &settings.kafka;
    if kafka.ca_file().is_some() && !kafka.tls {
        return invalid("kafka.ca_file", "set, but kafka.tls is false");
    }
    if kafka.sasl_mechanism == SaslMechanism::None {
        if !kafka.sasl_username.is_empty() || !kafka.sasl_password.is_empty() {
            return invalid(
                "kafka.sasl_mechanism",
                "a SASL user name or password is set, but the mechanism is none",
            );
        }
    } else if kafka.sasl_username.is_empty() {
        return invalid("kafka.sasl_username", "required by kafka.sasl_mechanism");
    }
    let postgres = &settings.postgres;
    if postgres.ca_file().is_some() && !postgres.sslmode.verifies() {
        return invalid(
            "postgres.ca_file",
            "used only with postgres.sslmode = verify-ca or verify-full",
        );
    }
    // tokio-postgres knows only some of libpq's modes: one place says which.
    if postgres.url.expose().contains("sslmode=") {
        return invalid(
            "postgres.url",
            "set TLS with postgres.sslmode, not in the URL",
        );
    }
    let redis = &settings.redis;
    if redis.ca_file().is_some() && !redis.tls() {
        return invalid(
            "redis.ca_file",
            "set, but redis.url is not TLS (rediss://, rediss-sentinel://, rediss-cluster://)",
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::redact::Secret;

    use super::*;

    fn defaults() -> Settings {
        Settings::built_in().expect("built-in defaults")
    }

    /// The setting a bad combination is reported under.
    fn refused(change: impl FnOnce(&mut Settings)) -> String {
        let mut settings = defaults();
        change(&mut settings);
        match settings.validate() {
            Err(ConfigError::Invalid { setting, .. }) => setting.to_owned(),
            other => panic!("accepted: {other:?}"),
        }
    }

    #[test]
    fn settings_that_would_be_ignored_are_refused() {
        assert_eq!(
            refused(|s| s.kafka.ca_file = "/ca.pem".into()),
            "kafka.ca_file"
        );
        assert_eq!(
            refused(|s| s.kafka.sasl_password = Secret::new("pw")),
            "kafka.sasl_mechanism"
        );
        assert_eq!(
            refused(|s| s.kafka.sasl_mechanism = SaslMechanism::ScramSha256),
            "kafka.sasl_username"
        );
        assert_eq!(
            refused(|s| {
                s.postgres.sslmode = PgSslMode::Require;
                s.postgres.ca_file = "/ca.pem".into();
            }),
            "postgres.ca_file"
        );
        assert_eq!(
            refused(
                |s| s.postgres.url = format!("{}?sslmode=require", s.postgres.url.expose()).into()
            ),
            "postgres.url"
        );
        assert_eq!(
            refused(|s| s.redis.ca_file = "/ca.pem".into()),
            "redis.ca_file"
        );
    }

    #[test]
    fn consistent_security_settings_are_accepted() {
        let mut settings = defaults();
        settings.kafka.tls = true;
        settings.kafka.ca_file = "/ca.pem".into();
        settings.kafka.sasl_mechanism = SaslMechanism::ScramSha512;
        settings.kafka.sasl_username = "wm".into();
        settings.kafka.sasl_password = Secret::new("pw");
        settings.postgres.sslmode = PgSslMode::VerifyFull;
        settings.postgres.ca_file = "/ca.pem".into();
        settings.redis.url = "rediss://:pw@cache:6380".into();
        settings.redis.ca_file = "/ca.pem".into();
        settings.validate().expect("valid");
    }

    #[test]
    fn modes_read_with_libpq_and_kafka_names() {
        let parsed: toml::Table =
            toml::from_str("sslmode = \"verify-full\"\nmechanism = \"scram-sha-256\"\n").unwrap();
        let mode: PgSslMode = parsed["sslmode"].clone().try_into().unwrap();
        let mechanism: SaslMechanism = parsed["mechanism"].clone().try_into().unwrap();
        assert_eq!(mode, PgSslMode::VerifyFull);
        assert_eq!(mechanism, SaslMechanism::ScramSha256);
    }
}
