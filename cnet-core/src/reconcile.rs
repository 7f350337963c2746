//! Machinery shared by every reconcile (routes, neighbours, FDB): the
//! [`ReconcileReport`] they return and the per-call device-name cache.
//!
//! ```text
//!  desired set ──▶ one filtered dump ──▶ diff ──▶ one pipelined batch
//!                                                   │ per item Ok / Err
//!                                                   ▼
//!                 ReconcileReport { added, replaced, deleted, unchanged, errors }
//!                     └─ .into_result()?  ── Err(Error::Partial) if any item failed
//! ```
//!
//! A reconcile applies every item it can and reports the ones that failed
//! instead of stopping at the first, so its `Ok` means "the dump and the
//! batch ran", not "everything is as desired". The report is `#[must_use]`
//! and [`ReconcileReport::into_result`] turns leftover failures into an
//! error, so a partial failure cannot pass unnoticed.

use std::cell::RefCell;

use crate::error::{Error, Result};
use crate::handle::Handle;
use crate::link::LinkRef;
use rustc_hash::FxHashMap;

/// What a reconcile did. Some items may have failed while the others were
/// applied: check [`errors`](ReconcileReport::errors) or call
/// [`into_result`](ReconcileReport::into_result).
#[must_use = "a reconcile returns Ok even when some items failed: \
              call .into_result()? or look at .errors"]
#[derive(Debug, Default, Clone)]
pub struct ReconcileReport {
    /// What was reconciled, as error messages name it ("reconcile routes
    /// proto 119 table 254 in ns1").
    pub context: String,
    /// Entries that were missing and were added.
    pub added: usize,
    /// Entries that differed and were replaced.
    pub replaced: usize,
    /// Stale entries that were deleted.
    pub deleted: usize,
    /// Entries that were already right.
    pub unchanged: usize,
    /// Per-item failures (each names its entry); the others were applied.
    pub errors: Vec<Error>,
    /// For each of [`errors`](ReconcileReport::errors), in the same order:
    /// the index in the `desired` list of the entry it is about; `None`
    /// when it is about no desired entry (a stale entry's deletion). Read
    /// them together with [`ReconcileReport::item_errors`]. Route,
    /// neighbour and FDB reconciles fill it; a shorter list means `None`
    /// for the rest.
    pub error_items: Vec<Option<usize>>,
}

impl ReconcileReport {
    /// An empty report for `context`.
    pub fn new(context: impl Into<String>) -> Self {
        ReconcileReport {
            context: context.into(),
            ..Default::default()
        }
    }

    /// Record a failure about desired entry `item` (`None`: about no
    /// desired entry).
    pub(crate) fn fail(&mut self, item: Option<usize>, e: Error) {
        self.align();
        self.errors.push(e);
        self.error_items.push(item);
    }

    /// `error_items` as long as `errors` (an error pushed to `errors`
    /// alone is about no desired entry).
    fn align(&mut self) {
        self.error_items.resize(self.errors.len(), None);
    }

    /// The failures, each with the index in `desired` of the entry it is
    /// about (`None`: a stale entry's deletion), in order. A batch answers
    /// each request by its sequence number, so this is exact, not a guess
    /// from the message text.
    pub fn item_errors(mut self) -> Vec<(Option<usize>, Error)> {
        self.align();
        self.error_items.into_iter().zip(self.errors).collect()
    }

    /// No write was needed and nothing failed.
    pub fn is_noop(&self) -> bool {
        self.added == 0 && self.replaced == 0 && self.deleted == 0 && self.errors.is_empty()
    }

    /// Nothing failed.
    pub fn is_ok(&self) -> bool {
        self.errors.is_empty()
    }

    /// What was done when every item succeeded; otherwise
    /// [`Error::Partial`] carrying every item's error and what was applied.
    /// `reconcile(…)?.into_result()?` is the call for code that treats any
    /// failure as failure.
    pub fn into_result(self) -> Result<ReconcileCounts> {
        if self.errors.is_empty() {
            return Ok(self.counts());
        }
        let applied = format!(
            "{} added, {} replaced, {} deleted, {} unchanged",
            self.added, self.replaced, self.deleted, self.unchanged
        );
        Err(Error::Partial {
            context: if self.context.is_empty() {
                "reconcile".into()
            } else {
                self.context
            },
            applied,
            errors: self.errors,
        })
    }

    /// The counts of this report.
    pub fn counts(&self) -> ReconcileCounts {
        ReconcileCounts {
            added: self.added,
            replaced: self.replaced,
            deleted: self.deleted,
            unchanged: self.unchanged,
        }
    }

    /// Add `other`'s counts and errors to this report (e.g. the route,
    /// neighbour and FDB reconciles of one peer set). The context stays
    /// this report's, or becomes `other`'s if this one has none.
    pub fn merge(&mut self, mut other: ReconcileReport) {
        if self.context.is_empty() {
            self.context = std::mem::take(&mut other.context);
        }
        self.added += other.added;
        self.replaced += other.replaced;
        self.deleted += other.deleted;
        self.unchanged += other.unchanged;
        // Indices into `other`'s desired list stay as they are: merge
        // reports of different lists only when the items do not matter.
        self.align();
        for (item, e) in other.item_errors() {
            self.fail(item, e);
        }
    }
}

/// What a reconcile in which nothing failed did
/// ([`ReconcileReport::into_result`]).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ReconcileCounts {
    /// Entries that were missing and were added.
    pub added: usize,
    /// Entries that differed and were replaced.
    pub replaced: usize,
    /// Stale entries that were deleted.
    pub deleted: usize,
    /// Entries that were already right.
    pub unchanged: usize,
}

/// A per-call cache of device name → index, so a reconcile or batch asks
/// the kernel once per device, and never while it holds the socket.
pub(crate) struct NameCache<'h> {
    h: &'h Handle,
    map: RefCell<FxHashMap<String, u32>>,
}

impl<'h> NameCache<'h> {
    pub(crate) fn new(h: &'h Handle) -> Self {
        NameCache {
            h,
            map: Default::default(),
        }
    }

    /// The index of `r`, asking the kernel for a name not seen before.
    pub(crate) fn resolve(&self, r: &LinkRef) -> Result<u32> {
        match r {
            LinkRef::Index(i) => Ok(*i),
            LinkRef::Name(n) => {
                if let Some(i) = self.map.borrow().get(n) {
                    return Ok(*i);
                }
                let i = self.h.links().index_of(n)?;
                self.map.borrow_mut().insert(n.clone(), i);
                Ok(i)
            }
        }
    }

    /// Like [`NameCache::resolve`] but never asks the kernel (for use while
    /// the handle's socket is held): a name not resolved before is an error.
    pub(crate) fn cached(&self, r: &LinkRef) -> Result<u32> {
        match r {
            LinkRef::Index(i) => Ok(*i),
            LinkRef::Name(n) => self
                .map
                .borrow()
                .get(n)
                .copied()
                .ok_or_else(|| Error::Protocol {
                    context: format!("device {n}"),
                    reason: "name not resolved before the batch".into(),
                }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_with_failures_is_an_error() {
        let mut r = ReconcileReport::new("reconcile routes in ns1");
        r.added = 2;
        assert_eq!(r.clone().into_result().unwrap().added, 2);
        r.errors
            .push(Error::invalid("route 10.0.0.1/24", "host bits"));
        let e = r.into_result().unwrap_err();
        assert!(matches!(&e, Error::Partial { errors, .. } if errors.len() == 1));
        let text = e.to_string();
        assert!(
            text.starts_with("reconcile routes in ns1: 1 item failed"),
            "{text}"
        );
        assert!(text.contains("2 added"), "{text}");
        assert!(text.contains("host bits"), "{text}");
    }

    #[test]
    fn merged_reports_add_up() {
        let mut a = ReconcileReport::new("peers");
        a.added = 1;
        let mut b = ReconcileReport::new("fdb");
        b.deleted = 2;
        b.errors.push(Error::invalid("x", "y"));
        a.merge(b);
        assert_eq!((a.added, a.deleted, a.errors.len()), (1, 2, 1));
        assert_eq!(a.context, "peers");
    }
}
