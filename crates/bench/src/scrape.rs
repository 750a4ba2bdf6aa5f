//! A scraper for rqmgr runs (`--scrape-every-ms`): while the queue
//! manager works, it asks rqmgr's admin socket for `/metrics` and the top
//! destinations at a fixed interval, as Prometheus and an operator would,
//! and keeps the answer times. The runs then show what such polling costs
//! the drain, and the answer times bound what one scrape costs the
//! delivery loop (an answer waits for the loop's current event, then the
//! loop builds it).
//!
//! Invariants: the thread stops and is joined when the [`Scraper`] is
//! dropped; a failed request is counted, never fatal (the queue manager
//! may be restarting).

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What the scrapes of one run saw.
#[derive(Debug, Default, Clone)]
pub(crate) struct ScrapeStats {
    /// Answer times in milliseconds.
    pub answers_ms: Vec<f64>,
    /// Requests that got no answer.
    pub failures: usize,
    /// The last `/metrics` body: rqmgr's own account of its answers.
    pub last_metrics: String,
}

impl ScrapeStats {
    /// "N scrapes, median X ms, max Y ms, F failed".
    pub(crate) fn summary(&self) -> String {
        let mut v = self.answers_ms.clone();
        v.sort_by(f64::total_cmp);
        let median = v.get(v.len() / 2).copied().unwrap_or(0.0);
        let max = v.last().copied().unwrap_or(0.0);
        format!(
            "{} answers, median {median:.2} ms, max {max:.2} ms, {} failed; in the loop: {}",
            v.len(),
            self.failures,
            self.loop_cost()
        )
    }

    /// rqmgr's own count of the time its loop spent on answers (the
    /// `rqmgr_admin_answer_seconds` histogram of the last scrape): mean
    /// per endpoint, and the smallest bucket bound that holds them all.
    fn loop_cost(&self) -> String {
        let mut parts = Vec::new();
        for endpoint in ["metrics", "destinations"] {
            let value = |suffix: &str| {
                let series =
                    format!("rqmgr_admin_answer_seconds_{suffix}{{endpoint=\"{endpoint}\"}} ");
                self.last_metrics
                    .lines()
                    .find_map(|l| l.strip_prefix(&series)?.trim().parse::<f64>().ok())
            };
            let (Some(sum), Some(count)) = (value("sum"), value("count")) else {
                continue;
            };
            let bound = self.last_metrics.lines().find_map(|l| {
                let rest = l.strip_prefix("rqmgr_admin_answer_seconds_bucket{")?;
                if !rest.contains(&format!("endpoint=\"{endpoint}\"")) {
                    return None;
                }
                let le = rest.split("le=\"").nth(1)?.split('"').next()?;
                let n: f64 = rest.rsplit(' ').next()?.parse().ok()?;
                (n >= count).then(|| le.to_owned())
            });
            parts.push(format!(
                "{endpoint} mean {:.2} ms (all under {} s)",
                sum / count.max(1.0) * 1000.0,
                bound.unwrap_or_else(|| "?".into())
            ));
        }
        parts.join(", ")
    }
}

/// A running scraper; see the module documentation.
pub(crate) struct Scraper {
    stop: Arc<AtomicBool>,
    stats: Arc<Mutex<ScrapeStats>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Scraper {
    /// Starts asking the socket at `socket` every `every`.
    pub(crate) fn start(socket: PathBuf, every: Duration) -> Scraper {
        let stop = Arc::new(AtomicBool::new(false));
        let stats = Arc::new(Mutex::new(ScrapeStats::default()));
        let (flag, out) = (Arc::clone(&stop), Arc::clone(&stats));
        let thread = std::thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                for path in ["/metrics", "/destinations?top=50"] {
                    let t = Instant::now();
                    let body = get(&socket, path);
                    let mut s = out.lock().unwrap_or_else(|e| e.into_inner());
                    match body {
                        Some(body) => {
                            s.answers_ms.push(t.elapsed().as_secs_f64() * 1000.0);
                            if path == "/metrics" {
                                s.last_metrics = body;
                            }
                        }
                        None => s.failures += 1,
                    }
                }
                let until = Instant::now() + every;
                while Instant::now() < until && !flag.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        });
        Scraper {
            stop,
            stats,
            thread: Some(thread),
        }
    }

    /// Stops and returns what was seen.
    pub(crate) fn finish(mut self) -> ScrapeStats {
        self.halt();
        self.stats.lock().map(|s| s.clone()).unwrap_or_default()
    }

    fn halt(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Scraper {
    fn drop(&mut self) {
        self.halt();
    }
}

/// One GET; the whole answer if it was a 200.
fn get(socket: &PathBuf, path: &str) -> Option<String> {
    request(socket, "GET", path)
}

/// One request on the admin socket; the answer if it was 200.
pub(crate) fn request(socket: &PathBuf, method: &str, path: &str) -> Option<String> {
    let mut s = UnixStream::connect(socket).ok()?;
    let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
    let request = format!("{method} {path} HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n");
    s.write_all(request.as_bytes()).ok()?;
    let mut answer = String::new();
    s.read_to_string(&mut answer).ok()?;
    answer.starts_with("HTTP/1.1 200").then_some(answer)
}
