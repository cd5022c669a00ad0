//! Logging: to stderr (stdout carries command output), filtered by `RUST_LOG` (default
//! `info`).
//!
//! Access lines (the target `crier::access`, one a request) are gathered in memory and
//! written out together every [`ACCESS_FLUSH_EVERY`], or as soon as [`ACCESS_BUFFER_BYTES`]
//! have gathered, as nginx's `access_log … buffer= flush=` does. Written one by one, each
//! line cost a `write(2)` behind the lock that every thread writing to stderr shares, and
//! the two HTTP workers waited on each other for it: about a tenth of the server's CPU on a
//! read at the default level (docs/PERFORMANCE.md). Every other line is written at once, so
//! a warning is never held back; a process killed with `kill -9` loses at most the last
//! [`ACCESS_FLUSH_EVERY`] of access lines, and a failed write drops what it held, as
//! tracing's own writers drop a line.

use std::io::{self, IsTerminal, Write};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tracing_subscriber::fmt::writer::MakeWriterExt;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::{fmt, EnvFilter};

use crate::cli::LogFormat;

/// The target of the one line each request logs (see `api::observe`).
const ACCESS_TARGET: &str = "crier::access";
/// The longest an access line waits in memory before it is written.
const ACCESS_FLUSH_EVERY: Duration = Duration::from_millis(100);
/// Gathered access lines past this many bytes are written by the thread that adds to them.
const ACCESS_BUFFER_BYTES: usize = 256 * 1024;

/// Installs the subscriber. Keep the guard for the process's life: dropping it writes out
/// the access lines still gathered.
pub fn init(format: LogFormat) -> AccessLogGuard {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let access = AccessLines::start(io::stderr());
    let writer = access
        .clone()
        .with_filter(|meta| meta.target() == ACCESS_TARGET)
        .or_else(io::stderr);
    let builder = fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_ansi(io::stderr().is_terminal());
    let _ = match format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Pretty => builder.try_init(),
    };
    AccessLogGuard(access)
}

/// Writes out the gathered access lines when dropped.
pub struct AccessLogGuard(AccessLines);

impl Drop for AccessLogGuard {
    fn drop(&mut self) {
        self.0.flush_gathered();
    }
}

/// Lines gathered for `out`, in the order they were added.
#[derive(Clone)]
struct AccessLines(Arc<Gathered>);

struct Gathered {
    /// What has been added since the last flush.
    lines: Mutex<Vec<u8>>,
    /// Where lines go, with the buffer the next flush swaps in. Taken before `lines` is
    /// emptied, so that flushes from two threads write their lines in order.
    out: Mutex<(Box<dyn Write + Send>, Vec<u8>)>,
}

impl AccessLines {
    /// Lines for `out`, flushed every [`ACCESS_FLUSH_EVERY`] by a thread of their own, which
    /// ends once the lines are dropped (never, in a process whose subscriber holds them).
    fn start(out: impl Write + Send + 'static) -> Self {
        let lines = Self::new(out);
        let flusher = Arc::downgrade(&lines.0);
        let started = std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || loop {
                std::thread::sleep(ACCESS_FLUSH_EVERY);
                match flusher.upgrade() {
                    Some(gathered) => AccessLines(gathered).flush_gathered(),
                    None => return,
                }
            });
        if let Err(e) = started {
            // Lines are still written once enough gather, and when the guard drops.
            eprintln!("crier: the access log's flushing thread did not start: {e}");
        }
        lines
    }

    fn new(out: impl Write + Send + 'static) -> Self {
        // The buffers grow with the first lines and keep their room (flushes swap them), so
        // a command that logs no access line allocates nothing for them.
        Self(Arc::new(Gathered {
            lines: Mutex::default(),
            out: Mutex::new((Box::new(out), Vec::new())),
        }))
    }

    /// Adds `line`; returns whether the lines gathered are now past their bound.
    fn add(&self, line: &[u8]) -> bool {
        let mut lines = self.0.lines.lock().unwrap_or_else(PoisonError::into_inner);
        lines.extend_from_slice(line);
        lines.len() >= ACCESS_BUFFER_BYTES
    }

    /// Writes out what has gathered, keeping both buffers' room.
    fn flush_gathered(&self) {
        let mut out = self.0.out.lock().unwrap_or_else(PoisonError::into_inner);
        let (writer, spare) = &mut *out;
        {
            let mut lines = self.0.lines.lock().unwrap_or_else(PoisonError::into_inner);
            if lines.is_empty() {
                return;
            }
            std::mem::swap(&mut *lines, spare);
        }
        // Nowhere to report a failed log write: dropped, as tracing's own writers do.
        let _ = writer.write_all(spare).and_then(|()| writer.flush());
        spare.clear();
    }
}

/// One log line's writer: the formatter writes each line with one `write_all`.
struct AccessLineWriter<'a>(&'a AccessLines);

impl Write for AccessLineWriter<'_> {
    fn write(&mut self, line: &[u8]) -> io::Result<usize> {
        if self.0.add(line) {
            self.0.flush_gathered();
        }
        Ok(line.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for AccessLines {
    type Writer = AccessLineWriter<'a>;

    fn make_writer(&'a self) -> Self::Writer {
        AccessLineWriter(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A writer whose bytes the test can read.
    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);

    impl Write for Shared {
        fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl Shared {
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
        }
    }

    #[test]
    fn lines_wait_for_a_flush_and_keep_their_order() {
        let out = Shared::default();
        let lines = AccessLines::new(out.clone());
        lines.make_writer().write_all(b"one\n").unwrap();
        lines.make_writer().write_all(b"two\n").unwrap();
        assert_eq!(out.text(), "");
        lines.flush_gathered();
        assert_eq!(out.text(), "one\ntwo\n");
        lines.make_writer().write_all(b"three\n").unwrap();
        lines.flush_gathered();
        lines.flush_gathered();
        assert_eq!(out.text(), "one\ntwo\nthree\n");
    }

    #[test]
    fn lines_past_the_bound_are_written_by_the_thread_that_adds_them() {
        let out = Shared::default();
        let lines = AccessLines::new(out.clone());
        let line = [b'x'; 1000];
        let mut written = 0;
        while out.text().is_empty() {
            lines.make_writer().write_all(&line).unwrap();
            written += line.len();
            assert!(written <= ACCESS_BUFFER_BYTES + line.len(), "never written");
        }
        assert_eq!(out.text().len(), written);
    }

    #[test]
    fn the_flushing_thread_writes_lines_within_its_period_and_the_guard_writes_the_rest() {
        let out = Shared::default();
        let guard = AccessLogGuard(AccessLines::start(out.clone()));
        guard.0.make_writer().write_all(b"served\n").unwrap();
        let waited = std::time::Instant::now();
        while out.text().is_empty() {
            assert!(waited.elapsed() < Duration::from_secs(10), "never flushed");
            std::thread::sleep(Duration::from_millis(10));
        }
        guard.0.make_writer().write_all(b"last\n").unwrap();
        drop(guard);
        assert!(out.text().ends_with("served\nlast\n"), "{}", out.text());
    }
}
