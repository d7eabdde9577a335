//! Shards: the `i`-th of `n` disjoint slices of a fleet, so that a scenario too big for one
//! machine runs across processes (for example the pods of a Kubernetes Indexed Job) and the
//! results are merged exactly afterwards (`fleetsim merge`).
//!
//! Slicing is by device index modulo `n`: device `g` (its position in cohort order over the
//! whole scenario) belongs to shard `g % n`. Every cohort, and so every job's targets, is spread
//! evenly over the shards (a contiguous split would hand whole cohorts to single shards).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Environment variable Kubernetes sets in each pod of an Indexed Job: the pod's index.
pub(crate) const INDEX_ENV: &str = "JOB_COMPLETION_INDEX";
/// Environment variable giving the number of shards (set it to the Job's `completions`).
pub(crate) const COUNT_ENV: &str = "FLEETSIM_SHARDS";

/// One slice of a fleet: `index` of `count` (`0 <= index < count`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Shard {
    /// Which slice, from 0.
    pub(crate) index: u32,
    /// How many slices in all.
    pub(crate) count: u32,
}

/// A shard that cannot be used, with the text that was given.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShardError {
    #[error("bad shard '{0}'; expected i/n with 0 <= i < n, such as 0/4")]
    Syntax(String),
    #[error("{var}={value:?} is not a number ({INDEX_ENV} and {COUNT_ENV} give a shard i/n)")]
    Env { var: &'static str, value: String },
    #[error("{INDEX_ENV}={index} is set but {COUNT_ENV} is not: set it to the number of shards")]
    NoCount { index: String },
}

impl Shard {
    /// The whole fleet: shard 0 of 1.
    pub const ALL: Shard = Shard { index: 0, count: 1 };

    /// `index` of `count`, if `index < count`.
    pub(crate) fn new(index: u32, count: u32) -> Option<Shard> {
        (index < count).then_some(Shard { index, count })
    }

    /// Whether device `index` (its position over the whole scenario) belongs to this shard.
    pub(crate) fn contains(self, index: u64) -> bool {
        index % u64::from(self.count) == u64::from(self.index)
    }

    /// Whether this is the whole fleet.
    pub(crate) fn is_all(self) -> bool {
        self.count == 1
    }

    /// The shard an explicit `--shard` gives, else the one the environment gives
    /// ([`INDEX_ENV`] and [`COUNT_ENV`]), else the whole fleet.
    pub(crate) fn resolve(flag: Option<Shard>) -> Result<Shard, ShardError> {
        match flag {
            Some(s) => Ok(s),
            None => Shard::from_vars(|k| std::env::var(k).ok()),
        }
    }

    /// The shard given by [`INDEX_ENV`] and [`COUNT_ENV`] as `var` reads them.
    fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Shard, ShardError> {
        let number = |name: &'static str, value: String| {
            value.trim().parse::<u32>().map_err(|_| ShardError::Env {
                var: name,
                value: value.clone(),
            })
        };
        match (var(INDEX_ENV), var(COUNT_ENV)) {
            (None, None) => Ok(Shard::ALL),
            (Some(index), None) => Err(ShardError::NoCount { index }),
            (index, Some(count)) => {
                let i = index.map_or(Ok(0), |v| number(INDEX_ENV, v))?;
                let n = number(COUNT_ENV, count)?;
                Shard::new(i, n).ok_or_else(|| ShardError::Syntax(format!("{i}/{n}")))
            }
        }
    }
}

impl FromStr for Shard {
    type Err = ShardError;

    fn from_str(text: &str) -> Result<Shard, ShardError> {
        let bad = || ShardError::Syntax(text.to_owned());
        let (i, n) = text.trim().split_once('/').ok_or_else(bad)?;
        let (i, n) = (
            i.trim().parse().map_err(|_| bad())?,
            n.trim().parse().map_err(|_| bad())?,
        );
        Shard::new(i, n).ok_or_else(bad)
    }
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_refuses() {
        assert_eq!("1/4".parse(), Ok(Shard { index: 1, count: 4 }));
        for bad in ["4/4", "0/0", "1", "a/2", "-1/2", ""] {
            assert!(bad.parse::<Shard>().is_err(), "{bad}");
        }
    }

    #[test]
    fn slices_are_disjoint_and_cover_the_fleet() {
        let shards: Vec<Shard> = (0..3).map(|i| Shard::new(i, 3).unwrap()).collect();
        for g in 0..100u64 {
            assert_eq!(shards.iter().filter(|s| s.contains(g)).count(), 1);
        }
        assert!((0..10).all(|g| Shard::ALL.contains(g)));
    }

    #[test]
    fn reads_an_indexed_job_environment() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| v.to_string())
            }
        };
        assert_eq!(Shard::from_vars(env(&[])), Ok(Shard::ALL));
        assert_eq!(
            Shard::from_vars(env(&[(INDEX_ENV, "2"), (COUNT_ENV, "5")])),
            Ok(Shard { index: 2, count: 5 })
        );
        assert!(matches!(
            Shard::from_vars(env(&[(INDEX_ENV, "2")])),
            Err(ShardError::NoCount { .. })
        ));
        assert!(Shard::from_vars(env(&[(INDEX_ENV, "x"), (COUNT_ENV, "5")])).is_err());
        assert!(Shard::from_vars(env(&[(INDEX_ENV, "5"), (COUNT_ENV, "5")])).is_err());
    }
}
