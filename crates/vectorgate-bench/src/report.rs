//! Where results go: a table on stdout and JSON under `bench-results/`.

use std::path::PathBuf;

/// Machine facts printed with every result.
pub fn machine() -> serde_json::Value {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    // The load when the run ended: on a shared machine, read figures with it.
    let load = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|| "unknown".into());
    serde_json::json!({ "cpu": cpu, "cores": cores, "loadavg_1_5_15": load })
}

/// Writes `value` to `bench-results/<name>.json`; returns the path.
pub fn save(name: &str, value: &serde_json::Value) -> std::io::Result<PathBuf> {
    let dir = PathBuf::from("bench-results");
    std::fs::create_dir_all(&dir)?;
    let path = dir.join(format!("{name}.json"));
    let text = serde_json::to_string_pretty(value).map_err(std::io::Error::other)?;
    std::fs::write(&path, text)?;
    Ok(path)
}
