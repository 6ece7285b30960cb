//! What the benchmarks read about their own process, shared by `butterfly-bench` and the crates'
//! bench targets (`cargo bench -p butterfly-store-duckdb`, `-p butterfly-serve --bench fanout`).

/// CPU seconds this process has used so far, user and system, from `/proc/self/stat`; `None`
/// where there is no such file (not Linux).
pub fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line, 11 and 12 after the name; the
    // kernel counts them in USER_HZ, which is 100 on Linux.
    let ticks = |idx: usize| fields.get(idx)?.parse::<f64>().ok();
    Some((ticks(11)? + ticks(12)?) / 100.0)
}

/// This process's peak resident set size as `/proc/self/status` gives it (`VmHWM`, as
/// "123456 kB"); `None` where there is no such file.
pub fn peak_rss() -> Option<String> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|line| line.starts_with("VmHWM:"))?;
    Some(line.trim_start_matches("VmHWM:").trim().to_owned())
}
