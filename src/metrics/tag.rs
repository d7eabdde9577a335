//! The tags of `histograms.hlog`, in one place: `<measure>` for the histogram of all jobs and
//! `job/<escaped jobId>/<measure>` for one job's. Job ids are escaped so that any id makes a
//! valid tag (an interval-log tag holds no `,`, space, CR or LF) and distinct ids make distinct
//! tags.

use super::Measure;

/// The line the interval log's header describes its tags with.
pub(crate) const HEADER_COMMENT: &str = "tags: <measure> (all jobs), job/<jobId>/<measure>; measures: engine_lag, delivery, round_trip, completion";

/// Prefix of a per-job tag.
const JOB_PREFIX: &str = "job/";

/// The tag of `measure` for all jobs: the measure's name.
pub(crate) fn overall(measure: Measure) -> &'static str {
    measure.name()
}

/// The tag of `measure` for one job (`None`: all jobs).
pub(crate) fn tag_for(job_id: Option<&str>, measure: Measure) -> String {
    match job_id {
        None => overall(measure).to_owned(),
        Some(id) => job_tag(&escape(id), measure),
    }
}

/// The tags of one job, indexed like [`Measure::ALL`]: built once when the job is registered, so
/// that encoding an interval formats nothing.
pub(crate) fn job_tags(job_id: &str) -> [String; 4] {
    let escaped = escape(job_id);
    Measure::ALL.map(|m| job_tag(&escaped, m))
}

fn job_tag(escaped_id: &str, measure: Measure) -> String {
    format!("{JOB_PREFIX}{escaped_id}/{}", measure.name())
}

/// Writes `%`, `,`, space, CR and LF as `%XX` (two upper-case hex digits).
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '%' | ',' | ' ' | '\r' | '\n' => out.push_str(&format!("%{:02X}", c as u32)),
            c => out.push(c),
        }
    }
    out
}

/// Splits a tag built by [`tag_for`] into the (unescaped) job id, `None` for all jobs, and the
/// measure; `None` for any other tag. The HTML report reads a run's tags back this way.
pub(crate) fn parse_tag(tag: &str) -> Option<(Option<String>, Measure)> {
    match tag.strip_prefix(JOB_PREFIX) {
        None => Measure::ALL
            .into_iter()
            .find(|&m| overall(m) == tag)
            .map(|m| (None, m)),
        Some(rest) => {
            let (id, measure) = rest.rsplit_once('/')?;
            Some((Some(unescape(id)?), Measure::from_name(measure)?))
        }
    }
}

/// The inverse of [`escape`]; `None` for a bad `%XX` or a result that is not UTF-8.
fn unescape(s: &str) -> Option<String> {
    let mut out = Vec::with_capacity(s.len());
    let bytes = s.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use hdrhistogram::serialization::interval_log::Tag;

    use super::*;

    #[test]
    fn escape_forbidden_characters() {
        assert_eq!(escape("plain-id_1"), "plain-id_1");
        assert_eq!(escape("a b,c%d\n"), "a%20b%2Cc%25d%0A");
        assert_eq!(job_tags("my job")[1], "job/my%20job/delivery");
        assert_eq!(
            job_tags("my job")[1],
            tag_for(Some("my job"), Measure::Delivery)
        );
        assert!(Tag::new(&job_tags("a b,c\r\n")[0]).is_some());
    }

    #[test]
    fn tags_round_trip() {
        assert_eq!(tag_for(None, Measure::RoundTrip), "round_trip");
        assert_eq!(parse_tag("round_trip"), Some((None, Measure::RoundTrip)));
        assert_eq!(
            parse_tag(&tag_for(Some("a/b c"), Measure::Completion)),
            Some((Some("a/b c".to_owned()), Measure::Completion))
        );
        assert_eq!(parse_tag("job/x/latency"), None);
        assert_eq!(parse_tag("other"), None);
        assert_eq!(parse_tag("job/%zz/delivery"), None);
    }
}
