//! An undo stack for multi-step operations: each finished step pushes how
//! to take it back; an error (or a panic) unwinds them in reverse.
//!
//! ```text
//!   push("delete veth vethXXXX")  push("release 10.244.1.2")   step 3 fails
//!        │                              │                          │
//!        ▼                              ▼                          ▼
//!   [ delete veth ][ release addr ] ──fail(err)──▶ release addr, delete veth ──▶ err
//!                                                  (an undo that fails is named
//!                                                   in err's context, never hides it)
//! ```
//!
//! Dropped without [`Undo::commit`] or [`Undo::fail`] (a panic in a later
//! step), it still unwinds, silently: nothing half-made is left behind.

use crate::error::Error;
use crate::Result;

type Step<'a> = (String, Box<dyn FnOnce() -> Result<()> + 'a>);

/// Finished steps and how to undo each; see the [module docs](self).
pub(crate) struct Undo<'a> {
    steps: Vec<Step<'a>>,
}

impl std::fmt::Debug for Undo<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.steps.iter().map(|(d, _)| d))
            .finish()
    }
}

impl<'a> Undo<'a> {
    pub(crate) fn new() -> Self {
        Undo {
            steps: Vec::with_capacity(4),
        }
    }

    /// Record a finished step: `what` describes the undo ("delete veth X"),
    /// `undo` performs it. An undo finding its object already gone should
    /// succeed.
    pub(crate) fn push(&mut self, what: impl Into<String>, undo: impl FnOnce() -> Result<()> + 'a) {
        self.steps.push((what.into(), Box::new(undo)));
    }

    /// Everything succeeded: forget the undo steps.
    pub(crate) fn commit(mut self) {
        self.steps.clear();
    }

    /// Undo every step, newest first; returns the undos that failed, as
    /// "what: error".
    pub(crate) fn unwind(&mut self) -> Vec<String> {
        let mut failed = Vec::new();
        while let Some((what, undo)) = self.steps.pop() {
            if let Err(e) = undo() {
                failed.push(format!("{what}: {e}"));
            }
        }
        failed
    }

    /// A step failed with `err`: unwind, and return `err` with `context`
    /// prefixed, naming any undo that failed as well (the original error
    /// keeps its variant, errno and kernel text).
    pub(crate) fn fail(mut self, err: Error, context: &str) -> Error {
        let failed = self.unwind();
        if failed.is_empty() {
            err.with_context(context)
        } else {
            err.with_context(format!(
                "{context} [rollback incomplete, left behind: {}]",
                failed.join("; ")
            ))
        }
    }
}

impl Drop for Undo<'_> {
    fn drop(&mut self) {
        // Reached with steps left only when a panic interrupted the
        // operation: unwind, ignoring failures (there is no one to tell).
        let _ = self.unwind();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[test]
    fn unwinds_newest_first_and_reports_failed_undos() {
        let log = Mutex::new(Vec::new());
        let mut u = Undo::new();
        u.push("one", || {
            log.lock().unwrap().push(1);
            Ok(())
        });
        u.push("two", || {
            log.lock().unwrap().push(2);
            Err(Error::invalid("undo two", "boom"))
        });
        u.push("three", || {
            log.lock().unwrap().push(3);
            Ok(())
        });
        let e = u.fail(
            Error::AlreadyExists {
                context: "step four".into(),
                kernel: None,
            },
            "attach c1/eth0",
        );
        assert_eq!(*log.lock().unwrap(), vec![3, 2, 1]);
        assert!(matches!(e, Error::AlreadyExists { .. }), "variant kept");
        let text = e.to_string();
        assert!(
            text.starts_with("attach c1/eth0 [rollback incomplete"),
            "{text}"
        );
        assert!(
            text.contains("two: undo two: invalid argument: boom"),
            "{text}"
        );
        assert!(text.contains("step four: already exists"), "{text}");
    }

    #[test]
    fn commit_forgets_and_drop_unwinds() {
        let log = Mutex::new(Vec::new());
        let mut u = Undo::new();
        u.push("a", || {
            log.lock().unwrap().push("a");
            Ok(())
        });
        u.commit();
        let mut u = Undo::new();
        u.push("b", || {
            log.lock().unwrap().push("b");
            Ok(())
        });
        drop(u);
        assert_eq!(*log.lock().unwrap(), vec!["b"]);
    }
}
