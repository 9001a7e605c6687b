//! The start of a tracking connection: `HELLO 3` (with the credentials),
//! `SELECT`, `CLIENT TRACKING ON` and `INFO server`, which tell whether Redis
//! can track at all, and which server this is (its run id, new at every
//! start of a Redis process, and its role): what an epoch's marker is
//! checked against ([`crate::cache::trust`]).

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::{ConnectionError, Target, within};
use crate::cache::{
    resp::{self, Frame},
    trust,
};

/// The server a tracking connection reached.
#[derive(Debug)]
pub(super) struct Server {
    /// Its run id: new at every start of a Redis process, and its own on
    /// every replica.
    pub(super) run_id: String,
    /// It is a primary (`role` in `HELLO`'s reply), not a replica.
    pub(super) master: bool,
}

pub(super) enum Handshake {
    Tracking(Server),
    /// Redis refused (tracking needs Redis 6), with its reason.
    Refused(String),
}

/// `HELLO 3` (with the credentials), `SELECT`, `CLIENT TRACKING ON`, `INFO
/// server`: the server's run id and role, or the reason Redis refused.
pub(super) async fn handshake<S: AsyncRead + AsyncWrite + Unpin>(
    target: &Target,
    stream: &mut S,
    input: &mut Vec<u8>,
) -> Result<Handshake, ConnectionError> {
    let mut out = Vec::new();
    let database = target.database.map(|db| db.to_string());
    let mut hello: Vec<&[u8]> = vec![b"HELLO", b"3"];
    if let Some(password) = &target.password {
        let user = target.username.as_deref().unwrap_or("default");
        hello.extend([b"AUTH".as_slice(), user.as_bytes(), password.as_bytes()]);
    }
    hello.extend([b"SETNAME".as_slice(), b"wm-near-cache"]);
    resp::command(&mut out, &hello);
    if let Some(db) = &database {
        resp::command(&mut out, &[b"SELECT", db.as_bytes()]);
    }
    resp::command(&mut out, &[b"CLIENT", b"TRACKING", b"ON"]);
    resp::command(&mut out, &[b"INFO", b"server"]);
    let replies = 3 + usize::from(database.is_some());
    within(target.timeout, async { Ok(stream.write_all(&out).await?) }).await?;
    let (mut master, mut run_id) = (false, None);
    for reply in 0..replies {
        let frame = within(target.timeout, next_frame(stream, input)).await?;
        match frame {
            Frame::Error(reason) => return Ok(Handshake::Refused(reason)),
            Frame::Array(fields) if reply == 0 => master = role_is_master(&fields),
            Frame::Bulk(info) if reply + 1 == replies => run_id = info_run_id(&info),
            _ => {}
        }
    }
    let run_id = run_id.ok_or(ConnectionError::Unexpected)?;
    Ok(Handshake::Tracking(Server { run_id, master }))
}

/// True when `HELLO`'s reply (a map, as keys and values in turn) says
/// `role` `master`.
fn role_is_master(fields: &[Frame]) -> bool {
    fields
        .chunks(2)
        .any(|kv| matches!(kv, [Frame::Bulk(k), Frame::Bulk(v)] if k == b"role" && v == b"master"))
}

/// The run id in `INFO server`'s reply (a verbatim string keeps its `txt:`
/// format prefix, on a line of its own).
fn info_run_id(info: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(info).ok()?;
    trust::info_run_id(text).map(str::to_owned)
}

/// Reads until one whole frame is in `input`, and takes it out.
pub(super) async fn next_frame<S: AsyncRead + Unpin>(
    stream: &mut S,
    input: &mut Vec<u8>,
) -> Result<Frame, ConnectionError> {
    loop {
        if let Some((frame, used)) = resp::parse(input)? {
            input.drain(..used);
            return Ok(frame);
        }
        if stream.read_buf(input).await? == 0 {
            return Err(ConnectionError::Closed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_handshake_tells_the_role_and_the_run_id() {
        let map = |role: &[u8]| {
            vec![
                Frame::Bulk(b"server".to_vec()),
                Frame::Bulk(b"redis".to_vec()),
                Frame::Bulk(b"role".to_vec()),
                Frame::Bulk(role.to_vec()),
            ]
        };
        assert!(role_is_master(&map(b"master")));
        assert!(!role_is_master(&map(b"replica")));
        let info =
            b"txt:# Server\r\nredis_version:7.0.15\r\nrun_id:db6b19a35f33\r\ntcp_port:6379\r\n";
        assert_eq!(info_run_id(info).as_deref(), Some("db6b19a35f33"));
        assert_eq!(info_run_id(b"# Server\r\n"), None);
    }
}
