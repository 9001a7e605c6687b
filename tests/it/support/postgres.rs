//! PostgreSQL servers of the test's own.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

/// A PostgreSQL cluster in a temporary directory, run as the `postgres` user
/// (tests/it/secure_connections.rs runs it with TLS, tests/it/failover in a network
/// namespace).
pub(crate) struct OwnPostgres {
    bin: PathBuf,
    dir: PathBuf,
    port: u16,
}

impl OwnPostgres {
    pub(crate) fn init(port: u16) -> Self {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .expect("PostgreSQL is installed")
            .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
            .filter(|p| p.join("initdb").exists())
            .max()
            .expect("initdb found");
        let dir = std::env::temp_dir().join(format!("wm-pg-{port}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let pg = OwnPostgres { bin, dir, port };
        assert!(
            Command::new("chown")
                .args(["postgres:postgres"])
                .arg(&pg.dir)
                .status()
                .unwrap()
                .success()
        );
        pg.run(
            "initdb",
            &[
                "-D",
                &pg.data(),
                "-A",
                "trust",
                "-U",
                "postgres",
                "--no-sync",
            ],
        );
        pg
    }

    pub(crate) fn data(&self) -> String {
        self.dir.join("data").display().to_string()
    }

    pub(crate) fn run(&self, tool: &str, args: &[&str]) {
        let status = Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(self.bin.join(tool))
            .args(args)
            .stdout(std::process::Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "{tool} {args:?} failed");
    }

    pub(crate) fn start(&self) {
        self.start_with("");
    }

    /// Starts with TLS on, presenting the certificate `cert_pem` (its chain,
    /// PEM) with the key `key_pem`; plain connections are still accepted.
    pub(crate) fn start_tls(&self, cert_pem: &str, key_pem: &str) {
        let cert = self.dir.join("server.crt");
        let key = self.dir.join("server.key");
        std::fs::write(&cert, cert_pem).unwrap();
        std::fs::write(&key, key_pem).unwrap();
        // The server refuses a key that others can read, or that it does not own.
        for (path, mode) in [(&cert, "0644"), (&key, "0600")] {
            for (tool, arg) in [("chown", "postgres:postgres"), ("chmod", mode)] {
                assert!(
                    Command::new(tool)
                        .arg(arg)
                        .arg(path)
                        .status()
                        .unwrap()
                        .success()
                );
            }
        }
        self.start_with(&format!(
            "-c ssl=on -c ssl_cert_file={} -c ssl_key_file={}",
            cert.display(),
            key.display()
        ));
    }

    /// Starts with extra server options (`-c name=value ...`).
    pub(crate) fn start_with(&self, extra: &str) {
        let options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -k {} -c fsync=off {extra}",
            self.port,
            self.dir.display()
        );
        let log = self.dir.join("log").display().to_string();
        self.run(
            "pg_ctl",
            &[
                "-D",
                &self.data(),
                "-o",
                &options,
                "-l",
                &log,
                "-w",
                "start",
            ],
        );
    }

    /// Starts inside the network namespace `netns`, listening on `addresses`
    /// (comma-separated) and trusting every client address.
    pub(crate) fn start_in_netns(&self, netns: &str, addresses: &str) {
        let hba = self.dir.join("data/pg_hba.conf");
        let mut rules = std::fs::read_to_string(&hba).expect("pg_hba.conf");
        rules.push_str("host all all 0.0.0.0/0 trust\n");
        std::fs::write(&hba, rules).expect("pg_hba.conf written");
        let options = format!(
            "-p {} -c listen_addresses={addresses} -k {} -c fsync=off",
            self.port,
            self.dir.display()
        );
        let log = self.dir.join("log").display().to_string();
        let status = Command::new("ip")
            .args(["netns", "exec", netns, "runuser", "-u", "postgres", "--"])
            .arg(self.bin.join("pg_ctl"))
            .args([
                "-D",
                &self.data(),
                "-o",
                &options,
                "-l",
                &log,
                "-w",
                "start",
            ])
            .stdout(std::process::Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "pg_ctl start in {netns} failed");
    }

    /// The server and every backend, as the kernel sees them.
    pub(crate) fn processes(&self) -> Vec<String> {
        let pid_file = self.dir.join("data/postmaster.pid");
        let text = std::fs::read_to_string(pid_file).expect("postmaster.pid");
        let postmaster = text.lines().next().unwrap().trim().to_owned();
        let children = Command::new("pgrep")
            .args(["-P", &postmaster])
            .output()
            .unwrap();
        let mut pids = vec![postmaster];
        pids.extend(
            String::from_utf8_lossy(&children.stdout)
                .split_whitespace()
                .map(str::to_owned),
        );
        pids
    }

    /// Sends `signal` to the server and every backend.
    pub(crate) fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .args(self.processes())
            .status()
            .unwrap();
        assert!(status.success(), "kill -{signal}");
    }

    /// Stops at once, like a crash: no shutdown checkpoint, clients cut off.
    pub(crate) fn crash(&self) {
        self.run(
            "pg_ctl",
            &["-D", &self.data(), "-m", "immediate", "-w", "stop"],
        );
    }
}

impl Drop for OwnPostgres {
    fn drop(&mut self) {
        let _ = Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(self.bin.join("pg_ctl"))
            .args(["-D", &self.data(), "-m", "immediate", "stop"])
            .status();
        let _ = std::fs::remove_dir_all(Path::new(&self.dir));
    }
}
