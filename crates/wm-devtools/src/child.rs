//! The service binary as a child process, for the tools and tests that
//! watch it from the outside (the benchmarks, and the tests of what an
//! operator sees): started on a free port with everything it prints going
//! to a log file, ready once `/health/live` answers, stopped as an
//! orchestrator stops it (SIGTERM, then SIGKILL after a grace period), and
//! never left behind: dropped, it is killed.

use std::{
    io,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    time::Duration,
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    time::{Instant, sleep, timeout},
};

/// How often a starting or stopping process is looked at.
const POLL: Duration = Duration::from_millis(20);
/// How long one `/health/live` probe may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// Why the service process did not start or run.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error(
        "cannot start the service {path}: {source} (build it with `cargo build --release --features devtools --bins`)"
    )]
    Spawn {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("the service's log {path}: {source}")]
    Log {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("no free port on 127.0.0.1: {0}")]
    Port(#[source] io::Error),
    #[error("the service exited early ({status}); see {log}")]
    Exited { status: ExitStatus, log: PathBuf },
    #[error("the service at {addr} did not answer /health/live within {secs} s; see {log}")]
    NotLive {
        addr: SocketAddr,
        secs: u64,
        log: PathBuf,
    },
    #[error("waiting for the service process: {0}")]
    Wait(#[source] io::Error),
}

/// A running service process.
#[derive(Debug)]
pub struct Service {
    child: Child,
    addr: SocketAddr,
    log: PathBuf,
}

impl Service {
    /// Runs `command` (the binary, its arguments, `serve`, its environment)
    /// with `WM_HTTP__ADDR` set to a free port of 127.0.0.1 and its stdout
    /// and stderr written to `log`; returns once `/health/live` answers 200,
    /// or fails when the process exits first or `patience` runs out (the
    /// process is killed then).
    pub async fn start(
        mut command: Command,
        log: &Path,
        patience: Duration,
    ) -> Result<Self, ServiceError> {
        let addr = SocketAddr::from((
            [127, 0, 0, 1],
            super::free_port().map_err(ServiceError::Port)?,
        ));
        let log_error = |source| ServiceError::Log {
            path: log.to_owned(),
            source,
        };
        let out = std::fs::File::create(log).map_err(log_error)?;
        let err = out.try_clone().map_err(log_error)?;
        let child = command
            .env("WM_HTTP__ADDR", addr.to_string())
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(|source| ServiceError::Spawn {
                path: command.get_program().into(),
                source,
            })?;
        let mut service = Self {
            child,
            addr,
            log: log.to_owned(),
        };
        service.wait_live(patience).await?;
        Ok(service)
    }

    async fn wait_live(&mut self, patience: Duration) -> Result<(), ServiceError> {
        let deadline = Instant::now() + patience;
        loop {
            self.check_running()?;
            if answers_live(self.addr).await {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(ServiceError::NotLive {
                    addr: self.addr,
                    secs: patience.as_secs(),
                    log: self.log.clone(),
                });
            }
            sleep(POLL).await;
        }
    }

    /// The address its HTTP API listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://<addr><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// The file its stdout and stderr go to: everything it printed.
    pub fn log(&self) -> &Path {
        &self.log
    }

    /// Fails if the process has exited.
    pub fn check_running(&mut self) -> Result<(), ServiceError> {
        match self.child.try_wait() {
            Ok(Some(status)) => Err(ServiceError::Exited {
                status,
                log: self.log.clone(),
            }),
            _ => Ok(()),
        }
    }

    /// The most memory the process has held resident so far (`VmHWM` in
    /// `/proc`), in bytes; `None` where `/proc` cannot be read.
    pub fn peak_rss(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).ok()?;
        let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
        let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib * 1024)
    }

    /// Stops it as an orchestrator would: SIGTERM, then SIGKILL if it is
    /// still running after `grace`; returns how it exited.
    pub async fn stop(mut self, grace: Duration) -> Result<ExitStatus, ServiceError> {
        if let Some(status) = self.child.try_wait().map_err(ServiceError::Wait)? {
            return Ok(status);
        }
        // `kill` the command: the library itself holds no unsafe code.
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().map_err(ServiceError::Wait)? {
                return Ok(status);
            }
            sleep(POLL).await;
        }
        let _ = self.child.kill();
        self.child.wait().map_err(ServiceError::Wait)
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// True when `GET /health/live` on `addr` answers 200.
async fn answers_live(addr: SocketAddr) -> bool {
    let probe = async {
        let mut stream = TcpStream::connect(addr).await?;
        let request =
            format!("GET /health/live HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await?;
        let mut status_line = [0_u8; 12];
        stream.read_exact(&mut status_line).await?;
        Ok::<_, io::Error>(&status_line == b"HTTP/1.1 200")
    };
    matches!(timeout(PROBE_TIMEOUT, probe).await, Ok(Ok(true)))
}
