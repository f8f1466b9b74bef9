//! The few system calls outside `transport/shm` that need `unsafe`.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

use bytes::BytesMut;

/// Reads from `fd` into the spare capacity of `buf` (which must have some) and extends
/// `buf` by what was read: a stream read that lands where the bytes will stay, without
/// zeroing the room first as `Read::read` would need. Returns the byte count (0: end of
/// stream).
pub(crate) fn read_into(fd: BorrowedFd<'_>, buf: &mut BytesMut) -> io::Result<usize> {
    let spare = buf.spare_capacity_mut();
    if spare.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "internal: read_into a buffer without room",
        ));
    }
    // SAFETY: `spare` is writable memory of `spare.len()` bytes owned by `buf` and
    // borrowed for the call; read(2) writes at most that many bytes into it and nothing
    // else.
    let n = unsafe { libc::read(fd.as_raw_fd(), spare.as_mut_ptr().cast(), spare.len()) };
    let n = usize::try_from(n).map_err(|_| io::Error::last_os_error())?;
    let len = buf.len() + n;
    // SAFETY: read(2) initialized the first `n` bytes of the spare capacity, so the
    // first `len` bytes of `buf` are initialized, and `len <= capacity`.
    unsafe { buf.set_len(len) };
    Ok(n)
}

/// The time since boot on the kernel's coarse monotonic clock (`CLOCK_MONOTONIC_COARSE`):
/// as fine as the kernel's tick (a few milliseconds), and read in a fraction of the time
/// `Instant::now` takes (about 8 ns against 37 ns on the benchmark machine), since it
/// only copies the tick's time from the vDSO. For time stamps that bound ages of many
/// milliseconds (a REP's reply cache). Never goes back.
pub(crate) fn coarse_now() -> std::time::Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec for the duration of the call, and
    // clock_gettime(2) writes nothing else.
    let r = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
    if r != 0 {
        // Not offered (a kernel before 2.6.32): the same clock at full resolution.
        // SAFETY: as above.
        unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    }
    std::time::Duration::new(
        u64::try_from(ts.tv_sec).unwrap_or(0),
        u32::try_from(ts.tv_nsec).unwrap_or(0),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::fd::AsFd;

    #[test]
    fn the_coarse_clock_goes_on() {
        let a = coarse_now();
        std::thread::sleep(std::time::Duration::from_millis(30));
        let b = coarse_now();
        assert!(a > std::time::Duration::ZERO);
        // 30 ms slept, to within the clock's tick.
        assert!(
            b - a >= std::time::Duration::from_millis(20),
            "{a:?} -> {b:?}"
        );
    }

    #[test]
    fn reads_append_to_the_buffer_and_eof_is_zero() {
        let (mut a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        a.write_all(b"hello").unwrap();
        let mut buf = BytesMut::with_capacity(3);
        buf.extend_from_slice(b"<");
        let room = buf.capacity() - buf.len();
        let n = read_into(b.as_fd(), &mut buf).unwrap();
        assert_eq!(n, room.min(5), "as much as there was room for");
        buf.reserve(16);
        assert_eq!(read_into(b.as_fd(), &mut buf).unwrap(), 5 - n);
        assert_eq!(&buf[..], b"<hello");
        drop(a);
        buf.reserve(1);
        assert_eq!(read_into(b.as_fd(), &mut buf).unwrap(), 0);
        let mut full = BytesMut::new();
        assert!(
            read_into(b.as_fd(), &mut full).is_err(),
            "no room is an error"
        );
    }

    #[test]
    fn a_failed_read_is_an_error_and_changes_nothing() {
        let (_a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        b.set_nonblocking(true).unwrap();
        let mut buf = BytesMut::with_capacity(8);
        buf.extend_from_slice(b"x");
        let e = read_into(b.as_fd(), &mut buf).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
        assert_eq!(&buf[..], b"x");
    }
}
