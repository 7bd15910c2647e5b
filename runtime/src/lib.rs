//! The llamafile runtime as a library: model loading, the forward pass, sampling and chat templates.

pub mod bench;
pub mod chat;
pub mod chat_template;
pub mod completion;
pub mod config;
pub mod engine;
pub mod flags;
#[doc(hidden)]
pub mod fuzzing;
pub(crate) mod generator;
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

/// Physical cores (llama.cpp's default thread count): hyper-threads share one core's arithmetic
/// units, so counting them slows matrix multiplication down.
pub fn physical_cores() -> usize {
    let logical = std::thread::available_parallelism().map_or(1, |n| n.get());
    #[cfg(target_os = "linux")]
    if let Ok(info) = std::fs::read_to_string("/proc/cpuinfo") {
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
        if !cores.is_empty() {
            return cores.len().min(logical);
        }
    }
    logical
}
