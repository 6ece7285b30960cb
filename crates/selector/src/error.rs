//! Problems found in a selector document.

use std::fmt;

/// One thing wrong with a selector document, and where.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// Where in the document, JSON-pointer-ish: `select[2].where.repo`, `retain.k2["app.bsky.*"]`;
    /// empty for the document as a whole.
    pub path: String,
    /// What is wrong there.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// A selector document was rejected. It carries every problem found, not just the first, so a
/// user can fix them all in one go; it displays them one per line.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct SelectorError {
    problems: Vec<Problem>,
}

impl SelectorError {
    pub(crate) fn new(problems: Vec<Problem>) -> SelectorError {
        SelectorError { problems }
    }

    /// The problems, in document order (never empty).
    pub fn problems(&self) -> &[Problem] {
        &self.problems
    }
}

impl fmt::Display for SelectorError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, problem) in self.problems.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{problem}")?;
        }
        Ok(())
    }
}
