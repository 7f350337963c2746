//! cnet-debug as a library: the path model behind `cnet-debug trace`, live
//! capture, probes and frame decoding. The binary (`main.rs`) is a thin
//! clap front end over this.
//!
//! ```text
//! trace::explain ── route lookup ─ neighbour ─ veth peer ─ bridge FDB ─ vxlan/ipip encap ─ decap ─ delivery
//!        │                 (the kernel's own answers, namespace by namespace: no packets sent)
//!        ▼
//! trace::prove ──── capture::Capture on every interface of the predicted path
//!                   + probe::send from the source namespace → seen / not seen per hop
//! ```

pub mod capture;
pub mod cleanup;
pub mod nsfile;
pub mod nsnames;
pub mod probe;
pub mod report;
pub mod trace;
pub mod wire;
