//! Process resources `serve` sets at start: its open-files limit raised to the hard one,
//! and no transparent huge pages ([`disable_transparent_huge_pages`]).
//!
//! The open-files limit: every client connection, backend connection and listener is a
//! descriptor, and the soft `RLIMIT_NOFILE` many systems start processes with (1024) is
//! far below what `listener.max_connections` (10,000 by default) needs. A process that
//! runs out cannot accept (EMFILE), so a flood of connections anywhere — the admin port
//! in issue 12 — stops the proxy too. The soft limit may be raised up to the hard limit without
//! privileges, which is what HAProxy does at start and what NGINX's
//! `worker_rlimit_nofile` is for; evenkeel does it unconditionally, then logs the limit
//! in force at debug level. Caps on connections (`listener.max_connections`,
//! `[admin] max_connections`) keep each listener's share of it bounded.

use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};

/// Raises the soft open-files limit to the hard limit (when the hard limit is finite
/// and higher) and returns the soft limit now in force (`None`: unlimited).
pub fn raise_open_files_limit() -> Option<u64> {
    let limit = getrlimit(Resource::Nofile);
    if let (Some(current), Some(maximum)) = (limit.current, limit.maximum) {
        if current < maximum {
            let raised = Rlimit {
                current: Some(maximum),
                maximum: Some(maximum),
            };
            match setrlimit(Resource::Nofile, raised) {
                Ok(()) => {
                    tracing::debug!(from = current, to = maximum, "raised the open-files limit")
                }
                // macOS refuses soft limits above OPEN_MAX even under a higher hard limit.
                Err(e) => {
                    tracing::debug!(error = %e, current, maximum, "could not raise the open-files limit")
                }
            }
        }
    }
    let in_force = getrlimit(Resource::Nofile);
    tracing::debug!(
        soft = ?in_force.current,
        hard = ?in_force.maximum,
        "open-files limit in force"
    );
    in_force.current
}

/// Turns transparent huge pages off for this process (Linux; elsewhere nothing).
///
/// mimalloc, the binary's allocator, asks the kernel for huge pages on its arena
/// (`madvise(MADV_HUGEPAGE)`), and with the kernel's usual `madvise` setting
/// khugepaged then folds sparsely used 2 MiB stretches of it into whole huge pages in
/// the background: about ten seconds after 9,000 keep-alive connections had turned
/// idle, the arena's resident memory jumped by 12–15 MiB and stayed (from 507 to 2,100
/// bytes per idle connection; bench/idle_connections.py, docs/benchmarks.md). NGINX and
/// HAProxy, on glibc's allocator, never ask for huge pages, so under `madvise` they get
/// none; with this evenkeel holds only the memory it uses, as they do. A same-run
/// benchmark showed no difference in CPU per request (26.9 µs with, 26.4 without).
/// Failure (an old kernel) is logged at debug level and changes nothing else.
pub fn disable_transparent_huge_pages() {
    #[cfg(target_os = "linux")]
    match rustix::thread::disable_transparent_huge_pages(true) {
        Ok(()) => tracing::debug!("transparent huge pages off for this process"),
        Err(e) => tracing::debug!(error = %e, "could not turn transparent huge pages off"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_soft_limit_is_raised_and_reported() {
        let before = getrlimit(Resource::Nofile);
        let soft = raise_open_files_limit();
        assert_eq!(soft, getrlimit(Resource::Nofile).current);
        assert!(soft.unwrap_or(u64::MAX) >= before.current.unwrap_or(u64::MAX));
        if cfg!(target_os = "linux") {
            assert_eq!(
                soft, before.maximum,
                "Linux lets the soft limit reach the hard one"
            );
        }
    }
}
