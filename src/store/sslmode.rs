//! TLS for PostgreSQL: `postgres.sslmode` (libpq's names and meanings) turned
//! into tokio-postgres's mode and a connector over tokio-rustls, used by the
//! pools and by the maintenance connection that creates the database.

use std::{
    future::Future,
    io,
    path::Path,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use rustls::{ClientConfig, pki_types::ServerName};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_postgres::{
    config::SslMode as WireMode,
    tls::{ChannelBinding, MakeTlsConnect, TlsConnect, TlsStream},
};

use crate::{
    config::PgSslMode,
    tls::{self, TlsError, Verify},
};

/// What tokio-postgres is asked for, and how the certificate is checked.
fn plan(mode: PgSslMode) -> (WireMode, Verify) {
    match mode {
        PgSslMode::Disable => (WireMode::Disable, Verify::Nothing),
        PgSslMode::Prefer => (WireMode::Prefer, Verify::Nothing),
        PgSslMode::Require => (WireMode::Require, Verify::Nothing),
        PgSslMode::VerifyCa => (WireMode::Require, Verify::Chain),
        PgSslMode::VerifyFull => (WireMode::Require, Verify::Full),
    }
}

/// Sets `pg`'s TLS mode for `mode` and returns the connector to use, which
/// trusts `ca_file` (or the system's roots) where `mode` verifies.
pub(crate) fn secure(
    pg: &mut tokio_postgres::Config,
    mode: PgSslMode,
    ca_file: Option<&Path>,
) -> Result<MakeRustls, TlsError> {
    let (wire, verify) = plan(mode);
    pg.ssl_mode(wire);
    let config = tls::client_config(verify, ca_file)?;
    Ok(MakeRustls { config })
}

/// Makes a TLS connector per connection, for the host it connects to.
#[derive(Debug, Clone)]
pub struct MakeRustls {
    config: Arc<ClientConfig>,
}

impl<S> MakeTlsConnect<S> for MakeRustls
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = RustlsStream<S>;
    type TlsConnect = RustlsConnect;
    type Error = rustls::pki_types::InvalidDnsNameError;

    fn make_tls_connect(&mut self, host: &str) -> Result<RustlsConnect, Self::Error> {
        Ok(RustlsConnect {
            config: Arc::clone(&self.config),
            server: ServerName::try_from(host.to_owned())?,
        })
    }
}

/// The TLS handshake of one connection.
#[derive(Debug)]
pub struct RustlsConnect {
    config: Arc<ClientConfig>,
    server: ServerName<'static>,
}

impl<S> TlsConnect<S> for RustlsConnect
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = RustlsStream<S>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<RustlsStream<S>>> + Send>>;

    fn connect(self, stream: S) -> Self::Future {
        let connector = tokio_rustls::TlsConnector::from(self.config);
        Box::pin(async move {
            let stream = connector.connect(self.server, stream).await?;
            Ok(RustlsStream(stream))
        })
    }
}

/// A connection encrypted by rustls.
#[derive(Debug)]
pub struct RustlsStream<S>(tokio_rustls::client::TlsStream<S>);

impl<S: AsyncRead + AsyncWrite + Unpin> TlsStream for RustlsStream<S> {
    /// No channel binding: SCRAM runs without it (tokio-postgres's default
    /// `channel_binding = prefer` accepts that).
    fn channel_binding(&self) -> ChannelBinding {
        ChannelBinding::none()
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for RustlsStream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for RustlsStream<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}
