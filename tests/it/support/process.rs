//! The real binary as a child process, configured only by its environment and
//! run in a working directory of the test's choice, with everything it prints
//! captured: what an operator sees of it. The process itself is managed by
//! the library's `devtools::child`, as the benchmarks' is.

use std::{
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    time::Duration,
};

use warehouse_monitor::devtools;

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
pub(crate) struct Service(devtools::child::Service);

impl Service {
    /// Starts `serve` in `dir` with `vars` (and an HTTP port of its own), and
    /// waits until `/health/live` answers.
    pub(crate) async fn start(dir: &Path, vars: &[(&str, String)]) -> Self {
        let log = dir.join(format!("service-{}.log", uuid::Uuid::new_v4()));
        let mut serve = command(dir, vars);
        serve.arg("serve");
        match devtools::child::Service::start(serve, &log, Duration::from_secs(60)).await {
            Ok(service) => Self(service),
            Err(e) => panic!(
                "{e}:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            ),
        }
    }

    pub(crate) fn url(&self, path: &str) -> String {
        self.0.url(path)
    }

    /// Stops it as an orchestrator would (SIGTERM) and waits for it; returns
    /// everything it printed.
    pub(crate) async fn stop(self) -> String {
        let log = self.0.log().to_owned();
        let status = self.0.stop(Duration::from_secs(60)).await;
        let output = std::fs::read_to_string(log).unwrap_or_default();
        let status = status.expect("the service process is waited for");
        assert!(status.success(), "stopped with {status}:\n{output}");
        output
    }
}
