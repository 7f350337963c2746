//! Ownership of what libcnet hands out: boxed handles (freed by their
//! `_free`) and lists (a `#[repr(C)]` head `{ items, len }` that C reads,
//! followed by hidden storage that owns the items and their strings,
//! freed by the list's `_free`).

use std::any::Any;
use std::ffi::CString;

use crate::boundary::{guard_value, Out};

/// Free a `Box<T>` handed out as a raw pointer; NULL is a no-op.
pub(crate) fn free_box<T>(p: *mut T) {
    guard_value((), || {
        if !p.is_null() {
            // SAFETY: non-NULL pointers given to a `_free` were made by
            // `boxed` for this very type (each `_free` takes its own type,
            // so a wrong free does not compile on the Rust side) and are
            // freed once (ABI contract).
            drop(unsafe { Box::from_raw(p) });
        }
    })
}

/// Hand out `v` as a new heap object through `out`.
pub(crate) fn boxed<T>(out: Out<*mut T>, v: T) {
    out.set(Box::into_raw(Box::new(v)));
}

/// The C-visible head of a list type: `{ const Item *items; size_t len; }`.
pub(crate) trait ListHead: Sized {
    /// The element type.
    type Item;
    /// A head pointing at `len` items.
    fn make(items: *const Self::Item, len: usize) -> Self;
}

/// A list with its storage. `head` first and `repr(C)`, so a pointer to
/// the box is a pointer to the head.
#[repr(C)]
struct ListBox<H: ListHead> {
    head: H,
    items: Vec<H::Item>,
    /// Strings the items point into (a CString's buffer never moves).
    strings: Vec<CString>,
    /// Other storage the items point into (a Vec's heap buffer never
    /// moves while the Vec is not grown), e.g. nexthop group members.
    keep: Option<Box<dyn Any>>,
}

/// Hand out a list through `out`.
pub(crate) fn list_out<H: ListHead>(out: Out<*mut H>, items: Vec<H::Item>, strings: Vec<CString>) {
    list_out_keep(out, items, strings, None)
}

/// Hand out a list whose items also point into `keep`.
pub(crate) fn list_out_keep<H: ListHead>(
    out: Out<*mut H>,
    items: Vec<H::Item>,
    strings: Vec<CString>,
    keep: Option<Box<dyn Any>>,
) {
    let mut b = Box::new(ListBox {
        head: H::make(std::ptr::null(), 0),
        items,
        strings,
        keep,
    });
    b.head = H::make(b.items.as_ptr(), b.items.len());
    out.set(Box::into_raw(b).cast::<H>());
}

/// Free a list made by [`list_out`]; NULL is a no-op.
pub(crate) fn free_list<H: ListHead>(p: *mut H) {
    guard_value((), || {
        if !p.is_null() {
            // SAFETY: `p` was made by `list_out::<H>` (a `Box<ListBox<H>>`
            // whose first field is the head) and is freed once.
            drop(unsafe { Box::from_raw(p.cast::<ListBox<H>>()) });
        }
    })
}

/// Declares a list head type (cbindgen sees a plain struct).
macro_rules! list_head {
    ($name:ident, $item:ty) => {
        impl $crate::out::ListHead for $name {
            type Item = $item;
            fn make(items: *const $item, len: usize) -> Self {
                $name { items, len }
            }
        }
    };
}
pub(crate) use list_head;

/// One object with the strings it points into. `head` first and
/// `repr(C)`, so a pointer to the box is a pointer to the head.
#[repr(C)]
struct OneBox<T> {
    head: T,
    strings: Vec<CString>,
    /// Other storage the object points into (see `ListBox::keep`).
    keep: Option<Box<dyn Any>>,
}

/// Hand out one object whose string fields point into `strings`.
pub(crate) fn one_out<T>(out: Out<*mut T>, head: T, strings: Vec<CString>) {
    one_out_keep(out, head, strings, None)
}

/// Hand out one object that also points into `keep`.
pub(crate) fn one_out_keep<T>(
    out: Out<*mut T>,
    head: T,
    strings: Vec<CString>,
    keep: Option<Box<dyn Any>>,
) {
    let b = Box::new(OneBox {
        head,
        strings,
        keep,
    });
    out.set(Box::into_raw(b).cast::<T>());
}

/// Free an object made by [`one_out`]; NULL is a no-op.
pub(crate) fn free_one<T>(p: *mut T) {
    guard_value((), || {
        if !p.is_null() {
            // SAFETY: `p` was made by `one_out::<T>` and is freed once.
            drop(unsafe { Box::from_raw(p.cast::<OneBox<T>>()) });
        }
    })
}

/// Keeps strings alive for the C structs that point into them.
#[derive(Debug, Default)]
pub(crate) struct Strings(pub(crate) Vec<CString>);

impl Strings {
    /// A pointer to a copy of `s`, valid while the strings live.
    pub(crate) fn add(&mut self, s: &str) -> *const std::ffi::c_char {
        let c = crate::boundary::c_string(s);
        let p = c.as_ptr();
        self.0.push(c);
        p
    }
}

/// Free a string handed out by `CString::into_raw`; NULL is a no-op.
pub(crate) fn free_string(s: *mut std::ffi::c_char) {
    guard_value((), || {
        if !s.is_null() {
            // SAFETY: `s` was made by `CString::into_raw` in this library
            // (the only strings handed out as `char *`) and is freed once.
            drop(unsafe { CString::from_raw(s) });
        }
    })
}
