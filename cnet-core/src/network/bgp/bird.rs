//! A BIRD process in a node's namespace: started with its own
//! configuration, control socket and pid file in a directory of the
//! caller's, reloaded with `configure`, stopped with `down`, killed by the
//! guard when dropped (also on panic).
//!
//! ```text
//!   Bird::start(host, DIR, cfg)
//!     ipip modes: the node's tunnel device, nothing else (no route, no
//!                 other device of the node's is touched)
//!     DIR (made 0755 if missing, with its parents)
//!     DIR/bird.conf ◀── cfg.render()      `bird -p -c` checks it first
//!     nsenter --net=NS bird -f -c DIR/bird.conf -s DIR/bird.ctl -P DIR/bird.pid  2> DIR/bird.log
//!     wait until DIR/bird.ctl answers ─▶ Bird
//!   bird.reconfigure(cfg')   write, check, "configure" (unchanged sessions stay up)
//!   bird.stop()              "down": sessions closed with a Cease, its kernel routes removed
//!   bird.kill()              SIGKILL: peers notice after the hold time
//!   drop(bird)               SIGKILL if still running, reaped
//! ```

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use super::config::BgpConfig;
use super::control::{Control, SessionStatus};
use crate::error::{Error, Result};
use crate::handle::Handle;
use crate::network::node::{IpIpConfig, Node, NodeConfig};

/// The BIRD binary (Debian package `bird2`), looked up in `PATH`.
pub const BIRD_BIN: &str = "bird";

/// How long BIRD may take to open its control socket.
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// How long `down` may take before the process is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// A running BIRD, owned: killed and reaped when dropped.
#[derive(Debug)]
pub struct Bird {
    child: Option<Child>,
    dir: PathBuf,
    label: String,
    cfg: BgpConfig,
}

impl Bird {
    /// Start BIRD for `cfg` in the namespace of `host`, with its files in
    /// `dir` (made with its parents, mode 0755, if missing, as a daemon's
    /// run directory; it belongs to this BIRD alone): writes
    /// `bird.conf`, checks it with `bird -p`, starts `bird -f` and waits
    /// until its control socket `bird.ctl` answers. BIRD's log goes to
    /// `bird.log`.
    ///
    /// For [`super::BgpMode::IpIp`] and [`super::BgpMode::CrossSubnet`] the
    /// node's IP-in-IP device is ensured first, and nothing else of the
    /// node's (its protocol-119 routes, its VXLAN or WireGuard device) is
    /// touched: `Unsupported` ("Unknown device type") where the kernel has
    /// no ipip, and nothing is started.
    /// Equivalent to `ip netns exec NS bird -f -c DIR/bird.conf -s
    /// DIR/bird.ctl -P DIR/bird.pid`.
    pub fn start(host: &Handle, dir: impl AsRef<Path>, cfg: &BgpConfig) -> Result<Bird> {
        let dir = dir.as_ref().to_path_buf();
        let label = format!("bird of node {} in {}", cfg.node, host.netns().label());
        let ctx = format!("start {label}");
        let text = cfg.render().map_err(|e| e.with_context(&ctx))?;
        if cfg.mode.needs_tunnel() {
            let mut nc = NodeConfig::new(
                &cfg.node,
                cfg.subnet.unwrap_or(cfg.cluster),
                &cfg.underlay_dev,
                cfg.underlay_ip,
            );
            nc.ipip_dev = cfg.tunnel_dev.clone();
            // The tunnel device and nothing else: a reconcile (even with
            // no peers) would delete the node's routes and other devices.
            let _device_made = Node::new(host, nc)
                .and_then(|n| n.ensure_ipip_only(&IpIpConfig::default()))
                .map_err(|e| e.with_context(&ctx))?;
        }
        create_run_dir(&dir)
            .map_err(|e| Error::io(format!("{ctx}: create directory {}", dir.display()), e))?;
        write_checked(&dir, &text, &ctx)?;
        let log = File::create(dir.join("bird.log"))
            .map_err(|e| Error::io(format!("{ctx}: create bird.log"), e))?;
        let _ = std::fs::remove_file(dir.join("bird.ctl"));
        let child = Command::new("nsenter")
            .arg(format!("--net={}", host.netns().path().display()))
            .arg(BIRD_BIN)
            .arg("-f")
            .arg("-c")
            .arg(dir.join("bird.conf"))
            .arg("-s")
            .arg(dir.join("bird.ctl"))
            .arg("-P")
            .arg(dir.join("bird.pid"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| Error::io(format!("{ctx}: run nsenter … {BIRD_BIN}"), e))?;
        let mut bird = Bird {
            child: Some(child),
            dir,
            label,
            cfg: cfg.clone(),
        };
        bird.wait_for_socket(&ctx)?;
        Ok(bird)
    }

    fn wait_for_socket(&mut self, ctx: &str) -> Result<()> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(st) = self.try_wait()? {
                return Err(Error::Protocol {
                    context: ctx.to_string(),
                    reason: format!("bird exited ({st}): {}", self.log_tail()),
                });
            }
            if Control::connect(self.socket()).is_ok() {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(Error::Timeout {
                    context: ctx.to_string(),
                    reason: format!(
                        "its control socket did not answer within {START_TIMEOUT:?}: {}",
                        self.log_tail()
                    ),
                });
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn try_wait(&mut self) -> Result<Option<std::process::ExitStatus>> {
        match self.child.as_mut() {
            None => Ok(None),
            Some(c) => c
                .try_wait()
                .map_err(|e| Error::io(format!("{}: wait", self.label), e)),
        }
    }

    /// The last lines of BIRD's log.
    pub fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.join("bird.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(5)..].join(" | ")
    }

    /// The control socket's path (`DIR/bird.ctl`).
    pub fn socket(&self) -> PathBuf {
        self.dir.join("bird.ctl")
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The configuration it runs.
    pub fn config(&self) -> &BgpConfig {
        &self.cfg
    }

    /// A new connection to its control socket.
    pub fn control(&self) -> Result<Control> {
        Control::connect(self.socket())
    }

    /// Every BGP session's state, uptime and routes (see
    /// [`Control::sessions`]).
    pub fn sessions(&self) -> Result<Vec<SessionStatus>> {
        self.control()?.sessions()
    }

    /// Poll [`Bird::sessions`] until every session is Established;
    /// `Timeout` naming the sessions that are not, after `within`.
    pub fn wait_established(&self, within: Duration) -> Result<Vec<SessionStatus>> {
        let deadline = Instant::now() + within;
        loop {
            let s = self.sessions()?;
            if s.iter().all(SessionStatus::is_established) {
                return Ok(s);
            }
            if Instant::now() > deadline {
                let down: Vec<String> = s
                    .iter()
                    .filter(|x| !x.is_established())
                    .map(|x| {
                        format!(
                            "{} {} ({})",
                            x.protocol,
                            x.state,
                            x.last_error.as_deref().unwrap_or("no error")
                        )
                    })
                    .collect();
                return Err(Error::Timeout {
                    context: format!("{}: wait for sessions", self.label),
                    reason: format!("not established: {}", down.join(", ")),
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Write `cfg` and have BIRD reload it (`configure`): sessions whose
    /// peer did not change stay established, new peers are connected,
    /// removed ones closed. `InvalidArgument` with BIRD's words if BIRD
    /// refuses the file (then the old one is put back and still runs).
    /// Equivalent to `birdc -s SOCK configure`.
    pub fn reconfigure(&mut self, cfg: &BgpConfig) -> Result<()> {
        let ctx = format!("reconfigure {}", self.label);
        let text = cfg.render().map_err(|e| e.with_context(&ctx))?;
        let old = std::fs::read_to_string(self.dir.join("bird.conf")).unwrap_or_default();
        write_checked(&self.dir, &text, &ctx)?;
        let r = self.control()?.command("configure");
        match r {
            Ok(r) if !r.is_error() => {
                self.cfg = cfg.clone();
                Ok(())
            }
            other => {
                let _ = std::fs::write(self.dir.join("bird.conf"), old);
                Err(match other {
                    Ok(r) => Error::invalid(ctx, format!("BIRD refused: {}", r.text())),
                    Err(e) => e.with_context(&ctx),
                })
            }
        }
    }

    /// Stop gracefully (`down`): BIRD closes its sessions with a Cease
    /// notification (peers withdraw its routes at once), removes the
    /// routes it put in the kernel and exits. Killed if it has not exited
    /// within 10 s. Equivalent to `birdc -s SOCK down`.
    pub fn stop(mut self) -> Result<()> {
        let ctx = format!("stop {}", self.label);
        let sent = self.control().and_then(|mut c| c.command("down"));
        let deadline = Instant::now() + STOP_TIMEOUT;
        loop {
            if self.try_wait()?.is_some() {
                self.child = None;
                break;
            }
            if Instant::now() > deadline {
                self.kill_now();
                return Err(Error::Timeout {
                    context: ctx,
                    reason: format!(
                        "BIRD did not exit after `down` ({}); killed",
                        match sent {
                            Ok(r) => r.text(),
                            Err(e) => e.to_string(),
                        }
                    ),
                });
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = std::fs::remove_file(self.socket());
        Ok(())
    }

    /// Kill it (SIGKILL), as a crash would: it says goodbye to no one and
    /// leaves its kernel routes; its peers notice after the hold time.
    pub fn kill(mut self) {
        self.kill_now();
    }

    fn kill_now(&mut self) {
        if let Some(mut c) = self.child.take() {
            if let Ok(pid) = i32::try_from(c.id()) {
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
            let _ = c.wait();
        }
        let _ = std::fs::remove_file(self.socket());
    }
}

impl Drop for Bird {
    fn drop(&mut self) {
        self.kill_now();
    }
}

/// `dir` and its missing parents, mode 0755 (before the umask), as a
/// daemon's run directory (`/run/cnet/bird`); fine if it exists.
fn create_run_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(dir)
}

/// Write `text` to DIR/bird.conf.new, check it with `bird -p`, rename it
/// to DIR/bird.conf.
fn write_checked(dir: &Path, text: &str, ctx: &str) -> Result<()> {
    let new = dir.join("bird.conf.new");
    std::fs::write(&new, text)
        .map_err(|e| Error::io(format!("{ctx}: write {}", new.display()), e))?;
    let out = Command::new(BIRD_BIN)
        .arg("-p")
        .arg("-c")
        .arg(&new)
        .output()
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => Error::NotFound {
                context: format!(
                    "{ctx}: the `{BIRD_BIN}` binary (Debian package bird2) is not in PATH"
                ),
                kernel: None,
            },
            _ => Error::io(format!("{ctx}: run {BIRD_BIN} -p"), e),
        })?;
    if !out.status.success() {
        return Err(Error::invalid(
            ctx,
            format!(
                "BIRD refuses the configuration: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        ));
    }
    std::fs::rename(&new, dir.join("bird.conf"))
        .map_err(|e| Error::io(format!("{ctx}: rename bird.conf.new"), e))
}
