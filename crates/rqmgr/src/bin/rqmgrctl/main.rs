//! rqmgrctl: switch a Postfix instance between its stock queue manager and
//! rqmgr, and back.
//!
//! `enable` points master.cf's `qmgr` service (type unix) at rqmgr with
//! Postfix's own `postconf -F`, keeping a copy of what was there under the
//! instance's data_directory; `disable` puts that back byte for byte. Both
//! reload a running Postfix and check that the new queue manager runs, and
//! both are idempotent. See rqmgrctl(1).
//!
//! Invariant: master.cf always names a queue manager; every write of a
//! file here is atomic (write, fsync, rename).

mod instance;
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
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Make rqmgr the instance's queue manager.
    Enable,
    /// Put the instance's own queue manager back.
    Disable,
    /// Say which queue manager the instance runs.
    Status,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = instance::Instance::open(&cli.config_dir).and_then(|inst| match cli.command {
        Command::Enable => switch::enable(&inst, cli.dry_run),
        Command::Disable => switch::disable(&inst, cli.dry_run),
        Command::Status => switch::status(&inst),
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rqmgrctl: error: {e}");
            ExitCode::FAILURE
        }
    }
}
