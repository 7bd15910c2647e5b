//! The llamafile runtime as a library: model loading, the forward pass, sampling and chat templates.

pub mod bench;
pub mod chat;
pub(crate) mod chat_input;
pub mod chat_template;
pub mod completion;
pub mod config;
pub(crate) mod constraint;
pub mod engine;
pub mod flags;
#[doc(hidden)]
pub mod fuzzing;
pub(crate) mod generator;
pub(crate) mod grammar;
pub(crate) mod intake;
pub(crate) mod jobs;
pub(crate) mod json_schema;
pub mod load;
pub(crate) mod memory_budget;
pub mod messages;
pub mod model;
pub mod sampling;
pub(crate) mod scheduler;
pub mod server;
pub(crate) mod timings;
pub(crate) mod tools;

/// The default thread count, as llama.cpp picks it: the physical cores, since hyper-threads share
/// one core's arithmetic units and counting them slows matrix multiplication down; on a Mac the
/// performance cores only, since a matrix product split evenly waits for its slowest share, and
/// an efficiency core's share comes last.
pub fn physical_cores() -> usize {
    let logical = std::thread::available_parallelism().map_or(1, |n| n.get());
    #[cfg(target_os = "linux")]
    let cores = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| cores_in_cpuinfo(&info));
    #[cfg(target_vendor = "apple")]
    let cores = apple_sysctl_count(c"hw.perflevel0.physicalcpu")
        .or_else(|| apple_sysctl_count(c"hw.physicalcpu"));
    #[cfg(not(any(target_os = "linux", target_vendor = "apple")))]
    let cores = None;
    cores.map_or(logical, |n| n.min(logical))
}

/// The distinct (physical id, core id) pairs in Linux's /proc/cpuinfo; None when it names none
/// (some ARM kernels, some containers).
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
fn cores_in_cpuinfo(info: &str) -> Option<usize> {
    let mut cores = std::collections::HashSet::new();
    let mut physical_id = "";
    for line in info.lines() {
        let mut kv = line.splitn(2, ':').map(str::trim);
        match (kv.next(), kv.next()) {
            (Some("physical id"), Some(v)) => physical_id = v,
            (Some("core id"), Some(v)) => {
                cores.insert((physical_id, v));
            }
            _ => {}
        }
    }
    (!cores.is_empty()).then_some(cores.len())
}

/// A positive count from macOS's `sysctlbyname` (`hw.perflevel0.physicalcpu`: performance cores,
/// macOS 12 and later; `hw.physicalcpu`: all cores). None where the name is unknown.
#[cfg(target_vendor = "apple")]
fn apple_sysctl_count(name: &std::ffi::CStr) -> Option<usize> {
    let mut value: libc::c_int = 0;
    let mut size = std::mem::size_of::<libc::c_int>();
    // SAFETY: the name is NUL-terminated, and `value`/`size` describe a buffer of that many bytes,
    // which is all sysctlbyname writes; nothing is set (new value null, length 0).
    let status = unsafe {
        libc::sysctlbyname(
            name.as_ptr(),
            (&mut value as *mut libc::c_int).cast(),
            &mut size,
            std::ptr::null_mut(),
            0,
        )
    };
    (status == 0 && size == std::mem::size_of::<libc::c_int>() && value > 0).then(|| value as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpuinfo_counts_cores_not_hyperthreads() {
        // Two sockets, two cores each, two hyper-threads per core: four cores.
        let mut info = String::new();
        for (socket, core) in [
            (0, 0),
            (0, 0),
            (0, 1),
            (0, 1),
            (1, 0),
            (1, 0),
            (1, 1),
            (1, 1),
        ] {
            info += &format!("processor\t: x\nphysical id\t: {socket}\ncore id\t\t: {core}\n\n");
        }
        assert_eq!(cores_in_cpuinfo(&info), Some(4));
        assert_eq!(
            cores_in_cpuinfo("processor\t: 0\nBogoMIPS\t: 50.00\n"),
            None
        );
        assert!(physical_cores() >= 1);
    }
}
