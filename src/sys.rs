//! The few libc calls std has no API for. Every `unsafe` block in the crate
//! lives here, each with the reason it is sound.

#[cfg(target_os = "linux")]
mod ffi {
    use std::ffi::c_int;
    use std::ffi::c_long;

    /// `struct rlimit`, whose `rlim_t` is 64 bits wide on every 64-bit
    /// Linux target, in glibc and musl alike.
    #[cfg(target_pointer_width = "64")]
    #[repr(C)]
    pub struct Rlimit {
        pub cur: u64,
        pub max: u64,
    }

    extern "C" {
        pub fn sysconf(name: c_int) -> c_long;
        #[cfg(target_pointer_width = "64")]
        pub fn getrlimit(resource: c_int, rlim: *mut Rlimit) -> c_int;
        #[cfg(target_pointer_width = "64")]
        pub fn setrlimit(resource: c_int, rlim: *const Rlimit) -> c_int;
        pub fn send(fd: c_int, buf: *const std::ffi::c_void, len: usize, flags: c_int) -> isize;
        pub fn setsockopt(
            fd: c_int,
            level: c_int,
            name: c_int,
            value: *const std::ffi::c_void,
            len: u32,
        ) -> c_int;
    }

    /// `SOL_SOCKET` and `SO_SNDBUF` (x86, ARM and most others; not MIPS,
    /// SPARC or PA-RISC, where `set_send_buffer` does nothing).
    pub const SOL_SOCKET: c_int = 1;
    /// See [`SOL_SOCKET`].
    pub const SO_SNDBUF: c_int = 7;

    /// `MSG_DONTWAIT`: this one call does not block.
    pub const MSG_DONTWAIT: c_int = 0x40;
    /// `MSG_NOSIGNAL`: a closed peer gives `EPIPE`, never `SIGPIPE`.
    pub const MSG_NOSIGNAL: c_int = 0x4000;

    #[cfg(target_env = "gnu")]
    extern "C" {
        pub fn mallopt(param: c_int, value: c_int) -> c_int;
    }

    /// glibc's `M_ARENA_MAX`.
    #[cfg(target_env = "gnu")]
    pub const M_ARENA_MAX: c_int = -8;

    /// glibc's and musl's `_SC_CLK_TCK`.
    pub const SC_CLK_TCK: c_int = 2;
    /// glibc's and musl's `_SC_PAGESIZE`.
    pub const SC_PAGESIZE: c_int = 30;

    /// `RLIMIT_NOFILE`, whose number depends on the architecture.
    #[cfg(any(target_arch = "mips", target_arch = "mips64"))]
    pub const RLIMIT_NOFILE: c_int = 5;
    /// `RLIMIT_NOFILE`, whose number depends on the architecture.
    #[cfg(any(target_arch = "sparc", target_arch = "sparc64"))]
    pub const RLIMIT_NOFILE: c_int = 6;
    /// `RLIMIT_NOFILE`, whose number depends on the architecture.
    #[cfg(not(any(
        target_arch = "mips",
        target_arch = "mips64",
        target_arch = "sparc",
        target_arch = "sparc64"
    )))]
    pub const RLIMIT_NOFILE: c_int = 7;
}

/// The limits on open descriptors (`RLIMIT_NOFILE`). `u64::MAX`
/// (`RLIM_INFINITY`) stands for no limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FdLimits {
    /// The limit in force, which the process may raise up to `hard`.
    pub soft: u64,
    /// The ceiling only a privileged process may raise.
    pub hard: u64,
}

/// The most the soft limit is raised to when the hard limit is infinite:
/// Linux refuses a soft limit above `fs.nr_open`, whose default is this.
#[cfg(all(target_os = "linux", target_pointer_width = "64"))]
const NR_OPEN_DEFAULT: u64 = 1 << 20;

/// The limits on open descriptors now in force.
///
/// # Errors
///
/// Fails if `getrlimit` does.
#[cfg(all(target_os = "linux", target_pointer_width = "64"))]
pub fn fd_limits() -> std::io::Result<FdLimits> {
    let mut rlim = ffi::Rlimit { cur: 0, max: 0 };
    // SAFETY: getrlimit writes one `struct rlimit`, whose layout `Rlimit`
    // repeats, through a pointer to a live local that outlives the call.
    let rc = unsafe { ffi::getrlimit(ffi::RLIMIT_NOFILE, &mut rlim) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(FdLimits {
        soft: rlim.cur,
        hard: rlim.max,
    })
}

/// Raises the soft limit on open descriptors to the hard limit, so that
/// every connection the server admits can have its descriptors, and returns
/// the limits then in force. Each client connection costs two
/// descriptors, and one more while it streams or awaits a durable write.
///
/// # Errors
///
/// Fails if the limits cannot be read or set; the old limits then stay.
#[cfg(all(target_os = "linux", target_pointer_width = "64"))]
pub fn raise_fd_limit() -> std::io::Result<FdLimits> {
    let limits = fd_limits()?;
    let target = if limits.hard == u64::MAX {
        NR_OPEN_DEFAULT
    } else {
        limits.hard
    };
    if limits.soft >= target {
        return Ok(limits);
    }
    let rlim = ffi::Rlimit {
        cur: target,
        max: limits.hard,
    };
    // SAFETY: setrlimit only reads one `struct rlimit`, whose layout
    // `Rlimit` repeats, through a pointer to a live local.
    let rc = unsafe { ffi::setrlimit(ffi::RLIMIT_NOFILE, &rlim) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    fd_limits()
}

/// Elsewhere the limits are not read.
#[cfg(not(all(target_os = "linux", target_pointer_width = "64")))]
pub fn fd_limits() -> std::io::Result<FdLimits> {
    Err(std::io::ErrorKind::Unsupported.into())
}

/// Elsewhere the limits are left as they are.
#[cfg(not(all(target_os = "linux", target_pointer_width = "64")))]
pub fn raise_fd_limit() -> std::io::Result<FdLimits> {
    Err(std::io::ErrorKind::Unsupported.into())
}

/// A positive `sysconf(name)`, or `fallback`.
#[cfg(target_os = "linux")]
fn sysconf(name: std::ffi::c_int, fallback: f64) -> f64 {
    // SAFETY: sysconf takes an integer and returns an integer; it reads no
    // memory of ours and is thread-safe.
    let v = unsafe { ffi::sysconf(name) };
    if v > 0 {
        v as f64
    } else {
        fallback
    }
}

/// Clock ticks per second, as `/proc` times are counted (100 on Linux).
#[cfg(target_os = "linux")]
pub fn clock_ticks_per_second() -> f64 {
    sysconf(ffi::SC_CLK_TCK, 100.0)
}

/// The memory page size in bytes, for turning `/proc` page counts to bytes.
#[cfg(target_os = "linux")]
pub fn page_size() -> f64 {
    sysconf(ffi::SC_PAGESIZE, 4096.0)
}

/// Sends what of `bytes` the socket takes at once, without blocking and
/// without touching the socket's blocking mode, which other handles to the
/// same socket share: `WouldBlock` when it takes nothing.
#[cfg(target_os = "linux")]
pub fn send_nonblocking(stream: &std::net::TcpStream, bytes: &[u8]) -> std::io::Result<usize> {
    use std::os::fd::AsRawFd;
    // SAFETY: the fd is a live socket owned by `stream` for the whole call,
    // and the kernel reads at most `bytes.len()` bytes from `bytes`, which
    // outlives the call.
    let sent = unsafe {
        ffi::send(
            stream.as_raw_fd(),
            bytes.as_ptr().cast(),
            bytes.len(),
            ffi::MSG_DONTWAIT | ffi::MSG_NOSIGNAL,
        )
    };
    usize::try_from(sent).map_err(|_| std::io::Error::last_os_error())
}

/// Caps the kernel's send buffer of `stream` at about `bytes` (Linux
/// doubles the value for its bookkeeping), so that a client that stops
/// reading holds little memory and is found out soon. On architectures
/// whose socket option numbers differ, it does nothing.
#[cfg(target_os = "linux")]
pub fn set_send_buffer(stream: &std::net::TcpStream, bytes: usize) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    if cfg!(any(
        target_arch = "mips",
        target_arch = "mips64",
        target_arch = "sparc",
        target_arch = "sparc64"
    )) {
        return Ok(());
    }
    let value = std::ffi::c_int::try_from(bytes).unwrap_or(std::ffi::c_int::MAX);
    // SAFETY: the fd is a live socket owned by `stream` for the whole call,
    // and the option value points to a c_int that outlives the call, with
    // its exact size passed as the length.
    let rc = unsafe {
        ffi::setsockopt(
            stream.as_raw_fd(),
            ffi::SOL_SOCKET,
            ffi::SO_SNDBUF,
            (&value as *const std::ffi::c_int).cast(),
            std::mem::size_of::<std::ffi::c_int>() as u32,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Elsewhere the send buffer keeps its default.
#[cfg(not(target_os = "linux"))]
pub fn set_send_buffer(_stream: &std::net::TcpStream, _bytes: usize) -> std::io::Result<()> {
    Ok(())
}

/// Elsewhere every send may block, so none is tried.
#[cfg(not(target_os = "linux"))]
pub fn send_nonblocking(_stream: &std::net::TcpStream, _bytes: &[u8]) -> std::io::Result<usize> {
    Err(std::io::ErrorKind::WouldBlock.into())
}

/// Caps glibc's malloc arenas. glibc gives busy threads arenas of their
/// own, each keeping touched pages, which is most of an idle server's
/// private memory; two arenas are plenty for a few worker threads.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub fn limit_malloc_arenas(arenas: i32) {
    // SAFETY: mallopt takes two integers and only adjusts allocator
    // settings; it is safe to call at any time, from any thread.
    unsafe {
        ffi::mallopt(ffi::M_ARENA_MAX, arenas);
    }
}

/// Other allocators manage their own arenas.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn limit_malloc_arenas(_arenas: i32) {}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    #[test]
    fn sysconf_values_are_sane() {
        assert_eq!(super::clock_ticks_per_second(), 100.0);
        let page = super::page_size();
        assert!(page >= 4096.0 && (page as u64).is_power_of_two());
    }

    #[test]
    fn the_soft_descriptor_limit_is_raised_to_the_hard_one() {
        let before = super::fd_limits().unwrap();
        assert!(before.soft <= before.hard);
        let after = super::raise_fd_limit().unwrap();
        assert_eq!(after.hard, before.hard);
        assert!(after.soft >= before.soft);
        if before.hard != u64::MAX {
            assert_eq!(after.soft, before.hard);
        }
        assert_eq!(super::fd_limits().unwrap(), after);
    }
}
