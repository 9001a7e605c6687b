//! The real binary as an operator runs it: configured only by its
//! environment, in a working directory of the test's choice, for one
//! command to its end (`run`); `serve` is `helpers::ServiceProcess::start_bare`.

use std::{
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
};

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
