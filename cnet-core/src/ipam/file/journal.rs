//! The pool journal's bytes: encoding and a parser that decides, for any
//! input, which records are real, which tail is a torn (never acknowledged)
//! append, and what is corruption. Pure: no I/O, so it is fuzzed directly
//! (`cnet_core::ipam::fuzz::journal`).
//!
//! ```text
//! cnet-ipam journal v2 epoch=00000000000000000003 start=00000000000000000412 acked=00000000000000000415\n
//! 1c2f09aa 412 {"op":"alloc","addr":"10.244.1.7",...}\n
//! 77e0b213 413 {"op":"release","addr":"10.244.1.5","generation":9}\n
//! 0b8c4d1e 414 {"op":"alloc",...}\n
//! ```
//!
//! * Every record carries a sequence number, consecutive across the whole
//!   life of the pool (the snapshot says which one its journal starts at,
//!   the journal header repeats it), and a CRC-32 over `"<seq> <json>"`. A
//!   deleted, duplicated, reordered or edited line is a gap or a bad
//!   checksum: [`Error::Corrupt`](crate::Error::Corrupt), never skipped.
//! * The header's `acked` field is rewritten in place (fixed width) after
//!   each append is durable: every record below it was acknowledged to a
//!   caller. So a journal that ends before `acked` lost acknowledged records
//!   (truncated), and a bad line below `acked` is damage, both `Corrupt`. A
//!   bad line *at or past* `acked` with nothing but zeros after it is the
//!   torn tail of an append that never returned: the only thing ever
//!   dropped. (`acked` lags by at most the last append when power is lost
//!   before the header page is written back: that record is still read, it
//!   just cannot be told from a torn one if it is damaged too.)

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use super::super::Allocation;
use super::crc32;

/// One journal record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op")]
pub(crate) enum Record {
    /// An address was handed out.
    #[serde(rename = "alloc")]
    Alloc(Allocation),
    /// An address was released.
    #[serde(rename = "release")]
    Release { addr: IpAddr, generation: u64 },
}

/// Width of the numbers in the header: any u64 fits, so the header never
/// changes length and `acked` can be rewritten in place.
const W: usize = 20;
const PREFIX: &str = "cnet-ipam journal v2 epoch=";

/// The journal's header line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Header {
    /// The epoch of the snapshot this journal follows.
    pub epoch: u64,
    /// Sequence number of the first record.
    pub start: u64,
    /// Every record with a smaller sequence number was acknowledged.
    pub acked: u64,
}

impl Header {
    /// Length of the header line in bytes (newline included).
    pub const LEN: usize = PREFIX.len() + W + " start=".len() + W + " acked=".len() + W + 1;
    /// Byte offset of the `acked` number inside the header.
    pub const ACKED_AT: usize = Self::LEN - 1 - W;

    pub fn encode(&self) -> String {
        format!(
            "{PREFIX}{:0W$} start={:0W$} acked={:0W$}\n",
            self.epoch, self.start, self.acked
        )
    }

    /// The fixed-width text of an `acked` value, for the in-place rewrite.
    pub fn acked_field(acked: u64) -> String {
        format!("{acked:0W$}")
    }

    pub fn parse(data: &[u8]) -> Result<Header, String> {
        let line = data
            .get(..Self::LEN)
            .filter(|l| l.ends_with(b"\n"))
            .ok_or_else(|| {
                if data.starts_with(b"cnet-ipam journal v1") {
                    "journal format v1 (a development build of cnet) is not read by this version"
                        .to_string()
                } else {
                    "bad journal header (not a cnet-ipam v2 journal, or cut short)".to_string()
                }
            })?;
        let text = std::str::from_utf8(&line[..Self::LEN - 1])
            .map_err(|_| "journal header is not text".to_string())?;
        let rest = text
            .strip_prefix(PREFIX)
            .ok_or_else(|| format!("bad journal header {text:?}"))?;
        let field = |s: &str, name: &str| -> Result<u64, String> {
            if s.len() != W || !s.bytes().all(|b| b.is_ascii_digit()) {
                return Err(format!("bad {name} in journal header {text:?}"));
            }
            s.parse::<u64>()
                .map_err(|_| format!("bad {name} in journal header {text:?}"))
        };
        let (epoch, rest) = rest.split_at(W.min(rest.len()));
        let rest = rest
            .strip_prefix(" start=")
            .ok_or_else(|| format!("bad journal header {text:?}"))?;
        let (start, rest) = rest.split_at(W.min(rest.len()));
        let acked = rest
            .strip_prefix(" acked=")
            .ok_or_else(|| format!("bad journal header {text:?}"))?;
        let h = Header {
            epoch: field(epoch, "epoch")?,
            start: field(start, "start")?,
            acked: field(acked, "acked")?,
        };
        if h.acked < h.start {
            return Err(format!(
                "journal header says acked {} < start {}",
                h.acked, h.start
            ));
        }
        Ok(h)
    }
}

/// `"<crc> <seq> <json>\n"` for each record, numbered from `seq`.
pub(crate) fn encode_records(seq: u64, recs: &[Record]) -> Result<Vec<u8>, String> {
    let mut buf = Vec::new();
    for (i, r) in recs.iter().enumerate() {
        let json = serde_json::to_string(r).map_err(|e| format!("encode record: {e}"))?;
        let body = format!("{} {json}", seq + i as u64);
        buf.extend_from_slice(format!("{:08x} {body}\n", crc32(body.as_bytes())).as_bytes());
    }
    Ok(buf)
}

/// What [`parse_records`] found.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Parsed {
    /// The good records, in order, with their sequence numbers.
    pub records: Vec<(u64, Record)>,
    /// Bytes of `buf` taken by good records.
    pub consumed: usize,
    /// A torn tail starts at `consumed` and runs to the end of `buf`: cut it.
    pub torn: bool,
}

/// Decode one line (without its newline): its sequence number and record.
fn parse_line(line: &[u8]) -> Option<(u64, Record)> {
    let s = std::str::from_utf8(line).ok()?;
    let (crc, body) = s.split_once(' ')?;
    if crc.len() != 8 {
        return None;
    }
    let crc = u32::from_str_radix(crc, 16).ok()?;
    if crc32(body.as_bytes()) != crc {
        return None;
    }
    let (seq, json) = body.split_once(' ')?;
    if seq.is_empty() || !seq.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((seq.parse().ok()?, serde_json::from_str(json).ok()?))
}

/// Parse the records in `buf`, which starts at a record boundary where the
/// next record must be `next_seq`; `acked` is the header's count. `Err`
/// names the damage (the caller adds the file and offset).
pub(crate) fn parse_records(buf: &[u8], next_seq: u64, acked: u64) -> Result<Parsed, String> {
    let mut out = Parsed::default();
    let mut expect = next_seq;
    let mut pos = 0usize;
    while pos < buf.len() {
        let rest = &buf[pos..];
        let line_end = rest.iter().position(|&b| b == b'\n');
        match line_end.and_then(|n| parse_line(&rest[..n]).map(|r| (n, r))) {
            Some((n, (seq, rec))) => {
                if seq != expect {
                    return Err(format!(
                        "record at byte {pos} has sequence number {seq}, expected {expect} \
                         (a record was lost, duplicated or moved)"
                    ));
                }
                out.records.push((seq, rec));
                expect += 1;
                pos += n + 1;
                out.consumed = pos;
            }
            None => {
                if expect < acked {
                    return Err(format!(
                        "record {expect} at byte {pos} is damaged, but it was acknowledged"
                    ));
                }
                let after = line_end.map_or(rest.len(), |n| n + 1);
                if rest[after..].iter().any(|&b| b != 0) {
                    return Err(format!("bad record at byte {pos} with more data after it"));
                }
                out.torn = true;
                return Ok(out);
            }
        }
    }
    if expect < acked {
        return Err(format!(
            "the journal ends after record {} but {acked} records were acknowledged \
             (acknowledged records were lost: truncated?)",
            expect.wrapping_sub(1)
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alloc(n: u8) -> Record {
        Record::Alloc(Allocation {
            addr: IpAddr::from([10, 244, 1, n]),
            prefix_len: 24,
            container_id: format!("c{n}"),
            ifname: "eth0".into(),
            generation: u64::from(n),
        })
    }

    #[test]
    fn header_round_trip_and_fixed_width() {
        let h = Header {
            epoch: 3,
            start: 412,
            acked: u64::MAX,
        };
        let s = h.encode();
        assert_eq!(s.len(), Header::LEN);
        assert_eq!(Header::parse(s.as_bytes()), Ok(h));
        assert_eq!(
            &s[Header::ACKED_AT..Header::LEN - 1],
            Header::acked_field(u64::MAX)
        );
        assert!(Header::parse(b"cnet-ipam journal v1 epoch=1\n").is_err());
        assert!(Header::parse(&s.as_bytes()[..Header::LEN - 1]).is_err());
    }

    #[test]
    fn records_round_trip_and_every_damage_is_named() {
        let recs = vec![alloc(2), alloc(3), alloc(4)];
        let buf = encode_records(10, &recs).unwrap();
        let p = parse_records(&buf, 10, 13).unwrap();
        assert_eq!(p.records.len(), 3);
        assert_eq!(p.consumed, buf.len());
        assert!(!p.torn);

        // Wrong start: a gap.
        assert!(parse_records(&buf, 9, 9).unwrap_err().contains("sequence"));
        // A deleted middle line.
        let lines: Vec<&[u8]> = buf.split_inclusive(|&b| b == b'\n').collect();
        let cut = [lines[0], lines[2]].concat();
        assert!(parse_records(&cut, 10, 10)
            .unwrap_err()
            .contains("sequence"));
        // Truncated at a record boundary below acked.
        let short = [lines[0], lines[1]].concat();
        assert!(parse_records(&short, 10, 13)
            .unwrap_err()
            .contains("acknowledged"));
        // ... but fine if those were never acknowledged.
        assert_eq!(parse_records(&short, 10, 12).unwrap().records.len(), 2);
        // A damaged acknowledged last line.
        let mut bad = buf.clone();
        let n = bad.len() - 3;
        bad[n] ^= 1;
        assert!(parse_records(&bad, 10, 13)
            .unwrap_err()
            .contains("acknowledged"));
        // A torn unacknowledged tail is dropped.
        let torn = [&buf[..], b"0badc0de 13 {\"op\":\"al"].concat();
        let p = parse_records(&torn, 10, 13).unwrap();
        assert_eq!((p.records.len(), p.consumed, p.torn), (3, buf.len(), true));
        // A bad line with good data after it is corruption, even past acked.
        let mid = [lines[0], b"garbage\n", lines[1]].concat();
        assert!(parse_records(&mid, 10, 10).is_err());
        // Zeros after a torn line (a power loss) are still a torn tail.
        let zeros = [&buf[..], b"0badc0de 13 {\"op\"\0\0\0\n\0\0"].concat();
        assert!(parse_records(&zeros, 10, 13).unwrap().torn);
    }
}
