//! cnet-core: container networking over netlink.

pub mod error;

pub use error::{Error, KernelError, Result, ResultExt};
