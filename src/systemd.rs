//! `Type=notify` readiness without libsystemd: one datagram to
//! `$NOTIFY_SOCKET`.

use std::os::unix::net::UnixDatagram;

pub fn notify_ready() {
    notify("READY=1");
}

fn notify(state: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let Ok(socket) = UnixDatagram::unbound() else {
        return;
    };
    let bytes = path.as_encoded_bytes();
    let sent = if let Some(name) = bytes.strip_prefix(b"@") {
        // Abstract namespace socket, as systemd uses by default.
        use std::os::linux::net::SocketAddrExt;
        std::os::unix::net::SocketAddr::from_abstract_name(name)
            .and_then(|addr| socket.send_to_addr(state.as_bytes(), &addr))
    } else {
        socket.send_to(state.as_bytes(), &path)
    };
    if let Err(e) = sent {
        tracing::warn!(error = %e, "could not notify systemd");
    }
}

/// The ping interval systemd asks for with `WatchdogSec=`: half of
/// `$WATCHDOG_USEC`, when `$WATCHDOG_PID` (if set) is this process.
pub fn watchdog_interval() -> Option<std::time::Duration> {
    watchdog_interval_from(
        std::env::var("WATCHDOG_USEC").ok().as_deref(),
        std::env::var("WATCHDOG_PID").ok().as_deref(),
        std::process::id(),
    )
}

fn watchdog_interval_from(
    usec: Option<&str>,
    pid: Option<&str>,
    own_pid: u32,
) -> Option<std::time::Duration> {
    let usec: u64 = usec?.trim().parse().ok().filter(|&u| u > 0)?;
    if let Some(pid) = pid {
        if pid.trim().parse::<u32>().ok() != Some(own_pid) {
            return None; // meant for another process of the service
        }
    }
    Some(std::time::Duration::from_micros(usec / 2))
}

/// One `WATCHDOG=1` keep-alive.
pub fn notify_watchdog() {
    notify("WATCHDOG=1");
}

/// Pings the watchdog every `WatchdogSec / 2` from the async runtime that
/// serves the node, when systemd asked for pings: if the runtime wedges,
/// the pings stop and systemd restarts the service.
pub fn spawn_watchdog() -> Option<tokio::task::JoinHandle<()>> {
    watchdog_interval().map(|every| {
        tokio::spawn(async move {
            loop {
                notify_watchdog();
                tokio::time::sleep(every).await;
            }
        })
    })
}

#[cfg(test)]
mod tests {
    use super::watchdog_interval_from;
    use std::time::Duration;

    #[test]
    fn the_watchdog_pings_at_half_the_timeout_for_its_own_pid_only() {
        assert_eq!(
            watchdog_interval_from(Some("30000000"), None, 7),
            Some(Duration::from_secs(15))
        );
        assert_eq!(
            watchdog_interval_from(Some("30000000"), Some("7"), 7),
            Some(Duration::from_secs(15))
        );
        assert_eq!(watchdog_interval_from(Some("30000000"), Some("8"), 7), None);
        assert_eq!(watchdog_interval_from(None, None, 7), None);
        assert_eq!(watchdog_interval_from(Some("0"), None, 7), None);
        assert_eq!(watchdog_interval_from(Some("x"), None, 7), None);
    }
}
