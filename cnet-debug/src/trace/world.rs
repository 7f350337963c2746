//! The namespaces a trace can see, with lazily opened handles and cached
//! link and address tables; veth peers resolved by netnsid.

use std::collections::{HashMap, HashSet};

use cnet_core::addr::Address;
use cnet_core::link::{Link, LinkKind};
use cnet_core::{Handle, NetNs, Result};

pub(super) struct NsCtx {
    pub(super) label: String,
    pub(super) ns: NetNs,
    pub(super) inode: u64,
    pub(super) h: Option<Handle>,
    pub(super) links: Option<Vec<Link>>,
    pub(super) addrs: Option<Vec<Address>>,
}

/// The namespaces this machine has (named ones and the current one), with
/// lazily opened handles and cached link/address tables.
pub(super) struct World {
    pub(super) nss: Vec<NsCtx>,
    /// (from, to) → the id `from` uses for `to`.
    pub(super) nsids: HashMap<(usize, usize), Option<i32>>,
    /// Namespaces without a name (processes', runtimes' bind mounts) were
    /// added: done once, when a veth peer is in none of the named ones.
    pub(super) unnamed_done: bool,
}

impl World {
    pub(super) fn discover(from: &NetNs, from_label: &str) -> Result<World> {
        let mut nss = Vec::new();
        let mut seen = HashSet::new();
        let mut push = |label: String, ns: NetNs| -> Result<()> {
            let inode = ns.inode()?;
            if seen.insert(inode) {
                nss.push(NsCtx {
                    label,
                    ns,
                    inode,
                    h: None,
                    links: None,
                    addrs: None,
                });
            }
            Ok(())
        };
        push(from_label.to_string(), from.clone())?;
        for n in NetNs::list()? {
            // Checked without blocking: a FIFO or a stray file there is skipped.
            if let Ok(ns) = crate::nsfile::open_name(&n) {
                push(n, ns)?;
            }
        }
        if let Ok(cur) = NetNs::current() {
            push(crate::nsnames::current_label(), cur)?;
        }
        Ok(World {
            nss,
            nsids: HashMap::new(),
            unnamed_done: false,
        })
    }

    pub(super) fn h(&mut self, i: usize) -> Result<&Handle> {
        if self.nss[i].h.is_none() {
            self.nss[i].h = Some(Handle::at(&self.nss[i].ns)?);
        }
        Ok(self.nss[i].h.as_ref().expect("just set"))
    }

    pub(super) fn links(&mut self, i: usize) -> Result<&Vec<Link>> {
        if self.nss[i].links.is_none() {
            let l = self.h(i)?.links().list()?;
            self.nss[i].links = Some(l);
        }
        Ok(self.nss[i].links.as_ref().expect("just set"))
    }

    pub(super) fn addrs(&mut self, i: usize) -> Result<&Vec<Address>> {
        if self.nss[i].addrs.is_none() {
            let a = self.h(i)?.addrs().list(None)?;
            self.nss[i].addrs = Some(a);
        }
        Ok(self.nss[i].addrs.as_ref().expect("just set"))
    }

    pub(super) fn link_by_index(&mut self, i: usize, idx: u32) -> Result<Option<Link>> {
        Ok(self.links(i)?.iter().find(|l| l.index == idx).cloned())
    }

    pub(super) fn link_by_name(&mut self, i: usize, name: &str) -> Result<Option<Link>> {
        Ok(self.links(i)?.iter().find(|l| l.name == name).cloned())
    }

    pub(super) fn label(&self, i: usize) -> String {
        self.nss[i].label.clone()
    }

    /// The namespace and link at the other end of veth `l` in namespace `i`:
    /// `IFLA_LINK_NETNSID` names the peer's namespace by an id local to `i`,
    /// resolved by asking the kernel for each candidate's id.
    pub(super) fn veth_peer(&mut self, i: usize, l: &Link) -> Result<Option<(usize, Link)>> {
        if let Some(found) = self.veth_peer_among(i, l)? {
            return Ok(Some(found));
        }
        if l.link_netnsid.is_some() && !self.unnamed_done {
            self.add_unnamed();
            return self.veth_peer_among(i, l);
        }
        Ok(None)
    }

    /// Add every namespace without a name that a process or a bind mount
    /// holds (see [`crate::nsnames::unnamed`]).
    pub(super) fn add_unnamed(&mut self) {
        self.unnamed_done = true;
        let known: HashSet<u64> = self.nss.iter().map(|n| n.inode).collect();
        for u in crate::nsnames::unnamed(&known) {
            // A process may exit between the scan and the open: skipped.
            if let Ok(ns) = crate::nsnames::open(&u) {
                self.nss.push(NsCtx {
                    label: u.label,
                    ns,
                    inode: u.inode,
                    h: None,
                    links: None,
                    addrs: None,
                });
            }
        }
    }

    /// [`Self::veth_peer`] among the namespaces known so far.
    fn veth_peer_among(&mut self, i: usize, l: &Link) -> Result<Option<(usize, Link)>> {
        let Some(peer_idx) = l.link else {
            return Ok(None);
        };
        let candidates: Vec<usize> = match l.link_netnsid {
            None => vec![i],
            Some(id) => {
                let mut c = Vec::new();
                for j in (0..self.nss.len()).filter(|j| *j != i) {
                    let key = (i, j);
                    let got = match self.nsids.get(&key) {
                        Some(v) => *v,
                        None => {
                            let other = self.nss[j].ns.clone();
                            let v = self.h(i)?.nsid_of(&other).unwrap_or(None);
                            self.nsids.insert(key, v);
                            v
                        }
                    };
                    if got == Some(id) {
                        c.push(j);
                    }
                }
                c
            }
        };
        for j in candidates {
            if let Some(p) = self.link_by_index(j, peer_idx)? {
                if p.kind == LinkKind::Veth && p.link == Some(l.index) {
                    return Ok(Some((j, p)));
                }
            }
        }
        Ok(None)
    }

    pub(super) fn sysctl(&mut self, i: usize, path: &[&str]) -> Option<String> {
        self.h(i).ok()?.sysctl().get_path(path).ok()
    }
}
