//! A network partition made for real: PostgreSQL runs in a network namespace
//! of its own, and each instance reaches it through a router namespace over
//! links of its own. Cutting a path makes the router drop every packet of it
//! both ways (a FIFO queue of length 0 on its two interfaces), so nothing is
//! closed or refused, and neither end's own kernel sees a local failure: the
//! instance and the server each wait for the other, as behind a failed switch.

use std::process::Command;

/// The server's namespace, the router's, and their links to the host;
/// removed when dropped.
pub(super) struct Network {
    server_ns: String,
    router_ns: String,
    paths: Vec<Path>,
}

/// Host ↔ router ↔ server, with the router's two interfaces of that path.
struct Path {
    host_dev: String,
    router_to_host: String,
    router_to_server: String,
    server: String,
}

impl Network {
    /// The namespaces and `paths` paths, named and addressed after `tag` (a
    /// free port), so that test runs side by side never meet.
    pub(super) fn new(tag: u16, paths: u8) -> Self {
        let mut network = Self {
            server_ns: format!("wm-db-{tag}"),
            router_ns: format!("wm-rt-{tag}"),
            paths: Vec::new(),
        };
        run("ip", &["netns", "add", &network.server_ns]);
        run("ip", &["netns", "add", &network.router_ns]);
        in_ns(
            &network.router_ns,
            &["sysctl", "-q", "-w", "net.ipv4.ip_forward=1"],
        );
        let (high, low) = ((tag >> 6) & 0xff, (tag & 0x3f) << 2);
        for i in 0..paths {
            // 10.(200+i).high.low/30 between host and router, 10.(210+i)... between router and server.
            let near = |host: u16| format!("10.{}.{high}.{}", 200 + u16::from(i), low + host);
            let far = |host: u16| format!("10.{}.{high}.{}", 210 + u16::from(i), low + host);
            let path = Path {
                host_dev: format!("wm{tag}h{i}"),
                router_to_host: format!("wm{tag}a{i}"),
                router_to_server: format!("wm{tag}b{i}"),
                server: far(2),
            };
            let server_dev = format!("wm{tag}s{i}");
            let (router, server) = (&network.router_ns, &network.server_ns);
            let (h, rh, rs) = (&path.host_dev, &path.router_to_host, &path.router_to_server);
            run(
                "ip",
                &[
                    "link", "add", h, "type", "veth", "peer", "name", rh, "netns", router,
                ],
            );
            run("ip", &["addr", "add", &format!("{}/30", near(1)), "dev", h]);
            run("ip", &["link", "set", h, "up"]);
            run(
                "ip",
                &["route", "add", &format!("{}/32", far(2)), "via", &near(2)],
            );
            in_ns(
                router,
                &["ip", "addr", "add", &format!("{}/30", near(2)), "dev", rh],
            );
            in_ns(router, &["ip", "link", "set", rh, "up"]);
            in_ns(
                router,
                &[
                    "ip",
                    "link",
                    "add",
                    rs,
                    "type",
                    "veth",
                    "peer",
                    "name",
                    &server_dev,
                    "netns",
                    server,
                ],
            );
            in_ns(
                router,
                &["ip", "addr", "add", &format!("{}/30", far(1)), "dev", rs],
            );
            in_ns(router, &["ip", "link", "set", rs, "up"]);
            in_ns(
                server,
                &[
                    "ip",
                    "addr",
                    "add",
                    &format!("{}/30", far(2)),
                    "dev",
                    &server_dev,
                ],
            );
            in_ns(server, &["ip", "link", "set", &server_dev, "up"]);
            in_ns(
                server,
                &[
                    "ip",
                    "route",
                    "add",
                    &format!("{}/32", near(1)),
                    "via",
                    &far(1),
                ],
            );
            network.paths.push(path);
        }
        in_ns(&network.server_ns, &["ip", "link", "set", "lo", "up"]);
        network
    }

    /// The namespace the server runs in.
    pub(super) fn server_ns(&self) -> &str {
        &self.server_ns
    }

    /// The server's address on path `i`.
    pub(super) fn server(&self, i: usize) -> &str {
        &self.paths[i].server
    }

    /// The router drops every packet of path `i`, both ways.
    pub(super) fn cut(&self, i: usize) {
        let path = &self.paths[i];
        for dev in [&path.router_to_host, &path.router_to_server] {
            in_ns(
                &self.router_ns,
                &[
                    "tc", "qdisc", "add", "dev", dev, "root", "pfifo", "limit", "0",
                ],
            );
        }
    }

    /// The router forwards path `i` again.
    pub(super) fn heal(&self, i: usize) {
        let path = &self.paths[i];
        for dev in [&path.router_to_host, &path.router_to_server] {
            in_ns(&self.router_ns, &["tc", "qdisc", "del", "dev", dev, "root"]);
        }
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        for path in &self.paths {
            let _ = Command::new("ip")
                .args(["link", "del", &path.host_dev])
                .status();
        }
        for ns in [&self.router_ns, &self.server_ns] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

fn in_ns(ns: &str, command: &[&str]) {
    let mut args = vec!["netns", "exec", ns];
    args.extend_from_slice(command);
    run("ip", &args);
}

fn run(program: &str, args: &[&str]) {
    let status = Command::new(program)
        .args(args)
        .status()
        .unwrap_or_else(|e| panic!("{program} runs: {e}"));
    assert!(status.success(), "{program} {args:?} failed");
}
