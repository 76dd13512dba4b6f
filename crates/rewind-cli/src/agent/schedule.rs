//! When a job runs: `every 15m`, `hourly`, `daily 02:30`, `weekly sun
//! 03:00` or a cron expression. Times are
//! local (the zone the caller passes). A wall-clock time that a DST change
//! skips runs at the first instant after the gap; one that it repeats runs
//! at its first occurrence: once either way.

use std::fmt;
use std::str::FromStr;

use jiff::civil::{Time, Weekday};
use jiff::{SignedDuration, Timestamp, Zoned};

/// A parsed `schedule = "..."`.
#[derive(Clone, Debug)]
pub enum Schedule {
    /// Every fixed interval, aligned to the epoch (a 15-minute job runs at
    /// :00, :15, :30 and :45 wherever it started).
    Every(SignedDuration),
    /// Every day at this local time.
    Daily(Time),
    /// Every week on this day at this local time.
    Weekly(Weekday, Time),
    /// A cron expression: 5 fields (minute hour day month weekday), or 6
    /// and 7 with seconds first and a year last.
    Cron(Box<jiff_cron::Schedule>),
    /// When the paths change (continuous protection, `agent::watch`): no
    /// times of its own.
    Watch,
}

impl FromStr for Schedule {
    type Err = String;

    fn from_str(s: &str) -> Result<Schedule, String> {
        let words: Vec<&str> = s.split_whitespace().collect();
        let lower: Vec<String> = words.iter().map(|w| w.to_ascii_lowercase()).collect();
        let lower: Vec<&str> = lower.iter().map(String::as_str).collect();
        match lower.as_slice() {
            ["every", d] => {
                let d = parse_duration(d)?;
                if d < SignedDuration::from_secs(1) {
                    return Err(format!("{s:?}: the interval must be at least 1s"));
                }
                Ok(Schedule::Every(d))
            }
            ["hourly"] => Ok(Schedule::Every(SignedDuration::from_hours(1))),
            ["daily"] => Ok(Schedule::Daily(Time::midnight())),
            ["daily", t] => Ok(Schedule::Daily(parse_time(t)?)),
            ["weekly"] => Ok(Schedule::Weekly(Weekday::Sunday, Time::midnight())),
            ["weekly", day] => Ok(Schedule::Weekly(parse_weekday(day)?, Time::midnight())),
            ["weekly", day, t] => Ok(Schedule::Weekly(parse_weekday(day)?, parse_time(t)?)),
            ["watch"] => Ok(Schedule::Watch),
            _ if (5..=7).contains(&words.len()) => {
                // The cron crate wants seconds first.
                let expr = if words.len() == 5 {
                    format!("0 {s}")
                } else {
                    s.to_string()
                };
                jiff_cron::Schedule::from_str(&expr)
                    .map(|c| Schedule::Cron(Box::new(c)))
                    .map_err(|e| format!("{s:?} is not a cron expression: {e}"))
            }
            _ => Err(format!(
                "{s:?} is not a schedule: use `every 15m`, `hourly`, `daily 02:30`, \
                 `weekly sun 03:00`, `watch` or a cron expression such as `30 2 * * *`"
            )),
        }
    }
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Schedule::Every(d) => write!(f, "every {}", show_duration(*d)),
            Schedule::Daily(t) => write!(f, "daily {}", t.strftime("%H:%M")),
            Schedule::Weekly(d, t) => write!(f, "weekly {:?} {}", d, t.strftime("%H:%M")),
            Schedule::Cron(c) => write!(f, "cron {}", c.source()),
            Schedule::Watch => write!(f, "watch (on changes)"),
        }
    }
}

impl Schedule {
    /// The first run time strictly after `t` (in `t`'s zone).
    pub fn next_after(&self, t: &Zoned) -> Option<Zoned> {
        match self {
            Schedule::Every(d) => {
                let step = d.as_secs().max(1);
                let now = t.timestamp().as_second();
                let next = (now.div_euclid(step) + 1) * step;
                Timestamp::from_second(next)
                    .ok()
                    .map(|ts| ts.to_zoned(t.time_zone().clone()))
            }
            Schedule::Daily(at) => next_daily(t, *at, None),
            Schedule::Weekly(day, at) => next_daily(t, *at, Some(*day)),
            Schedule::Cron(c) => c.after(t.clone()).next(),
            Schedule::Watch => None,
        }
    }

    /// The time between two runs around `t` (for "no success in twice the
    /// interval").
    pub fn interval(&self, t: &Zoned) -> SignedDuration {
        let a = self.next_after(t);
        let b = a.as_ref().and_then(|a| self.next_after(a));
        match (a, b) {
            (Some(a), Some(b)) => b.timestamp().duration_since(a.timestamp()),
            _ => SignedDuration::from_hours(24),
        }
    }

    /// The newest run time at or before `now` and after `since`: what a run
    /// that starts now stands for, however many were missed (a machine
    /// asleep for a week runs a daily job once, not seven times).
    pub fn latest_due(&self, since: &Zoned, now: &Zoned) -> Option<Zoned> {
        let mut due = self.next_after(since).filter(|n| n <= now)?;
        if let Schedule::Every(d) = self {
            // Straight to the last slot: an interval of seconds and a month
            // of downtime is millions of steps.
            let step = d.as_secs().max(1);
            let last = now.timestamp().as_second().div_euclid(step) * step;
            return Timestamp::from_second(last)
                .ok()
                .map(|ts| ts.to_zoned(now.time_zone().clone()));
        }
        // Daily, weekly and cron: at most a few thousand steps a year.
        for _ in 0..1_000_000 {
            match self.next_after(&due) {
                Some(n) if n <= *now => due = n,
                _ => break,
            }
        }
        Some(due)
    }
}

/// The next `at` (on `day`, if given) after `t`, each civil day judged
/// once: a time in a DST gap moves after the gap, one in an overlap takes
/// its first occurrence.
fn next_daily(t: &Zoned, at: Time, day: Option<Weekday>) -> Option<Zoned> {
    let tz = t.time_zone().clone();
    let mut date = t.date();
    for _ in 0..15 {
        if day.is_none_or(|d| date.weekday() == d) {
            let candidate = date.to_datetime(at).to_zoned(tz.clone()).ok()?;
            if candidate > *t {
                return Some(candidate);
            }
        }
        date = date.tomorrow().ok()?;
    }
    None
}

/// `30s`, `15m`, `2h`, `1d`, `90` (seconds), or combinations (`1h30m`).
pub fn parse_duration(s: &str) -> Result<SignedDuration, String> {
    let bad = || format!("{s:?} is not a duration: use e.g. 30s, 15m, 2h, 1d or 1h30m");
    let s = s.trim();
    if s.is_empty() {
        return Err(bad());
    }
    if let Ok(secs) = s.parse::<i64>() {
        return Ok(SignedDuration::from_secs(secs));
    }
    let mut total = 0i64;
    let mut num = String::new();
    for c in s.chars() {
        if c.is_ascii_digit() {
            num.push(c);
            continue;
        }
        let n: i64 = num.parse().map_err(|_| bad())?;
        num.clear();
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86400,
            'w' => 7 * 86400,
            _ => return Err(bad()),
        };
        total = n
            .checked_mul(unit)
            .and_then(|x| total.checked_add(x))
            .ok_or_else(bad)?;
    }
    if !num.is_empty() {
        return Err(bad());
    }
    Ok(SignedDuration::from_secs(total))
}

/// `1h30m`-style text for a duration.
pub fn show_duration(d: SignedDuration) -> String {
    let mut s = d.as_secs();
    if s == 0 {
        return "0s".into();
    }
    let mut out = String::new();
    for (unit, n) in [("d", 86400), ("h", 3600), ("m", 60), ("s", 1)] {
        if s >= n {
            out.push_str(&format!("{}{unit}", s / n));
            s %= n;
        }
    }
    out
}

fn parse_time(s: &str) -> Result<Time, String> {
    let (h, m) = s
        .split_once(':')
        .ok_or_else(|| format!("{s:?} is not a time of day: use HH:MM, e.g. 02:30"))?;
    let h: i8 = h.parse().map_err(|_| format!("{s:?}: bad hour"))?;
    let m: i8 = m.parse().map_err(|_| format!("{s:?}: bad minute"))?;
    Time::new(h, m, 0, 0).map_err(|_| format!("{s:?} is not a time of day (00:00 to 23:59)"))
}

fn parse_weekday(s: &str) -> Result<Weekday, String> {
    Ok(match s.get(..3).unwrap_or(s) {
        "mon" => Weekday::Monday,
        "tue" => Weekday::Tuesday,
        "wed" => Weekday::Wednesday,
        "thu" => Weekday::Thursday,
        "fri" => Weekday::Friday,
        "sat" => Weekday::Saturday,
        "sun" => Weekday::Sunday,
        _ => {
            return Err(format!(
                "{s:?} is not a day of the week: use mon, tue, ... sun"
            ))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use jiff::civil::date;

    fn at(tz: &str, y: i16, mo: i8, d: i8, h: i8, mi: i8) -> Zoned {
        date(y, mo, d).at(h, mi, 0, 0).in_tz(tz).unwrap()
    }

    fn s(text: &str) -> Schedule {
        text.parse().unwrap()
    }

    #[test]
    fn bad_schedules_say_what_is_wrong() {
        for (text, says) in [
            ("every", "not a schedule"),
            ("every 0s", "at least 1s"),
            ("every 5x", "not a duration"),
            ("daily 25:00", "not a time of day"),
            ("weekly funday 03:00", "day of the week"),
            ("61 * * * *", "not a cron expression"),
            ("sometimes", "not a schedule"),
        ] {
            let e = text.parse::<Schedule>().unwrap_err();
            assert!(e.contains(says), "{text}: {e}");
        }
    }

    #[test]
    fn every_is_aligned_and_daily_is_local() {
        let t = at("Europe/Berlin", 2026, 6, 1, 10, 7);
        assert_eq!(
            s("every 15m").next_after(&t).unwrap(),
            at("Europe/Berlin", 2026, 6, 1, 10, 15)
        );
        assert_eq!(
            s("hourly").next_after(&t).unwrap(),
            at("Europe/Berlin", 2026, 6, 1, 11, 0)
        );
        assert_eq!(
            s("daily 02:30").next_after(&t).unwrap(),
            at("Europe/Berlin", 2026, 6, 2, 2, 30)
        );
        // 2026-06-01 is a Monday.
        assert_eq!(
            s("weekly sun 03:00").next_after(&t).unwrap(),
            at("Europe/Berlin", 2026, 6, 7, 3, 0)
        );
        assert_eq!(
            s("30 2 * * *").next_after(&t).unwrap(),
            at("Europe/Berlin", 2026, 6, 2, 2, 30)
        );
    }

    fn runs_between(sched: &Schedule, mut t: Zoned, end: Zoned) -> Vec<Zoned> {
        let mut runs = Vec::new();
        loop {
            t = sched.next_after(&t).unwrap();
            if t >= end {
                return runs;
            }
            runs.push(t.clone());
        }
    }

    #[test]
    fn a_run_in_a_dst_gap_or_overlap_runs_once() {
        // Europe/Berlin: 2026-03-29 02:00 -> 03:00 (gap), 2026-10-25
        // 03:00 -> 02:00 (02:30 happens twice).
        let tz = "Europe/Berlin";
        for sched in ["daily 02:30", "30 2 * * *"] {
            let sched = s(sched);
            let runs = runs_between(
                &sched,
                at(tz, 2026, 3, 27, 12, 0),
                at(tz, 2026, 3, 31, 12, 0),
            );
            let days: Vec<_> = runs.iter().map(|r| r.date()).collect();
            assert_eq!(days.len(), 4, "{runs:?}");
            assert!(days.windows(2).all(|w| w[0] < w[1]), "{runs:?}");
            let runs = runs_between(
                &sched,
                at(tz, 2026, 10, 24, 12, 0),
                at(tz, 2026, 10, 26, 12, 0),
            );
            assert_eq!(runs.len(), 2, "{runs:?}");
            // 02:30 on the 25th once (its first occurrence), not twice.
            assert_eq!(runs[0].date(), date(2026, 10, 25), "{runs:?}");
            assert_eq!(runs[1].date(), date(2026, 10, 26), "{runs:?}");
        }
        // The gap's run is after the gap, on that day.
        let gap = s("daily 02:30")
            .next_after(&at(tz, 2026, 3, 29, 0, 0))
            .unwrap();
        assert_eq!(gap.date(), date(2026, 3, 29));
        assert_eq!(gap.hour(), 3);
    }

    #[test]
    fn missed_runs_run_once() {
        let tz = "UTC";
        let since = at(tz, 2026, 1, 1, 3, 0);
        let now = at(tz, 2026, 1, 8, 12, 0);
        assert_eq!(
            s("daily 02:30").latest_due(&since, &now).unwrap(),
            at(tz, 2026, 1, 8, 2, 30)
        );
        assert_eq!(
            s("every 15m").latest_due(&since, &now).unwrap(),
            at(tz, 2026, 1, 8, 12, 0)
        );
        assert!(s("daily 02:30")
            .latest_due(&at(tz, 2026, 1, 8, 3, 0), &now)
            .is_none());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("1h30m").unwrap().as_secs(), 5400);
        assert_eq!(parse_duration("90").unwrap().as_secs(), 90);
        assert!(parse_duration("h").is_err());
        assert!(parse_duration("5").is_ok());
        assert_eq!(show_duration(SignedDuration::from_secs(5400)), "1h30m");
    }
}
