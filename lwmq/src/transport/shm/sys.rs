//! The operating-system layer of the shared-memory transport (Linux).
//!
//! Everything here is a thin, checked wrapper over one system call: `memfd` creation and
//! sealing, shared mappings, futexes, and Unix `SOCK_SEQPACKET` sockets in the abstract
//! namespace with descriptor passing (`SCM_RIGHTS`) and peer credentials
//! (`SO_PEERCRED`). Every call site goes through [`syscall!`], which turns `-1` into
//! the thread's `errno` as an [`io::Error`], the way mio does.
//!
//! Other systems (see DESIGN.md: named pipes and sections on Windows, `shm_open` plus
//! immediate unlink on macOS) would be another module with the same functions.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::ptr::NonNull;
use std::sync::atomic::AtomicU32;
use std::time::Duration;

/// Calls a libc function and turns a `-1` result into `Err(io::Error::last_os_error())`.
macro_rules! syscall {
    ($fn:ident ( $($arg:expr),* $(,)? )) => {{
        #[allow(unused_unsafe)]
        // SAFETY: every call site passes arguments that satisfy the libc function's
        // contract; each is commented where it is not obvious.
        let res = unsafe { libc::$fn($($arg),*) };
        if res == -1 {
            Err(std::io::Error::last_os_error())
        } else {
            Ok(res)
        }
    }};
}

/// The seals every shared-memory file of lwmq carries: its size can never change again.
pub const REQUIRED_SEALS: libc::c_int = libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_SEAL;

/// Creates an anonymous memory file of `size` bytes, zero-filled, sealed against any
/// size change ([`REQUIRED_SEALS`]), close-on-exec.
pub fn sealed_memfd(name: &std::ffi::CStr, size: usize) -> io::Result<OwnedFd> {
    let raw = syscall!(memfd_create(
        name.as_ptr(),
        libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING
    ))?;
    // SAFETY: memfd_create returned a fresh descriptor that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    let len = libc::off_t::try_from(size)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "memfd size overflows off_t"))?;
    syscall!(ftruncate(fd.as_raw_fd(), len))?;
    syscall!(fcntl(fd.as_raw_fd(), libc::F_ADD_SEALS, REQUIRED_SEALS))?;
    Ok(fd)
}

/// Checks that a descriptor received from a peer is a memory file carrying
/// [`REQUIRED_SEALS`] (so its size can never change and mapping it can never fault) and
/// returns its size in bytes.
pub fn sealed_memfd_size(fd: &OwnedFd) -> Result<u64, String> {
    let seals = syscall!(fcntl(fd.as_raw_fd(), libc::F_GET_SEALS))
        .map_err(|e| format!("the peer's shared memory is not a sealable memfd ({e})"))?;
    if seals & REQUIRED_SEALS != REQUIRED_SEALS {
        return Err(format!(
            "the peer's shared memory is not sealed against resizing (seals {seals:#x})"
        ));
    }
    // SAFETY: all-zero is a valid `stat` (plain integers).
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `st` is a valid, writable `stat`; the descriptor is open.
    syscall!(fstat(fd.as_raw_fd(), &mut st))
        .map_err(|e| format!("fstat of the peer's shared memory failed: {e}"))?;
    u64::try_from(st.st_size).map_err(|_| "the peer's shared memory has a negative size".into())
}

/// A shared, read-write mapping of a whole memory file; unmapped on drop.
#[derive(Debug)]
pub struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: a Mapping is a plain address range; all access to its memory goes through raw
// pointers and atomics whose synchronization the ring and doorbell protocols define.
unsafe impl Send for Mapping {}
// SAFETY: as above; `&Mapping` only hands out raw pointers.
unsafe impl Sync for Mapping {}

impl Mapping {
    /// Maps `len` bytes of `fd` shared and read-write, with every page faulted in now
    /// (`MAP_POPULATE`): the first pass of messages over a new ring would otherwise take
    /// a page fault every 4 KiB (for 64-byte messages that was most of the cost of the
    /// first megabytes). The caller must have checked (or made sure by creating it) that
    /// the file is at least `len` bytes and sealed against shrinking.
    pub fn map(fd: &OwnedFd, len: usize) -> io::Result<Mapping> {
        // SAFETY: a fresh mapping chosen by the kernel (addr null), of a descriptor we
        // hold open; nothing aliases it yet.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_POPULATE,
                fd.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let ptr = NonNull::new(ptr.cast::<u8>())
            .ok_or_else(|| io::Error::other("mmap returned a null address"))?;
        Ok(Mapping { ptr, len })
    }

    /// The first byte of the mapping (page aligned).
    pub fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    /// The length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: ptr/len are exactly what mmap returned; everything that borrows into
        // the mapping holds an Arc to its owner, so nothing uses it after this.
        unsafe {
            libc::munmap(self.ptr.as_ptr().cast(), self.len);
        }
    }
}

/// The FUTEX_WAIT/FUTEX_WAKE operation: `private` (FUTEX_PRIVATE_FLAG) for a word only
/// this process maps, which spares the kernel the page lookup a shared word needs.
/// Waiters and wakers of one word must agree on it.
fn futex_op(op: libc::c_int, private: bool) -> libc::c_int {
    if private {
        op | libc::FUTEX_PRIVATE_FLAG
    } else {
        op
    }
}

/// Sleeps while `*word == expected`, at most `timeout` (FUTEX_WAIT; `private` for a
/// word in this process's own memory, see `futex_op`). Spurious returns are possible;
/// returns `false` only if the timeout expired.
pub fn futex_wait(
    word: &AtomicU32,
    expected: u32,
    timeout: Option<Duration>,
    private: bool,
) -> bool {
    let ts = timeout.map(|t| libc::timespec {
        tv_sec: libc::time_t::try_from(t.as_secs()).unwrap_or(libc::time_t::MAX),
        tv_nsec: libc::c_long::from(t.subsec_nanos() as i32),
    });
    let ts_ptr = ts
        .as_ref()
        .map_or(std::ptr::null(), |t| t as *const libc::timespec);
    // SAFETY: `word` is a valid, aligned u32 for the duration of the call; `ts_ptr` is
    // null or points to a timespec on our stack. Callers re-check their condition
    // whatever the result (woken, EAGAIN, EINTR, ETIMEDOUT).
    let r = unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            futex_op(libc::FUTEX_WAIT, private),
            expected,
            ts_ptr,
            std::ptr::null::<u32>(),
            0u32,
        )
    };
    !(r == -1 && io::Error::last_os_error().raw_os_error() == Some(libc::ETIMEDOUT))
}

/// One entry of FUTEX_WAITV (`struct futex_waitv` of linux/futex.h).
#[repr(C)]
struct FutexWaitv {
    val: u64,
    uaddr: u64,
    flags: u32,
    reserved: u32,
}

/// `FUTEX_32`: the word is 32 bits (linux/futex.h).
const FUTEX2_SIZE_U32: u32 = 2;
/// `FUTEX2_PRIVATE`: the word is in this process's own memory (linux/futex.h).
const FUTEX2_PRIVATE: u32 = 128;
/// The most words FUTEX_WAITV takes.
pub const FUTEX_WAITV_MAX: usize = 128;

/// Sleeps until any of `words` is woken or does not hold its expected value, or
/// `timeout` passes (FUTEX_WAITV, Linux 5.16+). `Ok(false)`: timed out. `Err` with
/// ENOSYS: the kernel has no FUTEX_WAITV (the caller falls back). At most
/// [`FUTEX_WAITV_MAX`] words, each with its expected value and whether it is private
/// (see [`futex_op`]).
pub fn futex_waitv(
    words: &[(&AtomicU32, u32, bool)],
    timeout: Option<Duration>,
) -> io::Result<bool> {
    if words.is_empty() || words.len() > FUTEX_WAITV_MAX {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    let waiters: Vec<FutexWaitv> = words
        .iter()
        .map(|(w, v, private)| FutexWaitv {
            val: u64::from(*v),
            uaddr: w.as_ptr() as u64,
            flags: FUTEX2_SIZE_U32 | if *private { FUTEX2_PRIVATE } else { 0 },
            reserved: 0,
        })
        .collect();
    // The timeout of FUTEX_WAITV is absolute, on the clock given.
    let abs = match timeout {
        None => None,
        Some(t) => {
            let mut now = libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            };
            syscall!(clock_gettime(libc::CLOCK_MONOTONIC, &mut now))?;
            let nanos = u64::try_from(now.tv_nsec).unwrap_or(0) + u64::from(t.subsec_nanos());
            Some(libc::timespec {
                tv_sec: now
                    .tv_sec
                    .saturating_add(
                        libc::time_t::try_from(t.as_secs()).unwrap_or(libc::time_t::MAX),
                    )
                    .saturating_add(libc::time_t::try_from(nanos / 1_000_000_000).unwrap_or(0)),
                tv_nsec: libc::c_long::try_from(nanos % 1_000_000_000).unwrap_or(0),
            })
        }
    };
    let ts_ptr = abs
        .as_ref()
        .map_or(std::ptr::null(), |t| t as *const libc::timespec);
    // SAFETY: `waiters` is an array of `words.len()` initialized futex_waitv entries,
    // each naming a valid, aligned u32 that outlives the call (borrowed for it);
    // `ts_ptr` is null or points to a timespec on our stack; flags 0 and
    // CLOCK_MONOTONIC are what the kernel documents.
    let r = unsafe {
        libc::syscall(
            libc::SYS_futex_waitv,
            waiters.as_ptr(),
            waiters.len() as libc::c_uint,
            0u32,
            ts_ptr,
            libc::CLOCK_MONOTONIC,
        )
    };
    if r >= 0 {
        return Ok(true);
    }
    let e = io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::ETIMEDOUT) => Ok(false),
        // A value differed already, or a signal: the caller re-checks.
        Some(libc::EAGAIN) | Some(libc::EINTR) => Ok(true),
        _ => Err(e),
    }
}

/// Wakes every waiter on `word` (FUTEX_WAKE; `private` as the waiters passed it).
pub fn futex_wake_all(word: &AtomicU32, private: bool) {
    // SAFETY: `word` is a valid, aligned u32; FUTEX_WAKE only uses its address.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            futex_op(libc::FUTEX_WAKE, private),
            i32::MAX,
            std::ptr::null::<libc::timespec>(),
            std::ptr::null::<u32>(),
            0u32,
        );
    }
}

/// The credentials of the process at the other end of a Unix socket, as the kernel
/// recorded them at connect (or listen) time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerCred {
    /// Process id.
    pub pid: u32,
    /// Effective user id.
    pub uid: u32,
    /// Effective group id.
    pub gid: u32,
}

/// Our own effective user id.
pub fn effective_uid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// A new non-blocking, close-on-exec `AF_UNIX` `SOCK_SEQPACKET` socket.
pub fn seqpacket_socket() -> io::Result<OwnedFd> {
    let raw = syscall!(socket(
        libc::AF_UNIX,
        libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
        0
    ))?;
    // SAFETY: a fresh descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

fn abstract_addr(name: &[u8]) -> io::Result<(libc::sockaddr_un, libc::socklen_t)> {
    // SAFETY: all-zero is a valid sockaddr_un.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    // sun_path[0] stays 0: the abstract namespace.
    if name.len() + 1 > addr.sun_path.len() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "abstract socket name too long",
        ));
    }
    for (dst, src) in addr.sun_path[1..].iter_mut().zip(name) {
        *dst = *src as libc::c_char;
    }
    let len = std::mem::offset_of!(libc::sockaddr_un, sun_path) + 1 + name.len();
    // The length is at most sizeof(sockaddr_un), which fits.
    Ok((addr, len as libc::socklen_t))
}

/// Binds `fd` to the abstract name `\0name` and listens.
pub fn bind_listen_abstract(fd: &OwnedFd, name: &[u8]) -> io::Result<()> {
    let (addr, len) = abstract_addr(name)?;
    // SAFETY: addr/len describe a valid sockaddr_un on our stack.
    syscall!(bind(
        fd.as_raw_fd(),
        (&addr as *const libc::sockaddr_un).cast(),
        len
    ))?;
    syscall!(listen(fd.as_raw_fd(), 128))?;
    Ok(())
}

/// Connects `fd` to the abstract name `\0name`.
pub fn connect_abstract(fd: &OwnedFd, name: &[u8]) -> io::Result<()> {
    let (addr, len) = abstract_addr(name)?;
    // SAFETY: addr/len describe a valid sockaddr_un on our stack.
    syscall!(connect(
        fd.as_raw_fd(),
        (&addr as *const libc::sockaddr_un).cast(),
        len
    ))?;
    Ok(())
}

/// Accepts one connection, non-blocking and close-on-exec; `Ok(None)` if none waits.
pub fn accept(fd: &OwnedFd) -> io::Result<Option<OwnedFd>> {
    match syscall!(accept4(
        fd.as_raw_fd(),
        std::ptr::null_mut(),
        std::ptr::null_mut(),
        libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC
    )) {
        // SAFETY: a fresh descriptor that nothing else owns.
        Ok(raw) => Ok(Some(unsafe { OwnedFd::from_raw_fd(raw) })),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
        Err(e) if e.raw_os_error() == Some(libc::ECONNABORTED) => Ok(None),
        Err(e) => Err(e),
    }
}

/// The credentials of the peer of a connected Unix socket.
pub fn peer_cred(fd: &OwnedFd) -> io::Result<PeerCred> {
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: cred/len are a valid, writable ucred and its size.
    syscall!(getsockopt(
        fd.as_raw_fd(),
        libc::SOL_SOCKET,
        libc::SO_PEERCRED,
        (&mut cred as *mut libc::ucred).cast(),
        &mut len
    ))?;
    Ok(PeerCred {
        pid: cred.pid as u32,
        uid: cred.uid,
        gid: cred.gid,
    })
}

/// Most descriptors one control message carries.
pub const MAX_FDS: usize = 4;

/// Sends one packet with `fds` attached (SCM_RIGHTS), without SIGPIPE.
pub fn send_with_fds(fd: &OwnedFd, data: &[u8], fds: &[RawFd]) -> io::Result<()> {
    assert!(fds.len() <= MAX_FDS, "internal: too many descriptors");
    let mut iov = libc::iovec {
        iov_base: data.as_ptr() as *mut libc::c_void,
        iov_len: data.len(),
    };
    // u64 storage keeps the control buffer aligned for cmsghdr.
    let mut cbuf = [0u64; 8];
    // SAFETY: all-zero is a valid msghdr.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    if !fds.is_empty() {
        let payload = std::mem::size_of_val(fds) as u32;
        // SAFETY: CMSG_SPACE is a pure computation.
        let space = unsafe { libc::CMSG_SPACE(payload) } as usize;
        debug_assert!(space <= std::mem::size_of_val(&cbuf));
        msg.msg_control = cbuf.as_mut_ptr().cast();
        msg.msg_controllen = space as _;
        // SAFETY: msg_control points to `space` writable, aligned bytes, enough for one
        // header and its payload, so CMSG_FIRSTHDR is non-null and CMSG_DATA is in bounds.
        unsafe {
            let cmsg = libc::CMSG_FIRSTHDR(&msg);
            (*cmsg).cmsg_level = libc::SOL_SOCKET;
            (*cmsg).cmsg_type = libc::SCM_RIGHTS;
            (*cmsg).cmsg_len = libc::CMSG_LEN(payload) as _;
            std::ptr::copy_nonoverlapping(
                fds.as_ptr().cast::<u8>(),
                libc::CMSG_DATA(cmsg),
                payload as usize,
            );
        }
    }
    // SAFETY: msg points to a valid iovec and control buffer that outlive the call.
    let n = syscall!(sendmsg(fd.as_raw_fd(), &msg, libc::MSG_NOSIGNAL))?;
    if n as usize != data.len() {
        return Err(io::Error::other("short write of a control packet"));
    }
    Ok(())
}

/// One received control packet.
#[derive(Debug)]
pub struct Packet {
    /// Bytes of the packet (0 means the peer closed the connection).
    pub len: usize,
    /// Descriptors that came with it.
    pub fds: Vec<OwnedFd>,
    /// The packet or its descriptors did not fit our buffers.
    pub truncated: bool,
}

/// Receives one packet without blocking; `Err(WouldBlock)` if none is there.
pub fn recv_with_fds(fd: &OwnedFd, buf: &mut [u8]) -> io::Result<Packet> {
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    let mut cbuf = [0u64; 8];
    // SAFETY: all-zero is a valid msghdr.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cbuf.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&cbuf) as _;
    // SAFETY: msg points to a valid iovec over `buf` and a control buffer, both live.
    let n = syscall!(recvmsg(
        fd.as_raw_fd(),
        &mut msg,
        libc::MSG_DONTWAIT | libc::MSG_CMSG_CLOEXEC
    ))?;
    let mut fds = Vec::new();
    // SAFETY: after recvmsg, msg_control/msg_controllen describe the control data the
    // kernel wrote into `cbuf`; the CMSG_* macros walk it within those bounds.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS {
                let data = libc::CMSG_DATA(cmsg);
                let bytes = (*cmsg).cmsg_len as usize - (data as usize - cmsg as usize);
                for i in 0..bytes / std::mem::size_of::<RawFd>() {
                    let raw = std::ptr::read_unaligned(data.cast::<RawFd>().add(i));
                    // The kernel installed this descriptor for us; we own it now.
                    fds.push(OwnedFd::from_raw_fd(raw));
                }
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
    }
    Ok(Packet {
        len: n as usize,
        fds,
        truncated: msg.msg_flags & (libc::MSG_TRUNC | libc::MSG_CTRUNC) != 0,
    })
}

/// Polls one descriptor; returns its `revents` (0 on timeout). `timeout_ms < 0` waits.
pub fn poll_one(
    fd: RawFd,
    events: libc::c_short,
    timeout_ms: libc::c_int,
) -> io::Result<libc::c_short> {
    let mut p = libc::pollfd {
        fd,
        events,
        revents: 0,
    };
    loop {
        // SAFETY: one valid pollfd on our stack.
        match syscall!(poll(&mut p, 1, timeout_ms)) {
            Ok(_) => return Ok(p.revents),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
}

/// A new close-on-exec epoll instance (used to make a listener and its half-open
/// handshakes one pollable descriptor).
pub fn epoll() -> io::Result<OwnedFd> {
    let raw = syscall!(epoll_create1(libc::EPOLL_CLOEXEC))?;
    // SAFETY: a fresh descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

/// Adds `fd` to `epoll`, level-triggered, for readability (and hang-up).
pub fn epoll_add(epoll: &OwnedFd, fd: RawFd) -> io::Result<()> {
    let mut ev = libc::epoll_event {
        events: (libc::EPOLLIN | libc::EPOLLRDHUP) as u32,
        u64: fd as u64,
    };
    // SAFETY: `ev` is a valid epoll_event on our stack; both descriptors are open.
    syscall!(epoll_ctl(
        epoll.as_raw_fd(),
        libc::EPOLL_CTL_ADD,
        fd,
        &mut ev
    ))?;
    Ok(())
}

/// Removes `fd` from `epoll` (closing `fd` would do it too).
pub fn epoll_del(epoll: &OwnedFd, fd: RawFd) -> io::Result<()> {
    // SAFETY: a null event is allowed for EPOLL_CTL_DEL since Linux 2.6.9.
    syscall!(epoll_ctl(
        epoll.as_raw_fd(),
        libc::EPOLL_CTL_DEL,
        fd,
        std::ptr::null_mut()
    ))?;
    Ok(())
}
