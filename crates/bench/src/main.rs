//! `rqmgr-bench`: rqmgr side by side with Postfix's qmgr and oqmgr.
//!
//! Job: run each workload (see [`workloads`]) on identical prepared queues
//! with each queue manager, alternating the queue managers within a round
//! (the order rotates from round to round, so none always runs first or
//! last), for several rounds; then print medians per (workload, queue
//! manager) and the ratios rqmgr / min(qmgr, oqmgr) as Markdown tables.
//!
//! Invariants: each run gets a fresh private instance (and sink), stopped
//! and removed when the run ends, whether it succeeded or not. A failed run
//! is reported and left out of the medians; the exit status is non-zero if
//! any run failed. Timings are measured, never asserted.
//!
//! Limits: must run as root with Postfix 3.7 or later installed (see
//! `scripts/bench.sh`); on a busy machine figures are noisy, which the
//! medians soften but do not remove.

mod prepare;
mod probe;
mod scrape;
mod workloads;

use clap::Parser;
use rqmgr_harness::QueueManager;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;
use workloads::{Measurement, RunConfig, Sizes, Workload};

/// Error type of the benchmark: anything printable.
pub type BenchResult<T> = Result<T, Box<dyn std::error::Error>>;

/// Benchmarks rqmgr against Postfix's qmgr and oqmgr on private instances.
#[derive(Debug, Parser)]
#[command(version)]
struct Cli {
    /// Rounds (each runs every workload with every queue manager).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Small sizes for a smoke run.
    #[arg(long)]
    quick: bool,
    /// Workloads to run (default: all).
    #[arg(long, value_enum, value_delimiter = ',')]
    workloads: Vec<Workload>,
    /// Queue managers to run (default: rqmgr,qmgr,oqmgr).
    #[arg(long, value_delimiter = ',', default_value = "rqmgr,qmgr,oqmgr")]
    qm: Vec<String>,
    /// The rqmgr binary (default: `rqmgr` next to this program).
    #[arg(long)]
    rqmgr: Option<PathBuf>,
    /// Poll interval of the measuring loop, in milliseconds.
    #[arg(long, default_value_t = 50)]
    poll_ms: u64,
    /// Record every queue manager with `perf record -g` into this directory.
    #[arg(long)]
    perf_dir: Option<PathBuf>,
    /// Sampling rate of `--perf-dir`, in Hz: higher for the short
    /// workloads, which give few samples at the default.
    #[arg(long, default_value_t = 499)]
    perf_freq: u32,
    /// Watch every queue manager with `strace -c -f` into this directory
    /// (for syscall counts; the timings of such a run mean nothing).
    #[arg(long)]
    strace_dir: Option<PathBuf>,
    /// Also write every single run as tab-separated values to this file.
    #[arg(long)]
    tsv: Option<PathBuf>,
    /// Override the message count of the large workloads (discard-large
    /// and deferred), e.g. to see how cost grows with queue size.
    #[arg(long)]
    large: Option<usize>,
    /// Override the recipient count of the fan-out, e.g. to see how a
    /// queue manager's memory grows with a message's size.
    #[arg(long)]
    fanout_rcpts: Option<usize>,
    /// Override the number of domains the fan-out's recipients spread over.
    #[arg(long)]
    fanout_domains: Option<usize>,
    /// A main.cf setting for every instance, as NAME=VALUE (repeatable),
    /// e.g. `qmgr_message_recipient_limit=100000`.
    #[arg(long = "main-cf", value_name = "NAME=VALUE")]
    main_cf: Vec<String>,
    /// Scrape rqmgr's admin socket (`/metrics` and the top destinations)
    /// this often during its runs, and print the answer times.
    #[arg(long)]
    scrape_every_ms: Option<u64>,
}

fn main() {
    let cli = Cli::parse();
    match real_main(cli) {
        Ok(true) => {}
        Ok(false) => std::process::exit(1),
        Err(e) => {
            eprintln!("rqmgr-bench: {e}");
            std::process::exit(2);
        }
    }
}

/// Runs everything; `Ok(false)` when some run failed.
fn real_main(cli: Cli) -> BenchResult<bool> {
    let install = rqmgr_harness::require_postfix()?;
    // Instances live in a parent directory of our own: sweeps of stray
    // test directories (`rqmgr-pf-*` directly in the temporary directory)
    // by concurrent test runs must not remove a benchmark's instance.
    if std::env::var_os(rqmgr_harness::TMPDIR_ENV).is_none() {
        let base = std::env::temp_dir().join("rqmgr-bench");
        std::fs::create_dir_all(&base)?;
        std::fs::set_permissions(&base, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
        std::env::set_var(rqmgr_harness::TMPDIR_ENV, &base);
    }
    let rqmgr = match &cli.rqmgr {
        Some(p) => p.clone(),
        None => std::env::current_exe()?.with_file_name("rqmgr"),
    };
    let mut qms = Vec::new();
    for name in &cli.qm {
        let qm = match name.as_str() {
            "rqmgr" => QueueManager::Rqmgr(rqmgr.clone()),
            "qmgr" => QueueManager::Stock,
            "oqmgr" => QueueManager::StockOqmgr,
            other => return Err(format!("unknown queue manager {other:?}").into()),
        };
        qms.push((name.clone(), qm));
    }
    let workloads = if cli.workloads.is_empty() {
        Workload::ALL.to_vec()
    } else {
        cli.workloads.clone()
    };
    for d in [&cli.perf_dir, &cli.strace_dir].into_iter().flatten() {
        std::fs::create_dir_all(d)?;
    }
    let mut sizes = if cli.quick {
        Sizes::quick()
    } else {
        Sizes::full()
    };
    if let Some(n) = cli.large {
        sizes.discard_large = n;
        sizes.deferred = n;
    }
    if let Some(n) = cli.fanout_domains {
        sizes.fanout_domains = n.max(1);
    }
    if let Some(n) = cli.fanout_rcpts {
        sizes.fanout_rcpts = n;
    }
    let cfg = RunConfig {
        sizes,
        poll: Duration::from_millis(cli.poll_ms.max(1)),
        ticks: probe::clock_ticks(),
        perf_dir: cli.perf_dir.clone(),
        perf_freq: cli.perf_freq,
        strace_dir: cli.strace_dir.clone(),
        scrape_every: cli.scrape_every_ms.map(Duration::from_millis),
        main_cf: cli
            .main_cf
            .iter()
            .map(|kv| {
                let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                (k.trim().to_owned(), v.trim().to_owned())
            })
            .collect(),
    };
    eprintln!(
        "rqmgr-bench: Postfix {} on {}, {} round(s), {} mode, rqmgr = {}",
        install.version,
        probe::cpu_model(),
        cli.rounds,
        if cli.quick { "quick" } else { "full" },
        rqmgr.display()
    );
    let mut tsv = match &cli.tsv {
        Some(p) => {
            let mut f = std::fs::File::create(p)?;
            writeln!(
                f,
                "round\tworkload\tqm\tunits\twall_s\tcpu_s\tuser_s\tcpu_per_unit_us\thwm_kb\trestarts\tctxsw\tsteal_s\tbusy_s\tpeak_active\tmean_active"
            )?;
            Some(f)
        }
        None => None,
    };

    let mut results: Vec<(String, Measurement)> = Vec::new();
    let mut failures = Vec::new();
    for round in 0..cli.rounds {
        for (wi, &w) in workloads.iter().enumerate() {
            // Rotate the order per round and workload: alternation without
            // a fixed first or last runner.
            let k = (round + wi) % qms.len().max(1);
            let order: Vec<_> = qms[k..].iter().chain(&qms[..k]).collect();
            for (label, qm) in order {
                eprint!("round {} {w:?} {label}: ", round + 1);
                match workloads::run(&cfg, w, qm, label, round) {
                    Ok(ms) => {
                        for m in ms {
                            eprint!(
                                "[{}: wall {:.2}s cpu {:.2}s (user {:.2}s) {:.0}us/unit rss {}kB active {} (mean {:.0}) ctxsw/unit {:.1} steal {:.2}s busy {:.2}s{}] ",
                                m.row,
                                m.wall,
                                m.cpu,
                                m.user,
                                per_unit_us(&m),
                                m.hwm_kb,
                                m.peak_active,
                                m.mean_active,
                                m.ctxsw as f64 / m.units.max(1) as f64,
                                m.steal,
                                m.busy,
                                if m.restarts > 0 {
                                    format!(" restarts {}", m.restarts)
                                } else {
                                    String::new()
                                }
                            );
                            if let Some(f) = tsv.as_mut() {
                                writeln!(
                                    f,
                                    "{}\t{}\t{label}\t{}\t{:.3}\t{:.3}\t{:.3}\t{:.1}\t{}\t{}\t{}\t{:.2}\t{:.2}\t{}\t{:.1}",
                                    round + 1,
                                    m.row,
                                    m.units,
                                    m.wall,
                                    m.cpu,
                                    m.user,
                                    per_unit_us(&m),
                                    m.hwm_kb,
                                    m.restarts,
                                    m.ctxsw,
                                    m.steal,
                                    m.busy,
                                    m.peak_active,
                                    m.mean_active
                                )?;
                            }
                            results.push((label.clone(), m));
                        }
                        eprintln!();
                    }
                    Err(e) => {
                        eprintln!("FAILED: {e}");
                        failures.push(format!("round {} {w:?} {label}: {e}", round + 1));
                    }
                }
            }
        }
    }
    let labels: Vec<String> = qms.iter().map(|(l, _)| l.clone()).collect();
    print!("{}", report(&results, &labels));
    for f in &failures {
        println!("FAILED: {f}");
    }
    Ok(failures.is_empty())
}

/// CPU microseconds per unit (message or recipient).
fn per_unit_us(m: &Measurement) -> f64 {
    m.cpu * 1e6 / m.units.max(1) as f64
}

/// Median of a non-empty list (mean of the middle two for even lengths).
fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        f64::NAN
    } else if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Medians of one (row, queue manager) cell.
#[derive(Debug, Clone, Copy)]
struct Cell {
    wall: f64,
    cpu: f64,
    per_unit: f64,
    hwm_mb: f64,
    peak_active: f64,
    mean_active: f64,
    restarts: u32,
    runs: usize,
}

/// The two Markdown tables: medians, then ratios.
fn report(results: &[(String, Measurement)], labels: &[String]) -> String {
    // Rows in first-seen order.
    let mut rows: Vec<String> = Vec::new();
    let mut cells: BTreeMap<(String, String), Vec<&Measurement>> = BTreeMap::new();
    for (label, m) in results {
        if !rows.contains(&m.row) {
            rows.push(m.row.clone());
        }
        cells
            .entry((m.row.clone(), label.clone()))
            .or_default()
            .push(m);
    }
    let cell = |row: &str, label: &str| -> Option<Cell> {
        let ms = cells.get(&(row.to_string(), label.to_string()))?;
        Some(Cell {
            wall: median(ms.iter().map(|m| m.wall).collect()),
            cpu: median(ms.iter().map(|m| m.cpu).collect()),
            per_unit: median(ms.iter().map(|m| per_unit_us(m)).collect()),
            hwm_mb: median(ms.iter().map(|m| m.hwm_kb as f64 / 1024.0).collect()),
            peak_active: median(ms.iter().map(|m| m.peak_active as f64).collect()),
            mean_active: median(ms.iter().map(|m| m.mean_active).collect()),
            restarts: ms.iter().map(|m| m.restarts).sum(),
            runs: ms.len(),
        })
    };
    let mut out = String::new();
    out.push_str("\n| workload | queue manager | wall s | qmgr CPU s | CPU/unit µs | peak RSS MB | peak active | mean active | runs | restarts |\n");
    out.push_str("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    for row in &rows {
        for label in labels {
            if let Some(c) = cell(row, label) {
                out.push_str(&format!(
                    "| {row} | {label} | {:.2} | {:.3} | {:.1} | {:.1} | {:.0} | {:.0} | {} | {} |\n",
                    c.wall,
                    c.cpu,
                    c.per_unit,
                    c.hwm_mb,
                    c.peak_active,
                    c.mean_active,
                    c.runs,
                    c.restarts
                ));
            }
        }
    }
    out.push_str(
        "\n| workload | wall rqmgr/min(stock) | CPU rqmgr/min(stock) | CPU rqmgr/qmgr | RSS rqmgr/min(stock) |\n",
    );
    out.push_str("|---|---:|---:|---:|---:|\n");
    let ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.2}", a / b),
        _ => "-".to_string(),
    };
    for row in &rows {
        let r = cell(row, "rqmgr");
        let q = cell(row, "qmgr");
        let o = cell(row, "oqmgr");
        let min = |f: fn(&Cell) -> f64| [q, o].iter().flatten().map(f).min_by(f64::total_cmp);
        out.push_str(&format!(
            "| {row} | {} | {} | {} | {} |\n",
            ratio(r.map(|c| c.wall), min(|c| c.wall)),
            ratio(r.map(|c| c.cpu), min(|c| c.cpu)),
            ratio(r.map(|c| c.cpu), q.map(|c| c.cpu)),
            ratio(r.map(|c| c.hwm_mb), min(|c| c.hwm_mb)),
        ));
    }
    out
}
