//! Owns loopback port selection: free ports for servers the harness starts, and the check that a
//! requested port is actually free before anything is started on it.

use std::net::{Ipv4Addr, SocketAddrV4, TcpListener};

/// Errors choosing or checking ports.
#[derive(Debug, thiserror::Error)]
pub enum PortError {
    #[error(
        "port {port} on 127.0.0.1 is already in use ({source}); stop what holds it or choose another"
    )]
    InUse { port: u16, source: std::io::Error },
    #[error("no free loopback port could be found: {0}")]
    NoneFree(std::io::Error),
}

/// Fails with a clear error when `port` cannot be bound on 127.0.0.1.
pub fn check_free(port: u16) -> Result<(), PortError> {
    TcpListener::bind(SocketAddrV4::new(Ipv4Addr::LOCALHOST, port))
        .map(drop)
        .map_err(|source| PortError::InUse { port, source })
}

/// Returns `n` distinct ports that were free a moment ago. The kernel hands out ephemeral ports
/// round-robin, so a just-released port is unlikely to be reused by someone else before we bind
/// it; every caller still re-checks with [`check_free`] right before starting a server.
pub fn free_ports(n: usize) -> Result<Vec<u16>, PortError> {
    // Hold all listeners until every port is chosen so the same port is not returned twice.
    let listeners = (0..n)
        .map(|_| TcpListener::bind(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0)))
        .collect::<Result<Vec<_>, _>>()
        .map_err(PortError::NoneFree)?;
    listeners
        .iter()
        .map(|l| {
            l.local_addr()
                .map(|a| a.port())
                .map_err(PortError::NoneFree)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_ports_are_distinct_and_bindable() {
        let ports = free_ports(3).unwrap();
        assert_eq!(ports.len(), 3);
        assert!(ports[0] != ports[1] && ports[1] != ports[2] && ports[0] != ports[2]);
        for p in ports {
            check_free(p).unwrap();
        }
    }

    #[test]
    fn a_bound_port_is_reported_in_use() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let err = check_free(port).unwrap_err();
        assert!(err.to_string().contains(&port.to_string()), "{err}");
    }
}
