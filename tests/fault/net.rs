//! The test network: one "switch" namespace holding a bridge, one namespace per node and one for
//! the clients, each joined to the bridge by a veth pair, with private addresses (10.77.0.0/24)
//! that exist only inside these namespaces. Faults are real: a link set down on the switch side
//! cuts a node off entirely; an nftables table inside a node's namespace drops chosen traffic
//! (a partition between some nodes only, one direction only, or random loss).
//!
//! Names carry the test process's PID and a sequence number, so parallel runs and leftovers of
//! a crashed run never collide. `Drop` deletes every namespace this value created (with them go
//! their interfaces, bridge and nftables tables). Nothing here touches the root namespace: every
//! `ip`/`nft` command runs with `-n <ns>` or inside a namespace of ours.
//!
//! A process or thread enters a namespace with `setns(2)`: [`Net::command`] does it in the
//! child before `exec` (so the PID we hold is the program's own), [`enter`] on the calling
//! thread (a thread's sockets then live in that namespace; the test's other threads are not
//! affected).

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The address of node `i` (0-based) on the test network.
pub fn node_addr(i: usize) -> String {
    format!("10.77.0.{}", 11 + i)
}

/// The relay address that stands for node `i` when delays are on (see `relay`): it lives in
/// the switch namespace.
pub fn relay_addr(i: usize) -> String {
    format!("10.77.0.{}", 111 + i)
}

/// The address of the client namespace.
pub const CLIENT_ADDR: &str = "10.77.0.100";
const SUBNET_BITS: u8 = 24;
const IP: &str = "/usr/sbin/ip";
const NFT: &str = "/usr/sbin/nft";
/// The nftables table each fault writes into a node's namespace (replaced on each change).
const TABLE: &str = "pgha_fault";

static SEQ: AtomicUsize = AtomicUsize::new(0);

/// `Ok` when this process may create namespaces (the suite needs root; CI runs as root);
/// panics when root lacks `ip` or `nft`.
pub fn available() -> Result<(), String> {
    if !nix::unistd::geteuid().is_root() {
        return Err(
            "the fault suite needs root (network namespaces, veth, nftables); CI runs it as root".into()
        );
    }
    // As root the suite must run (CI): a missing tool is a failure, not a skip.
    for tool in [IP, NFT] {
        assert!(std::path::Path::new(tool).exists(), "{tool} is missing: run scripts/install-deps.sh");
    }
    Ok(())
}

/// Enters network namespace `ns` on the calling thread only.
pub fn enter(ns: &str) {
    let f = File::open(format!("/run/netns/{ns}")).unwrap_or_else(|e| panic!("open netns {ns}: {e}"));
    // SAFETY: setns on a valid fd; CLONE_NEWNET affects only the calling thread.
    let rc = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(rc, 0, "setns {ns}: {}", std::io::Error::last_os_error());
}

/// The namespaces of one test.
pub struct Net {
    prefix: String,
    nodes: usize,
    created: Vec<String>,
}

/// What an nftables filter in a node's namespace drops.
#[derive(Clone, Debug, Default)]
pub struct Filter {
    /// Packets from these addresses are dropped on the way in.
    pub drop_from: Vec<String>,
    /// Packets to these addresses are dropped on the way out.
    pub drop_to: Vec<String>,
    /// TCP to and from these (address, port) pairs is dropped both ways (a cut Postgres
    /// stream while Raft stays connected, say).
    pub cut_tcp: Vec<(String, u16)>,
    /// Percentage of all packets dropped at random (both directions).
    pub loss_percent: u8,
}

impl Net {
    /// Creates the switch, `nodes` node namespaces and the client namespace, all linked up.
    pub fn new(nodes: usize) -> Net {
        let prefix = format!("pgf{}x{}", std::process::id(), SEQ.fetch_add(1, Ordering::SeqCst));
        let mut net = Net { prefix, nodes, created: Vec::new() };
        let sw = net.switch();
        net.add_ns(&sw);
        net.ip(&["-n", &sw, "link", "add", "br0", "type", "bridge"]);
        net.ip(&["-n", &sw, "link", "set", "br0", "up"]);
        for i in 0..nodes {
            net.attach(&net.node_ns(i), &format!("p{i}"), &node_addr(i));
        }
        net.attach(&net.client_ns(), "pc", CLIENT_ADDR);
        net
    }

    /// Gives the switch namespace an address on the bridge (for the relay).
    pub fn add_switch_addr(&self, addr: &str) {
        let sw = self.switch();
        self.ip(&["-n", &sw, "addr", "add", &format!("{addr}/{SUBNET_BITS}"), "dev", "br0"]);
    }

    pub fn switch(&self) -> String {
        format!("{}sw", self.prefix)
    }
    pub fn node_ns(&self, i: usize) -> String {
        format!("{}n{}", self.prefix, i + 1)
    }
    pub fn client_ns(&self) -> String {
        format!("{}cl", self.prefix)
    }

    /// Adds one more node namespace (a joiner), returns its index.
    pub fn add_node(&mut self) -> usize {
        let i = self.nodes;
        self.nodes += 1;
        self.attach(&self.node_ns(i), &format!("p{i}"), &node_addr(i));
        i
    }

    fn add_ns(&mut self, ns: &str) {
        self.ip(&["netns", "add", ns]);
        self.created.push(ns.to_string());
    }

    /// A namespace `ns` with `eth0` (address `addr`) whose peer `port` sits on the bridge.
    fn attach(&mut self, ns: &str, port: &str, addr: &str) {
        self.add_ns(ns);
        let sw = self.switch();
        // Created directly inside the two namespaces: the names never exist in the root one.
        self.ip(&["link", "add", "eth0", "netns", ns, "type", "veth", "peer", "name", port, "netns", &sw]);
        self.ip(&["-n", &sw, "link", "set", port, "master", "br0", "up"]);
        self.ip(&["-n", ns, "addr", "add", &format!("{addr}/{SUBNET_BITS}"), "dev", "eth0"]);
        self.ip(&["-n", ns, "link", "set", "eth0", "up"]);
        self.ip(&["-n", ns, "link", "set", "lo", "up"]);
    }

    fn ip(&self, args: &[&str]) {
        let out = Command::new(IP).args(args).output().unwrap_or_else(|e| panic!("run ip: {e}"));
        assert!(
            out.status.success(),
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }

    /// `program` to be run inside namespace `ns`.
    pub fn command(ns: &str, program: &str) -> Command {
        let f = File::open(format!("/run/netns/{ns}")).unwrap_or_else(|e| panic!("open netns {ns}: {e}"));
        let mut cmd = Command::new(program);
        // SAFETY: only setns (async-signal-safe) between fork and exec; the File (O_CLOEXEC)
        // lives in the closure until the Command is dropped.
        unsafe {
            cmd.pre_exec(move || {
                if libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        cmd
    }

    /// Node `i`'s link to the switch up or down (a full cut: nobody reaches it, clients neither).
    pub fn link(&self, i: usize, up: bool) {
        self.ip(&["-n", &self.switch(), "link", "set", &format!("p{i}"), if up { "up" } else { "down" }]);
    }

    /// Replaces node `i`'s packet filter with `f` (an empty filter removes it).
    pub fn filter(&self, i: usize, f: &Filter) {
        let ns = self.node_ns(i);
        // Remove the old table if any (an error just means there was none).
        let _ = Self::command(&ns, NFT).args(["delete", "table", "inet", TABLE]).output();
        if f.drop_from.is_empty() && f.drop_to.is_empty() && f.cut_tcp.is_empty() && f.loss_percent == 0 {
            return;
        }
        let mut input = String::new();
        let mut output = String::new();
        for a in &f.drop_from {
            input.push_str(&format!("    ip saddr {a} drop\n"));
        }
        for a in &f.drop_to {
            output.push_str(&format!("    ip daddr {a} drop\n"));
        }
        for (a, port) in &f.cut_tcp {
            input.push_str(&format!("    ip saddr {a} tcp sport {port} drop\n"));
            output.push_str(&format!("    ip daddr {a} tcp dport {port} drop\n"));
        }
        if f.loss_percent > 0 {
            let rule = format!("    oifname \"eth0\" numgen random mod 100 < {} drop\n", f.loss_percent);
            output.push_str(&rule);
            input.push_str(&rule.replace("oifname", "iifname"));
        }
        let text = format!(
            "table inet {TABLE} {{\n  chain input {{\n    type filter hook input priority 0; policy accept;\n{input}  }}\n  \
             chain output {{\n    type filter hook output priority 0; policy accept;\n{output}  }}\n}}\n"
        );
        let mut child = Self::command(&ns, NFT)
            .args(["-f", "-"])
            .stdin(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("run nft");
        use std::io::Write;
        child.stdin.take().expect("nft stdin").write_all(text.as_bytes()).expect("write nft rules");
        let out = child.wait_with_output().expect("nft");
        assert!(out.status.success(), "nft in {ns}: {}\n{text}", String::from_utf8_lossy(&out.stderr));
    }

    /// Cuts every node in `a` off from every node in `b`, both directions (clients unaffected).
    pub fn partition(&self, a: &[usize], b: &[usize]) {
        let mut filters: Vec<Filter> = vec![Filter::default(); self.nodes];
        for &x in a {
            for &y in b {
                filters[x].drop_from.push(node_addr(y));
                filters[x].drop_to.push(node_addr(y));
                filters[y].drop_from.push(node_addr(x));
                filters[y].drop_to.push(node_addr(x));
            }
        }
        for (i, f) in filters.iter().enumerate() {
            self.filter(i, f);
        }
    }

    /// Removes every filter and brings every link up.
    pub fn heal(&self) {
        for i in 0..self.nodes {
            self.filter(i, &Filter::default());
            self.link(i, true);
        }
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for ns in self.created.iter().rev() {
            let _ = Command::new(IP).args(["netns", "del", ns]).output();
        }
    }
}
