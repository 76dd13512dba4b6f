//! `rewind mount MOUNTPOINT`: the history as a read-only file system
//! (crate::mount).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use super::Global;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// An empty folder to mount the history on.
    pub mountpoint: std::path::PathBuf,
    /// Let other users see the mount (needs user_allow_other in /etc/fuse.conf unless root).
    #[arg(long)]
    pub allow_other: bool,
}

pub fn run(args: &Args, global: &Global) -> Result<u8> {
    let mp = &args.mountpoint;
    match std::fs::read_dir(mp) {
        Ok(mut d) => {
            if d.next().is_some() {
                return Err(super::usage(format!(
                    "{} is not empty: mount on an empty folder",
                    mp.display()
                )));
            }
        }
        Err(e) => {
            return Err(super::usage(format!(
                "{} cannot be a mountpoint ({e}): make an empty folder first",
                mp.display()
            )))
        }
    }
    if !std::path::Path::new("/dev/fuse").exists() {
        bail!("FUSE is not available here (/dev/fuse is missing): load the fuse module, or install fuse3");
    }
    let repo = global.open()?;
    let fs = crate::mount::HistoryFs::new(repo)?;
    let mut config = fuser::Config::default();
    config.mount_options = vec![
        fuser::MountOption::RO,
        fuser::MountOption::FSName("rewind".into()),
        fuser::MountOption::Subtype("rewind".into()),
        fuser::MountOption::NoDev,
        fuser::MountOption::NoSuid,
    ];
    if args.allow_other {
        config.acl = fuser::SessionACL::All;
    }
    config.n_threads = Some(2);
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, stop.clone()).context("installing a signal handler")?;
    }
    let session = fuser::spawn_mount(fs, mp, &config).with_context(|| {
        format!(
            "cannot mount on {} (is fusermount3 installed? Debian: apt install fuse3)",
            mp.display()
        )
    })?;
    if !global.quiet {
        eprintln!(
            "the history is mounted on {} (snapshots/, hosts/, tags/, ids/, latest); Ctrl-C to unmount",
            mp.display()
        );
    }
    while !stop.load(Ordering::SeqCst) && !session.guard.is_finished() {
        std::thread::sleep(Duration::from_millis(200));
    }
    if session.guard.is_finished() {
        // Unmounted from outside (fusermount3 -u).
        let _ = session.join();
        return Ok(crate::exit::OK);
    }
    // Unmount; a folder in use says so and is tried again until it is
    // free (a second Ctrl-C leaves it mounted).
    stop.store(false, Ordering::SeqCst);
    let mut said = false;
    loop {
        let out = std::process::Command::new("fusermount3")
            .arg("-u")
            .arg(mp)
            .output();
        match out {
            Ok(o) if o.status.success() => break,
            Ok(o) => {
                if !said {
                    eprintln!(
                        "{} is busy ({}): close what uses it (a shell in it, an open file); \
                         trying again every second, Ctrl-C again to leave it mounted",
                        mp.display(),
                        String::from_utf8_lossy(&o.stderr).trim()
                    );
                    said = true;
                }
            }
            Err(e) => bail!("cannot run fusermount3 to unmount {}: {e}", mp.display()),
        }
        if stop.load(Ordering::SeqCst) {
            eprintln!(
                "left mounted: unmount with `fusermount3 -u {}` when it is free",
                mp.display()
            );
            return Ok(crate::exit::INTERRUPTED);
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    let _ = session.join();
    if !global.quiet {
        eprintln!("unmounted {}", mp.display());
    }
    Ok(crate::exit::OK)
}
