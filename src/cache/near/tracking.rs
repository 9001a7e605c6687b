//! The near cache's tracking connection: one task that connects, learns
//! the server's run id and role, turns client tracking on, writes the
//! lookups, fences and marker reads, and reads replies and invalidation
//! pushes in their wire order ([`super`] and [`crate::cache::trust`] say why
//! the order matters). After a failure it empties the near cache before it
//! connects again.

use std::{
    collections::VecDeque,
    sync::{Arc, atomic::Ordering},
    time::Duration,
};

use rustls::pki_types::ServerName;
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt},
    net::TcpStream,
    sync::mpsc,
};
use tokio_rustls::client::TlsStream;
use tokio_util::either::Either;

use super::{Get, Lookup, Place, Shared, Target};
use crate::{
    cache::{
        Epoch,
        epoch::payload_start,
        resp::{self, Frame},
        trust::Distrust,
    },
    retry::Backoff,
};
use handshake::{Handshake, Server, handshake};

/// Longest pause between two connection attempts.
const MAX_DELAY: Duration = Duration::from_millis(500);

/// The first pause: a connection that tracked is tried again at once.
const FIRST_DELAY: Duration = Duration::from_millis(20);

mod handshake;
mod sentinel;

/// How often the marker is read again while nothing else asks for it: it is
/// checked anew, and a Redis evicting the least recently used keys keeps it.
const MARKER_EVERY: Duration = Duration::from_secs(1);

/// What a `GET` reply holds: the payload of a `version:payload` value, or
/// `None` for a lease (or any entry without a version); an error for a
/// value whose payload is not JSON.
fn value_payload(raw: &[u8]) -> Result<Option<&str>, serde_json::Error> {
    let Some(payload) = std::str::from_utf8(raw)
        .ok()
        .and_then(|raw| payload_start(raw).map(|at| &raw[at..]))
    else {
        return Ok(None);
    };
    serde_json::from_str::<serde::de::IgnoredAny>(payload)?;
    Ok(Some(payload))
}

/// Connects, tracks and serves until the cache is closed, reconnecting with
/// a growing, jittered delay (10-20 ms to 250-500 ms, `retry::Backoff`)
/// after a failure. A refusal is retried
/// too: it may pass (Redis still loading its data, say), and a Redis that
/// cannot track only costs a refused `HELLO` every half second.
pub(super) async fn run(shared: Arc<Shared>, target: Target, mut requests: mpsc::Receiver<Get>) {
    let reconnect = || Backoff::new(MAX_DELAY).starting_at(FIRST_DELAY);
    let mut backoff = reconnect();
    let mut refusals = 0_u64;
    // The last server reached was a replica, and that was said: a replica
    // is connected to again every second, and said once.
    let mut on_replica = false;
    loop {
        let outcome = tokio::select! {
            () = shared.closed.cancelled() => break,
            outcome = connect_and_serve(&shared, &target, &mut requests, &mut on_replica) => outcome,
        };
        let was_up = shared.up.swap(false, Ordering::AcqRel);
        // What the ended connection verified says nothing about the next
        // server (a restarted one holds what it held before, under the same
        // keys): the next connection reads the marker before it believes.
        shared.verified.clear();
        shared.clear();
        if was_up {
            // A connection that tracked: try again at once, and warn again.
            backoff = reconnect();
            refusals = 0;
        }
        match outcome {
            Ok(Served::Stopped) => break,
            Ok(Served::Refused(reason)) => {
                refusals += 1;
                if refusals == 1 {
                    tracing::warn!(%reason, "Redis refused client tracking: no near cache until it accepts");
                } else {
                    tracing::debug!(%reason, "Redis refused client tracking again");
                }
            }
            Err(e) => tracing::debug!(error = %e, "near cache connection lost"),
        }
        if !pause(backoff.next_delay(), &shared, &mut requests).await {
            break;
        }
    }
    shared.up.store(false, Ordering::Release);
    shared.clear();
}

/// Waits `delay` before the next attempt, failing at once the lookups that
/// come meanwhile; false when the cache was closed or dropped.
async fn pause(delay: Duration, shared: &Shared, requests: &mut mpsc::Receiver<Get>) -> bool {
    let sleep = tokio::time::sleep(delay);
    tokio::pin!(sleep);
    loop {
        tokio::select! {
            () = shared.closed.cancelled() => return false,
            () = &mut sleep => return true,
            get = requests.recv() => match get {
                Some(get) => {
                    let _ = get.reply.send(Lookup::Failed);
                }
                None => return false,
            },
        }
    }
}

enum Served {
    Stopped,
    Refused(String),
}

#[derive(Debug, thiserror::Error)]
enum ConnectionError {
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Protocol(#[from] resp::ProtocolError),
    #[error("timed out")]
    Timeout,
    #[error("closed by Redis")]
    Closed,
    #[error("a reply nobody asked for")]
    Unexpected,
    #[error("no sentinel named the master")]
    NoMaster,
    #[error("the server the sentinels named is not a master (yet)")]
    NotMaster,
}

async fn connect_and_serve(
    shared: &Shared,
    target: &Target,
    requests: &mut mpsc::Receiver<Get>,
    on_replica: &mut bool,
) -> Result<Served, ConnectionError> {
    let (host, port) = match &target.place {
        Place::Server { host, port } | Place::ClusterMaster { host, port } => (host.clone(), *port),
        Place::Sentinel { sentinels, service } => {
            sentinel::master(target, sentinels, service).await?
        }
    };
    let stream = open(target, &host, port).await?;
    serve(shared, target, stream, requests, on_replica).await
}

/// A connection to `host:port` (a Redis server or a sentinel), over TLS when
/// the URL asks for it, each step within the target's timeout.
async fn open(
    target: &Target,
    host: &str,
    port: u16,
) -> Result<Either<TcpStream, TlsStream<TcpStream>>, ConnectionError> {
    let tcp = within(target.timeout, async {
        Ok(TcpStream::connect((host, port)).await?)
    })
    .await?;
    tcp.set_nodelay(true)?;
    let Some(tls) = &target.tls else {
        return Ok(Either::Left(tcp));
    };
    let name = ServerName::try_from(host.to_owned())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    let stream = within(target.timeout, async { Ok(tls.connect(name, tcp).await?) }).await?;
    Ok(Either::Right(stream))
}

async fn within<T>(
    limit: Duration,
    step: impl Future<Output = Result<T, ConnectionError>>,
) -> Result<T, ConnectionError> {
    tokio::time::timeout(limit, step)
        .await
        .map_err(|_| ConnectionError::Timeout)?
}

/// One connection's life: the handshake, then lookups, fences and pushes.
async fn serve<S: AsyncRead + AsyncWrite + Unpin>(
    shared: &Shared,
    target: &Target,
    mut stream: S,
    requests: &mut mpsc::Receiver<Get>,
    on_replica: &mut bool,
) -> Result<Served, ConnectionError> {
    let mut input = Vec::with_capacity(64 * 1024);
    let server = match handshake(target, &mut stream, &mut input).await? {
        Handshake::Refused(reason) => return Ok(Served::Refused(reason)),
        Handshake::Tracking(server) => server,
    };
    if !server.master && !matches!(target.place, Place::Server { .. }) {
        // The sentinels named it before they noticed a failover (ask
        // again), or a cluster's master failed over (the layout will name
        // its successor).
        return Err(ConnectionError::NotMaster);
    }
    if !server.master && !*on_replica {
        tracing::warn!("redis.url leads to a replica: reads answer from PostgreSQL");
    }
    *on_replica = !server.master;
    let mut connection = Connection {
        shared,
        marker_tag: target.marker_tag.as_deref(),
        server,
        pending: VecDeque::new(),
        output: Vec::with_capacity(16 * 1024),
        ping_in_flight: false,
        marker_asked: None,
    };
    shared.up.store(true, Ordering::Release);
    tracing::debug!(run_id = %connection.server.run_id, "near cache tracking");
    let mut markers =
        tokio::time::interval_at(tokio::time::Instant::now() + MARKER_EVERY, MARKER_EVERY);
    markers.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            read = stream.read_buf(&mut input) => {
                if read? == 0 {
                    return Err(ConnectionError::Closed);
                }
                let used = connection.handle(&input)?;
                input.drain(..used);
            }
            get = requests.recv() => {
                let Some(get) = get else { return Ok(Served::Stopped) };
                connection.get(get);
                while let Ok(get) = requests.try_recv() {
                    connection.get(get);
                }
            }
            () = shared.wake.notified() => {}
            _ = markers.tick() => {
                if !connection.server.master {
                    // Promoted in place (`REPLICAOF NO ONE`), a replica
                    // stays the replica its handshake saw: connect again to
                    // read its role anew.
                    return Err(ConnectionError::NotMaster);
                }
                connection.marker_asked = None;
            }
        }
        connection.read_marker_if_needed();
        connection.ping_if_wanted();
        if !connection.output.is_empty() {
            within(target.timeout, async {
                Ok(stream.write_all(&connection.output).await?)
            })
            .await?;
            connection.output.clear();
        }
    }
}

/// The state of one tracking connection between reads.
struct Connection<'a> {
    shared: &'a Shared,
    /// The hash tag of the marker read (a cluster's master).
    marker_tag: Option<&'a str>,
    server: Server,
    /// What each reply still to come answers, in order, with its number.
    pending: VecDeque<(u64, Pending)>,
    output: Vec<u8>,
    ping_in_flight: bool,
    /// The epoch whose marker was last asked for; `None` asks again.
    marker_asked: Option<Epoch>,
}

enum Pending {
    Get(Get),
    Ping,
    /// The marker of an epoch.
    Marker(Epoch),
}

impl Connection<'_> {
    /// Numbers a command. The number is taken before the command is written,
    /// so a reader that saw the count before it knows the command follows it.
    fn next_number(&self) -> u64 {
        self.shared.sent.fetch_add(1, Ordering::SeqCst) + 1
    }

    /// Reads the marker of the wanted epoch when it changed, when a push or
    /// a flush unverified it, or every [`MARKER_EVERY`].
    fn read_marker_if_needed(&mut self) {
        let Some(wanted) = self.shared.trust.wanted() else {
            return;
        };
        if self.marker_asked == Some(wanted) {
            return;
        }
        let number = self.next_number();
        let key = wanted.marker_key_in(self.marker_tag);
        resp::command(&mut self.output, &[b"GET", key.as_bytes()]);
        self.pending.push_back((number, Pending::Marker(wanted)));
        self.marker_asked = Some(wanted);
    }

    fn get(&mut self, get: Get) {
        let number = self.next_number();
        resp::command(&mut self.output, &[b"GET", get.key.as_bytes()]);
        self.pending.push_back((number, Pending::Get(get)));
    }

    /// Writes a PING when a reader waits for a command that is not written
    /// yet and no PING is on its way already.
    fn ping_if_wanted(&mut self) {
        let wanted = self.shared.wanted.load(Ordering::SeqCst);
        if self.ping_in_flight || wanted <= self.shared.sent.load(Ordering::SeqCst) {
            return;
        }
        let number = self.next_number();
        resp::command(&mut self.output, &[b"PING"]);
        self.pending.push_back((number, Pending::Ping));
        self.ping_in_flight = true;
    }

    /// Handles every whole frame at the start of `input`; returns the bytes used.
    fn handle(&mut self, input: &[u8]) -> Result<usize, ConnectionError> {
        let mut used = 0;
        let mut last_done = None;
        while let Some((frame, len)) = resp::parse(&input[used..])? {
            used += len;
            if let Frame::Push(items) = frame {
                self.push(&items);
                continue;
            }
            let (number, pending) = self
                .pending
                .pop_front()
                .ok_or(ConnectionError::Unexpected)?;
            match pending {
                Pending::Ping => self.ping_in_flight = false,
                Pending::Get(get) => self.answer(get, frame),
                Pending::Marker(epoch) => self.marker(epoch, frame),
            }
            last_done = Some(number);
        }
        if let Some(number) = last_done {
            self.shared.done.send_replace(number);
        }
        Ok(used)
    }

    /// A push: `invalidate` with the keys written, or with null when Redis
    /// flushed its data set (or reloaded it, or resynchronised as a
    /// replica): then the epochs in use are distrusted for good.
    fn push(&mut self, items: &[Frame]) {
        match items {
            [Frame::Bulk(kind), Frame::Array(keys)] if kind == b"invalidate" => {
                self.shared.invalidate(keys);
                let marker = self.marker_asked.map(|e| e.marker_key_in(self.marker_tag));
                let named = |key: &Frame| matches!(key, Frame::Bulk(k) if Some(k.as_slice()) == marker.as_ref().map(|m| m.as_bytes()));
                if keys.iter().any(named) {
                    // Written, deleted, expired or evicted: read it again.
                    self.shared.verified.clear();
                    self.marker_asked = None;
                }
            }
            [Frame::Bulk(kind), Frame::Null] if kind == b"invalidate" => {
                self.shared.clear();
                for epoch in self.shared.trust.flushed(&self.shared.verified) {
                    self.distrusted(epoch, Distrust::Flush);
                }
                self.marker_asked = None;
            }
            _ => {}
        }
    }

    /// The reply to a marker read.
    fn marker(&mut self, epoch: Epoch, frame: Frame) {
        let value = match &frame {
            Frame::Bulk(value) => Some(value.as_slice()),
            Frame::Null => None,
            _ => return, // an error: read again at the next tick
        };
        if !self.server.master {
            self.shared.verified.clear();
            return;
        }
        if self
            .shared
            .trust
            .marker_read(&self.shared.verified, epoch, value, &self.server.run_id)
        {
            self.distrusted(epoch, Distrust::Marker);
        }
    }

    fn distrusted(&self, epoch: Epoch, cause: Distrust) {
        self.shared.metrics.cache_distrusted(cause.as_str());
        tracing::warn!(%epoch, cause = cause.as_str(), run_id = %self.server.run_id,
            "Redis may have lost writes (restart, failover, flush or reload): its entries \
             of this cache epoch are never read again, and a new epoch begins");
    }

    fn answer(&self, get: Get, frame: Frame) {
        if !self.shared.believes(get.epoch) {
            // Read after a flush, or from a server not (or no longer) believed.
            let _ = get.reply.send(Lookup::Untrusted);
            return;
        }
        let lookup = match frame {
            Frame::Bulk(raw) => match value_payload(&raw) {
                Ok(Some(payload)) => {
                    let payload: Arc<str> = Arc::from(payload);
                    self.shared.insert(get.key, Arc::clone(&payload));
                    Lookup::Hit {
                        payload: payload.as_ref().to_owned(),
                        near: false,
                    }
                }
                Ok(None) => Lookup::Miss,
                Err(e) => {
                    tracing::warn!(key = %get.key, error = %e, "cached entry does not parse; answering from PostgreSQL");
                    Lookup::Failed
                }
            },
            Frame::Null => Lookup::Miss,
            _ => Lookup::Failed,
        };
        let _ = get.reply.send(lookup);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_json_values_are_kept() {
        assert_eq!(value_payload(b"3:{\"a\":1}").unwrap(), Some("{\"a\":1}"));
        assert_eq!(value_payload(b"0:null").unwrap(), Some("null"));
        let lease = b"lease:4f0c9b2a6d8e4c1fa3b5d7e9f1a2b3c4";
        assert_eq!(value_payload(lease).unwrap(), None, "a lease");
        assert_eq!(value_payload(b"x:{}").unwrap(), None, "no version");
        assert!(value_payload(b"3:{not json").is_err());
    }
}
