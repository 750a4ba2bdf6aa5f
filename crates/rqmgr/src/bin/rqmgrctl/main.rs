//! rqmgrctl: switch a Postfix instance between its stock queue manager and
//! rqmgr, and back; and see inside a running rqmgr.
//!
//! `enable` points master.cf's `qmgr` service (type unix) at rqmgr with
//! Postfix's own `postconf -F`, keeping a copy of what was there under the
//! instance's data_directory; `disable` puts that back byte for byte. Both
//! reload a running Postfix and check that the new queue manager runs, and
//! both are idempotent. `status`, `transports`, `destinations`, `jobs` and
//! `metrics` ask the running rqmgr on its admin socket (show.rs). See
//! rqmgrctl(1).
//!
//! Invariant: master.cf always names a queue manager; every write of a
//! file here is atomic (write, fsync, rename).

mod client;
mod instance;
mod show;
mod switch;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Command-line interface.
#[derive(Parser)]
#[command(
    name = "rqmgrctl",
    version,
    about = "Switch Postfix's queue manager to rqmgr and back"
)]
struct Cli {
    /// The Postfix instance's configuration directory.
    #[arg(short = 'c', value_name = "config_dir", default_value = "/etc/postfix")]
    config_dir: PathBuf,
    /// Print the change to master.cf and do nothing.
    #[arg(short = 'n', long = "dry-run", global = true)]
    dry_run: bool,
    /// Print what rqmgr answered as JSON instead of a table.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Make rqmgr the instance's queue manager.
    Enable,
    /// Put the instance's own queue manager back.
    Disable,
    /// Say which queue manager the instance runs, and rqmgr's totals.
    Status,
    /// rqmgr's transports.
    Transports,
    /// rqmgr's destinations, those with most waiting recipients first.
    Destinations {
        /// Only this transport's.
        #[arg(long)]
        transport: Option<String>,
        /// Only this next hop (with --transport).
        #[arg(long)]
        nexthop: Option<String>,
        /// At most this many.
        #[arg(long, default_value_t = 100)]
        top: usize,
    },
    /// rqmgr's jobs (messages per transport).
    Jobs {
        /// Only this transport's.
        #[arg(long)]
        transport: Option<String>,
        /// At most this many.
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// rqmgr's Prometheus metrics.
    Metrics,
    /// Forget that a transport, or one destination, is dead (as the `F`
    /// trigger does, for that one only): TRANSPORT or TRANSPORT:NEXTHOP,
    /// as `destinations` shows them.
    Unthrottle {
        /// `smtp` or `smtp:[mx.example]:25`.
        dest: String,
    },
    /// Change a transport's limit while rqmgr runs: concurrency=N or
    /// recipient_limit=N (until rqmgr restarts).
    Set {
        /// The transport, e.g. `smtp`.
        transport: String,
        /// `concurrency=N` or `recipient_limit=N`.
        setting: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = instance::Instance::open(&cli.config_dir).and_then(|inst| match cli.command {
        Command::Enable => switch::enable(&inst, cli.dry_run),
        Command::Disable => switch::disable(&inst, cli.dry_run),
        Command::Status => switch::status(&inst, cli.json),
        Command::Transports => show::show(&inst, &show::View::Transports, cli.json),
        Command::Destinations {
            transport,
            nexthop,
            top,
        } => show::show(
            &inst,
            &show::View::Destinations {
                transport,
                nexthop,
                top,
            },
            cli.json,
        ),
        Command::Jobs { transport, limit } => {
            show::show(&inst, &show::View::Jobs { transport, limit }, cli.json)
        }
        Command::Metrics => show::show(&inst, &show::View::Metrics, cli.json),
        Command::Unthrottle { dest } => unthrottle(&inst, &dest),
        Command::Set { transport, setting } => set(&inst, &transport, &setting),
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rqmgrctl: error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `rqmgrctl unthrottle DEST`.
fn unthrottle(inst: &instance::Instance, dest: &str) -> Result<(), String> {
    let (transport, nexthop) = match dest.split_once(':') {
        Some((t, n)) => (t, Some(n)),
        None => (dest, None),
    };
    let mut path = format!("/unthrottle?transport={}", client::encode(transport));
    if let Some(n) = nexthop {
        path += &format!("&nexthop={}", client::encode(n));
    }
    let body = client::post(inst, &path)?;
    let revived = serde_json::from_str::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v["revived"].as_u64())
        .unwrap_or(0);
    let mut out = std::io::stdout().lock();
    let _ = std::io::Write::write_fmt(&mut out, format_args!("{dest}: {revived} revived\n"));
    Ok(())
}

/// `rqmgrctl set TRANSPORT NAME=N`.
fn set(inst: &instance::Instance, transport: &str, setting: &str) -> Result<(), String> {
    if transport.contains(':') {
        return Err("only a whole transport's limits can be set so far".to_owned());
    }
    let Some((name, value)) = setting.split_once('=') else {
        return Err(format!(
            "{setting:?}: use concurrency=N or recipient_limit=N"
        ));
    };
    if !matches!(name, "concurrency" | "recipient_limit") || value.parse::<u32>().is_err() {
        return Err(format!(
            "{setting:?}: use concurrency=N or recipient_limit=N"
        ));
    }
    let path = format!(
        "/set?transport={}&{name}={value}",
        client::encode(transport)
    );
    let body = client::post(inst, &path)?;
    let v: serde_json::Value =
        serde_json::from_str(&body).map_err(|e| format!("rqmgr's answer is not JSON: {e}"))?;
    if let Some(e) = v.get("error").and_then(|e| e.as_str()) {
        return Err(format!("{transport}: {e}"));
    }
    let mut out = std::io::stdout().lock();
    let _ = std::io::Write::write_fmt(&mut out, format_args!("{transport}: {name}={value}\n"));
    Ok(())
}
