//! cnet-core: container networking over netlink.

pub mod error;
pub mod ipam;

pub use error::{Error, KernelError, Result, ResultExt};
