//! A continuous ping (`ping -n -q -i 0.01 -W 1`) from a namespace, for
//! tests that count what a fault loses: stopped with SIGINT to read ping's
//! own summary, killed by its guard if the test panics first.

use std::fmt::Display;
use std::process::{Child, Command, Stdio};

/// A ping running until [`ContinuousPing::stop`] (or the guard's drop).
#[derive(Debug)]
pub struct ContinuousPing {
    child: Option<Child>,
    /// What it pings, for messages ("NS → DST" unless named).
    pub what: String,
}

/// What ping said when it was stopped.
#[derive(Debug, Clone)]
pub struct PingSummary {
    /// Echo requests sent.
    pub sent: u64,
    /// Replies received.
    pub received: u64,
    /// Ping's summary line ("N packets transmitted, M received, …").
    pub line: String,
}

impl PingSummary {
    /// (sent, lost).
    pub fn sent_lost(&self) -> (u64, u64) {
        (self.sent, self.sent.saturating_sub(self.received))
    }
}

impl ContinuousPing {
    /// Ping `dst` every 10 ms from namespace `ns`.
    pub fn start(ns: &str, dst: impl Display) -> ContinuousPing {
        let dst = dst.to_string();
        let child = Command::new("ip")
            .args([
                "netns", "exec", ns, "ping", "-n", "-q", "-i", "0.01", "-W", "1",
            ])
            .arg(&dst)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn ping");
        ContinuousPing {
            child: Some(child),
            what: format!("{ns} → {dst}"),
        }
    }

    /// The same, named `what` in messages.
    pub fn named(mut self, what: &str) -> ContinuousPing {
        self.what = what.to_string();
        self
    }

    /// Stop it (SIGINT) and read its summary; panics without one.
    pub fn stop(mut self) -> PingSummary {
        let child = self.child.take().expect("running");
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGINT,
        );
        let out = child.wait_with_output().expect("ping output");
        let text = String::from_utf8_lossy(&out.stdout);
        let line = text
            .lines()
            .find(|l| l.contains("packets transmitted"))
            .unwrap_or_else(|| panic!("ping {}: no summary in {text:?}", self.what))
            .to_string();
        let nums: Vec<u64> = line
            .split(',')
            .filter_map(|p| p.split_whitespace().next()?.parse().ok())
            .collect();
        PingSummary {
            sent: nums[0],
            received: nums[1],
            line,
        }
    }
}

impl Drop for ContinuousPing {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
