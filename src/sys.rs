//! The few libc calls std has no API for. Every `unsafe` block in the crate
//! lives here, each with the reason it is sound.

#[cfg(target_os = "linux")]
mod ffi {
    use std::ffi::c_int;
    use std::ffi::c_long;

    extern "C" {
        pub fn sysconf(name: c_int) -> c_long;
        pub fn setsockopt(
            fd: c_int,
            level: c_int,
            name: c_int,
            value: *const std::ffi::c_void,
            len: u32,
        ) -> c_int;
    }

    #[cfg(target_env = "gnu")]
    extern "C" {
        pub fn mallopt(param: c_int, value: c_int) -> c_int;
    }

    /// glibc's `M_ARENA_MAX`.
    #[cfg(target_env = "gnu")]
    pub const M_ARENA_MAX: c_int = -8;

    /// `IPPROTO_TCP`.
    pub const IPPROTO_TCP: c_int = 6;
    /// `TCP_NODELAY`.
    pub const TCP_NODELAY: c_int = 1;

    /// glibc's and musl's `_SC_CLK_TCK`.
    pub const SC_CLK_TCK: c_int = 2;
    /// glibc's and musl's `_SC_PAGESIZE`.
    pub const SC_PAGESIZE: c_int = 30;
}

/// Clock ticks per second, as `/proc` times are counted (100 on Linux).
#[cfg(target_os = "linux")]
pub fn clock_ticks_per_second() -> f64 {
    // SAFETY: sysconf takes an integer and returns an integer; it reads no
    // memory of ours and is thread-safe.
    let v = unsafe { ffi::sysconf(ffi::SC_CLK_TCK) };
    if v > 0 {
        v as f64
    } else {
        100.0
    }
}

/// The memory page size in bytes, for turning `/proc` page counts to bytes.
#[cfg(target_os = "linux")]
pub fn page_size() -> f64 {
    // SAFETY: as above, sysconf touches no memory of ours.
    let v = unsafe { ffi::sysconf(ffi::SC_PAGESIZE) };
    if v > 0 {
        v as f64
    } else {
        4096.0
    }
}

/// Sets `TCP_NODELAY` on a listening socket. Linux copies it to every
/// accepted socket, which is the only way to reach the sockets tiny_http
/// accepts: without it, a response written as header then body waits for
/// a delayed ACK (about 40 ms) under Nagle's algorithm.
#[cfg(target_os = "linux")]
pub fn set_listener_nodelay(listener: &std::net::TcpListener) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let one: std::ffi::c_int = 1;
    // SAFETY: the fd is a live socket owned by `listener` for the whole
    // call, and the option value points to a c_int that outlives the call,
    // with its exact size passed as the length.
    let rc = unsafe {
        ffi::setsockopt(
            listener.as_raw_fd(),
            ffi::IPPROTO_TCP,
            ffi::TCP_NODELAY,
            (&one as *const std::ffi::c_int).cast(),
            std::mem::size_of::<std::ffi::c_int>() as u32,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
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

/// Elsewhere nothing is done; accepted sockets keep their defaults.
#[cfg(not(target_os = "linux"))]
pub fn set_listener_nodelay(_listener: &std::net::TcpListener) -> std::io::Result<()> {
    Ok(())
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    #[test]
    fn sysconf_values_are_sane() {
        assert_eq!(super::clock_ticks_per_second(), 100.0);
        let page = super::page_size();
        assert!(page >= 4096.0 && (page as u64).is_power_of_two());
    }
}
