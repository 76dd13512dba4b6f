//! `rewind`: the command-line interface. Parses arguments, calls
//! rewind-core, prints. Exit codes are documented in README.md.

#[macro_use]
mod output;
mod agent;
mod commands;
mod imap;
mod interrupt;
mod mount;
mod rclone;

use std::process::ExitCode;

use clap::Parser;

use commands::{Cli, Command};

/// Exit codes (README.md, "Exit codes"); restic's numbers where they exist.
pub mod exit {
    /// Success.
    pub const OK: u8 = 0;
    /// Fatal error.
    pub const FATAL: u8 = 1;
    /// Wrong usage: a bad or conflicting argument.
    pub const USAGE: u8 = 2;
    /// Backup saved, but some files could not be read.
    pub const PARTIAL: u8 = 3;
    /// Backup saved, but its changes look like ransomware (snapshot marked
    /// suspicious); `rewind scan` of a suspicious snapshot.
    pub const SUSPICIOUS: u8 = 4;
    /// No repository at the given location.
    pub const NO_REPOSITORY: u8 = 10;
    /// Wrong password.
    pub const WRONG_PASSWORD: u8 = 12;
    /// `rewind status`: a job needs attention (its last backup failed or
    /// is too old, a check failed, or a snapshot is suspicious).
    pub const UNHEALTHY: u8 = 5;
    /// Interrupted by SIGINT or SIGTERM (the shell's code for SIGINT).
    pub const INTERRUPTED: u8 = 130;
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    output::quiet_on_closed_stdout();
    let result = std::panic::catch_unwind(|| run(&cli)).unwrap_or_else(|panic| {
        // A `println!` left somewhere hit a closed stdout (see
        // output::quiet_on_closed_stdout); anything else panics on.
        if output::stdout_closed_in_panic() {
            Ok(exit::OK)
        } else {
            std::panic::resume_unwind(panic)
        }
    });
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            if output::is_stdout_closed(&e) {
                return ExitCode::from(exit::OK);
            }
            eprintln!("error: {}", render(&e));
            if let Some(advice) = remedy(&e) {
                eprintln!("{advice}");
            }
            ExitCode::from(exit_code(&e))
        }
    }
}

fn run(cli: &Cli) -> anyhow::Result<u8> {
    match &cli.command {
        Command::Init(a) => commands::init::run(a, &cli.global),
        Command::Backup(a) => commands::backup::run(a, &cli.global),
        Command::Snapshots(a) => commands::snapshots::run(a, &cli.global),
        Command::Ls(a) => commands::browse::ls(a, &cli.global),
        Command::Find(a) => commands::browse::find(a, &cli.global),
        Command::Diff(a) => commands::browse::diff(a, &cli.global),
        Command::Dump(a) => commands::browse::dump(a, &cli.global),
        Command::Restore(a) => commands::restore::run(a, &cli.global),
        Command::Mount(a) => commands::mount::run(a, &cli.global),
        Command::Ui(a) => commands::ui::run(a, &cli.global),
        Command::Key(a) => commands::key::run(a, &cli.global),
        Command::Check(a) => commands::check::run(a, &cli.global),
        Command::Forget(a) => commands::forget::run(a, &cli.global),
        Command::Prune(a) => commands::prune::run(a, &cli.global),
        Command::Copy(a) => commands::copy::run(a, &cli.global),
        Command::CopyTarget(a) => commands::copy_target::run(a, &cli.global),
        Command::Scan(a) => commands::scan::scan(a, &cli.global),
        Command::Mark(a) => commands::scan::mark(a, &cli.global),
        Command::Notify(a) => commands::scan::notify(a, &cli.global),
        Command::Stats(a) => commands::stats::run(a, &cli.global),
        Command::Repair(a) => commands::repair::run(a, &cli.global),
        Command::Policy(a) => commands::policy::run(a, &cli.global),
        Command::Protect(a) => commands::protect::protect(a, &cli.global),
        Command::Unprotect(a) => commands::protect::unprotect(a, &cli.global),
        Command::Serve(a) => commands::serve::run(a, &cli.global),
        Command::VerifyRestore(a) => commands::verify::run(a, &cli.global),
        Command::Agent(a) => commands::agent::agent(a, &cli.global),
        Command::Run(a) => commands::agent::run(a, &cli.global),
        Command::Status(a) => commands::agent::status(a, &cli.global),
        Command::Config(a) => commands::agent::config(a, &cli.global),
        Command::Unlock(a) => commands::unlock::unlock(a, &cli.global),
        Command::Lock(a) => commands::unlock::lock(a, &cli.global),
        Command::KeyAgent(a) => commands::unlock::key_agent(a),
        Command::Completions(a) => commands::docs::completions(a),
        Command::Man(a) => commands::docs::man(a),
    }
}

/// An error and its causes on one line, each cause said once: a message
/// that already contains its cause (the core's I/O errors name the OS
/// error and also carry it as their source) does not repeat it.
fn render(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}

/// What to type about an error, where the core says what can be done.
fn remedy(e: &anyhow::Error) -> Option<&'static str> {
    use rewind_core::error::Remedy;
    let r = e
        .chain()
        .find_map(|c| c.downcast_ref::<rewind_core::Error>()?.remedy())?;
    Some(match r {
        Remedy::Init => "To create a repository there: rewind init",
        Remedy::Check => "To see what is damaged and what it affects: rewind check",
        Remedy::CheckThenRepairSnapshots => {
            "Run `rewind check` to see which files are affected, then `rewind repair snapshots` \
             so that the rest stays restorable."
        }
        Remedy::RepairIndex => "Rebuild the index from the packs: rewind repair index",
        Remedy::ListKeys => "The repository's keys: rewind key list",
        Remedy::ChangePassword => "To change the password of this key: rewind key passwd",
        Remedy::PruneWithGrace => {
            "Prune without --now (deletion waits for the grace period), or run it again later."
        }
        Remedy::PruneIgnoringDamagedSnapshots => {
            "A snapshot that cannot be read restores nothing. If it cannot be recovered, \
             `rewind prune --ignore-damaged-snapshots` prunes as if it did not exist (each one \
             is named). On a rewind server, files that a stolen backup token planted are \
             moved out by the operator: rewind serve quarantine --repo NAME --token NAME \
             --since TIME."
        }
        _ => return None,
    })
}

/// Maps an error to its exit code.
fn exit_code(e: &anyhow::Error) -> u8 {
    for cause in e.chain() {
        if let Some(err) = cause.downcast_ref::<rewind_core::Error>() {
            return match err.inner() {
                rewind_core::Error::NoRepository { .. } => exit::NO_REPOSITORY,
                rewind_core::Error::WrongPassword { .. } => exit::WRONG_PASSWORD,
                // A name that matches nothing is wrong usage, like a path
                // that is not in the snapshot (InvalidInput).
                rewind_core::Error::InvalidInput(_)
                | rewind_core::Error::SnapshotNotFound(_)
                | rewind_core::Error::AmbiguousSnapshot(_) => exit::USAGE,
                rewind_core::Error::Interrupted => exit::INTERRUPTED,
                _ => exit::FATAL,
            };
        }
    }
    exit::FATAL
}
