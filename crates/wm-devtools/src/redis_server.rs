//! A redis-server of the caller's own, for the tests and the benchmarks that
//! must restart, pause or measure a Redis nobody else uses: started on a
//! given port without persistence (unless the options say otherwise), and
//! stopped when dropped.

use std::{
    io,
    process::{Child, Command, Stdio},
    time::Duration,
};

/// How long a started server may take to listen.
const LISTEN_WITHIN: Duration = Duration::from_secs(2);

/// A running redis-server child process.
#[derive(Debug)]
pub struct RedisServer {
    port: u16,
    child: Option<Child>,
}

impl RedisServer {
    /// Starts redis-server on `port` with `options` after the defaults (no
    /// RDB snapshots, no AOF), which they override; returns once it listens.
    pub async fn start(port: u16, options: &[&str]) -> io::Result<Self> {
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .args(options)
            .stdout(Stdio::null())
            .spawn()?;
        let server = Self {
            port,
            child: Some(child),
        };
        let deadline = tokio::time::Instant::now() + LISTEN_WITHIN;
        loop {
            match tokio::net::TcpStream::connect(("127.0.0.1", port)).await {
                Ok(_) => return Ok(server),
                Err(e) if tokio::time::Instant::now() >= deadline => {
                    return Err(io::Error::new(
                        e.kind(),
                        format!("redis-server did not listen on {port}: {e}"),
                    ));
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// What `redis-cli` printed for `args` against this server, without the
    /// trailing newline.
    pub fn cli(&self, args: &[&str]) -> io::Result<String> {
        cli(self.port, args)
    }

    /// Sends `signal` (as `kill` takes it, `-STOP` say) to the server.
    pub fn signal(&self, signal: &str) -> io::Result<()> {
        let Some(child) = &self.child else {
            return Err(io::Error::other("the server was killed"));
        };
        let status = Command::new("kill")
            .args([signal, &child.id().to_string()])
            .status()?;
        if status.success() {
            Ok(())
        } else {
            Err(io::Error::other(format!("kill {signal} failed: {status}")))
        }
    }

    /// Kills the server and waits for it (nothing if it was killed already).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        // A paused server is resumed first, so that it can die.
        let _ = self.signal("-CONT");
        self.kill();
    }
}

/// What `redis-cli -p <port>` printed for `args`, without the trailing
/// newline.
pub fn cli(port: u16, args: &[&str]) -> io::Result<String> {
    let out = Command::new("redis-cli")
        .args(["-p", &port.to_string()])
        .args(args)
        .output()?;
    Ok(String::from_utf8_lossy(&out.stdout).trim_end().to_owned())
}
