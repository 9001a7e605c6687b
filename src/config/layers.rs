//! Where settings come from, in order: the defaults compiled into the binary,
//! an optional `<dir>/default.toml`, an optional extra file, then the
//! `WM_<SECTION>__<KEY>` environment variables; and how they are printed.

use std::{collections::HashMap, path::Path};

use super::{ConfigError, ENV_PREFIX, Settings};

/// `config/default.toml` as it was when the binary was built: every setting
/// has a value without any file.
pub const DEFAULTS: &str = include_str!("../../config/default.toml");

/// Settings read from the environment as they are written: `007` or `true`
/// is then a user name or a password, not a number or a boolean.
const VERBATIM: [&str; 2] = ["kafka.sasl_username", "kafka.sasl_password"];

impl Settings {
    /// The built-in defaults, then `<dir>/default.toml`, then `extra` if
    /// given, then the environment.
    pub fn load(dir: &Path, extra: Option<&Path>) -> Result<Self, ConfigError> {
        Self::load_layered(Some(dir), extra)
    }

    /// The built-in defaults, then `<dir>/default.toml` if a directory is
    /// given, then `file` if given (both must exist then), then the
    /// environment.
    pub fn load_layered(dir: Option<&Path>, file: Option<&Path>) -> Result<Self, ConfigError> {
        Self::from_sources(dir, file, std::env::vars().collect())
    }

    /// The built-in defaults alone, whatever the environment says.
    pub fn built_in() -> Result<Self, ConfigError> {
        Self::from_sources(None, None, HashMap::new())
    }

    /// [`Settings::load_layered`] with `env` in place of the process's environment.
    pub(super) fn from_sources(
        dir: Option<&Path>,
        file: Option<&Path>,
        env: HashMap<String, String>,
    ) -> Result<Self, ConfigError> {
        let mut builder = config::Config::builder()
            .add_source(config::File::from_str(DEFAULTS, config::FileFormat::Toml));
        if let Some(dir) = dir {
            builder =
                builder.add_source(config::File::from(dir.join("default.toml")).required(true));
        }
        if let Some(file) = file {
            builder = builder.add_source(config::File::from(file).required(true));
        }
        for key in VERBATIM {
            let name = format!("{ENV_PREFIX}_{}", key.replace('.', "__"));
            if let Some((_, value)) = env.iter().find(|(k, _)| k.eq_ignore_ascii_case(&name)) {
                builder = builder.set_override(key, value.as_str())?;
            }
        }
        let settings: Settings = builder
            .add_source(
                config::Environment::with_prefix(ENV_PREFIX)
                    .prefix_separator("_")
                    .separator("__")
                    .list_separator(",")
                    .with_list_parse_key("kafka.brokers")
                    .try_parsing(true)
                    .source(Some(env)),
            )
            .build()?
            .try_deserialize()?;
        settings.validate()?;
        Ok(settings)
    }

    /// The settings as TOML, secrets masked (`warehouse-monitor config`).
    pub fn to_toml(&self) -> Result<String, ConfigError> {
        toml::to_string(self).map_err(|e| ConfigError::Print(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repo_config_dir() -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("config")
    }

    fn env(vars: &[(&str, &str)]) -> HashMap<String, String> {
        vars.iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn temp_dir() -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("wm-config-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn the_built_in_defaults_are_the_repository_file() {
        let built_in = Settings::from_sources(None, None, HashMap::new()).unwrap();
        let from_file =
            Settings::from_sources(Some(&repo_config_dir()), None, HashMap::new()).unwrap();
        assert_eq!(built_in.to_toml().unwrap(), from_file.to_toml().unwrap());
        let file: toml::Table = DEFAULTS.parse().unwrap();
        let printed: toml::Table = built_in.to_toml().unwrap().parse().unwrap();
        assert_eq!(
            printed, file,
            "every key of default.toml is a setting, and back"
        );
    }

    #[test]
    fn a_config_dir_must_hold_default_toml() {
        let dir = temp_dir();
        let err = Settings::from_sources(Some(&dir), None, HashMap::new()).unwrap_err();
        assert!(err.to_string().contains("default.toml"), "{err}");
    }

    #[test]
    fn files_override_the_defaults_and_the_environment_wins() {
        let dir = temp_dir();
        std::fs::write(dir.join("default.toml"), "[batch]\nsize = 5\nwait_ms = 9\n").unwrap();
        let extra = dir.join("extra.toml");
        std::fs::write(&extra, "[batch]\nsize = 6\n").unwrap();
        let settings =
            Settings::from_sources(Some(&dir), Some(&extra), env(&[("WM_BATCH__SIZE", "7")]))
                .unwrap();
        assert_eq!((settings.batch.size, settings.batch.wait_ms), (7, 9));
        assert_eq!(
            settings.kafka.topic, "warehouse-movements",
            "the rest: defaults"
        );
    }

    #[test]
    fn credentials_from_the_environment_are_taken_verbatim() {
        let settings = Settings::from_sources(
            None,
            None,
            env(&[
                ("WM_KAFKA__SASL_MECHANISM", "scram-sha-512"),
                ("WM_KAFKA__SASL_USERNAME", "0042"),
                ("wm_kafka__sasl_password", "007"),
            ]),
        )
        .unwrap();
        assert_eq!(settings.kafka.sasl_username, "0042");
        assert_eq!(settings.kafka.sasl_password.expose(), "007");
    }

    #[test]
    fn printed_settings_mask_every_secret_and_read_back() {
        let settings = Settings::from_sources(
            None,
            None,
            env(&[
                ("WM_POSTGRES__URL", "postgres://app:pg-Secret-1@db:5432/wm"),
                ("WM_REDIS__URL", "rediss://:redis-Secret-2@cache:6380"),
                ("WM_KAFKA__SASL_MECHANISM", "plain"),
                ("WM_KAFKA__SASL_USERNAME", "wm"),
                ("WM_KAFKA__SASL_PASSWORD", "sasl-Secret-3"),
            ]),
        )
        .unwrap();
        let printed = settings.to_toml().unwrap();
        let debug = format!("{settings:?}");
        for secret in ["pg-Secret-1", "redis-Secret-2", "sasl-Secret-3"] {
            assert!(!printed.contains(secret), "{printed}");
            assert!(!debug.contains(secret), "{debug}");
        }
        assert!(
            printed.contains("postgres://app:***@db:5432/wm"),
            "{printed}"
        );
        assert!(printed.contains("rediss://:***@cache:6380"), "{printed}");
        assert!(printed.contains("sasl_password = \"***\""), "{printed}");
        // What is printed is a valid configuration file: read back, it prints the same.
        let dir = temp_dir();
        let file = dir.join("printed.toml");
        std::fs::write(&file, &printed).unwrap();
        let again = Settings::from_sources(None, Some(&file), HashMap::new()).unwrap();
        assert_eq!(again.to_toml().unwrap(), printed);
    }
}
