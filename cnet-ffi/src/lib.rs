//! C ABI over cnet-core.
