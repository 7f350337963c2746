//! Live capture on the interfaces of a predicted path, each in its own
//! namespace, and the probe that is looked for.
//!
//! One thread per interface enters the interface's namespace with `setns`,
//! opens an AF_PACKET channel there (`pnet_datalink`; the socket stays bound
//! to that namespace), reports ready, and records every frame that carries
//! the probe's token until told to stop or its deadline passes. The caller's
//! thread never changes namespace; nothing outlives [`Capture::finish`].

use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use cnet_core::{Error, NetNs, Result};
use nix::sched::{setns, CloneFlags};
use pnet_datalink::{Channel, Config};

use crate::wire::{decode_ethernet, decode_ip, Decoded};

/// Where to capture.
#[derive(Debug, Clone)]
pub struct Target {
    /// The namespace holding the interface.
    pub ns: NetNs,
    /// A label for the namespace in reports.
    pub ns_label: String,
    /// Interface name.
    pub ifname: String,
    /// The device has no link-layer header (ipip): frames are IPv4 packets.
    pub l3: bool,
}

/// A frame that carried the token, on one target.
#[derive(Debug, Clone)]
pub struct Sighting {
    /// Index into the targets passed to [`Capture::start`].
    pub target: usize,
    /// Microseconds since capture started.
    pub at_us: u128,
    /// The decoded frame.
    pub frame: Decoded,
}

/// A running capture.
#[derive(Debug)]
pub struct Capture {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<Vec<Sighting>>>,
}

impl Capture {
    /// Open a channel on every target; returns once all are listening.
    pub fn start(targets: &[Target], token: &[u8], deadline: Duration) -> Result<Capture> {
        let stop = Arc::new(AtomicBool::new(false));
        let t0 = Instant::now();
        let mut threads = Vec::new();
        let (ready_tx, ready_rx) = mpsc::channel::<Result<()>>();
        for (i, t) in targets.iter().cloned().enumerate() {
            let stop = stop.clone();
            let token = token.to_vec();
            let ready = ready_tx.clone();
            threads.push(std::thread::spawn(move || {
                let rx = match open(&t) {
                    Ok(rx) => {
                        let _ = ready.send(Ok(()));
                        rx
                    }
                    Err(e) => {
                        let _ = ready.send(Err(e));
                        return Vec::new();
                    }
                };
                listen(i, &t, rx, &token, &stop, t0, deadline)
            }));
        }
        drop(ready_tx);
        let cap = Capture { stop, threads };
        for _ in 0..targets.len() {
            match ready_rx.recv_timeout(Duration::from_secs(5)) {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    cap.finish();
                    return Err(e);
                }
                Err(_) => {
                    cap.finish();
                    return Err(Error::Timeout {
                        context: "open capture channels".into(),
                        reason: "a capture thread did not become ready in 5 s".into(),
                    });
                }
            }
        }
        Ok(cap)
    }

    /// Stop every thread and collect what they saw, in time order.
    pub fn finish(self) -> Vec<Sighting> {
        self.stop.store(true, Ordering::SeqCst);
        let mut all: Vec<Sighting> = self
            .threads
            .into_iter()
            .flat_map(|t| t.join().unwrap_or_default())
            .collect();
        all.sort_by_key(|s| s.at_us);
        all
    }
}

type Rx = Box<dyn pnet_datalink::DataLinkReceiver>;

fn open(t: &Target) -> Result<Rx> {
    let ctx = || format!("capture on {} in {}", t.ifname, t.ns_label);
    setns(t.ns.as_fd(), CloneFlags::CLONE_NEWNET)
        .map_err(|e| Error::io(ctx(), std::io::Error::from(e)))?;
    let iface = pnet_datalink::interfaces()
        .into_iter()
        .find(|i| i.name == t.ifname)
        .ok_or_else(|| Error::NotFound {
            context: ctx(),
            kernel: None,
        })?;
    let cfg = Config {
        read_timeout: Some(Duration::from_millis(20)),
        read_buffer_size: 65536,
        ..Default::default()
    };
    match pnet_datalink::channel(&iface, cfg) {
        Ok(Channel::Ethernet(_tx, rx)) => Ok(rx),
        Ok(_) => Err(Error::Protocol {
            context: ctx(),
            reason: "unexpected channel type".into(),
        }),
        Err(e) => Err(Error::io(ctx(), e)),
    }
}

fn listen(
    i: usize,
    t: &Target,
    mut rx: Rx,
    token: &[u8],
    stop: &AtomicBool,
    t0: Instant,
    deadline: Duration,
) -> Vec<Sighting> {
    let mut seen = Vec::new();
    while !stop.load(Ordering::SeqCst) && t0.elapsed() < deadline {
        match rx.next() {
            Ok(frame) => {
                let d = if t.l3 {
                    decode_ip(frame)
                } else {
                    decode_ethernet(frame)
                };
                if d.carries(token) {
                    seen.push(Sighting {
                        target: i,
                        at_us: t0.elapsed().as_micros(),
                        frame: d,
                    });
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(_) => break,
        }
    }
    seen
}
