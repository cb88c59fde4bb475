//! Choosing local ports for active opens.

use std::net::{IpAddr, SocketAddr};

/// Picks the local port of an active open.
///
/// The dataplane plugs in one that picks only ports whose RSS hash steers the replies to
/// the calling core's queue; the default walks the ephemeral range.
pub trait PortChooser: Send {
    /// A free port for a connection from `local` to `remote`; `in_use(port)` tells whether
    /// that 4-tuple is taken. `None` when every candidate is taken.
    fn choose(
        &mut self,
        local: IpAddr,
        remote: SocketAddr,
        in_use: &mut dyn FnMut(u16) -> bool,
    ) -> Option<u16>;
}

/// Walks a port range round-robin, like Linux's `ip_local_port_range` (32768–60999).
#[derive(Debug, Clone)]
pub struct SequentialPorts {
    first: u16,
    last: u16,
    next: u16,
}

impl SequentialPorts {
    /// Ports `first..=last` (`first` > 0).
    pub fn new(first: u16, last: u16) -> Self {
        let first = first.max(1);
        SequentialPorts {
            first,
            last: last.max(first),
            next: first,
        }
    }
}

impl SequentialPorts {
    /// Walks the range round-robin from where the last walk stopped and returns the first
    /// port `accept` takes, or `None` after one full turn. Other choosers build on it
    /// (the dataplane's RSS-aware one accepts only ports that hash to its queue).
    pub fn scan(&mut self, mut accept: impl FnMut(u16) -> bool) -> Option<u16> {
        let span = u32::from(self.last - self.first) + 1;
        for _ in 0..span {
            let port = self.next;
            self.next = if port == self.last {
                self.first
            } else {
                port + 1
            };
            if accept(port) {
                return Some(port);
            }
        }
        None
    }
}

impl Default for SequentialPorts {
    fn default() -> Self {
        SequentialPorts::new(32768, 60999)
    }
}

impl PortChooser for SequentialPorts {
    fn choose(
        &mut self,
        _local: IpAddr,
        _remote: SocketAddr,
        in_use: &mut dyn FnMut(u16) -> bool,
    ) -> Option<u16> {
        self.scan(|port| !in_use(port))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, SocketAddrV4};

    #[test]
    fn skips_ports_in_use_and_reports_exhaustion() {
        let mut p = SequentialPorts::new(10, 12);
        let r = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 80));
        let l = IpAddr::V4(Ipv4Addr::LOCALHOST);
        assert_eq!(p.choose(l, r, &mut |port| port == 10), Some(11));
        assert_eq!(p.choose(l, r, &mut |_| false), Some(12));
        assert_eq!(p.choose(l, r, &mut |_| false), Some(10), "wraps around");
        assert_eq!(p.choose(l, r, &mut |_| true), None);
    }
}
