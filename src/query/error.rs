//! The one error a query can fail with, worded for the person who wrote the query.

use std::fmt;

/// A 1-based line and column (counted in characters) inside the query text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    /// Line, from 1.
    pub(crate) line: usize,
    /// Column, from 1, in characters.
    pub(crate) column: usize,
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.column)
    }
}

/// Why a query or a job's `queryCondition` was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    /// The text did not follow the grammar: something else was expected at `at`.
    #[error("expected {expected} at {at}, found {found}")]
    Unexpected {
        /// What would have been accepted, e.g. `a value after '='`.
        expected: String,
        /// What was there instead, e.g. `end of input` or `'AND'`.
        found: String,
        /// Where the offending text starts.
        at: Position,
    },
    /// The text followed the grammar but means nothing valid (a SELECT given as a condition,
    /// `TOP 1.5`, a number too large, a GROUP BY projection that is not grouped).
    #[error("{message} at {at}")]
    Invalid {
        /// The complete explanation, e.g. `TOP needs a whole number, found 1.5`.
        message: String,
        /// Where the offending text starts.
        at: Position,
    },
    /// The text is longer than IoT Hub accepts.
    #[error("the query is {chars} characters long; IoT Hub accepts at most {limit}")]
    TooLong {
        /// Its length, in characters.
        chars: usize,
        /// The limit.
        limit: usize,
    },
}
