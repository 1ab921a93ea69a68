//! The systemd notification protocol (sd_notify(3)): state changes sent as
//! datagrams to the Unix socket named by `$NOTIFY_SOCKET`, so a unit with
//! `Type=notify` knows when Ward is ready, reloading and stopping.
//!
//! Owns: the messages and their order. `READY=1` once the listeners are
//! bound and the queue is open; `RELOADING=1` with `MONOTONIC_USEC=` (the
//! `CLOCK_MONOTONIC` time in microseconds, which `Type=notify-reload`
//! requires) when a SIGHUP reload starts, and `READY=1` when it ended
//! (applied or refused); `STOPPING=1` when shutdown begins; `STATUS=` lines
//! with a short state, never content or configuration values.
//!
//! Without `$NOTIFY_SOCKET` (not started by systemd) every call does
//! nothing. A name starting with `@` is a socket in the abstract namespace.
//! A send that fails is logged at debug and otherwise ignored: the
//! notification is a courtesy to the service manager, not a reason to stop
//! serving mail.

use std::os::unix::net::UnixDatagram;

/// `READY=1` with a status line.
pub fn ready(status: &str) {
    send(&format!("READY=1\nSTATUS={status}"));
}

/// `RELOADING=1` with the monotonic timestamp systemd matches the reload
/// against.
pub fn reloading() {
    send(&format!(
        "RELOADING=1\nMONOTONIC_USEC={}\nSTATUS=reloading the configuration",
        monotonic_usec()
    ));
}

/// `STOPPING=1` with a status line.
pub fn stopping(status: &str) {
    send(&format!("STOPPING=1\nSTATUS={status}"));
}

/// `STATUS=` alone.
pub fn status(status: &str) {
    send(&format!("STATUS={status}"));
}

/// `CLOCK_MONOTONIC` in microseconds.
fn monotonic_usec() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec into the pointer given.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    if rc != 0 {
        return 0;
    }
    (ts.tv_sec as u64).saturating_mul(1_000_000) + (ts.tv_nsec as u64) / 1_000
}

fn send(message: &str) {
    let Some(target) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    if let Err(e) = send_to(&target, message.as_bytes()) {
        tracing::debug!(error = %e, "systemd notification not sent");
    }
}

fn send_to(target: &std::ffi::OsStr, message: &[u8]) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let socket = UnixDatagram::unbound()?;
    let name = target.as_bytes();
    if let Some(abstract_name) = name.strip_prefix(b"@") {
        use std::os::linux::net::SocketAddrExt;
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(abstract_name)?;
        socket.send_to_addr(message, &addr)?;
    } else {
        socket.send_to(message, std::path::Path::new(target))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sends_to_a_path_and_to_an_abstract_name() {
        let dir = std::env::temp_dir().join(format!("ward-notify-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("notify.sock");
        let rx = UnixDatagram::bind(&path).unwrap();
        send_to(path.as_os_str(), b"READY=1").unwrap();
        let mut buf = [0u8; 64];
        let n = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");

        use std::os::linux::net::SocketAddrExt;
        let name = format!("ward-notify-test-{}", std::process::id());
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let rx = UnixDatagram::bind_addr(&addr).unwrap();
        send_to(std::ffi::OsStr::new(&format!("@{name}")), b"STOPPING=1").unwrap();
        let n = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"STOPPING=1");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn monotonic_clock_moves_forward() {
        let a = monotonic_usec();
        std::thread::sleep(std::time::Duration::from_millis(2));
        assert!(monotonic_usec() >= a + 1_000);
    }
}
