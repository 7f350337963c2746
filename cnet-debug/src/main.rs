//! `cnet-debug`: see what container networking built, namespace by namespace.
//!
//! Exit codes: 0 success, 1 the traced path is broken (or a probe got no
//! reply), 2 error (bad arguments, no such namespace, not permitted).
//! Output goes through one locked stdout; a reader that goes away (`| head`,
//! `| true`) ends the command quietly (ripgrep's rule: a broken pipe is not
//! an error), and nothing on an output path panics.

use cnet_debug::{capture, cleanup, nsfile, nsnames, probe, report, trace};

use std::io::Write;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use cnet_core::link::LinkDetails;
use cnet_core::{Handle, NetNs};

/// Explain and prove the path packets take through container networking.
#[derive(Debug, Parser)]
#[command(name = "cnet-debug", version)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Explain the path to an IP hop by hop, and prove it with live capture.
    ///
    /// Starting in the source namespace, follows the kernel's own decisions
    /// (route lookup, neighbour, veth peer, bridge FDB, vxlan/ipip
    /// encapsulation) across namespaces until the destination is delivered,
    /// leaves the machine, or the path breaks; then (with --capture, the
    /// default as root) sends a probe and watches every interface on the path.
    /// Exit status: 0 path works, 1 path broken, 2 error.
    Trace {
        /// Destination IP.
        dst: std::net::IpAddr,
        /// Source namespace: a name under /run/netns, a path (/proc/PID/ns/net), or a PID.
        #[arg(long)]
        from: Option<String>,
        /// Source address (default: the kernel's choice).
        #[arg(long)]
        src: Option<std::net::IpAddr>,
        /// Probe protocol.
        #[arg(long, value_enum, default_value = "icmp")]
        proto: probe::Proto,
        /// Destination port for udp.
        #[arg(long, default_value_t = 33434)]
        port: u16,
        /// Prove the path with live capture (default when running as root).
        #[arg(long, overrides_with = "no_capture")]
        capture: bool,
        /// Explain only; send nothing.
        #[arg(long)]
        no_capture: bool,
        /// Capture timeout in milliseconds (1 to 600000).
        #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=600_000))]
        timeout: u64,
        /// JSON Lines output (see the schema in `cnet_debug::report`).
        #[arg(long)]
        json: bool,
    },
    /// The topology at a glance: namespaces, bridges and ports, veth pairs, tunnels.
    Show {
        /// Only this namespace (a name under /run/netns or a path such as /proc/PID/ns/net).
        #[arg(long)]
        netns: Option<String>,
        /// JSON Lines output.
        #[arg(long)]
        json: bool,
        /// A BIRD control socket to read BGP sessions from (repeatable).
        #[arg(long, value_name = "SOCKET")]
        bird: Vec<std::path::PathBuf>,
    },
    /// Send one probe and report on which interfaces it was seen (live capture).
    Probe {
        /// Destination IP (IPv4 or IPv6).
        dst: std::net::IpAddr,
        /// Source namespace (name, /proc/PID/ns/net or a path); default: current.
        #[arg(long)]
        from: Option<String>,
        /// Interfaces to watch, as NETNS:IFNAME (repeatable; `-` for the current namespace).
        #[arg(long = "on", value_name = "NETNS:IFNAME")]
        on: Vec<String>,
        /// Probe protocol.
        #[arg(long, value_enum, default_value = "icmp")]
        proto: probe::Proto,
        /// UDP destination port.
        #[arg(long, default_value_t = 33434)]
        port: u16,
        /// How long to wait for the probe, in milliseconds (1 to 600000).
        #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=600_000))]
        timeout: u64,
    },
    /// Remove what a killed run (the demo, `scripts/demo`) left behind.
    ///
    /// Deletes every namespace named PREFIX…-PID whose run is no longer
    /// alive, and those runs' state under /run/cnet/runs (the demo's IPAM
    /// store). Namespaces of a run that is still going are listed and left
    /// alone. Exit status: 0 everything removed (or nothing to do), 2 error.
    Cleanup {
        /// Name prefix of the run's namespaces (the demo's default is `demo-`).
        #[arg(long)]
        prefix: String,
    },
}

/// Why a command stopped early.
#[derive(Debug)]
enum Fail {
    /// Printed as `cnet-debug: …`, exit 2.
    Error(cnet_core::Error),
    /// Whoever read our output went away: not an error.
    Closed,
}

impl From<cnet_core::Error> for Fail {
    fn from(e: cnet_core::Error) -> Self {
        Fail::Error(e)
    }
}

impl From<std::io::Error> for Fail {
    fn from(e: std::io::Error) -> Self {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            Fail::Closed
        } else {
            Fail::Error(cnet_core::Error::io("write output", e))
        }
    }
}

type Outcome = Result<bool, Fail>;

fn show(netns: Option<String>, json: bool, out: &mut dyn Write) -> Result<(), Fail> {
    use cnet_core::network::bgp::ROUTE_PROTOCOL as BGP;
    use cnet_core::route::{RouteFilter, PROTOCOL};
    // Every namespace we know, to name veth peers' namespaces.
    let mut all: Vec<(String, NetNs)> = vec![(nsnames::current_label(), NetNs::current()?)];
    for n in NetNs::list()? {
        // Checked without blocking: a FIFO or a stray file there is skipped.
        if let Ok(ns) = nsfile::open_name(&n) {
            all.push((n, ns));
        }
    }
    let targets: Vec<(String, NetNs)> = match netns {
        Some(n) => {
            let ns = nsfile::open(&n)?;
            vec![(nsnames::label_for(&n, &ns), ns)]
        }
        None => all.clone(),
    };
    let mut unnamed_added = false;
    for (label, ns) in targets {
        let h = Handle::at(&ns)?;
        let links = h.links().list()?;
        let addrs = h.addrs().list(None)?;
        // cnet's routes and those BIRD learnt over BGP.
        let mut own_routes = h.routes().list(&RouteFilter::new().protocol(PROTOCOL))?;
        own_routes.extend(h.routes().list(&RouteFilter::new().protocol(BGP))?);
        // netnsid (as this namespace numbers them) → namespace label.
        let mut ids = std::collections::HashMap::new();
        if links.iter().any(|l| l.link_netnsid.is_some()) {
            for (other_label, other) in &all {
                if let Ok(Some(id)) = h.nsid_of(other) {
                    ids.entry(id).or_insert_with(|| other_label.clone());
                }
            }
            // A peer in a namespace without a name (a container's): look
            // for it among processes' namespaces and runtimes' bind mounts.
            let missing = links
                .iter()
                .any(|l| l.link_netnsid.is_some_and(|id| !ids.contains_key(&id)));
            if missing && !unnamed_added {
                unnamed_added = true;
                let mut known = std::collections::HashSet::new();
                for (_, n) in &all {
                    known.insert(n.inode()?);
                }
                for u in nsnames::unnamed(&known) {
                    if let Ok(ns) = nsnames::open(&u) {
                        all.push((u.label, ns));
                    }
                }
                for (other_label, other) in &all {
                    if let Ok(Some(id)) = h.nsid_of(other) {
                        ids.entry(id).or_insert_with(|| other_label.clone());
                    }
                }
            }
        }
        let peer_ns = |l: &cnet_core::link::Link| -> Option<String> {
            l.link_netnsid.map(|id| {
                ids.get(&id)
                    .cloned()
                    .unwrap_or_else(|| format!("netnsid {id}"))
            })
        };
        if json {
            for l in &links {
                let a: Vec<String> = addrs
                    .iter()
                    .filter(|a| a.index == l.index)
                    .map(|a| a.local.to_string())
                    .collect();
                let v = serde_json::json!({"type": "link", "data": {
                    "netns": label, "index": l.index, "name": l.name, "kind": l.kind.as_str(),
                    "mtu": l.mtu, "up": l.is_up(), "master": l.master, "link": l.link,
                    "link_netns": peer_ns(l), "addresses": a,
                }});
                writeln!(out, "{v}")?;
            }
            for r in &own_routes {
                let v = serde_json::json!({"type": "route", "data": {
                    "netns": label, "dst": r.dst.to_string(), "gateway": r.gateway,
                    "oif": r.oif, "table": r.table, "protocol": r.protocol, "kind": r.kind.as_str(),
                }});
                writeln!(out, "{v}")?;
            }
            continue;
        }
        writeln!(out, "netns {label}")?;
        let name_of = |i: u32| links.iter().find(|x| x.index == i).map(|x| x.name.clone());
        for l in &links {
            let master = l
                .master
                .and_then(name_of)
                .map(|m| format!(" master {m}"))
                .unwrap_or_default();
            let peer = match (l.kind.as_str(), l.link) {
                ("veth", Some(p)) => match peer_ns(l) {
                    Some(n) => format!(" peer #{p} in {n}"),
                    None => format!(" peer {}", name_of(p).unwrap_or_else(|| format!("#{p}"))),
                },
                _ => String::new(),
            };
            let extra = match &l.details {
                LinkDetails::Vxlan(v) => format!(
                    " vni {} port {} local {}{}",
                    v.vni.unwrap_or(0),
                    v.port.unwrap_or(0),
                    v.local.map(|a| a.to_string()).unwrap_or_else(|| "-".into()),
                    v.link
                        .and_then(name_of)
                        .map(|d| format!(" dev {d}"))
                        .unwrap_or_default()
                ),
                LinkDetails::IpIp(v) => format!(
                    " local {} remote {}",
                    v.local
                        .map(|a| a.to_string())
                        .unwrap_or_else(|| "any".into()),
                    v.remote
                        .map(|a| a.to_string())
                        .unwrap_or_else(|| "any".into())
                ),
                _ => String::new(),
            };
            let a: Vec<String> = addrs
                .iter()
                .filter(|a| a.index == l.index)
                .map(|a| a.local.to_string())
                .collect();
            writeln!(
                out,
                "  {:>3}: {:<15} {:<7} mtu {:<5} {}{}{}{}{}",
                l.index,
                l.name,
                if l.kind.as_str().is_empty() {
                    "device"
                } else {
                    l.kind.as_str()
                },
                l.mtu,
                if l.is_up() { "up" } else { "down" },
                master,
                peer,
                extra,
                if a.is_empty() {
                    String::new()
                } else {
                    format!(" [{}]", a.join(", "))
                }
            )?;
        }
        for r in &own_routes {
            let via = r.gateway.map(|g| format!(" via {g}")).unwrap_or_default();
            let dev = r
                .oif
                .and_then(name_of)
                .map(|d| format!(" dev {d}"))
                .unwrap_or_default();
            writeln!(
                out,
                "  route {} {}{via}{dev}{} (proto {}, table {}){}",
                r.kind.as_str(),
                r.dst,
                if r.onlink { " onlink" } else { "" },
                r.protocol,
                r.table,
                if r.protocol == BGP {
                    " learned over BGP"
                } else {
                    ""
                }
            )?;
        }
    }
    Ok(())
}

/// The BGP sessions of each BIRD whose control socket is given: peer,
/// state, uptime, routes received (read over the socket's text protocol).
fn show_bgp(sockets: &[std::path::PathBuf], json: bool, out: &mut dyn Write) -> Result<(), Fail> {
    for sock in sockets {
        let sessions = cnet_core::network::bgp::Control::connect(sock)?.sessions()?;
        if !json {
            writeln!(out, "bgp {}", sock.display())?;
        }
        for s in sessions {
            let uptime = s.uptime.map(|u| u.as_secs_f64());
            if json {
                let v = serde_json::json!({"type": "bgp_session", "data": {
                    "socket": sock.display().to_string(), "protocol": s.protocol,
                    "peer": s.peer, "neighbor": s.neighbor, "neighbor_as": s.neighbor_as,
                    "state": s.state.to_string(), "since": s.since, "uptime_s": uptime,
                    "routes_received": s.routes_imported, "routes_sent": s.routes_exported,
                    "last_error": s.last_error,
                }});
                writeln!(out, "{v}")?;
                continue;
            }
            writeln!(
                out,
                "  {:<12} {:<8} {:<15} {:<11} {} {} received, {} sent{}",
                s.protocol,
                s.peer.as_deref().unwrap_or("-"),
                s.neighbor
                    .map(|a| a.to_string())
                    .unwrap_or_else(|| "-".into()),
                s.state.to_string(),
                uptime
                    .map(|u| format!("for {u:.1} s,"))
                    .unwrap_or_else(|| "since ?,".into()),
                s.routes_imported,
                s.routes_exported,
                s.last_error
                    .map(|e| format!(" (last error: {e})"))
                    .unwrap_or_default()
            )?;
        }
    }
    Ok(())
}

fn run_probe(
    dst: std::net::IpAddr,
    from: Option<String>,
    on: Vec<String>,
    proto: probe::Proto,
    port: u16,
    timeout: u64,
    out: &mut dyn Write,
) -> Outcome {
    let src_ns = match &from {
        Some(f) => nsfile::open(f)?,
        None => NetNs::current()?,
    };
    let mut targets = Vec::new();
    for o in &on {
        let (ns, ifname) = o.rsplit_once(':').ok_or_else(|| {
            cnet_core::Error::invalid(format!("--on {o}"), "expected NETNS:IFNAME")
        })?;
        let nsh = if ns == "-" {
            NetNs::current()?
        } else {
            nsfile::open(ns)?
        };
        let l3 = Handle::at(&nsh)?.links().get(ifname)?.kind == cnet_core::link::LinkKind::IpIp;
        targets.push(capture::Target {
            ns: nsh,
            ns_label: ns.to_string(),
            ifname: ifname.to_string(),
            l3,
        });
    }
    let timeout = std::time::Duration::from_millis(timeout);
    let token = probe::token();
    let cap = capture::Capture::start(&targets, &token, timeout * 2)?;
    let outcome = probe::send(&src_ns, None, dst, proto, port, &token, timeout)?;
    // Let the last hops' frames arrive before stopping.
    std::thread::sleep(std::time::Duration::from_millis(50));
    let seen = cap.finish();
    for (i, t) in targets.iter().enumerate() {
        let hits: Vec<&capture::Sighting> = seen.iter().filter(|s| s.target == i).collect();
        let mark = if hits.is_empty() { "✗" } else { "✓" };
        writeln!(
            out,
            "{mark} {}:{} ({} frames)",
            t.ns_label,
            t.ifname,
            hits.len()
        )?;
        for h in hits {
            let layers: Vec<String> = h.frame.layers.iter().map(|l| l.to_string()).collect();
            writeln!(out, "    +{}µs {}", h.at_us, layers.join(" | "))?;
        }
    }
    match (proto, outcome.rtt) {
        (probe::Proto::Icmp, Some(rtt)) => writeln!(out, "reply after {rtt:?}")?,
        (probe::Proto::Icmp, None) => writeln!(out, "no reply")?,
        _ => {}
    }
    Ok(proto != probe::Proto::Icmp || outcome.replied)
}

#[allow(clippy::too_many_arguments)] // one per CLI option, validated here
fn run_trace(
    dst: std::net::IpAddr,
    from: Option<String>,
    src: Option<std::net::IpAddr>,
    proto: probe::Proto,
    port: u16,
    capture: bool,
    no_capture: bool,
    timeout: u64,
    json: bool,
    out: &mut dyn Write,
) -> Outcome {
    let (ns, label) = match &from {
        Some(f) => {
            let ns = nsfile::open(f)?;
            let label = nsnames::label_for(f, &ns);
            (ns, label)
        }
        None => (NetNs::current()?, nsnames::current_label()),
    };
    if let (Some(s), true) = (src, src.is_some_and(|s| s.is_ipv4() != dst.is_ipv4())) {
        return Err(cnet_core::Error::invalid(
            format!("--src {s}"),
            "not of the destination's family",
        )
        .into());
    }
    let req = trace::Request {
        from: ns,
        from_label: label,
        dst,
        src,
        proto,
        port,
    };
    let root = nix::unistd::geteuid().is_root();
    let do_capture = !no_capture && (capture || root);
    let (t, proof) = trace::run(
        &req,
        do_capture.then(|| std::time::Duration::from_millis(timeout)),
    )?;
    let r = if json {
        report::json_lines(&t, proof.as_ref(), out)
    } else {
        report::human(&t, proof.as_ref(), out)
    }
    .and_then(|()| out.flush());
    // A reader that went away still gets the verdict as the exit status.
    match r.map_err(Fail::from) {
        Ok(()) | Err(Fail::Closed) => {}
        Err(e) => return Err(e),
    }
    // One verdict: the model's, overruled by the capture (trace::conclude).
    Ok(t.verdict.ok)
}

fn run_cleanup(prefix: &str, out: &mut dyn Write) -> Outcome {
    let r = cleanup::sweep(prefix)?;
    for n in &r.namespaces {
        writeln!(out, "deleted namespace {n}")?;
    }
    for d in &r.dirs {
        writeln!(out, "removed {}", d.display())?;
    }
    for n in &r.live {
        writeln!(out, "left {n}: its run is still alive")?;
    }
    if r.namespaces.is_empty() && r.dirs.is_empty() && r.live.is_empty() {
        writeln!(out, "nothing left by runs with prefix {prefix:?}")?;
    }
    out.flush()?;
    match r.errors.into_iter().next() {
        None => Ok(true),
        Some(first) => Err(Fail::Error(first)),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let r = match cli.cmd {
        Cmd::Trace {
            dst,
            from,
            src,
            proto,
            port,
            capture,
            no_capture,
            timeout,
            json,
        } => run_trace(
            dst, from, src, proto, port, capture, no_capture, timeout, json, &mut out,
        ),
        Cmd::Show { netns, json, bird } => show(netns, json, &mut out)
            .and_then(|()| show_bgp(&bird, json, &mut out))
            .and_then(|()| Ok(out.flush().map(|()| true)?)),
        Cmd::Probe {
            dst,
            from,
            on,
            proto,
            port,
            timeout,
        } => run_probe(dst, from, on, proto, port, timeout, &mut out),
        Cmd::Cleanup { prefix } => run_cleanup(&prefix, &mut out),
    };
    match r {
        Ok(true) | Err(Fail::Closed) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(Fail::Error(e)) => {
            // Not eprintln!: it panics when stderr is a closed pipe.
            let _ = writeln!(std::io::stderr(), "cnet-debug: {e}");
            ExitCode::from(2)
        }
    }
}
