//! The open-file limit: every client connection, peer link and store file is a descriptor, and
//! the usual default soft limit (1,024) is far below the default `max_connections` (10,000).
//!
//! At start the node raises its soft `RLIMIT_NOFILE` to the hard limit (which any process may
//! do), logs the limit it ends up with, and, if that still cannot hold the configured client
//! connections plus the peer links, the admin endpoint and the store's files, lowers
//! `max_connections` to what fits and says so. A node over its limit would otherwise fail
//! `accept` with EMFILE in a loop, or fail to open a store file mid-flush.

/// Descriptors kept for everything but client connections: the store (sled's files, the lock),
/// the log, the listening sockets, the runtime's own (epoll, eventfds), the places dataset and
/// upstream sockets, with room to spare.
pub const RESERVED: u64 = 128;

/// Descriptors one peer link may take: its own dial and an inbound connection while they race.
pub const PER_PEER: u64 = 2;

/// The limit as it was found and as it was left.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    pub soft: u64,
    pub hard: u64,
}

/// Raises the soft open-file limit to the hard limit; returns the limit now in force, or
/// `None` where it cannot be read.
pub fn raise() -> Option<Limit> {
    #[cfg(unix)]
    {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit and setrlimit only read and write the struct passed by pointer.
        if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
            return None;
        }
        if lim.rlim_cur < lim.rlim_max {
            let wanted = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &wanted) } == 0 {
                lim = wanted;
            } else {
                tracing::warn!(
                    soft = lim.rlim_cur,
                    hard = lim.rlim_max,
                    error = %std::io::Error::last_os_error(),
                    "cannot raise the open-file limit"
                );
            }
        }
        // rlim_t is u64 on Linux but not on every unix.
        #[allow(clippy::unnecessary_cast)]
        Some(Limit {
            soft: lim.rlim_cur as u64,
            hard: lim.rlim_max as u64,
        })
    }
    #[cfg(not(unix))]
    None
}

/// The most client connections that fit under `soft` descriptors next to `peers` links:
/// `configured` if it fits, else what does (at least 1).
pub fn fit(configured: usize, peers: usize, soft: u64) -> usize {
    let others = RESERVED + PER_PEER * peers as u64 + crate::admin::MAX_CONNECTIONS as u64;
    let room = soft.saturating_sub(others).max(1);
    (configured as u64).min(room) as usize
}

/// Raises the limit, logs it, and returns the `max_connections` to use (see the module docs).
pub fn prepare(configured: usize, peers: usize) -> usize {
    let Some(limit) = raise() else {
        tracing::warn!("cannot read the open-file limit; keeping max_connections as configured");
        return configured;
    };
    let allowed = fit(configured, peers, limit.soft);
    tracing::info!(
        soft = limit.soft,
        hard = limit.hard,
        max_connections = allowed,
        "open-file limit"
    );
    if allowed < configured {
        tracing::warn!(
            limit = limit.soft,
            configured,
            lowered_to = allowed,
            "the open-file limit cannot hold limits.max_connections plus peers and store files; \
             lowering max_connections (raise the hard limit, e.g. LimitNOFILE= in systemd)"
        );
    }
    allowed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_are_lowered_only_when_they_do_not_fit() {
        let others = RESERVED + 2 * PER_PEER + crate::admin::MAX_CONNECTIONS as u64;
        assert_eq!(fit(1000, 2, 1_048_576), 1000);
        assert_eq!(fit(1000, 2, 1000 + others), 1000);
        assert_eq!(fit(1000, 2, 999 + others), 999);
        assert_eq!(fit(1000, 2, 256), (256 - others) as usize);
        assert_eq!(fit(1000, 2, 10), 1, "never zero");
    }
}
