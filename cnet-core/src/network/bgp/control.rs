//! A client of BIRD's control socket, speaking its text protocol (what
//! `birdc` does, without running `birdc`), and the typed session status
//! read from it.
//!
//! ```text
//!   connect(SOCK) ─▶ "0001 BIRD 2.0.12 ready."          greeting
//!   "show protocols all\n" ─▶ "2002-Name  Proto  Table  State  Since  Info"
//!                              "1002-peer_h2  BGP  ---  up  2026-… 02:46:16.354  Established"
//!                              "1006-  Description:    h2"
//!                              "     BGP state:          Established"   (space: same code)
//!                              "0000 "                                  (code + space: last line)
//! ```
//!
//! Every reply line is a 4-digit code and a separator: `-` more lines
//! follow, ` ` this is the last; a line starting with a space continues
//! the previous code. Codes 0xxx end a successful reply, 8xxx and 9xxx an
//! error (run-time and parse errors). The protocol is small and line-based,
//! so it is read here with std's `UnixStream` rather than a crate (none
//! keeps to a synchronous API).

use std::io::{BufRead, BufReader, Write};
use std::net::IpAddr;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::{Error, Result};

/// How long one command may take to answer.
const REPLY_TIMEOUT: Duration = Duration::from_secs(10);

/// One line of a reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplyLine {
    /// The 4-digit code (of the line or of the line it continues).
    pub code: u16,
    /// The text after the code and separator.
    pub text: String,
}

/// A whole reply to one command.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Reply {
    /// Every line, in order, the last one included.
    pub lines: Vec<ReplyLine>,
}

impl Reply {
    /// The code of the last line (0xxx success, 8xxx/9xxx error).
    pub fn code(&self) -> u16 {
        self.lines.last().map_or(0, |l| l.code)
    }

    /// Whether BIRD reported an error.
    pub fn is_error(&self) -> bool {
        self.code() >= 8000
    }

    /// The lines' texts joined with newlines.
    pub fn text(&self) -> String {
        self.lines
            .iter()
            .map(|l| l.text.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// A connection to one BIRD's control socket.
#[derive(Debug)]
pub struct Control {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
    path: PathBuf,
    /// The greeting's version text ("BIRD 2.0.12 ready.").
    greeting: String,
}

impl Control {
    /// Connect to the control socket at `path` and read BIRD's greeting.
    /// Equivalent to `birdc -s PATH`.
    pub fn connect(path: impl AsRef<Path>) -> Result<Control> {
        let path = path.as_ref().to_path_buf();
        let shown = path.display().to_string();
        let ctx = || format!("connect to BIRD's control socket {shown}");
        let s = UnixStream::connect(&path).map_err(|e| Error::io(ctx(), e))?;
        s.set_read_timeout(Some(REPLY_TIMEOUT))
            .map_err(|e| Error::io(ctx(), e))?;
        let writer = s.try_clone().map_err(|e| Error::io(ctx(), e))?;
        let mut c = Control {
            reader: BufReader::new(s),
            writer,
            path,
            greeting: String::new(),
        };
        let r = c.read_reply(&ctx())?;
        if r.code() != 1 {
            return Err(Error::Protocol {
                context: ctx(),
                reason: format!("expected the greeting (code 0001), got {:?}", r.lines),
            });
        }
        c.greeting = r.text();
        Ok(c)
    }

    /// The greeting ("BIRD 2.0.12 ready.").
    pub fn greeting(&self) -> &str {
        &self.greeting
    }

    /// Send one command and read its whole reply. A reply with an error
    /// code is returned as it is (see [`Reply::is_error`]); `Err` only when
    /// the socket fails or the reply cannot be parsed.
    pub fn command(&mut self, cmd: &str) -> Result<Reply> {
        let ctx = format!("BIRD at {}: command {cmd:?}", self.path.display());
        if cmd.contains('\n') {
            return Err(Error::invalid(ctx, "a command is one line"));
        }
        self.writer
            .write_all(format!("{cmd}\n").as_bytes())
            .map_err(|e| Error::io(&ctx, e))?;
        self.read_reply(&ctx)
    }

    /// [`Control::command`], with an error reply as `Err`
    /// ([`Error::Protocol`] with BIRD's text).
    pub fn command_ok(&mut self, cmd: &str) -> Result<Reply> {
        let r = self.command(cmd)?;
        if r.is_error() {
            return Err(Error::Protocol {
                context: format!("BIRD at {}: command {cmd:?}", self.path.display()),
                reason: format!("BIRD answered {}: {}", r.code(), r.text()),
            });
        }
        Ok(r)
    }

    fn read_reply(&mut self, ctx: &str) -> Result<Reply> {
        let mut reply = Reply::default();
        let mut code = 0u16;
        loop {
            let mut line = String::new();
            let n = self
                .reader
                .read_line(&mut line)
                .map_err(|e| Error::io(ctx, e))?;
            if n == 0 {
                return Err(Error::Protocol {
                    context: ctx.to_string(),
                    reason: "BIRD closed the control socket in the middle of a reply".into(),
                });
            }
            let line = line.trim_end_matches(['\n', '\r']);
            match parse_line(line) {
                Some(Parsed::Continuation(text)) => reply.lines.push(ReplyLine {
                    code,
                    text: text.to_string(),
                }),
                Some(Parsed::Coded {
                    code: c,
                    last,
                    text,
                }) => {
                    code = c;
                    reply.lines.push(ReplyLine {
                        code,
                        text: text.to_string(),
                    });
                    if last {
                        return Ok(reply);
                    }
                }
                None => {
                    return Err(Error::Protocol {
                        context: ctx.to_string(),
                        reason: format!("not a BIRD reply line: {line:?}"),
                    })
                }
            }
        }
    }

    /// Every BGP session's status (`show protocols all`, with `show status`
    /// for BIRD's clock, so uptimes do not depend on time zones).
    pub fn sessions(&mut self) -> Result<Vec<SessionStatus>> {
        let now = self.command_ok("show status")?;
        let now = now
            .lines
            .iter()
            .find_map(|l| l.text.strip_prefix("Current server time is "))
            .and_then(parse_time);
        let r = self.command_ok("show protocols all")?;
        Ok(parse_sessions(&r, now))
    }
}

enum Parsed<'a> {
    Coded {
        code: u16,
        last: bool,
        text: &'a str,
    },
    Continuation(&'a str),
}

fn parse_line(line: &str) -> Option<Parsed<'_>> {
    if let Some(rest) = line.strip_prefix(' ') {
        return Some(Parsed::Continuation(rest));
    }
    let b = line.as_bytes();
    if b.len() < 5 || !b[..4].iter().all(u8::is_ascii_digit) {
        return None;
    }
    let code = line[..4].parse().ok()?;
    let last = match b[4] {
        b' ' => true,
        b'-' => false,
        _ => return None,
    };
    Some(Parsed::Coded {
        code,
        last,
        text: &line[5..],
    })
}

/// A BGP session's state (RFC 4271's finite-state machine, as BIRD names it).
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionState {
    /// Not trying (protocol down or waiting to retry).
    Idle,
    /// Connecting.
    Connect,
    /// Waiting for the peer to connect.
    Active,
    /// OPEN sent.
    OpenSent,
    /// OPEN confirmed, waiting for the first KEEPALIVE.
    OpenConfirm,
    /// Up: routes are exchanged.
    Established,
    /// Shut down (the protocol is disabled or BIRD is stopping).
    Down,
    /// Anything else BIRD said.
    Other(String),
}

impl SessionState {
    fn parse(s: &str) -> SessionState {
        match s {
            "Idle" => SessionState::Idle,
            "Connect" => SessionState::Connect,
            "Active" => SessionState::Active,
            "OpenSent" => SessionState::OpenSent,
            "OpenConfirm" => SessionState::OpenConfirm,
            "Established" => SessionState::Established,
            "Down" => SessionState::Down,
            o => SessionState::Other(o.to_string()),
        }
    }
}

impl std::fmt::Display for SessionState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SessionState::Other(s) => f.write_str(s),
            s => write!(f, "{s:?}"),
        }
    }
}

/// One BGP session, as BIRD reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionStatus {
    /// BIRD's protocol name (`peer_h2`).
    pub protocol: String,
    /// The peer's name (the protocol's description, as cnet writes it).
    pub peer: Option<String>,
    /// The neighbour address.
    pub neighbor: Option<IpAddr>,
    /// The neighbour's AS.
    pub neighbor_as: Option<u32>,
    /// The session state.
    pub state: SessionState,
    /// When the protocol last changed state, as BIRD prints it
    /// (`2026-11-26 02:46:16.354`, BIRD's local time).
    pub since: String,
    /// Time in the current state (BIRD's clock minus `since`).
    pub uptime: Option<Duration>,
    /// Routes received from the peer and accepted (`Routes: N imported`).
    pub routes_imported: u32,
    /// Routes sent to the peer (`N exported`).
    pub routes_exported: u32,
    /// BIRD's last error on this session (`Last error: …`), if any.
    pub last_error: Option<String>,
}

impl SessionStatus {
    /// Whether the session is up.
    pub fn is_established(&self) -> bool {
        self.state == SessionState::Established
    }
}

/// The BGP sessions of a `show protocols all` reply; `now` is BIRD's clock
/// in seconds (for uptimes).
pub(crate) fn parse_sessions(r: &Reply, now: Option<f64>) -> Vec<SessionStatus> {
    let mut out: Vec<SessionStatus> = Vec::new();
    let mut in_bgp = false;
    for l in &r.lines {
        if l.code == 1002 {
            // name proto table state date time [info…]
            let f: Vec<&str> = l.text.split_whitespace().collect();
            in_bgp = f.get(1) == Some(&"BGP");
            if !in_bgp || f.len() < 6 {
                in_bgp = false;
                continue;
            }
            let since = format!("{} {}", f[4], f[5]);
            let state = match f.get(6) {
                Some(s) => SessionState::parse(s),
                None if f[3] == "down" => SessionState::Down,
                None => SessionState::Idle,
            };
            let uptime = match (now, parse_time(&since)) {
                (Some(n), Some(s)) if n >= s => Some(Duration::from_secs_f64(n - s)),
                _ => None,
            };
            out.push(SessionStatus {
                protocol: f[0].to_string(),
                peer: None,
                neighbor: None,
                neighbor_as: None,
                state,
                since,
                uptime,
                routes_imported: 0,
                routes_exported: 0,
                last_error: None,
            });
            continue;
        }
        if !in_bgp || l.code != 1006 {
            continue;
        }
        let Some(s) = out.last_mut() else { continue };
        let Some((key, value)) = l.text.trim().split_once(':') else {
            continue;
        };
        let value = value.trim();
        match key {
            "Description" => s.peer = Some(value.to_string()),
            "Neighbor address" => s.neighbor = value.parse().ok(),
            "Neighbor AS" => s.neighbor_as = value.parse().ok(),
            "BGP state" => s.state = SessionState::parse(value),
            "Last error" => s.last_error = Some(value.to_string()),
            "Routes" => {
                // "1 imported, 1 exported, 1 preferred" (or "… 0 filtered, …")
                for part in value.split(',') {
                    let mut w = part.split_whitespace();
                    let (Some(n), Some(what)) = (w.next(), w.next()) else {
                        continue;
                    };
                    let n = n.parse().unwrap_or(0);
                    match what {
                        "imported" => s.routes_imported = n,
                        "exported" => s.routes_exported = n,
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    out
}

/// `2026-11-26 02:46:16.354` as seconds since 1970 (no time zone: only
/// differences of two such times are meaningful).
pub(crate) fn parse_time(s: &str) -> Option<f64> {
    let (date, time) = s.trim().split_once(' ')?;
    let mut d = date.split('-').map(|x| x.parse::<i64>());
    let (y, m, day) = (d.next()?.ok()?, d.next()?.ok()?, d.next()?.ok()?);
    let mut t = time.split(':');
    let (h, min) = (
        t.next()?.parse::<i64>().ok()?,
        t.next()?.parse::<i64>().ok()?,
    );
    let sec: f64 = t.next()?.parse().ok()?;
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some((days * 86_400 + h * 3600 + min * 60) as f64 + sec)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `show protocols all` reply as BIRD 2.0.12 sends it (shortened).
    const SHOW_PROTOCOLS: &str = "\
2002-Name       Proto      Table      State  Since         Info
1002-device1    Device     ---        up     2026-11-26 02:46:12.406  
1006-
1002-cnet_kernel Kernel     master4    up     2026-11-26 02:46:12.406  
1006-  Channel ipv4
     State:          UP
     Routes:         0 imported, 1 exported, 0 preferred
1002-peer_h2    BGP        ---        up     2026-11-26 02:46:16.354  Established   
1006-  Description:    h2
     BGP state:          Established
       Neighbor address: 192.0.2.12
       Neighbor AS:      64512
   Channel ipv4
     State:          UP
     Routes:         1 imported, 1 exported, 1 preferred
1002-peer_h3    BGP        ---        start  2026-11-26 02:46:12.406  Active        Socket: Connection refused
1006-  Description:    h3
     BGP state:          Active
       Neighbor address: 192.0.2.13
       Neighbor AS:      64512
       Last error:       Socket: Connection refused
0000 
";

    fn reply(text: &str) -> Reply {
        let mut r = Reply::default();
        let mut code = 0;
        for line in text.lines() {
            match parse_line(line).unwrap() {
                Parsed::Continuation(t) => r.lines.push(ReplyLine {
                    code,
                    text: t.into(),
                }),
                Parsed::Coded { code: c, text, .. } => {
                    code = c;
                    r.lines.push(ReplyLine {
                        code,
                        text: text.into(),
                    })
                }
            }
        }
        r
    }

    #[test]
    fn bgp_status_parsed_from_show_protocols_all() {
        let now = parse_time("2026-11-26 02:46:20.354");
        let s = parse_sessions(&reply(SHOW_PROTOCOLS), now);
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].protocol, "peer_h2");
        assert_eq!(s[0].peer.as_deref(), Some("h2"));
        assert_eq!(s[0].neighbor, Some("192.0.2.12".parse().unwrap()));
        assert_eq!(s[0].neighbor_as, Some(64512));
        assert!(s[0].is_established());
        assert_eq!(s[0].routes_imported, 1);
        assert_eq!(s[0].routes_exported, 1);
        assert_eq!(s[0].uptime, Some(Duration::from_secs(4)));
        assert_eq!(s[1].state, SessionState::Active);
        assert_eq!(
            s[1].last_error.as_deref(),
            Some("Socket: Connection refused")
        );
        assert_eq!(s[1].routes_imported, 0);
    }

    #[test]
    fn bgp_reply_lines() {
        assert!(parse_line("0001 BIRD 2.0.12 ready.").is_some());
        assert!(parse_line("garbage").is_none());
        assert!(parse_line("12a4-x").is_none());
        let r = reply("8003 No protocols match");
        assert!(r.is_error());
        assert_eq!(r.text(), "No protocols match");
    }

    #[test]
    fn bgp_time_differences() {
        let a = parse_time("2024-02-28 23:59:59.500").unwrap();
        let b = parse_time("2024-03-01 00:00:00.500").unwrap();
        assert_eq!(b - a, 86_401.0); // 2024 is a leap year
        assert!(parse_time("yesterday").is_none());
    }
}
