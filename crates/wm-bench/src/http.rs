//! A lean HTTP/1.1 keep-alive client: one TCP connection per virtual user,
//! driven by the user's own task (no connection task to wake, no pool, no
//! redirects), with one reused buffer and httparse for the status line and
//! headers. The generator shares two cores with the service it measures, so
//! every microsecond it spends per request is taken from the service (its
//! ceiling is measured separately anyway).

use std::{net::SocketAddr, time::Duration};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

use crate::stats::Failure;

/// A request that takes longer than this counts as a timeout error.
pub(crate) const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Largest response head accepted.
const MAX_HEAD: usize = 16 * 1024;

/// One keep-alive connection.
#[derive(Debug)]
pub(crate) struct Conn {
    stream: TcpStream,
    /// Bytes read from the socket and not consumed yet.
    buf: Vec<u8>,
    /// The request being written (reused).
    request: Vec<u8>,
}

/// Where a response's body ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    Length(usize),
    Chunked,
}

impl Conn {
    pub(crate) async fn open(addr: SocketAddr) -> Result<Self, Failure> {
        let stream = TcpStream::connect(addr)
            .await
            .map_err(|_| Failure::Connect)?;
        let _ = stream.set_nodelay(true);
        Ok(Self {
            stream,
            buf: Vec::with_capacity(8 * 1024),
            request: Vec::with_capacity(256),
        })
    }

    /// GET `path`, read the whole body; returns the status.
    pub(crate) async fn get(&mut self, path: &str) -> Result<u16, Failure> {
        let exchange = async {
            let (status, _) = self.exchange(path, false).await?;
            Ok(status)
        };
        tokio::time::timeout(REQUEST_TIMEOUT, exchange)
            .await
            .map_err(|_| Failure::Timeout)?
    }

    /// GET `path`; returns the status and the body.
    pub(crate) async fn get_with_body(&mut self, path: &str) -> Result<(u16, Vec<u8>), Failure> {
        tokio::time::timeout(REQUEST_TIMEOUT, self.exchange(path, true))
            .await
            .map_err(|_| Failure::Timeout)?
    }

    /// GET `path` and return the body as text (for `/metrics`).
    pub(crate) async fn get_text(&mut self, path: &str) -> Result<String, Failure> {
        let (status, body) = self.exchange(path, true).await?;
        if status != 200 {
            return Err(Failure::Status);
        }
        Ok(String::from_utf8_lossy(&body).into_owned())
    }

    /// Writes the request and reads its whole response; the body is kept
    /// only when `keep_body`.
    async fn exchange(&mut self, path: &str, keep_body: bool) -> Result<(u16, Vec<u8>), Failure> {
        self.request.clear();
        self.request.extend_from_slice(b"GET ");
        self.request.extend_from_slice(path.as_bytes());
        self.request
            .extend_from_slice(b" HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
        self.stream
            .write_all(&self.request)
            .await
            .map_err(|_| Failure::Io)?;
        let (status, framing, head_len) = loop {
            if let Some(head) = parse_head(&self.buf)? {
                break head;
            }
            if self.buf.len() > MAX_HEAD {
                return Err(Failure::Io);
            }
            self.fill().await?;
        };
        self.buf.drain(..head_len);
        let body = match framing {
            Framing::Length(n) => {
                while self.buf.len() < n {
                    self.fill().await?;
                }
                let body = if keep_body {
                    self.buf[..n].to_vec()
                } else {
                    Vec::new()
                };
                self.buf.drain(..n);
                body
            }
            Framing::Chunked => self.chunked_body(keep_body).await?,
        };
        Ok((status, body))
    }

    /// Reads a chunked body to its last chunk (trailers are not expected).
    async fn chunked_body(&mut self, keep_body: bool) -> Result<Vec<u8>, Failure> {
        let mut body = Vec::new();
        loop {
            let line_end = loop {
                if let Some(i) = find(&self.buf, b"\r\n") {
                    break i;
                }
                self.fill().await?;
            };
            let size_text = std::str::from_utf8(&self.buf[..line_end]).map_err(|_| Failure::Io)?;
            let size_text = size_text.split(';').next().unwrap_or("").trim();
            let size = usize::from_str_radix(size_text, 16).map_err(|_| Failure::Io)?;
            let needed = line_end + 2 + size + 2;
            while self.buf.len() < needed {
                self.fill().await?;
            }
            if keep_body {
                body.extend_from_slice(&self.buf[line_end + 2..line_end + 2 + size]);
            }
            self.buf.drain(..needed);
            if size == 0 {
                return Ok(body);
            }
        }
    }

    /// Reads more bytes into the buffer; a closed connection is an I/O error.
    async fn fill(&mut self) -> Result<(), Failure> {
        self.buf.reserve(4096);
        match self.stream.read_buf(&mut self.buf).await {
            Ok(0) | Err(_) => Err(Failure::Io),
            Ok(_) => Ok(()),
        }
    }
}

/// The status, body framing and head length of a complete response head in
/// `buf`; `None` while the head is incomplete.
fn parse_head(buf: &[u8]) -> Result<Option<(u16, Framing, usize)>, Failure> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut response = httparse::Response::new(&mut headers);
    let head_len = match response.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(_) => return Err(Failure::Io),
    };
    let status = response.code.ok_or(Failure::Io)?;
    let mut framing = Framing::Length(0);
    for h in response.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            let n = std::str::from_utf8(h.value)
                .ok()
                .and_then(|v| v.trim().parse().ok())
                .ok_or(Failure::Io)?;
            framing = Framing::Length(n);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding")
            && h.value.eq_ignore_ascii_case(b"chunked")
        {
            framing = Framing::Chunked;
            break;
        }
    }
    Ok(Some((status, framing, head_len)))
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
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

    /// GET `path`; returns the status and the body.
    pub(crate) async fn get_with_body(&mut self, path: &str) -> Result<(u16, Vec<u8>), Failure> {
        self.connect().await?;
        let Some(conn) = self.conn.as_mut() else {
            return Err(Failure::Connect);
        };
        let result = conn.get_with_body(path).await;
        if result.is_err() {
            self.conn = None;
        }
        result
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_give_status_and_framing() {
        let head = b"HTTP/1.1 404 Not Found\r\ncontent-type: application/json\r\nContent-Length: 12\r\n\r\n{\"a\":";
        let (status, framing, len) = parse_head(head).unwrap().unwrap();
        assert_eq!((status, framing), (404, Framing::Length(12)));
        assert_eq!(&head[len..], b"{\"a\":");
        assert_eq!(parse_head(b"HTTP/1.1 200 OK\r\ncontent-le").unwrap(), None);
        let chunked = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n";
        assert_eq!(parse_head(chunked).unwrap().unwrap().1, Framing::Chunked);
        assert!(parse_head(b"garbage\r\n\r\n").is_err());
    }

    #[tokio::test]
    async fn reads_length_and_chunked_bodies_on_one_connection() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut seen = Vec::new();
            let mut buf = [0u8; 1024];
            let answers: [&[u8]; 2] = [
                b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello",
                b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
            ];
            for (i, answer) in answers.iter().enumerate() {
                while seen.windows(4).filter(|w| w == b"\r\n\r\n").count() <= i {
                    let n = s.read(&mut buf).await.unwrap();
                    seen.extend_from_slice(&buf[..n]);
                }
                s.write_all(answer).await.unwrap();
            }
            seen
        });
        let mut conn = Conn::open(addr).await.unwrap();
        assert_eq!(conn.get("/a").await, Ok(200));
        assert_eq!(conn.get_text("/b").await.as_deref(), Ok("abcde"));
        let seen = String::from_utf8(server.await.unwrap()).unwrap();
        assert!(
            seen.starts_with("GET /a HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\nGET /b"),
            "{seen}"
        );
    }
}
