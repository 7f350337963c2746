//! cnet-core: container networking over netlink.
