//! `--port` and `--host`: which connections' events are written, by their addresses. The
//! kernel matches a connection's addresses when it first sees its socket and copies nothing
//! more of one that does not match (`probectl_common::AddressFilter`, counted there); what it
//! copied before (calls whose socket was not known yet), or all when the selection is larger
//! than its filter, the pipeline drops here before the output, counted (`events_not_selected`,
//! `bytes_not_selected`).

use std::net::{IpAddr, SocketAddr};

/// The addresses a connection must have at one of its ends.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AddressSelection {
    /// Either end's port is one of these (none: any port).
    pub ports: Vec<u16>,
    /// Either end's address is one of these (none: any address).
    pub hosts: Vec<IpAddr>,
}

/// What the selection says of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Selected,
    NotSelected,
    /// Its addresses are not known (no socket, or the kernel has no BTF): not written.
    Unknown,
}

fn parse(address: &str) -> Option<SocketAddr> {
    address.parse().ok()
}

impl AddressSelection {
    pub fn verdict(&self, local: Option<&str>, remote: Option<&str>) -> Verdict {
        let (Some(local), Some(remote)) = (local.and_then(parse), remote.and_then(parse)) else {
            return Verdict::Unknown;
        };
        let ends = [local, remote];
        let port = self.ports.is_empty() || ends.iter().any(|end| self.ports.contains(&end.port()));
        let host = self.hosts.is_empty()
            || ends.iter().any(|end| {
                let ip = match end.ip() {
                    IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
                    v4 => v4,
                };
                self.hosts.contains(&ip)
            });
        if port && host {
            Verdict::Selected
        } else {
            Verdict::NotSelected
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn either_end_matches() {
        let selection = AddressSelection {
            ports: vec![8443],
            hosts: vec!["10.0.0.2".parse().expect("ip")],
        };
        let verdict = |l, r| selection.verdict(Some(l), Some(r));
        assert_eq!(
            verdict("10.0.0.2:8443", "10.0.0.9:40000"),
            Verdict::Selected
        );
        assert_eq!(
            verdict("10.0.0.9:40000", "10.0.0.2:8443"),
            Verdict::Selected
        );
        assert_eq!(
            verdict("10.0.0.9:40000", "10.0.0.3:8443"),
            Verdict::NotSelected
        );
        assert_eq!(
            verdict("10.0.0.9:40000", "10.0.0.2:443"),
            Verdict::NotSelected
        );
        assert_eq!(
            verdict("[::ffff:10.0.0.2]:8443", "[::1]:1"),
            Verdict::Selected
        );
        assert_eq!(
            selection.verdict(None, Some("10.0.0.2:8443")),
            Verdict::Unknown
        );
        let any_host = AddressSelection {
            ports: vec![443],
            hosts: vec![],
        };
        assert_eq!(
            any_host.verdict(Some("[::1]:443"), Some("[::1]:5")),
            Verdict::Selected
        );
    }
}
