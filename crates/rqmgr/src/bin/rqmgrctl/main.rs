//! rqmgrctl: switch a Postfix instance between its stock queue manager and
//! rqmgr, and back; see inside a running rqmgr, and steer it.
//!
//! `enable` points master.cf's `qmgr` service (type unix) at rqmgr with
//! Postfix's own `postconf -F`, keeping a copy of what was there under the
//! instance's config_directory; `disable` puts that back byte for byte. Both
//! reload a running Postfix and check that the new queue manager runs, and
//! both are idempotent. `status`, `transports`, `destinations`, `jobs` and
//! `metrics` ask the running rqmgr on its admin socket (show.rs);
//! `suspend`, `resume`, `flush`, `unthrottle`, `set`, `overrides` and
//! `clear` change what it does (control.rs). See rqmgrctl(1).
//!
//! Invariant: master.cf always names a queue manager; every write of a
//! file here is atomic (write, fsync, rename).

mod client;
mod control;
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
    /// trigger does, for that one only).
    Unthrottle {
        /// TRANSPORT or TRANSPORT:NEXTHOP, as `destinations` shows them.
        dest: String,
    },
    /// No deliveries to a transport or one destination: its mail is
    /// deferred, naming the suspension, until `resume` (or --for ends).
    Suspend {
        /// TRANSPORT or TRANSPORT:NEXTHOP.
        dest: String,
        /// End by itself after this long (90s, 15m, 2h, 1d).
        #[arg(long = "for", value_name = "DURATION")]
        for_: Option<String>,
        /// Why: shown in mailq and delay warnings.
        #[arg(long)]
        reason: Option<String>,
    },
    /// End every suspension of DEST and release the mail it held.
    Resume {
        /// TRANSPORT or TRANSPORT:NEXTHOP, as given to `suspend`.
        dest: String,
    },
    /// Release the deferred mail of one destination (or transport) now.
    Flush {
        /// TRANSPORT or TRANSPORT:NEXTHOP.
        dest: String,
    },
    /// Change a limit live: concurrency=N, rate_delay=TIME or
    /// recipient_limit=N, for a transport or one destination.
    Set {
        /// TRANSPORT or TRANSPORT:NEXTHOP.
        dest: String,
        /// `concurrency=N`, `rate_delay=TIME` or `recipient_limit=N`.
        setting: String,
        /// End by itself after this long.
        #[arg(long = "for", value_name = "DURATION")]
        for_: Option<String>,
    },
    /// The overrides in force: who, when, why, until when.
    Overrides,
    /// End one override (its id from `overrides`).
    Clear {
        /// The override's id.
        id: u64,
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
        Command::Unthrottle { dest } => control::unthrottle(&inst, &dest, cli.json),
        Command::Suspend { dest, for_, reason } => {
            control::suspend(&inst, &dest, for_.as_deref(), reason.as_deref(), cli.json)
        }
        Command::Resume { dest } => control::resume(&inst, &dest, cli.json),
        Command::Flush { dest } => control::flush(&inst, &dest, cli.json),
        Command::Set {
            dest,
            setting,
            for_,
        } => control::set(&inst, &dest, &setting, for_.as_deref(), cli.json),
        Command::Overrides => show::show(&inst, &show::View::Overrides, cli.json),
        Command::Clear { id } => control::clear(&inst, id, cli.json),
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rqmgrctl: error: {e}");
            ExitCode::FAILURE
        }
    }
}
