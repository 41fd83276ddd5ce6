//! What `/proc` says about a process: CPU time (user + system, every
//! thread, from `/proc/PID/stat`) and memory (`VmRSS`, `VmHWM`).

use anyhow::{Context, bail};

/// Clock ticks per second of `/proc/PID/stat` times.
fn ticks_per_second() -> u64 {
    match nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK) {
        Ok(Some(ticks)) if ticks > 0 => ticks as u64,
        _ => 100,
    }
}

/// CPU time the process has used so far (user + system, all threads), in
/// microseconds.
pub fn cpu_micros(pid: u32) -> anyhow::Result<u64> {
    let path = format!("/proc/{pid}/stat");
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    // the command name may hold spaces and parentheses: fields start after the last ')'
    let Some((_, rest)) = text.rsplit_once(')') else {
        bail!("{path}: no `)` in {text:?}");
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // fields[0] is field 3 (state); utime is field 14, stime field 15
    let field = |index: usize| -> anyhow::Result<u64> {
        fields
            .get(index)
            .with_context(|| format!("{path}: too few fields"))?
            .parse::<u64>()
            .with_context(|| format!("{path}: field {} is not a number", index + 3))
    };
    let ticks = field(11)? + field(12)?;
    Ok(ticks * 1_000_000 / ticks_per_second())
}

/// A `Vm*` line of `/proc/PID/status`, in KiB (`VmRSS`, `VmHWM`).
pub fn status_kib(pid: u32, key: &str) -> anyhow::Result<u64> {
    let path = format!("/proc/{pid}/status");
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix(key).and_then(|r| r.strip_prefix(':')) {
            let number = rest.trim().trim_end_matches("kB").trim();
            return number
                .parse()
                .with_context(|| format!("{path}: {key} is not a number: {rest:?}"));
        }
    }
    bail!("{path}: no {key} line")
}

/// The pids of every process whose parent is `parent` (PostgreSQL's
/// backends under its postmaster).
pub fn children_of(parent: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut children = Vec::new();
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let ppid = text
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        if ppid == Some(parent) {
            children.push(pid);
        }
    }
    children
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_has_cpu_time_and_memory() {
        let me = std::process::id();
        let mut x = 0u64;
        for i in 0..5_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        assert!(cpu_micros(me).is_ok());
        assert!(status_kib(me, "VmRSS").unwrap() > 0);
        assert!(status_kib(me, "VmHWM").unwrap() > 0);
    }
}
