//! When a job fires: a cron pattern (with optional seconds) in a time zone, or a fixed
//! interval. Fire times depend only on the definition, so every node computes the same ones —
//! which is what lets leases name a fire.

use std::time::Duration;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use croner::Cron;
use croner::parser::{CronParser, Seconds};

/// A compiled schedule.
#[derive(Debug, Clone)]
pub enum Schedule {
    Cron {
        text: String,
        cron: Box<Cron>,
        tz: Tz,
    },
    Every {
        period: Duration,
    },
}

impl Schedule {
    /// `pattern`: 5 fields, or 6 with seconds first; `tz`: an IANA time zone name.
    pub fn cron(pattern: &str, tz: &str) -> Result<Self, String> {
        let tz: Tz = tz.parse().map_err(|_| {
            format!("{tz:?} is not an IANA time zone name (e.g. UTC, Europe/Berlin)")
        })?;
        let cron = CronParser::builder()
            .seconds(Seconds::Optional)
            .build()
            .parse(pattern)
            .map_err(|e| format!("{pattern:?} is not a cron pattern: {e}"))?;
        Ok(Self::Cron {
            text: pattern.to_string(),
            cron: Box::new(cron),
            tz,
        })
    }

    pub fn every(period: Duration) -> Result<Self, String> {
        if period < Duration::from_secs(1) {
            return Err(format!("{period:?} is under one second"));
        }
        Ok(Self::Every { period })
    }

    /// The first fire strictly after `t`.
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match self {
            Self::Cron { cron, tz, .. } => cron
                .find_next_occurrence(&t.with_timezone(tz), false)
                .ok()
                .map(|d| d.with_timezone(&Utc)),
            Self::Every { period } => {
                let p = i64::try_from(period.as_millis()).ok()?;
                let ms = t.timestamp_millis();
                let next = (ms.div_euclid(p) + 1).checked_mul(p)?;
                DateTime::from_timestamp_millis(next)
            }
        }
    }

    /// Fires in `(after, until]`, oldest first; when more than `max` fall in it, the latest
    /// `max` (the older ones are dropped).
    pub fn fires_between(
        &self,
        after: DateTime<Utc>,
        until: DateTime<Utc>,
        max: usize,
    ) -> Vec<DateTime<Utc>> {
        let mut out = std::collections::VecDeque::new();
        let mut t = after;
        // Bounded walk: an interval schedule jumps straight to the last `max` fires.
        if let Self::Every { period } = self
            && let Ok(p) = chrono::Duration::from_std(*period)
            && let Some(skip_to) = p.checked_mul(i32::try_from(max).unwrap_or(i32::MAX))
            && until - after > skip_to
        {
            t = until - skip_to;
        }
        while let Some(next) = self.next_after(t) {
            if next > until {
                break;
            }
            out.push_back(next);
            if out.len() > max {
                out.pop_front();
            }
            t = next;
        }
        out.into()
    }

    /// The schedule as written (`cron … in tz` or `every …`).
    pub fn describe(&self) -> String {
        match self {
            Self::Cron { text, tz, .. } => format!("cron {text} ({tz})"),
            Self::Every { period } => format!("every {}", humantime::format_duration(*period)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn cron_with_seconds_and_five_field_patterns() {
        let s = Schedule::cron("30 5 * * * *", "UTC").unwrap();
        assert_eq!(
            s.next_after(utc("2026-03-01T10:05:30Z")).unwrap(),
            utc("2026-03-01T11:05:30Z")
        );
        let s = Schedule::cron("*/15 * * * *", "UTC").unwrap();
        assert_eq!(
            s.next_after(utc("2026-03-01T10:07:00Z")).unwrap(),
            utc("2026-03-01T10:15:00Z")
        );
        assert!(Schedule::cron("61 * * * *", "UTC").is_err());
        assert!(Schedule::cron("0 * * * *", "Mars/Olympus").is_err());
    }

    #[test]
    fn cron_in_a_time_zone_follows_its_offset() {
        // 02:00 in Tokyo (UTC+9, no DST) is 17:00 UTC the day before.
        let s = Schedule::cron("0 0 2 * * *", "Asia/Tokyo").unwrap();
        assert_eq!(
            s.next_after(utc("2026-06-01T00:00:00Z")).unwrap(),
            utc("2026-06-01T17:00:00Z")
        );
    }

    #[test]
    fn dst_spring_forward_still_fires_once_and_fall_back_fires_once() {
        // Europe/Berlin: 2026-03-29 02:00 → 03:00 (02:30 does not exist);
        // 2026-10-25 03:00 → 02:00 (02:30 happens twice).
        let s = Schedule::cron("0 30 2 * * *", "Europe/Berlin").unwrap();
        let spring = s.fires_between(utc("2026-03-28T12:00:00Z"), utc("2026-03-30T12:00:00Z"), 10);
        assert_eq!(spring.len(), 2, "{spring:?}");
        // 28th 02:30 CET happened before the window; 29th: 02:30 does not exist, so the fire
        // comes at the first instant after the gap, 03:00 CEST (01:00 UTC); 30th 02:30 CEST =
        // 00:30 UTC.
        assert_eq!(spring[0], utc("2026-03-29T01:00:00Z"), "{spring:?}");
        assert_eq!(spring[1], utc("2026-03-30T00:30:00Z"));
        let fall = s.fires_between(utc("2026-10-24T12:00:00Z"), utc("2026-10-26T12:00:00Z"), 10);
        assert_eq!(fall.len(), 2, "the repeated 02:30 must fire once: {fall:?}");
        assert_eq!(fall[0], utc("2026-10-25T00:30:00Z"));
        assert_eq!(fall[1], utc("2026-10-26T01:30:00Z"));
        // Hourly in Berlin over the fall-back night: 25 distinct UTC hours in 25 hours.
        let hourly = Schedule::cron("0 0 * * * *", "Europe/Berlin").unwrap();
        let fires = hourly.fires_between(
            utc("2026-10-24T22:00:00Z"),
            utc("2026-10-25T23:00:00Z"),
            100,
        );
        assert_eq!(fires.len(), 25, "{fires:?}");
    }

    #[test]
    fn intervals_are_aligned_to_the_epoch() {
        let s = Schedule::every(Duration::from_secs(600)).unwrap();
        assert_eq!(
            s.next_after(utc("2026-03-01T10:07:13Z")).unwrap(),
            utc("2026-03-01T10:10:00Z")
        );
        assert_eq!(
            s.next_after(utc("2026-03-01T10:10:00Z")).unwrap(),
            utc("2026-03-01T10:20:00Z")
        );
        assert!(Schedule::every(Duration::from_millis(10)).is_err());
    }

    #[test]
    fn fires_between_keeps_the_latest_when_bounded() {
        let s = Schedule::every(Duration::from_secs(60)).unwrap();
        let f = s.fires_between(utc("2026-03-01T00:00:00Z"), utc("2026-03-02T00:00:00Z"), 3);
        assert_eq!(
            f,
            vec![
                utc("2026-03-01T23:58:00Z"),
                utc("2026-03-01T23:59:00Z"),
                utc("2026-03-02T00:00:00Z")
            ]
        );
        let c = Schedule::cron("0 * * * * *", "UTC").unwrap();
        assert_eq!(
            c.fires_between(utc("2026-03-01T00:00:00Z"), utc("2026-03-01T00:10:00Z"), 3)
                .len(),
            3
        );
        assert!(
            s.fires_between(utc("2026-03-01T00:00:00Z"), utc("2026-03-01T00:00:59Z"), 3)
                .is_empty()
        );
    }
}
