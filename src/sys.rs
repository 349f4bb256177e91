//! The few libc calls std has no API for. Every `unsafe` block in the crate
//! lives here, each with the reason it is sound.

#[cfg(target_os = "linux")]
mod ffi {
    use std::ffi::c_int;
    use std::ffi::c_long;

    extern "C" {
        pub fn sysconf(name: c_int) -> c_long;
    }

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

#[cfg(all(test, target_os = "linux"))]
mod tests {
    #[test]
    fn sysconf_values_are_sane() {
        assert_eq!(super::clock_ticks_per_second(), 100.0);
        let page = super::page_size();
        assert!(page >= 4096.0 && (page as u64).is_power_of_two());
    }
}
