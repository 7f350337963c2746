//! Ownership of what libcnet hands out, by type (rustls-ffi's `Castable`
//! design): every C type handed out as a pointer implements [`Castable`],
//! which names the Rust value the pointer really points to
//! ([`Castable::RustType`]) and how C owns it ([`Castable::Ownership`]).
//! The functions that make and free such pointers are implemented only for
//! the matching ownership and take the value as the type's `RustType`, so
//!
//! - a `_free` can only free the kind of object its type is handed out as
//!   (a handle, one object with its strings, a list): [`free_box`] of a
//!   `cnet_lease` frees a `OneBox<cnet_lease>`, never a bare `cnet_lease`;
//! - a value can only be handed out as the type C will free it as:
//!   `boxed(out, lease)` for a `*mut cnet_lease` out-parameter does not
//!   compile, `one_out(out, lease, strings)` does;
//! - a type with no ownership declared (an input struct C owns, a list
//!   item) cannot be handed out or freed at all.
//!
//! ```text
//!  C type                RustType            Ownership       made by         freed by
//!  cnet_pool, cnet_node  itself              OwnershipBox    boxed           free_box
//!  cnet_lease, …         OneBox<cnet_lease>  OwnershipBox    one_out(_keep)  free_box
//!  cnet_lease_array, …   ListBox<…array>     OwnershipBox    list_out(_keep) free_box
//! ```
//!
//! Every object libcnet hands out today is owned by one `Box` (a handle
//! that is shared, `cnet_handle`, boxes its own `Arc`), so `OwnershipBox`
//! is the only kind. A type handed out as an `Arc` (C holding a counted
//! reference) would get an `OwnershipArc` marker with its own make/free
//! functions, and `free_box` would then not compile for it.
//!
//! Reading stays generic ([`crate::boundary::obj`] turns any `*const T`
//! into `&T`): a read transfers no ownership, a handle's pointer type
//! already names its object, and the heads of single objects and lists
//! are the first field of their box, so reading them as the C type is what
//! C does too.
//!
//! What does not compile (kept as comments: the module is private, so a
//! `compile_fail` doc test could not reach it):
//!
//! ```text
//! free_box(p /* *mut cnet_pool_config */)  // an input struct: no Castable impl
//! boxed(out /* Out<*mut cnet_lease> */, lease)  // expected OneBox<cnet_lease>, found cnet_lease
//! one_out(out /* Out<*mut cnet_pool> */, pool, vec![])  // cnet_pool's RustType is not OneBox<cnet_pool>
//! ```

use std::any::Any;
use std::ffi::CString;

use crate::boundary::{guard_value, Out};

/// Ties a C type to the Rust value behind its pointers and to how C owns
/// it.
///
/// # Safety
///
/// A `*mut Self` handed out by this module points to a `RustType` whose
/// first bytes are a `Self`: `RustType` is `Self`, or a `#[repr(C)]`
/// struct whose first field is a `Self` ([`OneBox`], [`ListBox`]). C
/// reads the pointer as a `Self`; the free casts it back to `RustType`.
/// Implement it with [`castable!`] or [`list_head!`], not by hand.
pub(crate) unsafe trait Castable {
    /// How C owns a pointer to this type ([`OwnershipBox`]).
    type Ownership;
    /// What the pointer points to.
    type RustType;
}

/// C owns one `Box<RustType>`: made by [`boxed`], [`one_out`] or
/// [`list_out`], freed once by [`free_box`] in the type's `_free`.
pub(crate) enum OwnershipBox {}

/// Declares the ownership of handle types (`castable!(box cnet_pool)`:
/// the pointer is a `Box` of the type itself) and of single objects that
/// carry their strings (`castable!(one cnet_lease)`: a `OneBox`).
macro_rules! castable {
    (box $name:ty) => {
        // SAFETY: RustType is the type itself.
        unsafe impl $crate::out::Castable for $name {
            type Ownership = $crate::out::OwnershipBox;
            type RustType = $name;
        }
    };
    (one $name:ty) => {
        // SAFETY: OneBox is repr(C) with the head first.
        unsafe impl $crate::out::Castable for $name {
            type Ownership = $crate::out::OwnershipBox;
            type RustType = $crate::out::OneBox<$name>;
        }
    };
}
pub(crate) use castable;

/// A new heap object for C to own; free it with [`free_box`].
pub(crate) fn to_boxed_mut_ptr<C>(v: C::RustType) -> *mut C
where
    C: Castable<Ownership = OwnershipBox>,
{
    // The cast is sound by Castable's contract (a `RustType` starts with a `C`).
    Box::into_raw(Box::new(v)).cast::<C>()
}

/// Hand out `v` as a new heap object through `out`.
pub(crate) fn boxed<C>(out: Out<*mut C>, v: C::RustType)
where
    C: Castable<Ownership = OwnershipBox>,
{
    out.set(to_boxed_mut_ptr(v));
}

/// Free what [`to_boxed_mut_ptr`] made for `C` (any `Box`-owned type:
/// handle, single object or list); NULL is a no-op.
pub(crate) fn free_box<C>(p: *mut C)
where
    C: Castable<Ownership = OwnershipBox>,
{
    guard_value((), || {
        if !p.is_null() {
            // SAFETY: non-NULL pointers given to a `_free` were made by
            // `to_boxed_mut_ptr::<C>` from a `C::RustType` (the only way
            // this module hands out a `*mut C`, and each `_free` takes its
            // own type) and are freed once (ABI contract).
            drop(unsafe { Box::from_raw(p.cast::<C::RustType>()) });
        }
    })
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
pub(crate) struct ListBox<H: ListHead> {
    head: H,
    items: Vec<H::Item>,
    /// Strings the items point into (a CString's buffer never moves).
    strings: Vec<CString>,
    /// Other storage the items point into (a Vec's heap buffer never
    /// moves while the Vec is not grown), e.g. nexthop group members.
    keep: Option<Box<dyn Any>>,
}

/// Hand out a list through `out`.
pub(crate) fn list_out<H>(out: Out<*mut H>, items: Vec<H::Item>, strings: Vec<CString>)
where
    H: ListHead + Castable<Ownership = OwnershipBox, RustType = ListBox<H>>,
{
    list_out_keep(out, items, strings, None)
}

/// Hand out a list whose items also point into `keep`.
pub(crate) fn list_out_keep<H>(
    out: Out<*mut H>,
    items: Vec<H::Item>,
    strings: Vec<CString>,
    keep: Option<Box<dyn Any>>,
) where
    H: ListHead + Castable<Ownership = OwnershipBox, RustType = ListBox<H>>,
{
    let mut b = Box::new(ListBox {
        head: H::make(std::ptr::null(), 0),
        items,
        strings,
        keep,
    });
    // The items' heap buffer does not move when the box is moved.
    b.head = H::make(b.items.as_ptr(), b.items.len());
    out.set(Box::into_raw(b).cast::<H>());
}

/// Declares a list head type (cbindgen sees a plain struct) and its
/// ownership: a `Box<ListBox<head>>`, freed by [`free_box`].
macro_rules! list_head {
    ($name:ident, $item:ty) => {
        impl $crate::out::ListHead for $name {
            type Item = $item;
            fn make(items: *const $item, len: usize) -> Self {
                $name { items, len }
            }
        }
        // SAFETY: ListBox is repr(C) with the head first.
        unsafe impl $crate::out::Castable for $name {
            type Ownership = $crate::out::OwnershipBox;
            type RustType = $crate::out::ListBox<$name>;
        }
    };
}
pub(crate) use list_head;

/// One object with the strings it points into. `head` first and
/// `repr(C)`, so a pointer to the box is a pointer to the head.
#[repr(C)]
pub(crate) struct OneBox<T> {
    head: T,
    strings: Vec<CString>,
    /// Other storage the object points into (see `ListBox::keep`).
    keep: Option<Box<dyn Any>>,
}

/// Hand out one object whose string fields point into `strings`.
pub(crate) fn one_out<C>(out: Out<*mut C>, head: C, strings: Vec<CString>)
where
    C: Castable<Ownership = OwnershipBox, RustType = OneBox<C>>,
{
    one_out_keep(out, head, strings, None)
}

/// Hand out one object that also points into `keep`.
pub(crate) fn one_out_keep<C>(
    out: Out<*mut C>,
    head: C,
    strings: Vec<CString>,
    keep: Option<Box<dyn Any>>,
) where
    C: Castable<Ownership = OwnershipBox, RustType = OneBox<C>>,
{
    boxed(
        out,
        OneBox {
            head,
            strings,
            keep,
        },
    );
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::boundary::out_ptr;

    /// A list head and an item, as the object modules declare them.
    #[repr(C)]
    struct nums {
        items: *const u32,
        len: usize,
    }
    list_head!(nums, u32);

    #[repr(C)]
    struct thing {
        name: *const std::ffi::c_char,
    }
    castable!(one thing);

    struct handle(Vec<u8>);
    castable!(box handle);

    #[test]
    fn each_kind_is_made_and_freed_through_its_own_type() {
        let mut l: *mut nums = std::ptr::null_mut();
        list_out(out_ptr(&mut l, "l").unwrap(), vec![1, 2, 3], vec![]);
        // SAFETY: just made, a valid head.
        let head = unsafe { &*l };
        // SAFETY: `len` items live at `items` until the free.
        assert_eq!(
            unsafe { std::slice::from_raw_parts(head.items, head.len) },
            [1, 2, 3]
        );
        free_box(l);

        let mut s = Strings::default();
        let name = s.add("eth0");
        let mut t: *mut thing = std::ptr::null_mut();
        one_out(out_ptr(&mut t, "t").unwrap(), thing { name }, s.0);
        // SAFETY: the head is first; its string lives in the box.
        let n = unsafe { std::ffi::CStr::from_ptr((*t).name) };
        assert_eq!(n.to_str().unwrap(), "eth0");
        free_box(t);

        let h = to_boxed_mut_ptr::<handle>(handle(vec![7; 16]));
        // SAFETY: a box of the handle itself.
        assert_eq!(unsafe { &*h }.0.len(), 16);
        free_box(h);
        free_box(std::ptr::null_mut::<handle>());
    }
}
