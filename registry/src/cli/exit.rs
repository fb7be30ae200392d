//! What a client verb's exit code says, in one table, and the error the HTTP clients raise so that `main` can tell
//! a refusal from a missing object from an unreachable server. Called by `cli`'s HTTP clients (to raise) and by
//! `main` (to choose the code); the message printed is the error's own, one line.
//!
//! | code | meaning                                                                    |
//! |------|----------------------------------------------------------------------------|
//! | 0    | done                                                                       |
//! | 1    | failed: the server refused the request (400, 422, …) or the work failed     |
//! | 2    | usage: the command line is wrong (clap's own code)                          |
//! | 3    | not allowed: no valid token (401) or not permitted (403)                    |
//! | 4    | not found (404)                                                             |
//! | 5    | conflict: it exists already or changed meanwhile (409)                      |
//! | 6    | unavailable: server unreachable, overloaded (429) or failing (5xx)          |

use std::fmt;

/// A request the server did not carry out, with the status it answered (`None`: it could not be reached) and the
/// message shown to the user (already saying what the server said).
#[derive(Debug)]
pub struct HttpFailure {
    pub status: Option<u16>,
    pub message: String,
}

impl HttpFailure {
    /// The server's refusal, shown as `message (status)`.
    pub fn refused(status: u16, message: &str) -> HttpFailure {
        HttpFailure { status: Some(status), message: format!("{message} ({status})") }
    }
}

impl fmt::Display for HttpFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for HttpFailure {}

/// The exit code for a verb that failed with `error` (see the table above).
pub fn code(error: &anyhow::Error) -> u8 {
    let status = error.chain().find_map(|e| e.downcast_ref::<HttpFailure>()).map(|f| f.status);
    match status {
        None => 1,
        Some(None) => 6,
        Some(Some(401 | 403)) => 3,
        Some(Some(404)) => 4,
        Some(Some(409)) => 5,
        Some(Some(429)) => 6,
        Some(Some(s)) if s >= 500 => 6,
        Some(Some(_)) => 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failure(status: Option<u16>) -> anyhow::Error {
        let f = match status {
            Some(s) => HttpFailure::refused(s, "m"),
            None => HttpFailure { status: None, message: "m".into() },
        };
        anyhow::Error::new(f).context("while doing it")
    }

    #[test]
    fn codes_follow_the_table() {
        assert_eq!(code(&anyhow::anyhow!("plain")), 1);
        assert_eq!(code(&failure(Some(400))), 1);
        assert_eq!(code(&failure(Some(401))), 3);
        assert_eq!(code(&failure(Some(403))), 3);
        assert_eq!(code(&failure(Some(404))), 4);
        assert_eq!(code(&failure(Some(409))), 5);
        assert_eq!(code(&failure(Some(429))), 6);
        assert_eq!(code(&failure(Some(503))), 6);
        assert_eq!(code(&failure(None)), 6);
        assert_eq!(failure(Some(404)).to_string(), "while doing it");
        assert_eq!(format!("{:#}", failure(Some(404))), "while doing it: m (404)");
    }
}
