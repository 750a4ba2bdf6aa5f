//! Cheap observation of a running instance: the queue manager's CPU time and
//! memory from `/proc`, and counts of interesting mail-log lines.
//!
//! Job: let the measuring loop poll often (every few tens of milliseconds)
//! without disturbing the queue manager it measures. Reading one
//! `/proc/PID/stat` and the bytes appended to the mail log since the last
//! poll costs microseconds; walking a queue directory of 100,000 files would
//! cost tens of milliseconds, so the loop only does that once, to confirm.
//!
//! Invariants: CPU time of a queue manager that exits (master restarts it) is
//! not lost: [`QmgrTracker`] keeps the last reading of every pid it saw and
//! counts the restarts. Log lines are counted exactly once, also when a poll
//! sees half a line.
//!
//! Limits: Linux only. The last reading of a process that died is at most
//! one poll interval old, so its final slice of CPU time can be missed; such
//! runs are flagged by a non-zero restart count.

use rqmgr_harness::Instance;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::BenchResult;

/// Kernel clock ticks per second (`getconf CLK_TCK`), for `/proc/PID/stat`.
pub(crate) fn clock_ticks() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

/// One reading of a process's `/proc` files.
#[derive(Debug, Clone, Copy, Default)]
struct ProcSample {
    /// utime + stime, in seconds.
    pub cpu: f64,
    /// utime alone (user space), in seconds.
    pub user: f64,
    /// Start time since boot, in seconds.
    pub start_since_boot: f64,
    /// Peak resident set size (VmHWM), in kB.
    pub hwm_kb: u64,
    /// Context switches (voluntary + involuntary).
    pub ctxsw: u64,
}

/// Reads `/proc/PID/stat` (and `status` when `with_mem`); `None` when the
/// process is gone or a zombie.
fn sample(pid: i32, ticks: f64, with_mem: bool) -> Option<ProcSample> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name, which may contain spaces.
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    if f.first() == Some(&"Z") || f.len() < 20 {
        return None;
    }
    // Field numbers per proc(5): 14 utime, 15 stime, 22 starttime; `rest`
    // starts at field 3.
    let num = |i: usize| f[i - 3].parse::<f64>().unwrap_or(0.0);
    let mut s = ProcSample {
        cpu: (num(14) + num(15)) / ticks,
        user: num(14) / ticks,
        start_since_boot: num(22) / ticks,
        hwm_kb: 0,
        ctxsw: 0,
    };
    if with_mem {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let field = |name: &str| -> u64 {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
                .unwrap_or(0)
        };
        s.hwm_kb = field("VmHWM:");
        s.ctxsw = field("voluntary_ctxt_switches:") + field("nonvoluntary_ctxt_switches:");
    }
    Some(s)
}

/// Seconds since boot, from `/proc/uptime`.
fn uptime() -> f64 {
    std::fs::read_to_string("/proc/uptime")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0)
}

/// The host's CPU model as the guest sees it (`model name` in
/// `/proc/cpuinfo`), for the run's header: hosts of one kind differ by
/// CPU, and their results only compare within one.
pub(crate) fn cpu_model() -> String {
    let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    model_name(&info).unwrap_or("unknown CPU").to_owned()
}

fn model_name(cpuinfo: &str) -> Option<&str> {
    cpuinfo.lines().find_map(|l| {
        let (key, value) = l.split_once(':')?;
        (key.trim() == "model name").then(|| value.trim())
    })
}

/// The machine's CPU counters (first line of `/proc/stat`, all CPUs
/// together), in seconds: since boot, or over a span.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct MachineCpu {
    /// Time spent running anything: user, nice, system, irq and softirq.
    /// Over a run it says whether the whole instance kept both vCPUs busy,
    /// which bounds a drain's wall time more than the queue manager does.
    pub busy: f64,
    /// Time the hypervisor gave to others while this machine's CPUs
    /// wanted it (`steal`). A run during which it grows was slowed by the
    /// host, not by the code.
    pub steal: f64,
}

impl MachineCpu {
    fn now(ticks: f64) -> MachineCpu {
        let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
        // cpu user nice system idle iowait irq softirq steal ...
        let f: Vec<f64> = stat
            .lines()
            .next()
            .unwrap_or_default()
            .split_whitespace()
            .skip(1)
            .take(8)
            .map(|v| v.parse::<f64>().unwrap_or(0.0) / ticks)
            .collect();
        match f[..] {
            [user, nice, system, _idle, _iowait, irq, softirq, steal] => MachineCpu {
                busy: user + nice + system + irq + softirq,
                steal,
            },
            _ => MachineCpu::default(),
        }
    }

    /// What was spent since `earlier`.
    pub(crate) fn since(self, earlier: MachineCpu) -> MachineCpu {
        MachineCpu {
            busy: (self.busy - earlier.busy).max(0.0),
            steal: (self.steal - earlier.steal).max(0.0),
        }
    }
}

/// Follows the queue manager process(es) of one instance across restarts.
#[derive(Debug)]
pub(crate) struct QmgrTracker {
    ticks: f64,
    pid: i32,
    last: ProcSample,
    /// CPU seconds of queue manager processes that already exited.
    dead_cpu: f64,
    /// The user-space part of `dead_cpu`.
    dead_user: f64,
    /// Highest VmHWM seen in any of them, kB.
    dead_hwm: u64,
    /// Context switches of those that exited.
    dead_ctxsw: u64,
    /// How many times a new queue manager process replaced the old one.
    pub restarts: u32,
    /// When the first queue manager process started (its /proc start time,
    /// converted to this process's monotonic clock).
    pub started: Instant,
    /// The machine's counters when following began.
    machine_at_start: MachineCpu,
}

impl QmgrTracker {
    /// Waits for the instance's queue manager and starts following it.
    pub(crate) fn attach(inst: &Instance, ticks: f64) -> BenchResult<QmgrTracker> {
        let pid = inst.wait_for_qmgr(Duration::from_secs(60))?;
        let last = sample(pid, ticks, true).ok_or("queue manager vanished at start")?;
        let age = (uptime() - last.start_since_boot).max(0.0);
        let started = Instant::now()
            .checked_sub(Duration::from_secs_f64(age))
            .unwrap_or_else(Instant::now);
        Ok(QmgrTracker {
            ticks,
            pid,
            last,
            dead_cpu: 0.0,
            dead_user: 0.0,
            dead_hwm: 0,
            dead_ctxsw: 0,
            restarts: 0,
            started,
            machine_at_start: MachineCpu::now(ticks),
        })
    }

    /// What the whole machine spent since following began: the queue
    /// manager, Postfix's other daemons, the bench's own poller, and the
    /// host's steal.
    pub(crate) fn machine(&self) -> MachineCpu {
        MachineCpu::now(self.ticks).since(self.machine_at_start)
    }

    /// The pid currently followed.
    pub(crate) fn pid(&self) -> i32 {
        self.pid
    }

    /// Takes a reading (memory too when `with_mem`); switches to a new
    /// queue manager process when the old one is gone.
    pub(crate) fn poll(&mut self, inst: &Instance, with_mem: bool) {
        if let Some(s) = sample(self.pid, self.ticks, with_mem) {
            if with_mem {
                self.last = s;
            } else {
                self.last = ProcSample {
                    hwm_kb: self.last.hwm_kb,
                    ctxsw: self.last.ctxsw,
                    ..s
                };
            }
            return;
        }
        // Gone: bank what we know and look for its successor.
        self.dead_cpu += self.last.cpu;
        self.dead_user += self.last.user;
        self.dead_hwm = self.dead_hwm.max(self.last.hwm_kb);
        self.dead_ctxsw += self.last.ctxsw;
        if let Some(&p) = inst.qmgr_pids().first() {
            self.pid = p;
            self.restarts += 1;
            self.last = sample(p, self.ticks, true).unwrap_or_default();
        } else {
            self.last = ProcSample::default();
        }
    }

    /// Total CPU seconds of all queue manager processes so far.
    pub(crate) fn cpu(&self) -> f64 {
        self.dead_cpu + self.last.cpu
    }

    /// User-space CPU seconds of all queue manager processes so far.
    pub(crate) fn user(&self) -> f64 {
        self.dead_user + self.last.user
    }

    /// Context switches of all queue manager processes, as of the last
    /// memory reading.
    pub(crate) fn ctxsw(&self) -> u64 {
        self.dead_ctxsw + self.last.ctxsw
    }

    /// Peak RSS over all queue manager processes so far, kB.
    pub(crate) fn hwm_kb(&self) -> u64 {
        self.dead_hwm.max(self.last.hwm_kb)
    }
}

/// Counts mail-log lines incrementally.
#[derive(Debug)]
pub(crate) struct LogCounter {
    path: PathBuf,
    offset: u64,
    partial: Vec<u8>,
    tag: String,
    /// Queue manager `ID: removed` lines so far.
    pub removed: usize,
    /// Queue manager `(queue active)` lines so far.
    pub activated: usize,
    /// The most messages in the active queue at once, as the log tells
    /// it: `activated - removed` after each line. Exact for the drains,
    /// where every message read is removed before the run ends and none
    /// is read twice.
    pub peak_active: usize,
    /// `activated - removed` summed after each counted line, and the
    /// number of such lines: their quotient is the mean occupancy over
    /// the queue manager's events. A peak says little where one burst
    /// fills `active/` for a moment; the mean says how full it kept it.
    active_sum: u64,
    active_samples: u64,
}

impl LogCounter {
    /// Counts lines of the program `program` (e.g. `postfix/qmgr`) in `path`.
    pub(crate) fn new(path: &Path, program: &str) -> LogCounter {
        LogCounter {
            path: path.to_path_buf(),
            offset: 0,
            partial: Vec::new(),
            tag: format!(" {program}["),
            removed: 0,
            activated: 0,
            peak_active: 0,
            active_sum: 0,
            active_samples: 0,
        }
    }

    /// The mean number of messages in the active queue over the counted
    /// lines (0 before any).
    pub(crate) fn mean_active(&self) -> f64 {
        // Precision: counts far below 2^52.
        #[allow(clippy::cast_precision_loss)]
        if self.active_samples == 0 {
            0.0
        } else {
            self.active_sum as f64 / self.active_samples as f64
        }
    }

    /// Starts the counts afresh from what is read next (the lines so far
    /// are passed over, not counted again).
    pub(crate) fn reset_counts(&mut self) {
        self.removed = 0;
        self.activated = 0;
        self.peak_active = 0;
        self.active_sum = 0;
        self.active_samples = 0;
    }

    /// Reads what was appended since the last call and counts its lines.
    pub(crate) fn poll(&mut self) {
        let Ok(mut f) = File::open(&self.path) else {
            return;
        };
        if f.seek(SeekFrom::Start(self.offset)).is_err() {
            return;
        }
        let mut buf = std::mem::take(&mut self.partial);
        let start = buf.len();
        if let Ok(n) = f.read_to_end(&mut buf) {
            self.offset += n as u64;
        }
        if buf.len() == start && start > 0 {
            self.partial = buf;
            return;
        }
        let complete = buf.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        for line in buf[..complete].split(|&b| b == b'\n') {
            let Ok(line) = std::str::from_utf8(line) else {
                continue;
            };
            if !line.contains(&self.tag) {
                continue;
            }
            if line.ends_with(": removed") {
                self.removed += 1;
            } else if line.ends_with("(queue active)") {
                self.activated += 1;
            } else {
                continue;
            }
            let active = self.activated.saturating_sub(self.removed);
            self.peak_active = self.peak_active.max(active);
            self.active_sum += active as u64;
            self.active_samples += 1;
        }
        self.partial = buf[complete..].to_vec();
    }
}

#[cfg(test)]
mod tests {
    use super::{model_name, LogCounter};

    #[test]
    fn log_counter_keeps_the_peak_of_the_active_queue() {
        let path = std::env::temp_dir().join(format!("rqmgr-bench-log-{}", std::process::id()));
        let line =
            |id: &str, what: &str| format!("Dec  3 10:00:00 h postfix/qmgr[7]: {id}: {what}\n");
        let active = "from=<a@b>, size=600, nrcpt=1 (queue active)";
        let mut text = String::new();
        for id in ["A", "B", "C"] {
            text.push_str(&line(id, active));
        }
        text.push_str(&line("A", "removed"));
        text.push_str(&line("B", "removed"));
        text.push_str(&line("D", active));
        // Another program's lines do not count.
        text.push_str("Dec  3 10:00:00 h postfix/discard[9]: E: removed\n");
        // The last line is cut short: it counts once complete.
        text.push_str("Dec  3 10:00:00 h postfix/qmgr[7]: C: rem");
        std::fs::write(&path, &text).unwrap();
        let mut log = LogCounter::new(&path, "postfix/qmgr");
        log.poll();
        assert_eq!((log.activated, log.removed, log.peak_active), (4, 2, 3));
        // After each line: 1, 2, 3, 2, 1, 2.
        assert!((log.mean_active() - 11.0 / 6.0).abs() < 1e-9);
        std::fs::write(&path, [text.as_bytes(), b"oved\n"].concat()).unwrap();
        log.poll();
        assert_eq!((log.activated, log.removed, log.peak_active), (4, 3, 3));
        assert!((log.mean_active() - 12.0 / 7.0).abs() < 1e-9);
        log.reset_counts();
        assert_eq!(log.mean_active(), 0.0);
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn model_name_is_the_first_cpus() {
        let info = "processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC\n\
                    \nprocessor\t: 1\nmodel name\t: Other\n";
        assert_eq!(model_name(info), Some("AMD EPYC"));
        assert_eq!(model_name("processor\t: 0\n"), None);
    }
}
