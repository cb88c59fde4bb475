//! The AF_XDP dataplane: XSK sockets and UMEM, per-core busy-poll workers and the `c10m` daemon. Not built yet: see the AF_XDP dataplane issue.
#![deny(missing_docs)]
