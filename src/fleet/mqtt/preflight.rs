//! Before the first connection: the descriptors and local ports a run needs, against the
//! limits in force, with the soft descriptor limit raised to the hard one. A run that cannot
//! fit is refused up front with what to change, instead of failing midway.

use std::fmt;

/// Descriptors a process needs beyond its connections (runtime, listeners, files, stdio).
const OVERHEAD_FDS: u64 = 256;

/// What a process needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Need {
    /// Sockets this process holds open at once (device connections plus accepted ones).
    pub(crate) sockets: u64,
    /// Outgoing connections this process opens (each takes a local port).
    pub(crate) outgoing: u64,
    /// Local source addresses the outgoing connections are spread over (at least 1).
    pub sources: u64,
}

/// The limits in force and whether the need fits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Report {
    /// What was asked.
    pub(crate) need: Need,
    /// Descriptors needed.
    pub(crate) fds: u64,
    /// The soft descriptor limit (after raising it).
    pub(crate) soft: u64,
    /// The hard descriptor limit.
    pub(crate) hard: u64,
    /// The ephemeral port range.
    pub(crate) ports: (u32, u32),
    /// Outgoing connections per source address.
    pub(crate) per_source: u64,
}

/// Why a run does not fit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum PreflightError {
    /// Too few descriptors.
    #[error("this run needs {need} file descriptors but the hard limit is {hard}: raise it (`ulimit -Hn {need}` as root, LimitNOFILE= in a systemd unit, `nofile` in /etc/security/limits.conf) or split the fleet with --shard i/n over several processes")]
    Descriptors {
        /// Needed.
        need: u64,
        /// The hard limit.
        hard: u64,
    },
    /// Too few ephemeral ports per source address.
    #[error("{per_source} outgoing connections per source address exceed the {ports} ephemeral ports of net.ipv4.ip_local_port_range: spread them over more source addresses (--sources) or widen the range (sysctl -w net.ipv4.ip_local_port_range=\"1024 65535\")")]
    Ports {
        /// Connections per source address.
        per_source: u64,
        /// Ports in the range.
        ports: u64,
    },
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "preflight: {} sockets need {} descriptors (soft limit {}, hard {}); {} outgoing connections over {} source address(es) = {} per address (ephemeral ports {}-{}, {} available)",
            self.need.sockets,
            self.fds,
            self.soft,
            self.hard,
            self.need.outgoing,
            self.need.sources,
            self.per_source,
            self.ports.0,
            self.ports.1,
            self.ports.1.saturating_sub(self.ports.0) + 1,
        )
    }
}

/// Raises the soft descriptor limit to the hard one, then checks `need` against the limits.
pub(crate) fn check(need: Need) -> Result<Report, PreflightError> {
    let (soft, hard) = raise_fd_limit();
    let ports = port_range();
    evaluate(need, soft, hard, ports)
}

/// The check itself, on given limits.
pub(crate) fn evaluate(
    need: Need,
    soft: u64,
    hard: u64,
    ports: (u32, u32),
) -> Result<Report, PreflightError> {
    let fds = need.sockets + OVERHEAD_FDS;
    // The soft limit is the one in force (raised to the hard one when allowed).
    if fds > soft {
        return Err(PreflightError::Descriptors { need: fds, hard });
    }
    let per_source = need.outgoing.div_ceil(need.sources.max(1));
    let available = (ports.1.saturating_sub(ports.0) + 1) as u64;
    // Leave a tenth of the range for other programs and TIME_WAIT sockets.
    if per_source > available - available / 10 {
        return Err(PreflightError::Ports {
            per_source,
            ports: available,
        });
    }
    Ok(Report {
        need,
        fds,
        soft,
        hard,
        ports,
        per_source,
    })
}

/// Raises RLIMIT_NOFILE's soft limit to its hard limit; answers (soft, hard) after.
fn raise_fd_limit() -> (u64, u64) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed by pointer.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return (1024, 1024);
        }
        if lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                lim = raised;
            }
        }
    }
    (lim.rlim_cur, lim.rlim_max)
}

/// `net.ipv4.ip_local_port_range` (Linux's default when unreadable).
fn port_range() -> (u32, u32) {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|t| {
            let mut it = t.split_whitespace().map(|x| x.parse().ok());
            Some((it.next()??, it.next()??))
        })
        .unwrap_or((32768, 60999))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fits_and_refuses_with_advice() {
        let need = Need {
            sockets: 15_000,
            outgoing: 15_000,
            sources: 4,
        };
        let r = evaluate(need, 20_000, 20_000, (32768, 60999)).unwrap();
        assert_eq!(r.per_source, 3750);
        let e = evaluate(
            Need {
                sockets: 30_000,
                ..need
            },
            20_000,
            20_000,
            (32768, 60999),
        )
        .unwrap_err();
        assert!(e.to_string().contains("--shard"), "{e}");
        let e = evaluate(Need { sources: 1, ..need }, 20_000, 20_000, (60000, 61000)).unwrap_err();
        assert!(matches!(
            e,
            PreflightError::Ports {
                per_source: 15_000,
                ..
            }
        ));
    }
}
