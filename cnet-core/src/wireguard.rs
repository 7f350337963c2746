//! WireGuard keys and device configuration over the kernel's `wireguard`
//! generic-netlink family (what `wg genkey`, `wg set` and `wg show` do).
//!
//! ```text
//!  PrivateKey::load_or_generate(FILE) ── 32 random bytes (getrandom),
//!        │                                clamped; FILE 0600, base64 as
//!        │                                `wg genkey` writes it
//!        └─ public_key() ── X25519 (x25519-dalek) ─▶ published with the lease
//!
//!  WireGuardSocket::at(netns) ─ a short-lived thread enters the namespace
//!        │                      and opens a NETLINK_GENERIC socket
//!        ├─ CTRL_CMD_GETFAMILY "wireguard" ─▶ family id (ENOENT: the
//!        │                      kernel has no wireguard → Unsupported)
//!        ├─ device(NAME)  WG_CMD_GET_DEVICE (dump) ─▶ WgDevice
//!        └─ set(&WgSet)   WG_CMD_SET_DEVICE × n ─▶ an ACK each (errno + ext-ack text)
//! ```
//!
//! A set with many peers does not fit one message: a nested attribute's
//! length is 16 bits, so one `WGDEVICE_A_PEERS` holds at most 64 KiB
//! (about 600 peers), and the kernel would read a longer one truncated.
//! [`WgSet::messages`] splits it as wireguard-tools does (`ipc-linux.h`):
//! the first message carries the device's attributes and
//! `WGDEVICE_F_REPLACE_PEERS`; each message is filled with peers up to
//! [`SET_MESSAGE_BUDGET`] bytes; a peer whose allowed IPs do not fit
//! continues in the next message under its key alone (without
//! `WGPEER_F_REPLACE_ALLOWEDIPS`, which would drop the part already sent).
//!
//! The device itself is a link (`ip link add NAME type wireguard`,
//! [`crate::link::WireGuard`]); keys, port and peers are not link
//! attributes and are set here. Messages are encoded and decoded by
//! `netlink-packet-wireguard` and `netlink-packet-generic`; this module
//! frames them, numbers them and reads the kernel's answers with the
//! helpers of [`crate::netlink`].

use std::fmt;
use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::str::FromStr;
use std::time::{Duration, SystemTime};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use ipnet::IpNet;
use netlink_packet_core::{
    Emitable, NetlinkDeserializable, NetlinkHeader, NetlinkSerializable, NLM_F_ACK, NLM_F_DUMP,
    NLM_F_REQUEST,
};
use netlink_packet_generic::ctrl::nlas::GenlCtrlAttrs;
use netlink_packet_generic::ctrl::{GenlCtrl, GenlCtrlCmd};
use netlink_packet_generic::GenlMessage;
use netlink_packet_wireguard::{
    WireguardAddressFamily, WireguardAllowedIp, WireguardAllowedIpAttr, WireguardAttribute,
    WireguardCmd, WireguardDeviceFlags, WireguardMessage, WireguardPeer, WireguardPeerAttribute,
    WireguardPeerFlags,
};
use netlink_sys::protocols::NETLINK_GENERIC;

use crate::error::{Error, KernelError, Result};
use crate::netns::NetNs;

/// WireGuard's customary UDP port (`wg-quick`, Flannel, Calico use it).
pub const DEFAULT_PORT: u16 = 51820;
/// Length of a WireGuard key (Curve25519), in bytes.
pub const KEY_LEN: usize = 32;
/// Most bytes of one `WG_CMD_SET_DEVICE` netlink message, headers
/// included: wireguard-tools' budget (`mnl_ideal_socket_buffer_size`,
/// the page size capped at 8 KiB: 4 KiB on x86-64), far below the 64 KiB a
/// nested attribute's 16-bit length can describe.
pub const SET_MESSAGE_BUDGET: usize = 4096;
/// Netlink header (16 bytes) and generic-netlink header (4).
const SET_MESSAGE_HEADERS: usize = 16 + 4;
/// An attribute's header (length and type).
const NLA_HEADER: usize = 4;

/// A WireGuard public key. Shown and parsed as base64 (44 characters, as
/// `wg pubkey` prints it).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PublicKey(pub [u8; KEY_LEN]);

impl PublicKey {
    /// The key in base64.
    pub fn to_base64(&self) -> String {
        B64.encode(self.0)
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_base64())
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({self})")
    }
}

fn key_from_base64(what: &str, s: &str) -> Result<[u8; KEY_LEN]> {
    let ctx = || format!("{what} {:?}", s.chars().take(8).collect::<String>() + "…");
    let raw = B64
        .decode(s.trim())
        .map_err(|e| Error::invalid(ctx(), format!("not base64: {e}")))?;
    raw.try_into().map_err(|raw: Vec<u8>| {
        Error::invalid(
            ctx(),
            format!("a WireGuard key is {KEY_LEN} bytes, this is {}", raw.len()),
        )
    })
}

impl FromStr for PublicKey {
    type Err = Error;
    /// Base64 of 32 bytes (`wg pubkey`'s output).
    fn from_str(s: &str) -> Result<Self> {
        key_from_base64("WireGuard public key", s).map(PublicKey)
    }
}

/// A WireGuard private key (X25519, clamped). Its `Debug` shows only the
/// public key: a private key never reaches a log by accident.
#[derive(Clone, PartialEq, Eq)]
pub struct PrivateKey([u8; KEY_LEN]);

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PrivateKey(<secret> of public {})", self.public_key())
    }
}

impl PrivateKey {
    /// A new key from the operating system's random source (`getrandom`),
    /// clamped as Curve25519 wants (`wg genkey`).
    pub fn generate() -> Result<PrivateKey> {
        let mut b = [0u8; KEY_LEN];
        getrandom::fill(&mut b).map_err(|e| {
            Error::io(
                "generate a WireGuard private key",
                std::io::Error::from_raw_os_error(e.raw_os_error().unwrap_or(libc::EIO)),
            )
        })?;
        Ok(PrivateKey::from_bytes(b))
    }

    /// The key of these 32 bytes, clamped (bits 0–2 and 255 cleared, bit
    /// 254 set), as the kernel and `wg` treat any private key.
    pub fn from_bytes(mut b: [u8; KEY_LEN]) -> PrivateKey {
        b[0] &= 248;
        b[31] &= 127;
        b[31] |= 64;
        PrivateKey(b)
    }

    /// The raw bytes (secret).
    pub fn as_bytes(&self) -> &[u8; KEY_LEN] {
        &self.0
    }

    /// Base64 (`wg genkey`'s format; secret).
    pub fn to_base64(&self) -> String {
        B64.encode(self.0)
    }

    /// Parse base64 of 32 bytes (`wg genkey`'s output).
    pub fn from_base64(s: &str) -> Result<PrivateKey> {
        key_from_base64("WireGuard private key", s).map(PrivateKey::from_bytes)
    }

    /// Its public key (X25519 base-point multiplication, `wg pubkey`).
    pub fn public_key(&self) -> PublicKey {
        let secret = x25519_dalek::StaticSecret::from(self.0);
        PublicKey(x25519_dalek::PublicKey::from(&secret).to_bytes())
    }

    /// The key kept in `path` (base64, one line, as `wg genkey > FILE`
    /// writes it), made there first if the file does not exist, mode
    /// 0600. Two processes that race to make it end with the same key:
    /// the new key is written to a temporary file in the same directory
    /// and linked to `path` only if `path` still does not exist.
    pub fn load_or_generate(path: &Path) -> Result<PrivateKey> {
        use std::os::unix::fs::OpenOptionsExt;
        let ctx = || format!("WireGuard private key file {}", path.display());
        match std::fs::read_to_string(path) {
            Ok(s) => return PrivateKey::from_base64(&s).map_err(|e| e.with_context(ctx())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io(ctx(), e)),
        }
        let key = PrivateKey::generate()?;
        let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
        let dir = dir.unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(|e| Error::io(ctx(), e))?;
        let tmp = dir.join(format!(
            ".{}.{}.tmp",
            path.file_name()
                .map(|n| n.to_string_lossy())
                .unwrap_or_default(),
            std::process::id()
        ));
        let write = || -> std::io::Result<()> {
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)?;
            writeln!(f, "{}", key.to_base64())?;
            f.sync_all()
        };
        let linked = write().and_then(|()| std::fs::hard_link(&tmp, path));
        let _ = std::fs::remove_file(&tmp);
        match linked {
            Ok(()) => Ok(key),
            // Someone else made it first: theirs is the node's key.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                let s = std::fs::read_to_string(path).map_err(|e| Error::io(ctx(), e))?;
                PrivateKey::from_base64(&s).map_err(|e| e.with_context(ctx()))
            }
            Err(e) => Err(Error::io(ctx(), e)),
        }
    }
}

/// One peer of a WireGuard device: who it is, where it is, what it may
/// send and receive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WgPeer {
    /// Its public key (its identity).
    pub public_key: PublicKey,
    /// Its underlay address and port (`endpoint`).
    pub endpoint: Option<SocketAddr>,
    /// The inner addresses it may use (`allowed-ips`): the kernel routes
    /// these to it and accepts only these from it.
    pub allowed_ips: Vec<IpNet>,
    /// Seconds between keepalives (`persistent-keepalive`); `None` off.
    pub persistent_keepalive: Option<u16>,
}

/// A peer as the kernel reports it: its configuration and its counters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WgPeerState {
    /// The configuration.
    pub peer: WgPeer,
    /// The last handshake, `None` if there was none.
    pub last_handshake: Option<SystemTime>,
    /// Bytes received from it.
    pub rx_bytes: u64,
    /// Bytes sent to it.
    pub tx_bytes: u64,
}

/// A WireGuard device as the kernel reports it (`wg show NAME`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WgDevice {
    /// Interface name.
    pub name: String,
    /// Interface index.
    pub index: u32,
    /// The public key of its private key (`None`: no private key set).
    pub public_key: Option<PublicKey>,
    /// UDP listen port (0 until set or chosen by the kernel when up).
    pub listen_port: u16,
    /// Firewall mark of its packets (0: none).
    pub fwmark: u32,
    /// Its peers.
    pub peers: Vec<WgPeerState>,
}

impl WgDevice {
    /// The peer with this public key.
    pub fn peer(&self, key: &PublicKey) -> Option<&WgPeerState> {
        self.peers.iter().find(|p| p.peer.public_key == *key)
    }
}

/// What to do with one peer in a [`WgSet`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WgPeerChange {
    /// Add it, or update it: endpoint and keepalive set, allowed IPs
    /// replaced by exactly these (`wg set DEV peer KEY endpoint … allowed-ips …`).
    Upsert(WgPeer),
    /// Remove it (`wg set DEV peer KEY remove`); fine if it is not there.
    Remove(PublicKey),
}

/// One `WG_CMD_SET_DEVICE` request: `wg set DEV [private-key …]
/// [listen-port …] [peer … ]…`. Built apart from sending it, so the
/// message can be checked without a kernel ([`WgSet::message`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WgSet {
    dev: String,
    private_key: Option<PrivateKey>,
    listen_port: Option<u16>,
    replace_peers: bool,
    peers: Vec<WgPeerChange>,
}

impl WgSet {
    /// Change device `dev`; nothing yet.
    pub fn new(dev: &str) -> WgSet {
        WgSet {
            dev: dev.to_string(),
            private_key: None,
            listen_port: None,
            replace_peers: false,
            peers: Vec::new(),
        }
    }
    /// Set the private key (`private-key FILE`).
    pub fn private_key(mut self, k: PrivateKey) -> Self {
        self.private_key = Some(k);
        self
    }
    /// Set the UDP listen port (`listen-port N`).
    pub fn listen_port(mut self, port: u16) -> Self {
        self.listen_port = Some(port);
        self
    }
    /// Remove every peer not in this request (`wg setconf` semantics,
    /// WGDEVICE_F_REPLACE_PEERS).
    pub fn replace_peers(mut self) -> Self {
        self.replace_peers = true;
        self
    }
    /// Add or update a peer.
    pub fn peer(mut self, p: WgPeer) -> Self {
        self.peers.push(WgPeerChange::Upsert(p));
        self
    }
    /// Remove a peer.
    pub fn remove_peer(mut self, key: PublicKey) -> Self {
        self.peers.push(WgPeerChange::Remove(key));
        self
    }
    /// Whether the request changes nothing.
    pub fn is_empty(&self) -> bool {
        self.private_key.is_none()
            && self.listen_port.is_none()
            && !self.replace_peers
            && self.peers.is_empty()
    }

    /// The generic-netlink payload as one message (without the family id,
    /// which the kernel assigns at boot). Only for a set that fits one
    /// message (a few hundred peers at most): [`WgSet::messages`] is what
    /// [`WireGuardSocket::set`] sends.
    pub fn message(&self) -> WireguardMessage {
        let mut attributes = self.device_attributes();
        if !self.peers.is_empty() {
            let peers = self.peers.iter().map(peer_message).collect();
            attributes.push(WireguardAttribute::Peers(peers));
        }
        WireguardMessage {
            cmd: WireguardCmd::SetDevice,
            attributes,
        }
    }

    /// The request as the messages to send in order, each at most
    /// [`SET_MESSAGE_BUDGET`] bytes with its headers (see the [module
    /// documentation](self)): the first with the device's attributes (key,
    /// port, `WGDEVICE_F_REPLACE_PEERS`) and as many peers as fit, the
    /// others with the device's name and the next peers. A set that fits
    /// one message is exactly [`WgSet::message`].
    pub fn messages(&self) -> Vec<WireguardMessage> {
        let mut out = Vec::new();
        let mut msg = SetMessage::new(self.device_attributes());
        for c in &self.peers {
            let (head, ips) = peer_parts(c);
            let mut rest: &[WireguardAllowedIp] = &ips;
            let mut first = true;
            loop {
                // A continuation names the peer only: its flags would
                // replace the allowed IPs sent before.
                let attrs = if first {
                    head.clone()
                } else {
                    vec![WireguardPeerAttribute::PublicKey(*c.key())]
                };
                if let Some(n) = msg.take(attrs, rest, c.is_upsert()) {
                    rest = &rest[n..];
                    first = false;
                    if rest.is_empty() {
                        break;
                    }
                }
                // Full, or the peer's allowed IPs go on: the next message.
                out.push(msg.finish());
                msg = SetMessage::new(vec![WireguardAttribute::IfName(self.dev.clone())]);
            }
        }
        if out.is_empty() || !msg.peers.is_empty() {
            out.push(msg.finish());
        }
        out
    }

    /// The device's attributes: its name, and key, port and flags when set.
    fn device_attributes(&self) -> Vec<WireguardAttribute> {
        let mut attributes = vec![WireguardAttribute::IfName(self.dev.clone())];
        if let Some(k) = &self.private_key {
            attributes.push(WireguardAttribute::PrivateKey(k.0));
        }
        if let Some(p) = self.listen_port {
            attributes.push(WireguardAttribute::ListenPort(p));
        }
        if self.replace_peers {
            attributes.push(WireguardAttribute::Flags(
                WireguardDeviceFlags::ReplacePeers,
            ));
        }
        attributes
    }
}

impl WgPeerChange {
    fn key(&self) -> &[u8; KEY_LEN] {
        match self {
            WgPeerChange::Upsert(p) => &p.public_key.0,
            WgPeerChange::Remove(k) => &k.0,
        }
    }

    fn is_upsert(&self) -> bool {
        matches!(self, WgPeerChange::Upsert(_))
    }
}

/// One `WG_CMD_SET_DEVICE` message being filled up to the budget.
struct SetMessage {
    attributes: Vec<WireguardAttribute>,
    peers: Vec<WireguardPeer>,
    /// Bytes of the message so far: headers, attributes, the peers'
    /// nest header and the peers.
    len: usize,
}

impl SetMessage {
    fn new(attributes: Vec<WireguardAttribute>) -> Self {
        let len = SET_MESSAGE_HEADERS + attributes.as_slice().buffer_len() + NLA_HEADER;
        SetMessage {
            attributes,
            peers: Vec::new(),
            len,
        }
    }

    /// Add a peer of `head` attributes and as many of `ips` as fit (in an
    /// allowed-IPs nest when `with_ips`, even empty): how many IPs it took,
    /// or `None` when the message has peers and not even the head with one
    /// IP (the head alone, without IPs) fits. An empty message takes at
    /// least that much whatever the budget, so every message makes
    /// progress.
    fn take(
        &mut self,
        head: Vec<WireguardPeerAttribute>,
        ips: &[WireguardAllowedIp],
        with_ips: bool,
    ) -> Option<usize> {
        let with_ips = with_ips || !ips.is_empty();
        let mut len =
            NLA_HEADER + head.as_slice().buffer_len() + if with_ips { NLA_HEADER } else { 0 };
        let mut n = 0;
        while n < ips.len() && self.len + len + ips[n].buffer_len() <= SET_MESSAGE_BUDGET {
            len += ips[n].buffer_len();
            n += 1;
        }
        let fits = self.len + len <= SET_MESSAGE_BUDGET && (n > 0 || ips.is_empty());
        if !fits {
            if !self.peers.is_empty() {
                return None;
            }
            if n == 0 && !ips.is_empty() {
                len += ips[0].buffer_len();
                n = 1;
            }
        }
        let mut attrs = head;
        if with_ips {
            attrs.push(WireguardPeerAttribute::AllowedIps(ips[..n].to_vec()));
        }
        self.len += len;
        self.peers.push(WireguardPeer(attrs));
        Some(n)
    }

    fn finish(self) -> WireguardMessage {
        let mut attributes = self.attributes;
        if !self.peers.is_empty() {
            attributes.push(WireguardAttribute::Peers(self.peers));
        }
        WireguardMessage {
            cmd: WireguardCmd::SetDevice,
            attributes,
        }
    }
}

fn peer_message(c: &WgPeerChange) -> WireguardPeer {
    let (mut a, ips) = peer_parts(c);
    if c.is_upsert() {
        a.push(WireguardPeerAttribute::AllowedIps(ips));
    }
    WireguardPeer(a)
}

/// A peer's attributes but its allowed IPs, and its allowed IPs.
fn peer_parts(c: &WgPeerChange) -> (Vec<WireguardPeerAttribute>, Vec<WireguardAllowedIp>) {
    match c {
        WgPeerChange::Remove(k) => (
            vec![
                WireguardPeerAttribute::PublicKey(k.0),
                WireguardPeerAttribute::Flags(WireguardPeerFlags::RemoveMe),
            ],
            Vec::new(),
        ),
        WgPeerChange::Upsert(p) => {
            let mut a = vec![
                WireguardPeerAttribute::PublicKey(p.public_key.0),
                WireguardPeerAttribute::Flags(WireguardPeerFlags::ReplaceAllowedIps),
            ];
            if let Some(e) = p.endpoint {
                a.push(WireguardPeerAttribute::Endpoint(e));
            }
            // 0 turns keepalive off, as `persistent-keepalive off`.
            a.push(WireguardPeerAttribute::PersistentKeepalive(
                p.persistent_keepalive.unwrap_or(0),
            ));
            let ips = p
                .allowed_ips
                .iter()
                .map(|n| {
                    WireguardAllowedIp(vec![
                        WireguardAllowedIpAttr::Family(if n.addr().is_ipv4() {
                            WireguardAddressFamily::Ipv4
                        } else {
                            WireguardAddressFamily::Ipv6
                        }),
                        WireguardAllowedIpAttr::IpAddr(n.network()),
                        WireguardAllowedIpAttr::Cidr(n.prefix_len()),
                    ])
                })
                .collect();
            (a, ips)
        }
    }
}

/// The `WG_CMD_GET_DEVICE` request for `dev` (`wg show DEV`).
pub fn get_device_message(dev: &str) -> WireguardMessage {
    WireguardMessage {
        cmd: WireguardCmd::GetDevice,
        attributes: vec![WireguardAttribute::IfName(dev.to_string())],
    }
}

/// A generic-netlink socket bound to one namespace, with the `wireguard`
/// family's id resolved.
#[derive(Debug)]
pub struct WireGuardSocket {
    /// The generic-netlink socket: the same request/ACK and dump machinery
    /// (sequence checks, ext-ack text, interrupted-dump retry) as rtnetlink.
    sock: crate::netlink::Socket,
    family: u16,
    ns: String,
}

impl WireGuardSocket {
    /// A socket in `ns` (opened by a short-lived thread that entered it,
    /// or right here when `ns` is the caller's own namespace).
    ///
    /// `Unsupported` when the kernel has no `wireguard` family.
    pub fn at(ns: &NetNs) -> Result<WireGuardSocket> {
        let label = ns.label();
        let sock = ns.open_within(|| {
            crate::netlink::Socket::open_protocol(NETLINK_GENERIC, "open generic netlink socket")
        })?;
        let mut s = WireGuardSocket {
            sock,
            family: 0,
            ns: label,
        };
        s.family = s.resolve_family()?;
        Ok(s)
    }

    /// The family id the kernel gave `wireguard` (`CTRL_CMD_GETFAMILY`).
    pub fn family_id(&self) -> u16 {
        self.family
    }

    fn resolve_family(&mut self) -> Result<u16> {
        let ns = self.ns.clone();
        let ctx = move || format!("generic netlink in {ns}: resolve family wireguard");
        let msg = GenlMessage::from_payload(GenlCtrl {
            cmd: GenlCtrlCmd::GetFamily,
            nlas: vec![GenlCtrlAttrs::FamilyName("wireguard".into())],
        });
        let replies: Vec<GenlMessage<GenlCtrl>> =
            match self.exchange(msg, NLM_F_REQUEST | NLM_F_ACK, &ctx) {
                Err(e) if e.errno() == Some(libc::ENOENT) => {
                    return Err(Error::Unsupported {
                        context: ctx(),
                        kernel: Some(KernelError::new(
                            libc::ENOENT,
                            Some(
                                "the kernel has no wireguard generic-netlink family \
                                 (no WireGuard support or module)"
                                    .into(),
                            ),
                        )),
                    })
                }
                r => r?,
            };
        replies
            .iter()
            .flat_map(|m| &m.payload.nlas)
            .find_map(|a| match a {
                GenlCtrlAttrs::FamilyId(id) => Some(*id),
                _ => None,
            })
            .ok_or_else(|| Error::Protocol {
                context: ctx(),
                reason: "the controller's answer has no family id".into(),
            })
    }

    /// The device `dev` as the kernel has it (`wg show DEV`). `NotFound`
    /// when there is no such link, `Unsupported`-like `Netlink` error when
    /// it is not a WireGuard device.
    pub fn device(&mut self, dev: &str) -> Result<WgDevice> {
        let ns = self.ns.clone();
        let ctx = move || format!("wg show {dev} in {ns}");
        let mut msg = GenlMessage::from_payload(get_device_message(dev));
        msg.set_resolved_family_id(self.family);
        let replies: Vec<GenlMessage<WireguardMessage>> =
            self.exchange(msg, NLM_F_REQUEST | NLM_F_DUMP, &ctx)?;
        // A device with many peers comes in several messages; the device
        // attributes repeat and the peers add up.
        let mut d = WgDevice {
            name: dev.to_string(),
            index: 0,
            public_key: None,
            listen_port: 0,
            fwmark: 0,
            peers: Vec::new(),
        };
        for m in replies {
            for a in m.payload.attributes {
                match a {
                    WireguardAttribute::IfIndex(i) => d.index = i,
                    WireguardAttribute::IfName(n) => d.name = n,
                    WireguardAttribute::PublicKey(k) => d.public_key = Some(PublicKey(k)),
                    WireguardAttribute::ListenPort(p) => d.listen_port = p,
                    WireguardAttribute::Fwmark(f) => d.fwmark = f,
                    WireguardAttribute::Peers(ps) => {
                        for p in ps {
                            merge_peer(&mut d.peers, p);
                        }
                    }
                    _ => {}
                }
            }
        }
        Ok(d)
    }

    /// Send `set` (`wg set …`): its [messages](WgSet::messages) in order,
    /// each waiting for the kernel's ACK. `NotFound` when the device does
    /// not exist. A failure in a later message leaves the earlier ones
    /// applied (as with `wg setconf`); the error says which message.
    pub fn set(&mut self, set: &WgSet) -> Result<()> {
        let ns = self.ns.clone();
        let dev = set.dev.clone();
        let messages = set.messages();
        let count = messages.len();
        for (i, m) in messages.into_iter().enumerate() {
            let ctx = || match count {
                1 => format!("wg set {dev} in {ns}"),
                _ => format!("wg set {dev} in {ns} (message {} of {count})", i + 1),
            };
            let mut msg = GenlMessage::from_payload(m);
            msg.set_resolved_family_id(self.family);
            let _: Vec<GenlMessage<WireguardMessage>> =
                self.exchange(msg, NLM_F_REQUEST | NLM_F_ACK, &ctx)?;
        }
        Ok(())
    }

    /// One request and its answers up to the ACK (or, for a dump, the
    /// whole dump, retried when the kernel marks it interrupted).
    fn exchange<F, R>(
        &mut self,
        msg: GenlMessage<F>,
        flags: u16,
        ctx: &dyn Fn() -> String,
    ) -> Result<Vec<GenlMessage<R>>>
    where
        GenlMessage<F>: NetlinkSerializable,
        GenlMessage<R>: NetlinkDeserializable,
        <GenlMessage<R> as NetlinkDeserializable>::Error: fmt::Display,
    {
        let message_type = msg.message_type();
        let mut payload = vec![0u8; msg.buffer_len()];
        msg.serialize(&mut payload);
        let decode = |hdr: &NetlinkHeader, body: &[u8]| {
            GenlMessage::<R>::deserialize(hdr, body).map_err(|e| Error::Protocol {
                context: ctx(),
                reason: format!(
                    "cannot decode generic netlink message type {}: {e}",
                    hdr.message_type
                ),
            })
        };
        let mut replies = Vec::new();
        if flags & NLM_F_DUMP != 0 {
            self.sock
                .dump_raw_each(message_type, &payload, ctx, &mut |m| {
                    match m {
                        // The dump was interrupted and starts again.
                        None => replies.clear(),
                        Some((hdr, body)) => replies.push(decode(hdr, body)?),
                    }
                    Ok(())
                })?;
        } else {
            for (t, body) in self.sock.request_raw(message_type, &payload, flags, ctx)? {
                let mut hdr = NetlinkHeader::default();
                hdr.message_type = t;
                replies.push(decode(&hdr, &body)?);
            }
        }
        Ok(replies)
    }
}

/// Add peer `p` (one message's part of it) to `peers`: a peer whose allowed
/// IPs do not fit one message continues in the next with the same key.
fn merge_peer(peers: &mut Vec<WgPeerState>, p: WireguardPeer) {
    let mut key = None;
    let mut st = WgPeerState {
        peer: WgPeer {
            public_key: PublicKey([0; KEY_LEN]),
            endpoint: None,
            allowed_ips: Vec::new(),
            persistent_keepalive: None,
        },
        last_handshake: None,
        rx_bytes: 0,
        tx_bytes: 0,
    };
    for a in p.0 {
        match a {
            WireguardPeerAttribute::PublicKey(k) => key = Some(PublicKey(k)),
            WireguardPeerAttribute::Endpoint(e) => st.peer.endpoint = Some(e),
            WireguardPeerAttribute::PersistentKeepalive(s) => {
                st.peer.persistent_keepalive = (s != 0).then_some(s)
            }
            WireguardPeerAttribute::LastHandshake(t) if t.seconds > 0 || t.nano_seconds > 0 => {
                st.last_handshake = Some(
                    SystemTime::UNIX_EPOCH + Duration::new(t.seconds as u64, t.nano_seconds as u32),
                );
            }
            WireguardPeerAttribute::RxBytes(b) => st.rx_bytes = b,
            WireguardPeerAttribute::TxBytes(b) => st.tx_bytes = b,
            WireguardPeerAttribute::AllowedIps(ips) => {
                for ip in ips {
                    let (mut addr, mut cidr) = (None, None);
                    for a in ip.0 {
                        match a {
                            WireguardAllowedIpAttr::IpAddr(x) => addr = Some(x),
                            WireguardAllowedIpAttr::Cidr(c) => cidr = Some(c),
                            _ => {}
                        }
                    }
                    if let (Some(a), Some(c)) = (addr, cidr) {
                        if let Ok(n) = IpNet::new(a, c) {
                            st.peer.allowed_ips.push(n);
                        }
                    }
                }
            }
            _ => {}
        }
    }
    let Some(key) = key else { return };
    st.peer.public_key = key;
    match peers.iter_mut().find(|q| q.peer.public_key == key) {
        Some(q) => q.peer.allowed_ips.extend(st.peer.allowed_ips),
        None => peers.push(st),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_match_wg_and_round_trip() {
        // RFC 7748 §6.1: Alice's private key and public key.
        let sk: [u8; 32] = hex("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a");
        let pk = PrivateKey::from_bytes(sk).public_key();
        assert_eq!(
            pk.0,
            hex("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a")
        );
        assert_eq!(pk.to_string().parse::<PublicKey>().unwrap(), pk);
        let k = PrivateKey::generate().unwrap();
        assert_ne!(k, PrivateKey::generate().unwrap());
        assert_eq!(k.0[0] & 7, 0);
        assert_eq!(k.0[31] & 0xc0, 0x40);
        assert_eq!(PrivateKey::from_base64(&k.to_base64()).unwrap(), k);
        assert!(
            !format!("{k:?}").contains(&k.to_base64()),
            "no secret in Debug"
        );
        let e = "abcd".parse::<PublicKey>().unwrap_err();
        assert!(e.to_string().contains("32 bytes"), "{e}");
    }

    #[test]
    fn key_file_is_made_once_private_and_kept() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sub/wg.key");
        let a = PrivateKey::load_or_generate(&p).unwrap();
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(PrivateKey::load_or_generate(&p).unwrap(), a);
        assert_eq!(std::fs::read_dir(p.parent().unwrap()).unwrap().count(), 1);
        std::fs::write(&p, "not a key\n").unwrap();
        let e = PrivateKey::load_or_generate(&p).unwrap_err();
        assert!(matches!(e, Error::InvalidArgument { .. }), "{e}");
        assert!(e.to_string().contains("wg.key"), "{e}");
    }

    /// Walk the netlink attributes in `buf`: each length covers at least
    /// its header and stays inside its parent, and a nested one
    /// (NLA_F_NESTED) is filled exactly by its children, so a length cut
    /// to 16 bits shows. How many attributes there are, nested included.
    fn check_nlas(buf: &[u8]) -> usize {
        let mut pos = 0;
        let mut count = 0;
        while pos < buf.len() {
            assert!(buf.len() - pos >= 4, "attribute header cut at {pos}");
            let len = u16::from_le_bytes([buf[pos], buf[pos + 1]]) as usize;
            let kind = u16::from_le_bytes([buf[pos + 2], buf[pos + 3]]);
            assert!(
                len >= 4 && pos + len <= buf.len(),
                "attribute length {len} at {pos}"
            );
            if kind & netlink_packet_core::NLA_F_NESTED != 0 {
                count += check_nlas(&buf[pos + 4..pos + len]);
            }
            count += 1;
            pos += (len + 3) & !3;
        }
        assert_eq!(pos, buf.len(), "attributes do not fill their parent");
        count
    }

    /// Each message emitted, checked attribute by attribute and against the
    /// budget, and decoded as the kernel would read it.
    fn decode_all(msgs: &[WireguardMessage]) -> Vec<WireguardMessage> {
        use netlink_packet_core::ParseableParametrized;
        msgs.iter()
            .map(|m| {
                let mut buf = vec![0u8; m.buffer_len()];
                m.emit(&mut buf);
                assert!(
                    SET_MESSAGE_HEADERS + buf.len() <= SET_MESSAGE_BUDGET,
                    "{} bytes",
                    buf.len()
                );
                check_nlas(&buf);
                let header = netlink_packet_generic::GenlHeader { cmd: 1, version: 1 };
                WireguardMessage::parse_with_param(&buf, header).expect("decodes")
            })
            .collect()
    }

    fn test_key(i: u32) -> PublicKey {
        let mut b = [0x5a; KEY_LEN];
        b[..4].copy_from_slice(&i.to_le_bytes());
        PublicKey(b)
    }

    #[test]
    fn set_with_2000_peers_is_split_into_messages_that_each_fit() {
        const N: u32 = 2000;
        let mut set = WgSet::new("cnet.wg")
            .private_key(PrivateKey::from_bytes([7; 32]))
            .listen_port(51820)
            .replace_peers();
        for i in 0..N {
            set = set.peer(WgPeer {
                public_key: test_key(i),
                endpoint: Some(SocketAddr::from(([192, 0, 2, (i % 250) as u8 + 1], 51820))),
                allowed_ips: vec![IpNet::new([10, (i >> 8) as u8, i as u8, 0].into(), 24).unwrap()],
                persistent_keepalive: Some(25),
            });
        }
        // As one message (what was sent before), the peers' nest is far
        // past what 16 bits hold: its length comes out cut, and the
        // encoder panics or the walk finds the cut.
        let single = set.message();
        let one = single.buffer_len();
        assert!(one > usize::from(u16::MAX), "{one}");
        let broken = std::panic::catch_unwind(|| {
            let mut buf = vec![0u8; one];
            single.emit(&mut buf);
            check_nlas(&buf)
        });
        assert!(broken.is_err());
        let msgs = set.messages();
        let decoded = decode_all(&msgs);
        let mut seen = std::collections::HashMap::new();
        for (k, m) in decoded.iter().enumerate() {
            let mut names = 0;
            for a in &m.attributes {
                match a {
                    WireguardAttribute::IfName(n) => {
                        assert_eq!(n, "cnet.wg");
                        names += 1;
                    }
                    WireguardAttribute::Peers(ps) => {
                        assert!(!ps.is_empty(), "message {k} has an empty peer list");
                        for p in ps {
                            let mut key = None;
                            let mut ips = Vec::new();
                            let mut replace_ips = false;
                            for a in &p.0 {
                                match a {
                                    WireguardPeerAttribute::PublicKey(b) => {
                                        key = Some(PublicKey(*b))
                                    }
                                    WireguardPeerAttribute::AllowedIps(v) => ips.extend(v.clone()),
                                    WireguardPeerAttribute::Flags(f) => {
                                        replace_ips =
                                            f.contains(WireguardPeerFlags::ReplaceAllowedIps)
                                    }
                                    _ => {}
                                }
                            }
                            let key = key.expect("every peer has its key");
                            assert!(replace_ips && ips.len() == 1, "{key}");
                            *seen.entry(key).or_insert(0) += 1;
                        }
                    }
                    // The device's attributes and the replace flag: only
                    // in the first message.
                    WireguardAttribute::PrivateKey(_)
                    | WireguardAttribute::ListenPort(_)
                    | WireguardAttribute::Flags(_) => assert_eq!(k, 0, "{a:?} in message {k}"),
                    other => panic!("unexpected {other:?}"),
                }
            }
            assert_eq!(names, 1);
        }
        assert!(decoded[0].attributes.contains(&WireguardAttribute::Flags(
            WireguardDeviceFlags::ReplacePeers
        )));
        assert_eq!(seen.len(), N as usize);
        assert!(seen.values().all(|&n| n == 1), "a peer sent twice");
        assert!((0..N).all(|i| seen.contains_key(&test_key(i))));
        println!(
            "{N} peers: {} messages of at most {SET_MESSAGE_BUDGET} bytes (one message would be {one})",
            msgs.len()
        );
    }

    #[test]
    fn a_peer_with_more_allowed_ips_than_a_message_holds_continues_by_key() {
        let ips: Vec<IpNet> = (0..1000u32)
            .map(|i| IpNet::new([10, 244, (i >> 8) as u8, i as u8].into(), 32).unwrap())
            .collect();
        let set = WgSet::new("cnet.wg")
            .remove_peer(test_key(1))
            .peer(WgPeer {
                public_key: test_key(2),
                endpoint: None,
                allowed_ips: ips.clone(),
                persistent_keepalive: None,
            })
            .remove_peer(test_key(3));
        let decoded = decode_all(&set.messages());
        assert!(decoded.len() > 2, "{} messages", decoded.len());
        // The kernel's view, put together as `device()` merges a dump.
        let mut peers = Vec::new();
        let mut heads = 0;
        for m in &decoded {
            for a in &m.attributes {
                let WireguardAttribute::Peers(ps) = a else {
                    continue;
                };
                for p in ps {
                    let replace = p.0.iter().any(|a| {
                        matches!(a, WireguardPeerAttribute::Flags(f)
                            if f.contains(WireguardPeerFlags::ReplaceAllowedIps))
                    });
                    if p.0
                        .contains(&WireguardPeerAttribute::PublicKey(test_key(2).0))
                    {
                        heads += usize::from(replace);
                    }
                    merge_peer(&mut peers, p.clone());
                }
            }
        }
        assert_eq!(heads, 1, "only the first part replaces the allowed IPs");
        let keys: Vec<PublicKey> = peers.iter().map(|p| p.peer.public_key).collect();
        assert_eq!(keys, vec![test_key(1), test_key(2), test_key(3)]);
        assert_eq!(peers[1].peer.allowed_ips, ips);
        // A small set is one message, exactly the single-message form.
        let small = WgSet::new("cnet.wg").peer(WgPeer {
            public_key: test_key(4),
            endpoint: None,
            allowed_ips: ips[..3].to_vec(),
            persistent_keepalive: None,
        });
        assert_eq!(small.messages(), vec![small.message()]);
        assert_eq!(WgSet::new("x").messages(), vec![WgSet::new("x").message()]);
    }

    fn hex(s: &str) -> [u8; 32] {
        let v: Vec<u8> = (0..32)
            .map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap())
            .collect();
        v.try_into().unwrap()
    }
}
