//! Progress for long client verbs (`import-image`, `adm gc`, `adm prune images`): a spinner with the elapsed time
//! on the terminal, nothing at all when stdout or stderr is not a terminal (a pipe, a file, CI). Drawn on stderr so
//! that what a verb prints on stdout stays clean for scripts. Called only by the verbs in `cli`.

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// A running spinner; cleared when finished or dropped, so the verb's own output follows on a clean line.
pub struct Progress {
    bar: ProgressBar,
}

impl Progress {
    /// A spinner saying `message`, shown only when both stdout and stderr are terminals and `quiet` is false
    /// (`--output json` asks for quiet: its reader is a program).
    pub fn spinner(message: impl Into<String>, quiet: bool) -> Progress {
        let shown = !quiet && std::io::stdout().is_terminal() && std::io::stderr().is_terminal();
        let target = if shown { ProgressDrawTarget::stderr() } else { ProgressDrawTarget::hidden() };
        let bar = ProgressBar::with_draw_target(None, target);
        bar.set_style(
            ProgressStyle::with_template("{spinner} {msg} ({elapsed})")
                .expect("a fixed template")
                .tick_chars("⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏ "),
        );
        bar.set_message(message.into());
        if shown {
            bar.enable_steady_tick(Duration::from_millis(120));
        }
        Progress { bar }
    }

    /// Whether anything is drawn (false off a terminal).
    #[cfg(test)]
    fn is_shown(&self) -> bool {
        !self.bar.is_hidden()
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.bar.finish_and_clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hidden_when_quiet_or_off_a_terminal() {
        // Under `cargo test` stdout is captured (not a terminal), so a spinner never draws here either way.
        assert!(!Progress::spinner("x", true).is_shown());
        assert!(!Progress::spinner("x", false).is_shown());
    }
}
