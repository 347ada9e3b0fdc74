//! Data windows of incremental jobs and the `{{ … }}` templates that bind them into SQL.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Deserialize;

use crate::config::parse_duration;
use crate::history::Window;
use crate::{Error, Result};

/// How an incremental job picks its window (the `window`, `delay`, `lookback`, `initial` and
/// `open` params).
///
/// A run processes `[start, end)`: `end` is the fire time minus `delay`, rounded down to a
/// multiple of `window` unless `open`; `start` is the watermark (the end of the last successful
/// run's window) minus `lookback`, rounded down to a multiple of `window` — so late events up to
/// `lookback` old are re-aggregated, and an open window's partial bucket is recomputed by the
/// next run. The first run starts `initial` (default: one `window`) before `end`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowSpec {
    pub window: Duration,
    pub delay: Duration,
    pub lookback: Duration,
    pub initial: Duration,
    pub open: bool,
}

/// The window params as written.
#[derive(Debug, Clone, Default, Deserialize)]
pub(crate) struct WindowParams {
    #[serde(default)]
    pub(crate) window: Option<String>,
    #[serde(default)]
    pub(crate) delay: Option<String>,
    #[serde(default)]
    pub(crate) lookback: Option<String>,
    #[serde(default)]
    pub(crate) initial: Option<String>,
    #[serde(default)]
    pub(crate) open: bool,
}

impl WindowParams {
    /// `None` when the job is not windowed (no `window` param).
    pub(crate) fn spec(&self, job: &str) -> Result<Option<WindowSpec>> {
        let key = |k: &str| format!("jobs.{job}.params.{k}");
        let Some(window) = &self.window else {
            for (name, set) in [
                ("delay", self.delay.is_some()),
                ("lookback", self.lookback.is_some()),
                ("initial", self.initial.is_some()),
                ("open", self.open),
            ] {
                if set {
                    return Err(Error::config(key(name), "only applies with params.window"));
                }
            }
            return Ok(None);
        };
        let window = parse_duration(&key("window"), window)?;
        if window < Duration::from_secs(1) {
            return Err(Error::config(key("window"), "must be at least 1s"));
        }
        let d = |k: &str, v: &Option<String>, default: Duration| {
            v.as_deref()
                .map_or(Ok(default), |text| parse_duration(&key(k), text))
        };
        Ok(Some(WindowSpec {
            window,
            delay: d("delay", &self.delay, Duration::ZERO)?,
            lookback: d("lookback", &self.lookback, Duration::ZERO)?,
            initial: d("initial", &self.initial, window)?,
            open: self.open,
        }))
    }
}

/// What a windowed kind processes in one run.
pub(crate) enum Plan {
    /// This window (`None`: the kind has no `window` param and processes everything).
    Run(Option<Window>),
    /// Nothing arrived since the watermark.
    UpToDate,
}

impl WindowParams {
    /// The run's window: the one chosen by hand, else the one after the job's watermark.
    pub(crate) fn plan(&self, ctx: &super::RunContext) -> Result<Plan> {
        Ok(match (ctx.window, self.spec(&ctx.job.name)?) {
            (Some(w), _) => Plan::Run(Some(w)),
            (None, Some(spec)) => match spec.window_for(ctx.fire_time, ctx.watermark) {
                Some(w) => Plan::Run(Some(w)),
                None => Plan::UpToDate,
            },
            (None, None) => Plan::Run(None),
        })
    }
}

/// `t` rounded down to a multiple of `step` since the Unix epoch (UTC).
pub(crate) fn floor(t: DateTime<Utc>, step: Duration) -> DateTime<Utc> {
    let step_us = i64::try_from(step.as_micros()).unwrap_or(i64::MAX).max(1);
    let us = t.timestamp_micros();
    DateTime::from_timestamp_micros(us - us.rem_euclid(step_us)).unwrap_or(t)
}

fn sub(t: DateTime<Utc>, d: Duration) -> DateTime<Utc> {
    chrono::Duration::from_std(d)
        .ok()
        .and_then(|d| t.checked_sub_signed(d))
        .unwrap_or(DateTime::<Utc>::MIN_UTC)
}

impl WindowSpec {
    /// The window a run at `fire` processes given the job's `watermark`; `None` when there is
    /// nothing new (start ≥ end).
    pub fn window_for(
        &self,
        fire: DateTime<Utc>,
        watermark: Option<DateTime<Utc>>,
    ) -> Option<Window> {
        let end_raw = sub(fire, self.delay);
        let end = if self.open {
            end_raw
        } else {
            floor(end_raw, self.window)
        };
        let start_raw = match watermark {
            Some(w) => sub(w, self.lookback),
            None => sub(end, self.initial),
        };
        let start = floor(start_raw, self.window);
        (start < end).then_some(Window { start, end })
    }
}

fn timestamp_literal(t: DateTime<Utc>) -> String {
    format!(
        "CAST('{}' AS TIMESTAMP WITH TIME ZONE)",
        t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
    )
}

/// Replaces `{{ window_start }}` / `{{ window_end }}` (SQL timestamp literals, UTC),
/// `{{ window_start_date }}` / `{{ window_end_date }}` (SQL date literals of the UTC dates the
/// window touches, both inclusive — for partition pruning on `date`), `{{ window_start_text }}` /
/// `{{ window_end_text }}` (`20260301T100000Z`, for paths) and `{{ fire_time }}`. Any other
/// `{{ … }}` is an error.
pub fn render_template(
    job: &str,
    text: &str,
    window: Option<Window>,
    fire: DateTime<Utc>,
) -> Result<String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(open) = rest.find("{{") {
        out.push_str(&rest[..open]);
        let after = &rest[open + 2..];
        let close = after
            .find("}}")
            .ok_or_else(|| Error::config(format!("jobs.{job}.params"), "a {{ has no closing }}"))?;
        let name = after[..close].trim();
        let need_window = || {
            window.ok_or_else(|| {
                Error::config(
                    format!("jobs.{job}.params"),
                    format!("{{{{ {name} }}}} needs a window: set params.window"),
                )
            })
        };
        let date = |t: DateTime<Utc>| format!("DATE '{}'", t.format("%Y-%m-%d"));
        let compact = |t: DateTime<Utc>| t.format("%Y%m%dT%H%M%SZ").to_string();
        let value = match name {
            "window_start" => timestamp_literal(need_window()?.start),
            "window_end" => timestamp_literal(need_window()?.end),
            "window_start_date" => date(need_window()?.start),
            // The last instant inside the window: an end at midnight does not touch that day.
            "window_end_date" => date(need_window()?.end - chrono::Duration::microseconds(1)),
            "window_start_text" => compact(need_window()?.start),
            "window_end_text" => compact(need_window()?.end),
            "fire_time" => timestamp_literal(fire),
            other => {
                return Err(Error::config(
                    format!("jobs.{job}.params"),
                    format!(
                        "unknown template {{{{ {other} }}}}; known: window_start, window_end, window_start_date, window_end_date, window_start_text, window_end_text, fire_time"
                    ),
                ));
            }
        };
        out.push_str(&value);
        rest = &after[close + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn hourly(delay: u64, lookback: u64, open: bool) -> WindowSpec {
        WindowSpec {
            window: Duration::from_secs(3600),
            delay: Duration::from_secs(delay),
            lookback: Duration::from_secs(lookback),
            initial: Duration::from_secs(3600),
            open,
        }
    }

    #[test]
    fn windows_follow_the_watermark() {
        let s = hourly(300, 0, false);
        // First run at 10:05: the hour before.
        let w = s.window_for(t("2026-03-01T10:05:00Z"), None).unwrap();
        assert_eq!(
            (w.start, w.end),
            (t("2026-03-01T09:00:00Z"), t("2026-03-01T10:00:00Z"))
        );
        // Next run at 11:05 continues from the watermark.
        let w = s
            .window_for(t("2026-03-01T11:05:00Z"), Some(w.end))
            .unwrap();
        assert_eq!(
            (w.start, w.end),
            (t("2026-03-01T10:00:00Z"), t("2026-03-01T11:00:00Z"))
        );
        // Nothing new yet.
        assert_eq!(
            s.window_for(t("2026-03-01T11:04:00Z"), Some(t("2026-03-01T11:00:00Z"))),
            None
        );
        // Down for three hours: one run covers all of them.
        let w = s
            .window_for(t("2026-03-01T14:05:00Z"), Some(t("2026-03-01T11:00:00Z")))
            .unwrap();
        assert_eq!(
            (w.start, w.end),
            (t("2026-03-01T11:00:00Z"), t("2026-03-01T14:00:00Z"))
        );
        // Lookback reprocesses the previous hour for late events.
        let w = hourly(300, 3600, false)
            .window_for(t("2026-03-01T11:05:00Z"), Some(t("2026-03-01T10:00:00Z")))
            .unwrap();
        assert_eq!(w.start, t("2026-03-01T09:00:00Z"));
        // An open window ends at the fire time; the next run recomputes the partial hour.
        let o = hourly(0, 0, true);
        let w = o
            .window_for(t("2026-03-01T10:20:00Z"), Some(t("2026-03-01T10:10:00Z")))
            .unwrap();
        assert_eq!(
            (w.start, w.end),
            (t("2026-03-01T10:00:00Z"), t("2026-03-01T10:20:00Z"))
        );
    }

    #[test]
    fn templates_bind_the_window() {
        let w = Window {
            start: t("2026-03-01T00:00:00Z"),
            end: t("2026-03-02T00:00:00Z"),
        };
        let s = render_template("j", "ts >= {{ window_start }} AND ts < {{window_end}} AND date BETWEEN {{ window_start_date }} AND {{ window_end_date }} -- {{ window_end_text }}", Some(w), w.end).unwrap();
        assert_eq!(
            s,
            "ts >= CAST('2026-03-01T00:00:00Z' AS TIMESTAMP WITH TIME ZONE) AND ts < CAST('2026-03-02T00:00:00Z' AS TIMESTAMP WITH TIME ZONE) AND date BETWEEN DATE '2026-03-01' AND DATE '2026-03-01' -- 20260302T000000Z"
        );
        assert!(
            render_template("j", "{{ nope }}", Some(w), w.end)
                .unwrap_err()
                .to_string()
                .contains("unknown template")
        );
        assert!(
            render_template("j", "{{ window_start }}", None, w.end)
                .unwrap_err()
                .to_string()
                .contains("needs a window")
        );
        assert!(render_template("j", "{{ window_start", Some(w), w.end).is_err());
    }
}
