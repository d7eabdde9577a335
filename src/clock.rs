//! The one source of time. Every timestamp in fleetsim is microseconds since the run started,
//! read from tokio's monotonic clock (so tests can pause and advance it), and mapped to wall-clock
//! time through the instant the clock was created. Nothing else calls `SystemTime::now()` or
//! `Instant::now()`.
//!
//! In virtual time the run executes on tokio's paused clock, which jumps to the next timer
//! whenever nothing is runnable: the same [`Clock`] then reads simulated time, and its zero maps
//! to a fixed wall-clock time ([`VIRTUAL_EPOCH`]) so that a rerun writes the same bytes. A
//! [`Stopwatch`] measures the real time such a run takes.
//!
//! Going through tokio's timer costs a park of the runtime per jump, and in a run of a million
//! devices most jumps are one device's event. So the engine may also move a virtual clock itself
//! ([`Clock::run_ahead_to`]) while nothing else could act before the time it moves to: the run's
//! other tasks sleep through [`Clock::sleep_until`], which tells the clock how long they sleep.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;
use tokio::time::Instant;

/// Which time a run executes in.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ClockMode {
    /// Real time: sockets, the dashboard and every latency in wall time.
    #[default]
    Real,
    /// Simulated time that jumps to the next event whenever nothing is runnable.
    Virtual,
}

impl ClockMode {
    /// `real` or `virtual`, as the scenario key and `summary.json` spell it.
    pub fn name(self) -> &'static str {
        match self {
            ClockMode::Real => "real",
            ClockMode::Virtual => "virtual",
        }
    }
}

/// Microseconds since the run started.
pub(crate) type Micros = u64;

/// `s` seconds in microseconds, saturating: a count of seconds from outside (a request, a
/// scenario) can never overflow the arithmetic it feeds.
pub(crate) const fn secs_us(s: u64) -> Micros {
    s.saturating_mul(1_000_000)
}

/// The earliest wall-clock time fleetsim accepts from outside: 0001-01-01T00:00:00Z.
pub(crate) const WALL_MIN: OffsetDateTime = time::macros::datetime!(0001-01-01 0:00 UTC);
/// The latest wall-clock time fleetsim accepts from outside and prints: the end of year 9999 in
/// UTC (the last of ISO-8601's four-digit years, and of .NET's `DateTime`).
pub(crate) const WALL_MAX: OffsetDateTime =
    time::macros::datetime!(9999-12-31 23:59:59.999_999_999 UTC);

/// A monotonic clock with the wall-clock time its zero maps to. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Clock {
    start: Instant,
    /// The reading at `start`: 0, or the time a resumed clock had already run
    /// ([`Clock::resume`]).
    offset: Micros,
    wall_start: OffsetDateTime,
    /// What the run's tasks share of its simulated time; None in real time (see
    /// [`Clock::start_virtual`]).
    simulated: Option<Arc<Simulated>>,
}

/// What the tasks of a virtual-time run share of its clock.
#[derive(Debug)]
struct Simulated {
    /// The reading the engine moved the clock to without tokio ([`Clock::run_ahead_to`]).
    ahead: AtomicU64,
    /// The deadlines of the sleeps of the run's other tasks ([`Clock::sleep_until`]).
    sleeps: Mutex<Vec<Micros>>,
    /// The earliest of `sleeps` (`Micros::MAX`: none).
    earliest: AtomicU64,
}

impl Simulated {
    /// Notes a sleep until `us`; it is forgotten when the guard drops.
    fn enter(&self, us: Micros) -> Sleeper<'_> {
        let mut sleeps = self.sleeps.lock().unwrap_or_else(|e| e.into_inner());
        sleeps.push(us);
        self.earliest.fetch_min(us, Ordering::Relaxed);
        Sleeper { of: self, us }
    }
}

/// A sleep [`Simulated`] knows of, for as long as it lasts.
struct Sleeper<'a> {
    of: &'a Simulated,
    us: Micros,
}

impl Drop for Sleeper<'_> {
    fn drop(&mut self) {
        let mut sleeps = self.of.sleeps.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(i) = sleeps.iter().position(|&us| us == self.us) {
            sleeps.swap_remove(i);
        }
        let earliest = sleeps.iter().copied().min().unwrap_or(Micros::MAX);
        self.of.earliest.store(earliest, Ordering::Relaxed);
    }
}

/// The wall-clock time a virtual-time run starts at: 2000-01-01T00:00:00Z.
pub(crate) const VIRTUAL_EPOCH: OffsetDateTime = time::macros::datetime!(2000-01-01 0:00 UTC);

impl Clock {
    /// Starts a clock now.
    pub fn start() -> Self {
        Clock {
            start: Instant::now(),
            offset: 0,
            wall_start: wall_now(),
            simulated: None,
        }
    }

    /// Starts a real-time clock now whose zero maps to `origin`, an earlier start's (a hub that
    /// keeps its state: every reading it stored keeps its meaning after a restart). An origin
    /// in the future (the system clock went back) starts a clock at zero now instead.
    pub fn resume(origin: OffsetDateTime) -> Self {
        let now = wall_now();
        let ran = Micros::try_from((now - origin).whole_microseconds()).unwrap_or(0);
        Clock {
            start: Instant::now(),
            offset: ran,
            wall_start: if ran == 0 { now } else { origin },
            simulated: None,
        }
    }

    /// The wall-clock time the reading 0 maps to.
    pub(crate) fn origin(&self) -> OffsetDateTime {
        self.wall_start
    }

    /// Starts a clock now whose zero maps to [`VIRTUAL_EPOCH`] (a virtual-time run: every reading
    /// is simulated, so the wall times it reports are too).
    pub fn start_virtual() -> Self {
        Clock {
            start: Instant::now(),
            offset: 0,
            wall_start: VIRTUAL_EPOCH,
            simulated: Some(Arc::new(Simulated {
                ahead: AtomicU64::new(0),
                sleeps: Mutex::new(Vec::new()),
                earliest: AtomicU64::new(Micros::MAX),
            })),
        }
    }

    /// Whether this clock reads simulated time (a virtual-time run).
    pub(crate) fn is_virtual(&self) -> bool {
        self.simulated.is_some()
    }

    /// Microseconds since the clock started.
    pub fn now_us(&self) -> Micros {
        let tokio = (self.start.elapsed().as_micros() as Micros).saturating_add(self.offset);
        match &self.simulated {
            Some(s) => tokio.max(s.ahead.load(Ordering::Relaxed)),
            None => tokio,
        }
    }

    /// Sleeps until the reading `us`. In virtual time, every task of a run but the engine sleeps
    /// through this, so that the engine knows it may run ahead (see [`Clock::run_ahead_to`]).
    pub async fn sleep_until(&self, us: Micros) {
        let _sleeper = self.simulated.as_deref().map(|s| s.enter(us));
        tokio::time::sleep_until(self.instant_at(us)).await;
    }

    /// In virtual time, moves the clock to `us` without a jump of tokio's clock, if no other
    /// task's sleep ends at or before `us`; answers whether it did. Only the engine calls this,
    /// and only when nothing but its own timers could act before `us`: no message waiting for
    /// it, none it sent that another task has not seen. Tokio's clock catches up at the engine's
    /// next sleep. In real time it does nothing.
    pub(crate) fn run_ahead_to(&self, us: Micros) -> bool {
        let Some(s) = &self.simulated else {
            return false;
        };
        if us >= s.earliest.load(Ordering::Relaxed) {
            return false;
        }
        s.ahead.fetch_max(us, Ordering::Relaxed);
        true
    }

    /// Readings for a run of back-to-back events (a dispatch chunk, a batch of messages): see
    /// [`Stamps`].
    pub(crate) fn stamps(&self) -> Stamps {
        match self.simulated {
            Some(_) => Stamps::Fixed(self.now_us()),
            None => Stamps::Reading {
                start: self.start,
                offset: self.offset,
                left: 0,
                last: 0,
            },
        }
    }

    /// The tokio instant at the reading `us` (for `sleep_until`; a reading before this process
    /// started, on a resumed clock, is its start); a reading
    /// past what the platform's instants hold (`Micros::MAX`: "never") is a century away.
    pub(crate) fn instant_at(&self, us: Micros) -> Instant {
        self.start
            .checked_add(Duration::from_micros(us.saturating_sub(self.offset)))
            .unwrap_or_else(|| self.start + FAR_FUTURE)
    }

    /// The wall-clock time at `us`, at most [`WALL_MAX`] (never a panic: `us` may come from a
    /// request's startTime plus its maxExecutionTimeInSeconds).
    pub fn wall_at(&self, us: Micros) -> OffsetDateTime {
        let us = i64::try_from(us).unwrap_or(i64::MAX);
        self.wall_start
            .checked_add(time::Duration::microseconds(us))
            .map_or(WALL_MAX, |t| t.min(WALL_MAX))
    }

    /// The clock reading of a wall-clock time; times before the start map to 0, and readings
    /// past `Micros::MAX` (none within [`WALL_MAX`]) saturate.
    pub(crate) fn us_at_wall(&self, wall: OffsetDateTime) -> Micros {
        let delta = (wall - self.wall_start).whole_microseconds();
        Micros::try_from(delta.max(0)).unwrap_or(Micros::MAX)
    }

    /// The reading `us` in microseconds since the Unix epoch, by this clock's wall-clock
    /// mapping: how readings travel between processes (the receipts side channel).
    pub(crate) fn unix_us_at(&self, us: Micros) -> i64 {
        let start = (self.wall_start.unix_timestamp_nanos() / 1000) as i64;
        start.saturating_add(i64::try_from(us).unwrap_or(i64::MAX))
    }

    /// The reading at `unix_us` microseconds since the Unix epoch (the inverse of
    /// [`Clock::unix_us_at`]); None before the clock started.
    pub(crate) fn at_unix_us(&self, unix_us: i64) -> Option<Micros> {
        let start = (self.wall_start.unix_timestamp_nanos() / 1000) as i64;
        Micros::try_from(unix_us.checked_sub(start)?).ok()
    }

    /// `wall_at(us)` as ISO-8601 UTC with milliseconds and `Z`, as IoT Hub prints times.
    pub(crate) fn iso_at(&self, us: Micros) -> String {
        iso8601(self.wall_at(us))
    }
}

/// The real wall-clock time now (for names of result directories; never for measurements).
pub(crate) fn wall_now() -> OffsetDateTime {
    OffsetDateTime::from(SystemTime::now())
}

/// Real elapsed time, whatever clock the run's tokio runtime has: what a virtual-time run costs
/// in wall time, and the pacing of `--speed`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Stopwatch(std::time::Instant);

impl Stopwatch {
    /// Starts now.
    pub(crate) fn start() -> Self {
        Stopwatch(std::time::Instant::now())
    }

    /// Real time since the start.
    pub(crate) fn elapsed(&self) -> Duration {
        self.0.elapsed()
    }
}

/// Formats a wall-clock time as `2026-11-23T15:21:02.123Z`.
pub(crate) fn iso8601(t: OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    let ms = t.millisecond();
    let t = t.replace_nanosecond(0).unwrap_or(t);
    let base = t.format(&Rfc3339).unwrap_or_default();
    // Rfc3339 prints `...:02Z` when the nanoseconds are zero: splice the milliseconds in.
    match base.strip_suffix('Z') {
        Some(head) => format!("{head}.{ms:03}Z"),
        None => base,
    }
}

/// What is wrong with a time from outside.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum IsoError {
    /// Not RFC 3339 at all.
    #[error("is not an ISO-8601 time such as 2026-11-23T02:00:00Z")]
    Syntax,
    /// RFC 3339, but outside [`WALL_MIN`]..=[`WALL_MAX`] once in UTC.
    #[error(
        "is {0} the range 0001-01-01T00:00:00Z to 9999-12-31T23:59:59.9999999Z in UTC; expected \
         a time in that range (ISO-8601's four-digit years, and the range of .NET's DateTime, \
         which IoT Hub reads times into)"
    )]
    OutOfRange(&'static str),
}

/// Parses an ISO-8601 / RFC 3339 time as the SDKs send it (`Z` or an offset, optional
/// fraction), in UTC; times outside [`WALL_MIN`]..=[`WALL_MAX`] in UTC (such as
/// `9999-12-31T23:59:59-01:00`) are refused.
pub(crate) fn parse_iso8601(text: &str) -> Result<OffsetDateTime, IsoError> {
    let t = OffsetDateTime::parse(text, &Rfc3339)
        .or_else(|_| {
            // C# and some docs omit the zone: read it as UTC.
            OffsetDateTime::parse(&format!("{text}Z"), &Rfc3339)
        })
        .map_err(|_| IsoError::Syntax)?;
    match t.checked_to_offset(time::UtcOffset::UTC) {
        Some(utc) if utc < WALL_MIN => Err(IsoError::OutOfRange("before")),
        Some(utc) if utc > WALL_MAX => Err(IsoError::OutOfRange("after")),
        Some(utc) => Ok(utc),
        None if t.year() < 0 => Err(IsoError::OutOfRange("before")),
        None => Err(IsoError::OutOfRange("after")),
    }
}

/// Where [`Clock::instant_at`] puts "never": a century (tokio's timer clamps far deadlines).
const FAR_FUTURE: Duration = Duration::from_secs(100 * 365 * 86_400);

/// How many back-to-back events share one [`Stamps`] reading.
const EVENTS_PER_READING: u32 = 8;

/// Clock readings for a run of back-to-back events, each stamped with the time it is handled,
/// not the time its run began: the first event reads the clock, and a reading serves at most
/// [`EVENTS_PER_READING`] consecutive events. An event costs the engine or the in-process fleet
/// ~100-200 ns and a reading ~20-30 ns, so this keeps every stamp within a microsecond or two
/// of its event (the histograms' resolution) for an eighth of the cost. In virtual time the
/// clock stands still while a run of events is handled, so one reading serves them all.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Stamps {
    /// Virtual time: the instant of every event.
    Fixed(Micros),
    /// Real time.
    Reading {
        start: Instant,
        /// The clock's offset ([`Clock::resume`]).
        offset: Micros,
        /// Events the last reading may still stamp.
        left: u32,
        last: Micros,
    },
}

impl Stamps {
    /// The time of the next event.
    #[inline]
    pub(crate) fn next(&mut self) -> Micros {
        match self {
            Stamps::Fixed(now) => *now,
            Stamps::Reading {
                start,
                offset,
                left,
                last,
            } => {
                if *left == 0 {
                    *last = (start.elapsed().as_micros() as Micros).saturating_add(*offset);
                    *left = EVENTS_PER_READING;
                }
                *left -= 1;
                *last
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso_has_milliseconds_and_z() {
        let t =
            OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap() + Duration::from_millis(7);
        assert_eq!(iso8601(t), "2023-11-14T22:13:20.007Z");
    }

    #[test]
    fn parses_what_it_prints_and_sdk_forms() {
        let t = parse_iso8601("2023-11-14T22:13:20.007Z").unwrap();
        assert_eq!(iso8601(t), "2023-11-14T22:13:20.007Z");
        let t = parse_iso8601("2023-11-14T22:13:20+01:00").unwrap();
        assert_eq!(iso8601(t), "2023-11-14T21:13:20.000Z");
        assert!(parse_iso8601("2023-11-14T22:13:20").is_ok());
        assert_eq!(parse_iso8601("yesterday"), Err(IsoError::Syntax));
    }

    #[test]
    fn times_outside_four_digit_years_in_utc_are_refused() {
        // Issue 16: this one is year 10000 in UTC, and made the engine panic.
        let far = parse_iso8601("9999-12-31T23:59:59-01:00");
        assert_eq!(far, Err(IsoError::OutOfRange("after")));
        assert!(far.unwrap_err().to_string().contains(
            "is after the range 0001-01-01T00:00:00Z to 9999-12-31T23:59:59.9999999Z in UTC"
        ));
        assert_eq!(
            parse_iso8601("0001-01-01T00:00:00+00:01"),
            Err(IsoError::OutOfRange("before"))
        );
        assert_eq!(
            parse_iso8601("0000-06-01T00:00:00Z"),
            Err(IsoError::OutOfRange("before"))
        );
        assert_eq!(parse_iso8601("0001-01-01T00:00:00Z"), Ok(WALL_MIN));
        assert_eq!(
            parse_iso8601("9999-12-31T23:59:59.999999999Z"),
            Ok(WALL_MAX)
        );
        assert_eq!(
            parse_iso8601("9999-12-31T23:59:59.999999999-00:01"),
            Err(IsoError::OutOfRange("after"))
        );
    }

    #[tokio::test(start_paused = true)]
    async fn conversions_saturate_instead_of_panicking() {
        let clock = Clock::start();
        assert_eq!(clock.wall_at(Micros::MAX), WALL_MAX);
        assert_eq!(
            iso8601(clock.wall_at(Micros::MAX)),
            "9999-12-31T23:59:59.999Z"
        );
        assert_eq!(clock.us_at_wall(WALL_MIN), 0);
        let last = clock.us_at_wall(WALL_MAX);
        assert_eq!(iso8601(clock.wall_at(last)), "9999-12-31T23:59:59.999Z");
        assert!(clock.instant_at(Micros::MAX) > clock.instant_at(last));
        assert_eq!(secs_us(u64::MAX), Micros::MAX);
        assert_eq!(secs_us(3), 3_000_000);
    }

    #[tokio::test(start_paused = true)]
    async fn stamps_read_the_clock_at_the_first_event_and_every_few_after() {
        let clock = Clock::start();
        tokio::time::advance(Duration::from_micros(10)).await;
        let mut stamps = clock.stamps();
        tokio::time::advance(Duration::from_micros(5)).await;
        assert_eq!(stamps.next(), 15, "the first event reads the clock");
        tokio::time::advance(Duration::from_micros(5)).await;
        for _ in 1..EVENTS_PER_READING {
            assert_eq!(stamps.next(), 15);
        }
        assert_eq!(stamps.next(), 20, "then a fresh reading");

        let simulated = Clock::start_virtual();
        tokio::time::advance(Duration::from_micros(10)).await;
        let mut stamps = simulated.stamps();
        tokio::time::advance(Duration::from_micros(5)).await;
        assert_eq!(
            stamps.next(),
            10,
            "virtual time stands still within a run of events"
        );
    }

    #[test]
    fn a_resumed_clock_reads_from_its_origin() {
        let origin = wall_now() - time::Duration::seconds(90);
        let clock = Clock::resume(origin);
        assert_eq!(clock.origin(), origin);
        assert!(clock.now_us() >= 90_000_000, "{}", clock.now_us());
        let later = origin + time::Duration::seconds(5);
        assert_eq!(clock.us_at_wall(later), 5_000_000);
        let ahead = Clock::resume(wall_now() + time::Duration::hours(1));
        assert!(
            ahead.now_us() < 60_000_000,
            "an origin ahead starts at zero"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn runs_ahead_only_up_to_the_first_sleep_of_another_task() {
        let clock = Clock::start_virtual();
        assert!(clock.run_ahead_to(5), "nobody sleeps: any time is free");
        assert_eq!(clock.now_us(), 5);
        let sleeper = clock.clone();
        let sleeping = tokio::spawn(async move { sleeper.sleep_until(700).await });
        tokio::task::yield_now().await;
        assert!(clock.run_ahead_to(699));
        assert!(!clock.run_ahead_to(700), "the other task acts at 700 first");
        assert_eq!(clock.now_us(), 699);
        sleeping.abort();
        tokio::task::yield_now().await;
        assert!(clock.run_ahead_to(10_000), "a dropped sleep is forgotten");
        // Tokio's clock catches up: readings never go back.
        tokio::time::advance(Duration::from_micros(20)).await;
        assert_eq!(clock.now_us(), 10_000);
        tokio::time::advance(Duration::from_millis(20)).await;
        assert_eq!(clock.now_us(), 20_020);

        let real = Clock::start();
        assert!(!real.run_ahead_to(5), "real time never runs ahead");
        assert_eq!(real.now_us(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn follows_the_paused_clock() {
        let clock = Clock::start();
        tokio::time::advance(Duration::from_millis(1500)).await;
        assert_eq!(clock.now_us(), 1_500_000);
        let wall = clock.wall_at(2_000_000);
        assert_eq!(clock.us_at_wall(wall), 2_000_000);
    }
}

#[cfg(test)]
mod proptests {
    //! Property tests of time's edges: parsing and printing ISO-8601 round trip within the range
    //! fleetsim accepts and refuse the rest, and clock conversions never panic.

    use proptest::prelude::*;
    use time::UtcOffset;

    use super::*;

    /// Any instant fleetsim accepts, to the nanosecond.
    fn accepted() -> impl Strategy<Value = OffsetDateTime> {
        (WALL_MIN.unix_timestamp_nanos()..=WALL_MAX.unix_timestamp_nanos())
            .prop_map(|ns| OffsetDateTime::from_unix_timestamp_nanos(ns).unwrap())
    }

    /// Any offset RFC 3339 can write (whole minutes, under a day).
    fn offset() -> impl Strategy<Value = UtcOffset> {
        (-1439i32..=1439).prop_map(|m| UtcOffset::from_whole_seconds(m * 60).unwrap())
    }

    proptest! {
        #[test]
        fn parsing_arbitrary_text_never_panics_and_stays_in_range(text in any::<String>()) {
            if let Ok(t) = parse_iso8601(&text) {
                prop_assert!((WALL_MIN..=WALL_MAX).contains(&t));
                prop_assert_eq!(t.offset(), UtcOffset::UTC);
            }
        }

        #[test]
        fn printing_then_parsing_keeps_the_millisecond(t in accepted()) {
            let printed = iso8601(t);
            let back = parse_iso8601(&printed).unwrap();
            prop_assert_eq!(back, t.replace_nanosecond(t.millisecond() as u32 * 1_000_000).unwrap());
            prop_assert_eq!(iso8601(back), printed);
        }

        /// A time written at any offset parses to the same instant if that instant is in range,
        /// and is refused with the side it falls on otherwise: never a panic.
        #[test]
        fn any_offset_parses_to_the_instant_or_is_refused(
            local in (-1i32..=10_000, 1u8..=12, 1u8..=28, 0u8..24, 0u8..60, 0u8..60),
            offset in offset(),
        ) {
            let (year, month, day, h, m, sec) = local;
            let sign = if offset.is_negative() { '-' } else { '+' };
            let text = format!(
                "{year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{sec:02}{sign}{:02}:{:02}",
                offset.whole_hours().abs(),
                offset.minutes_past_hour().abs()
            );
            let parsed = parse_iso8601(&text);
            let date = time::Date::from_calendar_date(year, time::Month::try_from(month).unwrap(), day);
            match date.ok().map(|d| d.with_hms(h, m, sec).unwrap().assume_offset(offset)) {
                // RFC 3339 has four-digit years only.
                _ if !(0..=9999).contains(&year) => prop_assert_eq!(parsed, Err(IsoError::Syntax)),
                Some(t) => match t.checked_to_offset(UtcOffset::UTC) {
                    Some(utc) if (WALL_MIN..=WALL_MAX).contains(&utc) => prop_assert_eq!(parsed, Ok(utc)),
                    Some(utc) if utc < WALL_MIN => prop_assert_eq!(parsed, Err(IsoError::OutOfRange("before"))),
                    _ if year == 0 => prop_assert_eq!(parsed, Err(IsoError::OutOfRange("before"))),
                    _ => prop_assert_eq!(parsed, Err(IsoError::OutOfRange("after"))),
                },
                None => prop_assert!(parsed.is_err()),
            }
        }

        #[test]
        fn clock_conversions_round_trip_and_saturate(us in any::<u64>(), later in any::<u64>()) {
            let clock = Clock::start_virtual();
            let wall = clock.wall_at(us);
            prop_assert!(wall <= WALL_MAX);
            if wall < WALL_MAX {
                prop_assert_eq!(clock.us_at_wall(wall), us);
            }
            let (a, b) = (us.min(later), us.max(later));
            prop_assert!(clock.wall_at(a) <= clock.wall_at(b));
            prop_assert!(clock.instant_at(a) <= clock.instant_at(b));
            let _ = clock.iso_at(us);
            prop_assert_eq!(secs_us(us), us.checked_mul(1_000_000).unwrap_or(Micros::MAX));
        }

        #[test]
        fn a_wall_time_maps_to_a_reading_and_back(t in accepted()) {
            let clock = Clock::start_virtual();
            let us = clock.us_at_wall(t);
            if t <= VIRTUAL_EPOCH {
                prop_assert_eq!(us, 0);
            } else {
                let back = clock.wall_at(us);
                prop_assert!(back <= t && t - back < time::Duration::microseconds(1));
            }
        }
    }
}
