//! An error with its causes on one line, for where an error ends as text: a connection state,
//! a list of failures, a log field. (Each error's own message leaves its cause out, so that
//! `anyhow`'s `{:#}` and this print every cause once.)

use std::error::Error;
use std::fmt;

/// Shows an error as `message: cause: cause of the cause`.
pub(crate) struct Chain<'a>(pub(crate) &'a (dyn Error + 'static));

impl fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut cause = self.0.source();
        while let Some(e) = cause {
            write!(f, ": {e}")?;
            cause = e.source();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("reading the file")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn every_cause_once_in_order() {
        let e = Outer(std::io::Error::other("disk on fire"));
        assert_eq!(Chain(&e).to_string(), "reading the file: disk on fire");
    }
}
