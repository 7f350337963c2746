//! The transport: one synchronous rtnetlink socket.
//!
//! ```text
//!  caller ──request()──▶ [seq n, NLM_F_ACK] ──▶ kernel
//!         ◀──────────── NLMSG_ERROR(code, ext-ack TLVs) for seq n
//!  caller ──dump()────▶ [seq n, NLM_F_DUMP] ──▶ kernel
//!         ◀──────────── msg, msg, …, NLMSG_DONE (if NLM_F_DUMP_INTR: wait
//!                       with jittered exponential backoff, dump again)
//!  caller ──batch()───▶ many requests packed into few datagrams, a bounded
//!                       window in flight; each ACK matched back by seq
//! ```
//!
//! Messages are encoded and decoded by `netlink-packet-route`; this module
//! only frames them, numbers them and interprets `NLMSG_ERROR` / `NLMSG_DONE`,
//! including the kernel's extended-ACK text (`NETLINK_EXT_ACK`). For the
//! few message kinds that crate lacks (nexthop objects, `RTM_*NEXTHOP`),
//! [`Socket::request_raw`] and [`Socket::dump_raw_each`] take a payload the
//! caller serialised and return raw payloads, with the same sequencing,
//! ACK, ext-ack and interrupted-dump handling.

use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use netlink_packet_core::{
    NetlinkHeader, NLM_F_ACK, NLM_F_DUMP, NLM_F_DUMP_INTR, NLM_F_MULTIPART, NLM_F_REQUEST,
};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_sys::{protocols::NETLINK_ROUTE, Socket as RawSocket, SocketAddr};

use crate::error::{Error, KernelError, Result};

const NLM_F_CAPPED: u16 = 0x100;
const NLM_F_ACK_TLVS: u16 = 0x200;
const NLMSGERR_ATTR_MSG: u16 = 1;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
pub(crate) const HDR_LEN: usize = 16;

/// First wait before an interrupted dump is restarted; each further
/// interruption doubles it up to [`DUMP_BACKOFF_MAX`].
const DUMP_BACKOFF_FIRST: Duration = Duration::from_millis(1);
/// Longest single wait between two attempts of a dump.
const DUMP_BACKOFF_MAX: Duration = Duration::from_millis(100);
/// No new attempt starts after this long since the first one: a table
/// changing without a pause for that long gets [`Error::Busy`].
const DUMP_RETRY_BUDGET: Duration = Duration::from_secs(3);
/// Receive buffer we ask the kernel for (bounded by rmem_max without
/// CAP_NET_ADMIN; with it SO_RCVBUFFORCE is used).
const RCVBUF: usize = 8 << 20;
/// Largest datagram we pack pipelined requests into.
const SEND_CHUNK: usize = 64 << 10;

/// A synchronous rtnetlink socket with its own sequence counter.
#[derive(Debug)]
pub struct Socket {
    sock: RawSocket,
    seq: u32,
    /// Receive buffer (reused; grown only for a larger datagram).
    buf: Vec<u8>,
    /// Send buffer: requests are serialised straight into it (reused).
    out: Vec<u8>,
    rcvbuf: usize,
}

/// A request in a batch: the message and its `NLM_F_*` flags (REQUEST and
/// ACK are added).
pub type BatchItem = (RouteNetlinkMessage, u16);

impl Socket {
    /// Open an rtnetlink socket in the calling thread's network namespace.
    pub fn open() -> Result<Self> {
        Self::open_protocol(NETLINK_ROUTE, "open rtnetlink socket")
    }

    /// Open a socket of netlink `protocol` (`NETLINK_ROUTE`,
    /// `NETLINK_GENERIC`, …) in the calling thread's network namespace; the
    /// raw request and dump calls ([`Socket::request_raw`],
    /// [`Socket::dump_raw_each`]) speak any of them.
    pub fn open_protocol(protocol: isize, ctx: &str) -> Result<Self> {
        let mut sock = RawSocket::new(protocol).map_err(|e| Error::io(ctx, e))?;
        sock.bind_auto().map_err(|e| Error::io(ctx, e))?;
        sock.connect(&SocketAddr::new(0, 0))
            .map_err(|e| Error::io(ctx, e))?;
        // Best effort: older kernels lack some of these; errors matter only
        // in that messages get less precise.
        let _ = sock.set_ext_ack(true);
        let _ = sock.set_cap_ack(true);
        let _ = sock.set_netlink_get_strict_chk(true);
        let rcvbuf = set_rcvbuf(&sock, RCVBUF);
        Ok(Self {
            sock,
            seq: 0,
            buf: vec![0; 64 << 10],
            out: Vec::with_capacity(SEND_CHUNK),
            rcvbuf,
        })
    }

    fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1);
        if self.seq == 0 {
            self.seq = 1;
        }
        self.seq
    }

    /// Serialise one request into `self.out` (replacing what was there) and
    /// return its sequence number.
    fn frame(&mut self, msg: &RouteNetlinkMessage, flags: u16) -> u32 {
        let seq = self.next_seq();
        self.out.clear();
        emit_into(&mut self.out, msg, flags, seq);
        seq
    }

    /// [`Socket::frame`] for a payload the caller serialised itself.
    fn frame_raw(&mut self, message_type: u16, payload: &[u8], flags: u16) -> u32 {
        use netlink_packet_core::Emitable;
        let seq = self.next_seq();
        self.out.clear();
        let mut hdr = NetlinkHeader::default();
        hdr.length = (HDR_LEN + payload.len()) as u32;
        hdr.message_type = message_type;
        hdr.flags = NLM_F_REQUEST | flags;
        hdr.sequence_number = seq;
        self.out.resize((HDR_LEN + payload.len() + 3) & !3, 0);
        hdr.emit(&mut self.out[..HDR_LEN]);
        self.out[HDR_LEN..HDR_LEN + payload.len()].copy_from_slice(payload);
        seq
    }

    fn send(&self, bytes: &[u8], ctx: &dyn Fn() -> String) -> Result<()> {
        let n = self.sock.send(bytes, 0).map_err(|e| Error::io(ctx(), e))?;
        if n != bytes.len() {
            return Err(Error::Protocol {
                context: ctx(),
                reason: format!("short netlink send: {n} of {} bytes", bytes.len()),
            });
        }
        Ok(())
    }

    /// Receive one datagram into `self.buf`, growing it so nothing is ever
    /// truncated. Returns its length.
    fn recv_full(&mut self, ctx: &dyn Fn() -> String) -> Result<usize> {
        let want = peek_len(&self.sock).map_err(|e| recv_err(ctx, e))?;
        if want > self.buf.len() {
            self.buf.resize(want.next_power_of_two(), 0);
        }
        let n = recv_into(&self.sock, &mut self.buf, 0).map_err(|e| recv_err(ctx, e))?;
        if n > self.buf.len() {
            // Cannot happen on a connected unicast socket: the datagram
            // peeked is the one read. Reported rather than trusted.
            return Err(Error::Protocol {
                context: ctx(),
                reason: format!("netlink datagram of {n} bytes truncated"),
            });
        }
        Ok(n)
    }

    /// One datagram without peeking (for small replies such as ACKs): a
    /// datagram larger than the buffer is reported, never silently cut.
    fn recv_fast(&mut self, ctx: &dyn Fn() -> String) -> Result<usize> {
        let n =
            recv_into(&self.sock, &mut self.buf, libc::MSG_TRUNC).map_err(|e| recv_err(ctx, e))?;
        if n > self.buf.len() {
            return Err(Error::Protocol {
                context: ctx(),
                reason: format!("netlink datagram of {n} bytes truncated"),
            });
        }
        Ok(n)
    }

    /// Send one request with `NLM_F_ACK` and return the messages the kernel
    /// answered with before its ACK (e.g. the link for `RTM_GETLINK` by name).
    pub fn request(
        &mut self,
        msg: RouteNetlinkMessage,
        flags: u16,
        ctx: &dyn Fn() -> String,
    ) -> Result<Vec<RouteNetlinkMessage>> {
        let seq = self.frame(&msg, flags | NLM_F_ACK);
        let mut out = Vec::new();
        self.exchange(seq, ctx, &mut |hdr, body| {
            out.push(decode(hdr, body, ctx)?);
            Ok(())
        })?;
        Ok(out)
    }

    /// [`Socket::request`] for a message `netlink-packet-route` cannot
    /// encode (nexthop objects, `RTM_*NEXTHOP`): `payload` is the message
    /// after the netlink header, already serialised by the caller. Returns
    /// each reply before the ACK as (message type, payload).
    pub fn request_raw(
        &mut self,
        message_type: u16,
        payload: &[u8],
        flags: u16,
        ctx: &dyn Fn() -> String,
    ) -> Result<Vec<(u16, Vec<u8>)>> {
        let seq = self.frame_raw(message_type, payload, flags | NLM_F_ACK);
        let mut out = Vec::new();
        self.exchange(seq, ctx, &mut |hdr, body| {
            out.push((hdr.message_type, body.to_vec()));
            Ok(())
        })?;
        Ok(out)
    }

    /// Send the request framed in `self.out` as `seq` and hand every reply
    /// before its ACK (or `NLMSG_DONE`) to `f`.
    fn exchange(
        &mut self,
        seq: u32,
        ctx: &dyn Fn() -> String,
        f: &mut dyn FnMut(&NetlinkHeader, &[u8]) -> Result<()>,
    ) -> Result<()> {
        self.send(&self.out, ctx)?;
        loop {
            let n = self.recv_full(ctx)?;
            let buf = std::mem::take(&mut self.buf);
            let r = for_each_message(&buf[..n], |hdr, body| {
                if !ours(seq, hdr, ctx)? {
                    return Ok(None);
                }
                match hdr.message_type {
                    NLMSG_ERROR => {
                        let code = parse_error(hdr, body);
                        match code {
                            None => Ok(Some(())),
                            Some(k) => Err(Error::from_kernel(ctx(), k)),
                        }
                    }
                    NLMSG_DONE => Ok(Some(())),
                    _ => {
                        f(hdr, body)?;
                        Ok(None)
                    }
                }
            });
            self.buf = buf;
            if r?.is_some() {
                return Ok(());
            }
        }
    }

    /// Send a request with `NLM_F_ACK` and expect nothing but the ACK.
    pub fn ack(
        &mut self,
        msg: RouteNetlinkMessage,
        flags: u16,
        ctx: &dyn Fn() -> String,
    ) -> Result<()> {
        self.request(msg, flags, ctx).map(|_| ())
    }

    /// A dump (`NLM_F_DUMP`): every message up to `NLMSG_DONE`. A dump the
    /// kernel marks interrupted (`NLM_F_DUMP_INTR`: the table changed while
    /// it was read) is restarted after a jittered, exponentially growing
    /// wait (1 ms doubling to 100 ms), for at most 3 s in all; then
    /// [`Error::Busy`] says how many times concurrent changes interrupted it.
    pub fn dump(
        &mut self,
        msg: RouteNetlinkMessage,
        ctx: &dyn Fn() -> String,
    ) -> Result<Vec<RouteNetlinkMessage>> {
        // The raw messages are only copied while the dump runs and decoded
        // once it has finished uninterrupted: the kernel builds the next
        // chunk when we read the last, so the time a dump is exposed to
        // concurrent changes is the time to read it, not to decode it (and
        // an interrupted attempt costs no decoding).
        let mut raw: Vec<(NetlinkHeader, std::ops::Range<usize>)> = Vec::new();
        let mut bytes: Vec<u8> = Vec::new();
        self.dump_each(msg, ctx, &mut |m| {
            match m {
                None => {
                    raw.clear();
                    bytes.clear();
                }
                Some((hdr, body)) => {
                    let start = bytes.len();
                    bytes.extend_from_slice(body);
                    raw.push((*hdr, start..bytes.len()));
                }
            }
            Ok(())
        })?;
        raw.iter()
            .map(|(hdr, r)| decode(hdr, &bytes[r.clone()], ctx))
            .collect()
    }

    /// A dump that hands each message's raw payload to `f` without decoding
    /// it (for hot paths that read a few attributes of many messages).
    /// `f(None)` means the dump was interrupted and restarts: forget what
    /// was seen so far.
    #[allow(clippy::type_complexity)]
    pub fn dump_each(
        &mut self,
        msg: RouteNetlinkMessage,
        ctx: &dyn Fn() -> String,
        f: &mut dyn FnMut(Option<(&NetlinkHeader, &[u8])>) -> Result<()>,
    ) -> Result<()> {
        self.dump_framed(&mut |s| s.frame(&msg, NLM_F_DUMP), ctx, f)
    }

    /// [`Socket::dump_each`] for a request `netlink-packet-route` cannot
    /// encode (nexthop objects): `payload` is the dump request after the
    /// netlink header, already serialised by the caller (kernel-side
    /// filter attributes included).
    #[allow(clippy::type_complexity)]
    pub fn dump_raw_each(
        &mut self,
        message_type: u16,
        payload: &[u8],
        ctx: &dyn Fn() -> String,
        f: &mut dyn FnMut(Option<(&NetlinkHeader, &[u8])>) -> Result<()>,
    ) -> Result<()> {
        self.dump_framed(
            &mut |s| s.frame_raw(message_type, payload, NLM_F_DUMP),
            ctx,
            f,
        )
    }

    /// The dump loop; `frame` serialises the request into `self.out` (once
    /// per attempt) and returns its sequence number.
    #[allow(clippy::type_complexity)]
    fn dump_framed(
        &mut self,
        frame: &mut dyn FnMut(&mut Self) -> u32,
        ctx: &dyn Fn() -> String,
        f: &mut dyn FnMut(Option<(&NetlinkHeader, &[u8])>) -> Result<()>,
    ) -> Result<()> {
        let mut backoff = Backoff::new(DUMP_BACKOFF_FIRST, DUMP_BACKOFF_MAX, DUMP_RETRY_BUDGET);
        let mut interruptions = 0usize;
        loop {
            if interruptions > 0 {
                f(None)?;
            }
            let seq = frame(self);
            self.send(&self.out, ctx)?;
            let mut interrupted = false;
            loop {
                let n = self.recv_full(ctx)?;
                let buf = std::mem::take(&mut self.buf);
                let r = for_each_message(&buf[..n], |hdr, body| {
                    if !ours(seq, hdr, ctx)? {
                        return Ok(None);
                    }
                    if hdr.flags & NLM_F_DUMP_INTR != 0 {
                        interrupted = true;
                    }
                    match hdr.message_type {
                        NLMSG_DONE => {
                            // DONE carries an error code (and ext-ack) when the
                            // dump failed half-way, e.g. a strict-check refusal.
                            if body.len() >= 4 {
                                let code = i32::from_ne_bytes([body[0], body[1], body[2], body[3]]);
                                if code < 0 {
                                    let msg = ext_ack_msg(hdr.flags, &body[4..], false);
                                    return Err(Error::from_kernel(
                                        ctx(),
                                        KernelError::new(-code, msg),
                                    ));
                                }
                            }
                            Ok(Some(()))
                        }
                        NLMSG_ERROR => match parse_error(hdr, body) {
                            None => Ok(Some(())),
                            Some(k) => Err(Error::from_kernel(ctx(), k)),
                        },
                        _ => {
                            f(Some((hdr, body)))?;
                            Ok(None)
                        }
                    }
                });
                self.buf = buf;
                if r?.is_some() {
                    break;
                }
            }
            if !interrupted {
                return Ok(());
            }
            interruptions += 1;
            match backoff.next_wait() {
                Some(wait) => std::thread::sleep(wait),
                None => {
                    return Err(Error::Busy {
                        context: ctx(),
                        kernel: Some(KernelError::new(
                            libc::EINTR,
                            Some(format!(
                                "the dump was interrupted {interruptions} times by concurrent \
                                 changes (kernel flag NLM_F_DUMP_INTR) over {:.1} s of retries \
                                 with backoff; something keeps changing this table",
                                backoff.elapsed().as_secs_f64()
                            )),
                        )),
                    })
                }
            }
        }
    }

    /// Pipelined requests: requests are packed into datagrams of up to 64 KiB
    /// and written while earlier ACKs are still outstanding; a window bounded
    /// by the receive buffer keeps the kernel from dropping ACKs (ENOBUFS).
    /// Each result is matched to its request by sequence number; one failure
    /// does not stop the others. `ctx(i)` describes item `i` for its error.
    #[must_use = "each request has its own result; a failed one is only reported there"]
    pub fn batch(
        &mut self,
        items: Vec<BatchItem>,
        ctx: &dyn Fn(usize) -> String,
    ) -> Vec<Result<()>> {
        let total = items.len();
        let mut items = items.into_iter();
        self.batch_encoded(
            total,
            &mut |_, enc| {
                if let Some((msg, flags)) = items.next() {
                    enc.emit(&msg, flags);
                }
                Ok(())
            },
            ctx,
        )
    }

    /// [`Socket::batch`] with each request serialised on demand straight
    /// into the send buffer: `encode(i, enc)` writes item `i` with
    /// [`Encoder::emit`] (items are asked for in order, each once, only as
    /// the window opens). An item whose `encode` fails gets that error as
    /// its result and is not sent; one that emits nothing succeeds unsent.
    #[allow(clippy::type_complexity)]
    #[must_use = "each request has its own result; a failed one is only reported there"]
    pub fn batch_encoded(
        &mut self,
        total: usize,
        encode: &mut dyn FnMut(usize, Encoder<'_>) -> Result<()>,
        ctx: &dyn Fn(usize) -> String,
    ) -> Vec<Result<()>> {
        let mut results: Vec<Option<Result<()>>> = (0..total).map(|_| None).collect();
        if total == 0 {
            return Vec::new();
        }
        // An ACK costs about 1 KiB of receive buffer (skb truesize); keep the
        // window well inside what the kernel granted us.
        let window = (self.rcvbuf / 2048).clamp(16, 4096);
        // Sequence numbers of one batch are consecutive (wrapping), so an
        // ACK's offset from `first_seq` indexes `sent`, the item it answers.
        let first_seq = self.seq.wrapping_add(1);
        let mut sent: Vec<u32> = Vec::with_capacity(total);
        let mut next = 0usize;
        let mut acked = 0usize;
        let mut out = std::mem::take(&mut self.out);
        let batch_ctx = || "netlink batch".to_string();
        let r = 'run: loop {
            // Fill the window, serialising each request in place.
            out.clear();
            while sent.len() - acked < window && next < total {
                let i = next;
                next += 1;
                let start = out.len();
                let seq = first_seq.wrapping_add(sent.len() as u32);
                match encode(i, Encoder { out: &mut out, seq }) {
                    Err(e) => {
                        out.truncate(start);
                        results[i] = Some(Err(e));
                        continue;
                    }
                    Ok(()) if out.len() == start => {
                        results[i] = Some(Ok(()));
                        continue;
                    }
                    Ok(()) => {}
                }
                self.seq = seq;
                sent.push(i as u32);
                if out.len() > SEND_CHUNK && start > 0 {
                    // The datagram is full: send it, keep the last message.
                    if let Err(e) = self.send(&out[..start], &batch_ctx) {
                        break 'run Err(e);
                    }
                    out.copy_within(start.., 0);
                    let len = out.len() - start;
                    out.truncate(len);
                }
            }
            if !out.is_empty() {
                if let Err(e) = self.send(&out, &batch_ctx) {
                    break Err(e);
                }
            }
            if acked == sent.len() && next >= total {
                break Ok(());
            }
            // Drain ACKs until the window has room again (or all are in).
            let low = if next < total { window / 2 } else { 0 };
            while sent.len() - acked > low {
                // ACKs are one datagram each: take as many as are queued
                // (up to ACK_SLOTS) per system call.
                let got = match recv_many(&self.sock, &mut self.buf, sent.len() - acked) {
                    Ok(g) => g,
                    Err(e) => break 'run Err(recv_err(&batch_ctx, e)),
                };
                for (off, len, truncated) in got {
                    let data = &self.buf[off..off + len];
                    let r = if truncated {
                        // Only possible for an error ACK echoing a long
                        // request (no NETLINK_CAP_ACK): the errno is in the
                        // first bytes; the text is lost.
                        truncated_ack(data).map(|(hdr, code)| {
                            let k = hdr.sequence_number.wrapping_sub(first_seq) as usize;
                            (hdr, code, k)
                        })
                    } else {
                        None
                    };
                    let r = match r {
                        Some((hdr, code, k)) => match sent.get(k) {
                            Some(&i) if results[i as usize].is_none() => {
                                results[i as usize] = Some(match code {
                                    0 => Ok(()),
                                    c => Err(Error::from_kernel(
                                        ctx(i as usize),
                                        KernelError::new(-c, None),
                                    )),
                                });
                                acked += 1;
                                Ok(None)
                            }
                            _ => Err(wrong_seq(&batch_ctx, first_seq, hdr.sequence_number)),
                        },
                        None => for_each_message(data, |hdr, body| {
                            let k = hdr.sequence_number.wrapping_sub(first_seq) as usize;
                            let slot = match sent.get(k) {
                                Some(&i) if results[i as usize].is_none() => {
                                    &mut results[i as usize]
                                }
                                _ => {
                                    return Err(wrong_seq(
                                        &batch_ctx,
                                        first_seq,
                                        hdr.sequence_number,
                                    ))
                                }
                            };
                            if hdr.message_type == NLMSG_ERROR {
                                *slot = Some(match parse_error(hdr, body) {
                                    None => Ok(()),
                                    Some(e) => Err(Error::from_kernel(ctx(sent[k] as usize), e)),
                                });
                                acked += 1;
                            }
                            Ok(None::<()>)
                        }),
                    };
                    if let Err(e) = r {
                        break 'run Err(e);
                    }
                }
            }
        };
        self.out = out;
        match r {
            Ok(()) => results.into_iter().map(|r| r.unwrap_or(Ok(()))).collect(),
            Err(e) => fail_rest(results, e),
        }
    }

    /// A netfilter transaction (nfnetlink batch): `begin`, every message
    /// of `msgs` (each with `NLM_F_ACK`), `end`, in one datagram; the kernel
    /// applies all of them or none. Returns the first message's error in
    /// the kernel's words (its index in `msgs` says which, through `ctx`).
    /// Reads one answer per message, bounded by `timeout` so a kernel that
    /// answers fewer can never hang the caller.
    pub fn transaction_raw(
        &mut self,
        begin: (u16, &[u8]),
        msgs: &[(u16, Vec<u8>, u16)],
        end: (u16, &[u8]),
        timeout: std::time::Duration,
        ctx: &dyn Fn(usize) -> String,
    ) -> Result<()> {
        use netlink_packet_core::Emitable;
        let mut out = Vec::new();
        let mut push = |s: &mut Self, ty: u16, payload: &[u8], flags: u16| {
            let seq = s.next_seq();
            let start = out.len();
            let mut hdr = NetlinkHeader::default();
            hdr.length = (HDR_LEN + payload.len()) as u32;
            hdr.message_type = ty;
            hdr.flags = NLM_F_REQUEST | flags;
            hdr.sequence_number = seq;
            out.resize(start + ((HDR_LEN + payload.len() + 3) & !3), 0);
            hdr.emit(&mut out[start..start + HDR_LEN]);
            out[start + HDR_LEN..start + HDR_LEN + payload.len()].copy_from_slice(payload);
            seq
        };
        let first = push(self, begin.0, begin.1, 0);
        let seqs: Vec<u32> = msgs
            .iter()
            .map(|(ty, p, flags)| push(self, *ty, p, *flags | NLM_F_ACK))
            .collect();
        let last = push(self, end.0, end.1, 0);
        let whole = || ctx(usize::MAX);
        let tv = nix::sys::time::TimeVal::new(timeout.as_secs() as _, timeout.subsec_micros() as _);
        nix::sys::socket::setsockopt(&self.sock, nix::sys::socket::sockopt::ReceiveTimeout, &tv)
            .map_err(|e| Error::io(whole(), std::io::Error::from(e)))?;
        self.send(&out, &whole)?;
        let mut pending = seqs.len();
        let mut first_err: Option<Error> = None;
        while pending > 0 {
            let n = self.recv_full(&whole)?;
            let buf = std::mem::take(&mut self.buf);
            let r = for_each_message(&buf[..n], |hdr, body| {
                let seq = hdr.sequence_number;
                if hdr.message_type != NLMSG_ERROR {
                    return Ok(None::<()>);
                }
                let err = parse_error(hdr, body);
                if seq == first || seq == last {
                    // The batch itself was refused: no message was applied
                    // and no other answer comes.
                    let k = err.unwrap_or_else(|| KernelError::new(libc::EPROTO, None));
                    return Err(Error::from_kernel(whole(), k));
                }
                if let Some(i) = seqs.iter().position(|&s| s == seq) {
                    pending -= 1;
                    if let (Some(k), None) = (err, &first_err) {
                        first_err = Some(Error::from_kernel(ctx(i), k));
                    }
                }
                Ok(None)
            });
            self.buf = buf;
            r?;
        }
        first_err.map_or(Ok(()), Err)
    }

    /// The receive buffer size the kernel granted.
    pub fn rcvbuf(&self) -> usize {
        self.rcvbuf
    }

    /// Write prebuilt bytes and count ACKs: the raw loop benchmarks compare
    /// against (no typing, no per-item results beyond the error count).
    #[doc(hidden)]
    pub fn raw_send_recv(&mut self, datagram: &[u8], expect_acks: usize) -> Result<usize> {
        let ctx = || "raw netlink loop".to_string();
        self.send(datagram, &ctx)?;
        let mut acks = 0;
        let mut errors = 0;
        while acks < expect_acks {
            let n = self.recv_fast(&ctx)?;
            let mut off = 0;
            while off + HDR_LEN <= n {
                let len = u32::from_ne_bytes(self.buf[off..off + 4].try_into().unwrap_or([0; 4]))
                    as usize;
                let ty = u16::from_ne_bytes([self.buf[off + 4], self.buf[off + 5]]);
                if ty == NLMSG_ERROR {
                    acks += 1;
                    if self.buf[off + 16..off + 20] != [0, 0, 0, 0] {
                        errors += 1;
                    }
                }
                if len < HDR_LEN {
                    break;
                }
                off += (len + 3) & !3;
            }
        }
        Ok(errors)
    }

    /// Next sequence number (for callers that prebuild raw messages).
    #[doc(hidden)]
    pub fn take_seq(&mut self) -> u32 {
        self.next_seq()
    }
}

/// Waits between attempts of an interrupted dump: exponential (doubling
/// from `first` up to `max`) with jitter, so a retry does not land in step
/// with a periodic writer, and bounded in total time.
#[derive(Debug)]
struct Backoff {
    next: Duration,
    max: Duration,
    start: Instant,
    budget: Duration,
    rng: fastrand::Rng,
}

impl Backoff {
    fn new(first: Duration, max: Duration, budget: Duration) -> Self {
        Backoff {
            next: first,
            max,
            start: Instant::now(),
            budget,
            rng: fastrand::Rng::new(),
        }
    }

    /// The wait before the next attempt, uniform in [d/2, d] for the
    /// current step d; `None` once the budget is spent (no attempt may
    /// start after it).
    fn next_wait(&mut self) -> Option<Duration> {
        let left = self.budget.checked_sub(self.start.elapsed())?;
        let d = self.next;
        self.next = (d * 2).min(self.max);
        let half = d / 2;
        let nanos = half.as_nanos() as u64;
        let wait = half + Duration::from_nanos(self.rng.u64(0..=nanos));
        (!left.is_zero()).then(|| wait.min(left))
    }

    fn elapsed(&self) -> Duration {
        self.start.elapsed()
    }
}

/// Where [`Socket::batch_encoded`] asks an item to write its request.
#[derive(Debug)]
pub struct Encoder<'a> {
    out: &'a mut Vec<u8>,
    seq: u32,
}

impl Encoder<'_> {
    /// Serialise `msg` (with `NLM_F_REQUEST | NLM_F_ACK | flags`) as this
    /// item's request.
    pub fn emit(self, msg: &RouteNetlinkMessage, flags: u16) {
        emit_into(self.out, msg, flags | NLM_F_ACK, self.seq);
    }
}

/// Append one request to `out`: the netlink header and the payload, each
/// written by netlink-packet-core / netlink-packet-route exactly as
/// `NetlinkMessage::finalize` + `serialize` would, without an intermediate
/// `Vec`; padded to the 4-byte netlink alignment.
fn emit_into(out: &mut Vec<u8>, msg: &RouteNetlinkMessage, flags: u16, seq: u32) {
    use netlink_packet_core::{Emitable, NetlinkSerializable};
    let payload = NetlinkSerializable::buffer_len(msg);
    let mut hdr = NetlinkHeader::default();
    hdr.length = (HDR_LEN + payload) as u32;
    hdr.message_type = msg.message_type();
    hdr.flags = NLM_F_REQUEST | flags;
    hdr.sequence_number = seq;
    let start = out.len();
    out.resize(start + ((HDR_LEN + payload + 3) & !3), 0);
    hdr.emit(&mut out[start..start + HDR_LEN]);
    msg.serialize(&mut out[start + HDR_LEN..start + HDR_LEN + payload]);
}

fn fail_rest(results: Vec<Option<Result<()>>>, e: Error) -> Vec<Result<()>> {
    let text = e.to_string();
    let mut first = Some(e);
    results
        .into_iter()
        .map(|r| match r {
            Some(r) => r,
            None => Err(first.take().unwrap_or_else(|| Error::Protocol {
                context: "netlink batch".into(),
                reason: format!("not completed: {text}"),
            })),
        })
        .collect()
}

/// Whether a reply answers request `seq`: `false` for the stale tail of an
/// abandoned exchange (skipped), an error for anything else.
fn ours(seq: u32, hdr: &NetlinkHeader, ctx: &dyn Fn() -> String) -> Result<bool> {
    if hdr.sequence_number == seq {
        Ok(true)
    } else if is_stale(seq, hdr.sequence_number) {
        Ok(false)
    } else {
        Err(wrong_seq(ctx, seq, hdr.sequence_number))
    }
}

/// A reply numbered before the current request: the tail of an exchange
/// that was abandoned (a batch stopped by an error leaves its unread ACKs).
/// Skipped rather than taken for this request's answer; a reply numbered
/// *after* it is still a protocol error.
fn is_stale(current: u32, got: u32) -> bool {
    let behind = current.wrapping_sub(got);
    got != 0 && behind != 0 && behind < (1 << 31)
}

fn wrong_seq(ctx: &dyn Fn() -> String, want: u32, got: u32) -> Error {
    Error::Protocol {
        context: ctx(),
        reason: format!("reply with sequence number {got}, expected {want}"),
    }
}

fn recv_err(ctx: &dyn Fn() -> String, e: std::io::Error) -> Error {
    if e.raw_os_error() == Some(libc::ENOBUFS) {
        Error::Protocol {
            context: ctx(),
            reason: "kernel dropped replies (ENOBUFS): receive buffer overrun".into(),
        }
    } else {
        Error::io(ctx(), e)
    }
}

/// Walk the netlink messages of one datagram. `f` returns `Some` to say the
/// exchange is complete.
pub(crate) fn for_each_message<T>(
    data: &[u8],
    mut f: impl FnMut(&NetlinkHeader, &[u8]) -> Result<Option<T>>,
) -> Result<Option<T>> {
    let mut off = 0;
    let mut result = None;
    while off + HDR_LEN <= data.len() {
        let h = &data[off..off + HDR_LEN];
        let len = u32::from_ne_bytes([h[0], h[1], h[2], h[3]]) as usize;
        if len < HDR_LEN || off + len > data.len() {
            return Err(Error::Protocol {
                context: "parse netlink reply".into(),
                reason: format!("bad message length {len} at offset {off}"),
            });
        }
        let mut hdr = NetlinkHeader::default();
        hdr.length = len as u32;
        hdr.message_type = u16::from_ne_bytes([h[4], h[5]]);
        hdr.flags = u16::from_ne_bytes([h[6], h[7]]);
        hdr.sequence_number = u32::from_ne_bytes([h[8], h[9], h[10], h[11]]);
        hdr.port_number = u32::from_ne_bytes([h[12], h[13], h[14], h[15]]);
        if let Some(r) = f(&hdr, &data[off + HDR_LEN..off + len])? {
            result = Some(r);
        }
        off += (len + 3) & !3;
    }
    Ok(result)
}

/// `NLMSG_ERROR`: `None` for an ACK, the errno and ext-ack text otherwise.
fn parse_error(hdr: &NetlinkHeader, body: &[u8]) -> Option<KernelError> {
    if body.len() < 4 {
        return Some(KernelError::new(
            libc::EPROTO,
            Some("short NLMSG_ERROR".into()),
        ));
    }
    let code = i32::from_ne_bytes([body[0], body[1], body[2], body[3]]);
    if code == 0 {
        return None;
    }
    let msg = ext_ack_msg(hdr.flags, &body[4..], true);
    Some(KernelError::new(-code, msg))
}

/// The `NLMSGERR_ATTR_MSG` text after the echoed request (which is just its
/// header when the kernel capped it).
fn ext_ack_msg(flags: u16, rest: &[u8], has_echo: bool) -> Option<String> {
    if flags & NLM_F_ACK_TLVS == 0 {
        return None;
    }
    let mut off = 0;
    if has_echo {
        if rest.len() < HDR_LEN {
            return None;
        }
        off = if flags & NLM_F_CAPPED != 0 {
            HDR_LEN
        } else {
            let l = u32::from_ne_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
            (l + 3) & !3
        };
    }
    while off + 4 <= rest.len() {
        let len = u16::from_ne_bytes([rest[off], rest[off + 1]]) as usize;
        let ty = u16::from_ne_bytes([rest[off + 2], rest[off + 3]]) & 0x3fff;
        if len < 4 || off + len > rest.len() {
            break;
        }
        if ty == NLMSGERR_ATTR_MSG {
            let s = &rest[off + 4..off + len];
            let s = s.split(|b| *b == 0).next().unwrap_or(&[]);
            return Some(String::from_utf8_lossy(s).into_owned());
        }
        off += (len + 3) & !3;
    }
    None
}

pub(crate) fn decode(
    hdr: &NetlinkHeader,
    body: &[u8],
    ctx: &dyn Fn() -> String,
) -> Result<RouteNetlinkMessage> {
    use netlink_packet_core::NetlinkDeserializable;
    RouteNetlinkMessage::deserialize(hdr, body).map_err(|e| Error::Protocol {
        context: ctx(),
        reason: format!(
            "cannot decode message type {} (flags {:#x}{}): {e}",
            hdr.message_type,
            hdr.flags,
            if hdr.flags & NLM_F_MULTIPART != 0 {
                ", multipart"
            } else {
                ""
            }
        ),
    })
}

/// Datagrams [`recv_many`] takes per call, and the room for each (an ACK
/// is 36 bytes with `NETLINK_CAP_ACK`, a few hundred with its ext-ack text).
const ACK_SLOTS: usize = 64;
const ACK_SLOT_LEN: usize = 1024;

/// `recvmmsg(MSG_WAITFORONE)`: wait for one datagram, then take whatever
/// else is queued, at most `max` (and [`ACK_SLOTS`]), each into its own
/// slot of `buf`. Returns (offset, length, truncated) per datagram.
fn recv_many(
    sock: &RawSocket,
    buf: &mut [u8],
    max: usize,
) -> std::io::Result<impl Iterator<Item = (usize, usize, bool)>> {
    let slots = max.clamp(1, ACK_SLOTS).min(buf.len() / ACK_SLOT_LEN);
    // SAFETY: all-zero is a valid value for these plain C structs.
    let mut iov: [libc::iovec; ACK_SLOTS] = unsafe { std::mem::zeroed() };
    let mut hdrs: [libc::mmsghdr; ACK_SLOTS] = unsafe { std::mem::zeroed() };
    for k in 0..slots {
        iov[k].iov_base = buf[k * ACK_SLOT_LEN..].as_mut_ptr().cast();
        iov[k].iov_len = ACK_SLOT_LEN;
        hdrs[k].msg_hdr.msg_iov = &mut iov[k];
        hdrs[k].msg_hdr.msg_iovlen = 1;
    }
    let n = loop {
        // SAFETY: `hdrs[..slots]` point at `slots` disjoint, writable
        // ACK_SLOT_LEN-byte regions of `buf`, which outlives the call;
        // the kernel writes at most iov_len bytes into each.
        let n = unsafe {
            libc::recvmmsg(
                sock.as_raw_fd(),
                hdrs.as_mut_ptr(),
                slots as libc::c_uint,
                libc::MSG_WAITFORONE,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        break n as usize;
    };
    let got: [(usize, usize, bool); ACK_SLOTS] = std::array::from_fn(|k| {
        (
            k * ACK_SLOT_LEN,
            (hdrs[k].msg_len as usize).min(ACK_SLOT_LEN),
            hdrs[k].msg_hdr.msg_flags & libc::MSG_TRUNC != 0,
        )
    });
    Ok(got.into_iter().take(n))
}

/// The header and errno of a truncated `NLMSG_ERROR` datagram.
fn truncated_ack(data: &[u8]) -> Option<(NetlinkHeader, i32)> {
    if data.len() < HDR_LEN + 4 {
        return None;
    }
    let mut hdr = NetlinkHeader::default();
    hdr.message_type = u16::from_ne_bytes([data[4], data[5]]);
    if hdr.message_type != NLMSG_ERROR {
        return None;
    }
    hdr.sequence_number = u32::from_ne_bytes([data[8], data[9], data[10], data[11]]);
    Some((
        hdr,
        i32::from_ne_bytes([data[16], data[17], data[18], data[19]]),
    ))
}

pub(crate) fn peek_len(sock: &RawSocket) -> std::io::Result<usize> {
    let mut b = [0u8; 0];
    // SAFETY: a zero-length buffer; MSG_PEEK|MSG_TRUNC makes recv return the
    // datagram's real length without consuming or writing anything.
    let n = unsafe {
        libc::recv(
            sock.as_raw_fd(),
            b.as_mut_ptr().cast(),
            0,
            libc::MSG_PEEK | libc::MSG_TRUNC,
        )
    };
    if n < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(n as usize)
}

pub(crate) fn recv_into(
    sock: &RawSocket,
    buf: &mut [u8],
    flags: libc::c_int,
) -> std::io::Result<usize> {
    loop {
        // SAFETY: `buf` is a valid, writable slice of `buf.len()` bytes for
        // the duration of the call; recv writes at most that many.
        let n = unsafe { libc::recv(sock.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), flags) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        return Ok(n as usize);
    }
}

pub(crate) fn set_rcvbuf(sock: &RawSocket, want: usize) -> usize {
    let fd = sock.as_raw_fd();
    let v = want as libc::c_int;
    for opt in [libc::SO_RCVBUFFORCE, libc::SO_RCVBUF] {
        // SAFETY: `v` is a c_int living across the call; its size is passed.
        let r = unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                opt,
                (&v as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if r == 0 {
            break;
        }
    }
    let mut got: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `got` and `len` are valid out-parameters of the right size.
    let r = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&mut got as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    if r == 0 && got > 0 {
        got as usize
    } else {
        212_992
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ext_ack_text_is_extracted_from_capped_error() {
        // code -95, echoed 16-byte header, then NLMSGERR_ATTR_MSG "Unknown device type\0"
        let mut body = (-95i32).to_ne_bytes().to_vec();
        body.extend_from_slice(&[0u8; 16]);
        let text = b"Unknown device type\0";
        let len = (4 + text.len()) as u16;
        body.extend_from_slice(&len.to_ne_bytes());
        body.extend_from_slice(&NLMSGERR_ATTR_MSG.to_ne_bytes());
        body.extend_from_slice(text);
        let mut hdr = NetlinkHeader::default();
        hdr.flags = NLM_F_CAPPED | NLM_F_ACK_TLVS;
        let k = parse_error(&hdr, &body).expect("an error");
        assert_eq!(k.errno, 95);
        assert_eq!(k.message.as_deref(), Some("Unknown device type"));
    }

    #[test]
    fn stale_replies_are_recognised_across_wraparound() {
        assert!(is_stale(10, 9));
        assert!(is_stale(2, u32::MAX));
        assert!(!is_stale(10, 10));
        assert!(!is_stale(10, 11));
        assert!(!is_stale(10, 0));
    }

    #[test]
    fn backoff_grows_with_jitter_and_stops_at_its_budget() {
        let first = Duration::from_millis(2);
        let max = Duration::from_millis(16);
        let mut b = Backoff::new(first, max, Duration::from_secs(3600));
        let mut step = first;
        for _ in 0..10 {
            let w = b.next_wait().expect("within budget");
            assert!(
                w >= step / 2 && w <= step,
                "{w:?} outside [{:?}, {step:?}]",
                step / 2
            );
            step = (step * 2).min(max);
        }
        let mut spent = Backoff::new(first, max, Duration::ZERO);
        assert_eq!(spent.next_wait(), None);
    }

    #[test]
    fn zero_code_is_an_ack() {
        let body = [0u8; 20];
        assert!(parse_error(&NetlinkHeader::default(), &body).is_none());
    }
}
