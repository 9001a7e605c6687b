//! The real binary as a child process, configured only by its environment and
//! run in a working directory of the test's choice, with everything it prints
//! captured: what an operator sees of it.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    time::Duration,
};

use crate::helpers::{Patience, eventually, free_port};

const BINARY: &str = env!("CARGO_BIN_EXE_warehouse-monitor");

/// A command of the binary with an empty environment (only `vars`) in `dir`.
pub(crate) fn command(dir: &Path, vars: &[(&str, String)]) -> Command {
    let mut command = Command::new(BINARY);
    command.current_dir(dir).env_clear();
    for (name, value) in vars {
        command.env(name, value);
    }
    command
}

/// Runs `args` to the end; returns its exit status and output.
pub(crate) fn run(dir: &Path, vars: &[(&str, String)], args: &[&str]) -> Output {
    command(dir, vars)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("the binary runs")
}

/// A directory of its own, empty.
pub(crate) fn empty_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("wm-cwd-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A running `warehouse-monitor serve`, its output going to a file.
pub(crate) struct Service {
    pub(crate) addr: SocketAddr,
    child: Option<Child>,
    log: PathBuf,
}

impl Service {
    /// Starts `serve` in `dir` with `vars` (and an HTTP port of its own), and
    /// waits until `/health/live` answers.
    pub(crate) async fn start(dir: &Path, vars: &[(&str, String)]) -> Self {
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let log = dir.join(format!("service-{}.log", addr.port()));
        let out = std::fs::File::create(&log).unwrap();
        let child = command(dir, vars)
            .env("WM_HTTP__ADDR", addr.to_string())
            .arg("serve")
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("the service starts");
        let mut service = Self {
            addr,
            child: Some(child),
            log,
        };
        let http = reqwest::Client::new();
        let url = service.url("/health/live");
        let patience = Patience::secs(60).every(Duration::from_millis(100));
        eventually(patience, || {
            let (http, url) = (&http, &url);
            let exited = service.exited();
            async move {
                if let Some(status) = exited {
                    return Err(format!("the service exited with {status}"));
                }
                match http.get(url).send().await {
                    Ok(r) if r.status().is_success() => Ok(()),
                    Ok(r) => Err(format!("/health/live answered {}", r.status())),
                    Err(e) => Err(format!("/health/live: {e}")),
                }
            }
        })
        .await;
        service.assert_running();
        service
    }

    fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.as_mut().and_then(|c| c.try_wait().unwrap())
    }

    fn assert_running(&mut self) {
        if let Some(status) = self.exited() {
            panic!("the service exited with {status}:\n{}", self.output());
        }
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Everything it printed so far (stdout and stderr).
    pub(crate) fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Stops it as an orchestrator would (SIGTERM) and waits for it; returns
    /// everything it printed.
    pub(crate) fn stop(mut self) -> String {
        if let Some(mut child) = self.child.take() {
            let pid = child.id().to_string();
            let _ = Command::new("kill").args(["-TERM", &pid]).status();
            let status = child.wait().unwrap();
            assert!(
                status.success(),
                "stopped with {status}:\n{}",
                self.output()
            );
        }
        self.output()
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
