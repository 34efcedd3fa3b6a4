//! The network between the nodes: plain loopback, or (run as root) one
//! network namespace per node, each joined to a bridge by a veth pair.
//! In namespaces, nftables cuts links (partitions) and drops a share of
//! packets (loss), and netem delays them where the kernel has it.
//!
//! The harness stays in the host's namespace on the bridge's own address,
//! so clients reach every node on both sides of a partition, as Jepsen's
//! clients do: a node cut off from the majority must refuse or time out,
//! never answer from stale state.

use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};

use crate::ChaosError;

/// Port of every node's HTTP API inside its own namespace.
const NAMESPACE_HTTP_PORT: u16 = 8096;
/// Port of every node's Raft (QUIC) endpoint inside its own namespace.
const NAMESPACE_RAFT_PORT: u16 = 7443;
/// The nftables table the faults live in, one per node namespace.
const TABLE: &str = "omega_chaos";

/// How the nodes are connected.
#[derive(Debug)]
pub struct Network {
    namespaces: Option<Namespaces>,
}

#[derive(Debug)]
struct Namespaces {
    /// Names are `omc{tag}…`: unique per harness process.
    tag: u32,
    /// First three octets of the /24 the bridge and nodes share.
    prefix: [u8; 3],
    nodes: usize,
}

impl Network {
    /// Every node on 127.0.0.1 with its own free ports; no network faults.
    pub fn loopback() -> Network {
        Network { namespaces: None }
    }

    /// True when this process may build namespaces (root, with `ip` and
    /// `nft` installed).
    pub fn namespaces_possible() -> bool {
        // SAFETY: geteuid has no preconditions and cannot fail.
        let root = unsafe { libc::geteuid() } == 0;
        root && tool_runs("ip", &["-V"]) && tool_runs("nft", &["--version"])
    }

    /// A namespace per node and the bridge between them.
    pub fn namespaces(nodes: usize) -> Result<Network, ChaosError> {
        if !Network::namespaces_possible() {
            return Err(ChaosError::Config(
                "network faults need root and the ip and nft tools (iproute2, nftables)".into(),
            ));
        }
        let tag = std::process::id();
        let namespaces = Namespaces {
            tag,
            // 10.213.x.0/24, x from the process id: two harnesses at once
            // rarely share a subnet, and never share names.
            prefix: [10, 213, (tag % 250) as u8],
            nodes,
        };
        // From here on, Drop removes whatever was made.
        let network = Network {
            namespaces: Some(namespaces),
        };
        if let Some(spaces) = &network.namespaces {
            spaces.build()?;
        }
        Ok(network)
    }

    /// True when nodes live in namespaces (network faults possible).
    pub fn isolated(&self) -> bool {
        self.namespaces.is_some()
    }

    /// The HTTP and Raft addresses of node `index`.
    pub fn addresses(&self, index: usize) -> Result<(SocketAddr, SocketAddr), ChaosError> {
        match &self.namespaces {
            Some(spaces) => {
                let ip = spaces.node_ip(index);
                Ok((
                    SocketAddr::from((ip, NAMESPACE_HTTP_PORT)),
                    SocketAddr::from((ip, NAMESPACE_RAFT_PORT)),
                ))
            }
            None => {
                let http = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
                let raft = std::net::UdpSocket::bind("127.0.0.1:0")?.local_addr()?;
                Ok((http, raft))
            }
        }
    }

    /// Makes `command` run inside node `index`'s namespace.
    pub fn enter(&self, index: usize, command: &mut Command) -> Result<(), ChaosError> {
        let Some(spaces) = &self.namespaces else {
            return Ok(());
        };
        let handle = std::fs::File::open(format!("/run/netns/{}", spaces.namespace(index)))?;
        // SAFETY: the closure runs in the child between fork and exec and
        // only calls setns(2), which is async-signal-safe; `handle` is
        // moved in and stays open until then.
        unsafe {
            command.pre_exec(move || {
                if libc::setns(handle.as_raw_fd(), libc::CLONE_NEWNET) == 0 {
                    Ok(())
                } else {
                    Err(std::io::Error::last_os_error())
                }
            });
        }
        Ok(())
    }

    /// Cuts the network into `sides`: a node reaches only the nodes on its
    /// own side (a node on no side reaches everyone and everyone it, which
    /// makes a bridge between two sides).
    pub fn partition(&self, sides: &[Vec<usize>]) -> Result<(), ChaosError> {
        let spaces = self.require("partition")?;
        for node in 0..spaces.nodes {
            let Some(side) = sides.iter().find(|side| side.contains(&node)) else {
                continue;
            };
            let others: Vec<String> = sides
                .iter()
                .filter(|other| !std::ptr::eq(*other, side))
                .flatten()
                .map(|other| spaces.node_ip(*other).to_string())
                .collect();
            if others.is_empty() {
                continue;
            }
            // Dropped on the way in, on both sides: both directions are
            // cut and packets vanish silently, as on a real network
            // (dropped on the way out, a send fails at once with EPERM).
            let set = others.join(", ");
            spaces.set_rules(node, &format!("ip saddr {{ {set} }} drop"), "")?;
        }
        Ok(())
    }

    /// Drops `percent` of the packets each node receives from the others.
    pub fn lose(&self, percent: u8) -> Result<(), ChaosError> {
        debug_assert!(percent <= 100);
        let spaces = self.require("loss")?;
        let [a, b, c] = spaces.prefix;
        for node in 0..spaces.nodes {
            let rule = format!(
                "ip saddr {a}.{b}.{c}.0/24 ip saddr != {} numgen random mod 100 < {percent} drop",
                spaces.bridge_ip()
            );
            spaces.set_rules(node, &rule, "")?;
        }
        Ok(())
    }

    /// True when the kernel can delay packets (the netem qdisc).
    pub fn can_delay(&self) -> bool {
        let Some(spaces) = &self.namespaces else {
            return false;
        };
        let probe = spaces.delay(0, 1, 0).is_ok();
        let _ = spaces.undelay(0);
        probe
    }

    /// Delays every packet each node sends by `millis` ± `jitter`.
    pub fn delay(&self, millis: u32, jitter: u32) -> Result<(), ChaosError> {
        let spaces = self.require("delay")?;
        for node in 0..spaces.nodes {
            spaces.delay(node, millis, jitter)?;
        }
        Ok(())
    }

    /// Removes every network fault.
    pub fn heal(&self) -> Result<(), ChaosError> {
        let Some(spaces) = &self.namespaces else {
            return Ok(());
        };
        for node in 0..spaces.nodes {
            spaces.set_rules(node, "", "")?;
            let _ = spaces.undelay(node);
        }
        Ok(())
    }

    fn require(&self, fault: &str) -> Result<&Namespaces, ChaosError> {
        self.namespaces
            .as_ref()
            .ok_or_else(|| ChaosError::Config(format!("fault {fault:?} needs network namespaces")))
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        if let Some(spaces) = &self.namespaces {
            spaces.tear_down();
        }
    }
}

impl Namespaces {
    fn namespace(&self, index: usize) -> String {
        format!("omc{}n{index}", self.tag)
    }

    fn bridge(&self) -> String {
        format!("omc{}b", self.tag)
    }

    fn bridge_ip(&self) -> Ipv4Addr {
        let [a, b, c] = self.prefix;
        Ipv4Addr::new(a, b, c, 1)
    }

    fn node_ip(&self, index: usize) -> Ipv4Addr {
        debug_assert!(index < 200, "a /24 holds the bridge and the nodes");
        let [a, b, c] = self.prefix;
        Ipv4Addr::new(a, b, c, 2 + index as u8)
    }

    fn build(&self) -> Result<(), ChaosError> {
        let bridge = self.bridge();
        let subnet = |ip: Ipv4Addr| format!("{ip}/24");
        ip(&["link", "add", &bridge, "type", "bridge"])?;
        ip(&["addr", "add", &subnet(self.bridge_ip()), "dev", &bridge])?;
        ip(&["link", "set", &bridge, "up"])?;
        for node in 0..self.nodes {
            let space = self.namespace(node);
            let host_end = format!("omc{}v{node}", self.tag);
            let inner_end = format!("omc{}p{node}", self.tag);
            ip(&["netns", "add", &space])?;
            ip(&["link", "add", &host_end, "type", "veth", "peer", "name", &inner_end])?;
            ip(&["link", "set", &inner_end, "netns", &space])?;
            ip(&["-n", &space, "link", "set", &inner_end, "name", "eth0"])?;
            ip(&["-n", &space, "addr", "add", &subnet(self.node_ip(node)), "dev", "eth0"])?;
            ip(&["-n", &space, "link", "set", "eth0", "up"])?;
            ip(&["-n", &space, "link", "set", "lo", "up"])?;
            ip(&["link", "set", &host_end, "master", &bridge, "up"])?;
            self.set_rules(node, "", "")?;
        }
        Ok(())
    }

    /// Replaces node `index`'s fault rules in one nftables transaction.
    fn set_rules(&self, index: usize, input: &str, output: &str) -> Result<(), ChaosError> {
        let script = format!(
            "table inet {TABLE}\ndelete table inet {TABLE}\ntable inet {TABLE} {{\n\
             chain input {{\ntype filter hook input priority 0; policy accept;\n{input}\n}}\n\
             chain output {{\ntype filter hook output priority 0; policy accept;\n{output}\n}}\n}}\n"
        );
        let mut child = Command::new("ip")
            .args(["netns", "exec", &self.namespace(index), "nft", "-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin.write_all(script.as_bytes())?;
        }
        let output = child.wait_with_output()?;
        if !output.status.success() {
            return Err(ChaosError::Command(format!(
                "nft: {}",
                String::from_utf8_lossy(&output.stderr).trim()
            )));
        }
        Ok(())
    }

    fn delay(&self, index: usize, millis: u32, jitter: u32) -> Result<(), ChaosError> {
        let space = self.namespace(index);
        let (millis, jitter) = (format!("{millis}ms"), format!("{jitter}ms"));
        ip_tool(
            "tc",
            &[
                "-n", &space, "qdisc", "replace", "dev", "eth0", "root", "netem", "delay", &millis, &jitter,
            ],
        )
    }

    fn undelay(&self, index: usize) -> Result<(), ChaosError> {
        ip_tool(
            "tc",
            &["-n", &self.namespace(index), "qdisc", "del", "dev", "eth0", "root"],
        )
    }

    fn tear_down(&self) {
        for node in 0..self.nodes {
            let _ = ip(&["netns", "del", &self.namespace(node)]);
        }
        let _ = ip(&["link", "del", &self.bridge()]);
    }
}

fn tool_runs(tool: &str, args: &[&str]) -> bool {
    Command::new(tool)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

fn ip(args: &[&str]) -> Result<(), ChaosError> {
    ip_tool("ip", args)
}

fn ip_tool(tool: &str, args: &[&str]) -> Result<(), ChaosError> {
    let output = Command::new(tool).args(args).output()?;
    if output.status.success() {
        Ok(())
    } else {
        Err(ChaosError::Command(format!(
            "{tool} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        )))
    }
}
