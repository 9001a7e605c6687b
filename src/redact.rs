//! Secrets kept out of everything the service prints. Connection URLs lose
//! their password (`postgres://app:***@db:5432/wm`) before they reach a log
//! line, an error or `warehouse-monitor config` (a [`SecretUrl`] setting
//! prints so), and a [`Secret`] setting
//! prints as `***` however it is printed (`Debug`, serialized), so that a new
//! log line cannot leak it by accident.

use serde::{Deserialize, Serialize, Serializer};

/// What a password is replaced with.
pub const MASK: &str = "***";

/// `text` (a connection URL or a key/value connection string) with every
/// password replaced by [`MASK`]: the password of the user-info part
/// (`scheme://user:password@host`) and the value of every parameter whose
/// name contains `password` (`?password=…`, `password='…'`,
/// `sentinelPassword=…`). The rest is kept, so the result still says where
/// the service connects.
///
/// Where the URL is ambiguous (an unescaped `@` or `:`) more is masked, never
/// less: the user-info runs from the first `:` before the first `@` to the
/// last `@`, which covers how every parser of this service reads it.
pub fn url(text: &str) -> String {
    params(&userinfo(text))
}

/// The password of `scheme://user:password@host…` masked.
fn userinfo(text: &str) -> String {
    let Some(scheme_end) = text.find("://") else {
        return text.to_owned();
    };
    let start = scheme_end + "://".len();
    let rest = &text[start..];
    let (Some(first_at), Some(last_at)) = (rest.find('@'), rest.rfind('@')) else {
        return text.to_owned();
    };
    let Some(colon) = rest[..first_at].find(':') else {
        return text.to_owned(); // a user name without a password
    };
    format!(
        "{}{}:{MASK}{}",
        &text[..start],
        &rest[..colon],
        &rest[last_at..]
    )
}

/// The value of every `…password…=value` parameter masked: up to the next
/// `&`, `#` or white space, or a whole single-quoted value (key/value
/// connection strings, where `\'` escapes a quote).
fn params(text: &str) -> String {
    const KEY: &str = "password";
    let lower = text.to_ascii_lowercase();
    let mut out = String::with_capacity(text.len());
    let mut copied = 0;
    let mut search = 0;
    while let Some(found) = lower[search..].find(KEY) {
        let mut i = search + found + KEY.len();
        // The rest of the key (`password_file`, `passwordX`), spaces, then `=`.
        i += count(&text[i..], |c| c.is_ascii_alphanumeric() || c == '_');
        i += count(&text[i..], char::is_whitespace);
        if !text[i..].starts_with('=') {
            search = i.max(search + found + 1);
            continue;
        }
        i += 1;
        i += count(&text[i..], |c| c == ' ' || c == '\t');
        let value_end = if text[i..].starts_with('\'') {
            quoted_end(text, i)
        } else {
            i + count(&text[i..], |c| c != '&' && c != '#' && !c.is_whitespace())
        };
        out.push_str(&text[copied..i]);
        out.push_str(MASK);
        copied = value_end;
        search = value_end;
    }
    out.push_str(&text[copied..]);
    out
}

/// Bytes at the start of `s` whose chars satisfy `f`.
fn count(s: &str, f: impl Fn(char) -> bool) -> usize {
    s.char_indices()
        .find(|&(_, c)| !f(c))
        .map_or(s.len(), |(i, _)| i)
}

/// The end (past the closing quote) of the single-quoted value opening at
/// `open`; the end of `text` when the quote is never closed.
fn quoted_end(text: &str, open: usize) -> usize {
    let mut escaped = false;
    for (i, c) in text[open + 1..].char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            '\'' => return open + 1 + i + 1,
            _ => {}
        }
    }
    text.len()
}

/// A connection URL setting. It prints with its password masked (see
/// [`url`]) however it is printed (`Debug`, `Display`, serialized); only
/// [`SecretUrl::expose`] gives out the whole URL, to the code that connects.
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct SecretUrl(String);

impl SecretUrl {
    /// The URL with its password, for the places that connect with it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl From<String> for SecretUrl {
    fn from(url: String) -> Self {
        Self(url)
    }
}

impl From<&str> for SecretUrl {
    fn from(url: &str) -> Self {
        Self(url.to_owned())
    }
}

impl std::fmt::Debug for SecretUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", url(&self.0))
    }
}

impl std::fmt::Display for SecretUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&url(&self.0))
    }
}

impl Serialize for SecretUrl {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&url(&self.0))
    }
}

/// A secret setting (a password). It prints as `***` when set and `""` when
/// not, in `Debug` and when serialized; only [`Secret::expose`] gives it out.
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// What is printed instead of the secret.
    fn shown(&self) -> &'static str {
        if self.0.is_empty() { "" } else { MASK }
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.shown())
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.shown())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_secret_url_prints_masked_however_it_is_printed() {
        let url = SecretUrl::from("postgres://app:s3cret@db:5432/wm");
        let masked = "postgres://app:***@db:5432/wm";
        assert_eq!(format!("{url}"), masked);
        assert_eq!(format!("{url:?}"), format!("{masked:?}"));
        assert_eq!(serde_json::to_string(&url).unwrap(), format!("{masked:?}"));
        assert_eq!(url.expose(), "postgres://app:s3cret@db:5432/wm");
        let read: SecretUrl = serde_json::from_str("\"redis://:pw@cache:6379\"").unwrap();
        assert_eq!(read.expose(), "redis://:pw@cache:6379");
    }

    #[test]
    fn masks_the_password_of_urls() {
        let cases = [
            (
                "postgres://app:s3cret@db.internal:5432/wm",
                "postgres://app:***@db.internal:5432/wm",
            ),
            ("rediss://:pw@cache:6380/0", "rediss://:***@cache:6380/0"),
            (
                "redis://user:p%40ss@127.0.0.1:6379",
                "redis://user:***@127.0.0.1:6379",
            ),
            // An unescaped `@` in the password: masked up to the last one.
            ("postgres://app:p@ss@db/wm", "postgres://app:***@db/wm"),
            (
                "postgres://app@db/wm?password=s3cret&sslmode=disable",
                "postgres://app@db/wm?password=***&sslmode=disable",
            ),
            (
                "host=db user=app password=s3cret dbname=wm",
                "host=db user=app password=*** dbname=wm",
            ),
            (
                "host=db password = 'it\\'s secret' dbname=wm",
                "host=db password = *** dbname=wm",
            ),
            (
                "redis-sentinel://u:a@h:26379/0?sentinelPassword=b&node=x:1",
                "redis-sentinel://u:***@h:26379/0?sentinelPassword=***&node=x:1",
            ),
        ];
        for (input, expected) in cases {
            assert_eq!(url(input), expected, "{input}");
        }
    }

    #[test]
    fn leaves_urls_without_a_password_alone() {
        for input in [
            "postgres://postgres@127.0.0.1:5432/warehouse_monitor",
            "redis://127.0.0.1:6379",
            "rediss://cache.internal:6380",
            "host=/var/run/postgresql dbname=wm",
            "the password is not a parameter",
        ] {
            assert_eq!(url(input), input);
        }
    }

    #[test]
    fn a_secret_never_prints() {
        let secret = Secret::new("hunter2");
        assert_eq!(format!("{secret:?}"), "\"***\"");
        assert_eq!(serde_json::to_string(&secret).unwrap(), "\"***\"");
        assert_eq!(secret.expose(), "hunter2");
        assert_eq!(format!("{:?}", Secret::default()), "\"\"");
    }

    /// Every byte but ASCII letters and digits percent-encoded.
    fn encode(s: &str) -> String {
        s.bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() {
                    char::from(b).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect()
    }

    proptest! {
        /// Whatever the password, the masked URL reads back (with the parser
        /// the service uses) with the same user, host and database, and `***`
        /// as its password.
        #[test]
        fn any_password_is_masked(password in "\\PC{1,40}", user in "[a-z][a-z0-9_]{0,10}") {
            let forms = [
                format!("postgres://{user}:{}@db.internal:5433/wm", encode(&password)),
                format!(
                    "host=db.internal port=5433 user={user} password='{}' dbname=wm",
                    password.replace('\\', "\\\\").replace('\'', "\\'")
                ),
            ];
            for form in forms {
                let masked = url(&form);
                let config: tokio_postgres::Config = masked.parse().unwrap();
                prop_assert_eq!(config.get_password(), Some(MASK.as_bytes()));
                prop_assert_eq!(config.get_user(), Some(user.as_str()));
                prop_assert_eq!(config.get_dbname(), Some("wm"));
                prop_assert_eq!(config.get_ports(), &[5433]);
            }
        }
    }
}
