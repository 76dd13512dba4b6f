//! A real cluster: a SeaweedFS cluster (a master, three volume servers with
//! replication, a filer and its S3 gateway, each its own process) behind
//! three `rewind serve` nodes that share one `--storage`; eight clients
//! back up and restore through different nodes at once while one volume
//! server and one node are killed. Nothing is lost: every snapshot
//! restores byte-exact and `check --read-data` is clean.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::server::Server;
use common::*;
use rewind_backends::testsupport::SeaweedCluster;

const CLIENTS: usize = 8;
const NODES: usize = 3;
const REPOS: [&str; 2] = ["alpha", "beta"];

/// One client: its repository, token file and files.
struct Client {
    n: usize,
    repo: &'static str,
    token_file: PathBuf,
    src: PathBuf,
}

/// `rewind ARGS` for `client` through node address `addr`.
fn run_at(env: &Env, addr: &str, repo: &str, token_file: &Path, args: &[&str]) -> Run {
    let mut c = env.cmd();
    c.env("REWIND_REPOSITORY", format!("rest:http://{addr}/{repo}"))
        .arg("--token-file")
        .arg(token_file)
        .args(args);
    run_cmd(c)
}

/// Runs `args` through the client's own node, and on failure through the
/// next live one, as a load balancer with health checks would; gives up
/// after 60 s. Returns the run that succeeded and the tries it took.
fn through_nodes(
    env: &Env,
    addrs: &[String],
    first: usize,
    repo: &str,
    token_file: &Path,
    args: &[&str],
) -> (Run, usize) {
    let start = Instant::now();
    let mut tries = 0;
    loop {
        let addr = &addrs[(first + tries) % addrs.len()];
        tries += 1;
        let r = run_at(env, addr, repo, token_file, args);
        if r.code == Some(0) {
            return (r, tries);
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "{args:?} failed for 60 s on every node; last: {r}"
        );
        thread::sleep(Duration::from_millis(500));
    }
}

#[test]
fn eight_clients_through_three_nodes_survive_a_dead_volume_server_and_a_dead_node() {
    let mut cluster = SeaweedCluster::start(3, "rewind");
    let env = Env::new();
    let storage = cluster.url("rewind", "repos");
    let vars = cluster.env();
    let nodes: Vec<Server> = (0..NODES)
        .map(|i| {
            Server::launch(
                &env,
                &["--storage", &storage],
                &vars,
                &format!("node{i}.log"),
            )
        })
        .collect();
    let addrs: Vec<String> = nodes.iter().map(|n| n.addr.clone()).collect();
    // Tokens live in the store: made once, every node honours them.
    let mut admin = Vec::new();
    for repo in REPOS {
        let t = nodes[0].token(&env, repo, "admin", &[]);
        let f = env.path(format!("admin-{repo}"));
        std::fs::write(&f, t).unwrap();
        let (r, _) = through_nodes(&env, &addrs, 1, repo, &f, &["init"]);
        assert_eq!(r.code, Some(0));
        admin.push(f);
    }
    let shared = random_bytes(3_000_000);
    let clients: Vec<Arc<Client>> = (0..CLIENTS)
        .map(|n| {
            let repo = REPOS[n % 2];
            let t = nodes[0].token(&env, repo, "backup", &["--name", &format!("client{n}")]);
            let token_file = env.path(format!("token-{n}"));
            std::fs::write(&token_file, t).unwrap();
            let src = env.path(format!("src-{n}"));
            random_tree(&src, 12, 120_000);
            // Data every client of the repository has: uploaded at once by
            // several, deduplicated.
            write(&src.join("shared.bin"), &shared);
            Arc::new(Client {
                n,
                repo,
                token_file,
                src,
            })
        })
        .collect();

    // Two backups per client, all at once, each through its own node.
    let env = Arc::new(env);
    let addrs = Arc::new(addrs);
    let workers: Vec<_> = clients
        .iter()
        .map(|c| {
            let (c, env, addrs) = (c.clone(), env.clone(), addrs.clone());
            thread::spawn(move || {
                let node = c.n % NODES;
                let src = c.src.to_str().unwrap().to_string();
                let (_, t1) =
                    through_nodes(&env, &addrs, node, c.repo, &c.token_file, &["backup", &src]);
                let first = env.path(format!("state1-{}", c.n));
                copy_tree(&c.src, &first);
                write_random(&c.src.join(format!("new-{}.bin", c.n)), 400_000);
                write(&c.src.join("d0/f0000"), b"changed");
                let (_, t2) =
                    through_nodes(&env, &addrs, node, c.repo, &c.token_file, &["backup", &src]);
                t1 + t2
            })
        })
        .collect();
    // Mid-run: a volume server and a node die.
    thread::sleep(Duration::from_millis(1500));
    cluster.kill_volume(2);
    let mut nodes = nodes;
    nodes[2].kill();
    let tries: usize = workers.into_iter().map(|w| w.join().unwrap()).sum();
    eprintln!("{tries} backup runs for {} backups", 2 * CLIENTS);

    // Every snapshot restores byte-exact, through the live nodes.
    let live = &addrs[..2];
    for c in &clients {
        let (r, _) = through_nodes(
            &env,
            live,
            c.n,
            c.repo,
            &c.token_file,
            &["--json", "snapshots", "--path", c.src.to_str().unwrap()],
        );
        let snaps: Vec<serde_json::Value> = serde_json::from_slice(&r.stdout).unwrap();
        assert!(
            snaps.len() >= 2,
            "client {}: {} snapshots",
            c.n,
            snaps.len()
        );
        let admin_file = &admin[REPOS.iter().position(|r| *r == c.repo).unwrap()];
        let first = &snaps[0]["id"].as_str().unwrap().to_string();
        let last = &snaps.last().unwrap()["id"].as_str().unwrap().to_string();
        for (id, want) in [
            (first, env.path(format!("state1-{}", c.n))),
            (last, c.src.clone()),
        ] {
            let t = env.path(format!("restore-{}-{id}", c.n));
            through_nodes(
                &env,
                live,
                c.n + 1,
                c.repo,
                admin_file,
                &["restore", id, "--target", t.to_str().unwrap()],
            );
            assert_trees_equal(&want, &restored(&t, &c.src), &[]);
        }
    }
    for (i, repo) in REPOS.iter().enumerate() {
        let (r, _) = through_nodes(&env, live, i, repo, &admin[i], &["check", "--read-data"]);
        assert_eq!(r.code, Some(0), "{r}");
    }
}

/// `cp -a`: the state a snapshot must restore to.
fn copy_tree(from: &Path, to: &Path) {
    let out = std::process::Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
}
