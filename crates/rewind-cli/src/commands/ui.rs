//! `rewind ui`: the web UI on loopback for the repository this command
//! opens (rewind_server::ui).

use std::sync::Arc;

use anyhow::Result;

use super::Global;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Address to listen on (loopback only; port 0 picks a free one).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: std::net::SocketAddr,
}

pub fn run(args: &Args, global: &Global) -> Result<u8> {
    if !args.listen.ip().is_loopback() {
        return Err(super::usage(format!(
            "--listen {}: rewind ui listens on this machine only (it can restore files here); use 127.0.0.1:PORT, or `rewind serve` for other machines",
            args.listen
        )));
    }
    let repo = Arc::new(global.open()?);
    let label = repo.backend().location();
    let agent_global = global.clone();
    let agent: rewind_server::ui::AgentStatus =
        Arc::new(move || super::agent::status_json(&agent_global));
    let quiet = global.quiet;
    rewind_server::ui::run_local(repo, label, args.listen, Some(agent), |url| {
        // The address is the login: print it even with --quiet.
        println!("rewind ui: open {url}");
        if !quiet {
            eprintln!("rewind ui: the address logs in once; stop with Ctrl-C");
        }
    })?;
    Ok(crate::exit::OK)
}
