//! The operating-system calls of the fd transport (Linux): what a descriptor is
//! (`fcntl`, `fstat`, `getsockopt` of `SO_DOMAIN`, `SO_TYPE`, `SO_PROTOCOL`,
//! `SO_ACCEPTCONN`), its close-on-exec flag, and taking ownership of it. Each call is a
//! thin wrapper; [`syscall!`] turns `-1` into the thread's `errno` as an [`io::Error`].
//! Nothing here keeps state.

use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};

/// Calls a libc function and turns a `-1` result into `Err(io::Error::last_os_error())`.
macro_rules! syscall {
    ($fn:ident ( $($arg:expr),* $(,)? )) => {{
        // SAFETY: every call site passes arguments that satisfy the libc function's
        // contract (plain integers, or pointers to live locals of the right type).
        let res = unsafe { libc::$fn($($arg),*) };
        if res == -1 {
            Err(std::io::Error::last_os_error())
        } else {
            Ok(res)
        }
    }};
}

/// What a descriptor is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    /// No such open descriptor.
    NotOpen,
    /// Open, but not a socket: a pipe, a file... (for humans).
    NotSocket(&'static str),
    /// A socket.
    Socket {
        domain: libc::c_int,
        ty: libc::c_int,
        protocol: libc::c_int,
        listening: bool,
    },
}

/// What `fd` is. Reads only; changes nothing.
pub(super) fn kind(fd: RawFd) -> io::Result<Kind> {
    if let Err(e) = syscall!(fcntl(fd, libc::F_GETFD)) {
        return if e.raw_os_error() == Some(libc::EBADF) {
            Ok(Kind::NotOpen)
        } else {
            Err(e)
        };
    }
    // SAFETY: `stat` is plain old data; all zeroes is a valid value of it.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    syscall!(fstat(fd, &mut st))?;
    let what = match st.st_mode & libc::S_IFMT {
        libc::S_IFSOCK => None,
        libc::S_IFIFO => Some("a pipe (FIFO)"),
        libc::S_IFREG => Some("a regular file"),
        libc::S_IFDIR => Some("a directory"),
        libc::S_IFCHR => Some("a character device (a terminal, /dev/null...)"),
        libc::S_IFBLK => Some("a block device"),
        libc::S_IFLNK => Some("a symbolic link"),
        _ => Some("an anonymous inode (eventfd, epoll, timerfd...)"),
    };
    if let Some(what) = what {
        return Ok(Kind::NotSocket(what));
    }
    Ok(Kind::Socket {
        domain: int_option(fd, libc::SO_DOMAIN)?,
        ty: int_option(fd, libc::SO_TYPE)?,
        protocol: int_option(fd, libc::SO_PROTOCOL)?,
        listening: int_option(fd, libc::SO_ACCEPTCONN)? != 0,
    })
}

/// An integer socket option at `SOL_SOCKET`.
fn int_option(fd: RawFd, name: libc::c_int) -> io::Result<libc::c_int> {
    let mut value: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    syscall!(getsockopt(
        fd,
        libc::SOL_SOCKET,
        name,
        (&mut value as *mut libc::c_int).cast(),
        &mut len,
    ))?;
    Ok(value)
}

/// Sets or clears `FD_CLOEXEC` on `fd` (the other descriptor flags stay).
pub(super) fn set_cloexec(fd: RawFd, on: bool) -> io::Result<()> {
    let flags = syscall!(fcntl(fd, libc::F_GETFD))?;
    let new = if on {
        flags | libc::FD_CLOEXEC
    } else {
        flags & !libc::FD_CLOEXEC
    };
    if new != flags {
        syscall!(fcntl(fd, libc::F_SETFD, new))?;
    }
    Ok(())
}

/// Takes ownership of `fd`: it is closed when the result is dropped.
///
/// # Safety
///
/// The caller must ensure:
/// - `fd` is open (checked just before by [`kind`]);
/// - nothing else in the process owns it or will close it: the user handed it over by
///   naming it in `fd://N` (the contract of that endpoint, as of
///   [`FromRawFd::from_raw_fd`]), and the claim table of `super` guarantees that lwmq
///   itself owns it at most once.
pub(super) unsafe fn take(fd: RawFd) -> OwnedFd {
    // SAFETY: the caller's contract above.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// Whether the socket `fd` has a peer (`getpeername` succeeds; `ENOTCONN`: no).
pub(super) fn has_peer(fd: RawFd) -> io::Result<bool> {
    // SAFETY: `sockaddr_storage` is plain old data; all zeroes is a valid value of it.
    let mut addr: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    match syscall!(getpeername(
        fd,
        (&mut addr as *mut libc::sockaddr_storage).cast(),
        &mut len
    )) {
        Ok(_) => Ok(true),
        Err(e) if e.raw_os_error() == Some(libc::ENOTCONN) => Ok(false),
        Err(e) => Err(e),
    }
}
