//! Telling systemd how `serve` is doing (`Type=notify`, sd_notify(3)), through the
//! sd-notify crate: `READY=1` once every listener is bound and the first config is in
//! force, `RELOADING=1` … `READY=1` around a SIGHUP apply, `STATUS=` with the version
//! in force (and the last refusal), `STOPPING=1` at SIGTERM, and `WATCHDOG=1` at half
//! the `WatchdogSec=` interval while the process runs. Outside systemd
//! (`NOTIFY_SOCKET` unset) every call does nothing. A failed notification is logged,
//! never fatal: the proxy serves either way.

use std::time::Duration;

use sd_notify::NotifyState;

fn send(states: &[NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::warn!(error = %e, "cannot notify systemd");
    }
}

/// Serving `version`: ready.
pub fn ready(version: u64) {
    let status = format!("serving config version {version}");
    send(&[NotifyState::Ready, NotifyState::Status(&status)]);
}

/// A reload begins.
pub fn reloading() {
    match sd_notify::NotifyState::monotonic_usec_now() {
        Ok(now) => send(&[NotifyState::Reloading, now]),
        Err(_) => send(&[NotifyState::Reloading]),
    }
}

/// A reload ended with `version` in force; `refused` says why the file was not applied.
pub fn reloaded(version: u64, refused: Option<&str>) {
    let status = match refused {
        None => format!("serving config version {version}"),
        Some(why) => {
            format!("serving config version {version}; the last reload was refused: {why}")
        }
    };
    send(&[NotifyState::Ready, NotifyState::Status(&status)]);
}

/// Draining before exit.
pub fn stopping() {
    send(&[NotifyState::Stopping, NotifyState::Status("draining")]);
}

/// Pings the watchdog at half its interval from a thread of its own, when systemd asked
/// for one (`WatchdogSec=`); the thread ends with the process.
pub fn start_watchdog() {
    let Some(interval) = sd_notify::watchdog_enabled() else {
        return;
    };
    let every = (interval / 2).max(Duration::from_millis(10));
    let started = std::thread::Builder::new()
        .name("evenkeel-watchdog".into())
        .spawn(move || loop {
            send(&[NotifyState::Watchdog]);
            std::thread::sleep(every);
        });
    if let Err(e) = started {
        tracing::error!(error = %e, "cannot start the systemd watchdog thread");
    }
}
