//! A lean HTTP/1.1 keep-alive client: one TCP connection per virtual user,
//! no pool and no redirects, so the generator spends as little CPU per
//! request as possible (its ceiling is measured separately anyway).

use std::{net::SocketAddr, time::Duration};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::{Request, Response, body::Incoming, client::conn::http1::SendRequest, header::HOST};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::stats::Failure;

/// A request that takes longer than this counts as a timeout error.
pub(crate) const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// One keep-alive connection.
#[derive(Debug)]
pub(crate) struct Conn {
    sender: SendRequest<Empty<Bytes>>,
}

impl Conn {
    pub(crate) async fn open(addr: SocketAddr) -> Result<Self, Failure> {
        let stream = TcpStream::connect(addr)
            .await
            .map_err(|_| Failure::Connect)?;
        let _ = stream.set_nodelay(true);
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|_| Failure::Connect)?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(Self { sender })
    }

    /// Sends GET `path` on this connection; returns the response, body unread.
    async fn send(&mut self, path: &str) -> Result<Response<Incoming>, Failure> {
        self.sender.ready().await.map_err(|_| Failure::Io)?;
        let request = Request::get(path)
            .header(HOST, "127.0.0.1")
            .body(Empty::<Bytes>::new())
            .map_err(|_| Failure::Io)?;
        self.sender
            .send_request(request)
            .await
            .map_err(|_| Failure::Io)
    }

    /// GET `path`, read the whole body; returns the status.
    pub(crate) async fn get(&mut self, path: &str) -> Result<u16, Failure> {
        let exchange = async {
            let response = self.send(path).await?;
            let status = response.status().as_u16();
            response
                .into_body()
                .collect()
                .await
                .map_err(|_| Failure::Io)?;
            Ok(status)
        };
        tokio::time::timeout(REQUEST_TIMEOUT, exchange)
            .await
            .map_err(|_| Failure::Timeout)?
    }

    /// GET `path` and return the body as text (for `/metrics`).
    pub(crate) async fn get_text(&mut self, path: &str) -> Result<String, Failure> {
        let response = self.send(path).await?;
        if response.status() != 200 {
            return Err(Failure::Status);
        }
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|_| Failure::Io)?
            .to_bytes();
        Ok(String::from_utf8_lossy(&body).into_owned())
    }
}

/// A connection that reopens itself after a failure.
#[derive(Debug)]
pub(crate) struct Reconnecting {
    addr: SocketAddr,
    conn: Option<Conn>,
}

impl Reconnecting {
    pub(crate) fn new(addr: SocketAddr) -> Self {
        Self { addr, conn: None }
    }

    pub(crate) async fn connect(&mut self) -> Result<(), Failure> {
        if self.conn.is_none() {
            self.conn = Some(Conn::open(self.addr).await?);
        }
        Ok(())
    }

    pub(crate) async fn get(&mut self, path: &str) -> Result<u16, Failure> {
        self.connect().await?;
        let Some(conn) = self.conn.as_mut() else {
            return Err(Failure::Connect);
        };
        let result = conn.get(path).await;
        if result.is_err() {
            self.conn = None;
        }
        result
    }
}
