//! Where the master is under Sentinel: each sentinel of the URL is asked in
//! turn (`SENTINEL get-master-addr-by-name`) at every connection attempt, so
//! that after a failover the tracking connection follows the master that
//! fred's client writes to. Which server the connection then reached is
//! checked by the handshake (its role), and whether it holds the epoch's
//! writes by the epoch's marker ([`crate::cache::trust`]): a sentinel that
//! answers late or wrongly can make reads answer from PostgreSQL, never
//! serve an entry a lagging replica kept.
//!
//! The sentinels are asked with the URL's credentials, as fred's client
//! asks them (its `sentinel-auth` feature, for credentials of their own, is
//! off): sentinels and servers share the password.

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use super::{ConnectionError, Target, handshake::next_frame, open, within};
use crate::cache::resp::{self, Frame};

/// The master's address as the first sentinel that knows it says.
pub(super) async fn master(
    target: &Target,
    sentinels: &[(String, u16)],
    service: &str,
) -> Result<(String, u16), ConnectionError> {
    let mut last = ConnectionError::NoMaster;
    for (host, port) in sentinels {
        match within(target.timeout, ask(target, host, *port, service)).await {
            Ok(Some(master)) => return Ok(master),
            Ok(None) => last = ConnectionError::NoMaster,
            Err(e) => last = e,
        }
    }
    Err(last)
}

async fn ask(
    target: &Target,
    host: &str,
    port: u16,
    service: &str,
) -> Result<Option<(String, u16)>, ConnectionError> {
    exchange(open(target, host, port).await?, target, service).await
}

async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    target: &Target,
    service: &str,
) -> Result<Option<(String, u16)>, ConnectionError> {
    let mut out = Vec::new();
    if let Some(password) = &target.password {
        let user = target.username.as_deref().unwrap_or("default");
        resp::command(&mut out, &[b"AUTH", user.as_bytes(), password.as_bytes()]);
    }
    let ask: [&[u8]; 3] = [b"SENTINEL", b"get-master-addr-by-name", service.as_bytes()];
    resp::command(&mut out, &ask);
    stream.write_all(&out).await?;
    let mut input = Vec::new();
    if target.password.is_some()
        && let Frame::Error(reason) = next_frame(&mut stream, &mut input).await?
    {
        tracing::debug!(%reason, "a sentinel refused the URL's credentials");
        return Ok(None);
    }
    Ok(master_address(&next_frame(&mut stream, &mut input).await?))
}

/// The `[host, port]` reply; `None` for a service the sentinel does not
/// know (a null) or any other reply.
fn master_address(frame: &Frame) -> Option<(String, u16)> {
    let Frame::Array(fields) = frame else {
        return None;
    };
    let [Frame::Bulk(host), Frame::Bulk(port)] = fields.as_slice() else {
        return None;
    };
    let host = String::from_utf8(host.clone()).ok()?;
    let port = std::str::from_utf8(port).ok()?.parse().ok()?;
    Some((host, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reply_names_the_master_or_nothing() {
        let reply = Frame::Array(vec![
            Frame::Bulk(b"127.0.0.1".to_vec()),
            Frame::Bulk(b"7201".to_vec()),
        ]);
        assert_eq!(master_address(&reply), Some(("127.0.0.1".into(), 7201)));
        assert_eq!(master_address(&Frame::Null), None);
        let bad_port = Frame::Array(vec![Frame::Bulk(b"h".to_vec()), Frame::Bulk(b"x".to_vec())]);
        assert_eq!(master_address(&bad_port), None);
    }
}
