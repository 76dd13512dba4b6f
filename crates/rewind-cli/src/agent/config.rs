//! The agent's configuration: one TOML file of named jobs. Parsing is
//! strict: an unknown key, a bad schedule, a bad duration or a missing path
//! is an error naming the file, the line and the key.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use jiff::SignedDuration;
use serde::Deserialize;
use toml::Spanned;

use super::schedule::{parse_duration, Schedule};

/// Where the configuration is read from: `--config`, else
/// `$XDG_CONFIG_HOME/rewind/rewind.toml` (`~/.config/...`), else for root
/// `/etc/rewind/rewind.toml`.
pub fn default_path() -> PathBuf {
    let user = crate::commands::config_home().join("rewind/rewind.toml");
    if !user.exists() && is_root() && Path::new("/etc/rewind/rewind.toml").exists() {
        return PathBuf::from("/etc/rewind/rewind.toml");
    }
    user
}

pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    #[serde(default)]
    agent: AgentFile,
    #[serde(default)]
    notify: NotifyFile,
    #[serde(default)]
    jobs: BTreeMap<String, JobFile>,
}

#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
struct AgentFile {
    /// Where job state lives (default `$XDG_STATE_HOME/rewind`).
    state_dir: Option<PathBuf>,
    /// Retries of a failed run before it counts as failed.
    retries: Option<u32>,
    /// The first retry's delay; each next one doubles it.
    retry_delay: Option<Spanned<String>>,
}

/// Where alerts go.
#[derive(Deserialize, Debug, Default, Clone, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct NotifyFile {
    /// A URL that each alert is POSTed to as JSON.
    pub webhook: Option<String>,
    /// Alert when a job has had no success for this long (default: twice
    /// its interval).
    pub missed_after: Option<String>,
    /// E-mail over SMTP.
    pub email: Option<Email>,
}

/// SMTP settings.
#[derive(Deserialize, Debug, Clone, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Email {
    pub to: Vec<String>,
    pub from: String,
    /// `host` or `host:port`.
    pub server: String,
    /// `starttls` (default), `tls` or `none` (loopback relays only).
    #[serde(default = "starttls")]
    pub security: String,
    pub user: Option<String>,
    pub password_file: Option<PathBuf>,
}

fn starttls() -> String {
    "starttls".into()
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct JobFile {
    repository: Option<String>,
    password_file: Option<PathBuf>,
    password_command: Option<String>,
    token_file: Option<PathBuf>,
    #[serde(default)]
    options: BTreeMap<String, String>,
    compression: Option<Spanned<String>>,
    #[serde(default)]
    paths: Vec<Spanned<String>>,
    #[serde(default)]
    exclude: Vec<String>,
    #[serde(default)]
    exclude_file: Vec<Spanned<String>>,
    #[serde(default)]
    exclude_if_present: Vec<String>,
    #[serde(default)]
    exclude_caches: bool,
    #[serde(default)]
    one_file_system: bool,
    host: Option<String>,
    #[serde(default)]
    tags: Vec<String>,
    /// `stdin-from-command`: back up a command's output (a database dump).
    command: Option<Vec<String>>,
    command_filename: Option<String>,
    schedule: Spanned<String>,
    jitter: Option<Spanned<String>>,
    /// `watch`: at most one backup per this long (default 5m).
    min_interval: Option<Spanned<String>>,
    /// `watch`: back up once changes have been quiet this long (default 10s).
    settle: Option<Spanned<String>>,
    /// Retention after each backup: `false` for none; else the `keep`
    /// rules, or the repository's policy when there are none.
    forget: Option<bool>,
    keep: Option<Spanned<BTreeMap<String, toml::Value>>>,
    prune: Option<Spanned<String>>,
    check: Option<Spanned<String>>,
    check_read_data_subset: Option<String>,
    restore_test: Option<Spanned<String>>,
    restore_test_sample: Option<Spanned<String>>,
    copy_to: Option<CopyTo>,
    #[serde(default)]
    hooks: Hooks,
    notify: Option<NotifyFile>,
}

/// An offsite copy after each backup.
#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct CopyTo {
    pub repository: String,
    pub password_file: Option<PathBuf>,
    #[serde(default)]
    pub options: BTreeMap<String, String>,
}

/// Commands run around a job (through `sh -c`).
#[derive(Deserialize, Debug, Clone, Default)]
#[serde(deny_unknown_fields)]
pub struct Hooks {
    #[serde(default)]
    pub before: Vec<String>,
    #[serde(default)]
    pub after: Vec<String>,
    #[serde(default)]
    pub on_failure: Vec<String>,
    pub timeout: Option<String>,
}

/// The whole configuration, checked.
#[derive(Debug)]
pub struct Config {
    pub path: PathBuf,
    pub state_dir: PathBuf,
    pub retries: u32,
    pub retry_delay: SignedDuration,
    pub jobs: Vec<Job>,
}

/// One job, checked.
#[derive(Debug)]
pub struct Job {
    pub name: String,
    pub repository: Option<String>,
    pub password_file: Option<PathBuf>,
    pub password_command: Option<String>,
    pub token_file: Option<PathBuf>,
    pub options: BTreeMap<String, String>,
    /// `--compression` of its tasks (checked when the file is read).
    pub compression: Option<String>,
    pub paths: Vec<PathBuf>,
    pub exclude: Vec<String>,
    pub exclude_file: Vec<PathBuf>,
    pub exclude_if_present: Vec<String>,
    pub exclude_caches: bool,
    pub one_file_system: bool,
    pub host: Option<String>,
    pub tags: Vec<String>,
    pub command: Option<Vec<String>>,
    pub command_filename: Option<String>,
    pub schedule: Schedule,
    pub jitter: SignedDuration,
    pub min_interval: SignedDuration,
    pub settle: SignedDuration,
    pub forget: bool,
    /// `forget` flags (`--keep-daily`, `7`, ...).
    pub keep: Vec<String>,
    pub prune: Option<Schedule>,
    pub check: Option<Schedule>,
    pub check_read_data_subset: Option<String>,
    /// When to run a restore test (`rewind verify-restore`).
    pub restore_test: Option<Schedule>,
    /// Its `--sample`.
    pub restore_test_sample: String,
    pub copy_to: Option<CopyTo>,
    pub hooks: Hooks,
    pub hook_timeout: SignedDuration,
    pub notify: NotifyFile,
}

impl Job {
    /// What names the repository for "one run at a time per repository".
    pub fn repository_key(&self) -> String {
        self.repository.clone().unwrap_or_else(|| "default".into())
    }
}

/// The 1-based line of a byte offset.
fn line_of(src: &str, offset: usize) -> usize {
    src[..offset.min(src.len())].matches('\n').count() + 1
}

/// Reads and checks the file.
pub fn load(path: &Path) -> Result<Config> {
    let src = std::fs::read_to_string(path).with_context(|| {
        format!(
            "cannot read the configuration {}: create one with `rewind config init`",
            path.display()
        )
    })?;
    parse(path, &src)
}

/// Where in the file a value was: for messages naming file, line and key.
struct Source<'a> {
    path: &'a Path,
    src: &'a str,
    /// Whether paths must exist (they must, but for the example files).
    check_paths: bool,
}

impl Source<'_> {
    fn at(&self, span: std::ops::Range<usize>, key: &str) -> String {
        format!(
            "{}, line {}, `{key}`",
            self.path.display(),
            line_of(self.src, span.start)
        )
    }

    fn schedule(&self, s: &Spanned<String>, key: &str) -> Result<Schedule> {
        s.get_ref()
            .parse::<Schedule>()
            .map_err(|e| anyhow::anyhow!("{}: {e}", self.at(s.span(), key)))
    }

    fn duration(
        &self,
        s: &Option<Spanned<String>>,
        key: &str,
        default: i64,
    ) -> Result<SignedDuration> {
        match s {
            None => Ok(SignedDuration::from_secs(default)),
            Some(s) => parse_duration(s.get_ref())
                .map_err(|e| anyhow::anyhow!("{}: {e}", self.at(s.span(), key))),
        }
    }

    /// A text setting as written, once `check` accepts it; the error names
    /// its line and key.
    fn checked<E: std::fmt::Display>(
        &self,
        s: &Option<Spanned<String>>,
        key: &str,
        check: impl FnOnce(&str) -> std::result::Result<(), E>,
    ) -> Result<Option<String>> {
        let Some(s) = s else { return Ok(None) };
        check(s.get_ref()).map_err(|e| anyhow::anyhow!("{}: {e}", self.at(s.span(), key)))?;
        Ok(Some(s.get_ref().clone()))
    }
}

/// Parses and checks `src` (read from `path`).
pub fn parse(path: &Path, src: &str) -> Result<Config> {
    parse_with(path, src, true)
}

fn parse_with(path: &Path, src: &str, check_paths: bool) -> Result<Config> {
    let file: FileConfig = toml::from_str(src).map_err(|e| {
        // toml's message names the line, the column and the key.
        anyhow::anyhow!("{}: {}", path.display(), e.to_string().trim_end())
    })?;
    let source = Source {
        path,
        src,
        check_paths,
    };
    if file.jobs.is_empty() {
        bail!(
            "{}: no jobs: add a [jobs.NAME] table with `paths` and `schedule` \
             (`rewind config init` writes an example)",
            path.display()
        );
    }
    let mut jobs = Vec::new();
    for (name, j) in file.jobs {
        jobs.push(job(&source, name, j, &file.notify)?);
    }
    let state_dir = file
        .agent
        .state_dir
        .map(|p| expand_home(&p.to_string_lossy()))
        .unwrap_or_else(default_state_dir);
    Ok(Config {
        path: path.to_path_buf(),
        state_dir,
        retries: file.agent.retries.unwrap_or(3),
        retry_delay: source.duration(&file.agent.retry_delay, "agent.retry_delay", 30)?,
        jobs,
    })
}

/// One job, checked.
fn job(source: &Source<'_>, name: String, j: JobFile, notify: &NotifyFile) -> Result<Job> {
    let path = source.path;
    let at = |span: std::ops::Range<usize>, key: &str| source.at(span, key);
    let schedule = |s: &Spanned<String>, key: &str| source.schedule(s, key);
    let duration = |s: &Option<Spanned<String>>, key: &str, d: i64| source.duration(s, key, d);
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        bail!(
            "{}: job name {name:?}: use letters, digits, - and _",
            path.display()
        );
    }
    let key = |k: &str| format!("jobs.{name}.{k}");
    let sched = schedule(&j.schedule, &key("schedule"))?;
    if j.paths.is_empty() && j.command.is_none() {
        bail!(
            "{}: nothing to back up: set `paths` or `command`",
            at(j.schedule.span(), &format!("jobs.{name}"))
        );
    }
    if !j.paths.is_empty() && j.command.is_some() {
        bail!(
            "{}: set `paths` or `command`, not both (make two jobs)",
            at(j.paths[0].span(), &key("paths"))
        );
    }
    if matches!(sched, Schedule::Watch) && j.paths.is_empty() {
        bail!(
            "{}: `watch` needs `paths` to watch",
            at(j.schedule.span(), &key("schedule"))
        );
    }
    let mut paths = Vec::new();
    for p in &j.paths {
        let pb = expand_home(p.get_ref());
        if !pb.is_absolute() {
            bail!(
                "{}: {:?} is not an absolute path",
                at(p.span(), &key("paths")),
                p.get_ref()
            );
        }
        if source.check_paths && std::fs::symlink_metadata(&pb).is_err() {
            bail!(
                "{}: {} does not exist",
                at(p.span(), &key("paths")),
                pb.display()
            );
        }
        paths.push(pb);
    }
    let mut exclude_file = Vec::new();
    for p in &j.exclude_file {
        let pb = expand_home(p.get_ref());
        if source.check_paths && !pb.is_file() {
            bail!(
                "{}: {} is not a file",
                at(p.span(), &key("exclude_file")),
                pb.display()
            );
        }
        exclude_file.push(pb);
    }
    let mut keep = Vec::new();
    if let Some(k) = &j.keep {
        for (rule, value) in k.get_ref() {
            let flag = match rule.as_str() {
                "last" | "hourly" | "daily" | "weekly" | "monthly" | "yearly" => {
                    let n = value.as_integer().filter(|n| *n >= 0).ok_or_else(|| {
                        anyhow::anyhow!(
                            "{}: `{rule}` must be a count (a whole number)",
                            at(k.span(), &key("keep"))
                        )
                    })?;
                    (format!("--keep-{rule}"), n.to_string())
                }
                "within" | "within_hourly" | "within_daily" | "within_weekly"
                | "within_monthly" | "within_yearly" | "tag" => {
                    let v = value.as_str().ok_or_else(|| {
                        anyhow::anyhow!(
                            "{}: `{rule}` must be a string (e.g. \"90d\")",
                            at(k.span(), &key("keep"))
                        )
                    })?;
                    (format!("--keep-{}", rule.replace('_', "-")), v.to_string())
                }
                _ => bail!(
                    "{}: unknown rule `{rule}`: use last, hourly, daily, weekly, monthly, \
                     yearly, within, within_hourly ... within_yearly or tag",
                    at(k.span(), &key("keep"))
                ),
            };
            keep.push(flag.0);
            keep.push(flag.1);
        }
    }
    let opt_schedule = |s: &Option<Spanned<String>>, k: &str| -> Result<Option<Schedule>> {
        s.as_ref().map(|s| schedule(s, &key(k))).transpose()
    };
    let hook_timeout = match &j.hooks.timeout {
        None => SignedDuration::from_mins(5),
        Some(t) => parse_duration(t)
            .map_err(|e| anyhow::anyhow!("{}: `{}`: {e}", path.display(), key("hooks.timeout")))?,
    };
    Ok(Job {
        schedule: sched,
        jitter: duration(&j.jitter, &key("jitter"), 0)?,
        min_interval: duration(&j.min_interval, &key("min_interval"), 300)?,
        settle: duration(&j.settle, &key("settle"), 10)?,
        forget: j.forget.unwrap_or(true),
        keep,
        prune: opt_schedule(&j.prune, "prune")?,
        check: opt_schedule(&j.check, "check")?,
        check_read_data_subset: j.check_read_data_subset,
        restore_test: opt_schedule(&j.restore_test, "restore_test")?,
        restore_test_sample: source
            .checked(&j.restore_test_sample, &key("restore_test_sample"), |s| {
                s.parse::<rewind_core::proof::Sample>().map(drop)
            })?
            .unwrap_or_else(|| "100".into()),
        repository: j.repository,
        password_file: j.password_file.map(|p| expand_home(&p.to_string_lossy())),
        password_command: j.password_command,
        token_file: j.token_file.map(|p| expand_home(&p.to_string_lossy())),
        options: j.options,
        compression: source.checked(&j.compression, &key("compression"), |s| {
            crate::commands::compression_level(s).map(drop)
        })?,
        paths,
        exclude: j.exclude,
        exclude_file,
        exclude_if_present: j.exclude_if_present,
        exclude_caches: j.exclude_caches,
        one_file_system: j.one_file_system,
        host: j.host,
        tags: j.tags,
        command: j.command,
        command_filename: j.command_filename,
        copy_to: j.copy_to,
        hooks: j.hooks,
        hook_timeout,
        notify: j.notify.unwrap_or_else(|| notify.clone()),
        name,
    })
}

/// `$XDG_STATE_HOME/rewind`, else `~/.local/state/rewind`; for root without
/// a home of its own, `/var/lib/rewind`.
pub fn default_state_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("XDG_STATE_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(d).join("rewind");
    }
    match std::env::var_os("HOME").filter(|h| !h.is_empty()) {
        Some(h) => PathBuf::from(h).join(".local/state/rewind"),
        None => PathBuf::from("/var/lib/rewind"),
    }
}

/// `~/x` to `$HOME/x`.
pub fn expand_home(p: &str) -> PathBuf {
    match p.strip_prefix("~/") {
        Some(rest) => std::env::var_os("HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/"))
            .join(rest),
        None => PathBuf::from(p),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(src: &str) -> String {
        parse(Path::new("/etc/r.toml"), src)
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn mistakes_name_the_file_line_and_key() {
        let e = err("[jobs.home]\npaths = [\"/\"]\nshedule = \"hourly\"\n");
        assert!(
            e.contains("/etc/r.toml") && e.contains("line 3") && e.contains("shedule"),
            "{e}"
        );
        let e = err("[jobs.home]\npaths = [\"/\"]\n\nschedule = \"daily 25:00\"\n");
        assert!(
            e.contains("line 4") && e.contains("jobs.home.schedule") && e.contains("time of day"),
            "{e}"
        );
        let e = err("[jobs.home]\nschedule = \"hourly\"\npaths = [\"/nonexistent/x\"]\n");
        assert!(e.contains("line 3") && e.contains("does not exist"), "{e}");
        let e = err("[jobs.home]\nschedule = \"hourly\"\npaths = [\"/\"]\njitter = \"soon\"\n");
        assert!(
            e.contains("line 4") && e.contains("jobs.home.jitter"),
            "{e}"
        );
        let e = err("[jobs.home]\nschedule = \"hourly\"\npaths = [\"/\"]\nkeep = { dayly = 7 }\n");
        assert!(e.contains("unknown rule `dayly`"), "{e}");
        let e = err("[jobs.home]\nschedule = \"hourly\"\n");
        assert!(e.contains("nothing to back up"), "{e}");
        let e = err("");
        assert!(e.contains("no jobs"), "{e}");
        let e = err("[notify]\nwebhook = 3\n");
        assert!(e.contains("line 2"), "{e}");
    }

    #[test]
    fn the_example_files_parse() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples");
        let mut n = 0;
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            let src = std::fs::read_to_string(&p).unwrap();
            let c = parse_with(&p, &src, false).unwrap_or_else(|e| panic!("{e:#}"));
            assert!(!c.jobs.is_empty());
            n += 1;
        }
        assert!(n >= 3);
    }

    #[test]
    fn a_good_file_resolves() {
        let c = parse(
            Path::new("/x.toml"),
            "[jobs.home]\npaths = [\"/\"]\nschedule = \"every 15m\"\nkeep = { daily = 7, within = \"30d\" }\n\
             prune = \"weekly sun 04:00\"\n[jobs.db]\ncommand = [\"pg_dump\", \"app\"]\nschedule = \"daily 01:00\"\nforget = false\n",
        )
        .unwrap();
        assert_eq!(c.jobs.len(), 2);
        let home = c.jobs.iter().find(|j| j.name == "home").unwrap();
        assert_eq!(home.keep, ["--keep-daily", "7", "--keep-within", "30d"]);
        assert!(home.prune.is_some() && home.forget);
        let db = c.jobs.iter().find(|j| j.name == "db").unwrap();
        assert!(!db.forget && db.command.is_some());
    }
}
