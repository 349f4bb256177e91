//! The libc calls std has no API for: every `unsafe` block of the crate, each with why it is sound.

#[cfg(target_os = "linux")]
mod ffi {
    use std::ffi::c_int;

    /// `struct rlimit`: `rlim_t` is 64 bits on every 64-bit Linux target, glibc and musl alike.
    #[cfg(target_pointer_width = "64")]
    #[repr(C)]
    pub struct Rlimit {
        pub cur: u64,
        pub max: u64,
    }

    extern "C" {
        #[cfg(target_pointer_width = "64")]
        pub fn setrlimit(resource: c_int, rlim: *const Rlimit) -> c_int;
        pub fn setsockopt(
            fd: c_int,
            level: c_int,
            name: c_int,
            value: *const std::ffi::c_void,
            len: u32,
        ) -> c_int;
        pub fn pthread_sigmask(how: c_int, set: *const SigSet, old: *mut SigSet) -> c_int;
        pub fn sigwait(set: *const SigSet, sig: *mut c_int) -> c_int;
    }

    /// `sigset_t`: 1024 bits in glibc and musl, signal N at bit N - 1 of the native-endian words.
    #[repr(C)]
    #[derive(Clone, Copy)]
    pub struct SigSet(pub [u64; 16]);

    /// MIPS and SPARC number some constants apart from the other Linux targets.
    pub const MIPS: bool = cfg!(any(target_arch = "mips", target_arch = "mips64"));
    pub const SPARC: bool = cfg!(any(target_arch = "sparc", target_arch = "sparc64"));
    pub const SIG_BLOCK: c_int = if MIPS || SPARC { 1 } else { 0 };
    pub const RLIMIT_NOFILE: c_int = if MIPS {
        5
    } else if SPARC {
        6
    } else {
        7
    };
    pub const SIGINT: c_int = 2;
    pub const SIGTERM: c_int = 15;
    /// x86, ARM and most others; not MIPS, SPARC or PA-RISC, where `set_send_buffer` does nothing.
    pub const SOL_SOCKET: c_int = 1;
    pub const SO_SNDBUF: c_int = 7;

    #[cfg(target_env = "gnu")]
    extern "C" {
        pub fn mallopt(param: c_int, value: c_int) -> c_int;
    }

    #[cfg(target_env = "gnu")]
    pub const M_ARENA_MAX: c_int = -8;
}

/// The limits on open descriptors (`RLIMIT_NOFILE`); `u64::MAX` (`RLIM_INFINITY`): no limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FdLimits {
    pub soft: u64,
    pub hard: u64,
}

/// The most the soft limit is raised to when the hard limit is infinite:
/// Linux refuses a soft limit above `fs.nr_open`, whose default is this.
#[cfg(all(target_os = "linux", target_pointer_width = "64"))]
const NR_OPEN_DEFAULT: u64 = 1 << 20;

/// The limits now in force, as `/proc/self/limits` shows them (which spares a `getrlimit` call).
#[cfg(all(target_os = "linux", target_pointer_width = "64"))]
fn fd_limits() -> std::io::Result<FdLimits> {
    let text = std::fs::read_to_string("/proc/self/limits")?;
    parse_fd_limits(&text).ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "/proc/self/limits has no readable \"Max open files\" line",
        )
    })
}

#[cfg(all(target_os = "linux", target_pointer_width = "64"))]
fn parse_fd_limits(text: &str) -> Option<FdLimits> {
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    let mut values = line["Max open files".len()..]
        .split_whitespace()
        .map(|v| match v {
            "unlimited" => Some(u64::MAX),
            v => v.parse().ok(),
        });
    Some(FdLimits {
        soft: values.next()??,
        hard: values.next()??,
    })
}

/// Raises the soft limit on open descriptors to the hard limit, so that every connection the server
/// admits can have its descriptors (two each, and one more while it streams or awaits a durable
/// write), and returns the limits then in force. On failure the old limits stay.
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
    // SAFETY: setrlimit only reads one `struct rlimit` (as `Rlimit` lays out) from a live local.
    let rc = unsafe { ffi::setrlimit(ffi::RLIMIT_NOFILE, &rlim) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    fd_limits()
}

#[cfg(not(all(target_os = "linux", target_pointer_width = "64")))]
pub fn raise_fd_limit() -> std::io::Result<FdLimits> {
    Err(std::io::ErrorKind::Unsupported.into())
}

/// Entry `key` of the process's auxiliary vector (`/proc/self/auxv`: native word pairs), if > 0.
#[cfg(all(target_os = "linux", target_pointer_width = "64"))]
fn auxv(key: u64) -> Option<u64> {
    let bytes = std::fs::read("/proc/self/auxv").ok()?;
    let word = |b: &[u8]| u64::from_ne_bytes(b.try_into().unwrap_or_default());
    bytes
        .chunks_exact(16)
        .map(|pair| (word(&pair[..8]), word(&pair[8..])))
        .find(|&(k, v)| k == key && v > 0)
        .map(|(_, v)| v)
}

#[cfg(all(target_os = "linux", not(target_pointer_width = "64")))]
fn auxv(_key: u64) -> Option<u64> {
    None
}

/// `AT_PAGESZ` and `AT_CLKTCK`: the auxiliary vector's page size and clock tick rate, as `sysconf`.
#[cfg(target_os = "linux")]
const AT_PAGESZ: u64 = 6;
#[cfg(target_os = "linux")]
const AT_CLKTCK: u64 = 17;

/// Clock ticks per second, as `/proc` times are counted (100 on Linux).
#[cfg(target_os = "linux")]
pub fn clock_ticks_per_second() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| auxv(AT_CLKTCK).map_or(100.0, |v| v as f64))
}

#[cfg(target_os = "linux")]
pub fn page_size() -> f64 {
    static PAGE: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *PAGE.get_or_init(|| auxv(AT_PAGESZ).map_or(4096.0, |v| v as f64))
}

/// Caps the kernel's send buffer of `stream` at about `bytes` (Linux doubles the value for its
/// bookkeeping), so that a client that stops reading holds little memory and is found out soon.
#[cfg(target_os = "linux")]
pub fn set_send_buffer(stream: &std::net::TcpStream, bytes: usize) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    if ffi::MIPS || ffi::SPARC {
        return Ok(());
    }
    let value = std::ffi::c_int::try_from(bytes).unwrap_or(std::ffi::c_int::MAX);
    // SAFETY: the fd is a live socket owned by `stream` for the whole call, and the option value
    // points to a c_int that outlives the call, with its exact size passed as the length.
    let rc = unsafe {
        ffi::setsockopt(
            stream.as_raw_fd(),
            ffi::SOL_SOCKET,
            ffi::SO_SNDBUF,
            (&value as *const std::ffi::c_int).cast(),
            std::mem::size_of::<std::ffi::c_int>() as u32,
        )
    };
    match rc {
        0 => Ok(()),
        _ => Err(std::io::Error::last_os_error()),
    }
}

#[cfg(not(target_os = "linux"))]
pub fn set_send_buffer(_stream: &std::net::TcpStream, _bytes: usize) -> std::io::Result<()> {
    Ok(())
}

/// The CRC-32C state `crc` extended by `bytes` (as `crc32c::extend` defines it) with the
/// processor's own instruction, or `None` where it has none. With the tables alone, checking every
/// record's checksum was a tenth of a large store's start; the instruction takes about eight bytes
/// a cycle. `crc32c`'s tests check it against the tables.
#[cfg(target_arch = "x86_64")]
pub fn crc32c_extend(crc: u32, bytes: &[u8]) -> Option<u32> {
    if !std::arch::is_x86_feature_detected!("sse4.2") {
        return None;
    }
    // SAFETY: `crc32c_sse42` needs only SSE 4.2, which the processor was just found to have.
    Some(unsafe { crc32c_sse42(crc, bytes) })
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "sse4.2")]
fn crc32c_sse42(crc: u32, bytes: &[u8]) -> u32 {
    use std::arch::x86_64::{_mm_crc32_u64, _mm_crc32_u8};
    let mut wide = u64::from(crc);
    // Words as arrays: `chunks_exact`'s iterator is not inlined at the
    // release profile's opt-level, a call per eight bytes.
    let (words, rest) = bytes.as_chunks::<8>();
    for word in words {
        wide = _mm_crc32_u64(wide, u64::from_le_bytes(*word));
    }
    // The instruction leaves the 32-bit state in the low half.
    let mut crc = wide as u32;
    for &b in rest {
        crc = _mm_crc32_u8(crc, b);
    }
    crc
}

#[cfg(not(target_arch = "x86_64"))]
pub fn crc32c_extend(_crc: u32, _bytes: &[u8]) -> Option<u32> {
    None
}

/// Caps glibc's malloc arenas. glibc gives busy threads arenas of their own, each keeping touched
/// pages, which is most of an idle server's private memory; two arenas are plenty for a few worker
/// threads.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub fn limit_malloc_arenas(arenas: i32) {
    // SAFETY: mallopt takes two integers and only adjusts allocator settings, any time, any thread.
    unsafe {
        ffi::mallopt(ffi::M_ARENA_MAX, arenas);
    }
}

/// Other allocators manage their own arenas.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn limit_malloc_arenas(_arenas: i32) {}

#[cfg(target_os = "linux")]
fn stop_signals() -> ffi::SigSet {
    let mut set = ffi::SigSet([0; 16]);
    for sig in [ffi::SIGINT, ffi::SIGTERM] {
        set.0[(sig as usize - 1) / 64] |= 1 << ((sig as usize - 1) % 64);
    }
    set
}

/// Blocks SIGTERM and SIGINT in the calling thread, and so in every thread it starts afterwards, so
/// that they wait for [`wait_for_stop_signal`] instead of killing the process. Call it first thing,
/// before any thread starts. On failure the signals still kill.
#[cfg(target_os = "linux")]
pub fn block_stop_signals() -> std::io::Result<()> {
    let set = stop_signals();
    // SAFETY: the set is a live local laid out as `sigset_t`, only read; a null old set is allowed.
    let rc = unsafe { ffi::pthread_sigmask(ffi::SIG_BLOCK, &set, std::ptr::null_mut()) };
    match rc {
        0 => Ok(()),
        errno => Err(std::io::Error::from_raw_os_error(errno)),
    }
}

/// Waits for SIGTERM or SIGINT and returns its name; meaningful after [`block_stop_signals`].
#[cfg(target_os = "linux")]
pub fn wait_for_stop_signal() -> std::io::Result<&'static str> {
    let set = stop_signals();
    let mut sig: std::ffi::c_int = 0;
    // SAFETY: sigwait reads the set and writes one c_int, both live locals outliving the call.
    let rc = unsafe { ffi::sigwait(&set, &mut sig) };
    match (rc, sig) {
        (0, ffi::SIGINT) => Ok("SIGINT"),
        (0, _) => Ok("SIGTERM"),
        (errno, _) => Err(std::io::Error::from_raw_os_error(errno)),
    }
}

/// Elsewhere the signals keep their default action, and there is nothing to wait for.
#[cfg(not(target_os = "linux"))]
pub fn block_stop_signals() -> std::io::Result<()> {
    Err(std::io::ErrorKind::Unsupported.into())
}

#[cfg(not(target_os = "linux"))]
pub fn wait_for_stop_signal() -> std::io::Result<&'static str> {
    Err(std::io::ErrorKind::Unsupported.into())
}

#[cfg(test)]
#[cfg(all(target_os = "linux", target_pointer_width = "64"))]
mod tests {
    #[test]
    fn fd_limits_are_read_from_the_limits_table() {
        let text = "Limit                     Soft Limit           Hard Limit           Units\n\
                    Max processes             63704                63704                processes\n\
                    Max open files            1024                 524288               files\n";
        let limits = super::parse_fd_limits(text).unwrap();
        assert_eq!((limits.soft, limits.hard), (1024, 524288));
        let text = "Max open files            unlimited            unlimited            files\n";
        let limits = super::parse_fd_limits(text).unwrap();
        assert_eq!((limits.soft, limits.hard), (u64::MAX, u64::MAX));
        assert!(super::parse_fd_limits("Max processes 1 2 processes\n").is_none());
    }

    #[test]
    fn auxiliary_vector_values_are_sane() {
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
